//! Push decisions, independent of HTTP and SQL: deciding what a mutation
//! does to the stored record under a conflict strategy ([`decide`]),
//! shaping records for the wire, and times. Reading a mutation (either
//! request form) into a [`PushItem`] is in [`parse`]. Pure functions; the
//! repository applies the decisions.

mod parse;

pub use parse::{check_id, parse_mutation, strip_reserved};

use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::HashSet;

use serde_json::{Map, Value};
use tidesync_protocol::{MutationStatus, Op, Strategy, Winner};

/// Longest id, mutation id or client id accepted.
pub const MAX_ID_LEN: usize = 255;

/// One valid change of a push, in either request form.
#[derive(Debug, Clone, PartialEq)]
pub struct PushItem {
    /// `None` for seed 003 records (no exactly-once without an id).
    pub mutation_id: Option<String>,
    pub entity_type: String,
    /// `None`: a new record; the server generates a UUID.
    pub id: Option<String>,
    pub op: Op,
    pub base_version: Option<i64>,
    /// Application fields, reserved ones removed.
    pub data: Map<String, Value>,
    /// `data` as JSON text, serialized before the write transaction.
    pub data_text: String,
    /// Client's time of the change, ms since the epoch (last-write-wins).
    pub client_ts_ms: Option<i64>,
    /// Fields the client changed since its base version; `merge` takes only
    /// these from the client. `None`: every field sent.
    pub changed_fields: Option<HashSet<String>>,
    /// The upsert updates the fields it sends and keeps the stored record's
    /// others (seed 003's form); otherwise it replaces the record's fields.
    pub patch: bool,
}

/// A mutation that could not be read; it is answered `rejected`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub mutation_id: Option<String>,
    pub entity_type: Option<String>,
    pub id: Option<String>,
    pub message: String,
}

/// The stored state of a record, as far as a decision needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Existing {
    pub data: Map<String, Value>,
    pub version: i64,
    pub updated_at: i64,
    /// When the stored change was made on its client (last-write-wins).
    pub changed_at: i64,
    pub is_deleted: bool,
}

/// The state a decision stores.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub data: Map<String, Value>,
    pub is_deleted: bool,
    /// When the edit that produced this version was made (ms): the client's
    /// time, capped at the server's clock so that a clock running ahead
    /// cannot win every later last-write-wins conflict. A merge of two
    /// edits is as recent as the later of them.
    pub changed_at: i64,
    /// `data` is the mutation's own (so its text is `PushItem::data_text`,
    /// serialized before the transaction).
    pub data_is_client: bool,
}

/// What to do with one mutation.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// New state to store (`data`, `is_deleted`, edit time in ms), or
    /// `None`: store nothing.
    pub write: Option<Write>,
    pub status: MutationStatus,
    pub resolution: Option<Strategy>,
    pub winner: Option<Winner>,
}

/// Decides what `item` does to `existing` under `strategy`.
///
/// A conflict is a `baseVersion` lower than the stored version. Without
/// one (or with no `baseVersion`, a blind write) the change is applied.
pub fn decide(
    strategy: Strategy,
    existing: Option<&Existing>,
    item: &PushItem,
    now_ms: i64,
) -> Decision {
    // A client clock ahead of ours must not win every later conflict.
    let edit_time = item.client_ts_ms.unwrap_or(now_ms).min(now_ms);
    // A patch (seed 003's form) updates the fields it sends and keeps the
    // others, as seed 003's row-by-row save did.
    let patched = item.patch && existing.is_some();
    let client_state = || Write {
        data: match (item.op, existing) {
            (Op::Upsert, Some(e)) if item.patch => {
                let mut data = e.data.clone();
                data.extend(item.data.iter().map(|(k, v)| (k.clone(), v.clone())));
                data
            }
            (Op::Upsert, _) => item.data.clone(),
            (Op::Delete, _) => tombstone_data(existing.map(|e| e.data.clone()).unwrap_or_default()),
        },
        is_deleted: item.op == Op::Delete,
        changed_at: edit_time,
        data_is_client: item.op == Op::Upsert && !patched,
    };
    let applied = |state| Decision {
        write: Some(state),
        status: MutationStatus::Applied,
        resolution: None,
        winner: None,
    };
    let Some(e) = existing else {
        return applied(client_state());
    };
    let stale = matches!(item.base_version, Some(b) if b < e.version);
    if !stale {
        return applied(client_state());
    }
    let conflict = |write, winner| Decision {
        write,
        status: MutationStatus::Conflict,
        resolution: Some(strategy),
        winner: Some(winner),
    };
    match strategy {
        Strategy::ServerWins => conflict(None, Winner::Server),
        Strategy::ClientWins => conflict(Some(client_state()), Winner::Client),
        // Edit time against edit time: `e.changed_at` is when the stored
        // version was edited on its device, not when it reached us.
        Strategy::LastWriteWins => {
            if edit_time > e.changed_at {
                conflict(Some(client_state()), Winner::Client)
            } else {
                conflict(None, Winner::Server)
            }
        }
        Strategy::Merge => {
            let changed_at = edit_time.max(e.changed_at);
            let write = match item.op {
                Op::Upsert => Write {
                    data: merge_fields(&e.data, item),
                    is_deleted: false,
                    changed_at,
                    data_is_client: false,
                },
                Op::Delete => Write {
                    data: tombstone_data(e.data.clone()),
                    is_deleted: true,
                    changed_at,
                    data_is_client: false,
                },
            };
            conflict(Some(write), Winner::Merged)
        }
    }
}

/// A tombstone keeps the record's last fields, except that a seed 003 style
/// soft-delete flag (`is_deleted`, 0 or 1), when the record has one, says
/// deleted too: a seed client reading it must not see a live record.
fn tombstone_data(mut data: Map<String, Value>) -> Map<String, Value> {
    if let Some(flag) = data.get_mut("is_deleted") {
        *flag = Value::from(1);
    }
    data
}

/// The server's fields overridden by the ones the client changed
/// (`changedFields`, else every field it sent); a changed field absent from
/// the client's data is removed.
fn merge_fields(server: &Map<String, Value>, item: &PushItem) -> Map<String, Value> {
    let mut merged = server.clone();
    let changed = |k: &String| item.changed_fields.as_ref().is_none_or(|f| f.contains(k));
    merged.extend(
        item.data
            .iter()
            .filter(|(k, _)| changed(k))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    for removed in item
        .changed_fields
        .iter()
        .flatten()
        .filter(|k| !item.data.contains_key(*k))
    {
        merged.remove(removed);
    }
    merged
}

/// A record as clients see it: data fields flattened next to `id`,
/// `version`, `updatedAt` (when the server stored it), `changedAt` (when the
/// edit that produced this version was made) and `isDeleted`.
pub fn record_json(
    id: &str,
    data: &Map<String, Value>,
    version: i64,
    updated_at_ms: i64,
    changed_at_ms: i64,
    is_deleted: bool,
) -> Value {
    record_json_owned(
        id,
        data.clone(),
        version,
        updated_at_ms,
        changed_at_ms,
        is_deleted,
    )
}

/// [`record_json`] taking the data by value.
pub fn record_json_owned(
    id: &str,
    mut out: Map<String, Value>,
    version: i64,
    updated_at_ms: i64,
    changed_at_ms: i64,
    is_deleted: bool,
) -> Value {
    out.insert("id".into(), Value::from(id));
    out.insert("version".into(), Value::from(version));
    out.insert("updatedAt".into(), Value::from(iso_ms(updated_at_ms)));
    out.insert("changedAt".into(), Value::from(iso_ms(changed_at_ms)));
    out.insert("isDeleted".into(), Value::from(is_deleted));
    Value::Object(out)
}

/// ISO-8601 UTC with milliseconds and `Z`.
pub fn iso_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 time into ms since the epoch.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(op: Op, base: Option<i64>, data: Value, ts: Option<i64>) -> PushItem {
        PushItem {
            mutation_id: Some("m".into()),
            entity_type: "t".into(),
            id: Some("a".into()),
            op,
            base_version: base,
            data: data.as_object().cloned().unwrap_or_default(),
            data_text: data.to_string(),
            client_ts_ms: ts,
            changed_fields: None,
            patch: false,
        }
    }

    fn existing() -> Existing {
        Existing {
            data: json!({"name": "server", "age": 40})
                .as_object()
                .cloned()
                .unwrap(),
            version: 3,
            updated_at: 1_000,
            changed_at: 1_000,
            is_deleted: false,
        }
    }

    #[test]
    fn current_base_version_applies() {
        let d = decide(
            Strategy::ServerWins,
            Some(&existing()),
            &item(Op::Upsert, Some(3), json!({"name": "c"}), None),
            5,
        );
        assert_eq!(d.status, MutationStatus::Applied);
        assert_eq!(d.write.unwrap().data["name"], "c");
    }

    #[test]
    fn stale_server_wins_writes_nothing() {
        let d = decide(
            Strategy::ServerWins,
            Some(&existing()),
            &item(Op::Upsert, Some(1), json!({"name": "c"}), None),
            5,
        );
        assert_eq!(d.status, MutationStatus::Conflict);
        assert_eq!(d.write, None);
    }

    #[test]
    fn stale_merge_keeps_unsent_fields() {
        let d = decide(
            Strategy::Merge,
            Some(&existing()),
            &item(Op::Upsert, Some(1), json!({"name": "c"}), None),
            5,
        );
        let w = d.write.unwrap();
        assert_eq!(w.data["name"], "c");
        assert_eq!(w.data["age"], 40);
        assert!(!w.is_deleted);
    }

    #[test]
    fn stale_merge_with_changed_fields_takes_only_those() {
        let mut it = item(
            Op::Upsert,
            Some(1),
            json!({"name": "c", "age": 1, "extra": true}),
            None,
        );
        it.changed_fields = Some(["name".to_owned(), "gone".to_owned()].into());
        let mut e = existing();
        e.data.insert("gone".into(), json!("x"));
        let data = decide(Strategy::Merge, Some(&e), &it, 5)
            .write
            .unwrap()
            .data;
        assert_eq!(data["name"], "c");
        assert_eq!(data["age"], 40, "unchanged field keeps the server's value");
        assert!(!data.contains_key("extra"), "not listed as changed");
        assert!(!data.contains_key("gone"), "listed but absent: removed");
    }

    #[test]
    fn stale_last_write_wins_compares_times() {
        let e = existing();
        let older = item(Op::Upsert, Some(1), json!({"name": "c"}), Some(500));
        let newer = item(Op::Upsert, Some(1), json!({"name": "c"}), Some(2_000));
        assert_eq!(
            decide(Strategy::LastWriteWins, Some(&e), &older, 10_000).winner,
            Some(Winner::Server)
        );
        let d = decide(Strategy::LastWriteWins, Some(&e), &newer, 10_000);
        assert_eq!(d.winner, Some(Winner::Client));
        assert!(d.write.is_some());
    }

    #[test]
    fn last_write_wins_compares_edit_times_not_arrival_times() {
        // Stored at 9,000 (server time) but edited at 1,000 on its device;
        // an edit made at 2,000 that arrives later still wins.
        let e = Existing {
            updated_at: 9_000,
            changed_at: 1_000,
            ..existing()
        };
        let later_edit = item(Op::Upsert, Some(1), json!({"name": "c"}), Some(2_000));
        assert_eq!(
            decide(Strategy::LastWriteWins, Some(&e), &later_edit, 10_000).winner,
            Some(Winner::Client)
        );
    }

    #[test]
    fn a_patch_keeps_the_fields_it_does_not_send_and_a_tombstone_says_deleted() {
        let mut e = existing();
        e.data.insert("is_deleted".into(), json!(0));
        let mut patch = item(Op::Upsert, Some(3), json!({"name": "p"}), None);
        patch.patch = true;
        let w = decide(Strategy::LastWriteWins, Some(&e), &patch, 5)
            .write
            .unwrap();
        assert_eq!(
            (w.data["name"].clone(), w.data["age"].clone()),
            (json!("p"), json!(40))
        );
        assert!(!w.data_is_client, "the stored text is the merged one");
        let whole = item(Op::Upsert, Some(3), json!({"name": "p"}), None);
        let w = decide(Strategy::LastWriteWins, Some(&e), &whole, 5)
            .write
            .unwrap();
        assert!(!w.data.contains_key("age"), "the mutation form replaces");
        let del = item(Op::Delete, Some(3), json!({}), None);
        let w = decide(Strategy::LastWriteWins, Some(&e), &del, 5)
            .write
            .unwrap();
        assert_eq!(w.data["is_deleted"], 1);
        assert!(w.is_deleted);
    }

    #[test]
    fn written_state_carries_the_edit_time() {
        let e = existing();
        let edit = item(Op::Upsert, Some(3), json!({"name": "c"}), Some(2_000));
        let w = decide(Strategy::LastWriteWins, Some(&e), &edit, 10_000).write;
        assert_eq!(w.map(|w| w.changed_at), Some(2_000));
        let blind = item(Op::Upsert, None, json!({}), None);
        let w = decide(Strategy::LastWriteWins, Some(&e), &blind, 10_000).write;
        assert_eq!(w.map(|w| w.changed_at), Some(10_000), "no client time: now");
        // A merge is as recent as the later of its two edits.
        let older = item(Op::Upsert, Some(1), json!({"x": 1}), Some(500));
        let w = decide(Strategy::Merge, Some(&e), &older, 10_000).write;
        assert_eq!(w.map(|w| w.changed_at), Some(1_000));
    }

    #[test]
    fn a_client_clock_ahead_of_the_server_does_not_win_by_it() {
        let e = Existing {
            changed_at: 10_000,
            ..existing()
        };
        let future = item(Op::Upsert, Some(1), json!({"name": "c"}), Some(99_999_999));
        assert_eq!(
            decide(Strategy::LastWriteWins, Some(&e), &future, 10_000).winner,
            Some(Winner::Server),
            "capped at the server's now, a tie goes to the server"
        );
    }

    #[test]
    fn iso_has_milliseconds_and_z() {
        assert_eq!(iso_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            parse_time_ms("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
    }
}
