//! What travels through the broker: queue names and the JSON messages
//! between the scheduler and worker processes. Pure data; no I/O.
//!
//! - `NS.events` (durable): what workers report (heartbeats, ends of
//!   attempts, hand-backs, goodbyes), consumed by the scheduler.
//! - `NS.worker.NAME` (durable, expires when unused for an hour): what the
//!   scheduler sends one worker: the attempts placed on it (each placement
//!   is the grant: the scheduler chose the worker, so there is no claim),
//!   stop requests, and requests to hand back an attempt not yet started.
//!   The worker acknowledges them once handled, so a message in flight
//!   when its connection drops is delivered again on the next.
//! - `NS.presence.NAME` (not durable, expires when unused for an hour): the
//!   worker's presence token for its current connection, which it holds
//!   unacknowledged; when the connection closes without a goodbye (the
//!   process was killed), the broker returns the token to the queue,
//!   where it has expired and is dead-lettered to `NS.events` as
//!   [`WorkerEvent::ConnectionLost`].
//!
//! Messages are kept in the broker's memory, not on its disk: each side
//! holds what it sent until the other has it for good. The scheduler sends
//! every placement whose attempt may still run again on each new connection
//! (it keeps the attempt in its store before sending it; workers ignore a
//! placement they have or ran), and a worker keeps each numbered report
//! until the scheduler answers that it committed it ([`Control::Applied`]),
//! publishing unanswered ones again on its next connection, and to the
//! broker's disk (persistent, confirmed) when no answer came within a while
//! or when it stops.
//!
//! Every message is signed with the shared key (`signing`); receivers
//! check the signature before they decode anything here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{HostSummary, TaskId, TaskLog, TaskSpec};
use crate::tasks::StopReason;

/// The version of this protocol a worker speaks, sent with its heartbeats;
/// the scheduler places attempts only on workers that speak this one.
/// Version 4 signs every message (see `signing`): a worker of version 3 or
/// older signs nothing, so what it sends is refused unread. Version 5 keeps
/// reports in the broker's memory and numbers them: the worker holds each
/// until the scheduler says it applied it ([`Control::Applied`]).
pub const PROTOCOL: u32 = 5;

/// The default namespace of queue names.
pub const DEFAULT_NAMESPACE: &str = "taskdeck";

/// How long a worker's answer queue outlives its last consumer.
pub const CONTROL_QUEUE_EXPIRES_MS: u32 = 3_600_000;

/// Queue names of one Taskdeck installation on a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    namespace: String,
}

/// A namespace or worker name that cannot be part of a queue name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} must be 1 to 100 letters, digits, '.', '_' or '-'")]
pub struct NameError {
    what: &'static str,
    value: String,
}

/// Checks a name used inside queue names.
pub fn check_name(what: &'static str, value: &str) -> Result<(), NameError> {
    let ok = !value.is_empty()
        && value.len() <= 100
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(NameError {
            what,
            value: value.to_owned(),
        })
    }
}

impl Names {
    /// Names under `namespace` (see [`check_name`]).
    pub fn new(namespace: &str) -> Result<Self, NameError> {
        check_name("the broker namespace", namespace)?;
        Ok(Self {
            namespace: namespace.to_owned(),
        })
    }

    /// The queue of worker reports.
    pub fn events(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// The answer queue of one worker.
    pub fn control(&self, worker: &str) -> String {
        format!("{}.worker.{worker}", self.namespace)
    }

    /// The presence queue of one worker (see the module's notes).
    pub fn presence(&self, worker: &str) -> String {
        format!("{}.presence.{worker}", self.namespace)
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// Why an attempt was asked to stop, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireStop {
    /// A user cancelled it.
    Cancelled,
    /// It ran past its timeout.
    TimedOut,
    /// Its worker is shutting down.
    Shutdown,
    /// The scheduler was paused with its running tasks stopped.
    Paused,
}

impl From<StopReason> for WireStop {
    fn from(reason: StopReason) -> Self {
        match reason {
            StopReason::Cancelled => Self::Cancelled,
            StopReason::TimedOut => Self::TimedOut,
            StopReason::Shutdown => Self::Shutdown,
            StopReason::Paused => Self::Paused,
        }
    }
}

impl From<WireStop> for StopReason {
    fn from(reason: WireStop) -> Self {
        match reason {
            WireStop::Cancelled => Self::Cancelled,
            WireStop::TimedOut => Self::TimedOut,
            WireStop::Shutdown => Self::Shutdown,
            WireStop::Paused => Self::Paused,
        }
    }
}

/// How an attempt ended, on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireOutcome {
    /// The task returned a value.
    Completed {
        /// The result.
        value: Value,
    },
    /// The task returned an error.
    Error {
        /// What went wrong.
        message: String,
        /// Whether another attempt may succeed.
        retryable: bool,
        /// Set when it ended because it was asked to stop.
        stop: Option<WireStop>,
    },
    /// The task panicked.
    Panicked {
        /// The panic message.
        message: String,
    },
}

/// A progress report on the wire (see [`crate::model::ProgressReport`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireProgress {
    /// How far the task is, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// A short note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Numeric metrics by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// What a worker reports to the scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// Sent periodically: the worker is alive and runs these attempts.
    Heartbeat {
        /// Worker name.
        worker: String,
        /// Its host.
        host: String,
        /// Attempts it runs at once (0 while it stops: place nothing).
        concurrency: usize,
        /// Attempts it keeps waiting beyond those it runs, so that a slot
        /// that frees starts the next one without a round trip.
        #[serde(default)]
        prefetch: usize,
        /// The protocol it speaks ([`PROTOCOL`]; 1 from workers that do not
        /// say, which claim tasks from a shared queue).
        #[serde(default = "first_protocol")]
        protocol: u32,
        /// Task and attempt of each attempt placed on it that it has not
        /// finished: running or waiting for a slot.
        running: Vec<(TaskId, u32)>,
        /// Its host's load.
        resources: Option<HostSummary>,
        /// Its GPU devices tasks may be given: id and memory in MB.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        gpus: Vec<(u32, Option<u64>)>,
        /// Its current connection to the broker (random per connection; 0
        /// from workers that do not say).
        #[serde(default)]
        session: u64,
        /// Messages it refused since its process started (unsigned, or
        /// signed with another key): the scheduler counts them too.
        #[serde(default)]
        refused: u64,
    },
    /// An attempt ended.
    Finished {
        /// Worker name.
        worker: String,
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u32,
        /// How it ended.
        outcome: WireOutcome,
        /// When it started and ended on the worker, microseconds since the
        /// epoch (the worker's clock).
        started_at_us: i64,
        /// See `started_at_us`.
        finished_at_us: i64,
        /// Its run time by the worker's monotonic clock.
        run_time_us: i64,
        /// Its output log (on the worker's machine), for tasks that run a
        /// process.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log: Option<TaskLog>,
    },
    /// Progress a running attempt reported since the last such message,
    /// oldest first.
    Progress {
        /// Worker name.
        worker: String,
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u32,
        /// The reports.
        reports: Vec<WireProgress>,
    },
    /// A piece of a running attempt's output log, for the scheduler's copy
    /// (pieces come in order, before the attempt's end).
    Log {
        /// Worker name.
        worker: String,
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u32,
        /// Where the piece starts in the log.
        offset: u64,
        /// The bytes, base64.
        data: String,
    },
    /// The worker gives back an attempt placed on it that it will not run
    /// to its end (it had not started it, or it is stopping).
    Release {
        /// Worker name.
        worker: String,
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u32,
    },
    /// The worker stops.
    Goodbye {
        /// Worker name.
        worker: String,
    },
    /// Closes a message of reports: they are reports `first` to `last` of
    /// the worker's `stream` (one per worker process), numbered one by one.
    /// The scheduler answers with [`Control::Applied`] once it committed
    /// them, and skips those it applied before (a report sent again after a
    /// reconnect, or its copy on the broker's disk).
    Reports {
        /// Worker name.
        worker: String,
        /// The worker process's report stream.
        stream: u64,
        /// The number of the message's last report.
        last: u64,
        /// The number of its first; absent from workers that did not send
        /// it (only a message applied whole is then skipped).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first: Option<u64>,
    },
    /// The worker's connection `session` closed without a goodbye: its
    /// presence token, dead-lettered by the broker (never sent directly).
    ConnectionLost {
        /// Worker name.
        worker: String,
        /// The connection that closed.
        session: u64,
    },
}

/// What the scheduler answers one worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Run this attempt: the scheduler placed it on this worker.
    Run {
        /// The task.
        task: TaskId,
        /// The attempt number to report.
        attempt: u32,
        /// Unique to this placement (an attempt number comes again after a
        /// hand-back); the same when the scheduler sends it again.
        placement: u64,
        /// What to run (without its dependencies, which are the
        /// scheduler's business).
        spec: Box<TaskSpec>,
        /// Time allowed, counted from when the attempt starts.
        timeout_ms: Option<u64>,
        /// The scheduler's lease: the worker's heartbeats come at least
        /// three times within it.
        lease_ms: u64,
        /// The worker's GPU devices given to it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        gpu_ids: Vec<u32>,
        /// Sent again by a restarted scheduler, which may have died before
        /// sending it: run it only if this worker has not run this attempt.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        again: bool,
    },
    /// The scheduler's lease, sent once per worker connection (on its first
    /// heartbeat): heartbeats come at least three times within it, so the
    /// worker counts as connected before anything is placed on it.
    Lease {
        /// The lease.
        lease_ms: u64,
        /// The protocol the scheduler speaks (absent from schedulers of
        /// version 4, which cannot read numbered reports).
        #[serde(default = "unnumbered_protocol")]
        protocol: u32,
    },
    /// Hand this attempt back if it has not started (another worker has a
    /// free slot for it); one that started runs on.
    Reclaim {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u32,
    },
    /// Stop this attempt.
    Stop {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u32,
        /// Why.
        reason: WireStop,
    },
    /// The scheduler applied and committed the worker's reports of `stream`
    /// up to `upto`: the worker may forget them.
    Applied {
        /// The worker process's report stream.
        stream: u64,
        /// The newest report applied.
        upto: u64,
    },
}

fn first_protocol() -> u32 {
    1
}

/// The last protocol before [`Control::Lease`] named the scheduler's.
fn unnumbered_protocol() -> u32 {
    4
}

/// Decodes a message body: one item, or several sent together as a JSON
/// array (placements for one worker, reports that waited together).
pub fn decode<T: serde::de::DeserializeOwned>(data: &[u8]) -> serde_json::Result<Vec<T>> {
    let first = data.iter().find(|byte| !byte.is_ascii_whitespace());
    if first == Some(&b'[') {
        serde_json::from_slice(data)
    } else {
        serde_json::from_slice(data).map(|one| vec![one])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_composed() {
        let names = Names::new("prod-1").expect("a valid namespace");
        assert_eq!(names.events(), "prod-1.events");
        assert_eq!(names.control("gpu-box.7"), "prod-1.worker.gpu-box.7");
        assert_eq!(names.presence("gpu-box.7"), "prod-1.presence.gpu-box.7");
        assert!(Names::new("").is_err());
        assert!(Names::new("a b").is_err());
        assert!(check_name("worker name", &"x".repeat(101)).is_err());
    }

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let event = WorkerEvent::Finished {
            worker: "w1".into(),
            task: TaskId(7),
            attempt: 2,
            outcome: WireOutcome::Error {
                message: "boom".into(),
                retryable: true,
                stop: Some(WireStop::TimedOut),
            },
            started_at_us: 1,
            finished_at_us: 2,
            run_time_us: 1,
            log: None,
        };
        let text = serde_json::to_string(&event).expect("serialisable");
        assert!(text.contains(r#""type":"finished""#), "{text}");
        assert!(text.contains(r#""stop":"timed_out""#), "{text}");
        let back: WorkerEvent = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, event);
        let spec = serde_json::to_value(TaskSpec::new("noop", Vec::new())).expect("a spec");
        let control: Control = serde_json::from_value(serde_json::json!({
            "type": "run", "task": 3, "attempt": 1, "placement": 42, "timeout_ms": null,
            "lease_ms": 30000, "spec": spec,
        }))
        .expect("parses");
        let Control::Run {
            task,
            attempt,
            placement: 42,
            spec,
            timeout_ms: None,
            lease_ms: 30_000,
            gpu_ids,
            again: false,
        } = control
        else {
            panic!("a run message: {control:?}");
        };
        assert_eq!((task, attempt, spec.name.as_str()), (TaskId(3), 1, "noop"));
        assert!(gpu_ids.is_empty());
        // A heartbeat from a worker that does not say its protocol is one
        // of the first, which is given nothing.
        let beat: WorkerEvent = serde_json::from_str(
            r#"{"type":"heartbeat","worker":"w","host":"h","concurrency":2,"running":[]}"#,
        )
        .expect("parses");
        assert!(matches!(
            beat,
            WorkerEvent::Heartbeat {
                protocol: 1,
                prefetch: 0,
                ..
            }
        ));
        // A scheduler's lease that does not say its protocol comes from
        // one that cannot read numbered reports.
        let lease: Control =
            serde_json::from_str(r#"{"type":"lease","lease_ms":30000}"#).expect("parses");
        assert_eq!(
            lease,
            Control::Lease {
                lease_ms: 30_000,
                protocol: 4
            }
        );
        // Reports end with their number; the scheduler's answer names it.
        let closing = WorkerEvent::Reports {
            worker: "w".into(),
            stream: 9,
            last: 12,
            first: Some(10),
        };
        let text = serde_json::to_string(&closing).expect("json");
        assert_eq!(
            text,
            r#"{"type":"reports","worker":"w","stream":9,"last":12,"first":10}"#
        );
        // From a worker that does not name the first.
        let older: WorkerEvent =
            serde_json::from_str(r#"{"type":"reports","worker":"w","stream":9,"last":12}"#)
                .expect("parses");
        assert_eq!(
            older,
            WorkerEvent::Reports {
                worker: "w".into(),
                stream: 9,
                last: 12,
                first: None,
            }
        );
        let applied = serde_json::to_string(&Control::Applied {
            stream: 9,
            upto: 12,
        })
        .expect("json");
        assert_eq!(applied, r#"{"type":"applied","stream":9,"upto":12}"#);
        // A body holds one message or several.
        let one = serde_json::to_vec(&WorkerEvent::Goodbye { worker: "w".into() }).expect("json");
        let many = serde_json::to_vec(&[
            WorkerEvent::Goodbye { worker: "a".into() },
            WorkerEvent::Goodbye { worker: "b".into() },
        ])
        .expect("json");
        assert_eq!(decode::<WorkerEvent>(&one).expect("one").len(), 1);
        let both = decode::<WorkerEvent>(&many).expect("many");
        assert_eq!(both[1], WorkerEvent::Goodbye { worker: "b".into() });
        assert!(decode::<WorkerEvent>(b"[{").is_err());
    }
}
