//! A worker's slots on the broker: the consumers of free slots, the claims
//! of delivered tasks, and the scheduler's answers (grants, denials, stop
//! requests).

use super::*;

impl Worker {
    /// Stops taking tasks: cancels the consumers and gives back deliveries
    /// still waiting for an answer.
    pub(super) async fn begin_stop(&mut self, session: &mut Session) -> Result<(), LinkError> {
        self.stopping = Some(Instant::now());
        tracing::info!(
            running = self.running.len(),
            grace_secs = self.config.stop_grace.as_secs_f64(),
            "worker stopping; letting running tasks finish"
        );
        let tags: Vec<String> = session.consumers.keys().cloned().collect();
        for tag in tags {
            session
                .consume
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await?;
            if let Some(Slot {
                claim: Some(claim), ..
            }) = session.consumers.remove(&tag)
            {
                self.gpus_free.extend(claim.gpu_ids.iter().copied());
                claim
                    .acker
                    .reject(BasicRejectOptions { requeue: true })
                    .await?;
            }
        }
        Ok(())
    }

    /// Opens consumers for free slots, or closes idle ones beyond the size.
    ///
    /// Rules:
    /// - one consumer with a prefetch of one on the task queue per slot that
    ///   runs no attempt;
    /// - while a slot is free, one consumer on the queue of tasks needing `k`
    ///   GPUs for each `k` up to the devices now free (a delivery that finds
    ///   no room after all goes back to the queue and its consumer closes).
    pub(super) async fn top_up(&mut self, session: &mut Session) -> Result<(), LinkError> {
        if self.stopping.is_some() {
            return Ok(());
        }
        let cpu_consumers = session
            .consumers
            .values()
            .filter(|slot| slot.gpus == 0)
            .count();
        let cpu_wanted = self.concurrency.saturating_sub(self.running.len());
        for _ in cpu_consumers..cpu_wanted {
            self.consume(session, 0).await?;
        }
        let free_slots = self.free_slots(session);
        let mut surplus = cpu_consumers.saturating_sub(cpu_wanted);
        let free_gpus = self.gpus_free.len();
        let mut stale = Vec::new();
        for (tag, slot) in &session.consumers {
            if slot.claim.is_some() {
                continue;
            }
            let unwanted = if slot.gpus == 0 {
                surplus > 0
            } else {
                free_slots == 0 || usize::try_from(slot.gpus).unwrap_or(usize::MAX) > free_gpus
            };
            if unwanted {
                if slot.gpus == 0 {
                    surplus -= 1;
                }
                stale.push(tag.clone());
            }
        }
        for tag in stale {
            session.consumers.remove(&tag);
            session
                .consume
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await?;
        }
        if free_slots > 0 {
            for gpus in 1..=self.gpu_total() {
                let fits = usize::try_from(gpus).is_ok_and(|n| n <= free_gpus);
                let open = session.consumers.values().any(|slot| slot.gpus == gpus);
                if fits && !open {
                    self.consume(session, gpus).await?;
                }
            }
        }
        Ok(())
    }

    /// Starts a consumer with a prefetch of one on the task queue (`gpus`
    /// 0) or the queue of tasks that need `gpus` GPUs.
    pub(super) async fn consume(
        &mut self,
        session: &mut Session,
        gpus: u32,
    ) -> Result<(), LinkError> {
        self.next_tag += 1;
        let tag = format!("{}-slot-{}", self.config.name, self.next_tag);
        let queue = match gpus {
            0 => self.config.names.tasks(),
            gpus => self.config.names.gpu_tasks(gpus),
        };
        let consumer = session
            .consume
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        session
            .consumers
            .insert(tag.clone(), Slot { gpus, claim: None });
        tokio::spawn(forward(consumer, tag, session.deliveries_tx.clone()));
        Ok(())
    }

    /// Slots neither running an attempt nor holding a claim.
    pub(super) fn free_slots(&self, session: &Session) -> usize {
        let claimed = session
            .consumers
            .values()
            .filter(|slot| slot.claim.is_some())
            .count();
        self.concurrency
            .saturating_sub(self.running.len() + claimed)
    }

    /// The GPU devices this worker offers.
    pub(super) fn gpu_total(&self) -> u32 {
        u32::try_from(self.config.gpus.len()).unwrap_or(u32::MAX)
    }

    /// Free devices with enough memory for `spec`, `spec.gpus` of them, or
    /// none when there are not that many.
    pub(super) fn pick_gpus(&self, spec: &TaskSpec) -> Option<Vec<u32>> {
        let wanted = usize::try_from(spec.gpus).ok()?;
        let picked: Vec<u32> = self
            .config
            .gpus
            .iter()
            .filter(|device| self.gpus_free.contains(&device.id))
            .filter(|device| device.has_memory(spec.gpu_memory_mb))
            .map(|device| device.id)
            .take(wanted)
            .collect();
        (picked.len() == wanted).then_some(picked)
    }

    pub(super) async fn delivered(
        &mut self,
        session: &mut Session,
        tag: String,
        delivery: Delivery,
    ) -> Result<(), LinkError> {
        let room = self.free_slots(session) > 0;
        let Some(slot) = session.consumers.get_mut(&tag) else {
            // A consumer cancelled meanwhile (stopping or shrinking).
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: true })
                .await?;
            return Ok(());
        };
        let slot_gpus = slot.gpus;
        let message = match serde_json::from_slice::<TaskMessage>(&delivery.data) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "dropping a malformed task message");
                delivery.acker.ack(BasicAckOptions::default()).await?;
                return Ok(());
            }
        };
        if self.running.contains_key(&message.task) {
            // A duplicate of what this worker already runs.
            delivery.acker.ack(BasicAckOptions::default()).await?;
            return Ok(());
        }
        let gpu_ids = match slot_gpus {
            0 => Some(Vec::new()),
            _ => self.pick_gpus(&message.spec),
        };
        let (true, Some(gpu_ids)) = (room, gpu_ids) else {
            // Another consumer took the last slot or the devices first: the
            // task goes back for someone else, and this consumer closes.
            session.consumers.remove(&tag);
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: true })
                .await?;
            session
                .consume
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await?;
            return Ok(());
        };
        for id in &gpu_ids {
            self.gpus_free.remove(id);
        }
        let task = message.task;
        let Some(slot) = session.consumers.get_mut(&tag) else {
            return Ok(());
        };
        slot.claim = Some(Claim {
            task,
            spec: message.spec,
            acker: delivery.acker,
            sent_at: Instant::now(),
            gpu_ids: gpu_ids.clone(),
        });
        self.send_claim(session, task, gpu_ids).await?;
        // Devices set aside may close GPU consumers that no longer fit.
        self.top_up(session).await
    }

    /// Asks the scheduler for a task. Not waited for: the answer comes back
    /// on the control queue; a claim or answer lost on the way is sent again
    /// after [`CLAIM_RESEND`].
    pub(super) async fn send_claim(
        &self,
        session: &Session,
        task: TaskId,
        gpu_ids: Vec<u32>,
    ) -> Result<(), LinkError> {
        let claim = WorkerEvent::Claim {
            worker: self.config.name.clone(),
            task,
            gpu_ids,
        };
        amqp::publish(
            &session.publish,
            &self.config.names.events(),
            &claim,
            0,
            Keep::Transient,
        )
        .await?;
        Ok(())
    }

    /// Sends again the claims that got no answer in time.
    pub(super) async fn resend_claims(&self, session: &mut Session) -> Result<(), LinkError> {
        let now = Instant::now();
        let mut stale = Vec::new();
        for claim in session
            .consumers
            .values_mut()
            .filter_map(|slot| slot.claim.as_mut())
        {
            if now >= claim.sent_at + CLAIM_RESEND {
                claim.sent_at = now;
                stale.push((claim.task, claim.gpu_ids.clone()));
            }
        }
        for (task, gpu_ids) in stale {
            tracing::debug!(%task, "no answer to a claim yet; asking again");
            self.send_claim(session, task, gpu_ids).await?;
        }
        Ok(())
    }

    pub(super) async fn control(
        &mut self,
        session: &mut Session,
        data: &[u8],
    ) -> Result<(), LinkError> {
        let message = match serde_json::from_slice::<Control>(data) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "dropping a malformed message from the scheduler");
                return Ok(());
            }
        };
        match message {
            Control::Grant {
                task,
                attempt,
                timeout_ms,
                lease_ms,
            } => {
                if let Some(lease_ms) = lease_ms {
                    self.learn_lease(Duration::from_millis(lease_ms));
                }
                self.granted(session, task, attempt, timeout_ms).await?;
            }
            Control::Deny { task, reason } => {
                if let Some((_, claim)) = take_claim(session, task) {
                    tracing::debug!(%task, %reason, "claim denied; dropping the message");
                    self.gpus_free.extend(claim.gpu_ids.iter().copied());
                    session.beside(async move {
                        claim.acker.ack(BasicAckOptions::default()).await?;
                        Ok(())
                    });
                }
            }
            Control::Stop {
                task,
                attempt,
                reason,
            } => {
                if let Some(run) = self.running.get_mut(&task)
                    && run.attempt == attempt
                {
                    let reason = StopReason::from(reason);
                    tracing::info!(%task, attempt, ?reason, "stopping an attempt as asked");
                    run.cancel.cancel(reason);
                    run.stop_asked.get_or_insert((Instant::now(), reason));
                }
            }
        }
        Ok(())
    }

    pub(super) async fn granted(
        &mut self,
        session: &mut Session,
        task: TaskId,
        attempt: u32,
        timeout_ms: Option<u64>,
    ) -> Result<(), LinkError> {
        let Some((tag, claim)) = take_claim(session, task) else {
            if self
                .running
                .get(&task)
                .is_none_or(|run| run.attempt != attempt)
            {
                // Granted after this worker lost the delivery (reconnect or
                // stop): hand it back so it is queued again at once.
                self.report(WorkerEvent::Release {
                    worker: self.config.name.clone(),
                    task,
                    attempt,
                });
                self.flush_outbox(session).await?;
            }
            return Ok(());
        };
        // Cancel first, then acknowledge: the broker must not push another
        // task into the slot this attempt now takes. Both run beside the
        // loop; the attempt starts at once (the grant is what counts).
        session.consumers.remove(&tag);
        let Claim {
            spec,
            acker,
            gpu_ids,
            ..
        } = claim;
        let channel = session.consume.clone();
        session.beside(async move {
            channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await?;
            acker.ack(BasicAckOptions::default()).await?;
            Ok(())
        });
        self.start_attempt(task, attempt, timeout_ms, spec, gpu_ids);
        Ok(())
    }
}

fn take_claim(session: &mut Session, task: TaskId) -> Option<(String, Claim)> {
    let tag = session
        .consumers
        .iter()
        .find(|(_, slot)| slot.claim.as_ref().is_some_and(|claim| claim.task == task))
        .map(|(tag, _)| tag.clone())?;
    let claim = session.consumers.get_mut(&tag)?.claim.take()?;
    Some((tag, claim))
}
