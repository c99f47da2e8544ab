//! The timer thread: ends retry backoffs, starts delayed tasks at their
//! time and enforces attempt timeouts.
//!
//! It waits on its channel until the earliest due item, so it sleeps only
//! while nothing is due and wakes at once for new work or shutdown.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::Inner;
use crate::model::{TaskId, now_us};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Due {
    Retry { id: TaskId, retry_at_us: i64 },
    Deadline { id: TaskId, attempt: u32 },
    Start { id: TaskId },
}

#[derive(Debug)]
pub(super) enum TimerMsg {
    At(Instant, Due),
    Stop,
}

/// Sending side of the timer thread.
#[derive(Debug, Clone)]
pub(super) struct Timer {
    tx: Sender<TimerMsg>,
}

impl Timer {
    /// A timer and the receiver its thread will own.
    pub(super) fn new() -> (Self, Receiver<TimerMsg>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (Self { tx }, rx)
    }

    /// Queue `id` again at `due` unless it changed meanwhile.
    pub(super) fn retry(&self, id: TaskId, due: Instant, retry_at_us: i64) {
        // A send fails only after shutdown, when nothing is retried anyway.
        let _ = self
            .tx
            .send(TimerMsg::At(due, Due::Retry { id, retry_at_us }));
    }

    /// Time out attempt `attempt` of `id` at `due` if it still runs.
    pub(super) fn deadline(&self, id: TaskId, attempt: u32, due: Instant) {
        let _ = self
            .tx
            .send(TimerMsg::At(due, Due::Deadline { id, attempt }));
    }

    /// Puts the delayed task `id` in the ready queue at `due` (its start
    /// time) if it is still queued.
    pub(super) fn start(&self, id: TaskId, due: Instant) {
        let _ = self.tx.send(TimerMsg::At(due, Due::Start { id }));
    }

    /// Stops the thread.
    pub(super) fn stop(&self) {
        let _ = self.tx.send(TimerMsg::Stop);
    }
}

/// Body of the "taskdeck-timer" thread.
pub(super) fn timer_main(inner: Arc<Inner>, rx: Receiver<TimerMsg>) {
    let mut pending: BinaryHeap<Reverse<(Instant, Due)>> = BinaryHeap::new();
    loop {
        let message = match pending.peek() {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(Reverse((due, _))) => rx.recv_deadline(*due),
        };
        match message {
            Ok(TimerMsg::At(due, item)) => pending.push(Reverse((due, item))),
            Ok(TimerMsg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        while pending.peek().is_some_and(|Reverse((due, _))| *due <= now) {
            let Some(Reverse((_, item))) = pending.pop() else {
                break;
            };
            fire(&inner, item, now);
        }
    }
}

fn fire(inner: &Arc<Inner>, item: Due, now: Instant) {
    match item {
        Due::Retry { id, retry_at_us } => {
            let change = inner.core.lock().retry_due(id, retry_at_us);
            if let Some(change) = change {
                inner.emit(change);
                if inner.core.lock().enqueue_if_queued(id) {
                    inner.signal_work(false);
                }
            }
        }
        Due::Start { id } => {
            if inner.core.lock().enqueue_if_queued(id) {
                inner.signal_work(false);
            }
        }
        Due::Deadline { id, attempt } => {
            inner.settle(|core| core.time_out(id, attempt, now, now_us()));
            if !inner.is_shut_down() {
                super::worker::ensure_workers(inner);
            }
        }
    }
}
