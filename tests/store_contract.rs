#![cfg(not(target_arch = "wasm32"))]
//! The store contract (`tests/support/store_contract/`) against the
//! in-memory store: `MemoryRecords` and the `MemoryStore` of its tasks, the
//! store native tests and hosts without IndexedDB run on. The same cases run
//! against IndexedDB in `tests/browser_store.rs`.

mod support;

use support::store_contract::{self as contract, StoreUnderTest};
use tidesync::store::{MemoryRecords, MemoryStore};

struct Memory(MemoryRecords);

impl StoreUnderTest for Memory {
    type Tasks = MemoryStore;
    type Records = MemoryRecords;

    fn tasks(&self) -> &MemoryStore {
        &self.0.tasks
    }

    fn records(&self) -> &MemoryRecords {
        &self.0
    }
}

macro_rules! on_memory {
    // A contract case the in-memory store fails (IndexedDB passes it):
    // MemoryStore::requeue_failed puts the dead letter's old payload over a
    // task the app registered again under the same id. Kept visible here
    // (`cargo test --test store_contract -- --ignored` shows it failing)
    // until src/store/memory.rs is fixed; then this arm goes.
    (requeueing_a_dead_letter_whose_id_was_registered_again_keeps_the_newer_payload) => {
        #[test]
        #[ignore = "known bug: MemoryStore::requeue_failed overwrites a re-registered task"]
        fn requeueing_a_dead_letter_whose_id_was_registered_again_keeps_the_newer_payload() {
            futures::executor::block_on(
                contract::requeueing_a_dead_letter_whose_id_was_registered_again_keeps_the_newer_payload(
                    &Memory(MemoryRecords::new()),
                ),
            );
        }
    };
    ($case:ident) => {
        #[test]
        fn $case() {
            futures::executor::block_on(contract::$case(&Memory(MemoryRecords::new())));
        }
    };
}

contract::cases!(on_memory);
