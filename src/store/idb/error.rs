//! IndexedDB failures as [`StoreError`]s.

use crate::engine::ports::StoreError;

/// Waits for a write transaction to end, and fails unless it committed:
/// rexie reports an aborted transaction as a result, not an error, and an
/// abort at commit time (no request failed) is the browser refusing to
/// persist the data, which in practice means the storage quota.
pub(super) async fn finish(tx: rexie::Transaction) -> Result<(), StoreError> {
    match tx.done().await.map_err(map_error)? {
        rexie::TransactionResult::Committed => Ok(()),
        rexie::TransactionResult::Aborted => Err(StoreError::Quota(
            "the browser aborted the write at commit (QuotaExceededError): this origin's storage is full".into(),
        )),
    }
}

/// Maps rexie's errors to the store's: quota errors are told apart because
/// the app must react to them (free space, or ask for persistence).
pub fn map_error(error: rexie::Error) -> StoreError {
    let text = format!("{error:?}");
    if text.contains("QuotaExceeded") {
        StoreError::Quota("the browser refused to store more data for this origin".into())
    } else {
        StoreError::Unavailable(text)
    }
}
