//! What happens after a Rust panic. The release build aborts on panic
//! (`panic = "abort"`): the panic ends in a wasm `unreachable` trap that
//! unwinds no Rust frame, so a `RefCell` may stay borrowed, the futures
//! queue of wasm-bindgen-futures may stay marked "running" (no future would
//! be polled again) and a promise in flight would never settle. Nothing the
//! instance does afterwards can be trusted, so the panic hook:
//!
//! 1. logs the panic once with `console.error` (message and location);
//! 2. marks the module halted: every later call, on every client of this
//!    JS realm, rejects (or throws) `TidesyncError` code `closed` at once,
//!    before it touches any state — checked at each entry by [`check`] and
//!    [`promise`], which answers without the futures queue;
//! 3. rejects every promise the API handed out and has not settled (the
//!    call that panicked included) with the same error.
//!
//! The queued work is in IndexedDB, so a reload (a new instance) resumes it.
//! A trap that is not a panic (running out of memory) does not pass through
//! the hook; see docs/reliability.md.

use crate::api::error::ApiError;
use js_sys::{Function, Promise, Set};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

static HALTED: AtomicBool = AtomicBool::new(false);
static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The `reject` functions of the API's promises still in flight.
    static PENDING: RefCell<Option<Set>> = const { RefCell::new(None) };
}

/// Installs the panic hook (once per instance).
pub fn install() {
    if INSTALLED.swap(true, Ordering::Relaxed) {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        if HALTED.swap(true, Ordering::Relaxed) {
            return;
        }
        web_sys::console::error_2(
            &JsValue::from_str(
                "Tidesync stopped after an internal error (a bug: please report it). Every client in this page now rejects with code \"closed\"; queued work is kept in IndexedDB and resumes after a reload.",
            ),
            &JsValue::from_str(&info.to_string()),
        );
        reject_pending();
    }));
}

/// Whether a panic has halted the module.
pub fn halted() -> bool {
    HALTED.load(Ordering::Relaxed)
}

/// `Err(closed)` once the module is halted: the first line of every
/// synchronous entry point.
pub fn check() -> Result<(), JsValue> {
    if halted() {
        return Err(ApiError::Halted.into());
    }
    Ok(())
}

/// `future_to_promise`, except that the promise rejects `closed` at once
/// when the module is halted, and is rejected by the panic hook if a panic
/// happens while it is pending.
pub fn promise<F>(future: F) -> Promise
where
    F: Future<Output = Result<JsValue, JsValue>> + 'static,
{
    // One copy of the settling code for every method (boxed, not generic).
    settle(Box::pin(future))
}

type Work = Pin<Box<dyn Future<Output = Result<JsValue, JsValue>>>>;

fn settle(work: Work) -> Promise {
    if halted() {
        return Promise::reject(&ApiError::Halted.into());
    }
    let mut parts = None;
    let promise = Promise::new(&mut |resolve, reject| parts = Some((resolve, reject)));
    let Some((resolve, reject)) = parts else {
        return promise;
    };
    with_pending(|set| {
        set.add(&reject);
    });
    wasm_bindgen_futures::spawn_local(async move {
        let result = work.await;
        with_pending(|set| {
            set.delete(&reject);
        });
        let _ = match result {
            Ok(value) => resolve.call1(&JsValue::NULL, &value),
            Err(error) => reject.call1(&JsValue::NULL, &error),
        };
    });
    promise
}

fn with_pending(f: impl FnOnce(&Set)) {
    // `try_`: the hook may run while the set is in use.
    let _ = PENDING.try_with(|pending| {
        if let Ok(mut pending) = pending.try_borrow_mut() {
            f(pending.get_or_insert_with(|| Set::new(&JsValue::UNDEFINED)));
        }
    });
}

fn reject_pending() {
    with_pending(|set| {
        let error: JsValue = ApiError::Halted.into();
        set.for_each(&mut |reject, _, _| {
            if let Some(reject) = reject.dyn_ref::<Function>() {
                let _ = reject.call1(&JsValue::NULL, &error);
            }
        });
        set.clear();
    });
}

/// Test builds only (`--features test-panic`, never in the published
/// package): panics now, or inside a pending API promise when `inTask` is
/// true, so the tests can check what a panic leaves behind.
#[cfg(feature = "test-panic")]
#[wasm_bindgen(js_name = __panicForTest)]
pub fn panic_for_test(in_task: bool) -> Promise {
    install();
    if !in_task {
        panic!("a panic for the test");
    }
    promise(async {
        gloo_timers::future::TimeoutFuture::new(0).await;
        panic!("a panic for the test, inside a task");
    })
}
