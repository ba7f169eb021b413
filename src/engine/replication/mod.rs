//! Replication: local records kept in step with the push/pull server.
//!
//! Writes land in the local `records` store at once and queue a mutation
//! task in the same transaction; the outbox sends due mutations in batches
//! (one `/push` per up to `batchSize`), and [`Replicator`] applies each
//! per-mutation result. Pulls walk the server's exact cursor page by page,
//! each page applied together with the new cursor in one transaction.
//! Conflicts are settled by [`conflict::resolve`] or the app's callback.

pub mod conflict;
pub mod record;
pub mod replicator;

pub use conflict::{resolve, ConflictOutcome, Strategy};
pub use record::{LocalRecord, RecordStatus};
pub use replicator::{
    PullReport, ReplicationError, ReplicationOptions, Replicator, ReplicatorPorts, VerifyReport,
};
