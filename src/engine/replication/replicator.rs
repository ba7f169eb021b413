//! The replicator: local writes (record + mutation task in one
//! transaction), the push side of the outbox (batch building and result
//! application, through [`Replica`]), pulls page by page along the exact
//! cursor, conflict resolution, and verify-and-repair.

use crate::engine::credentials::authorize;
use crate::engine::events::{ConflictEvent, Event};
use crate::engine::ports::{
    Clock, ConflictResolver, EventSink, MutationVerdict, PushPlan, RecordChange, RecordStore,
    RecordWrite, Replica, StoreError, Transport, TransportError,
};
use crate::engine::replication::conflict::{changed_fields, resolve, Side, Strategy};
use crate::engine::replication::record::{LocalRecord, RecordStatus, RemoteRecord};
use crate::engine::task::{
    Body, ErrorClass, HttpRequest, HttpResponse, Priority, ResponseBody, Task, TaskError, TaskKind,
};
use crate::engine::time::to_iso;
use serde::Serialize;
use serde_json::{Map, Value};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use tidesync_protocol as protocol;

const CURSOR_KEY: &str = "pullCursor";
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

/// How a conflict ended: the record's new state, and its mutation to push
/// when the result differs from the server's copy.
struct Settlement {
    record: LocalRecord,
    requeue: Option<Task>,
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
    pub async fn open(
        records: R::Records,
        transport: R::Transport,
        clock: R::Clock,
        events: R::Events,
        resolver: R::Resolver,
        options: ReplicationOptions,
    ) -> Result<Self, StoreError> {
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

    // ----- local writes -----

    /// Writes a record locally (creating an id when absent) and queues its
    /// mutation in the same transaction. Returns the record and the task.
    pub async fn put(
        &self,
        entity_type: &str,
        id: Option<String>,
        data: Map<String, Value>,
    ) -> Result<(LocalRecord, Task), ReplicationError> {
        self.check_type(entity_type)?;
        let id = match id {
            Some(id) if id.is_empty() || id.len() > 200 => {
                return Err(ReplicationError::InvalidRecord(
                    "`id` must be 1 to 200 characters".into(),
                ))
            }
            Some(id) => id,
            None => self.clock.unique_id(),
        };
        let existing = self.records.get_record(entity_type, &id).await?;
        self.write(entity_type, id, data, false, existing).await
    }

    /// Deletes a record locally (a tombstone) and queues the delete.
    /// Returns `None` when there is no such live record.
    pub async fn delete(
        &self,
        entity_type: &str,
        id: &str,
    ) -> Result<Option<(LocalRecord, Task)>, ReplicationError> {
        self.check_type(entity_type)?;
        let Some(existing) = self.records.get_record(entity_type, id).await? else {
            return Ok(None);
        };
        if existing.is_deleted {
            return Ok(None);
        }
        let data = existing.data.clone();
        self.write(entity_type, id.to_owned(), data, true, Some(existing))
            .await
            .map(Some)
    }

    async fn write(
        &self,
        entity_type: &str,
        id: String,
        data: Map<String, Value>,
        is_deleted: bool,
        existing: Option<LocalRecord>,
    ) -> Result<(LocalRecord, Task), ReplicationError> {
        let now = self.clock.now();
        let mutation_id = self.clock.unique_id();
        let (version, mut changed) = match &existing {
            Some(e) => (e.version, e.changed_fields.clone()),
            None => (0, Vec::new()),
        };
        let before = existing
            .as_ref()
            .map(|e| e.data.clone())
            .unwrap_or_default();
        changed.extend(changed_fields(&before, &data));
        changed.sort();
        changed.dedup();
        let record = LocalRecord {
            entity_type: entity_type.to_owned(),
            id: id.clone(),
            data,
            version,
            is_deleted,
            sync_status: RecordStatus::Pending,
            updated_at: now,
            pending_mutation_id: Some(mutation_id.clone()),
            changed_fields: changed,
            conflict_remote: None,
            sync_error: None,
        };
        let task = self.mutation_task(&record, mutation_id, now);
        let stored = self.records.write_local(&record, task).await?;
        Ok((record, stored))
    }

    fn mutation_task(&self, record: &LocalRecord, mutation_id: String, now: f64) -> Task {
        let mutation = protocol::Mutation {
            mutation_id: mutation_id.clone(),
            entity_type: record.entity_type.clone(),
            op: if record.is_deleted {
                protocol::Op::Delete
            } else {
                protocol::Op::Upsert
            },
            id: Some(record.id.clone()),
            base_version: Some(record.version),
            data: (!record.is_deleted).then(|| Value::Object(record.data.clone())),
            client_timestamp: Some(to_iso(record.updated_at)),
            changed_fields: None,
        };
        Task {
            id: mutation_task_id(&record.entity_type, &record.id),
            kind: TaskKind::Mutation,
            priority: Priority::Normal,
            seq: 0,
            ordering_key: Some(format!("record:{}:{}", record.entity_type, record.id)),
            request: HttpRequest {
                url: self.url(protocol::PUSH_PATH),
                method: "POST".into(),
                headers: BTreeMap::new(),
                body: serde_json::to_value(&mutation).ok().map(Body::Json),
            },
            revision: 0,
            idempotency_key: mutation_id,
            retry_on_failure: true,
            attempts: 0,
            next_attempt_at: None,
            created_at: now,
            errors: Vec::new(),
            dispatched: false,
            expires_at: None,
            depends_on: None,
        }
    }

    pub async fn get(
        &self,
        entity_type: &str,
        id: &str,
    ) -> Result<Option<LocalRecord>, ReplicationError> {
        self.check_type(entity_type)?;
        Ok(self
            .records
            .get_record(entity_type, id)
            .await?
            .filter(|r| !r.is_deleted))
    }

    /// The live records of a type.
    pub async fn query(&self, entity_type: &str) -> Result<Vec<LocalRecord>, ReplicationError> {
        self.check_type(entity_type)?;
        let mut records: Vec<LocalRecord> = self
            .records
            .records_of(entity_type)
            .await?
            .into_iter()
            .filter(|r| !r.is_deleted)
            .collect();
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    // ----- conflicts -----

    /// Settles a local change that met a newer server copy.
    async fn settle_conflict(&self, local: LocalRecord, remote: RemoteRecord) -> Settlement {
        let now = self.clock.now();
        let local_view = local.view();
        let remote_view = remote.clone().into_local(&local.entity_type).view();
        let outcome = if self.resolver.is_set() {
            match self
                .resolver
                .resolve(&local.entity_type, &local_view, &remote_view)
                .await
            {
                Ok(data) => {
                    let push = data != remote.data || remote.is_deleted;
                    Ok((data, false, push, "callback"))
                }
                Err(message) => Err(message),
            }
        } else {
            let o = resolve(
                self.options.strategy,
                &Side {
                    data: &local.data,
                    is_deleted: local.is_deleted,
                    updated_at: local.updated_at,
                },
                &Side {
                    data: &remote.data,
                    is_deleted: remote.is_deleted,
                    updated_at: remote.changed_at,
                },
                &local.changed_fields,
            );
            Ok((o.data, o.is_deleted, o.push, o.winner))
        };
        let entity_type = local.entity_type.clone();
        let id = local.id.clone();
        match outcome {
            Ok((data, is_deleted, push, winner)) => {
                let settlement = if push {
                    let mutation_id = self.clock.unique_id();
                    // The edit time is when the user edited, not when the
                    // conflict was settled: a result made of both sides is
                    // as recent as the newer of them.
                    let edited_at = if winner == "client" {
                        local.updated_at
                    } else {
                        local.updated_at.max(remote.changed_at)
                    };
                    let record = LocalRecord {
                        data,
                        is_deleted,
                        version: remote.version,
                        sync_status: RecordStatus::Pending,
                        updated_at: edited_at,
                        pending_mutation_id: Some(mutation_id.clone()),
                        conflict_remote: None,
                        sync_error: None,
                        ..local
                    };
                    let task = self.mutation_task(&record, mutation_id, now);
                    Settlement {
                        record,
                        requeue: Some(task),
                    }
                } else {
                    let mut record = remote.clone().into_local(&entity_type);
                    record.data = data;
                    record.is_deleted = is_deleted;
                    Settlement {
                        record,
                        requeue: None,
                    }
                };
                self.events.emit(Event::Conflict(ConflictEvent {
                    entity_type,
                    id,
                    local: local_view,
                    remote: remote_view,
                    resolved: settlement.record.view(),
                    outcome: winner.to_owned(),
                }));
                settlement
            }
            Err(message) => {
                let record = LocalRecord {
                    version: remote.version,
                    sync_status: RecordStatus::Conflict,
                    pending_mutation_id: None,
                    conflict_remote: Some(remote.data.clone()),
                    sync_error: Some(format!("onConflict failed: {message}")),
                    ..local
                };
                self.events.emit(Event::Conflict(ConflictEvent {
                    entity_type,
                    id,
                    local: local_view,
                    remote: remote_view,
                    resolved: record.view(),
                    outcome: "unresolved".to_owned(),
                }));
                Settlement {
                    record,
                    requeue: None,
                }
            }
        }
    }

    // ----- pull -----

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

    /// One page of changes after `cursor`.
    async fn pull_page(
        &self,
        cursor: Option<String>,
        entity_types: Vec<String>,
    ) -> Result<protocol::PullResponse, ReplicationError> {
        let request = protocol::PullRequest {
            cursor,
            entity_types,
            limit: Some(self.options.page_size),
            last_sync_timestamp: None,
        };
        let body = serde_json::to_value(&request)
            .map_err(|e| ReplicationError::InvalidRecord(e.to_string()))?;
        let json = self.call(protocol::PULL_PATH, body).await?;
        serde_json::from_value(json).map_err(|e| ReplicationError::Http {
            status: 200,
            message: format!("unreadable pull page: {e}"),
        })
    }

    /// Pulls every change after the stored cursor, page by page; each page is
    /// applied with its cursor in one transaction, so an interrupted pull
    /// resumes where it stopped. Returns the counts and the tasks queued by
    /// conflict resolution (for the outbox's schedule).
    pub async fn pull(
        &self,
        mut progress: impl FnMut(usize),
    ) -> Result<(PullReport, Vec<Task>), ReplicationError> {
        if self.pulling.replace(true) {
            return Err(ReplicationError::Busy);
        }
        let result = self.pull_pages(&mut progress).await;
        self.pulling.set(false);
        let (report, _) = result.as_ref().map_err(Clone::clone)?;
        self.events.emit(Event::PullComplete {
            pulled: report.pulled,
            pages: report.pages,
            conflicts: report.conflicts,
        });
        result
    }

    async fn pull_pages(
        &self,
        progress: &mut impl FnMut(usize),
    ) -> Result<(PullReport, Vec<Task>), ReplicationError> {
        let mut report = PullReport::default();
        let mut requeued = Vec::new();
        let mut cursor = self
            .records
            .get_meta_text(CURSOR_KEY)
            .await?
            .filter(|c| !c.is_empty());
        loop {
            let page = self
                .pull_page(cursor.clone(), self.options.entity_types.clone())
                .await?;
            let (count, conflicts, tasks) =
                self.apply_page(&page.data, page.cursor.clone()).await?;
            report.pulled += count;
            report.pages += 1;
            report.conflicts += conflicts;
            requeued.extend(tasks);
            progress(report.pulled);
            let advanced = page.cursor.is_some() && page.cursor != cursor;
            cursor = page.cursor.or(cursor);
            if !page.has_more || !advanced {
                break;
            }
        }
        Ok((report, requeued))
    }

    /// Applies one page of server records (and the new cursor, if given)
    /// in one transaction. Returns (records, conflicts, tasks queued).
    ///
    /// A record with an unsent change meets a newer server copy as a
    /// conflict, settled here only while its change was never dispatched.
    /// Once a push of it began, the server may hold it already: the push's
    /// answer (which carries the server's copy) settles it instead, so the
    /// same edit is never pushed twice under two mutation ids.
    async fn apply_page(
        &self,
        data: &BTreeMap<String, Vec<Value>>,
        cursor: Option<String>,
    ) -> Result<(usize, usize, Vec<Task>), ReplicationError> {
        let mut remotes = Vec::new();
        for (entity_type, records) in data {
            for (index, value) in records.iter().enumerate() {
                // A malformed record stops the page before anything of it
                // is applied, so the cursor never moves past it.
                let remote = RemoteRecord::from_json(value).ok_or_else(|| {
                    ReplicationError::Http {
                        status: 200,
                        message: format!(
                            "pull page: record {index} of {entity_type:?} has no string `id` or no integer `version`; nothing of this page was applied"
                        ),
                    }
                })?;
                remotes.push((entity_type.clone(), remote));
            }
        }
        let keys: Vec<(String, String)> = remotes
            .iter()
            .map(|(t, r)| (t.clone(), r.id.clone()))
            .collect();
        let locals = self.records.get_records(&keys).await?;
        let held_keys: Vec<(String, String)> = keys
            .iter()
            .zip(&locals)
            .filter(|(_, local)| local.as_ref().is_some_and(|l| l.has_unsent_change()))
            .map(|(key, _)| key.clone())
            .collect();
        let chains: HashMap<(String, String), Vec<Task>> = held_keys
            .iter()
            .cloned()
            .zip(self.records.mutation_chains(&held_keys).await?)
            .collect();
        let mut change = RecordChange {
            cursor,
            ..Default::default()
        };
        let mut count = 0;
        let mut conflicts = 0;
        for (((entity_type, remote), local), key) in remotes.into_iter().zip(locals).zip(keys) {
            count += 1;
            let Some(local) = local else {
                change
                    .writes
                    .push(RecordWrite::plain(remote.into_local(&entity_type), None));
                continue;
            };
            let expect = local.pending_mutation_id.clone();
            if !is_held(&local) {
                if remote.version >= local.version {
                    change
                        .writes
                        .push(RecordWrite::plain(remote.into_local(&entity_type), expect));
                }
                continue;
            }
            if remote.version <= local.version {
                continue; // the copy our change is based on: nothing new
            }
            if local.sync_status == RecordStatus::Conflict {
                // Still unsettled by the app: keep the newest server side.
                let mut kept = local;
                kept.version = remote.version;
                kept.conflict_remote = Some(remote.data);
                change.writes.push(RecordWrite::plain(kept, expect));
                continue;
            }
            let chain = chains.get(&key).map(Vec::as_slice).unwrap_or_default();
            if chain.iter().any(|t| t.dispatched) {
                continue; // the push's answer settles it
            }
            conflicts += 1;
            let settled = self.settle_conflict(local, remote).await;
            change.writes.push(RecordWrite {
                record: settled.record,
                expect_pending: expect,
                cancel: chain.last().map(|t| (t.id.clone(), t.revision)),
                register: settled.requeue,
            });
        }
        let tasks = self.records.apply(change).await?;
        Ok((count, conflicts, tasks))
    }

    // ----- verify -----

    /// Compares count and checksum per entity type with the server and
    /// repairs what differs by re-reading exactly the missing or stale
    /// records. Records with unsent local changes or an unsettled
    /// conflict are left alone.
    pub async fn verify(&self) -> Result<Vec<VerifyReport>, ReplicationError> {
        let body = serde_json::json!({ "entityTypes": self.options.entity_types });
        let json = self.call(protocol::VERIFY_PATH, body).await?;
        let answer: protocol::VerifyResponse =
            serde_json::from_value(json).map_err(|e| ReplicationError::Http {
                status: 200,
                message: format!("unreadable verify answer: {e}"),
            })?;
        let mut reports = Vec::new();
        for entity_type in &self.options.entity_types {
            let server = answer
                .data
                .get(entity_type)
                .cloned()
                .unwrap_or(protocol::TypeSummary {
                    count: 0,
                    checksum: protocol::record_checksum(std::iter::empty()),
                });
            let locals = self.records.records_of(entity_type).await?;
            let (count, checksum) = local_summary(&locals);
            let mut report = VerifyReport {
                entity_type: entity_type.clone(),
                local_count: count,
                server_count: server.count,
                local_checksum: checksum.clone(),
                server_checksum: server.checksum.clone(),
                repaired: 0,
            };
            if checksum != server.checksum || count != server.count {
                report.repaired = self.repair(entity_type, locals).await?;
            }
            reports.push(report);
        }
        Ok(reports)
    }

    async fn repair(
        &self,
        entity_type: &str,
        locals: Vec<LocalRecord>,
    ) -> Result<usize, ReplicationError> {
        let mut local_by_id: HashMap<String, LocalRecord> =
            locals.into_iter().map(|r| (r.id.clone(), r)).collect();
        let mut seen = HashSet::new();
        let mut repaired = 0;
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .pull_page(cursor.clone(), vec![entity_type.to_owned()])
                .await?;
            let mut change = RecordChange::default();
            for value in page.data.get(entity_type).into_iter().flatten() {
                let Some(remote) = RemoteRecord::from_json(value) else {
                    continue;
                };
                seen.insert(remote.id.clone());
                let stale = match local_by_id.get(&remote.id) {
                    None => !remote.is_deleted,
                    // Unsent changes, and conflicts waiting for the app:
                    // never overwritten here (both sides must survive).
                    Some(local) if is_held(local) => false,
                    Some(local) => {
                        local.version != remote.version || local.is_deleted != remote.is_deleted
                    }
                };
                if stale {
                    repaired += 1;
                    let expect = local_by_id
                        .get(&remote.id)
                        .and_then(|l| l.pending_mutation_id.clone());
                    change
                        .writes
                        .push(RecordWrite::plain(remote.into_local(entity_type), expect));
                }
            }
            self.records.apply(change).await?;
            let advanced = page.cursor.is_some() && page.cursor != cursor;
            cursor = page.cursor.or(cursor);
            if !page.has_more || !advanced {
                break;
            }
        }
        // Synced local records the server does not know at all.
        let mut change = RecordChange::default();
        for (id, local) in local_by_id.drain() {
            if !seen.contains(&id) && !is_held(&local) && local.version > 0 {
                repaired += 1;
                change.delete_records.push((entity_type.to_owned(), id));
            }
        }
        self.records.apply(change).await?;
        Ok(repaired)
    }

    // ----- push results -----

    async fn apply_results(
        &self,
        tasks: &[Task],
        response: &HttpResponse,
    ) -> Result<(Vec<MutationVerdict>, Vec<Task>), StoreError> {
        let now = self.clock.now();
        let parsed: Option<protocol::PushResponse> = match &response.body {
            ResponseBody::Json(value) => serde_json::from_value(value.clone()).ok(),
            _ => None,
        };
        let Some(parsed) = parsed else {
            // The server may have applied every mutation: replay them (their
            // ids make that harmless) without spending the retry budget.
            let error = TaskError {
                class: ErrorClass::Unconfirmed,
                message: "the push answer was not a readable Tidesync push response; the mutations are sent again and confirmed by their ids".into(),
                status: Some(response.status),
                at: now,
            };
            return Ok((vec![MutationVerdict::Retry(error); tasks.len()], Vec::new()));
        };
        let results: HashMap<String, protocol::MutationResult> = parsed
            .results
            .into_iter()
            .filter_map(|r| r.mutation_id.clone().map(|id| (id, r)))
            .collect();
        let mutations: Vec<Option<protocol::Mutation>> = tasks.iter().map(mutation_of).collect();
        let keys: Vec<(String, String)> = mutations
            .iter()
            .map(|m| {
                m.as_ref().map_or((String::new(), String::new()), |m| {
                    (m.entity_type.clone(), m.id.clone().unwrap_or_default())
                })
            })
            .collect();
        let locals = self.records.get_records(&keys).await?;
        let mut verdicts = Vec::with_capacity(tasks.len());
        let mut change = RecordChange::default();
        for (mutation, local) in mutations.into_iter().zip(locals) {
            let Some(mutation) = mutation else {
                verdicts.push(MutationVerdict::Rejected(TaskError {
                    class: ErrorClass::Validation,
                    message: "the task does not hold a readable mutation".into(),
                    status: None,
                    at: now,
                }));
                continue;
            };
            let Some(result) = results.get(&mutation.mutation_id) else {
                verdicts.push(MutationVerdict::Retry(TaskError {
                    class: ErrorClass::Retryable,
                    message: format!(
                        "the push answer has no result for mutation {}",
                        mutation.mutation_id
                    ),
                    status: Some(response.status),
                    at: now,
                }));
                continue;
            };
            let remote = result.record.as_ref().and_then(RemoteRecord::from_json);
            let expect = local.as_ref().and_then(|l| l.pending_mutation_id.clone());
            let ours = expect.as_deref() == Some(mutation.mutation_id.as_str());
            match result.status {
                protocol::MutationStatus::Rejected => {
                    let message = result.error.as_ref().map_or("rejected".to_owned(), |e| {
                        format!("{}: {}", e.code, e.message)
                    });
                    if let (Some(mut local), true) = (local, ours) {
                        local.sync_status = RecordStatus::Rejected;
                        local.sync_error = Some(message.clone());
                        local.pending_mutation_id = None;
                        change.writes.push(RecordWrite::plain(local, expect));
                    }
                    verdicts.push(MutationVerdict::Rejected(TaskError {
                        class: ErrorClass::Validation,
                        message,
                        status: Some(response.status),
                        at: now,
                    }));
                }
                protocol::MutationStatus::Conflict if ours && remote.is_some() => {
                    let (Some(local), Some(remote)) = (local, remote) else {
                        continue;
                    };
                    // The server settled it by its strategy; the client's
                    // strategy (or callback) has the last word locally.
                    if remote.data == local.data && remote.is_deleted == local.is_deleted {
                        change.writes.push(RecordWrite::plain(
                            remote.into_local(&mutation.entity_type),
                            expect,
                        ));
                    } else {
                        let settled = self.settle_conflict(local, remote).await;
                        change.writes.push(RecordWrite {
                            record: settled.record,
                            expect_pending: expect,
                            cancel: None,
                            register: settled.requeue,
                        });
                    }
                    verdicts.push(MutationVerdict::Done(result_json(result)));
                }
                status => {
                    // Applied, duplicate, or a conflict for a change since
                    // superseded (or a dead letter the app sent again).
                    if let (Some(mut local), Some(remote)) = (local, remote) {
                        if ours || !is_held(&local) {
                            // Nothing unsent locally: the copy is the server's
                            // (unless a pull brought a newer one already).
                            if ours || remote.version >= local.version {
                                change.writes.push(RecordWrite::plain(
                                    remote.into_local(&mutation.entity_type),
                                    expect,
                                ));
                            }
                        } else if status == protocol::MutationStatus::Applied
                            || (status == protocol::MutationStatus::Duplicate
                                && holds_mutation(&remote, &mutation))
                        {
                            // Our own earlier change is on the server at this
                            // version, and the newer one was made on top of
                            // it: it builds on that version. A duplicate's
                            // answer carries the current record, which may
                            // hold another device's edit made since: only
                            // when it still is our change does the newer one
                            // build on it; otherwise it meets that edit as a
                            // conflict instead of overwriting it blindly.
                            local.version = local.version.max(remote.version);
                            change.writes.push(RecordWrite::plain(local, expect));
                        }
                    }
                    verdicts.push(MutationVerdict::Done(result_json(result)));
                }
            }
        }
        let requeued = self.records.apply(change).await?;
        Ok((verdicts, requeued))
    }
}

/// A mutation's result as its `sync:complete` listeners see it.
fn result_json(result: &protocol::MutationResult) -> Value {
    serde_json::to_value(result).unwrap_or(Value::Null)
}

/// Whether the server's copy is exactly what a mutation wrote.
fn holds_mutation(remote: &RemoteRecord, mutation: &protocol::Mutation) -> bool {
    match mutation.op {
        protocol::Op::Delete => remote.is_deleted,
        protocol::Op::Upsert => {
            !remote.is_deleted
                && mutation
                    .data
                    .as_ref()
                    .and_then(Value::as_object)
                    .is_some_and(|data| *data == remote.data)
        }
    }
}

/// A record repair must leave alone: it has a local change the server has
/// not confirmed, or an unsettled conflict the app must resolve.
fn is_held(record: &LocalRecord) -> bool {
    record.has_unsent_change() || record.sync_status == RecordStatus::Conflict
}

/// Count and checksum of the synced live records, as the server computes
/// them (records never pushed have no server version yet).
pub fn local_summary(records: &[LocalRecord]) -> (u64, String) {
    let live: Vec<&LocalRecord> = records
        .iter()
        .filter(|r| !r.is_deleted && r.version > 0)
        .collect();
    let checksum = protocol::record_checksum(live.iter().map(|r| (r.id.as_str(), r.version)));
    (live.len() as u64, checksum)
}

impl<R: ReplicaPorts> Replica for Replicator<R> {
    fn batch_size(&self) -> usize {
        self.options.batch_size
    }

    async fn prepare_push(&self, tasks: Vec<Task>) -> Result<PushPlan, StoreError> {
        // A mutation never dispatched is frozen now, on the version its
        // record is based on at this moment: the acknowledged versions of
        // its own earlier mutations (a record has at most one undispatched
        // mutation, and it runs after the others), or the server version a
        // settled conflict put it on. A dispatched one goes out exactly as
        // it went before, since the server may have applied it.
        let fresh: Vec<(String, String)> = tasks
            .iter()
            .filter(|t| !t.dispatched)
            .filter_map(mutation_of)
            .map(|m| (m.entity_type, m.id.unwrap_or_default()))
            .collect();
        let mut locals = self.records.get_records(&fresh).await?.into_iter();
        let mut frozen = Vec::with_capacity(tasks.len());
        for mut task in tasks {
            if !task.dispatched {
                if let Some(mut mutation) = mutation_of(&task) {
                    if let Some(local) = locals.next().flatten() {
                        mutation.base_version = Some(local.version);
                        // Lets a `merge` conflict on the server keep the
                        // fields this client did not touch.
                        if local.version > 0
                            && local.pending_mutation_id.as_deref()
                                == Some(mutation.mutation_id.as_str())
                        {
                            mutation.changed_fields = Some(local.changed_fields.clone());
                        }
                    }
                    let body = serde_json::to_value(&mutation)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    task.request.body = Some(Body::Json(body));
                }
                task.dispatched = true;
            }
            frozen.push(task);
        }
        let still_queued = self.records.mark_dispatched(&frozen).await?;
        let mut tasks = Vec::with_capacity(frozen.len());
        let mut dropped = Vec::new();
        for (task, queued) in frozen.into_iter().zip(still_queued) {
            if queued {
                tasks.push(task);
            } else {
                dropped.push(task);
            }
        }
        let push = protocol::PushRequest {
            client_id: self.client_id.clone(),
            mutations: tasks.iter().filter_map(mutation_of).collect(),
        };
        let body = serde_json::to_value(&push).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // The outbox adds the bearer token, as for every request to the server.
        Ok(PushPlan {
            request: HttpRequest {
                url: self.url(protocol::PUSH_PATH),
                method: "POST".into(),
                headers: BTreeMap::new(),
                body: Some(Body::Json(body)),
            },
            tasks,
            dropped,
        })
    }

    async fn apply_push(
        &self,
        tasks: &[Task],
        response: &HttpResponse,
    ) -> Result<(Vec<MutationVerdict>, Vec<Task>), StoreError> {
        self.apply_results(tasks, response).await
    }

    async fn abandon(&self, task: &Task, error: &TaskError) -> Result<(), StoreError> {
        let Some(mutation) = mutation_of(task) else {
            return Ok(());
        };
        let id = mutation.id.unwrap_or_default();
        let Some(mut local) = self.records.get_record(&mutation.entity_type, &id).await? else {
            return Ok(());
        };
        // Only the record's latest change: an older mutation given up on
        // says nothing about a newer one still queued.
        if local.pending_mutation_id.as_deref() != Some(mutation.mutation_id.as_str()) {
            return Ok(());
        }
        let expect = local.pending_mutation_id.take();
        local.sync_status = RecordStatus::Rejected;
        local.sync_error = Some(error.message.clone());
        self.records
            .apply(RecordChange {
                writes: vec![RecordWrite::plain(local, expect)],
                ..Default::default()
            })
            .await?;
        Ok(())
    }
}
