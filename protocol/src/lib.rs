//! Wire types of the Tidesync push/pull protocol (see docs/protocol.md).
//!
//! This crate owns the JSON shapes exchanged between the SDK and the server,
//! and nothing else: no I/O, no policy. Both sides depend on it so that a
//! field renamed on one side fails to compile on the other. It must build for
//! `wasm32-unknown-unknown` too, so it depends on serde and serde_json only.
//!
//! Records travel as flat JSON objects: the application's fields next to the
//! five reserved ones, `id`, `version`, `updatedAt`, `changedAt` and
//! `isDeleted` (see [`Record`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Version of the wire protocol these types describe.
pub const PROTOCOL_VERSION: u32 = 1;

/// Route of the push call.
pub const PUSH_PATH: &str = "/api/client/sync/push";
/// Route of the pull call.
pub const PULL_PATH: &str = "/api/client/sync/pull";
/// Route of seed 003's pull-pending call.
pub const PULL_PENDING_PATH: &str = "/api/client/sync/pull-pending";
/// Route of the verify call (counts and checksums per entity type).
pub const VERIFY_PATH: &str = "/api/client/sync/verify";
/// Route of the fetch call (specific records by id, for repairs).
pub const FETCH_PATH: &str = "/api/client/sync/fetch";
/// Route of the live event stream (Server-Sent Events: `ready`, `poke`,
/// `heartbeat`, `goodbye`).
pub const EVENTS_PATH: &str = "/api/client/sync/events";
/// Route that exchanges a bearer token for a short-lived stream ticket.
pub const EVENTS_TICKET_PATH: &str = "/api/client/sync/events/ticket";

/// Keys of a record that the server owns; any field of that name sent in
/// `data` is ignored.
pub const RESERVED_FIELDS: [&str; 5] = ["id", "version", "updatedAt", "changedAt", "isDeleted"];

/// Value of the `sync_status` data field that `pull-pending` selects.
pub const SYNC_STATUS_PENDING: &str = "pending";
/// Value a seed 003 push stores in a record's `sync_status` field (when the
/// record has one): the record has reached the server.
pub const SYNC_STATUS_SYNCED: &str = "synced";

/// A record as the server returns it: application fields flattened next to
/// the reserved ones.
///
/// ```
/// let r: tidesync_protocol::Record = serde_json::from_str(
///     r#"{"id":"a","name":"Ada","version":2,"updatedAt":"2026-01-01T00:00:01.000Z",
///         "changedAt":"2026-01-01T00:00:00.000Z","isDeleted":false}"#,
/// ).unwrap();
/// assert_eq!(r.version, 2);
/// assert_eq!(r.changed_at.as_deref(), Some("2026-01-01T00:00:00.000Z"));
/// assert_eq!(r.data["name"], "Ada");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub id: String,
    pub version: i64,
    /// When the server stored this version: ISO-8601 UTC with
    /// milliseconds, e.g. `2026-11-24T10:00:01.234Z`.
    pub updated_at: String,
    /// When the edit that produced this version was made on its device
    /// (capped at the server's clock); last-write-wins compares this, never
    /// `updated_at`. Every record a server of this protocol version returns
    /// carries it; `None` only for records from older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<String>,
    pub is_deleted: bool,
    /// The application's fields.
    #[serde(flatten)]
    pub data: Map<String, Value>,
}

/// What a mutation does to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Upsert,
    Delete,
}

/// One change a client sends (Tidesync form of push).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mutation {
    /// Unique per client; a mutation id seen before is answered `duplicate`.
    pub mutation_id: String,
    pub entity_type: String,
    pub op: Op,
    /// Record id; `null` on an upsert asks the server for a new UUID.
    #[serde(default)]
    pub id: Option<String>,
    /// Version the client's change is based on (0 or absent for a new
    /// record). Absent means "blind write": no conflict check.
    #[serde(default)]
    pub base_version: Option<i64>,
    /// The record's fields (an object) for an upsert; ignored for a delete.
    #[serde(default)]
    pub data: Option<Value>,
    /// When the client made the change (ISO-8601); used by last-write-wins.
    #[serde(default)]
    pub client_timestamp: Option<String>,
    /// The fields changed since `baseVersion` (an extension of seed 003's
    /// form): under `merge`, a conflict keeps the server's other fields.
    /// Absent: every field of `data` counts as changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_fields: Option<Vec<String>>,
}

/// Push request, Tidesync form. Seed 003's `{"changes": {...}}` is accepted
/// by the server too (see [`SeedPushRequest`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushRequest {
    pub client_id: String,
    pub mutations: Vec<Mutation>,
}

/// Push request, seed 003 form: records by entity type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedPushRequest {
    pub changes: BTreeMap<String, Vec<Value>>,
}

/// Outcome of one mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MutationStatus {
    /// Applied as sent; `record` is the stored record.
    Applied,
    /// Seen before (same client and mutation id); not applied again.
    Duplicate,
    /// `baseVersion` was stale; `resolution` says how it was resolved and
    /// `record` is the record as stored afterwards.
    Conflict,
    /// Invalid on its own; nothing applied; `error` says why.
    Rejected,
}

/// Conflict resolution strategy of an entity type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    ServerWins,
    ClientWins,
    LastWriteWins,
    Merge,
}

impl Strategy {
    /// Reads a wire name (`server-wins`, `client-wins`, `last-write-wins`,
    /// `merge`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "server-wins" => Some(Strategy::ServerWins),
            "client-wins" => Some(Strategy::ClientWins),
            "last-write-wins" => Some(Strategy::LastWriteWins),
            "merge" => Some(Strategy::Merge),
            _ => None,
        }
    }

    /// The wire name, e.g. `last-write-wins`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::ServerWins => "server-wins",
            Strategy::ClientWins => "client-wins",
            Strategy::LastWriteWins => "last-write-wins",
            Strategy::Merge => "merge",
        }
    }
}

/// Which side's change a conflict kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Winner {
    Client,
    Server,
    Merged,
}

/// Result of one mutation in a push response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MutationResult {
    /// `null` for seed 003 records, which carry no mutation id.
    pub mutation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub status: MutationStatus,
    /// Tidesync form: the record as stored after this mutation (absent when
    /// rejected). Seed 003 form: always absent; the records are in
    /// [`PushResponse::data`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Strategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<Winner>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Push response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushResponse {
    pub success: bool,
    /// Seed 003's form (`changes`): the record of every change that was not
    /// rejected, in request order. Tidesync form (`mutations`): empty, the
    /// records are in `results[].record` (each record travels once).
    #[serde(default)]
    pub data: Vec<Value>,
    pub results: Vec<MutationResult>,
    /// Sequence position of this push's last change (informational; a
    /// client keeps using the cursor that pull returned).
    pub cursor: Option<String>,
    pub sync_timestamp: String,
}

/// Pull request: the Tidesync form uses `cursor`; seed 003's uses
/// `lastSyncTimestamp`. With both absent, everything is returned.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullRequest {
    #[serde(default)]
    pub cursor: Option<String>,
    pub entity_types: Vec<String>,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_timestamp: Option<String>,
}

/// Pull (and pull-pending, fetch) response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullResponse {
    pub success: bool,
    pub data: BTreeMap<String, Vec<Value>>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub has_more: bool,
    pub sync_timestamp: String,
}

/// Pull-pending request (seed 003).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullPendingRequest {
    pub entity_types: Vec<String>,
}

/// Verify request: which entity types to summarise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyRequest {
    pub entity_types: Vec<String>,
}

/// Count and checksum of the live records of one entity type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeSummary {
    pub count: u64,
    /// [`record_checksum`] over `(id, version)` of the live records.
    pub checksum: String,
}

/// Verify response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    pub success: bool,
    pub data: BTreeMap<String, TypeSummary>,
    pub sync_timestamp: String,
}

/// Fetch request: specific records (tombstones included) of one type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchRequest {
    pub entity_type: String,
    pub ids: Vec<String>,
}

/// Error body of every non-2xx JSON answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code: `validation`, `unauthorized`, `forbidden`, `not-found`,
    /// `payload-too-large`, `rate-limited`, `internal`, `unavailable`.
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// `{"success": false, "error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub success: bool,
    pub error: ErrorBody,
}

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// Order-independent checksum of a set of `(id, version)` pairs: the
/// wrapping sum of FNV-1a-64 of `"{id}:{version}"`, as 16 lowercase hex
/// digits. The server's verify route and the SDK compute the same thing.
///
/// ```
/// use tidesync_protocol::record_checksum;
/// let a = record_checksum([("a", 1), ("b", 2)]);
/// assert_eq!(a, record_checksum([("b", 2), ("a", 1)]));
/// assert_eq!(record_checksum(std::iter::empty::<(&str, i64)>()), "0000000000000000");
/// ```
pub fn record_checksum<'a>(items: impl IntoIterator<Item = (&'a str, i64)>) -> String {
    let sum = items.into_iter().fold(0u64, |acc, (id, version)| {
        acc.wrapping_add(fnv1a64(format!("{id}:{version}").as_bytes()))
    });
    format!("{sum:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn checksum_is_order_independent_and_version_sensitive() {
        let a = record_checksum([("x", 1), ("y", 1)]);
        assert_eq!(a, record_checksum([("y", 1), ("x", 1)]));
        assert_ne!(a, record_checksum([("x", 2), ("y", 1)]));
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn mutation_reads_camel_case_and_defaults() {
        let m: Mutation = serde_json::from_str(
            r#"{"mutationId":"m1","entityType":"end_user","op":"delete","id":"a"}"#,
        )
        .unwrap();
        assert_eq!(m.op, Op::Delete);
        assert_eq!(m.base_version, None);
    }

    #[test]
    fn record_flattens_data() {
        let mut data = Map::new();
        data.insert("name".into(), Value::from("Ada"));
        let r = Record {
            id: "a".into(),
            version: 1,
            updated_at: "2026-01-01T00:00:00.000Z".into(),
            changed_at: Some("2025-12-31T23:59:59.000Z".into()),
            is_deleted: false,
            data,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["name"], "Ada");
        assert_eq!(v["isDeleted"], false);
        assert_eq!(v["changedAt"], "2025-12-31T23:59:59.000Z");
    }

    #[test]
    fn strategy_names_are_kebab_case() {
        let s: Strategy = serde_json::from_str("\"last-write-wins\"").unwrap();
        assert_eq!(s, Strategy::LastWriteWins);
        assert_eq!(s.as_str(), "last-write-wins");
    }
}
