//! The replicator: local records kept in step with the server. Its state and
//! ports live here; each responsibility has a module of its own:
//! [`write`] (local writes, one transaction with their mutation),
//! [`push`] (push planning, as the outbox's [`Replica`]), [`answers`] (a
//! push's per-mutation results), [`pull`] (pages along the exact cursor),
//! [`settle`] (conflict settlement), [`verify`] (verify and repair).

mod answers;
mod pull;
mod push;
mod settle;
mod verify;
mod write;

pub use verify::local_summary;

use crate::engine::credentials::authorize;
use crate::engine::ports::{
    Clock, ConflictResolver, EventSink, RecordChange, RecordStore, StoreError, Transport,
    TransportError,
};
use crate::engine::replication::conflict::Strategy;
use crate::engine::replication::record::{LocalRecord, RecordStatus};
use crate::engine::task::{Body, HttpRequest, ResponseBody, Task};
use serde::Serialize;
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use tidesync_protocol as protocol;

const CURSOR_TYPES_KEY: &str = "pullCursorTypes";
const CLIENT_ID_KEY: &str = "clientId";

/// Errors of replication calls (`sync`, `pull`, `verify`, `put`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("entity type {0:?} is not one of this client's entityTypes; add it to SyncClient.open({{entityTypes}})")]
    UnknownEntityType(String),
    #[error("{0}")]
    InvalidRecord(String),
    #[error("the server could not be reached: {0}")]
    Network(String),
    #[error("the server answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    #[error("the server refused the credentials (HTTP {0}); call setToken() with a fresh token")]
    Auth(u16),
    #[error("another sync is in progress")]
    Busy,
}

/// How replication is configured.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicationOptions {
    pub server_url: String,
    pub entity_types: Vec<String>,
    pub strategy: Strategy,
    pub batch_size: usize,
    pub page_size: u32,
    pub request_timeout: u32,
}

/// The ports the replicator runs on.
pub trait ReplicaPorts {
    type Records: RecordStore;
    type Transport: Transport;
    type Clock: Clock;
    type Events: EventSink;
    type Resolver: ConflictResolver;
}

/// Counts of one pull.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PullReport {
    pub pulled: usize,
    pub pages: usize,
    pub conflicts: usize,
}

/// One entity type's verification.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub entity_type: String,
    pub local_count: u64,
    pub server_count: u64,
    pub local_checksum: String,
    pub server_checksum: String,
    pub repaired: usize,
}

/// The implementations a replicator runs on, handed over together (as
/// [`crate::engine::outbox::OutboxPorts`] for the outbox).
pub struct ReplicatorPorts<R: ReplicaPorts> {
    pub records: R::Records,
    pub transport: R::Transport,
    pub clock: R::Clock,
    pub events: R::Events,
    pub resolver: R::Resolver,
}

pub struct Replicator<R: ReplicaPorts> {
    records: R::Records,
    transport: R::Transport,
    clock: R::Clock,
    events: R::Events,
    resolver: R::Resolver,
    options: ReplicationOptions,
    client_id: String,
    token: RefCell<Option<String>>,
    pulling: Cell<bool>,
}

/// Places a new local write in the record's chain of queued mutations
/// (`chain`, oldest first). It replaces the newest one while that one was
/// never dispatched: consecutive writes coalesce. Once dispatched, the
/// server may have applied it even though no answer arrived, so it goes out
/// exactly as it was (a replay is answered `duplicate`) and the new write
/// is queued as a task of its own, behind it in the record's ordering key.
/// So a record has at most one never-dispatched mutation, always its newest.
pub fn place_in_chain(chain: &[Task], new: &mut Task) {
    let newest = chain.iter().max_by_key(|t| t.seq);
    match newest {
        Some(open) if !open.dispatched => new.id = open.id.clone(),
        _ if chain.iter().any(|t| t.id == new.id) => {
            new.id = format!("{}#{}", new.id, new.idempotency_key);
        }
        _ => {}
    }
}

/// Whether task `id` belongs to the chain whose head id is `head`.
pub fn in_chain(head: &str, id: &str) -> bool {
    id.strip_prefix(head)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('#'))
}

/// The id of the mutation task of a record: one per record, so
/// consecutive writes coalesce into one queued mutation.
pub fn mutation_task_id(entity_type: &str, id: &str) -> String {
    format!("mutation:{entity_type}:{id}")
}

fn mutation_of(task: &Task) -> Option<protocol::Mutation> {
    match &task.request.body {
        Some(Body::Json(value)) => serde_json::from_value(value.clone()).ok(),
        _ => None,
    }
}

impl<R: ReplicaPorts> Replicator<R> {
    /// Opens the replicator over its ports: reads (or makes) this client's
    /// id, and starts the cursor over when the entity types changed.
    pub async fn open(
        ports: ReplicatorPorts<R>,
        options: ReplicationOptions,
    ) -> Result<Self, StoreError> {
        let ReplicatorPorts {
            records,
            transport,
            clock,
            events,
            resolver,
        } = ports;
        let client_id = match records.get_meta_text(CLIENT_ID_KEY).await? {
            Some(id) => id,
            None => {
                let id = clock.unique_id();
                records.put_meta_text(CLIENT_ID_KEY, &id).await?;
                id
            }
        };
        // A cursor only covers the types it was pulled for: a new type list
        // starts from the beginning.
        let types = options.entity_types.join(",");
        if records.get_meta_text(CURSOR_TYPES_KEY).await?.as_deref() != Some(types.as_str()) {
            records
                .apply(RecordChange {
                    cursor: Some(String::new()),
                    ..Default::default()
                })
                .await?;
            records.put_meta_text(CURSOR_TYPES_KEY, &types).await?;
        }
        Ok(Self {
            records,
            transport,
            clock,
            events,
            resolver,
            options,
            client_id,
            token: RefCell::new(None),
            pulling: Cell::new(false),
        })
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn options(&self) -> &ReplicationOptions {
        &self.options
    }

    pub fn records(&self) -> &R::Records {
        &self.records
    }

    /// The bearer token for push, pull and verify.
    pub fn set_token(&self, token: Option<String>) {
        *self.token.borrow_mut() = token;
    }

    fn check_type(&self, entity_type: &str) -> Result<(), ReplicationError> {
        if self.options.entity_types.iter().any(|t| t == entity_type) {
            Ok(())
        } else {
            Err(ReplicationError::UnknownEntityType(entity_type.to_owned()))
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.options.server_url)
    }

    // ----- talking to the server -----

    async fn call(&self, path: &str, body: Value) -> Result<Value, ReplicationError> {
        let mut request = HttpRequest {
            url: self.url(path),
            method: "POST".into(),
            headers: BTreeMap::new(),
            body: Some(Body::Json(body)),
        };
        // The same rule as the outbox's: the token only goes to the server.
        authorize(
            &mut request,
            self.token.borrow().as_deref(),
            Some(&self.options.server_url),
        );
        let response = self
            .transport
            .send(&request, self.options.request_timeout, None)
            .await
            .map_err(|e| match e {
                TransportError::Network(m) => ReplicationError::Network(m),
                TransportError::Timeout(ms) => {
                    ReplicationError::Network(format!("no response within {ms} ms"))
                }
            })?;
        let json = match response.body {
            ResponseBody::Json(value) => value,
            ResponseBody::Text(text) => Value::String(text),
            ResponseBody::Empty => Value::Null,
        };
        match response.status {
            200..=299 => Ok(json),
            401 | 403 => Err(ReplicationError::Auth(response.status)),
            status => Err(ReplicationError::Http {
                status,
                message: json["error"]["message"]
                    .as_str()
                    .unwrap_or("no details")
                    .to_owned(),
            }),
        }
    }
}

/// A record repair must leave alone: it has a local change the server has
/// not confirmed, or an unsettled conflict the app must resolve.
fn is_held(record: &LocalRecord) -> bool {
    record.has_unsent_change() || record.sync_status == RecordStatus::Conflict
}
