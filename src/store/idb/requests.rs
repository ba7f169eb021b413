//! Issuing the requests of one transaction together.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// Runs requests of one transaction together: the first poll issues every
/// request, in order (rexie places a request when its future is first
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
