//! What the spec files share: the outbox bench ([`outbox`]), the
//! replication bench ([`replication`]) with its fake push/pull server
//! ([`fake_server`]), and the store contract ([`store_contract`]), whose
//! cases run natively and in Chromium. Each spec file uses one of them; the
//! rest is compiled and unused there.
#![allow(dead_code, unused_imports, unused_macros)]

#[cfg(not(target_arch = "wasm32"))]
pub mod fake_server;
#[cfg(not(target_arch = "wasm32"))]
pub mod outbox;
#[cfg(not(target_arch = "wasm32"))]
pub mod replication;
pub mod store_contract;
