//! The local copy of a server record, as stored in the `records` object
//! store (key `[entityType, id]`), and the view the application sees.

use crate::engine::time::{iso, Millis};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a local record stands with respect to the server.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RecordStatus {
    /// Changed locally; a mutation is queued.
    Pending,
    /// Equal to the server's version.
    Synced,
    /// A conflict the app must settle (its callback failed); both sides kept.
    Conflict,
    /// The server rejected the change; see `syncError`.
    Rejected,
}

/// A record as stored locally.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocalRecord {
    pub entity_type: String,
    pub id: String,
    /// The application's fields.
    pub data: Map<String, Value>,
    /// The last server version this copy is based on (0: never synced).
    pub version: i64,
    pub is_deleted: bool,
    pub sync_status: RecordStatus,
    /// When the record last changed (locally, or on the server for pulled copies).
    #[serde(with = "iso")]
    pub updated_at: Millis,
    /// The mutation that carries the latest local change, while unsent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_mutation_id: Option<String>,
    /// Fields changed locally since the last sync (for `merge`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_fields: Vec<String>,
    /// The server's side of an unsettled conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_remote: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_error: Option<String>,
}

impl LocalRecord {
    /// Whether the record has a local change the server has not confirmed.
    pub fn has_unsent_change(&self) -> bool {
        self.pending_mutation_id.is_some()
    }

    /// The application's view: its fields plus `id`, `version`, `updatedAt`,
    /// `syncStatus` (and `isDeleted` when true).
    pub fn view(&self) -> Value {
        let mut object = self.data.clone();
        object.insert("id".into(), Value::String(self.id.clone()));
        object.insert("version".into(), Value::from(self.version));
        object.insert(
            "updatedAt".into(),
            Value::String(crate::engine::time::to_iso(self.updated_at)),
        );
        object.insert(
            "syncStatus".into(),
            serde_json::to_value(self.sync_status).unwrap_or(Value::Null),
        );
        if self.is_deleted {
            object.insert("isDeleted".into(), Value::Bool(true));
        }
        if let Some(error) = &self.sync_error {
            object.insert("syncError".into(), Value::String(error.clone()));
        }
        Value::Object(object)
    }
}

/// A record received from the server (flat JSON: fields plus the reserved
/// `id`, `version`, `updatedAt`, `isDeleted`).
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteRecord {
    pub id: String,
    pub version: i64,
    /// When the server stored this version.
    pub updated_at: Millis,
    /// When the edit that made this version was made (`changedAt`; servers
    /// that do not send it: `updatedAt`). Last-write-wins compares edit
    /// times with edit times.
    pub changed_at: Millis,
    pub is_deleted: bool,
    pub data: Map<String, Value>,
}

impl RemoteRecord {
    /// Reads a server record; `None` when it lacks an id or a version.
    pub fn from_json(value: &Value) -> Option<Self> {
        let object = value.as_object()?;
        let id = object.get("id")?.as_str()?.to_owned();
        let version = object.get("version")?.as_i64()?;
        let updated_at = object
            .get("updatedAt")
            .and_then(Value::as_str)
            .and_then(crate::engine::time::from_iso)
            .unwrap_or(0.0);
        let changed_at = object
            .get("changedAt")
            .and_then(Value::as_str)
            .and_then(crate::engine::time::from_iso)
            .unwrap_or(updated_at);
        let is_deleted = object
            .get("isDeleted")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let data = object
            .iter()
            .filter(|(k, _)| {
                !tidesync_protocol::RESERVED_FIELDS.contains(&k.as_str())
                    && k.as_str() != "changedAt"
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Some(Self {
            id,
            version,
            updated_at,
            changed_at,
            is_deleted,
            data,
        })
    }

    /// The local copy of this server record, in sync.
    pub fn into_local(self, entity_type: &str) -> LocalRecord {
        LocalRecord {
            entity_type: entity_type.to_owned(),
            id: self.id,
            data: self.data,
            version: self.version,
            is_deleted: self.is_deleted,
            sync_status: RecordStatus::Synced,
            updated_at: self.updated_at,
            pending_mutation_id: None,
            changed_fields: Vec::new(),
            conflict_remote: None,
            sync_error: None,
        }
    }
}
