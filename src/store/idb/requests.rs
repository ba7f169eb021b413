//! Transactions and their requests: thin typed wrappers over the `idb`
//! crate's, and issuing the requests of one transaction together.

use idb::KeyRange;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use wasm_bindgen::JsValue;

/// A transaction of the store's connection (see [`IdbStore::transaction`](super::IdbStore)).
pub(super) struct Tx(pub(super) idb::Transaction);

impl Tx {
    pub(super) fn store(&self, name: &str) -> Result<ObjectStore, idb::Error> {
        self.0.object_store(name).map(ObjectStore)
    }
}

/// One object store inside a transaction. Each method places its request
/// when its future is first polled, and answers with the request's result.
pub(super) struct ObjectStore(idb::ObjectStore);

impl ObjectStore {
    pub(super) async fn get(&self, key: JsValue) -> Result<Option<JsValue>, idb::Error> {
        self.0.get(key)?.await
    }

    pub(super) async fn key_exists(&self, key: JsValue) -> Result<bool, idb::Error> {
        Ok(self.0.get_key(key)?.await?.is_some())
    }

    pub(super) async fn get_all(
        &self,
        range: Option<KeyRange>,
        limit: Option<u32>,
    ) -> Result<Vec<JsValue>, idb::Error> {
        self.0.get_all(range.map(Into::into), limit)?.await
    }

    pub(super) async fn get_all_keys(
        &self,
        range: Option<KeyRange>,
        limit: Option<u32>,
    ) -> Result<Vec<JsValue>, idb::Error> {
        self.0.get_all_keys(range.map(Into::into), limit)?.await
    }

    /// Every value of an index within a key range.
    pub(super) async fn index_get_all(
        &self,
        index: &str,
        range: KeyRange,
    ) -> Result<Vec<JsValue>, idb::Error> {
        self.0
            .index(index)?
            .get_all(Some(range.into()), None)?
            .await
    }

    pub(super) async fn put(
        &self,
        value: &JsValue,
        key: Option<&JsValue>,
    ) -> Result<(), idb::Error> {
        self.0.put(value, key)?.await.map(|_| ())
    }

    /// Places every put at once and waits for the last (IndexedDB answers a
    /// transaction's requests in order; a failed one aborts the transaction,
    /// which [`finish`](super::error::finish) reports).
    pub(super) async fn put_all(
        &self,
        values: impl Iterator<Item = (JsValue, Option<JsValue>)>,
    ) -> Result<(), idb::Error> {
        let mut last = None;
        for (value, key) in values {
            last = Some(self.0.put(&value, key.as_ref())?);
        }
        match last {
            Some(request) => request.await.map(|_| ()),
            None => Ok(()),
        }
    }

    pub(super) async fn delete(&self, key: JsValue) -> Result<(), idb::Error> {
        self.0.delete(key)?.await
    }

    pub(super) async fn count(&self, range: Option<KeyRange>) -> Result<u32, idb::Error> {
        self.0.count(range.map(Into::into))?.await
    }
}

/// Runs requests of one transaction together: the first poll issues every
/// request, in order (a request is placed when its future is first
/// polled), so the transaction never waits on a request not yet placed even
/// if this future is polled late. IndexedDB answers a transaction's
/// requests in the order they were placed, so later polls resume at the
/// first unanswered one. Lighter than `futures`' joins, which each bring a
/// queue of their own into the wasm.
pub(super) async fn issue_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    let mut first_unanswered = 0;
    let mut issued = false;
    std::future::poll_fn(|cx| {
        let first_pass = !std::mem::replace(&mut issued, true);
        for (index, future) in pending.iter_mut().enumerate().skip(first_unanswered) {
            if outputs[index].is_some() {
                continue;
            }
            match future.as_mut().poll(cx) {
                Poll::Ready(output) => outputs[index] = Some(output),
                // Every request is placed by the first pass; after it, stop at
                // the first one still waiting (the rest answer after it).
                Poll::Pending if !first_pass => break,
                Poll::Pending => {}
            }
        }
        while first_unanswered < outputs.len() && outputs[first_unanswered].is_some() {
            first_unanswered += 1;
        }
        if first_unanswered == outputs.len() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// [`issue_all`] for fallible requests: the first error, or every output.
pub(super) async fn try_issue_all<T, E, F: Future<Output = Result<T, E>>>(
    futures: impl IntoIterator<Item = F>,
) -> Result<Vec<T>, E> {
    issue_all(futures).await.into_iter().collect()
}
