//! One integration test binary: the real gateway and real sandbox vendors, as processes, over
//! loopback HTTP on port 0. Modules are named for what they test.

mod harness;

mod auth_and_input;
mod capillary_flow;
mod cbss_flow;
mod cli;
mod code_flow;
mod conformance;
mod faults;
mod http1;
mod limits;
mod logs;
mod metrics;
mod openapi;
mod shared_limits;
mod shutdown;
mod tls;
mod upstream_faults;
mod upstream_pool;
