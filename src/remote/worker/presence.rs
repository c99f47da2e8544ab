//! The worker's presence token: how the scheduler learns within
//! milliseconds that a worker process died.
//!
//! On each connection the worker publishes a token naming itself and the
//! connection ([`WorkerEvent::ConnectionLost`]) to its own presence queue,
//! with an expiration of zero, while it consumes that queue: the broker
//! hands the token straight to the worker, which holds it unacknowledged
//! for the life of the connection. When the connection closes without the
//! token being acknowledged (the process was killed or crashed), the
//! broker returns it to the queue, where it has long expired, and
//! dead-letters it to the event queue: the scheduler reads it like any
//! report. A worker that stops properly acknowledges the token first. The
//! token is renewed with every heartbeat, as the broker closes a channel
//! that holds a delivery past its consumer timeout.
//!
//! The token is signed like every message: dead-lettering keeps its
//! headers, so the scheduler checks it as it checks reports. The worker
//! takes only a signed token of its own connection from its presence
//! queue, so a token put there by anyone else cannot replace the one it
//! holds.

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Acker, BasicProperties, Channel, Connection, Consumer};
use std::time::Duration;

use super::super::amqp::{self, LinkError};
use super::super::protocol::{Names, WorkerEvent};
use super::super::signing::{self, Signer};
use super::super::url::BrokerUrl;

/// How long the token may take to come back from the broker.
const TOKEN_WAIT: Duration = Duration::from_secs(10);

/// The presence token of one connection, held.
pub(super) struct Presence {
    channel: Channel,
    consumer: Consumer,
    queue: String,
    session: u64,
    payload: Vec<u8>,
    signer: Signer,
    /// The newest token, unacknowledged.
    held: Acker,
}

impl Presence {
    /// Declares the worker's presence queue, consumes it, publishes this
    /// connection's token and takes it.
    pub(super) async fn hold(
        connection: &Connection,
        names: &Names,
        worker: &str,
        session: u64,
        url: &BrokerUrl,
        signer: &Signer,
    ) -> Result<Self, LinkError> {
        let channel = connection.create_channel().await?;
        let queue = amqp::declare_presence(&channel, names, worker).await?;
        // Room for the held token and its renewal.
        channel
            .basic_qos(2, BasicQosOptions { global: false })
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                format!("{worker}-presence").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let payload = serde_json::to_vec(&WorkerEvent::ConnectionLost {
            worker: worker.to_owned(),
            session,
        })?;
        publish(&channel, signer, &queue, &payload).await?;
        loop {
            let delivery = match tokio::time::timeout(TOKEN_WAIT, consumer.next()).await {
                Ok(Some(delivery)) => delivery?,
                Ok(None) | Err(_) => {
                    return Err(LinkError::Connect {
                        url: url.to_string(),
                        reason: "the presence token did not come back from the broker".into(),
                    });
                }
            };
            if is_token_of(&delivery, session, signer) {
                return Ok(Self {
                    channel,
                    consumer,
                    queue,
                    session,
                    payload,
                    signer: signer.clone(),
                    held: delivery.acker,
                });
            }
            // A token of an earlier connection, returned meanwhile.
            delivery.acker.ack(BasicAckOptions::default()).await?;
        }
    }

    /// Publishes a fresh token; [`Presence::took`] then lets the old one
    /// go. The broker closes a channel whose delivery stays unacknowledged
    /// past its consumer timeout (30 min by default), so the worker renews
    /// the token with every heartbeat.
    pub(super) async fn renew(&self) -> Result<(), LinkError> {
        publish(&self.channel, &self.signer, &self.queue, &self.payload).await
    }

    /// The next delivery on the presence queue; none when the broker ended
    /// the consumer.
    pub(super) async fn next(&mut self) -> Option<Result<Delivery, lapin::Error>> {
        self.consumer.next().await
    }

    /// Takes a delivery of the presence queue: a renewed token of this
    /// connection replaces the held one, anything else is dropped.
    pub(super) async fn took(&mut self, delivery: Delivery) -> Result<(), LinkError> {
        let done = if is_token_of(&delivery, self.session, &self.signer) {
            std::mem::replace(&mut self.held, delivery.acker)
        } else {
            delivery.acker
        };
        done.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// Gives the token back for good: the worker stops properly, and its
    /// goodbye says so.
    pub(super) async fn release(self) -> Result<(), LinkError> {
        self.held.ack(BasicAckOptions::default()).await?;
        Ok(())
    }
}

/// Whether a presence message is the token of connection `session`,
/// signed with the key.
fn is_token_of(delivery: &Delivery, session: u64, signer: &Signer) -> bool {
    let headers = delivery.properties.headers().as_ref();
    signing::verify(signer.key(), headers, &delivery.data).is_ok()
        && matches!(
            serde_json::from_slice::<WorkerEvent>(&delivery.data),
            Ok(WorkerEvent::ConnectionLost { session: s, .. }) if s == session
        )
}

/// Publishes a signed token that expires at once unless a consumer takes
/// it.
async fn publish(
    channel: &Channel,
    signer: &Signer,
    queue: &str,
    payload: &[u8],
) -> Result<(), LinkError> {
    let properties = BasicProperties::default()
        .with_delivery_mode(1)
        .with_expiration("0".into())
        .with_content_type("application/json".into());
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            payload,
            signer.sign(properties, payload),
        )
        .await?
        .await?;
    Ok(())
}
