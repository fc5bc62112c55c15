//! The wasm runtime: a WASI component exporting `wasi:http/incoming-handler`, compiled once (or
//! loaded from the compile cache), pre-instantiated, and instantiated afresh for every request
//! from a pooling allocator, with a memory cap and an epoch-based deadline.

mod cache;
mod engine;
mod guest;
mod serve;

pub use cache::{cache_key, classify_binary};
pub use serve::{Failure, WasmApp};
