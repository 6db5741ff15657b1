//! The canonical API: its request types, its one error type, and its OpenAPI document.

pub mod openapi;
pub mod problem;
pub mod types;

pub use problem::{ErrorCode, Problem, VendorDetail};
