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
    ($case:ident) => {
        #[test]
        fn $case() {
            futures::executor::block_on(contract::$case(&Memory(MemoryRecords::new())));
        }
    };
}

contract::cases!(on_memory);
