//! Tidesync: an offline-first sync SDK for web apps.
//!
//! The crate is layered (see docs/architecture.md): [`engine`] decides what
//! runs and when, the adapters in [`store`], [`transport`] and `platform` do
//! the I/O, and `api` is the only layer that speaks JavaScript. Everything
//! but the browser adapters and the API compiles natively, so the engine is
//! tested with `cargo test` against in-memory implementations of its traits.

pub mod engine;
pub mod store;
pub mod transport;

#[cfg(target_arch = "wasm32")]
pub mod platform;
#[doc(hidden)]
pub mod testing;

#[cfg(target_arch = "wasm32")]
pub mod api;

/// The SDK's version, as published on npm.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
