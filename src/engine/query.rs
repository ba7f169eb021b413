//! The query of a subscription, `subscribe(type, { where, orderBy, limit })`,
//! evaluated over the records' application views (fields plus `id`,
//! `version`, `updatedAt`, `syncStatus`): equality on fields, one sort key,
//! a limit. Pure, so a subscription's result is a function of the local
//! records only and the API can tell whether a change changed it.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// Every `(field, value)` must be equal (a missing field equals `null`).
    pub filter: Vec<(String, Value)>,
    /// Sort key; records without it come first in ascending order. Ties,
    /// and no key at all, keep `id` order.
    pub order_by: Option<(String, Direction)>,
    pub limit: Option<usize>,
}

impl Query {
    pub fn matches(&self, view: &Value) -> bool {
        self.filter
            .iter()
            .all(|(field, wanted)| view.get(field).unwrap_or(&Value::Null) == wanted)
    }

    /// The query's result from the views of a type's live records in `id`
    /// order.
    pub fn apply(&self, views: Vec<Value>) -> Vec<Value> {
        let mut out: Vec<Value> = views.into_iter().filter(|v| self.matches(v)).collect();
        if let Some((field, direction)) = &self.order_by {
            out = sorted(out, field, *direction);
        }
        if let Some(limit) = self.limit {
            out.truncate(limit);
        }
        out
    }
}

/// Sorts by one field, ties in their present order. Each record gets a text
/// key that sorts as its value does ([`sort_key`]) followed by its position,
/// and the keys are sorted as strings: the string sort is already in the
/// package, where a sort of records by a comparator would add kilobytes of
/// wasm.
fn sorted(views: Vec<Value>, field: &str, direction: Direction) -> Vec<Value> {
    let last = views.len().saturating_sub(1);
    // Descending reverses the sorted keys, so positions are reversed first
    // to keep ties in their present order.
    let position = |i: usize| match direction {
        Direction::Asc => i,
        Direction::Desc => last - i,
    };
    let mut keys: Vec<String> = views
        .iter()
        .enumerate()
        .map(|(i, view)| format!("{}\u{0}{:010}", sort_key(view.get(field)), position(i)))
        .collect();
    keys.sort();
    if direction == Direction::Desc {
        keys.reverse();
    }
    let mut slots: Vec<Option<Value>> = views.into_iter().map(Some).collect();
    keys.iter()
        .filter_map(|key| key.rsplit('\u{0}').next()?.parse::<usize>().ok())
        .filter_map(|p| slots.get_mut(position(p))?.take())
        .collect()
}

/// A text that sorts (as a string) like the value: absent and `null`
/// first, then booleans, numbers, strings, arrays (element by element),
/// objects (all equal). Strings holding U+0000 or U+0001 may sort a little
/// off; nothing else does.
pub fn sort_key(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "0".to_owned(),
        Some(Value::Bool(b)) => format!("1{}", u8::from(*b)),
        Some(Value::Number(n)) => {
            // IEEE 754 bits, flipped so that unsigned order is numeric order.
            let bits = n.as_f64().unwrap_or(0.0).to_bits();
            let ordered = if bits >> 63 == 1 {
                !bits
            } else {
                bits | 1 << 63
            };
            format!("2{ordered:016x}")
        }
        Some(Value::String(text)) => format!("3{text}"),
        Some(Value::Array(items)) => {
            let mut key = "4".to_owned();
            for item in items {
                key.push_str(&sort_key(Some(item)));
                key.push('\u{1}');
            }
            key
        }
        Some(Value::Object(_)) => "5".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn notes() -> Vec<Value> {
        vec![
            json!({"id": "a", "title": "pears", "done": false, "rank": 3}),
            json!({"id": "b", "title": "apples", "done": true, "rank": 1}),
            json!({"id": "c", "title": "figs", "done": false}),
            json!({"id": "d", "title": "dates", "done": false, "rank": 2}),
        ]
    }

    fn ids(views: &[Value]) -> Vec<&str> {
        views.iter().filter_map(|v| v["id"].as_str()).collect()
    }

    #[test]
    fn no_query_is_every_record_in_id_order() {
        assert_eq!(ids(&Query::default().apply(notes())), ["a", "b", "c", "d"]);
    }

    #[test]
    fn where_keeps_records_equal_on_every_field() {
        let q = Query {
            filter: vec![("done".into(), json!(false))],
            ..Query::default()
        };
        assert_eq!(ids(&q.apply(notes())), ["a", "c", "d"]);
        let q = Query {
            filter: vec![("done".into(), json!(false)), ("rank".into(), json!(2))],
            ..Query::default()
        };
        assert_eq!(ids(&q.apply(notes())), ["d"]);
    }

    #[test]
    fn a_missing_field_equals_null() {
        let q = Query {
            filter: vec![("rank".into(), Value::Null)],
            ..Query::default()
        };
        assert_eq!(ids(&q.apply(notes())), ["c"]);
    }

    #[test]
    fn order_by_sorts_both_ways_with_missing_values_first() {
        let asc = Query {
            order_by: Some(("rank".into(), Direction::Asc)),
            ..Query::default()
        };
        assert_eq!(ids(&asc.apply(notes())), ["c", "b", "d", "a"]);
        let desc = Query {
            order_by: Some(("title".into(), Direction::Desc)),
            ..Query::default()
        };
        assert_eq!(ids(&desc.apply(notes())), ["a", "c", "d", "b"]);
    }

    #[test]
    fn ties_keep_id_order_both_ways() {
        let views = vec![
            json!({"id": "a", "n": 1}),
            json!({"id": "b", "n": 2}),
            json!({"id": "c", "n": 1}),
            json!({"id": "d", "n": 2}),
        ];
        let by = |direction| Query {
            order_by: Some(("n".into(), direction)),
            ..Query::default()
        };
        assert_eq!(
            ids(&by(Direction::Asc).apply(views.clone())),
            ["a", "c", "b", "d"]
        );
        assert_eq!(ids(&by(Direction::Desc).apply(views)), ["b", "d", "a", "c"]);
    }

    #[test]
    fn limit_applies_after_filter_and_sort() {
        let q = Query {
            filter: vec![("done".into(), json!(false))],
            order_by: Some(("title".into(), Direction::Asc)),
            limit: Some(2),
        };
        assert_eq!(ids(&q.apply(notes())), ["d", "c"]);
    }

    #[test]
    fn values_of_different_kinds_have_a_total_order() {
        let order = [
            json!(null),
            json!(false),
            json!(true),
            json!(-1e300),
            json!(-1.5),
            json!(-0.25),
            json!(0),
            json!(2),
            json!(10),
            json!(1e300),
            json!(""),
            json!("10"),
            json!("9"),
            json!("a"),
            json!("ab"),
            json!([]),
            json!([1]),
            json!([1, 2]),
            json!([1, 3]),
            json!([2]),
            json!({}),
        ];
        for pair in order.windows(2) {
            assert!(
                sort_key(Some(&pair[0])) < sort_key(Some(&pair[1])),
                "{} < {}",
                pair[0],
                pair[1]
            );
        }
        assert_eq!(sort_key(None), sort_key(Some(&json!(null))));
    }
}
