//! The follower thread: the event stream, reloads and the counts' poll.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use parking_lot::Mutex;
use serde_json::Value;

use super::Remote;
use super::convert;
use crate::app::ConnectionState;
use crate::client::{Client, ClientError, StreamEvent};
use crate::model::{Event, ResourceSample};

/// How often counts, workers and queues are read again while connected
/// (the stream tells task, worker and queue changes as they happen; the
/// counts and latency are not part of it).
const POLL_EVERY: Duration = Duration::from_secs(1);
/// The first wait before connecting again; it doubles with each failure.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
/// The longest wait before connecting again.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Tasks read per page when the list is loaded.
const PAGE: usize = 1000;
/// Most frames taken from the stream before the records go to the window.
const BATCH: usize = 4096;

/// How long to wait before the `tries`-th attempt to connect again:
/// - 250 ms after the first failure, doubling after each further one;
/// - never more than 5 s.
pub fn backoff(tries: u32) -> Duration {
    let doublings = tries.saturating_sub(1).min(16);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

/// The sequence number of an event id `EPOCH-SEQ` (0 when it has none).
fn seq_of(id: Option<&str>) -> u64 {
    id.and_then(|id| id.rsplit_once('-'))
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or(0)
}

/// What one frame or a stream's end said.
type Frame = Result<StreamEvent, String>;

/// The follower's state and what it feeds.
pub(super) struct Follower {
    pub client: Client,
    pub remote: Arc<Remote>,
    /// Disconnects when the attachment stops.
    pub cancelled: Receiver<()>,
    pub samples: Sender<Arc<ResourceSample>>,
    /// The stream readers started, joined at the end where they finished.
    pub streams: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

/// Where the follower is in the stream.
#[derive(Default)]
struct Position {
    /// The last event id read, to resume from.
    last_id: Option<String>,
    /// When the newest resource sample handed on was taken.
    last_sample_us: Option<i64>,
    /// Connection attempts since the last one that worked.
    tries: u32,
}

/// Why a session ended: the attachment stopped, or the connection broke
/// (with the reason).
enum Ended {
    Cancelled,
    Broke(String),
}

impl Follower {
    /// Follows until cancelled, connecting again after each break.
    pub fn run(self) {
        let mut position = Position::default();
        loop {
            let reason = match self.session(&mut position) {
                Ended::Cancelled => return,
                Ended::Broke(reason) => reason,
            };
            position.tries += 1;
            tracing::debug!(%reason, tries = position.tries, "the connection to the server broke");
            self.remote.set_state(ConnectionState::Reconnecting {
                reason,
                tries: position.tries,
            });
            select! {
                recv(self.cancelled) -> _ => return,
                default(backoff(position.tries)) => {}
            }
        }
    }

    /// One connection: opens the stream, reloads, then takes its frames
    /// and polls the counts until it breaks or the attachment stops.
    fn session(&self, position: &mut Position) -> Ended {
        let frames = match self.open(position.last_id.as_deref()) {
            Ok(frames) => frames,
            Err(reason) => return Ended::Broke(reason),
        };
        // Opened first, loaded second: what changes meanwhile waits in the
        // stream, and versions decide between the two.
        if let Err(reason) = self.reload(position) {
            return Ended::Broke(reason);
        }
        position.tries = 0;
        self.remote.set_state(ConnectionState::Connected);
        let mut next_poll = Instant::now() + POLL_EVERY;
        loop {
            let timeout = next_poll.saturating_duration_since(Instant::now());
            let first = select! {
                recv(self.cancelled) -> _ => return Ended::Cancelled,
                recv(frames) -> frame => Some(frame.unwrap_or_else(|_| Err("the event stream stopped".to_owned()))),
                default(timeout) => None,
            };
            if let Some(first) = first {
                let batch = std::iter::once(first).chain(frames.try_iter().take(BATCH));
                if let Err(reason) = self.take_frames(batch, position) {
                    return Ended::Broke(reason);
                }
            }
            if Instant::now() >= next_poll {
                if let Err(reason) = self.poll() {
                    return Ended::Broke(reason);
                }
                next_poll = Instant::now() + POLL_EVERY;
            }
        }
    }

    /// Opens the stream and starts its reader thread.
    fn open(&self, last_id: Option<&str>) -> Result<Receiver<Frame>, String> {
        let mut stream = self
            .client
            .events("", last_id)
            .map_err(|error| error.to_string())?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let reader = std::thread::Builder::new()
            .name("taskdeck-attach-stream".into())
            .spawn(move || {
                loop {
                    let frame = match stream.next_event() {
                        Ok(Some(event)) => Ok(event),
                        Ok(None) => Err("the server ended the event stream".to_owned()),
                        Err(error) => Err(error.to_string()),
                    };
                    let end = frame.is_err();
                    // The follower went away, or the stream ended.
                    if tx.send(frame).is_err() || end {
                        return;
                    }
                }
            })
            .map_err(|error| format!("cannot start the stream reader: {error}"))?;
        let mut streams = self.streams.lock();
        streams.retain(|stream| !stream.is_finished());
        streams.push(reader);
        Ok(rx)
    }

    /// Takes a batch of frames; the task records go to the window together.
    fn take_frames(
        &self,
        frames: impl Iterator<Item = Frame>,
        position: &mut Position,
    ) -> Result<(), String> {
        let mut events = Vec::new();
        let mut result = Ok(());
        for frame in frames {
            let frame = match frame {
                Ok(frame) => frame,
                Err(reason) => {
                    result = Err(reason);
                    break;
                }
            };
            if let Err(reason) = self.take_frame(&frame, &mut events, position) {
                result = Err(reason);
                break;
            }
            if frame.id.is_some() {
                position.last_id = frame.id;
            }
        }
        self.remote.take_events(events);
        result
    }

    fn take_frame(
        &self,
        frame: &StreamEvent,
        events: &mut Vec<Event>,
        position: &mut Position,
    ) -> Result<(), String> {
        let data: Value = serde_json::from_str(&frame.data)
            .map_err(|error| format!("an event that is not JSON: {error}"))?;
        let text = |error: convert::ConvertError| error.to_string();
        match frame.kind.as_str() {
            "task" => {
                let seq = seq_of(frame.id.as_deref());
                if let Some(event) = convert::task_event(&data, seq).map_err(text)? {
                    events.push(event);
                }
            }
            // Too many changes at once to tell one by one: read the list
            // again (the summary says which ids, not their records).
            "tasks" => {
                self.remote.take_events(std::mem::take(events));
                self.reload_tasks()?;
            }
            "worker" => {
                let worker =
                    convert::worker(data.get("worker").unwrap_or(&Value::Null)).map_err(text)?;
                let gone = data.get("gone").and_then(Value::as_bool) == Some(true);
                self.remote.update(|snapshot| {
                    snapshot.workers.retain(|held| held.id != worker.id);
                    if !gone {
                        snapshot.workers.push(worker);
                        snapshot.workers.sort_by_key(|held| held.id);
                    }
                });
                self.remote.wake();
            }
            "queue" => {
                let queue =
                    convert::queue(data.get("queue").unwrap_or(&Value::Null)).map_err(text)?;
                self.remote.update(|snapshot| {
                    match snapshot
                        .queues
                        .iter_mut()
                        .find(|held| held.name == queue.name)
                    {
                        Some(held) => *held = queue,
                        None => snapshot.queues.push(queue),
                    }
                });
                self.remote.wake();
            }
            "resources" => {
                if let Some(sample) = convert::sample(&data).map_err(text)? {
                    self.hand_on(vec![sample], position);
                }
            }
            "reset" => {
                tracing::debug!(data = %frame.data, "the server asked for a reload");
                self.remote.take_events(std::mem::take(events));
                self.reload(position)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Hands on the samples newer than the last one handed on.
    fn hand_on(&self, samples: Vec<ResourceSample>, position: &mut Position) {
        let mut any = false;
        for sample in samples {
            if position.last_sample_us.is_some_and(|at| sample.at_us <= at) {
                continue;
            }
            position.last_sample_us = Some(sample.at_us);
            // The window may have closed.
            let _ = self.samples.send(Arc::new(sample));
            any = true;
        }
        if any {
            self.remote.wake();
        }
    }

    /// Reads again everything kept: task types, tasks, counts, workers,
    /// queues and the resource samples missed.
    fn reload(&self, position: &mut Position) -> Result<(), String> {
        let types = self.client.task_types().map_err(|e| e.to_string())?;
        let types = convert::task_types(&types).map_err(|e| e.to_string())?;
        if *self.remote.snapshot().task_types != types {
            self.remote
                .update(|snapshot| snapshot.task_types = Arc::new(types));
        }
        self.reload_tasks()?;
        self.poll()?;
        let history = match self
            .client
            .call("GET", "/api/v1/monitoring/history?minutes=60", None)
        {
            Ok(history) => history,
            // A server that keeps no history: the plots start from now.
            Err(ClientError::Server { status: 404, .. }) => Value::Null,
            Err(error) => return Err(error.to_string()),
        };
        let samples = history
            .get("samples")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(convert::sample)
            .filter_map(Result::transpose)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        self.hand_on(samples, position);
        Ok(())
    }

    /// Reads the whole task list, oldest first, page by page, and hands on
    /// the records newer than those held, as the events that would have
    /// left them so.
    fn reload_tasks(&self) -> Result<(), String> {
        let mut offset = 0usize;
        loop {
            let page = self
                .client
                .list(&format!("limit={PAGE}&offset={offset}&order=oldest"))
                .map_err(|e| e.to_string())?;
            let records = page
                .get("tasks")
                .and_then(Value::as_array)
                .ok_or_else(|| "the task list has no tasks".to_owned())?;
            let mut events = Vec::with_capacity(records.len());
            for value in records {
                let record = convert::task(value).map_err(|e| e.to_string())?;
                let held = self.remote.held_version(record.id);
                if held.is_some_and(|version| version >= record.version) {
                    continue;
                }
                events.push(Event {
                    seq: 0,
                    kind: convert::kind_of(&record, held.is_some()),
                    task: Arc::new(record),
                });
            }
            self.remote.take_events(events);
            if records.len() < PAGE {
                return Ok(());
            }
            offset += records.len();
        }
    }

    /// Reads the counts, the workers and the queues.
    fn poll(&self) -> Result<(), String> {
        poll(&self.client, &self.remote)
    }
}

/// Reads the counts, the workers and the queues into `remote`'s snapshot.
pub(super) fn poll(client: &Client, remote: &Remote) -> Result<(), String> {
    let report = client
        .call("GET", "/api/v1/report", None)
        .map_err(|e| e.to_string())?;
    let workers = client
        .call("GET", "/api/v1/workers", None)
        .map_err(|e| e.to_string())?;
    let queues = client.queues().map_err(|e| e.to_string())?;
    let stats = convert::stats(&report, &workers).map_err(|e| e.to_string())?;
    let workers = workers
        .get("workers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(convert::worker)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let queues = queues
        .get("queues")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(convert::queue)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    remote.update(|snapshot| {
        snapshot.stats = stats;
        snapshot.workers = workers;
        snapshot.queues = queues;
    });
    remote.wake();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(4), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(4));
        assert_eq!(backoff(6), BACKOFF_MAX);
        assert_eq!(backoff(100), BACKOFF_MAX);
    }

    #[test]
    fn event_ids_give_their_sequence() {
        assert_eq!(seq_of(Some("1a2b-42")), 42);
        assert_eq!(seq_of(Some("nonsense")), 0);
        assert_eq!(seq_of(None), 0);
    }
}
