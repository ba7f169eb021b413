//! IndexedDB failures as [`StoreError`]s, for people: the browser's
//! `DOMException` name and message (`InvalidStateError: … The database
//! connection is closing.`), never a Rust debug dump. Quota errors are told
//! apart by the exception's name, because the app must react to them (free
//! space, or ask for persistence); every other failure says what it was.

use super::requests::Tx;
use crate::engine::ports::StoreError;
use wasm_bindgen::JsCast;
use web_sys::DomException;

/// The name browsers give a write refused for lack of space.
const QUOTA_EXCEEDED: &str = "QuotaExceededError";
/// The name of the error a closed (or closing) connection answers with.
pub(super) const INVALID_STATE: &str = "InvalidStateError";

/// Maps an `idb` error to the store's.
pub fn map_error(error: idb::Error) -> StoreError {
    match exception(&error) {
        Some(exception) => from_exception(&exception, ""),
        None => StoreError::Unavailable(error.to_string()),
    }
}

/// The name of the `DOMException` inside an error, if there is one.
pub(super) fn exception_name(error: &idb::Error) -> Option<String> {
    exception(error).map(|e| e.name())
}

/// A `DOMException` as a store error: `storage-quota` only for
/// `QuotaExceededError`.
fn from_exception(exception: &DomException, context: &str) -> StoreError {
    let name = exception.name();
    let text = format!("{context}{name}: {}", exception.message());
    if name == QUOTA_EXCEEDED {
        StoreError::Quota(text)
    } else {
        StoreError::Unavailable(text)
    }
}

/// The `DOMException` an `idb` error carries: request and transaction
/// failures carry it directly, a call the browser refused (a transaction on
/// a closing connection, a put of a value it cannot clone) as the thrown
/// value.
fn exception(error: &idb::Error) -> Option<DomException> {
    use idb::Error as E;
    let thrown = match error {
        E::DomException(exception) => return Some(exception.clone()),
        E::AddFailed(v)
        | E::ClearFailed(v)
        | E::CountFailed(v)
        | E::DeleteFailed(v)
        | E::GetAllFailed(v)
        | E::GetAllKeysFailed(v)
        | E::GetFailed(v)
        | E::GetKeyFailed(v)
        | E::IndexedDbDeleteFailed(v)
        | E::IndexedDbOpenFailed(v)
        | E::IndexNotFound(v)
        | E::KeyRangeCreateFailed(v)
        | E::ObjectStoreNotFound(v)
        | E::TransactionOpenFailed(v)
        | E::TransactionCommitError(v)
        | E::TransactionAbortError(v)
        | E::UpdateFailed(v) => v,
        _ => return None,
    };
    thrown.dyn_ref::<DomException>().cloned()
}

/// Waits for a write transaction to end, and fails unless it committed,
/// with the reason the browser gave for the abort (`transaction.error`):
/// `QuotaExceededError` when it refused to persist the data for lack of
/// space, `AbortError` when the connection was closed under it (the
/// database deleted, the origin's data cleared), and so on.
pub(super) async fn finish(tx: Tx) -> Result<(), StoreError> {
    // The future consumes the transaction: keep a handle to read its error.
    let names = tx.0.store_names();
    let handle = names
        .first()
        .and_then(|name| tx.0.object_store(name).ok())
        .map(|store| store.transaction());
    let reason = || handle.as_ref().and_then(|t| t.error());
    match tx.0.await {
        Ok(idb::TransactionResult::Committed) => Ok(()),
        Ok(idb::TransactionResult::Aborted) => Err(aborted(reason())),
        Err(error) => match exception(&error).or_else(reason) {
            Some(exception) => Err(from_exception(&exception, "the write failed: ")),
            None => Err(StoreError::Unavailable(format!(
                "the write failed: {error}"
            ))),
        },
    }
}

/// What an aborted write reports.
fn aborted(reason: Option<DomException>) -> StoreError {
    match reason {
        Some(exception) => from_exception(
            &exception,
            "the browser aborted the write, nothing of it was kept: ",
        ),
        None => StoreError::Unavailable(
            "the browser aborted the write without giving a reason; nothing of it was kept".into(),
        ),
    }
}
