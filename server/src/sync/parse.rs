//! Reading one mutation of a Tidesync push into a [`PushItem`] (or a
//! [`Rejection`] naming the field). Seed 003's form is read in
//! `http::seed`.

use serde_json::{Map, Value};
use tidesync_protocol::{Mutation, Op, RESERVED_FIELDS};

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

pub fn strip_reserved(mut data: Map<String, Value>) -> Map<String, Value> {
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
}
