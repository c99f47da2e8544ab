//! One connection's life: consuming worker reports, placing tasks and
//! sending placements, stop and hand-back requests, checking leases.

use super::*;

/// The bridge's side of the connection, driving the scheduler.
pub(super) struct Link {
    scheduler: TransportLink,
    traffic: Arc<Traffic>,
    config: BridgeConfig,
    hooks: Arc<Hooks>,
    /// Workers of an older protocol already warned about.
    warned: Mutex<HashSet<String>>,
    /// Each worker's connection that was told the lease.
    told_lease: Mutex<HashMap<String, u64>>,
    /// The next placement's id (from the clock at start, so ids stay unique
    /// across restarts).
    next_placement: AtomicU64,
    /// Signs what the scheduler sends.
    signer: Signer,
    /// Checks what workers send.
    gate: Mutex<Gate>,
    /// Counts this bridge's connections; odd while one is up. A worker's
    /// closed connection costs its attempts only if the bridge kept its
    /// own connection through the grace (else the broker went away, and
    /// the next connection renews every lease).
    connection: Arc<AtomicU64>,
}

/// One placement round, ready to send: placements (by task and attempt,
/// with their worker) and hand-back requests.
struct Round {
    runs: Vec<Outgoing>,
    reclaims: Vec<(String, Control)>,
    /// The round was as large as allowed: there may be more to place.
    full: bool,
}

/// Placements sent whose attempts may still run on their worker, by task
/// and attempt: the broker keeps them in memory only, so they are all sent
/// again on each new connection (a worker ignores one it has or ran).
type Sent = BTreeMap<Attempt, (String, Control)>;

/// What the bridge keeps across connections.
#[derive(Default)]
pub(super) struct Outstanding {
    sent: Sent,
    answers: Answers,
}

impl Link {
    pub(super) fn new(
        scheduler: TransportLink,
        traffic: Arc<Traffic>,
        config: BridgeConfig,
        hooks: Arc<Hooks>,
    ) -> Self {
        Self {
            scheduler,
            traffic,
            signer: Signer::new(config.key.clone(), "scheduler"),
            gate: Mutex::new(Gate::new(config.key.clone())),
            config,
            hooks,
            warned: Mutex::new(HashSet::new()),
            told_lease: Mutex::new(HashMap::new()),
            next_placement: AtomicU64::new(u64::try_from(crate::model::now_us()).unwrap_or(1)),
            connection: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(super) async fn run(
        self,
        mut stops: mpsc::UnboundedReceiver<StopRequest>,
        mut work: mpsc::Receiver<()>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut reconnect = Reconnect::default();
        let mut outstanding = Outstanding::default();
        loop {
            let outcome = self
                .session(
                    &mut stops,
                    &mut work,
                    &mut shutdown,
                    &mut reconnect,
                    &mut outstanding,
                )
                .await;
            match outcome {
                Ok(()) => return,
                Err(error) => {
                    let message = error.to_string();
                    *self.hooks.status.lock() = Err(format!(
                        "the broker at {} is unavailable: {message}",
                        self.config.url
                    ));
                    let delay = reconnect.delay();
                    tracing::warn!(
                        error = %message,
                        retry_in_ms = delay.as_millis() as u64,
                        "broker connection failed; retrying"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }

    /// One connection's life.
    async fn session(
        &self,
        stops: &mut mpsc::UnboundedReceiver<StopRequest>,
        work: &mut mpsc::Receiver<()>,
        shutdown: &mut watch::Receiver<bool>,
        reconnect: &mut Reconnect,
        outstanding: &mut Outstanding,
    ) -> Result<(), LinkError> {
        let connection = amqp::connect(&self.config.url, "taskdeck scheduler").await?;
        // Up from here to the end of this call, whatever ends it.
        let _up = Up::new(&self.connection);
        let publisher = connection.create_channel().await?;
        amqp::declare_shared(&publisher, &self.config.names).await?;
        let names = &self.config.names;
        let consumer_channel = connection.create_channel().await?;
        consumer_channel
            .basic_qos(EVENT_BATCH as u16, BasicQosOptions::default())
            .await?;
        let mut events = consumer_channel
            .basic_consume(
                names.events().into(),
                "taskdeck-scheduler".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // Acknowledgements finish beside the loop.
        let (beside, mut failures) = Beside::new();
        reconnect.reset();
        // Leases were not renewed while the broker was away.
        self.scheduler.renew_all_leases();
        let sender = Sender {
            channel: &publisher,
            signer: &self.signer,
            names,
            traffic: &self.traffic,
        };
        // What the broker may have lost goes out again first.
        self.forget_ended(&mut outstanding.sent);
        if !outstanding.sent.is_empty() {
            tracing::info!(
                placements = outstanding.sent.len(),
                "sending again the placements whose attempts may still run"
            );
            let again: Vec<Outgoing> = outstanding
                .sent
                .iter()
                .map(|(key, (worker, control))| (*key, worker.clone(), control.clone()))
                .collect();
            sender.send_runs(again, &mut outstanding.answers).await?;
        }
        self.resend_recovered(&sender, outstanding).await?;
        *self.hooks.status.lock() = Ok(());
        tracing::info!(broker = %self.config.url, namespace = names.namespace(), "connected to the broker");
        self.place(&sender, outstanding).await?;
        let mut lease_check = tokio::time::interval(LEASE_CHECK);
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    let _ = connection.close(200, "taskdeck scheduler stopping".into()).await;
                    return Ok(());
                }
                Some(()) = work.recv() => self.place(&sender, outstanding).await?,
                Some(stop) = stops.recv() => {
                    let control = Control::Stop {
                        task: stop.task,
                        attempt: stop.attempt,
                        reason: stop.reason.into(),
                    };
                    sender.send(&stop.worker, &control).await?;
                }
                delivery = events.next() => {
                    let Some(delivery) = delivery else {
                        return Err(LinkError::Connect {
                            url: self.config.url.to_string(),
                            reason: "the broker cancelled the event consumer".into(),
                        });
                    };
                    let mut batch = vec![delivery?];
                    while batch.len() < EVENT_BATCH {
                        match futures_lite::future::poll_once(events.next()).await {
                            Some(Some(next)) => batch.push(next?),
                            _ => break,
                        }
                    }
                    self.apply_events(&sender, &beside, batch, outstanding).await?;
                }
                Some(error) = failures.recv() => return Err(error),
                _ = lease_check.tick() => {
                    let lost = self.scheduler.expire_leases();
                    if lost > 0 {
                        tracing::warn!(lost, "attempts lost: their workers stopped sending heartbeats");
                    }
                    self.place(&sender, outstanding).await?;
                    self.forget_ended(&mut outstanding.sent);
                    sender.send_answers(&mut outstanding.answers).await?;
                    if !connection.status().connected() {
                        return Err(LinkError::Connect {
                            url: self.config.url.to_string(),
                            reason: "the connection closed".into(),
                        });
                    }
                }
            }
        }
    }

    /// Places what may start and sends it, round after round while rounds
    /// come back full; sends the hand-back requests the rounds decided. The
    /// attempts' running state is committed before they are sent, so a
    /// restarted scheduler knows every attempt a worker may have got.
    async fn place(
        &self,
        sender: &Sender<'_>,
        outstanding: &mut Outstanding,
    ) -> Result<(), LinkError> {
        loop {
            let round = self.take_placements(&mut outstanding.sent);
            if round.runs.is_empty() && round.reclaims.is_empty() {
                return Ok(());
            }
            if !round.runs.is_empty() {
                self.commit()?;
            }
            let full = round.full;
            self.send_round(sender, round, &mut outstanding.answers)
                .await?;
            if !full {
                return Ok(());
            }
        }
    }

    /// Sends again the attempts recovered at start as running on workers
    /// (the previous scheduler process may have died between committing
    /// and sending them); a worker that has or ran one ignores it.
    async fn resend_recovered(
        &self,
        sender: &Sender<'_>,
        outstanding: &mut Outstanding,
    ) -> Result<(), LinkError> {
        let runs: Vec<Outgoing> = self
            .scheduler
            .recovered_placements()
            .into_iter()
            .map(|run| self.outgoing(run, true))
            .filter(|(key, _, _)| !outstanding.sent.contains_key(key))
            .collect();
        if !runs.is_empty() {
            tracing::info!(
                attempts = runs.len(),
                "sending again the attempts that were running on workers at the last stop"
            );
        }
        for (key, worker, control) in &runs {
            outstanding
                .sent
                .insert(*key, (worker.clone(), control.clone()));
        }
        sender.send_runs(runs, &mut outstanding.answers).await
    }

    /// Forgets the placements whose attempts ended or left their worker.
    fn forget_ended(&self, sent: &mut Sent) {
        if sent.is_empty() {
            return;
        }
        let placed = self.scheduler.placed_attempts();
        sent.retain(|(task, attempt), (worker, _)| {
            placed.contains(&(*task, *attempt, worker.clone()))
        });
    }

    /// The message of a placement, with a new placement id (`again`: sent
    /// again by a restarted scheduler).
    fn outgoing(&self, run: Run, again: bool) -> Outgoing {
        let mut spec = Box::new(run.record.spec.clone());
        // A fan-in's list may be long, and a worker has no use for it.
        spec.depends_on = Vec::new();
        let control = Control::Run {
            task: run.record.id,
            attempt: run.attempt,
            placement: self.next_placement.fetch_add(1, Ordering::Relaxed),
            spec,
            timeout_ms: run.record.spec.timeout_ms,
            lease_ms: self.lease_ms(),
            gpu_ids: run.gpu_ids,
            again,
        };
        ((run.record.id, run.attempt), run.worker, control)
    }

    /// The scheduler's lease, as the workers are told it.
    fn lease_ms(&self) -> u64 {
        u64::try_from(self.config.lease.as_millis()).unwrap_or(u64::MAX)
    }

    /// One placement round, ready to send (recorded as sent).
    fn take_placements(&self, sent: &mut Sent) -> Round {
        let Placed { runs, reclaims, .. } = self.scheduler.place(PLACE_BATCH);
        let full = runs.len() == PLACE_BATCH;
        let runs = runs
            .into_iter()
            .map(|run| {
                let (key, worker, control) = self.outgoing(run, false);
                sent.insert(key, (worker.clone(), control.clone()));
                (key, worker, control)
            })
            .collect();
        let reclaims = reclaims
            .into_iter()
            .map(|reclaim| {
                let control = Control::Reclaim {
                    task: reclaim.task,
                    attempt: reclaim.attempt,
                };
                (reclaim.worker, control)
            })
            .collect();
        Round {
            runs,
            reclaims,
            full,
        }
    }

    async fn send_round(
        &self,
        sender: &Sender<'_>,
        round: Round,
        answers: &mut Answers,
    ) -> Result<(), LinkError> {
        sender.send_runs(round.runs, answers).await?;
        for (worker, control) in &round.reclaims {
            sender.send(worker, control).await?;
        }
        Ok(())
    }

    /// Commits every change so far to the store.
    fn commit(&self) -> Result<(), LinkError> {
        self.scheduler.flush().map_err(|error| {
            tracing::error!(%error, "cannot commit to the store; nothing is acknowledged or sent");
            LinkError::Connect {
                url: self.config.url.to_string(),
                reason: format!("the store failed: {error}"),
            }
        })
    }

    /// Applies a batch of worker reports and places what their ended
    /// attempts made room for, commits both, answers and sends, and only
    /// then acknowledges the reports and tells their workers they were
    /// applied (with the placements, or on the next lease tick): a report
    /// is never lost.
    async fn apply_events(
        &self,
        sender: &Sender<'_>,
        beside: &Beside,
        batch: Vec<Delivery>,
        outstanding: &mut Outstanding,
    ) -> Result<(), LinkError> {
        let mut answers: Vec<(String, Control)> = Vec::new();
        let mut applied: Vec<(String, u64, u64)> = Vec::new();
        self.traffic
            .consumed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let events_queue = self.config.names.events();
        let mut refused = 0;
        for delivery in &batch {
            // Checked before anything is read: an unsigned or forged report
            // is dropped with the batch's acknowledgement, unread.
            let checked = self.gate.lock().check(delivery);
            if let Err(refusal) = checked {
                refusal.log(&events_queue);
                refused += 1;
                continue;
            }
            match decode::<WorkerEvent>(&delivery.data) {
                Ok(events) => {
                    // Reports applied before (sent again after a reconnect,
                    // or their copy from the broker's disk) are skipped.
                    let skip = match events.last() {
                        Some(WorkerEvent::Reports {
                            worker,
                            stream,
                            last,
                            first,
                        }) => outstanding.answers.applied_before(
                            worker,
                            *stream,
                            *first,
                            *last,
                            events.len() - 1,
                        ),
                        _ => 0,
                    };
                    for event in events.into_iter().skip(skip) {
                        match event {
                            WorkerEvent::Reports {
                                worker,
                                stream,
                                last,
                                first: _,
                            } => applied.push((worker, stream, last)),
                            WorkerEvent::Goodbye { ref worker } => {
                                outstanding.answers.forget(worker);
                                self.apply(event, &mut answers);
                            }
                            event => self.apply(event, &mut answers),
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "dropping a malformed worker report");
                }
            }
        }
        if refused > 0 {
            self.scheduler.refused(refused);
        }
        let round = self.take_placements(&mut outstanding.sent);
        let full = round.full;
        self.commit()?;
        for (worker, stream, last) in applied {
            outstanding.answers.applied(worker, stream, last);
        }
        // Stop requests are not waited for: a worker that misses one still
        // lists the attempt in its next heartbeat and is asked again.
        for (worker, control) in &answers {
            sender.send(worker, control).await?;
        }
        self.send_round(sender, round, &mut outstanding.answers)
            .await?;
        if let Some(last) = batch.last() {
            beside.ack_upto(last.acker.clone()).await?;
        }
        if full {
            self.place(sender, outstanding).await?;
        }
        Ok(())
    }

    fn apply(&self, event: WorkerEvent, answers: &mut Vec<(String, Control)>) {
        let scheduler = &self.scheduler;
        match event {
            WorkerEvent::Heartbeat {
                worker,
                host,
                concurrency,
                prefetch,
                protocol,
                running,
                resources,
                gpus,
                session,
                refused,
            } => {
                if protocol < PROTOCOL && self.warned.lock().insert(worker.clone()) {
                    tracing::warn!(
                        %worker,
                        protocol,
                        expected = PROTOCOL,
                        "a worker of an older Taskdeck version is connected; nothing is placed on it until it is upgraded"
                    );
                }
                let told = self.told_lease.lock().insert(worker.clone(), session);
                if told != Some(session) {
                    let lease_ms = self.lease_ms();
                    answers.push((
                        worker.clone(),
                        Control::Lease {
                            lease_ms,
                            protocol: PROTOCOL,
                        },
                    ));
                }
                let beat = Heartbeat {
                    worker,
                    host,
                    concurrency,
                    prefetch,
                    takes_placements: protocol >= PROTOCOL,
                    running,
                    resources,
                    gpus: gpus
                        .into_iter()
                        .map(|(id, memory_mb)| GpuDevice { id, memory_mb })
                        .collect(),
                    session,
                    refused_messages: refused,
                };
                for stop in scheduler.heartbeat(&beat) {
                    answers.push((
                        stop.worker,
                        Control::Stop {
                            task: stop.task,
                            attempt: stop.attempt,
                            reason: stop.reason.into(),
                        },
                    ));
                }
            }
            WorkerEvent::Finished {
                worker,
                task,
                attempt,
                outcome,
                run_time_us,
                log,
                ..
            } => {
                let outcome = match outcome {
                    WireOutcome::Completed { value } => RemoteOutcome::Completed(value),
                    WireOutcome::Error {
                        message,
                        retryable,
                        stop,
                    } => RemoteOutcome::Error(TaskError {
                        retryable,
                        stop: stop.map(Into::into),
                        message,
                    }),
                    WireOutcome::Panicked { message } => RemoteOutcome::Panicked(message),
                };
                scheduler.finish(&worker, task, attempt, outcome, log, run_time_us);
            }
            WorkerEvent::Release {
                worker,
                task,
                attempt,
            } => scheduler.release(&worker, task, attempt),
            WorkerEvent::Progress {
                task,
                attempt,
                reports,
                ..
            } => {
                for WireProgress {
                    fraction,
                    message,
                    metrics,
                } in reports
                {
                    match ProgressReport::new(fraction, message, metrics) {
                        // An attempt that ended meanwhile takes no more.
                        Ok(report) => {
                            let _ = scheduler.progress(task, attempt, report);
                        }
                        Err(error) => {
                            tracing::debug!(%task, %error, "a worker's progress report was refused");
                        }
                    }
                }
            }
            WorkerEvent::Log {
                task,
                attempt,
                offset,
                data,
                ..
            } => {
                if let Some(dir) = &self.config.log_dir {
                    super::logs::write_piece(dir, task, attempt, offset, &data);
                }
            }
            WorkerEvent::ConnectionLost { worker, session } => {
                let waiting = scheduler.connection_lost(&worker, session, RECONNECT_GRACE);
                if waiting > 0 {
                    tracing::warn!(
                        %worker,
                        attempts = waiting,
                        grace_ms = RECONNECT_GRACE.as_millis() as u64,
                        "worker's connection closed; its attempts run again unless it is back within the grace"
                    );
                    let scheduler = scheduler.clone();
                    let connection = Arc::clone(&self.connection);
                    let during = connection.load(Ordering::SeqCst);
                    tokio::spawn(async move {
                        tokio::time::sleep(RECONNECT_GRACE).await;
                        if connection.load(Ordering::SeqCst) == during {
                            scheduler.expire_leases();
                        }
                    });
                }
            }
            WorkerEvent::Goodbye { worker } => {
                tracing::info!(%worker, "worker stopped");
                self.told_lease.lock().remove(&worker);
                scheduler.worker_gone(&worker);
            }
            // Taken by the batch's caller.
            WorkerEvent::Reports { .. } => {}
        }
    }
}

/// Marks the bridge's connection up while it lives (odd counts: up).
struct Up<'a>(&'a AtomicU64);

impl<'a> Up<'a> {
    fn new(connection: &'a AtomicU64) -> Self {
        connection.fetch_add(1, Ordering::SeqCst);
        Self(connection)
    }
}

impl Drop for Up<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
