#![cfg(not(target_arch = "wasm32"))]
//! Properties of the pure-Rust parsing behind the JavaScript surface (issue
//! #11, item 6; the JS-side fuzz is tests/e2e/hostile-input.test.mjs):
//! whatever text or JSON arrives, the parsers of option values, task
//! headers, dependencies, times and records answer (a value or a refusal)
//! and never panic, and what they accept is kept as given:
//!
//! - `header_error` refuses exactly the header names and values fetch would
//!   throw on at send time;
//! - `Priority`, `Strategy` and capture methods parse only their spellings;
//! - `from_iso` / `to_iso` take any text or number, and round-trip;
//! - dependency placeholders, paths and lookups take any text and JSON;
//! - a pulled record (`RemoteRecord::from_json`) of any JSON is read or
//!   refused, never with a reserved field in its data;
//! - `Replicator::put` of any id and any JSON fields stores exactly the
//!   fields given (less the reserved ones) or refuses `invalid-record`.

mod support;

use proptest::prelude::*;
// Named explicitly: `support::replication` brings the conflict `Strategy` too.
use proptest::strategy::Strategy;
use support::replication::*;
use tidesync::engine::capture::method_error;
use tidesync::engine::dependency::{lookup, placeholders, valid_name, valid_path};
use tidesync::engine::replication::record::RemoteRecord;
use tidesync::engine::task::header_error;
use tidesync::engine::time::from_iso;

const TOKEN: &str = "!#$%&'*+-.^_`|~";

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || TOKEN.contains(c))
}

/// Any JSON, up to a few levels deep, with keys that include the reserved
/// fields and the names JavaScript treats specially.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("id".to_owned()),
        Just("version".to_owned()),
        Just("updatedAt".to_owned()),
        Just("changedAt".to_owned()),
        Just("isDeleted".to_owned()),
        Just("syncStatus".to_owned()),
        Just("constructor".to_owned()),
        Just("__proto__".to_owned()),
        ".{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|n| serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::String),
        Just(Value::String("2026-12-02T20:00:00.000Z".into())),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn header_error_refuses_exactly_what_fetch_would_throw_on(name in ".{0,16}", value in ".{0,32}") {
        let refused = header_error(&name, &value).is_some();
        let fetch_throws = !is_token(&name) || value.contains(['\r', '\n', '\0']);
        prop_assert_eq!(refused, fetch_throws, "{:?}: {:?}", name, value);
    }

    #[test]
    fn token_names_with_printable_values_are_accepted(
        name in "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,24}",
        value in "[ -~]{0,64}",
    ) {
        prop_assert_eq!(header_error(&name, &value), None);
    }

    #[test]
    fn enumerations_parse_only_their_spellings(text in ".{0,16}") {
        let priority = Priority::parse(&text);
        prop_assert_eq!(priority.is_some(), ["high", "normal", "low"].contains(&text.as_str()));
        if let Some(p) = priority {
            prop_assert_eq!(p.as_str(), text.as_str());
        }
        let strategy = tidesync::engine::replication::Strategy::parse(&text);
        prop_assert_eq!(
            strategy.is_some(),
            ["server-wins", "client-wins", "last-write-wins", "merge"].contains(&text.as_str())
        );
        if let Some(why) = method_error(&text) {
            prop_assert!(!why.is_empty());
        } else {
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphabetic()) && !text.is_empty());
            prop_assert!(!["GET", "HEAD"].contains(&text.to_ascii_uppercase().as_str()));
        }
    }

    #[test]
    fn times_parse_any_text_and_print_any_number(text in ".{0,32}", ms in any::<f64>()) {
        let _ = from_iso(&text);
        let printed = to_iso(ms);
        prop_assert!(printed.ends_with('Z'), "{}", printed);
    }

    #[test]
    fn times_round_trip(ms in 0i64..253_402_300_799_999) {
        let ms = ms as f64;
        prop_assert_eq!(from_iso(&to_iso(ms)), Some(ms));
    }

    #[test]
    fn dependency_parsing_takes_any_text_and_json(text in ".{0,48}", answer in json_value()) {
        for found in placeholders(&text) {
            prop_assert!(text.contains(found));
        }
        let _ = valid_name(&text);
        if valid_path(&text) {
            let _ = lookup(&answer, &text);
        }
    }

    #[test]
    fn pulled_records_are_read_or_refused(value in json_value()) {
        if let Some(record) = RemoteRecord::from_json(&value) {
            let object = value.as_object().expect("a record is an object");
            prop_assert_eq!(Some(record.id.as_str()), object.get("id").and_then(Value::as_str));
            for field in record.data.keys() {
                prop_assert!(!tidesync_protocol::RESERVED_FIELDS.contains(&field.as_str()) && field != "changedAt");
            }
        }
    }

    #[test]
    fn put_keeps_every_field_given_or_refuses(id in prop::option::of(".{0,210}"), fields in json_value()) {
        let Value::Object(fields) = fields else { return Ok(()) };
        let b = bench(tidesync::engine::replication::Strategy::LastWriteWins);
        match block_on(b.replicator.put("note", id.clone(), fields.clone())) {
            Ok((record, _task)) => {
                if let Some(id) = &id {
                    prop_assert_eq!(&record.id, id);
                }
                let kept: Map<String, Value> = fields
                    .into_iter()
                    .filter(|(k, _)| !tidesync_protocol::RESERVED_FIELDS.contains(&k.as_str()))
                    .collect();
                let stored = b.stored("note", &record.id).expect("stored");
                for (key, value) in &kept {
                    prop_assert_eq!(stored.data.get(key), Some(value), "field {:?}", key);
                }
            }
            Err(ReplicationError::InvalidRecord(why)) => prop_assert!(why.contains("id"), "{}", why),
            Err(other) => prop_assert!(false, "put refused with {:?}", other),
        }
    }

    #[test]
    fn put_refuses_an_unknown_entity_type(entity_type in ".{0,24}") {
        prop_assume!(entity_type != "note" && entity_type != "task");
        let b = bench(tidesync::engine::replication::Strategy::LastWriteWins);
        let refused = block_on(b.replicator.put(&entity_type, None, Map::new()));
        prop_assert!(matches!(refused, Err(ReplicationError::UnknownEntityType(_))));
    }
}
