//! Worker threads: each pulls the next queued task the moment it is idle,
//! runs it with panics contained, and settles the attempt.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use super::Inner;
use super::core::{AttemptResult, Job, WorkerId};
use crate::model::now_us;
use crate::tasks::{ProgressSink, Registry, TaskContext, TaskError};

/// Starts worker threads until the pool has its target size.
pub(super) fn ensure_workers(inner: &Arc<Inner>) {
    loop {
        let (id, name) = {
            let mut core = inner.core.lock();
            if core.workers.len() >= core.target_workers {
                return;
            }
            core.add_worker()
        };
        let worker_inner = Arc::clone(inner);
        let thread_name = format!("taskdeck-{name}");
        let spawned = thread::Builder::new()
            .name(thread_name)
            .spawn(move || worker_main(worker_inner, id, name));
        match spawned {
            Ok(handle) => {
                inner.threads.lock().workers.insert(id, handle);
            }
            Err(error) => {
                tracing::error!(%error, "cannot start a worker thread; the pool stays smaller");
                let mut core = inner.core.lock();
                core.workers.remove(&id);
                core.target_workers = core.workers.len();
                return;
            }
        }
    }
}

/// Reports a worker's exit, and settles its attempt if it died.
struct ExitGuard {
    inner: Arc<Inner>,
    id: WorkerId,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if thread::panicking() {
            tracing::error!(worker = self.id, "worker thread died; replacing it");
            let id = self.id;
            self.inner
                .settle(|core| core.worker_died(id, Instant::now(), now_us()));
            if !self.inner.is_shut_down() {
                ensure_workers(&self.inner);
            }
        }
        // The receiver lives as long as `inner`, so this cannot fail.
        let _ = self.inner.exited.0.send(self.id);
        self.inner.state_changed.notify_all();
    }
}

fn worker_main(inner: Arc<Inner>, id: WorkerId, name: String) {
    let _guard = ExitGuard {
        inner: Arc::clone(&inner),
        id,
    };
    tracing::debug!(worker = %name, "worker started");
    let progress = Inner::progress_sink(&inner);
    loop {
        let job = {
            let mut core = inner.core.lock();
            let mut may_spin = true;
            loop {
                if core.retire_if_surplus(id) {
                    drop(core);
                    tracing::debug!(worker = %name, "worker stopped");
                    return;
                }
                if let Some(job) = core.next_job(id, now_us()) {
                    break job;
                }
                let epoch = inner.work_epoch.load(Ordering::Acquire);
                if may_spin && core.dispatch_open() && inner.start_spinning() {
                    drop(core);
                    let saw_work = spin_until(SPIN_FOR, || {
                        inner.work_epoch.load(Ordering::Acquire) != epoch
                    });
                    inner.spinning.store(false, Ordering::Release);
                    may_spin = saw_work;
                    core = inner.core.lock();
                    continue;
                }
                inner.work_available.wait(&mut core);
                may_spin = true;
            }
        };
        run_job(&inner, id, &name, job, &progress);
    }
}

/// How long an idle worker spins for new work before it parks. Waking a
/// parked thread costs tens of microseconds; a short spin by one worker at a
/// time takes that off the latency of a task submitted right after another.
const SPIN_FOR: Duration = Duration::from_micros(50);

/// Spins (yielding the core to any runnable thread) until `done` holds or
/// `limit` passes; true when it held.
pub(super) fn spin_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::yield_now();
    }
}

fn run_job(
    inner: &Arc<Inner>,
    worker: WorkerId,
    worker_name: &str,
    job: Job,
    progress: &ProgressSink,
) {
    let Job {
        started,
        cancel,
        timeout,
    } = job;
    let id = started.record.id;
    let attempt = started.record.attempts;
    let spec = started.record.spec.clone();
    let gpus = started.record.gpu_ids.clone();
    let begun = Instant::now();
    inner.emit(started);
    if let Some(timeout) = timeout {
        inner.timer.deadline(id, attempt, begun + timeout);
    }
    let ctx = TaskContext::new(id, attempt, worker_name.to_owned(), cancel)
        .with_gpus(gpus)
        .with_progress_sink(Arc::clone(progress));
    let result = run_attempt(&inner.registry, &ctx, &spec.name, &spec.args, &spec.kwargs);
    ctx.flush_progress();
    let log = ctx.take_log();
    inner.settle(|core| {
        if let Some(log) = log {
            core.set_log(worker, id, attempt, log);
        }
        Some(core.finish_attempt(worker, id, attempt, result, Instant::now(), now_us()))
    });
}

/// Runs one attempt, turning a panic into its result.
pub(super) fn run_attempt(
    registry: &Registry,
    ctx: &TaskContext,
    name: &str,
    args: &[serde_json::Value],
    kwargs: &serde_json::Map<String, serde_json::Value>,
) -> AttemptResult {
    let Some(def) = registry.get(name) else {
        return AttemptResult::Error(TaskError::fatal(format!(
            "task {name:?} is not registered in this process"
        )));
    };
    let bound = match def.signature.bind(args, kwargs) {
        Ok(bound) => bound,
        Err(error) => return AttemptResult::Error(TaskError::fatal(error.to_string())),
    };
    match catch_unwind(AssertUnwindSafe(|| def.call(ctx, &bound))) {
        Ok(Ok(value)) => AttemptResult::Completed(value),
        Ok(Err(error)) => AttemptResult::Error(error),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            AttemptResult::Panicked(message)
        }
    }
}
