//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use taskdeck::scheduler::{Backoff, Scheduler, SchedulerConfig, StoreMode};
use taskdeck::tasks::Registry;

/// Generous limit for conditions that normally hold within milliseconds.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `condition` until it holds or `timeout` passes; true when it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A config with fast retries for tests.
pub fn config(store: StoreMode, workers: usize) -> SchedulerConfig {
    let mut config = SchedulerConfig::new(store);
    config.workers = workers;
    config.backoff = Backoff {
        base: Duration::from_millis(1),
        max: Duration::from_millis(20),
    };
    config.shutdown_grace = Duration::from_secs(5);
    config
}

/// An in-memory scheduler with the built-ins plus `extra`'s registrations.
pub fn start_memory(workers: usize, extra: impl FnOnce(&mut Registry)) -> Scheduler {
    let mut registry = Registry::with_builtins();
    extra(&mut registry);
    Scheduler::start(config(StoreMode::Memory, workers), registry)
        .expect("in-memory scheduler should start")
}
