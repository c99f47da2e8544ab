//! The integration tests, one module per area, in one test binary: the
//! whole crate is linked once instead of once per area. Shared helpers live
//! in `common` (and `common::broker` for distributed mode).
//!
//! Run one area with `cargo test --test it AREA::`, e.g.
//! `cargo test --test it http::`.

mod common;

#[cfg(feature = "window")]
mod attach;
mod auth;
mod cli;
mod depends;
mod durable;
mod exec;
mod gpus;
mod http;
mod live;
mod metrics;
mod private;
mod queues;
#[cfg(feature = "broker")]
mod remote;
#[cfg(feature = "broker")]
mod remote_failures;
#[cfg(feature = "broker")]
mod remote_memory;
#[cfg(feature = "broker")]
mod remote_signing;
#[cfg(feature = "broker")]
mod remote_tls;
#[cfg(feature = "broker")]
mod remote_workflow;
mod scheduler;
mod serve;
mod storage;
mod tls;
mod web;
#[cfg(feature = "window")]
mod window;
