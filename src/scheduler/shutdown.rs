//! Graceful shutdown: stop taking work, let running tasks finish within the
//! grace period, put back what does not, close the store, join threads.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Scheduler, ShutdownReport};
use crate::store::StoreError;
use crate::tasks::StopReason;

/// How long shutdown waits for stopped tasks and exiting threads.
const STOP_WAIT: Duration = Duration::from_secs(5);

impl Scheduler {
    /// Stops gracefully: no new submits, workers take no new tasks, running
    /// tasks get the grace period to finish, then are asked to stop and put
    /// back in the queue; the store is flushed. Calling it again does nothing.
    pub fn shutdown(&self) -> Result<ShutdownReport, StoreError> {
        let inner = &self.inner;
        if inner.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(ShutdownReport::default());
        }
        inner.accepting.store(false, Ordering::Release);
        {
            let mut core = inner.core.lock();
            core.accepting = false;
            core.dispatching = false;
            core.target_workers = 0;
        }
        inner.signal_work(true);
        let grace_deadline = Instant::now() + inner.config.shutdown_grace;
        if !self.wait_workers_idle(grace_deadline) {
            let tokens = inner.core.lock().running_tokens();
            tracing::warn!(
                running = tokens.len(),
                "grace period over; asking running tasks to stop"
            );
            for token in tokens {
                token.cancel(StopReason::Shutdown);
            }
            self.wait_workers_idle(Instant::now() + STOP_WAIT);
        }
        let (put_back, left_queued) = {
            let mut core = inner.core.lock();
            let changes = core.put_back_running();
            let put_back = changes.len();
            drop(core);
            for change in changes {
                inner.emit(change);
            }
            (put_back, inner.core.lock().active())
        };
        inner.timer.stop();
        self.join_threads();
        if let Some(store) = &inner.store {
            store.close()?;
        }
        tracing::info!(put_back, left_queued, "scheduler stopped");
        Ok(ShutdownReport {
            put_back,
            left_queued,
        })
    }

    /// Waits until no worker runs an attempt; false at the deadline.
    fn wait_workers_idle(&self, deadline: Instant) -> bool {
        let mut core = self.inner.core.lock();
        while core.busy() > 0 {
            if self
                .inner
                .state_changed
                .wait_until(&mut core, deadline)
                .timed_out()
            {
                return core.busy() == 0;
            }
        }
        true
    }

    /// Joins the timer and every worker thread that has exited; a thread
    /// stuck in a task that ignores its stop request is left behind.
    fn join_threads(&self) {
        let mut threads = std::mem::take(&mut *self.inner.threads.lock());
        if let Some(timer) = threads.timer.take()
            && timer.join().is_err()
        {
            tracing::error!("the timer thread panicked");
        }
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            threads.workers.retain(|_, handle| !handle.is_finished());
            if threads.workers.is_empty() {
                break;
            }
            match self.inner.exited.1.recv_deadline(deadline) {
                // The thread that sent this is on its way out: joining is brief.
                Ok(id) => {
                    if let Some(handle) = threads.workers.remove(&id) {
                        // A worker's panic was already reported by its guard.
                        let _ = handle.join();
                    }
                }
                Err(_) => {
                    tracing::warn!(
                        threads = threads.workers.len(),
                        "worker threads still inside tasks at exit; leaving them"
                    );
                    break;
                }
            }
        }
    }
}
