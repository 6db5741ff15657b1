//! A password-reset gateway: one canonical `/reset` API in front of many vendors' reset APIs.
//!
//! The binary in `main.rs` is a thin command line over this library; the integration tests start that
//! binary as a real process. ARCHITECTURE.md has the codemap and the invariants.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod client_ip;
pub mod code_guesses;
pub mod config;
pub mod conn;
pub mod deadline;
pub mod flow;
pub mod fuzzing;
pub mod gateway;
pub mod http;
pub mod json;
pub mod language;
pub mod limit;
pub mod metrics;
pub mod recent_durations;
pub mod redis_store;
pub mod request_id;
mod robustness;
pub mod run;
pub mod sandbox;
pub mod secret;
pub mod sharded;
pub mod shutdown;
pub mod signing;
pub mod single_use;
mod swar;
pub mod task_room;
pub mod timestamp;
pub mod tls;
pub mod token;
pub mod upstream;
pub mod vendors;
pub mod wire;
pub mod xml;
