//! A worker's running attempts: their slot threads, deadlines and stop grace,
//! the heartbeat, and the outbox of reports waiting for the scheduler's
//! answer.

use super::*;

impl Worker {
    pub(super) fn start_attempt(&mut self, placed: Waiting) {
        let Waiting {
            task,
            attempt,
            placement,
            spec,
            again: _,
            timeout_ms,
            gpu_ids,
        } = placed;
        let cancel = CancelToken::new();
        let ctx = TaskContext::new(task, attempt, self.config.name.clone(), cancel.clone())
            .with_gpus(gpu_ids.clone())
            .with_progress_sink(Arc::clone(&self.progress_sink));
        let registry = Arc::clone(&self.config.registry);
        let ended = self.ended_tx.clone();
        let spawned = self.slots.run(Box::new(move || {
            let started_at_us = now_us();
            let begun = Instant::now();
            let outcome = run_attempt(&registry, &ctx, &spec);
            // Reports held back by the rate limit go before the end.
            ctx.flush_progress();
            let run_time_us = i64::try_from(begun.elapsed().as_micros()).unwrap_or(i64::MAX);
            // The worker may have gone; nothing to report to then.
            let _ = ended.send(Ended {
                task,
                attempt,
                outcome,
                log: ctx.take_log(),
                started_at_us,
                finished_at_us: now_us(),
                run_time_us,
            });
        }));
        self.running.insert(
            task,
            Running {
                attempt,
                placement,
                cancel,
                deadline: timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms)),
                stop_asked: None,
                log_shipped: 0,
                progress: Vec::new(),
            },
        );
        if let Err(error) = spawned {
            tracing::error!(%error, %task, "cannot start a thread for the task");
            self.release(task);
            self.report(finished(
                &self.config.name,
                task,
                attempt,
                WireOutcome::Error {
                    message: format!("the worker cannot start a thread: {error}"),
                    retryable: true,
                    stop: None,
                },
                0,
            ));
        }
    }

    /// Records an attempt's end for reporting, when it still counts here.
    pub(super) fn ended(&mut self, ended: Ended) {
        let current = self
            .running
            .get(&ended.task)
            .is_some_and(|run| run.attempt == ended.attempt);
        if !current {
            return;
        }
        // Its last progress (sent before its end, on another channel) and
        // output go before its end.
        while let Ok((task, attempt, report)) = self.progress_rx.try_recv() {
            self.took_progress(task, attempt, report);
        }
        self.ship_rest(ended.task);
        self.release(ended.task);
        if self.lately.took(ended.run_time_us) && self.config.prefetch == Prefetch::Auto {
            self.beat_now = true;
        }
        let outcome = match ended.outcome {
            RemoteOutcome::Completed(value) => WireOutcome::Completed { value },
            RemoteOutcome::Error(error) => WireOutcome::Error {
                message: error.message,
                retryable: error.retryable,
                stop: error.stop.map(WireStop::from),
            },
            RemoteOutcome::Panicked(message) => WireOutcome::Panicked { message },
        };
        self.report(WorkerEvent::Finished {
            worker: self.config.name.clone(),
            task: ended.task,
            attempt: ended.attempt,
            outcome,
            started_at_us: ended.started_at_us,
            finished_at_us: ended.finished_at_us,
            run_time_us: ended.run_time_us,
            log: ended.log,
        });
    }

    /// Enforces timeouts, the stop grace, and the wait for stopped attempts.
    pub(super) fn check_deadlines(&mut self) {
        let now = Instant::now();
        let grace_over = self
            .stopping
            .is_some_and(|since| now >= since + self.config.stop_grace);
        let mut abandoned = Vec::new();
        for (task, run) in &mut self.running {
            if run.stop_asked.is_none() {
                let reason = if run.deadline.is_some_and(|deadline| now >= deadline) {
                    Some(StopReason::TimedOut)
                } else if grace_over {
                    Some(StopReason::Shutdown)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    run.cancel.cancel(reason);
                    run.stop_asked = Some((now, reason));
                }
            }
            if let Some((asked, reason)) = run.stop_asked
                && now >= asked + STOP_WAIT
            {
                abandoned.push((*task, run.attempt, reason));
            }
        }
        for (task, attempt, reason) in abandoned {
            tracing::warn!(%task, attempt, "attempt did not stop when asked; leaving its thread behind");
            self.release(task);
            let event = if matches!(reason, StopReason::Shutdown | StopReason::Paused) {
                WorkerEvent::Release {
                    worker: self.config.name.clone(),
                    task,
                    attempt,
                }
            } else {
                finished(
                    &self.config.name,
                    task,
                    attempt,
                    WireOutcome::Error {
                        message: format!(
                            "did not stop within {} s of being asked; its thread was left behind",
                            STOP_WAIT.as_secs()
                        ),
                        retryable: true,
                        stop: Some(reason.into()),
                    },
                    0,
                )
            };
            self.report(event);
        }
    }

    /// Forgets a running attempt, freeing its slot; a placement of it sent
    /// again is ignored.
    pub(super) fn release(&mut self, task: TaskId) {
        if let Some(run) = self.running.remove(&task) {
            self.ended_recently.insert(run.placement, task, run.attempt);
        }
    }

    /// Asks every running attempt to stop (the broker is gone while the
    /// worker stops); their leases settle them on the scheduler's side.
    pub(super) fn abandon_all(&mut self) {
        for run in self.running.values() {
            run.cancel.cancel(StopReason::Shutdown);
        }
    }

    pub(super) async fn heartbeat(&self, session: &Session) -> Result<(), LinkError> {
        let resources = self
            .config
            .resources
            .as_ref()
            .and_then(|source| source())
            .map(|sample| HostSummary::from_sample(&sample));
        let mut running: Vec<(TaskId, u32)> = self
            .running
            .iter()
            .map(|(task, run)| (*task, run.attempt))
            .chain(
                self.waiting
                    .iter()
                    .map(|waiting| (waiting.task, waiting.attempt)),
            )
            .collect();
        running.sort_unstable();
        // A stopping worker has no slots for new attempts.
        let concurrency = if self.stopping.is_some() {
            0
        } else {
            self.concurrency
        };
        let beat = WorkerEvent::Heartbeat {
            worker: self.config.name.clone(),
            host: self.config.host.clone(),
            concurrency,
            prefetch: self.prefetch(),
            protocol: PROTOCOL,
            running,
            resources,
            gpus: self
                .config
                .gpus
                .iter()
                .map(|device| (device.id, device.memory_mb))
                .collect(),
            session: self.session_id,
            refused: self.gate.refused(),
        };
        amqp::publish(
            &session.publish,
            &self.signer,
            &self.config.names.events(),
            &beat,
            Keep::Transient,
        )
        .await?;
        Ok(())
    }

    /// Queues a report; it stays queued until the scheduler says it
    /// applied it, or the broker confirms it has it on disk.
    pub(super) fn report(&mut self, event: WorkerEvent) {
        self.next_report += 1;
        self.outbox.push_back((self.next_report, event));
    }

    /// The scheduler applied this process's reports up to `upto`.
    pub(super) fn applied(&mut self, stream: u64, upto: u64) {
        if stream == self.stream {
            self.outbox.retain(|(number, _)| *number > upto);
        }
    }

    /// Publishes the reports not yet published on this connection, in
    /// order, to the broker's memory; each message ends with the number of
    /// its last report, which the scheduler answers once it committed them.
    /// One not answered when the connection drops is published again on
    /// the next (the scheduler ignores a report it already applied).
    pub(super) async fn flush_outbox(&mut self, session: &mut Session) -> Result<(), LinkError> {
        let oldest = self.outbox.front().map_or(u64::MAX, |(number, _)| *number);
        while session
            .published
            .front()
            .is_some_and(|(last, _)| *last < oldest)
        {
            session.published.pop_front();
        }
        let upto = session.published_upto;
        // The outbox is in report order.
        let first_fresh = self.outbox.partition_point(|(number, _)| *number <= upto);
        let fresh: Vec<&(u64, WorkerEvent)> = self.outbox.range(first_fresh..).collect();
        let now = Instant::now();
        for batch in fresh.chunks(REPORT_BATCH) {
            self.publish_reports(session, batch, Keep::Transient)
                .await?;
            let last = batch.last().map_or(upto, |(number, _)| *number);
            session.published_upto = last;
            session.published.push_back((last, now));
        }
        Ok(())
    }

    /// Publishes reports again, to the broker's disk (persistent, confirmed):
    /// all those published and unanswered once the oldest has waited for a
    /// while (the scheduler may be down, and the broker may restart
    /// meanwhile), or all when leaving. A report leaves the outbox once
    /// confirmed.
    pub(super) async fn spill(
        &mut self,
        session: &mut Session,
        which: Spill,
    ) -> Result<(), LinkError> {
        let due_upto = match which {
            Spill::All => self.outbox.back().map_or(0, |(number, _)| *number),
            // Once the oldest waited that long, all that wait go together.
            Spill::Unanswered(after) => match session.published.front() {
                Some((_, when)) if when.elapsed() >= after => session.published_upto,
                _ => 0,
            },
        };
        // The outbox is in report order.
        let from = session.spilled_upto;
        let first = self.outbox.partition_point(|(number, _)| *number <= from);
        let end = self
            .outbox
            .partition_point(|(number, _)| *number <= due_upto);
        let due: Vec<&(u64, WorkerEvent)> = self.outbox.range(first..end.max(first)).collect();
        if due.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            reports = due.len(),
            "publishing unanswered reports to the broker's disk"
        );
        for batch in due.chunks(REPORT_BATCH) {
            let confirm = self.publish_reports(session, batch, Keep::Durable).await?;
            let (Some((first, _)), Some((last, _))) = (batch.first(), batch.last()) else {
                continue;
            };
            let range = (*first, *last);
            session.spilled_upto = *last;
            let confirmed = session.confirmed_tx.clone();
            session.beside.finish(async move {
                if confirm.await?.is_nack() {
                    return Err(LinkError::Nacked);
                }
                let _ = confirmed.send(range);
                Ok(())
            });
        }
        Ok(())
    }

    /// Publishes reports that wait together as one message, closed by the
    /// number of the last.
    async fn publish_reports(
        &self,
        session: &Session,
        batch: &[&(u64, WorkerEvent)],
        keep: Keep,
    ) -> Result<lapin::PublisherConfirm, LinkError> {
        let closing = WorkerEvent::Reports {
            worker: self.config.name.clone(),
            stream: self.stream,
            last: batch.last().map_or(0, |(number, _)| *number),
            first: batch.first().map(|(number, _)| *number),
        };
        let events: Vec<&WorkerEvent> = batch
            .iter()
            .map(|(_, event)| event)
            .chain(std::iter::once(&closing))
            .collect();
        amqp::publish(
            &session.publish,
            &self.signer,
            &self.config.names.events(),
            &events,
            keep,
        )
        .await
    }
}

pub(super) fn finished(
    worker: &str,
    task: TaskId,
    attempt: u32,
    outcome: WireOutcome,
    run_time_us: i64,
) -> WorkerEvent {
    let now = now_us();
    WorkerEvent::Finished {
        worker: worker.to_owned(),
        task,
        attempt,
        outcome,
        started_at_us: now - run_time_us,
        finished_at_us: now,
        run_time_us,
        log: None,
    }
}
