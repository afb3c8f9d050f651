//! The bottom layer of a state machine's storage: its column families ([`Cf`]), read access
//! to committed data ([`KvRead`]), the transaction overlay that apply reads and writes through
//! ([`Txn`]), the value codec ([`encode`], [`decode`], [`decode_refcount`]) and how a body is
//! stored, whole or in chunks of [`BODY_CHUNK`]. It knows nothing of what the values mean (that
//! is [`crate::apply`]); keys are built by [`crate::keys`], except a chunked body's, which
//! [`chunks`] derives from the body's key.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::model::Event;

/// The column families of a state machine database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cf {
    Meta,
    Mailboxes,
    Messages,
    Bodies,
    BodyRefs,
    Quota,
    Queue,
    Deliveries,
    /// Bodies larger than [`BODY_CHUNK`], stored in chunks (so a partial FETCH reads only the
    /// chunks it needs): a manifest under the body key and the chunks under key + index.
    BodyChunks,
    /// The embedded directory (meta group only; see [`crate::directory`]).
    Directory,
    /// Sharing indexes: who was granted rights on which mailbox (so a user's LIST finds the
    /// mailboxes shared with them without scanning everyone's), and users' subscriptions to
    /// other users' mailboxes. See [`crate::keys::grant`].
    Shares,
}

impl Cf {
    pub const ALL: [Cf; 11] = [
        Cf::Meta,
        Cf::Mailboxes,
        Cf::Messages,
        Cf::Bodies,
        Cf::BodyRefs,
        Cf::Quota,
        Cf::Queue,
        Cf::Deliveries,
        Cf::BodyChunks,
        Cf::Directory,
        Cf::Shares,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::Mailboxes => "mailboxes",
            Cf::Messages => "messages",
            Cf::Bodies => "bodies",
            Cf::BodyRefs => "body_refs",
            Cf::Quota => "quota",
            Cf::Queue => "queue",
            Cf::Deliveries => "deliveries",
            Cf::BodyChunks => "body_chunks",
            Cf::Directory => "directory",
            Cf::Shares => "shares",
        }
    }
}

/// Key/value pairs in key order.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;
/// A pending write: column family, key, and the new value (`None` deletes).
pub type Write = (Cf, Vec<u8>, Option<Vec<u8>>);

/// Read access to committed state machine data.
pub trait KvRead {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every (key, value) whose key starts with `prefix`, in key order.
    fn scan(&self, cf: Cf, prefix: &[u8]) -> Result<KvPairs, StoreError>;
}

/// Pending writes of a batch layered over a read view.
pub struct Txn<'a, R: KvRead> {
    base: &'a R,
    pub(crate) overlay: BTreeMap<(Cf, Vec<u8>), Option<Vec<u8>>>,
    pub(crate) events: Vec<Event>,
    /// Expunges record tombstones (set while a [`crate::Command::Tracked`] applies).
    pub(crate) track_vanished: bool,
}

impl<'a, R: KvRead> Txn<'a, R> {
    pub fn new(base: &'a R) -> Self {
        Txn {
            base,
            overlay: BTreeMap::new(),
            events: Vec::new(),
            track_vanished: false,
        }
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.overlay.get(&(cf, key.to_vec())) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(cf, key),
        }
    }

    pub fn scan(&self, cf: Cf, prefix: &[u8]) -> Result<KvPairs, StoreError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
            self.base.scan(cf, prefix)?.into_iter().collect();
        for ((c, k), v) in self.overlay.range((cf, prefix.to_vec())..) {
            if *c != cf || !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    pub fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.insert((cf, key), Some(value));
    }

    pub fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.overlay.insert((cf, key), None);
    }

    pub(crate) fn get_de<T: DeserializeOwned>(
        &self,
        cf: Cf,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.get(cf, key)?.map(|v| decode(&v)).transpose()
    }

    pub(crate) fn put_ser<T: Serialize>(
        &mut self,
        cf: Cf,
        key: Vec<u8>,
        value: &T,
    ) -> Result<(), StoreError> {
        self.put(cf, key, encode(value)?);
        Ok(())
    }

    /// The writes accumulated so far, in key order (deterministic), and the events.
    pub fn into_parts(self) -> (Vec<Write>, Vec<Event>) {
        let writes = self
            .overlay
            .into_iter()
            .map(|((cf, k), v)| (cf, k, v))
            .collect();
        (writes, self.events)
    }
}

impl<R: KvRead> KvRead for Txn<'_, R> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Txn::get(self, cf, key)
    }
    fn scan(&self, cf: Cf, prefix: &[u8]) -> Result<KvPairs, StoreError> {
        Txn::scan(self, cf, prefix)
    }
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serialize(v).map_err(|e| StoreError::Codec(e.to_string()))
}

pub fn decode<T: DeserializeOwned>(v: &[u8]) -> Result<T, StoreError> {
    bincode::deserialize(v).map_err(|e| StoreError::Codec(e.to_string()))
}

/// Reference counts are stored as a big-endian u64.
pub fn decode_refcount(v: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(
        v.try_into()
            .map_err(|_| StoreError::Codec("refcount".into()))?,
    ))
}

/// Bodies up to this size are one value; larger ones are split into chunks of this size.
pub const BODY_CHUNK: usize = 256 * 1024;

pub mod chunks {
    //! Layout of chunked bodies in [`super::Cf::BodyChunks`].
    /// Manifest value: total length and number of chunks, big-endian.
    pub fn manifest(len: u64, n: u32) -> Vec<u8> {
        let mut v = len.to_be_bytes().to_vec();
        v.extend_from_slice(&n.to_be_bytes());
        v
    }
    pub fn parse(v: &[u8]) -> Option<(u64, u32)> {
        (v.len() == 12).then(|| {
            (
                u64::from_be_bytes(v[..8].try_into().unwrap_or_default()),
                u32::from_be_bytes(v[8..].try_into().unwrap_or_default()),
            )
        })
    }
    pub fn key(body_key: &[u8], i: u32) -> Vec<u8> {
        let mut k = body_key.to_vec();
        k.push(0);
        k.extend_from_slice(&i.to_be_bytes());
        k
    }
}

/// Stores a body: one value when small, else a manifest and chunks.
pub(crate) fn put_body<R: KvRead>(t: &mut Txn<'_, R>, key: &[u8], bytes: &[u8]) {
    if bytes.len() <= BODY_CHUNK {
        t.put(Cf::Bodies, key.to_vec(), bytes.to_vec());
        return;
    }
    let n = bytes.len().div_ceil(BODY_CHUNK) as u32;
    t.put(
        Cf::BodyChunks,
        key.to_vec(),
        chunks::manifest(bytes.len() as u64, n),
    );
    for (i, c) in bytes.chunks(BODY_CHUNK).enumerate() {
        t.put(Cf::BodyChunks, chunks::key(key, i as u32), c.to_vec());
    }
}

/// Reads bytes `[from, to)` of a stored body (clamped to its length), reading only the chunks
/// that overlap the range. `None` if the body is not stored.
pub fn body_range<R: KvRead + ?Sized>(
    r: &R,
    key: &[u8],
    from: u64,
    to: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    if let Some(v) = r.get(Cf::Bodies, key)? {
        let len = v.len() as u64;
        let (a, b) = (
            from.min(len) as usize,
            to.min(len).max(from.min(len)) as usize,
        );
        return Ok(Some(v[a..b].to_vec()));
    }
    let Some(m) = r.get(Cf::BodyChunks, key)? else {
        return Ok(None);
    };
    let (len, n) = chunks::parse(&m).ok_or_else(|| StoreError::Codec("body manifest".into()))?;
    let (from, to) = (from.min(len), to.min(len).max(from.min(len)));
    let mut out = Vec::with_capacity((to - from) as usize);
    let chunk = BODY_CHUNK as u64;
    let first = (from / chunk) as u32;
    let last = if to == from {
        first
    } else {
        ((to - 1) / chunk) as u32
    };
    for i in first..=last.min(n.saturating_sub(1)) {
        if to == from {
            break;
        }
        let c = r
            .get(Cf::BodyChunks, &chunks::key(key, i))?
            .ok_or_else(|| StoreError::Invariant(format!("body chunk {i} missing")))?;
        let start = i as u64 * chunk;
        let a = from.saturating_sub(start).min(c.len() as u64) as usize;
        let b = (to - start).min(c.len() as u64) as usize;
        out.extend_from_slice(&c[a..b]);
    }
    Ok(Some(out))
}

/// The whole stored body, or `None`.
pub fn body_bytes<R: KvRead + ?Sized>(r: &R, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    body_range(r, key, 0, u64::MAX)
}

/// Length of a stored body, or `None`.
pub fn body_len<R: KvRead + ?Sized>(r: &R, key: &[u8]) -> Result<Option<u64>, StoreError> {
    if let Some(v) = r.get(Cf::Bodies, key)? {
        return Ok(Some(v.len() as u64));
    }
    match r.get(Cf::BodyChunks, key)? {
        Some(m) => Ok(chunks::parse(&m).map(|(len, _)| len)),
        None => Ok(None),
    }
}

pub(crate) fn delete_body<R: KvRead>(t: &mut Txn<'_, R>, key: Vec<u8>) -> Result<(), StoreError> {
    if let Some(m) = t.get(Cf::BodyChunks, &key)? {
        let (_, n) = chunks::parse(&m).ok_or_else(|| StoreError::Codec("body manifest".into()))?;
        for i in 0..n {
            t.delete(Cf::BodyChunks, chunks::key(&key, i));
        }
        t.delete(Cf::BodyChunks, key.clone());
    }
    t.delete(Cf::Bodies, key);
    Ok(())
}
