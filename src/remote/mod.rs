//! Distributed mode on RabbitMQ: the scheduler's bridge to the broker and
//! the worker process.
//!
//! The scheduler stays the one owner of task state. It knows every worker's
//! slots from its heartbeats and places each task that may start on one of
//! them itself, sending it to that worker's queue (persistent, publisher
//! confirms): the placement is the grant, so a task costs two messages, the
//! placement and the result. While an attempt runs, the worker's heartbeats
//! renew its lease; results, heartbeats and the host's resources come back
//! on a durable event queue. Every message is signed with a key the
//! scheduler and its workers share, and checked before it is read, so the
//! broker account alone runs nothing (`key`, `signing`). Only this module
//! imports the AMQP client, its async runtime and the HMAC. The bridge
//! starts the scheduler and alone holds its transport side
//! ([`crate::scheduler::TransportLink`]); the module depends on the
//! scheduler, the model and the task registry.

mod amqp;
mod bridge;
mod key;
pub mod protocol;
mod signing;
mod url;
mod worker;

use std::time::Duration;

pub use amqp::LinkError;
pub use bridge::{Bridge, BridgeConfig, BridgeLink, BridgeTraffic};
pub use key::{
    BrokerKey, KEY_ENV, KEY_FILE, KEY_FILE_ENV, KeyError, KeyFallback, KeyOrigin, KeySources,
    MIN_KEY_BYTES,
};
pub use protocol::{DEFAULT_NAMESPACE, NameError, Names, check_name};
pub use signing::SIGNATURE_HEADER;
pub use url::{BrokerUrl, UrlError};
pub use worker::{Prefetch, ResourceSource, WorkerConfig, WorkerHandle};

/// Default lease of an attempt on a silent worker.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The heartbeat interval that fits a lease: a third of it, at most 10 s.
pub fn heartbeat_for(lease: Duration) -> Duration {
    (lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(10))
}

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

/// Deletes a namespace's queues: the task and event queues and the answer
/// queues of the named workers, with whatever they hold. For tearing down
/// benchmarks and test installations, never a live one.
pub fn delete_queues(url: &BrokerUrl, names: &Names, workers: &[String]) -> Result<(), LinkError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| LinkError::Connect {
            url: url.to_string(),
            reason: format!("cannot start the async runtime: {error}"),
        })?;
    runtime.block_on(async {
        let connection = amqp::connect(url, "taskdeck cleanup").await?;
        let channel = connection.create_channel().await?;
        let mut queues = vec![names.events()];
        queues.extend(workers.iter().map(|worker| names.control(worker)));
        queues.extend(workers.iter().map(|worker| names.presence(worker)));
        for queue in queues {
            channel
                .queue_delete(
                    queue.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await?;
        }
        let _ = connection.close(200, "done".into()).await;
        Ok(())
    })
}
