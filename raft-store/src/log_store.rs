//! Raft log storage on RocksDB, shared by every group of a node, with group commit.
//!
//! One RocksDB database per node (`<data_dir>/raft-log`) holds the logs, votes and committed
//! ids of all its groups, keyed by group name. Sharing one database means sharing one WAL:
//! a single `fsync` makes the appends of every group durable at once.
//!
//! **Durability contract.** openraft is told that an append is durable (via
//! [`LogFlushed::log_io_completed`]) only after the WAL containing it has been synced.
//! [`RaftLogStorage::append`] writes the entries to RocksDB without syncing (so they are
//! readable immediately, as openraft requires) and hands the completion callback to the
//! *syncer* thread. The syncer takes every callback queued while the previous sync ran, issues
//! one `flush_wal(sync = true)`, and completes them all: that is group commit. Votes and
//! truncations are written with `sync = true` before the call returns.
//!
//! Keys: `L` group `\0` index(u64 BE) → bincode entry; `V` group → vote; `C` group → committed;
//! `P` group → last purged log id. Large entries (bodies) go to blob files once flushed, so
//! compaction does not rewrite them.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rocksdb::{DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::error::StoreError;
use crate::kv::{decode, encode};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Counters that show how well group commit batches (reported by `ctl status` and the bench).
#[derive(Debug, Default)]
pub struct LogStats {
    /// WAL syncs issued by the syncer.
    pub syncs: AtomicU64,
    /// Log entries made durable by those syncs.
    pub entries_synced: AtomicU64,
    /// `append` calls (one per batch openraft hands us).
    pub appends: AtomicU64,
}

/// Bytes of recent entries each group keeps decoded in memory (see [`Tail`]).
const TAIL_CACHE_BYTES: usize = 32 << 20;

/// The most recent entries of one group's log, decoded, contiguous and ending at the last
/// entry in the database. The leader reads every entry back once to apply it and once per
/// follower to replicate it, a follower once to apply it: under load those reads (RocksDB
/// lookups plus decoding bodies) were a tenth of the CPU, and nearly all of them ask for
/// entries appended moments before. Reads outside the cached span go to the database.
#[derive(Default)]
struct Tail {
    entries: std::collections::VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Tail {
    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Adds entries just written; a gap (the first append after opening, a truncation
    /// we did not see) starts the span afresh.
    fn push(&mut self, entries: Vec<(Entry, usize)>) {
        for (e, size) in entries {
            let follows = self
                .entries
                .back()
                .is_none_or(|(b, _)| b.log_id.index + 1 == e.log_id.index);
            if !follows {
                self.clear();
            }
            self.bytes += size;
            self.entries.push_back((e, size));
        }
        while self.bytes > TAIL_CACHE_BYTES && self.entries.len() > 1 {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    /// Drops entries from `index` on (a truncation).
    fn truncate(&mut self, index: u64) {
        self.entries.retain(|(e, _)| e.log_id.index < index);
        self.bytes = self.entries.iter().map(|(_, size)| size).sum();
    }

    /// Drops entries up to and including `index` (a purge).
    fn purge(&mut self, index: u64) {
        self.entries.retain(|(e, _)| e.log_id.index > index);
        self.bytes = self.entries.iter().map(|(_, size)| size).sum();
    }

    /// Entries `start..end` if the cache holds all of them that exist (the database has
    /// nothing after the cached span).
    fn get(&self, start: u64, end_exclusive: u64) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.0.log_id.index;
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        let want = end_exclusive.saturating_sub(start);
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take(usize::try_from(want).unwrap_or(usize::MAX))
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

struct SyncJob {
    entries: u64,
    done: LogFlushed<TypeConfig>,
}

/// The node's log database and its syncer thread.
pub struct LogDb {
    db: Arc<DB>,
    /// Queue to the syncer; taken on drop so the thread ends.
    syncer: std::sync::Mutex<Option<mpsc::Sender<SyncJob>>>,
    /// Joined on drop, so the database is closed before `LogDb` is gone (never during
    /// process exit, which aborts inside RocksDB).
    thread: Option<std::thread::JoinHandle<()>>,
    pub stats: Arc<LogStats>,
    /// Each group's [`Tail`], shared by every `LogStore` of that group.
    tails: std::sync::Mutex<std::collections::HashMap<String, Arc<std::sync::Mutex<Tail>>>>,
}

impl LogDb {
    pub fn open(path: &Path) -> Result<Arc<LogDb>, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_enable_blob_files(true);
        opts.set_min_blob_size(4096);
        // No blob garbage collection: a log is only ever purged from its head, so a blob file
        // becomes wholly dead and is dropped with the last table referring to it; relocating
        // the blobs still live in old files (what GC does) was 7 % of the CPU under SMTP load.
        opts.set_enable_blob_gc(false);
        opts.set_max_total_wal_size(256 << 20);
        opts.set_write_buffer_size(64 << 20);
        background_at_low_priority(&mut opts);
        let db = Arc::new(DB::open(&opts, path)?);
        let (tx, rx) = mpsc::channel::<SyncJob>();
        let stats = Arc::new(LogStats::default());
        let (db2, stats2) = (db.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || syncer(db2, stats2, rx))
            .map_err(StoreError::from)?;
        Ok(Arc::new(LogDb {
            db,
            syncer: std::sync::Mutex::new(Some(tx)),
            thread: Some(thread),
            stats,
            tails: Default::default(),
        }))
    }

    /// A group's view of the log database.
    pub fn store(self: &Arc<Self>, group: &str) -> LogStore {
        let tail = self
            .tails
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(group.to_string())
            .or_default()
            .clone();
        LogStore {
            db: self.clone(),
            group: group.into(),
            tail,
            committed: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Drop for LogDb {
    fn drop(&mut self) {
        if let Ok(mut tx) = self.syncer.lock() {
            tx.take();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// RocksDB's compaction threads run at the lowest CPU priority (nice 19): compaction only
/// reorganises table files, and must not take the CPU from the threads on the path to a
/// `250` (sessions, Raft, apply, the WAL syncer); it still gets every idle cycle. Flushes
/// keep the normal priority: a flush starved under load would fill the memtables and stall
/// writes. The setting is on RocksDB's process-wide default environment, shared by every
/// database of the process.
pub(crate) fn background_at_low_priority(opts: &mut Options) {
    if let Ok(mut env) = rocksdb::Env::new() {
        env.lower_thread_pool_cpu_priority();
        opts.set_env(&env);
    }
}

fn syncer(db: Arc<DB>, stats: Arc<LogStats>, rx: mpsc::Receiver<SyncJob>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while let Ok(more) = rx.try_recv() {
            jobs.push(more);
        }
        let result = db.flush_wal(true);
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        let n: u64 = jobs.iter().map(|j| j.entries).sum();
        stats.entries_synced.fetch_add(n, Ordering::Relaxed);
        for job in jobs {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::other(e.to_string())),
            };
            job.done.log_io_completed(r);
        }
    }
}

fn key(prefix: u8, group: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(group.len() + 10);
    k.push(prefix);
    k.extend_from_slice(group.as_bytes());
    k.push(0);
    k
}

fn log_key(group: &str, index: u64) -> Vec<u8> {
    let mut k = key(b'L', group);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The log of one group. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<LogDb>,
    group: Arc<str>,
    tail: Arc<std::sync::Mutex<Tail>>,
    /// Last committed index saved by openraft (for `ctl status`).
    committed: Arc<AtomicU64>,
}

impl LogStore {
    pub fn stats(&self) -> Arc<LogStats> {
        self.db.stats.clone()
    }

    /// Committed index as last reported by openraft (0 before the first commit).
    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        prefix: u8,
    ) -> Result<Option<T>, StoreError> {
        self.db
            .db
            .get(key(prefix, &self.group))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.db.write_opt(batch, &wo)?;
        Ok(())
    }

    fn last_log_id(&self) -> Result<Option<LogId>, StoreError> {
        let prefix = key(b'L', &self.group);
        let top = log_key(&self.group, u64::MAX);
        let mut it = self
            .db
            .db
            .iterator(IteratorMode::From(&top, Direction::Reverse));
        match it.next() {
            Some(Ok((k, v))) if k.starts_with(&prefix) => {
                let e: Entry = decode(&v)?;
                Ok(Some(e.log_id))
            }
            Some(Err(e)) => Err(e.into()),
            _ => Ok(None),
        }
    }

    fn read_range(&self, start: u64, end_exclusive: u64) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        if start >= end_exclusive {
            return Ok(out);
        }
        if let Some(hit) = self.tail().get(start, end_exclusive) {
            return Ok(hit);
        }
        let from = log_key(&self.group, start);
        let to = log_key(&self.group, end_exclusive);
        for item in self
            .db
            .db
            .iterator(IteratorMode::From(&from, Direction::Forward))
        {
            let (k, v) = item?;
            if k.as_ref() >= to.as_slice() {
                break;
            }
            out.push(decode(&v)?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        self.read_range(start, end).map_err(StoreError::logs_read)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged: Option<LogId> = self.get_meta(b'P').map_err(StoreError::logs_read)?;
        let last = self
            .last_log_id()
            .map_err(StoreError::logs_read)?
            .or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.put(
            key(b'V', &self.group),
            encode(vote)
                .map_err(|e| e.raft(openraft::ErrorSubject::Vote, openraft::ErrorVerb::Write))?,
        );
        self.write(b, true)
            .map_err(|e| e.raft(openraft::ErrorSubject::Vote, openraft::ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(b'V')
            .map_err(|e| e.raft(openraft::ErrorSubject::Vote, openraft::ErrorVerb::Read))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(c) = &committed {
            self.committed.store(c.index, Ordering::Relaxed);
        }
        let mut b = WriteBatch::default();
        b.put(
            key(b'C', &self.group),
            encode(&committed).map_err(StoreError::logs_write)?,
        );
        // Not synced: losing it only means re-learning the commit index from the leader.
        self.write(b, false).map_err(StoreError::logs_write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let c: Option<Option<LogId>> = self.get_meta(b'C').map_err(StoreError::logs_read)?;
        let c = c.flatten();
        if let Some(c) = &c {
            self.committed.store(c.index, Ordering::Relaxed);
        }
        Ok(c)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let mut n = 0u64;
        let mut cached = Vec::new();
        for e in entries {
            let bytes = encode(&e).map_err(StoreError::logs_write)?;
            batch.put(log_key(&self.group, e.log_id.index), &bytes);
            cached.push((e, bytes.len()));
            n += 1;
        }
        // Visible to readers now, durable once the syncer has synced the WAL. The cache is
        // updated under its lock after the write, so a reader sees either the database
        // alone or a cache that ends where the database does.
        {
            let mut tail = self.tail();
            self.write(batch, false).map_err(StoreError::logs_write)?;
            tail.push(cached);
        }
        self.db.stats.appends.fetch_add(1, Ordering::Relaxed);
        let tx = self
            .db
            .syncer
            .lock()
            .map_err(|_| StoreError::Invariant("syncer lock poisoned".into()).logs_write())?
            .clone();
        let job = SyncJob {
            entries: n,
            done: callback,
        };
        let unsent = match tx {
            Some(tx) => tx.send(job).err().map(|mpsc::SendError(job)| job),
            None => Some(job),
        };
        if let Some(job) = unsent {
            job.done
                .log_io_completed(Err(io::Error::other("log syncer stopped")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.delete_range(
            log_key(&self.group, log_id.index),
            log_key(&self.group, u64::MAX),
        );
        let mut tail = self.tail();
        self.write(b, true).map_err(StoreError::logs_write)?;
        tail.truncate(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.put(
            key(b'P', &self.group),
            encode(&log_id).map_err(StoreError::logs_write)?,
        );
        b.delete_range(
            log_key(&self.group, 0),
            log_key(&self.group, log_id.index + 1),
        );
        self.tail().purge(log_id.index);
        self.write(b, false).map_err(StoreError::logs_write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};
    use proptest::prelude::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(u8),
        Truncate(u8),
        Purge(u8),
        Read(u8, u8),
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u8>().prop_map(|n| Op::Append(n % 8 + 1)),
            1 => any::<u8>().prop_map(Op::Truncate),
            1 => any::<u8>().prop_map(Op::Purge),
            4 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Read(a, b)),
            1 => Just(Op::Reopen),
        ]
    }

    /// Reads answered from the in-memory tail equal what the database alone answers, after
    /// any mix of appends, truncations, purges and reopenings (which empty the cache).
    #[test]
    fn tail_cache_agrees_with_the_database() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        proptest!(ProptestConfig::with_cases(64), |(ops in proptest::collection::vec(op(), 1..60))| {
            let dir = tempfile::tempdir().expect("tempdir");
            rt.block_on(async {
                let mut db = LogDb::open(dir.path()).expect("open");
                let mut log = db.store("g");
                let (mut first, mut next, mut term) = (1u64, 1u64, 1u64);
                // The model: index → term of every entry the log holds.
                let mut model = std::collections::BTreeMap::new();
                for op in ops {
                    match op {
                        Op::Append(n) => {
                            let batch: Vec<_> =
                                (next..next + u64::from(n)).map(|i| entry(i, term)).collect();
                            log.blocking_append(batch).await.expect("append");
                            for i in next..next + u64::from(n) {
                                model.insert(i, term);
                            }
                            next += u64::from(n);
                        }
                        Op::Truncate(k) => {
                            let at = (first + u64::from(k) % 16).min(next);
                            if at < next {
                                log.truncate(entry(at, term).log_id).await.expect("truncate");
                                model.retain(|i, _| *i < at);
                                next = at;
                                term += 1;
                            }
                        }
                        Op::Purge(k) => {
                            let upto = first + u64::from(k) % 8;
                            if upto < next {
                                log.purge(entry(upto, term).log_id).await.expect("purge");
                                model.retain(|i, _| *i > upto);
                                first = upto + 1;
                            }
                        }
                        Op::Read(a, b) => {
                            let start = first + u64::from(a) % 24;
                            let end = start + u64::from(b) % 24;
                            let ids = |v: Vec<Entry>| -> Vec<(u64, u64)> {
                                v.iter().map(|e| (e.log_id.index, e.log_id.leader_id.term)).collect()
                            };
                            let want: Vec<(u64, u64)> =
                                model.range(start..end).map(|(i, t)| (*i, *t)).collect();
                            assert_eq!(ids(log.read_range(start, end).expect("read")), want);
                            let cached = log.tail().get(start, end);
                            if let Some(c) = cached {
                                assert_eq!(ids(c), want);
                            }
                        }
                        Op::Reopen => {
                            drop(log);
                            drop(db);
                            db = LogDb::open(dir.path()).expect("reopen");
                            log = db.store("g");
                        }
                    }
                }
                let all = log.read_range(0, u64::MAX).expect("read all");
                let all: Vec<(u64, u64)> =
                    all.iter().map(|e| (e.log_id.index, e.log_id.leader_id.term)).collect();
                assert_eq!(all, model.into_iter().collect::<Vec<_>>());
            });
        });
    }
}
