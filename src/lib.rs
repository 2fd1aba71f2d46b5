//! openclaw-supervisor: a host supervisor for OpenClaw gateways.
//!
//! The data flows through the modules in this order: profiles are read and proven disjoint
//! ([`profile`]), and the gRPC contract ([`api`]) exposes the result to clients such as `openclawctl`
//! ([`cli`]). See ARCHITECTURE.md for the map.

pub mod api;
pub mod cli;
pub mod daemon;
pub mod fsx;
pub mod handover;
pub mod metrics;
pub mod paths;
pub mod profile;
pub mod runtime;
pub mod supervise;
pub mod systemd;
