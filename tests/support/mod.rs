//! What the engine spec files share: the outbox bench ([`outbox`]), the
//! replication bench ([`replication`]) with its fake push/pull server
//! ([`fake_server`]). Each spec file uses one bench; the rest is compiled
//! and unused there.
#![allow(dead_code)]

pub mod fake_server;
pub mod outbox;
pub mod replication;
