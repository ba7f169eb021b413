//! Pulls: page by page along the exact cursor, each page applied with
//! its cursor in one transaction.

use super::{is_held, PullReport, ReplicaPorts, ReplicationError, Replicator};
use crate::engine::events::Event;
use crate::engine::ports::{EventSink, RecordChange, RecordStore, RecordWrite, PULL_CURSOR_KEY};
use crate::engine::replication::record::{RecordStatus, RemoteRecord};
use crate::engine::task::Task;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use tidesync_protocol as protocol;

impl<R: ReplicaPorts> Replicator<R> {
    /// One page of changes after `cursor`.
    pub(super) async fn pull_page(
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
            .get_meta_text(PULL_CURSOR_KEY)
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
}
