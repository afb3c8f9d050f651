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
