//! The attempts the scheduler places on this worker: starting them as
//! slots free, stop and hand-back requests, and stopping.

use super::super::protocol::decode;
use super::attempts::finished;
use super::*;

impl EndedRecently {
    /// Remembers an ended placement of an attempt, forgetting the oldest
    /// beyond the bound.
    pub(super) fn insert(&mut self, placement: u64, task: TaskId, attempt: u32) {
        if self.placements.insert(placement) {
            self.attempts.insert((task, attempt));
            self.order.push_back((placement, task, attempt));
        }
        while self.order.len() > ENDED_REMEMBERED {
            if let Some((placement, task, attempt)) = self.order.pop_front() {
                self.placements.remove(&placement);
                self.attempts.remove(&(task, attempt));
            }
        }
    }

    /// Whether this placement ended here; for one sent again by a restarted
    /// scheduler, whether any placement of its attempt did.
    pub(super) fn contains(&self, placed: &Waiting) -> bool {
        self.placements.contains(&placed.placement)
            || (placed.again && self.attempts.contains(&(placed.task, placed.attempt)))
    }
}

impl Worker {
    /// Attempts that may wait here beyond those that run.
    pub(super) fn prefetch(&self) -> usize {
        self.lately.prefetch(self.config.prefetch, self.concurrency)
    }

    /// Stops taking attempts: those waiting for a slot are handed back at
    /// once (they run elsewhere); running ones may finish within the grace.
    /// The next heartbeat says it has no slots, so nothing more is placed.
    pub(super) fn begin_stop(&mut self) {
        self.stopping = Some(Instant::now());
        tracing::info!(
            running = self.running.len(),
            handed_back = self.waiting.len(),
            grace_secs = self.config.stop_grace.as_secs_f64(),
            "worker stopping; letting running tasks finish"
        );
        for waiting in std::mem::take(&mut self.waiting) {
            self.hand_back(&waiting);
        }
    }

    /// Starts waiting attempts while slots are free, in the order they
    /// came (one whose task still runs an earlier attempt here waits).
    pub(super) fn start_waiting(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let mut index = 0;
        while self.running.len() < self.concurrency && index < self.waiting.len() {
            if self
                .waiting
                .get(index)
                .is_some_and(|waiting| self.running.contains_key(&waiting.task))
            {
                index += 1;
                continue;
            }
            let Some(next) = self.waiting.remove(index) else {
                break;
            };
            self.start_attempt(next);
        }
    }

    /// Handles one message from the scheduler (one request or several),
    /// taken from `queue`, once its signature is checked: one unsigned or
    /// signed with another key is counted (the next heartbeat says so) and
    /// dropped unread.
    pub(super) fn control(&mut self, queue: &str, delivery: &lapin::message::Delivery) {
        if let Err(refusal) = self.gate.check(delivery) {
            refusal.log(queue);
            return;
        }
        match decode::<Control>(&delivery.data) {
            Ok(messages) => {
                for message in messages {
                    self.one_control(message);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "dropping a malformed message from the scheduler");
            }
        }
    }

    fn one_control(&mut self, message: Control) {
        match message {
            Control::Run {
                task,
                attempt,
                placement,
                spec,
                timeout_ms,
                lease_ms,
                gpu_ids,
                again,
            } => {
                self.learn_lease(Duration::from_millis(lease_ms));
                self.placed(Waiting {
                    task,
                    attempt,
                    placement,
                    again,
                    spec: *spec,
                    timeout_ms,
                    gpu_ids,
                });
            }
            Control::Lease { lease_ms, protocol } => {
                if protocol < PROTOCOL {
                    tracing::error!(
                        scheduler_protocol = protocol,
                        worker_protocol = PROTOCOL,
                        "the scheduler is of an older Taskdeck version and cannot read this worker's reports; upgrade the scheduler before its workers"
                    );
                }
                self.learn_lease(Duration::from_millis(lease_ms));
            }
            Control::Applied { stream, upto } => self.applied(stream, upto),
            Control::Reclaim { task, attempt } => {
                if let Some(waiting) = self.take_waiting(task, attempt) {
                    tracing::debug!(%task, attempt, "handing back an attempt that had not started");
                    self.hand_back(&waiting);
                }
            }
            Control::Stop {
                task,
                attempt,
                reason,
            } => {
                let reason = StopReason::from(reason);
                if let Some(waiting) = self.take_waiting(task, attempt) {
                    self.stop_waiting(&waiting, reason);
                } else if let Some(run) = self.running.get_mut(&task)
                    && run.attempt == attempt
                {
                    tracing::info!(%task, attempt, ?reason, "stopping an attempt as asked");
                    run.cancel.cancel(reason);
                    run.stop_asked.get_or_insert((Instant::now(), reason));
                }
            }
        }
    }

    /// Takes a placement: queued for a slot unless it is one this worker
    /// has already (the scheduler sends a placement again when its
    /// connection dropped before the broker confirmed it, and the broker
    /// delivers again what was not acknowledged when this worker's
    /// connection dropped).
    fn placed(&mut self, placed: Waiting) {
        let (task, attempt) = (placed.task, placed.attempt);
        let known = self.ended_recently.contains(&placed)
            || self
                .running
                .get(&task)
                .is_some_and(|run| run.attempt == attempt)
            || self
                .waiting
                .iter()
                .any(|waiting| waiting.task == task && waiting.attempt == attempt);
        if known {
            tracing::debug!(%task, attempt, "ignoring a placement this worker already has");
            return;
        }
        if self.stopping.is_some() {
            // Placed before the scheduler heard that this worker stops.
            self.hand_back(&placed);
            return;
        }
        self.waiting.push_back(placed);
    }

    /// Removes a waiting attempt; none when it is not waiting here.
    fn take_waiting(&mut self, task: TaskId, attempt: u32) -> Option<Waiting> {
        let index = self
            .waiting
            .iter()
            .position(|waiting| waiting.task == task && waiting.attempt == attempt)?;
        self.waiting.remove(index)
    }

    /// A waiting attempt asked to stop: it never starts. Cancelled and timed
    /// out attempts end so; one stopped by a pause or a shutdown is handed
    /// back, to run later without counting.
    fn stop_waiting(&mut self, waiting: &Waiting, reason: StopReason) {
        self.ended_recently
            .insert(waiting.placement, waiting.task, waiting.attempt);
        match reason {
            StopReason::Paused | StopReason::Shutdown => self.hand_back(waiting),
            StopReason::Cancelled | StopReason::TimedOut => {
                self.report(finished(
                    &self.config.name,
                    waiting.task,
                    waiting.attempt,
                    WireOutcome::Error {
                        message: "stopped before it started".to_owned(),
                        retryable: false,
                        stop: Some(reason.into()),
                    },
                    0,
                ));
            }
        }
    }

    /// Reports an attempt given back without running it.
    fn hand_back(&mut self, waiting: &Waiting) {
        self.ended_recently
            .insert(waiting.placement, waiting.task, waiting.attempt);
        self.report(WorkerEvent::Release {
            worker: self.config.name.clone(),
            task: waiting.task,
            attempt: waiting.attempt,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(task: u64, attempt: u32, placement: u64, again: bool) -> Waiting {
        Waiting {
            task: TaskId(task),
            attempt,
            placement,
            again,
            spec: TaskSpec::new("noop", Vec::new()),
            timeout_ms: None,
            gpu_ids: Vec::new(),
        }
    }

    #[test]
    fn an_ended_placement_is_known_and_an_attempt_sent_again_is_too() {
        let mut ended = EndedRecently::default();
        ended.insert(7, TaskId(1), 1);
        assert!(
            ended.contains(&placed(1, 1, 7, false)),
            "the same placement"
        );
        assert!(
            !ended.contains(&placed(1, 1, 8, false)),
            "a new placement of the attempt (after a hand-back) runs"
        );
        assert!(
            ended.contains(&placed(1, 1, 9, true)),
            "sent again by a restarted scheduler: that attempt ran here"
        );
        assert!(!ended.contains(&placed(1, 2, 10, true)));
        for placement in 100..100 + ENDED_REMEMBERED as u64 {
            ended.insert(placement, TaskId(placement), 1);
        }
        assert!(
            !ended.contains(&placed(1, 1, 7, false)),
            "the oldest are forgotten"
        );
        assert_eq!(ended.order.len(), ENDED_REMEMBERED);
    }
}
