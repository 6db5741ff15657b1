//! One integration test binary: the real gateway and real sandbox vendors, as processes, over
//! loopback HTTP on port 0. Modules are named for what they test.

mod harness;

mod auth_and_input;
mod cbss_flow;
mod cli;
mod openapi;
mod upstream_faults;
