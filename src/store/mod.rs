//! Storage adapters behind [`crate::engine::Store`]: IndexedDB in the
//! browser ([`idb`], through the `idb` crate) and an in-memory store ([`memory`]) for
//! native tests and for hosts without IndexedDB.

pub mod memory;
pub mod salvage;

#[cfg(target_arch = "wasm32")]
pub mod idb;

pub use memory::{MemoryRecords, MemoryStore};
