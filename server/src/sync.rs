//! Push decisions, independent of HTTP and SQL: parsing one mutation (either
//! request form) into a [`PushItem`], deciding what a mutation does to the
//! stored record under a conflict strategy ([`decide`]), and shaping records
//! for the wire. Pure functions; the repository applies the decisions.

use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::HashSet;

use serde_json::{Map, Value};
use tidesync_protocol::{
    Mutation, MutationStatus, Op, Strategy, Winner, RESERVED_FIELDS, SYNC_STATUS_SYNCED,
};

use crate::error::clip;

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
    let client_state = || Write {
        data: match item.op {
            Op::Upsert => item.data.clone(),
            Op::Delete => existing.map(|e| e.data.clone()).unwrap_or_default(),
        },
        is_deleted: item.op == Op::Delete,
        changed_at: edit_time,
        data_is_client: item.op == Op::Upsert,
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
                    data: e.data.clone(),
                    is_deleted: true,
                    changed_at,
                    data_is_client: false,
                },
            };
            conflict(Some(write), Winner::Merged)
        }
    }
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

pub fn check_id(field: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        Err(format!("{field}: must not be empty"))
    } else if id.len() > MAX_ID_LEN {
        Err(format!("{field}: longer than {MAX_ID_LEN} bytes"))
    } else if id.chars().any(char::is_control) {
        Err(format!("{field}: must not contain control characters"))
    } else {
        Ok(())
    }
}

fn strip_reserved(mut data: Map<String, Value>) -> Map<String, Value> {
    for k in RESERVED_FIELDS {
        data.remove(k);
    }
    data
}

/// Reads `mutations[index]` of a Tidesync push; a record of more than
/// `max_fields` fields (or `changedFields`) is rejected.
pub fn parse_mutation(
    index: usize,
    value: Value,
    max_fields: usize,
) -> Result<PushItem, Rejection> {
    let prefix = format!("mutations[{index}]");
    let str_field = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
    let mut rejection = Rejection {
        mutation_id: str_field("mutationId"),
        entity_type: str_field("entityType"),
        id: str_field("id"),
        message: String::new(),
    };
    let reject = |mut r: Rejection, message: String| {
        r.message = message;
        Err(r)
    };
    if !value.is_object() {
        return reject(rejection, format!("{prefix}: expected an object"));
    }
    let m: Mutation = match serde_path_to_error::deserialize(value) {
        Ok(m) => m,
        Err(e) => {
            let path = e.path().to_string();
            return reject(rejection, format!("{prefix}.{path}: {}", e.into_inner()));
        }
    };
    rejection.mutation_id = Some(m.mutation_id.clone());
    if let Err(msg) = check_id(&format!("{prefix}.mutationId"), &m.mutation_id) {
        return reject(rejection, msg);
    }
    if let Some(id) = &m.id {
        if let Err(msg) = check_id(&format!("{prefix}.id"), id) {
            return reject(rejection, msg);
        }
    }
    if let Some(b) = m.base_version {
        if b < 0 {
            return reject(rejection, format!("{prefix}.baseVersion: must be >= 0"));
        }
    }
    let client_ts_ms = match &m.client_timestamp {
        None => None,
        Some(s) => match parse_time_ms(s) {
            Some(t) => Some(t),
            None => {
                return reject(
                    rejection,
                    format!(
                        "{prefix}.clientTimestamp: not an ISO-8601 time: {:?}",
                        clip(s)
                    ),
                )
            }
        },
    };
    let data = match (m.op, m.data) {
        (Op::Upsert, Some(Value::Object(d))) => strip_reserved(d),
        (Op::Upsert, _) => {
            return reject(rejection, format!("{prefix}.data: must be an object"));
        }
        (Op::Delete, _) => Map::new(),
    };
    if m.op == Op::Delete && m.id.is_none() {
        return reject(rejection, format!("{prefix}.id: a delete needs an id"));
    }
    if data.len() > max_fields {
        return reject(
            rejection,
            format!("{prefix}.data: {} fields; at most {max_fields}", data.len()),
        );
    }
    let changed_fields = match m.changed_fields {
        Some(f) if f.len() > max_fields => {
            return reject(
                rejection,
                format!(
                    "{prefix}.changedFields: {} entries; at most {max_fields}",
                    f.len()
                ),
            );
        }
        f => f.map(|f| f.into_iter().collect()),
    };
    Ok(PushItem {
        mutation_id: Some(m.mutation_id),
        entity_type: m.entity_type,
        id: m.id,
        op: m.op,
        base_version: m.base_version,
        data_text: Value::Object(data.clone()).to_string(),
        data,
        client_ts_ms,
        changed_fields,
    })
}

/// Seed 003's `updateSyncStatus`: a record that reaches the server through
/// a seed push is stored (and answered) as delivered, `sync_status:
/// "synced"` and `server_synced: 1`, for the fields the record has. A seed
/// client sends `"pending"` for "not on the server yet"; the answer tells it
/// that is over. (Tidesync's `mutations` form stores data verbatim.)
fn mark_synced(obj: &mut Map<String, Value>) {
    if let Some(status) = obj.get_mut("sync_status") {
        *status = Value::from(SYNC_STATUS_SYNCED);
    }
    if let Some(flag) = obj.get_mut("server_synced") {
        *flag = Value::from(1);
    }
}

/// Reads `changes[entity_type][index]` of a seed 003 push: `id` null or
/// absent is a new record, `version` is the base version, `isDeleted: true`
/// or `is_deleted: 1` is a delete, `updatedAt` (if any) the client's time.
pub fn parse_seed_record(
    entity_type: &str,
    index: usize,
    value: Value,
    max_fields: usize,
) -> Result<PushItem, Rejection> {
    let prefix = format!("changes.{entity_type}[{index}]");
    let mut rejection = Rejection {
        mutation_id: None,
        entity_type: Some(entity_type.to_owned()),
        id: value.get("id").and_then(Value::as_str).map(str::to_owned),
        message: String::new(),
    };
    let Value::Object(mut obj) = value else {
        rejection.message = format!("{prefix}: expected an object");
        return Err(rejection);
    };
    let mut fail = |message: String| {
        rejection.message = message;
        Err(rejection.clone())
    };
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            if let Err(m) = check_id(&format!("{prefix}.id"), s) {
                return fail(m);
            }
            Some(s.clone())
        }
        Some(_) => return fail(format!("{prefix}.id: expected a string or null")),
    };
    let base_version = match obj.get("version") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) if n >= 0 => Some(n),
            _ => return fail(format!("{prefix}.version: expected an integer >= 0")),
        },
    };
    let deleted_camel = match obj.get("isDeleted") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return fail(format!("{prefix}.isDeleted: expected a boolean")),
    };
    let deleted_snake = match obj.get("is_deleted") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => match v.as_i64() {
            Some(0) => false,
            Some(1) => true,
            _ => return fail(format!("{prefix}.is_deleted: expected 0, 1 or a boolean")),
        },
    };
    let client_ts_ms = match obj.get("updatedAt") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match parse_time_ms(s) {
            Some(t) => Some(t),
            None => {
                return fail(format!(
                    "{prefix}.updatedAt: not an ISO-8601 time: {:?}",
                    clip(s)
                ))
            }
        },
        Some(_) => return fail(format!("{prefix}.updatedAt: expected a string")),
    };
    for k in RESERVED_FIELDS {
        obj.remove(k);
    }
    mark_synced(&mut obj);
    if obj.len() > max_fields {
        return fail(format!(
            "{prefix}: {} fields; at most {max_fields}",
            obj.len()
        ));
    }
    Ok(PushItem {
        mutation_id: None,
        entity_type: entity_type.to_owned(),
        data_text: Value::Object(obj.clone()).to_string(),
        id,
        op: if deleted_camel || deleted_snake {
            Op::Delete
        } else {
            Op::Upsert
        },
        base_version,
        data: obj,
        client_ts_ms,
        changed_fields: None,
    })
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
    fn upsert_needs_object_data() {
        let r = parse_mutation(
            2,
            json!({"mutationId":"m","entityType":"t","op":"upsert","id":"a","data":[1]}),
            100,
        )
        .unwrap_err();
        assert_eq!(r.mutation_id.as_deref(), Some("m"));
        assert!(r.message.contains("mutations[2].data"), "{}", r.message);
    }

    #[test]
    fn wrong_type_names_the_field() {
        let r = parse_mutation(
            0,
            json!({"mutationId":"m","entityType":"t","op":"upsert","id":"a","baseVersion":"x","data":{}}),
            100,
        )
        .unwrap_err();
        assert!(r.message.contains("baseVersion"), "{}", r.message);
    }

    #[test]
    fn seed_record_reads_delete_flags_and_null_id() {
        let it = parse_seed_record(
            "end_user",
            0,
            json!({"id": null, "name": "x", "version": 1}),
            100,
        )
        .unwrap();
        assert_eq!(it.id, None);
        assert_eq!(it.base_version, Some(1));
        assert!(!it.data.contains_key("version"));
        let del =
            parse_seed_record("end_user", 0, json!({"id": "a", "is_deleted": 1}), 100).unwrap();
        assert_eq!(del.op, Op::Delete);
    }

    #[test]
    fn records_with_too_many_fields_are_rejected() {
        let fields: Map<String, Value> = (0..11).map(|i| (format!("f{i}"), json!(i))).collect();
        let m = json!({"mutationId":"m","entityType":"t","op":"upsert","id":"a","data":fields});
        let r = parse_mutation(0, m, 10).unwrap_err();
        assert!(
            r.message
                .contains("mutations[0].data: 11 fields; at most 10"),
            "{}",
            r.message
        );
        let listed: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
        let m = json!({"mutationId":"m","entityType":"t","op":"upsert","id":"a","data":{},
                       "changedFields": listed});
        let r = parse_mutation(0, m, 10).unwrap_err();
        assert!(r.message.contains("changedFields"), "{}", r.message);
        let r = parse_seed_record("t", 0, Value::Object(fields), 10).unwrap_err();
        assert!(
            r.message.contains("changes.t[0]: 11 fields"),
            "{}",
            r.message
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
