//! Attempts that run on worker processes reached through a broker: leases
//! renewed by heartbeats, results, and the workers themselves (placing
//! attempts on them is in `place`).
//!
//! The scheduler keeps ownership of every task: a worker runs only the
//! attempts placed on it here, and an attempt whose lease is not renewed is
//! counted as lost and retried like any other failure.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::{AttemptResult, Core, GpuDevice, Settled, WorkerId};
use crate::model::{GpuState, HostSummary, TaskId, TaskLog};
use crate::tasks::StopReason;

/// A worker process as the scheduler knows it.
#[derive(Debug, Clone)]
pub struct RemoteWorker {
    /// Its unique name.
    pub name: String,
    /// The host it runs on (empty until it was heard from).
    pub host: String,
    /// Attempts it runs at once (0 while it stops).
    pub concurrency: usize,
    /// Attempts it keeps waiting for a slot beyond those it runs.
    pub prefetch: usize,
    /// It takes attempts placed on it (it speaks the scheduler's protocol).
    pub takes_placements: bool,
    /// Tasks placed on it that it has not finished (running, or waiting
    /// there for a slot).
    pub running: BTreeSet<TaskId>,
    /// Of those, the ones it was asked to hand back.
    pub reclaiming: BTreeSet<TaskId>,
    /// Attempts it has finished.
    pub tasks_run: u64,
    /// Attempts of those that failed.
    pub tasks_failed: u64,
    /// When its last message arrived (none: only known from the store).
    pub last_heard: Option<Instant>,
    /// Its host's load, from its last heartbeat.
    pub resources: Option<HostSummary>,
    /// It said goodbye.
    pub gone: bool,
    /// Its connection to the broker closed without a goodbye, and it has
    /// not been heard from since.
    pub disconnected: bool,
    /// An attempt's lease ran out on it, and it has not been heard from
    /// since: nothing is placed on it.
    pub silent: bool,
    /// Its current connection, from its heartbeats (0: not known).
    pub session: u64,
    /// Its GPU devices, from its last heartbeat.
    pub gpus: Vec<GpuDevice>,
    /// Messages it refused (unsigned, or signed with another key) since
    /// this scheduler started, from its heartbeats.
    pub refused_messages: u64,
    /// The count its last heartbeat gave (its own, since its process
    /// started).
    refused_reported: u64,
}

/// Broker messages refused since the scheduler started, for being unsigned
/// or signed with another key: by the scheduler, and by its worker
/// processes as their heartbeats report. They only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerRefusals {
    /// Refused by this scheduler (reports, heartbeats, presence tokens).
    pub by_scheduler: u64,
    /// Refused by its worker processes (placements, stop requests...).
    pub by_workers: u64,
}

impl RemoteWorker {
    /// The memory other programs use on its devices (device id, MB), from
    /// its last heartbeat.
    pub(super) fn foreign_gpu_mb(&self) -> Vec<(u32, u64)> {
        let Some(HostSummary {
            gpus: GpuState::Available { devices },
            ..
        }) = &self.resources
        else {
            return Vec::new();
        };
        devices
            .iter()
            .filter_map(|gpu| Some((gpu.index, gpu.foreign_memory_bytes? / (1024 * 1024))))
            .collect()
    }
}

/// A request to stop an attempt on a worker process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopRequest {
    /// The worker running it.
    pub worker: String,
    /// The task.
    pub task: TaskId,
    /// The attempt to stop (a later one is left alone).
    pub attempt: u32,
    /// Why.
    pub reason: StopReason,
}

impl Core {
    /// The id of the worker process with this name, registering it when new.
    pub fn remote_id(&mut self, name: &str) -> WorkerId {
        if let Some(id) = self.remote_ids.get(name) {
            return *id;
        }
        self.next_worker += 1;
        let id = self.next_worker;
        self.remote_ids.insert(name.to_owned(), id);
        self.remote.insert(
            id,
            RemoteWorker {
                name: name.to_owned(),
                host: String::new(),
                concurrency: 0,
                prefetch: 0,
                takes_placements: false,
                running: BTreeSet::new(),
                reclaiming: BTreeSet::new(),
                tasks_run: 0,
                tasks_failed: 0,
                last_heard: None,
                resources: None,
                gone: false,
                disconnected: false,
                silent: false,
                session: 0,
                gpus: Vec::new(),
                refused_messages: 0,
                refused_reported: 0,
            },
        );
        id
    }

    /// Counts messages the scheduler's transport refused.
    pub fn refused_by_scheduler(&mut self, messages: u64) {
        self.refused.by_scheduler += messages;
    }

    fn heard_from(&mut self, worker: WorkerId, now: Instant) {
        if let Some(remote) = self.remote.get_mut(&worker) {
            remote.last_heard = Some(now);
            remote.gone = false;
            remote.disconnected = false;
            remote.silent = false;
        }
    }

    /// The broker says the worker's connection `session` closed without a
    /// goodbye (the process was killed, or its host went away): its
    /// attempts count as lost unless it is heard from within `grace` (it
    /// reconnects after a network blip). A report about a connection that
    /// is not the worker's current one changes nothing. Returns how many
    /// attempts now wait for the worker.
    pub fn connection_lost(
        &mut self,
        worker_name: &str,
        session: u64,
        grace: Duration,
        now: Instant,
    ) -> usize {
        let Some(&worker) = self.remote_ids.get(worker_name) else {
            return 0;
        };
        let Some(remote) = self.remote.get_mut(&worker) else {
            return 0;
        };
        if remote.gone || session == 0 || remote.session != session {
            return 0;
        }
        remote.disconnected = true;
        let until = now + grace;
        let running: Vec<TaskId> = remote.running.iter().copied().collect();
        let mut waiting = 0;
        for id in running {
            if let Some(run) = self
                .tasks
                .get_mut(&id)
                .and_then(|entry| entry.run.as_mut())
                .filter(|run| run.worker == worker)
            {
                run.lease_until = Some(run.lease_until.map_or(until, |at| at.min(until)));
                waiting += 1;
            }
        }
        waiting
    }

    /// Takes a worker's heartbeat: renews the leases of the attempts it
    /// lists that are still its own, and returns those it lists that are not
    /// (they were settled here meanwhile; the worker should stop them).
    pub fn heartbeat(
        &mut self,
        beat: &Heartbeat,
        lease: Duration,
        now: Instant,
    ) -> Vec<StopRequest> {
        let worker = self.remote_id(&beat.worker);
        self.heard_from(worker, now);
        if let Some(remote) = self.remote.get_mut(&worker) {
            remote.host.clone_from(&beat.host);
            remote.concurrency = beat.concurrency;
            remote.prefetch = beat.prefetch;
            remote.takes_placements = beat.takes_placements;
            remote.resources.clone_from(&beat.resources);
            remote.gpus.clone_from(&beat.gpus);
            if beat.session != 0 {
                remote.session = beat.session;
            }
            // Its count since its process started; one lower than the last
            // means it restarted, and all of it is new.
            let new = beat
                .refused_messages
                .checked_sub(remote.refused_reported)
                .unwrap_or(beat.refused_messages);
            remote.refused_reported = beat.refused_messages;
            remote.refused_messages += new;
            self.refused.by_workers += new;
        }
        let mut stale = Vec::new();
        for &(id, attempt) in &beat.running {
            let run = self
                .tasks
                .get_mut(&id)
                .and_then(|entry| entry.run.as_mut())
                .filter(|run| run.worker == worker && run.attempt == attempt);
            match run {
                Some(run) => run.lease_until = Some(now + lease),
                None => stale.push(StopRequest {
                    worker: beat.worker.clone(),
                    task: id,
                    attempt,
                    reason: StopReason::Cancelled,
                }),
            }
        }
        stale
    }

    /// Applies the end of an attempt a worker process reports; see
    /// [`Core::finish_attempt`]. `run_time_us` is the worker's own measure.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_remote(
        &mut self,
        worker_name: &str,
        id: TaskId,
        attempt: u32,
        result: AttemptResult,
        log: Option<TaskLog>,
        run_time_us: i64,
        now: Instant,
        now_us: i64,
    ) -> Settled {
        let worker = self.remote_id(worker_name);
        self.heard_from(worker, now);
        if let Some(log) = log {
            self.set_log(worker, id, attempt, log);
        }
        // An attempt may have waited on the worker for a slot after it was
        // placed: it started when its run time says.
        if let Some(entry) = self.tasks.get_mut(&id)
            && entry
                .run
                .as_ref()
                .is_some_and(|run| run.worker == worker && run.attempt == attempt)
        {
            let record = std::sync::Arc::make_mut(&mut entry.record);
            let started = now_us.saturating_sub(run_time_us.max(0));
            if record.started_at_us.is_some_and(|placed| placed < started) {
                if record.first_started_at_us == record.started_at_us {
                    record.first_started_at_us = Some(started);
                }
                record.started_at_us = Some(started);
            }
        }
        let mut settled = self.finish_attempt(worker, id, attempt, result, now, now_us);
        if let Some((succeeded, _)) = settled.attempt {
            settled.attempt = Some((succeeded, run_time_us.max(0)));
        }
        settled
    }

    /// A worker hands an attempt back without running it to its end (it is
    /// shutting down, or it had not started it and was asked to hand it
    /// back): the task is queued again and the attempt does not count.
    pub fn release_remote(&mut self, worker_name: &str, id: TaskId, attempt: u32) -> Settled {
        let worker = self.remote_id(worker_name);
        let mut settled = Settled::default();
        let current = self
            .tasks
            .get(&id)
            .and_then(|entry| entry.run.as_ref())
            .is_some_and(|run| run.worker == worker && run.attempt == attempt);
        if current {
            self.release_runner(worker, id, false, false);
            self.put_back(id, &mut settled);
        }
        settled
    }

    /// A worker process says it is stopping. It has reported or handed back
    /// every attempt it ran, so one it still holds here was placed on it
    /// after it stopped taking tasks: it never ran, and goes back to the
    /// queue without counting.
    pub fn remote_gone(&mut self, worker_name: &str, now: Instant) -> Vec<Settled> {
        let worker = self.remote_id(worker_name);
        let held: Vec<TaskId> = self
            .remote
            .get_mut(&worker)
            .map(|remote| {
                remote.gone = true;
                remote.last_heard = Some(now);
                remote.running.iter().copied().collect()
            })
            .unwrap_or_default();
        held.into_iter()
            .filter_map(|id| {
                let attempt = self.tasks.get(&id)?.run.as_ref()?.attempt;
                let settled = self.release_remote(worker_name, id, attempt);
                settled.change.is_some().then_some(settled)
            })
            .collect()
    }

    /// Gives every attempt on a worker process a lease until `until`: the
    /// broker was away, so no heartbeat could arrive, and silence then says
    /// nothing about the workers.
    pub fn renew_all_leases(&mut self, until: Instant) {
        for run in self
            .tasks
            .values_mut()
            .filter_map(|entry| entry.run.as_mut())
        {
            if run.lease_until.is_some() {
                run.lease_until = Some(until);
            }
        }
    }

    /// Attempts whose lease ran out are lost: counted as failed and retried
    /// by the retry policy. The caller also asks their workers to stop them.
    pub fn expire_leases(&mut self, now: Instant, now_us: i64) -> Vec<Settled> {
        let expired: Vec<(TaskId, WorkerId)> = self
            .tasks
            .iter()
            .filter_map(|(id, entry)| {
                let run = entry.run.as_ref()?;
                run.lease_until
                    .is_some_and(|until| until <= now)
                    .then_some((*id, run.worker))
            })
            .collect();
        expired
            .into_iter()
            .filter_map(|(id, worker)| {
                self.lose_remote(id, worker, "stopped sending heartbeats", now, now_us)
            })
            .collect()
    }

    fn lose_remote(
        &mut self,
        id: TaskId,
        worker: WorkerId,
        why: &str,
        now: Instant,
        now_us: i64,
    ) -> Option<Settled> {
        let entry = self.tasks.get_mut(&id)?;
        let run = entry.run.take_if(|run| run.worker == worker)?;
        let (name, disconnected) = self
            .remote
            .get_mut(&worker)
            .map(|remote| {
                // A worker that let a lease run out gets nothing more until
                // it is heard from again.
                remote.silent = true;
                (remote.name.clone(), remote.disconnected)
            })
            .unwrap_or_default();
        self.release_runner(worker, id, false, true);
        let mut settled = Settled {
            stop: Some(StopRequest {
                worker: name.clone(),
                task: id,
                attempt: run.attempt,
                reason: StopReason::Cancelled,
            }),
            ..Settled::default()
        };
        // The task did not fail, its worker did: the next attempt runs on
        // another at once (it still counts against the retries).
        let why = if disconnected {
            "lost its connection to the broker (its process ended or its host is unreachable)"
        } else {
            why
        };
        let message = format!("worker {name} {why}; attempt {} was lost", run.attempt);
        self.record_lost(id, message, false, now, now_us, &mut settled);
        Some(settled)
    }

    /// The most devices that could take `need` (see [`GpuDevice::can_take`])
    /// any worker process heard from within `lease` has.
    pub fn remote_gpu_capacity(
        &self,
        need: crate::scheduler::queue::GpuNeed,
        lease: Duration,
        now: Instant,
    ) -> usize {
        self.remote
            .values()
            .filter(|remote| {
                !remote.gone
                    && !remote.disconnected
                    && remote
                        .last_heard
                        .is_some_and(|at| now.saturating_duration_since(at) <= lease)
            })
            .map(|remote| {
                remote
                    .gpus
                    .iter()
                    .filter(|device| device.can_take(need))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// Slots of worker processes that are heard from, and how many of them
    /// run an attempt.
    pub fn remote_load(&self) -> (usize, usize) {
        self.remote
            .values()
            .filter(|remote| !remote.gone && !remote.disconnected && remote.last_heard.is_some())
            .fold((0, 0), |(total, busy), remote| {
                (total + remote.concurrency, busy + remote.running.len())
            })
    }

    /// The stop request for a running attempt, when a worker process runs it.
    pub(super) fn remote_stop(&self, id: TaskId, reason: StopReason) -> Option<StopRequest> {
        let run = self.tasks.get(&id)?.run.as_ref()?;
        let remote = self.remote.get(&run.worker)?;
        Some(StopRequest {
            worker: remote.name.clone(),
            task: id,
            attempt: run.attempt,
            reason,
        })
    }
}

/// A worker process's periodic report.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// Its unique name.
    pub worker: String,
    /// Its host name.
    pub host: String,
    /// Attempts it runs at once (0 while it stops).
    pub concurrency: usize,
    /// Attempts it keeps waiting for a slot beyond those it runs.
    pub prefetch: usize,
    /// It takes attempts placed on it (it speaks the scheduler's protocol).
    pub takes_placements: bool,
    /// The attempts placed on it that it has not finished (running or
    /// waiting for a slot): task and attempt number.
    pub running: Vec<(TaskId, u32)>,
    /// Its host's load.
    pub resources: Option<HostSummary>,
    /// Its GPU devices tasks may be given.
    pub gpus: Vec<GpuDevice>,
    /// Its current connection to the broker (0: not said).
    pub session: u64,
    /// Messages it refused since its process started.
    pub refused_messages: u64,
}
