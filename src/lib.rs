//! Taskdeck: a task scheduler with a durable queue, parallel workers,
//! retries, timeouts and cancellation.
//!
//! Modules, in dependency order (each may use only those above it):
//! - [`model`]: plain data (ids, specs, records, events).
//! - [`tasks`]: the registry of runnable task types and the built-ins.
//! - [`telemetry`]: CPU, memory, disk and GPU sampling thread and bounded history.
//! - [`store`]: SQLite persistence with group commit and recovery.
//! - [`scheduler`]: the engine: queue, dispatch, workers, retries, metrics.
//! - [`runtime`] and [`bench`]: wiring used by the `taskdeck` command.
//!
//! A program embeds Taskdeck by building a [`tasks::Registry`] with its own
//! task functions and starting a [`scheduler::Scheduler`].

#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod bench;
pub mod client;
pub mod model;
pub mod remote;
pub mod runtime;
pub mod scheduler;
pub mod store;
pub mod tasks;
pub mod telemetry;
