//! Starting the engine: opening the store, recovering its tasks, and
//! starting the timer and the workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::thread;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::core::Core;
use super::events::EventBus;
use super::metrics::Metrics;
use super::timer::{self, Timer};
use super::transport::Transport;
use super::{Inner, Scheduler, SchedulerConfig, StartError, StoreMode, Threads, worker};
use crate::model::now_us;
use crate::store::{Recovered, Store};
use crate::tasks::Registry;

impl Scheduler {
    /// Opens the store, recovers its tasks, and starts the timer and workers.
    ///
    /// Recovery: queued and retrying tasks are queued again in their
    /// original order; tasks that were running count one lost attempt and
    /// are queued again (or fail when that was their last); finished tasks
    /// stay queryable.
    pub fn start(config: SchedulerConfig, registry: Registry) -> Result<Self, StartError> {
        let opened = Self::open_store(&config)?;
        Self::start_with_store(config, registry, opened)
    }

    /// Opens the store `config` names, with what it recovered (none for a
    /// memory store), for [`Scheduler::start_with_store`] and
    /// [`Scheduler::start_external`].
    pub fn open_store(
        config: &SchedulerConfig,
    ) -> Result<Option<(Arc<Store>, Recovered)>, StartError> {
        Ok(match &config.store {
            StoreMode::Memory => None,
            StoreMode::File(path) => {
                let (store, recovered) = Store::open(path, config.retention, config.durability)?;
                Some((Arc::new(store), recovered))
            }
        })
    }

    /// Like [`Scheduler::start`] on a store the caller opened (and shares,
    /// e.g. to record resource history in it), with what it recovered; the
    /// recovered resource samples are the caller's, not the scheduler's.
    /// `config.store` only names the file then.
    pub fn start_with_store(
        config: SchedulerConfig,
        registry: Registry,
        opened: Option<(Arc<Store>, Recovered)>,
    ) -> Result<Self, StartError> {
        Self::launch(config, registry, opened, Transport::Pool)
    }

    /// Starts with the given transport (see [`Scheduler::start_with_store`]).
    pub(super) fn launch(
        config: SchedulerConfig,
        registry: Registry,
        opened: Option<(Arc<Store>, Recovered)>,
        transport: Transport,
    ) -> Result<Self, StartError> {
        let (store, recovered) = match opened {
            None => (
                None,
                Recovered {
                    next_id: 1,
                    ..Recovered::default()
                },
            ),
            Some((store, recovered)) => (Some(store), recovered),
        };
        let Recovered {
            next_id,
            tasks,
            samples: _,
            settings,
        } = recovered;
        let recovered_count = tasks.len();
        let mut core = Core::new(
            transport.pool_size(config.workers),
            config.retention,
            config.backoff,
        );
        core.set_gpus(&config.gpus);
        core.paused = settings
            .get(super::control::PAUSED_KEY)
            .is_some_and(|value| value == "true");
        core.restore_queues(super::control::stored_queues(&settings));
        if core.paused {
            tracing::warn!(
                "the scheduler is paused (as it was when it stopped): no task starts until it is resumed"
            );
        }
        let changes = core.recover(
            tasks,
            now_us(),
            transport.recovered_lease_until(Instant::now()),
        );
        let queued = core.queue.len();
        let (timer, timer_rx) = Timer::new();
        let inner = Arc::new(Inner {
            core: Mutex::new(core),
            work_available: Condvar::new(),
            work_epoch: AtomicU64::new(0),
            spinning: AtomicBool::new(false),
            settling: AtomicUsize::new(0),
            idle_waiters: AtomicUsize::new(0),
            state_changed: Condvar::new(),
            registry: Arc::new(registry),
            store,
            events: EventBus::new(),
            metrics: Mutex::new(Metrics::new(Instant::now())),
            next_id: AtomicU64::new(next_id.max(1)),
            seq: AtomicU64::new(0),
            accepting: AtomicBool::new(true),
            shut_down: AtomicBool::new(false),
            timer,
            threads: Mutex::new(Threads::default()),
            exited: crossbeam_channel::unbounded(),
            started: Instant::now(),
            config,
            transport,
        });
        let delayed = inner.core.lock().delayed_starts(now_us());
        inner.delay_starts(&delayed);
        let changed = changes.len();
        for change in changes {
            inner.emit(change);
        }
        if recovered_count > 0 {
            tracing::info!(
                tasks = recovered_count,
                queued,
                changed,
                "recovered tasks from the store"
            );
        }
        let timer_inner = Arc::clone(&inner);
        let timer_thread = thread::Builder::new()
            .name("taskdeck-timer".into())
            .spawn(move || timer::timer_main(timer_inner, timer_rx))?;
        inner.threads.lock().timer = Some(timer_thread);
        worker::ensure_workers(&inner);
        Ok(Self { inner })
    }
}
