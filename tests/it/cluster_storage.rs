//! The cluster's Raft storage (the log on idrecon's write-ahead log, the state machine on the
//! identity graph and its snapshot files) against openraft's own storage test suite: every
//! rule openraft relies on — appends readable at once, truncation, purge, votes, membership,
//! snapshots built, installed and read back.

use idrecon::cluster::log_store::LogStore;
use idrecon::cluster::state_machine::StateMachine;
use idrecon::cluster::types::{StorageError, TypeConfig};
use idrecon::graph::GraphOptions;
use idrecon::snapshot::SnapshotDir;
use idrecon::wal::WalOptions;
use openraft::testing::{StoreBuilder, Suite};

/// A new member's storage in a temporary directory (kept alive with it).
struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log =
            LogStore::open(&dir.path().join("raft"), WalOptions::default()).expect("log opens");
        let machine = StateMachine::open(
            SnapshotDir::on_disk(dir.path().join("snapshots")),
            &GraphOptions::default(),
        )
        .expect("state machine opens");
        Ok((dir, log, machine))
    }
}

#[test]
fn raft_storage_passes_openraft_suite() {
    Suite::test_all(Builder).expect("every storage rule holds");
}
