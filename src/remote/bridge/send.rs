//! Sending to workers' queues: requests kept in memory, and placements,
//! persistent and confirmed, those for one worker in a round as one
//! message.

use super::*;

/// A placement to send: its task and attempt, its worker, the message.
pub(super) type Outgoing = (Attempt, String, Control);

/// The placements of one round for one worker.
#[derive(Default)]
struct ForWorker {
    keys: Vec<Attempt>,
    controls: Vec<Control>,
}

/// Publishes to workers' queues on one connection's channel.
pub(super) struct Sender<'a> {
    pub(super) channel: &'a lapin::Channel,
    pub(super) signer: &'a Signer,
    pub(super) names: &'a Names,
    pub(super) confirmed: &'a mpsc::UnboundedSender<Vec<Attempt>>,
    pub(super) failures: &'a mpsc::UnboundedSender<LinkError>,
    pub(super) traffic: &'a Traffic,
}

impl Sender<'_> {
    /// Sends a request that its sender repeats when it is lost (kept in
    /// memory only, not confirmed).
    pub(super) async fn send(&self, worker: &str, control: &Control) -> Result<(), LinkError> {
        let queue = self.names.control(worker);
        amqp::publish(self.channel, self.signer, &queue, control, Keep::Transient).await?;
        self.traffic.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends placements (persistent), those for one worker as one message;
    /// their confirms are awaited beside the loop and reported by key, a
    /// negative one ends the connection.
    pub(super) async fn send_runs(&self, runs: Vec<Outgoing>) -> Result<(), LinkError> {
        if runs.is_empty() {
            return Ok(());
        }
        let mut by_worker: BTreeMap<String, ForWorker> = BTreeMap::new();
        for (key, worker, control) in runs {
            let one = by_worker.entry(worker).or_default();
            one.keys.push(key);
            one.controls.push(control);
        }
        let mut pending = Vec::with_capacity(by_worker.len());
        for (worker, ForWorker { keys, controls }) in by_worker {
            let queue = self.names.control(&worker);
            let confirm = match controls.as_slice() {
                [one] => {
                    amqp::publish(self.channel, self.signer, &queue, one, Keep::Durable).await?
                }
                many => {
                    amqp::publish(self.channel, self.signer, &queue, &many, Keep::Durable).await?
                }
            };
            pending.push((keys, confirm));
        }
        self.traffic
            .published
            .fetch_add(pending.len() as u64, Ordering::Relaxed);
        let confirmed = self.confirmed.clone();
        let failures = self.failures.clone();
        tokio::spawn(async move {
            let mut done = Vec::new();
            for (keys, confirm) in pending {
                match confirm.await {
                    Ok(confirmation) if !confirmation.is_nack() => done.extend(keys),
                    Ok(_) => {
                        let _ = failures.send(LinkError::Nacked);
                        break;
                    }
                    Err(error) => {
                        let _ = failures.send(error.into());
                        break;
                    }
                }
            }
            let _ = confirmed.send(done);
        });
        Ok(())
    }
}
