//! The engine: every decision Tidesync makes, and no I/O.
//!
//! It decides which task runs next, what an HTTP answer means, when to retry,
//! when the circuit breaker opens, and how a conflict resolves. It reaches the
//! world only through the traits in [`ports`] (storage, transport, clock,
//! locks, events, tokens), so it is tested natively with in-memory
//! implementations and runs unchanged in a page, a worker or a service worker.
//! It must never import `web_sys`, `js_sys` or `wasm_bindgen`.

pub mod backoff;
pub mod breaker;
pub mod capture;
pub mod classify;
pub mod credentials;
pub mod dependency;
pub mod events;
pub mod live;
pub mod options;
pub mod outbox;
pub mod ports;
pub mod query;
pub mod replication;
pub mod retention;
pub mod schedule;
pub mod storage;
pub mod sync;
pub mod task;
pub mod time;

pub use events::{Event, Health, HealthStatus, Metrics, Status, TaskState, TaskStatus};
pub use options::{BreakerOptions, OutboxOptions, RetryOptions};
pub use outbox::{FlushReport, Outbox, OutboxPorts};
pub use ports::{
    Clock, EventSink, Locks, Ports, Store, StoreError, TokenSource, Transport, TransportError,
};
pub use task::{
    Body, ErrorClass, FailedTask, HttpRequest, HttpResponse, NewTask, Priority, ResponseBody, Task,
    TaskError, TaskKind,
};
