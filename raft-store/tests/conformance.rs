//! openraft's storage conformance suite against Halyard's RocksDB log store and state machine.

use halyard_raft_store::openraft::StorageError;
use halyard_raft_store::openraft::testing::{StoreBuilder, Suite};
use halyard_raft_store::{LogDb, LogStore, StateMachineStore, TypeConfig};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = LogDb::open(&dir.path().join("raft-log")).expect("open log db");
        let log = db.store("rg1");
        let sm = StateMachineStore::open("rg1", &dir.path().join("groups").join("rg1"))
            .expect("open sm");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(RocksBuilder).expect("conformance suite");
}

/// openraft is told an append is durable only after a WAL sync that covered it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_completes_only_after_a_wal_sync() {
    use halyard_raft_store::openraft::storage::RaftLogStorageExt;
    use halyard_raft_store::openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use std::sync::atomic::Ordering;

    let dir = tempfile::tempdir().unwrap();
    let db = LogDb::open(&dir.path().join("raft-log")).unwrap();
    let mut log = db.store("rg1");
    let stats = log.stats();
    assert_eq!(stats.syncs.load(Ordering::SeqCst), 0);
    let entries: Vec<Entry<TypeConfig>> = (1..=5)
        .map(|i| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
            payload: EntryPayload::Blank,
        })
        .collect();
    log.blocking_append(entries).await.unwrap();
    assert!(
        stats.syncs.load(Ordering::SeqCst) >= 1,
        "completion reported without a sync"
    );
    assert_eq!(stats.entries_synced.load(Ordering::SeqCst), 5);
}
