//! Conflict rules, as pure functions. A conflict is a local change the
//! server has not confirmed meeting a different server version of the same
//! record (on pull, or as a push result). The strategy picks the data the
//! record ends with, and whether the local change must still be sent.

use serde_json::{Map, Value};

/// The strategies are the protocol's: the server and the client settle
/// conflicts by the same names.
pub use tidesync_protocol::Strategy;

/// One side of a conflict.
#[derive(Clone, Debug, PartialEq)]
pub struct Side<'a> {
    pub data: &'a Map<String, Value>,
    pub is_deleted: bool,
    /// When this side's change was made (ms since epoch).
    pub updated_at: f64,
}

/// What the record becomes.
#[derive(Clone, Debug, PartialEq)]
pub struct ConflictOutcome {
    pub data: Map<String, Value>,
    pub is_deleted: bool,
    /// The result differs from the server's copy: it must be pushed.
    pub push: bool,
    /// `"server"`, `"client"` or `"merged"`, for the `sync:conflict` event.
    pub winner: &'static str,
}

/// Resolves a conflict by strategy. `changed_fields` are the fields the
/// client changed since its last sync (what `merge` keeps from the client).
pub fn resolve(
    strategy: Strategy,
    local: &Side,
    remote: &Side,
    changed_fields: &[String],
) -> ConflictOutcome {
    let server = || ConflictOutcome {
        data: remote.data.clone(),
        is_deleted: remote.is_deleted,
        push: false,
        winner: "server",
    };
    let client = || ConflictOutcome {
        data: local.data.clone(),
        is_deleted: local.is_deleted,
        push: local.data != remote.data || local.is_deleted != remote.is_deleted,
        winner: "client",
    };
    match strategy {
        Strategy::ServerWins => server(),
        Strategy::ClientWins => client(),
        // Ties go to the server: it saw both writes and is the one place
        // every client agrees on.
        Strategy::LastWriteWins if local.updated_at > remote.updated_at => client(),
        Strategy::LastWriteWins => server(),
        Strategy::Merge => {
            if local.is_deleted || remote.is_deleted {
                // A delete against an edit: the delete wins only if it is newer.
                return if local.updated_at > remote.updated_at {
                    client()
                } else {
                    server()
                };
            }
            let mut data = remote.data.clone();
            for field in changed_fields {
                match local.data.get(field) {
                    Some(value) => data.insert(field.clone(), value.clone()),
                    None => data.remove(field),
                };
            }
            let push = data != *remote.data;
            ConflictOutcome {
                data,
                is_deleted: false,
                push,
                winner: "merged",
            }
        }
    }
}

/// Fields whose values differ between two versions of a record's data.
pub fn changed_fields(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<String> {
    let mut fields: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .chain(before.keys().filter(|k| !after.contains_key(*k)).cloned())
        .collect();
    fields.sort();
    fields.dedup();
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn sides<'a>(
        local: &'a Map<String, Value>,
        remote: &'a Map<String, Value>,
        lt: f64,
        rt: f64,
    ) -> (Side<'a>, Side<'a>) {
        (
            Side {
                data: local,
                is_deleted: false,
                updated_at: lt,
            },
            Side {
                data: remote,
                is_deleted: false,
                updated_at: rt,
            },
        )
    }

    #[test]
    fn server_wins_takes_the_server_copy_and_sends_nothing() {
        let (l, r) = (
            map(json!({"name": "local"})),
            map(json!({"name": "remote"})),
        );
        let (ls, rs) = sides(&l, &r, 10.0, 5.0);
        let out = resolve(Strategy::ServerWins, &ls, &rs, &["name".into()]);
        assert_eq!(
            (out.data, out.push, out.winner),
            (r.clone(), false, "server")
        );
    }

    #[test]
    fn client_wins_keeps_the_local_copy_and_pushes_it() {
        let (l, r) = (
            map(json!({"name": "local"})),
            map(json!({"name": "remote"})),
        );
        let (ls, rs) = sides(&l, &r, 1.0, 5.0);
        let out = resolve(Strategy::ClientWins, &ls, &rs, &[]);
        assert_eq!(
            (out.data, out.push, out.winner),
            (l.clone(), true, "client")
        );
    }

    #[test]
    fn last_write_wins_compares_change_times_and_ties_go_to_the_server() {
        let (l, r) = (map(json!({"n": 1})), map(json!({"n": 2})));
        let (ls, rs) = sides(&l, &r, 10.0, 5.0);
        assert_eq!(
            resolve(Strategy::LastWriteWins, &ls, &rs, &[]).winner,
            "client"
        );
        let (ls, rs) = sides(&l, &r, 5.0, 10.0);
        assert_eq!(
            resolve(Strategy::LastWriteWins, &ls, &rs, &[]).winner,
            "server"
        );
        let (ls, rs) = sides(&l, &r, 5.0, 5.0);
        assert_eq!(
            resolve(Strategy::LastWriteWins, &ls, &rs, &[]).winner,
            "server"
        );
    }

    #[test]
    fn merge_keeps_the_fields_the_client_changed_over_the_server_copy() {
        let local = map(json!({"title": "mine", "body": "old", "tags": ["a"]}));
        let remote = map(json!({"title": "old", "body": "theirs", "tags": ["a"], "color": "red"}));
        let (ls, rs) = sides(&local, &remote, 1.0, 2.0);
        let out = resolve(Strategy::Merge, &ls, &rs, &["title".into()]);
        assert_eq!(
            out.data,
            map(json!({"title": "mine", "body": "theirs", "tags": ["a"], "color": "red"}))
        );
        assert!(out.push);
        assert_eq!(out.winner, "merged");
    }

    #[test]
    fn merge_of_an_edit_with_a_newer_delete_keeps_the_delete() {
        let (l, r) = (map(json!({"n": 1})), map(json!({"n": 0})));
        let local = Side {
            data: &l,
            is_deleted: false,
            updated_at: 1.0,
        };
        let remote = Side {
            data: &r,
            is_deleted: true,
            updated_at: 2.0,
        };
        let out = resolve(Strategy::Merge, &local, &remote, &["n".into()]);
        assert!(out.is_deleted && !out.push);
    }

    #[test]
    fn changed_fields_lists_added_changed_and_removed_fields() {
        let before = map(json!({"a": 1, "b": 2, "c": 3}));
        let after = map(json!({"a": 1, "b": 5, "d": 4}));
        assert_eq!(changed_fields(&before, &after), ["b", "c", "d"]);
    }
}
