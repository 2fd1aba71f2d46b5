//! Every integration test, in one binary with a module per area. A crate per file meant six test
//! binaries, each linking the library and all its dependencies again: on a 2-core machine the links
//! cost more than compiling the tests. Each module drives the real daemon and CLI (`common`).

// Tests may panic on what they set up themselves (clippy.toml allows it inside `#[test]` functions; this covers their helpers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../support/service_manager.rs"]
mod manager;

mod adopt;
mod api;
mod check;
mod desired_state;
mod explain;
mod fdstore;
mod gateway;
mod hostile_claim;
mod hostile_files;
mod hostile_own;
mod hostile_tree;
mod metrics;
mod onboard_edges;
mod onboard_everywhere;
mod onboard_grpc;
mod onboard_import;
mod onboard_new;
mod reexec;
mod runtime;
mod runtimes_run;
mod supervise;
mod systemd;
mod top;
mod upgrade;
