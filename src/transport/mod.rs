//! Transport adapters behind [`crate::engine::Transport`]: `fetch` through
//! gloo-net in the browser ([`http`]).

#[cfg(target_arch = "wasm32")]
pub mod http;
