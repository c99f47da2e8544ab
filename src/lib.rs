//! Taskdeck: a task scheduler with a durable queue, parallel workers,
//! retries, timeouts and cancellation.
//!
//! Modules, in dependency order (each uses only modules above it; which
//! ones exactly is in docs/ARCHITECTURE.md, and `scripts/check-architecture.sh`
//! keeps it so):
//! - [`model`]: plain data (ids, specs, records, events, resource samples).
//! - [`tasks`]: the registry of runnable task types, the built-ins and the
//!   `command`/`python` tasks.
//! - [`demo`]: the demo workloads (mock ML and CV jobs doing real CPU work).
//! - [`store`]: SQLite persistence with group commit and recovery.
//! - [`telemetry`]: CPU, memory, disk and GPU sampling thread and bounded history.
//! - [`scheduler`]: the engine: queue, dispatch, workers, retries, metrics.
//! - [`client`]: the HTTP client and the command line's client commands.
//! - [`api`]: the HTTP listener.
//! - [`app`]: the desktop window.
//! - [`remote`]: distributed mode on RabbitMQ (bridge and worker process).
//! - [`runtime`] and [`bench`]: wiring used by the `taskdeck` command.
//!
//! A program embeds Taskdeck by building a [`tasks::Registry`] with its own
//! task functions and starting a [`scheduler::Scheduler`].

#![warn(missing_docs)]

pub mod api;
#[cfg(feature = "window")]
pub mod app;
#[cfg(feature = "window")]
pub mod attach;
pub mod bench;
pub mod client;
pub mod demo;
pub mod model;
#[cfg(feature = "broker")]
pub mod remote;
pub mod runtime;
pub mod scheduler;
pub mod store;
pub mod tasks;
pub mod telemetry;
