//! Single-copy bodies: one stored copy per partition and content hash, shared by every
//! message and queue entry that references it, counted in `body_refs` and deleted with its
//! last reference. How the bytes are stored is [`crate::kv`]'s.

use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::keys;
use crate::kv::{Cf, KvRead, Txn, body_bytes, decode_refcount, delete_body, put_body};
use crate::model::BodyRef;

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A reference to `body` in `partition`: one more reference to the same stored copy when
/// it is already there (one copy of a body per partition), else a copy into it.
pub(super) fn share_body<R: KvRead>(
    t: &mut Txn<'_, R>,
    body: &BodyRef,
    partition: &str,
) -> Result<BodyRef, StoreError> {
    let r = BodyRef {
        partition: partition.to_string(),
        sha256: body.sha256.clone(),
    };
    if r.partition == body.partition {
        add_body_ref(t, &r, None)?;
    } else {
        let bytes = read_body(t, body)?;
        add_body_ref(t, &r, Some(&bytes))?;
    }
    Ok(r)
}

pub(super) fn add_body_ref<R: KvRead>(
    t: &mut Txn<'_, R>,
    body: &BodyRef,
    bytes: Option<&[u8]>,
) -> Result<(), StoreError> {
    let key = keys::body(&body.partition, &body.sha256);
    let count = match t.get(Cf::BodyRefs, &key)? {
        Some(v) => decode_refcount(&v)?,
        None => 0,
    };
    if count == 0 {
        let bytes =
            bytes.ok_or_else(|| StoreError::Invariant(format!("body {} missing", body.sha256)))?;
        put_body(t, &key, bytes);
    }
    t.put(Cf::BodyRefs, key, (count + 1).to_be_bytes().to_vec());
    Ok(())
}

pub(super) fn drop_body_ref<R: KvRead>(
    t: &mut Txn<'_, R>,
    body: &BodyRef,
) -> Result<(), StoreError> {
    let key = keys::body(&body.partition, &body.sha256);
    let count = match t.get(Cf::BodyRefs, &key)? {
        Some(v) => decode_refcount(&v)?,
        None => {
            return Err(StoreError::Invariant(format!(
                "refcount of body {} underflows",
                body.sha256
            )));
        }
    };
    if count <= 1 {
        t.delete(Cf::BodyRefs, key.clone());
        delete_body(t, key)?;
    } else {
        t.put(Cf::BodyRefs, key, (count - 1).to_be_bytes().to_vec());
    }
    Ok(())
}

fn read_body<R: KvRead>(t: &Txn<'_, R>, body: &BodyRef) -> Result<Vec<u8>, StoreError> {
    body_bytes(t, &keys::body(&body.partition, &body.sha256))?
        .ok_or_else(|| StoreError::Invariant(format!("body {} missing", body.sha256)))
}
