//! Connecting to RabbitMQ and declaring the queues, shared by the scheduler's
//! bridge and the worker process.

use std::future::Future;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde::Serialize;
use tokio::sync::mpsc;

use super::protocol::{CONTROL_QUEUE_EXPIRES_MS, Names};
use super::signing::Signer;
use super::url::BrokerUrl;

/// How long connecting may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why talking to the broker failed. Messages carry the redacted URL only.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Connecting failed or timed out.
    #[error("cannot reach the broker at {url}: {reason}")]
    Connect {
        /// The redacted URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The broker refused or dropped an operation or the connection.
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker did not confirm a publish.
    #[error("the broker refused a message (negative confirm)")]
    Nacked,
    /// A message could not be encoded.
    #[error("cannot encode a message: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Broker operations that finish beside a connection's loop, so the loop
/// does not wait for the connection's I/O thread to write each one (a
/// wake-up of that thread and one back, for every publish and
/// acknowledgement); the first that fails ends the connection's session.
#[derive(Debug, Clone)]
pub struct Beside {
    failures: mpsc::UnboundedSender<LinkError>,
}

impl Beside {
    /// A new set, and where its failures arrive.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<LinkError>) {
        let (failures, failed) = mpsc::unbounded_channel();
        (Self { failures }, failed)
    }

    /// Starts `operation` at once, so that what it sends is queued behind
    /// what operations started before it sent (lapin queues a publish's or
    /// an acknowledgement's frames when first polled), and lets it finish
    /// beside the loop.
    pub async fn start(
        &self,
        operation: impl Future<Output = Result<(), LinkError>> + Send + 'static,
    ) -> Result<(), LinkError> {
        let mut operation = Box::pin(operation);
        if let Some(done) = futures_lite::future::poll_once(&mut operation).await {
            return done;
        }
        self.finish(operation);
        Ok(())
    }

    /// Acknowledges a delivery and every one before it on its channel,
    /// started at once and finished beside the loop.
    pub async fn ack_upto(&self, acker: lapin::Acker) -> Result<(), LinkError> {
        self.start(async move {
            acker
                .ack(lapin::options::BasicAckOptions { multiple: true })
                .await?;
            Ok(())
        })
        .await
    }

    /// Lets `operation` run and finish beside the loop.
    pub fn finish(&self, operation: impl Future<Output = Result<(), LinkError>> + Send + 'static) {
        let failures = self.failures.clone();
        tokio::spawn(async move {
            if let Err(error) = operation.await {
                // The session may be over already; then nobody needs to know.
                let _ = failures.send(error);
            }
        });
    }
}

/// Opens a connection named `name` (shown in RabbitMQ's management UI).
pub async fn connect(url: &BrokerUrl, name: &str) -> Result<Connection, LinkError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connecting = Connection::connect(url.secret(), properties);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(LinkError::Connect {
            url: url.to_string(),
            reason: scrub(&error.to_string(), url),
        }),
        Err(_) => Err(LinkError::Connect {
            url: url.to_string(),
            reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        }),
    }
}

/// An error text with the URL's secret form replaced by its shown form.
pub fn scrub(text: &str, url: &BrokerUrl) -> String {
    text.replace(url.secret(), &url.to_string())
}

/// Declares the event queue (durable). Declaring is idempotent.
pub async fn declare_shared(channel: &Channel, names: &Names) -> Result<(), LinkError> {
    channel
        .queue_declare(names.events().into(), durable(), FieldTable::default())
        .await?;
    Ok(())
}

/// Declares one worker's answer queue (durable; removed after an hour
/// without a consumer).
pub async fn declare_control(
    channel: &Channel,
    names: &Names,
    worker: &str,
) -> Result<String, LinkError> {
    let queue = names.control(worker);
    let mut args = FieldTable::default();
    args.insert(
        "x-expires".into(),
        AMQPValue::LongUInt(CONTROL_QUEUE_EXPIRES_MS),
    );
    channel
        .queue_declare(queue.as_str().into(), durable(), args)
        .await?;
    Ok(queue)
}

/// Declares one worker's presence queue: not durable (a broker restart
/// ends every connection anyway, and the token must not outlive it), removed
/// after an hour without a consumer, and dead-lettering to the event queue,
/// where an expired token returned by a closed connection lands.
pub async fn declare_presence(
    channel: &Channel,
    names: &Names,
    worker: &str,
) -> Result<String, LinkError> {
    let queue = names.presence(worker);
    let mut args = FieldTable::default();
    args.insert(
        "x-expires".into(),
        AMQPValue::LongUInt(CONTROL_QUEUE_EXPIRES_MS),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(names.events().as_str().into()),
    );
    channel
        .queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), args)
        .await?;
    Ok(queue)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Whether a message must survive a broker restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Written to disk (results, hand-backs, goodbyes).
    Durable,
    /// Kept in memory only: placements, stop requests and heartbeats, which
    /// their sender repeats when they are lost (the scheduler sends every
    /// placement again when it reconnects).
    Transient,
}

/// Message properties: JSON and persistence.
pub fn properties(keep: Keep) -> BasicProperties {
    let mode = match keep {
        Keep::Durable => 2,
        Keep::Transient => 1,
    };
    BasicProperties::default()
        .with_delivery_mode(mode)
        .with_content_type("application/json".into())
}

/// Publishes `message` as JSON to `queue` through the default exchange,
/// signed; returns the pending confirm (the channel must be in confirm
/// mode). Every message Taskdeck publishes goes through here but the
/// presence token, which is signed the same way.
pub async fn publish<T: Serialize>(
    channel: &Channel,
    signer: &Signer,
    queue: &str,
    message: &T,
    keep: Keep,
) -> Result<lapin::PublisherConfirm, LinkError> {
    let payload = serde_json::to_vec(message)?;
    Ok(channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &payload,
            signer.sign(properties(keep), &payload),
        )
        .await?)
}

/// Delays between connection attempts: 0.1 s doubling up to 5 s (a worker
/// back within moments of a network blip keeps its attempts).
#[derive(Debug, Clone, Copy)]
pub struct Reconnect {
    next: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Reconnect {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    /// The delay before the next attempt; each call doubles the next one.
    pub fn delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    /// Connected: the next failure starts from the shortest delay again.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_double_up_to_the_cap_and_reset() {
        let mut reconnect = Reconnect::default();
        let delays: Vec<u128> = (0..6).map(|_| reconnect.delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200]);
        assert_eq!(reconnect.delay(), Duration::from_secs(5));
        reconnect.reset();
        assert_eq!(reconnect.delay(), Duration::from_millis(100));
    }

    #[test]
    fn operations_start_in_order_and_their_failures_end_the_session() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime should start");
        runtime.block_on(async {
            let (beside, mut failures) = Beside::new();
            let (started_tx, mut started) = mpsc::unbounded_channel();
            let (finish_tx, finish) = tokio::sync::oneshot::channel::<()>();
            // Each records its start when first polled, as lapin queues
            // its frames; the first then waits, the second is done at once.
            let first = {
                let started_tx = started_tx.clone();
                async move {
                    let _ = started_tx.send(1);
                    let _ = finish.await;
                    Err(LinkError::Nacked)
                }
            };
            beside
                .start(first)
                .await
                .expect("pending, so no result yet");
            // Started before `start` returned, not when the runtime gets
            // round to it.
            assert_eq!(started.try_recv().ok(), Some(1));
            let second = async move {
                let _ = started_tx.send(2);
                Ok(())
            };
            beside.start(second).await.expect("done at once");
            assert_eq!(started.try_recv().ok(), Some(2));
            // The first finishes beside, and its failure arrives.
            assert!(failures.try_recv().is_err());
            finish_tx.send(()).expect("the first should wait");
            let failure = tokio::time::timeout(Duration::from_secs(10), failures.recv())
                .await
                .expect("the failure should arrive");
            assert!(matches!(failure, Some(LinkError::Nacked)));
            // One that fails at once says so to the caller.
            let failed = beside.start(async { Err(LinkError::Nacked) }).await;
            assert!(matches!(failed, Err(LinkError::Nacked)));
        });
    }
}
