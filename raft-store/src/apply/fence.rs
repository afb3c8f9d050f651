//! The fencing-token register: which master holds the queue (acquire, release) and the
//! history of holders, of which the last [`FENCE_HISTORY`] are kept.

use super::Outcome;
use crate::keys::{FENCE_CURRENT, FENCE_LOG, FENCE_SEQ};
use crate::kv::{Cf, KvRead, Txn};
use crate::model::{ApplyError, FenceOp, HolderRecord, Reply};

/// Fence records live in the `meta` column family: `fence/current` (the latest
/// [`HolderRecord`]) and `fence/log/` + sequence number (u64 BE) for the history, of which
/// the last [`FENCE_HISTORY`] are kept.
pub const FENCE_HISTORY: u64 = 1000;

pub(super) fn apply_fence<R: KvRead>(t: &mut Txn<'_, R>, op: &FenceOp) -> Outcome {
    let current: Option<HolderRecord> = t.get_de(Cf::Meta, FENCE_CURRENT)?;
    let next = match op {
        FenceOp::Acquire {
            token,
            address,
            at_ms,
        } => {
            if let Some(c) = &current {
                // One leader per term: a token of the same term from another node cannot be
                // real, and an older term is a deposed master.
                if token.term < c.token.term
                    || (token.term == c.token.term && token.node != c.token.node)
                {
                    refuse!(ApplyError::Invalid(format!(
                        "fencing token {token} does not supersede the holder's {}",
                        c.token
                    )));
                }
                if c.token == *token && c.released_at_ms.is_none() {
                    // The same holder again (a retried proposal): nothing changes.
                    return Ok(Ok(Reply::Fenced { previous: current }));
                }
            }
            HolderRecord {
                token: *token,
                address: address.clone(),
                acquired_at_ms: *at_ms,
                released_at_ms: None,
                release_reason: None,
            }
        }
        FenceOp::Release {
            token,
            at_ms,
            reason,
        } => match &current {
            Some(c) if c.token == *token => {
                if c.released_at_ms.is_some() {
                    return Ok(Ok(Reply::Fenced { previous: current }));
                }
                let mut c = c.clone();
                c.released_at_ms = Some(*at_ms);
                c.release_reason = Some(reason.clone());
                c
            }
            _ => refuse!(ApplyError::Invalid(format!(
                "fencing token {token} is not the current holder"
            ))),
        },
    };
    let seq: u64 = t.get_de(Cf::Meta, FENCE_SEQ)?.unwrap_or(0);
    let seq = match op {
        // A release updates the holder's history row in place.
        FenceOp::Release { .. } => seq,
        FenceOp::Acquire { .. } => seq + 1,
    };
    let mut key = FENCE_LOG.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    t.put_ser(Cf::Meta, key, &next)?;
    if seq > FENCE_HISTORY {
        let mut old = FENCE_LOG.to_vec();
        old.extend_from_slice(&(seq - FENCE_HISTORY).to_be_bytes());
        t.delete(Cf::Meta, old);
    }
    t.put_ser(Cf::Meta, FENCE_SEQ.to_vec(), &seq)?;
    t.put_ser(Cf::Meta, FENCE_CURRENT.to_vec(), &next)?;
    Ok(Ok(Reply::Fenced { previous: current }))
}

/// How many audit records the meta group keeps (the oldest go first).
pub const AUDIT_KEEP: u64 = 100_000;

/// [`crate::Command::Audit`]: appends the record under the next sequence number.
pub(super) fn audit<R: KvRead>(t: &mut Txn<'_, R>, r: &crate::model::AuditRecord) -> Outcome {
    use crate::keys::{AUDIT_LOG, AUDIT_SEQ};
    let seq: u64 = t.get_de::<u64>(Cf::Meta, AUDIT_SEQ)?.unwrap_or(0) + 1;
    let mut key = AUDIT_LOG.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    t.put_ser(Cf::Meta, key, r)?;
    if seq > AUDIT_KEEP {
        let mut old = AUDIT_LOG.to_vec();
        old.extend_from_slice(&(seq - AUDIT_KEEP).to_be_bytes());
        t.delete(Cf::Meta, old);
    }
    t.put_ser(Cf::Meta, AUDIT_SEQ.to_vec(), &seq)?;
    Ok(Ok(Reply::Done))
}
