//! Reading one mutation of a push, in either request form, into a
//! [`PushItem`] (or a [`Rejection`] naming the field).

use serde_json::{Map, Value};
use tidesync_protocol::{Mutation, Op, RESERVED_FIELDS, SYNC_STATUS_SYNCED};

use super::{parse_time_ms, PushItem, Rejection, MAX_ID_LEN};
use crate::error::clip;

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
        patch: false,
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
        patch: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
