//! The flush lock: the Web Locks API (`navigator.locks`), so one tab or
//! worker flushes a database at a time, with an in-process async mutex
//! where the API is missing. Web Locks are released by the browser when a
//! tab closes or a worker dies, so a dead holder never blocks the others.

use crate::engine::ports::Locks;
use crate::platform::global;
use futures::lock::{Mutex, OwnedMutexGuard};
use js_sys::{Function, Promise};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

thread_local! {
    static LOCAL_LOCKS: RefCell<HashMap<String, Arc<Mutex<()>>>> = RefCell::new(HashMap::new());
}

pub struct FlushLock {
    name: String,
}

impl FlushLock {
    /// The lock of one database (`tidesync:<name>:flush`).
    pub fn new(database: &str) -> Self {
        Self {
            name: format!("{database}:flush"),
        }
    }

    /// Another lock of the same database, by purpose: the tab or worker
    /// holding `tidesync:<name>:live` runs the database's live connection.
    pub fn for_purpose(database: &str, purpose: &str) -> Self {
        Self {
            name: format!("{database}:{purpose}"),
        }
    }

    fn web_locks() -> Option<JsValue> {
        let locks = global::prop(&global::get("navigator"), "locks");
        (!locks.is_undefined() && !locks.is_null()).then_some(locks)
    }
}

/// Held while a flush runs; dropping it releases the lock.
pub enum FlushLockGuard {
    Web(Function),
    Local(#[allow(dead_code)] OwnedMutexGuard<()>),
    None,
}

impl Drop for FlushLockGuard {
    fn drop(&mut self) {
        if let FlushLockGuard::Web(release) = self {
            let _ = release.call0(&JsValue::NULL);
        }
    }
}

impl Locks for FlushLock {
    type Guard = FlushLockGuard;

    async fn acquire(&self) -> FlushLockGuard {
        if let Some(locks) = Self::web_locks() {
            if let Some(guard) = acquire_web_lock(&locks, &self.name).await {
                return guard;
            }
        }
        let mutex =
            LOCAL_LOCKS.with(|m| m.borrow_mut().entry(self.name.clone()).or_default().clone());
        FlushLockGuard::Local(mutex.lock_owned().await)
    }
}

async fn acquire_web_lock(locks: &JsValue, name: &str) -> Option<FlushLockGuard> {
    // The lock is held until the promise returned by the callback settles:
    // that promise resolves when the guard drops.
    let release_slot: Rc<RefCell<Option<Function>>> = Rc::new(RefCell::new(None));
    let held_until_release = {
        let slot = release_slot.clone();
        Promise::new(&mut |resolve, _reject| {
            *slot.borrow_mut() = Some(resolve);
        })
    };
    let acquired_slot: Rc<RefCell<Option<Function>>> = Rc::new(RefCell::new(None));
    let acquired = {
        let slot = acquired_slot.clone();
        Promise::new(&mut |resolve, _reject| {
            *slot.borrow_mut() = Some(resolve);
        })
    };
    let on_granted = {
        let acquired_slot = acquired_slot.clone();
        Closure::once_into_js(move |_lock: JsValue| -> JsValue {
            if let Some(resolve) = acquired_slot.borrow_mut().take() {
                let _ = resolve.call0(&JsValue::NULL);
            }
            held_until_release.into()
        })
    };
    let request = global::call(locks, "request", &[JsValue::from_str(name), on_granted]).ok()?;
    // A rejected request (e.g. an opaque origin) falls back to the local lock.
    let failed = Rc::new(RefCell::new(false));
    {
        let failed = failed.clone();
        let on_error = Closure::once_into_js(move |_e: JsValue| {
            *failed.borrow_mut() = true;
            if let Some(resolve) = acquired_slot.borrow_mut().take() {
                let _ = resolve.call0(&JsValue::NULL);
            }
        });
        let _ = global::call(&request, "catch", &[on_error]);
    }
    JsFuture::from(acquired).await.ok()?;
    if *failed.borrow() {
        return None;
    }
    let release = release_slot.borrow_mut().take()?;
    Some(FlushLockGuard::Web(release))
}
