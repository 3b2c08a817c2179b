//! The Sisense test helpers under their old path, for benches/sisense.rs, which includes this
//! file: `idp.rs`, `bridge.rs` and `sisense_api.rs` in one module, as one glob. The tests
//! include those three themselves; once the bench does too, this file can go.
#![allow(dead_code, unused_imports)]

#[path = "bridge.rs"]
pub mod bridge;
#[path = "idp.rs"]
pub mod idp;
#[path = "sisense_api.rs"]
pub mod sisense_api;

pub use bridge::config;
pub use idp::*;
pub use sisense_api::*;
