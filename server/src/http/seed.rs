//! Seed 003's request forms, read into what the Tidesync forms read into:
//! the push `{"changes": {type: [record, …]}}` (records with `id`,
//! `version`, `isDeleted`/`is_deleted`, `updatedAt`; updates are patches;
//! `sync_status`/`server_synced` answered as delivered) and the pull's
//! `lastSyncTimestamp` (a pull by time, everything in one page unless a
//! `limit` says otherwise). Where a timestamp page ends is the cursor's
//! rule ([`crate::cursor`]).

use serde_json::{Map, Value};
use tidesync_protocol::{Op, SYNC_STATUS_SYNCED};

use crate::config::Registry as EntityRegistry;
use crate::db::After;
use crate::error::{clip, ApiError};
use crate::http::state::Limits;
use crate::http::types::check_types;
use crate::sync::{check_id, parse_time_ms, strip_reserved, PushItem, Rejection};

/// Reads the `changes` of a seed 003 push: every record, each valid or
/// rejected alone. A malformed envelope, too many records, or a type the
/// tenant may not use fails the whole push.
pub(super) fn read_changes(
    changes: Value,
    registry: &EntityRegistry,
    tenant: &str,
    limits: &Limits,
) -> Result<Vec<Result<PushItem, Rejection>>, ApiError> {
    let Value::Object(changes) = changes else {
        return Err(ApiError::Validation(
            "changes: expected an object of entity type → array of records".into(),
        ));
    };
    let mut total = 0usize;
    for (t, records) in &changes {
        match records {
            Value::Array(a) => total += a.len(),
            _ => {
                return Err(ApiError::Validation(format!(
                    "changes.{t}: expected an array of records"
                )))
            }
        }
    }
    if total > limits.max_mutations {
        return Err(limits.too_many_mutations(total));
    }
    check_types(registry, tenant, changes.keys())?;
    let mut parsed = Vec::with_capacity(total);
    for (t, records) in changes {
        if let Value::Array(a) = records {
            for (i, r) in a.into_iter().enumerate() {
                parsed.push(parse_seed_record(&t, i, r, limits.max_fields));
            }
        }
    }
    Ok(parsed)
}

/// Where a pull with `lastSyncTimestamp` (and no cursor) starts.
pub(super) fn pull_since(last_sync_timestamp: &str) -> Result<After, ApiError> {
    parse_time_ms(last_sync_timestamp)
        .map(After::Time)
        .ok_or_else(|| {
            ApiError::Validation(format!(
                "lastSyncTimestamp: not an ISO-8601 time: {:?}",
                clip(last_sync_timestamp)
            ))
        })
}

/// The page size of a pull that names no `limit`. Seed 003 clients send no
/// limit and expect everything in one answer: give them the largest page.
pub(super) fn default_page_size(after: After, limits: &Limits) -> u32 {
    match after {
        After::Seq(_) => limits.default_page_size,
        After::Time(_) => limits.max_page_size,
    }
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
/// An update is a patch: fields not sent keep their stored values.
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
    let Value::Object(obj) = value else {
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
    let mut obj = strip_reserved(obj);
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
        patch: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::parse_mutation;
    use serde_json::json;

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
}
