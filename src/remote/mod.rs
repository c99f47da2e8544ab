//! Distributed mode on RabbitMQ: the scheduler's bridge to the broker and
//! the worker process.
//!
//! The scheduler stays the one owner of task state. It publishes each
//! queued task to a durable priority queue (publisher confirms); a worker
//! with a free slot receives it, claims it, and runs it only once the
//! scheduler granted the claim. While it runs, the worker's heartbeats renew
//! the attempt's lease; results, heartbeats and the host's resources come
//! back on a durable event queue. Only this module imports the AMQP client
//! and its async runtime; it depends on the scheduler's public handle, the
//! model, the task registry and telemetry.

mod amqp;
mod bridge;
pub mod protocol;
mod url;
mod worker;

use std::time::Duration;

pub use amqp::LinkError;
pub use bridge::{Bridge, BridgeConfig, BridgeLink};
pub use protocol::{DEFAULT_NAMESPACE, NameError, Names, check_name};
pub use url::{BrokerUrl, UrlError};
pub use worker::{ResourceSource, WorkerConfig, WorkerHandle};

/// Default lease of an attempt on a silent worker.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The heartbeat interval that fits a lease: a third of it, at most 10 s.
pub fn heartbeat_for(lease: Duration) -> Duration {
    (lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(10))
}

/// How long a submit waits for the broker's confirm by default.
pub const DEFAULT_PUBLISH_WAIT: Duration = Duration::from_secs(30);

/// The worker name used when none is given: host name and process id.
pub fn default_worker_name(host: &str) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(80)
        .collect();
    format!("{host}-{}", std::process::id())
}
