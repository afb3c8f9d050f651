//! The state machine of one resource group on RocksDB, its snapshots and its change feed.
//!
//! Layout under the group's directory:
//!
//! ```text
//! sm/CURRENT          name of the live generation, replaced atomically (write, fsync, rename)
//! sm/gen-00000001/    a RocksDB database with the column families of crate::kv
//! snapshots/<id>.snap the current snapshot: a packed RocksDB checkpoint
//! snapshots/<id>.meta its openraft SnapshotMeta (JSON)
//! ```
//!
//! **Apply** turns a batch of committed entries into one RocksDB write (data and
//! `last_applied` together) that skips the WAL: the Raft log is the durable record. Column
//! families are flushed atomically (`atomic_flush`), so after a crash the state machine is a
//! consistent prefix ending at some `last_applied`, and openraft re-applies the log from there
//! up to the saved committed id. This halves what each replica writes per message.
//!
//! **Snapshots** are RocksDB checkpoints (hard links, so building one costs almost nothing),
//! packed into a single file that openraft streams to a lagging or new member in chunks. All
//! memtables are flushed before the checkpoint, so the persisted state is always at least as
//! new as the newest snapshot and log purging never outruns durable state.
//!
//! **Installing** a snapshot unpacks it into a fresh generation directory, fsyncs it, and only
//! then switches `CURRENT`. A crash mid-install leaves the old generation live and the partial
//! one is deleted at the next start: a node never serves a half-restored state.
//!
//! **Bodies** live in the `bodies` column family with RocksDB blob files enabled (values of
//! 4 KiB and more are stored in blob files and only referenced from the LSM), so compaction
//! rewrites keys and small index records, not megabytes of mail. Blob garbage collection
//! reclaims space when bodies lose their last reference.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use rocksdb::checkpoint::Checkpoint;
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch};
use tokio::sync::broadcast;

use crate::apply::apply_command;
use crate::error::StoreError;
use crate::keys;
use crate::kv::{Cf, KvRead, Txn, decode, encode};
use crate::model::{Change, Event, Reply};
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const SNAPSHOT_MAGIC: &[u8; 8] = b"HLYSNAP1";
/// Capacity of a group's change feed; a subscriber that falls further behind gets `Lagged`
/// and must re-read the state it follows.
pub const CHANGE_FEED_CAPACITY: usize = 8192;

fn cf_options(cf: Cf) -> Options {
    let mut o = Options::default();
    // Applying a message looks up keys that usually do not exist yet (a new queue id, a body
    // not stored before, its refcount, its delivery record). Without filters each miss
    // searches every level's index; a whole-key Bloom filter per table (10 bits/key, ~1 %
    // false positives) and one over the memtable answer most misses from memory.
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    o.set_block_based_table_factory(&table);
    o.set_memtable_whole_key_filtering(true);
    o.set_memtable_prefix_bloom_ratio(0.02);
    if cf == Cf::Bodies || cf == Cf::BodyChunks {
        o.set_enable_blob_files(true);
        o.set_min_blob_size(4096);
        o.set_enable_blob_gc(true);
        o.set_blob_compression_type(rocksdb::DBCompressionType::Lz4);
    }
    o
}

fn open_db(path: &Path) -> Result<DB, StoreError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_open_files(512);
    // Applies skip the WAL (the Raft log is the durable record), so column families must be
    // flushed together to stay mutually consistent after a crash.
    opts.set_atomic_flush(true);
    crate::log_store::background_at_low_priority(&mut opts);
    let cfs = Cf::ALL
        .iter()
        .map(|cf| ColumnFamilyDescriptor::new(cf.name(), cf_options(*cf)));
    Ok(DB::open_cf_descriptors(&opts, path, cfs)?)
}

/// A read view over a state machine database.
pub struct DbView<'a>(pub &'a DB);

impl DbView<'_> {
    fn cf(&self, cf: Cf) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.0
            .cf_handle(cf.name())
            .ok_or_else(|| StoreError::Invariant(format!("missing column family {}", cf.name())))
    }
}

impl DbView<'_> {
    /// Last applied log id and membership recorded in this database.
    fn applied_state(&self) -> Result<(Option<LogId>, StoredMembership), StoreError> {
        let applied: Option<LogId> = self
            .get(Cf::Meta, keys::APPLIED)?
            .map(|b| decode(&b))
            .transpose()?;
        let membership: StoredMembership = self
            .get(Cf::Meta, keys::MEMBERSHIP)?
            .map(|b| decode(&b))
            .transpose()?
            .unwrap_or_default();
        Ok((applied, membership))
    }
}

impl KvRead for DbView<'_> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get_cf(self.cf(cf)?, key)?)
    }

    fn scan(&self, cf: Cf, prefix: &[u8]) -> Result<crate::kv::KvPairs, StoreError> {
        let mut out = Vec::new();
        for item in self
            .0
            .iterator_cf(self.cf(cf)?, IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

/// State shared by the state machine, its snapshot builder and readers.
pub struct SmShared {
    pub group: String,
    dir: PathBuf,
    db: RwLock<Arc<DB>>,
    generation: AtomicU64,
    feed: broadcast::Sender<Arc<Change>>,
    /// Index of the last applied entry (0 before the first).
    applied_index: AtomicU64,
}

impl SmShared {
    /// The live database. Readers hold the `Arc` for the duration of one read.
    pub fn db(&self) -> Arc<DB> {
        match self.db.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.feed.subscribe()
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    /// A fresh path for a snapshot being received (removed at start if left over).
    fn incoming_path(&self) -> PathBuf {
        self.snapshots_dir()
            .join(format!("incoming-{}.snap", unix_nanos()))
    }

    fn applied_state(&self) -> Result<(Option<LogId>, StoredMembership), StoreError> {
        let db = self.db();
        DbView(&db).applied_state()
    }
}

/// The openraft state machine of one group.
pub struct StateMachineStore {
    shared: Arc<SmShared>,
    /// Path of the file handed out by `begin_receiving_snapshot`.
    receiving: Option<PathBuf>,
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn gen_name(g: u64) -> String {
    format!("gen-{g:08}")
}

fn fsync_dir(path: &Path) -> Result<(), StoreError> {
    std::fs::File::open(path)?.sync_all()?;
    Ok(())
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

impl StateMachineStore {
    /// Opens (or creates) the state machine of `group` under `dir`.
    pub fn open(group: &str, dir: &Path) -> Result<StateMachineStore, StoreError> {
        let sm_dir = dir.join("sm");
        std::fs::create_dir_all(&sm_dir)?;
        std::fs::create_dir_all(dir.join("snapshots"))?;
        let current = sm_dir.join("CURRENT");
        let generation = match std::fs::read_to_string(&current) {
            Ok(s) => s
                .trim()
                .strip_prefix("gen-")
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| {
                    StoreError::Invariant(format!("{} is corrupt: {s:?}", current.display()))
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(&current, gen_name(1).as_bytes())?;
                1
            }
            Err(e) => return Err(e.into()),
        };
        // Leftovers of interrupted snapshot installs or superseded generations.
        for e in std::fs::read_dir(&sm_dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("gen-") && name != gen_name(generation) {
                tracing::info!(group, dir = %e.path().display(), "removing stale state machine generation");
                std::fs::remove_dir_all(e.path())?;
            }
        }
        for e in std::fs::read_dir(dir.join("snapshots"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("incoming-") || name.starts_with("tmp-") || name.ends_with(".tmp") {
                let p = e.path();
                if p.is_dir() {
                    std::fs::remove_dir_all(&p)?
                } else {
                    std::fs::remove_file(&p)?
                }
            }
        }
        let db = open_db(&sm_dir.join(gen_name(generation)))?;
        let (feed, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        let shared = Arc::new(SmShared {
            group: group.to_string(),
            dir: dir.to_path_buf(),
            db: RwLock::new(Arc::new(db)),
            generation: AtomicU64::new(generation),
            feed,
            applied_index: AtomicU64::new(0),
        });
        let (applied, _) = shared.applied_state()?;
        shared
            .applied_index
            .store(applied.map(|l| l.index).unwrap_or(0), Ordering::Release);
        Ok(StateMachineStore {
            shared,
            receiving: None,
        })
    }

    pub fn shared(&self) -> Arc<SmShared> {
        self.shared.clone()
    }

    /// Applies entries; synchronous core of [`RaftStateMachine::apply`], also used by tests.
    pub fn apply_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<Vec<Reply>, StoreError> {
        let db = self.shared.db();
        let view = DbView(&db);
        let mut txn = Txn::new(&view);
        let mut replies = Vec::new();
        let mut changes = Vec::new();
        let mut last: Option<LogId> = None;
        let mut membership: Option<StoredMembership> = None;
        for entry in entries {
            last = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => replies.push(Reply::None),
                EntryPayload::Normal(cmd) => {
                    let reply = apply_command(&mut txn, &cmd)?;
                    for event in std::mem::take(&mut txn.events) {
                        changes.push(Arc::new(Change {
                            group: self.shared.group.clone(),
                            term: entry.log_id.leader_id.term,
                            index: entry.log_id.index,
                            event,
                        }));
                    }
                    replies.push(reply);
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    replies.push(Reply::None);
                }
            }
        }
        let Some(last) = last else { return Ok(replies) };
        txn.put(Cf::Meta, keys::APPLIED.to_vec(), encode(&last)?);
        if let Some(m) = membership {
            txn.put(Cf::Meta, keys::MEMBERSHIP.to_vec(), encode(&m)?);
        }
        let (writes, _) = txn.into_parts();
        let mut batch = WriteBatch::default();
        for (cf, k, v) in writes {
            let handle = view.cf(cf)?;
            match v {
                Some(v) => batch.put_cf(handle, k, v),
                None => batch.delete_cf(handle, k),
            }
        }
        let mut wo = rocksdb::WriteOptions::default();
        wo.disable_wal(true);
        db.write_opt(batch, &wo)?;
        self.shared
            .applied_index
            .store(last.index, Ordering::Release);
        for c in changes {
            // No subscribers is fine.
            let _ = self.shared.feed.send(c);
        }
        Ok(replies)
    }
}

/// Replaces the live state with an unpacked snapshot (see the module docs for the steps).
fn install(shared: &SmShared, meta: &SnapshotMeta, packed: &Path) -> Result<(), StoreError> {
    let sm_dir = shared.dir.join("sm");
    let next = shared.generation.load(Ordering::Acquire) + 1;
    let tmp_dir = sm_dir.join(format!("{}.tmp", gen_name(next)));
    if tmp_dir.exists() {
        std::fs::remove_dir_all(&tmp_dir)?;
    }
    unpack(packed, &tmp_dir)?;
    let final_dir = sm_dir.join(gen_name(next));
    std::fs::rename(&tmp_dir, &final_dir)?;
    fsync_dir(&sm_dir)?;
    let db = open_db(&final_dir)?;
    {
        let (applied, _) = DbView(&db).applied_state()?;
        if applied != meta.last_log_id {
            return Err(StoreError::Invariant(format!(
                "snapshot {} holds state at {:?}, its metadata says {:?}",
                meta.snapshot_id, applied, meta.last_log_id
            )));
        }
    }
    write_atomic(&sm_dir.join("CURRENT"), gen_name(next).as_bytes())?;
    let old = {
        let mut g = shared
            .db
            .write()
            .map_err(|_| StoreError::Invariant("sm lock poisoned".into()))?;
        std::mem::replace(&mut *g, Arc::new(db))
    };
    shared.generation.store(next, Ordering::Release);
    shared.applied_index.store(
        meta.last_log_id.map(|l| l.index).unwrap_or(0),
        Ordering::Release,
    );
    // Keep the received file as our current snapshot so we can serve it in turn.
    let snap_dir = shared.snapshots_dir();
    let target = snap_dir.join(format!("{}.snap", meta.snapshot_id));
    std::fs::rename(packed, &target)?;
    write_atomic(
        &snap_dir.join(format!("{}.meta", meta.snapshot_id)),
        &serde_json::to_vec(meta).map_err(|e| StoreError::Codec(e.to_string()))?,
    )?;
    remove_other_snapshots(&snap_dir, &meta.snapshot_id)?;
    retire_generation(old, sm_dir.join(gen_name(next - 1)));
    let _ = shared.feed.send(Arc::new(Change {
        group: shared.group.clone(),
        term: meta.last_log_id.map(|l| l.leader_id.term).unwrap_or(0),
        index: meta.last_log_id.map(|l| l.index).unwrap_or(0),
        event: Event::SnapshotInstalled,
    }));
    tracing::info!(group = %shared.group, snapshot = %meta.snapshot_id, generation = next, "installed snapshot");
    Ok(())
}

/// Flushes every column family's memtable to SST files, atomically across families.
fn flush_all(db: &DB) -> Result<(), StoreError> {
    let view = DbView(db);
    let cfs = Cf::ALL
        .iter()
        .map(|c| view.cf(*c))
        .collect::<Result<Vec<_>, _>>()?;
    let mut fo = rocksdb::FlushOptions::default();
    fo.set_wait(true);
    db.flush_cfs_opt(&cfs, &fo)?;
    Ok(())
}

/// Drops a superseded database and deletes its directory once no reader holds it any more
/// (bounded wait; a leftover directory is removed at the next start).
fn retire_generation(old: Arc<DB>, dir: PathBuf) {
    std::thread::spawn(move || {
        let mut old = Some(old);
        for _ in 0..600 {
            match Arc::try_unwrap(old.take().expect("present")) {
                Ok(db) => {
                    drop(db);
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        tracing::warn!(dir = %dir.display(), error = %e, "could not remove old generation");
                    }
                    return;
                }
                Err(still_shared) => old = Some(still_shared),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
}

fn remove_other_snapshots(dir: &Path, keep_id: &str) -> Result<(), StoreError> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        let id = name
            .strip_suffix(".snap")
            .or_else(|| name.strip_suffix(".meta"));
        if id.is_some_and(|id| id != keep_id) {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// Packs a checkpoint directory into one file: magic, then (name len u32, name, size u64,
/// bytes) per file, then a zero name length.
fn pack(dir: &Path, out: &Path) -> Result<(), StoreError> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    w.write_all(SNAPSHOT_MAGIC)?;
    for name in names {
        let path = dir.join(&name);
        if !path.is_file() {
            continue;
        }
        let name = name.to_string_lossy().to_string();
        let size = path.metadata()?.len();
        w.write_all(&(name.len() as u32).to_be_bytes())?;
        w.write_all(name.as_bytes())?;
        w.write_all(&size.to_be_bytes())?;
        let copied = std::io::copy(&mut std::fs::File::open(&path)?.take(size), &mut w)?;
        if copied != size {
            return Err(StoreError::Io(format!(
                "{} changed while packing",
                path.display()
            )));
        }
    }
    w.write_all(&0u32.to_be_bytes())?;
    let f = w.into_inner().map_err(|e| StoreError::Io(e.to_string()))?;
    f.sync_all()?;
    Ok(())
}

fn unpack(packed: &Path, dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir)?;
    let mut r = std::io::BufReader::new(std::fs::File::open(packed)?);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != SNAPSHOT_MAGIC {
        return Err(StoreError::Codec("not a Halyard snapshot".into()));
    }
    loop {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            break;
        }
        if len > 4096 {
            return Err(StoreError::Codec("snapshot file name too long".into()));
        }
        let mut name = vec![0u8; len];
        r.read_exact(&mut name)?;
        let name =
            String::from_utf8(name).map_err(|_| StoreError::Codec("snapshot file name".into()))?;
        if name.contains('/') || name.starts_with('.') {
            return Err(StoreError::Codec(format!(
                "bad file name in snapshot: {name:?}"
            )));
        }
        let mut size = [0u8; 8];
        r.read_exact(&mut size)?;
        let size = u64::from_be_bytes(size);
        let mut f = std::fs::File::create(dir.join(&name))?;
        let copied = std::io::copy(&mut (&mut r).take(size), &mut f)?;
        if copied != size {
            return Err(StoreError::Codec(format!("snapshot truncated in {name}")));
        }
        f.sync_all()?;
    }
    fsync_dir(dir)?;
    Ok(())
}

/// Builds snapshots off the apply path.
pub struct SnapshotBuilder {
    shared: Arc<SmShared>,
}

static SNAPSHOT_SEQ: AtomicU64 = AtomicU64::new(0);

fn build_snapshot_blocking(shared: &SmShared) -> Result<(SnapshotMeta, PathBuf), StoreError> {
    let db = shared.db();
    // Everything applied so far reaches disk before we claim it in a snapshot (and before
    // openraft purges the log up to it).
    flush_all(&db)?;
    let snap_dir = shared.snapshots_dir();
    let nanos = unix_nanos();
    let seq = SNAPSHOT_SEQ.fetch_add(1, Ordering::Relaxed);
    let ckpt = snap_dir.join(format!("tmp-{nanos}-{seq}"));
    Checkpoint::new(&db)?.create_checkpoint(&ckpt)?;
    let (applied, membership) = {
        let mut opts = Options::default();
        opts.create_if_missing(false);
        let ro = DB::open_cf_for_read_only(&opts, &ckpt, Cf::ALL.iter().map(|c| c.name()), false)?;
        DbView(&ro).applied_state()?
    };
    let snapshot_id = match &applied {
        Some(l) => format!("{}-{}-{}-{}", l.leader_id.term, l.index, nanos, seq),
        None => format!("0-0-{nanos}-{seq}"),
    };
    let meta = SnapshotMeta {
        last_log_id: applied,
        last_membership: membership,
        snapshot_id: snapshot_id.clone(),
    };
    let tmp = snap_dir.join(format!("{snapshot_id}.snap.tmp"));
    pack(&ckpt, &tmp)?;
    let path = snap_dir.join(format!("{snapshot_id}.snap"));
    std::fs::rename(&tmp, &path)?;
    write_atomic(
        &snap_dir.join(format!("{snapshot_id}.meta")),
        &serde_json::to_vec(&meta).map_err(|e| StoreError::Codec(e.to_string()))?,
    )?;
    std::fs::remove_dir_all(&ckpt)?;
    remove_other_snapshots(&snap_dir, &snapshot_id)?;
    tracing::info!(group = %shared.group, snapshot = %snapshot_id, bytes = path.metadata().map(|m| m.len()).unwrap_or(0), "built snapshot");
    Ok((meta, path))
}

fn current_snapshot_blocking(
    shared: &SmShared,
) -> Result<Option<(SnapshotMeta, PathBuf)>, StoreError> {
    let dir = shared.snapshots_dir();
    for e in std::fs::read_dir(&dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(id) = name.strip_suffix(".meta") {
            let snap = dir.join(format!("{id}.snap"));
            if !snap.exists() {
                continue;
            }
            let meta: SnapshotMeta = serde_json::from_slice(&std::fs::read(e.path())?)
                .map_err(|e| StoreError::Codec(e.to_string()))?;
            return Ok(Some((meta, snap)));
        }
    }
    Ok(None)
}

async fn open_snapshot(meta: SnapshotMeta, path: PathBuf) -> Result<Snapshot, StoreError> {
    let f = tokio::fs::File::open(&path).await?;
    Ok(Snapshot {
        meta,
        snapshot: Box::new(f),
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(format!("blocking task: {e}")))?
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let shared = self.shared.clone();
        let (meta, path) = blocking(move || build_snapshot_blocking(&shared))
            .await
            .map_err(|e| e.snapshot(ErrorVerb::Write))?;
        open_snapshot(meta, path)
            .await
            .map_err(|e| e.snapshot(ErrorVerb::Read))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        self.shared.applied_state().map_err(StoreError::sm_read)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // RocksDB writes here are unsynced and mostly in memory: cheap enough to run inline.
        self.apply_entries(entries).map_err(StoreError::sm_write)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.shared.incoming_path();
        if let Some(old) = self.receiving.take() {
            let _ = tokio::fs::remove_file(old).await;
        }
        let f = tokio::fs::File::create(&path)
            .await
            .map_err(|e| StoreError::from(e).snapshot(ErrorVerb::Write))?;
        self.receiving = Some(path);
        Ok(Box::new(f))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        use std::os::unix::fs::MetadataExt;
        use tokio::io::AsyncSeekExt;
        let err = |e: StoreError| e.snapshot(ErrorVerb::Write);
        let mut snapshot = snapshot;
        snapshot.sync_all().await.map_err(|e| err(e.into()))?;
        let received = self.receiving.take();
        // Usually the handle is the file we created in `begin_receiving_snapshot`; if openraft
        // (or a test) handed us another file, copy its contents into our snapshot directory.
        let handle_meta = snapshot.metadata().await.map_err(|e| err(e.into()))?;
        let ours = match &received {
            Some(p) => match tokio::fs::metadata(p).await {
                Ok(m) => m.ino() == handle_meta.ino() && m.dev() == handle_meta.dev(),
                Err(_) => false,
            },
            None => false,
        };
        let path = if ours {
            received.expect("checked above")
        } else {
            if let Some(p) = received {
                let _ = tokio::fs::remove_file(p).await;
            }
            let p = self.shared.incoming_path();
            snapshot
                .seek(std::io::SeekFrom::Start(0))
                .await
                .map_err(|e| err(e.into()))?;
            let mut out = tokio::fs::File::create(&p)
                .await
                .map_err(|e| err(e.into()))?;
            tokio::io::copy(&mut *snapshot, &mut out)
                .await
                .map_err(|e| err(e.into()))?;
            out.sync_all().await.map_err(|e| err(e.into()))?;
            p
        };
        drop(snapshot);
        let (shared, meta) = (self.shared.clone(), meta.clone());
        blocking(move || install(&shared, &meta, &path))
            .await
            .map_err(err)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let shared = self.shared.clone();
        let found = blocking(move || current_snapshot_blocking(&shared))
            .await
            .map_err(|e| e.snapshot(ErrorVerb::Read))?;
        match found {
            Some((meta, path)) => Ok(Some(
                open_snapshot(meta, path)
                    .await
                    .map_err(|e| e.snapshot(ErrorVerb::Read))?,
            )),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packed(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("in.snap");
        std::fs::write(&p, bytes).unwrap();
        (d, p)
    }

    #[test]
    fn pack_unpack_round_trip_and_hostile_names() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.sst"), b"alpha").unwrap();
        std::fs::write(src.join("CURRENT"), b"MANIFEST-1\n").unwrap();
        let out = d.path().join("x.snap");
        pack(&src, &out).unwrap();
        unpack(&out, &d.path().join("dst")).unwrap();
        assert_eq!(std::fs::read(d.path().join("dst/a.sst")).unwrap(), b"alpha");

        // A file name that would escape the target directory is refused.
        let mut evil = SNAPSHOT_MAGIC.to_vec();
        let name = b"../escape";
        evil.extend_from_slice(&(name.len() as u32).to_be_bytes());
        evil.extend_from_slice(name);
        evil.extend_from_slice(&1u64.to_be_bytes());
        evil.push(b'x');
        evil.extend_from_slice(&0u32.to_be_bytes());
        let (dir, p) = packed(&evil);
        assert!(unpack(&p, &dir.path().join("dst")).is_err());
        assert!(!dir.path().join("escape").exists());
    }

    proptest! {
        /// Arbitrary bytes (a corrupt or hostile snapshot) give an error, never a panic.
        #[test]
        fn unpack_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..256), magic in any::<bool>()) {
            let mut bytes = if magic { SNAPSHOT_MAGIC.to_vec() } else { Vec::new() };
            bytes.extend_from_slice(&tail);
            let (dir, p) = packed(&bytes);
            let _ = unpack(&p, &dir.path().join("dst"));
        }
    }
}
