//! Verify and repair: compare count and checksum per entity type with the
//! server and re-read exactly the missing or stale records.

use super::{is_held, ReplicaPorts, ReplicationError, Replicator, VerifyReport};
use crate::engine::ports::{RecordChange, RecordStore, RecordWrite};
use crate::engine::replication::record::{LocalRecord, RemoteRecord};
use std::collections::{HashMap, HashSet};
use tidesync_protocol as protocol;

impl<R: ReplicaPorts> Replicator<R> {
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
