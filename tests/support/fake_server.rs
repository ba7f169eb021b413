//! A small fake of the push/pull server, answering through the scripted
//! transport: versions, a change log for exact cursors, per-mutation
//! results, duplicates and the verify summary, plus switches that make it
//! misbehave (reject, drop a result, fail a pull, go down, lose answers).

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use tidesync::engine::time::{to_iso, Millis};
use tidesync::engine::{Body, HttpRequest, HttpResponse, ResponseBody, TransportError};
use tidesync_protocol as protocol;

/// Where the fake server is reached.
pub const SERVER: &str = "https://sync.test";

#[derive(Clone, Debug)]
pub struct ServerRecord {
    pub data: Map<String, Value>,
    pub version: i64,
    pub updated_at: Millis,
    /// When the edit that made this version was made (`changedAt`).
    pub changed_at: Millis,
    pub is_deleted: bool,
    /// Position in the change log (the pull cursor is the last one seen).
    pub seq: u64,
}

/// The server's side of the protocol, kept to what the client relies on:
/// versions, a change log for exact cursors, per-mutation results (a stale
/// `baseVersion` is a conflict the server settles for itself), duplicates,
/// and the verify summary. Tests can make it reject a record, drop a result,
/// fail a pull call, or go down.
#[derive(Default)]
pub struct FakeServer {
    pub records: BTreeMap<(String, String), ServerRecord>,
    pub seq: u64,
    pub seen_mutations: HashSet<String>,
    /// Record ids whose mutations are rejected, with the error message.
    pub reject: HashMap<String, String>,
    /// Record ids whose results the push answer leaves out.
    pub drop_results: HashSet<String>,
    /// Pull calls (counted from 1) that fail with a network error.
    pub fail_pull_calls: HashSet<usize>,
    pub pull_calls: usize,
    /// Every call fails with a network error.
    pub down: bool,
    /// Pushes are applied, but their answers are lost on the way back.
    pub lose_push_answers: bool,
    /// Every result answered, in order: (record id, status).
    pub answered: Vec<(String, protocol::MutationStatus)>,
}

impl FakeServer {
    /// Another device writes a record at `at`: a new version.
    pub fn write(&mut self, entity_type: &str, id: &str, data: Value, at: Millis) -> i64 {
        self.seq += 1;
        let record = self
            .records
            .entry((entity_type.to_owned(), id.to_owned()))
            .or_insert(ServerRecord {
                data: Map::new(),
                version: 0,
                updated_at: at,
                changed_at: at,
                is_deleted: false,
                seq: 0,
            });
        record.data = data.as_object().cloned().expect("an object");
        record.version += 1;
        record.updated_at = at;
        record.changed_at = at;
        record.is_deleted = false;
        record.seq = self.seq;
        record.version
    }

    /// Another device deletes a record: a tombstone with a new version.
    pub fn delete(&mut self, entity_type: &str, id: &str, at: Millis) {
        self.seq += 1;
        let record = self
            .records
            .get_mut(&(entity_type.to_owned(), id.to_owned()))
            .expect("a server record");
        record.version += 1;
        record.is_deleted = true;
        record.updated_at = at;
        record.changed_at = at;
        record.seq = self.seq;
    }

    /// The record vanishes without a tombstone (a purge, a restore).
    pub fn purge(&mut self, entity_type: &str, id: &str) {
        self.records
            .remove(&(entity_type.to_owned(), id.to_owned()));
    }

    pub fn get(&self, entity_type: &str, id: &str) -> ServerRecord {
        self.records[&(entity_type.to_owned(), id.to_owned())].clone()
    }

    pub fn json(&self, entity_type: &str, id: &str) -> Value {
        let record = self.get(entity_type, id);
        let mut object = record.data.clone();
        object.insert("id".into(), json!(id));
        object.insert("version".into(), json!(record.version));
        object.insert("updatedAt".into(), json!(to_iso(record.updated_at)));
        object.insert("changedAt".into(), json!(to_iso(record.changed_at)));
        object.insert("isDeleted".into(), json!(record.is_deleted));
        Value::Object(object)
    }

    pub fn answer(
        &mut self,
        request: &HttpRequest,
        now: Millis,
    ) -> Result<HttpResponse, TransportError> {
        if self.down {
            return Err(TransportError::Network("connection refused".into()));
        }
        let body = match &request.body {
            Some(Body::Json(value)) => value.clone(),
            _ => Value::Null,
        };
        let path = request.url.strip_prefix(SERVER).unwrap_or(&request.url);
        let answer = match path {
            protocol::PUSH_PATH => {
                let answer = self.push(serde_json::from_value(body).expect("a push"), now);
                if self.lose_push_answers {
                    return Err(TransportError::Network("connection reset".into()));
                }
                answer
            }
            protocol::PULL_PATH => {
                self.pull_calls += 1;
                if self.fail_pull_calls.contains(&self.pull_calls) {
                    return Err(TransportError::Network("connection reset".into()));
                }
                self.pull(serde_json::from_value(body).expect("a pull"), now)
            }
            protocol::VERIFY_PATH => {
                self.verify(serde_json::from_value(body).expect("a verify"), now)
            }
            // A plain outbox task: the app's own endpoint.
            _ => return Ok(HttpResponse::new(204)),
        };
        let mut response = HttpResponse::new(200);
        response.body = ResponseBody::Json(answer);
        Ok(response)
    }

    pub fn push(&mut self, push: protocol::PushRequest, now: Millis) -> Value {
        let mut results = Vec::new();
        for mutation in push.mutations {
            let id = mutation.id.clone().expect("the client names its records");
            if self.drop_results.contains(&id) {
                continue;
            }
            let result = |status, record: Option<Value>| protocol::MutationResult {
                mutation_id: Some(mutation.mutation_id.clone()),
                entity_type: Some(mutation.entity_type.clone()),
                id: Some(id.clone()),
                status,
                record,
                resolution: None,
                winner: None,
                error: None,
            };
            let key = (mutation.entity_type.clone(), id.clone());
            if self.seen_mutations.contains(&mutation.mutation_id) {
                let record = self.json(&key.0, &key.1);
                results.push(result(protocol::MutationStatus::Duplicate, Some(record)));
                continue;
            }
            if let Some(message) = self.reject.get(&id) {
                results.push(protocol::MutationResult {
                    error: Some(protocol::ErrorBody {
                        code: "validation".into(),
                        message: message.clone(),
                        details: None,
                    }),
                    ..result(protocol::MutationStatus::Rejected, None)
                });
                continue;
            }
            self.seen_mutations.insert(mutation.mutation_id.clone());
            let current = self.records.get(&key).map_or(0, |r| r.version);
            if current > 0 && mutation.base_version.is_some_and(|base| base != current) {
                // Stale: the server keeps its copy (server-wins on its side).
                let record = self.json(&key.0, &key.1);
                results.push(protocol::MutationResult {
                    resolution: Some(protocol::Strategy::ServerWins),
                    winner: Some(protocol::Winner::Server),
                    ..result(protocol::MutationStatus::Conflict, Some(record))
                });
                continue;
            }
            match mutation.op {
                protocol::Op::Upsert => {
                    self.write(&key.0, &key.1, mutation.data.clone().expect("data"), now);
                }
                protocol::Op::Delete => self.delete(&key.0, &key.1, now),
            }
            // Stored now, edited when the client says (as the reference
            // server keeps `changed_at`).
            if let Some(edited) = mutation
                .client_timestamp
                .as_deref()
                .and_then(tidesync::engine::time::from_iso)
            {
                if let Some(record) = self.records.get_mut(&key) {
                    record.changed_at = edited.min(now);
                }
            }
            let record = self.json(&key.0, &key.1);
            results.push(result(protocol::MutationStatus::Applied, Some(record)));
        }
        self.answered.extend(
            results
                .iter()
                .map(|r| (r.id.clone().unwrap_or_default(), r.status)),
        );
        serde_json::to_value(protocol::PushResponse {
            success: true,
            data: Vec::new(),
            results,
            cursor: None,
            sync_timestamp: to_iso(now),
        })
        .unwrap()
    }

    pub fn pull(&mut self, pull: protocol::PullRequest, now: Millis) -> Value {
        let after: u64 = pull.cursor.as_deref().map_or(0, |c| c.parse().unwrap());
        let limit = pull.limit.unwrap_or(100) as usize;
        let mut changes: Vec<(&(String, String), &ServerRecord)> = self
            .records
            .iter()
            .filter(|((t, _), r)| pull.entity_types.contains(t) && r.seq > after)
            .collect();
        changes.sort_by_key(|(_, r)| r.seq);
        let has_more = changes.len() > limit;
        changes.truncate(limit);
        let cursor = changes.last().map_or(after, |(_, r)| r.seq);
        let mut data: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for ((entity_type, id), _) in &changes {
            data.entry(entity_type.clone())
                .or_default()
                .push(self.json(entity_type, id));
        }
        serde_json::to_value(protocol::PullResponse {
            success: true,
            data,
            cursor: Some(cursor.to_string()),
            has_more,
            sync_timestamp: to_iso(now),
        })
        .unwrap()
    }

    pub fn verify(&mut self, verify: protocol::VerifyRequest, now: Millis) -> Value {
        let mut data = BTreeMap::new();
        for entity_type in verify.entity_types {
            let live: Vec<(&str, i64)> = self
                .records
                .iter()
                .filter(|((t, _), r)| *t == entity_type && !r.is_deleted)
                .map(|((_, id), r)| (id.as_str(), r.version))
                .collect();
            data.insert(
                entity_type,
                protocol::TypeSummary {
                    count: live.len() as u64,
                    checksum: protocol::record_checksum(live),
                },
            );
        }
        serde_json::to_value(protocol::VerifyResponse {
            success: true,
            data,
            sync_timestamp: to_iso(now),
        })
        .unwrap()
    }
}
