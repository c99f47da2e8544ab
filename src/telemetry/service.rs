//! The "taskdeck-telemetry" thread and the handle that owns it.
//!
//! The thread is the only writer. It publishes each sample by swapping an
//! `Arc` under a lock held only for the swap, and by `try_send` to bounded
//! subscriber channels, so a slow reader misses samples instead of slowing
//! the sampler. It waits between samples on its cancel channel, so
//! [`Telemetry::stop`] ends it at once.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;

use super::sampler::Sampler;
use super::{MIN_INTERVAL, TelemetryConfig, TelemetryError, Waker};
use crate::model::ResourceSample;

/// Samples a subscriber's channel holds before newer ones are dropped for it.
const SUBSCRIBER_CAPACITY: usize = 64;

/// Name of the sampling thread, as debuggers and `top -H` show it.
const THREAD_NAME: &str = "taskdeck-telemetry";

/// Handle to the running telemetry thread; stopping or dropping it ends the
/// thread and joins it.
pub struct Telemetry {
    shared: Arc<Shared>,
    /// Dropping the sender disconnects the channel the thread waits on.
    cancel: Mutex<Option<Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What the thread publishes and readers read.
#[derive(Default)]
struct Shared {
    latest: Mutex<Option<Arc<ResourceSample>>>,
    subscribers: Mutex<Vec<Sender<Arc<ResourceSample>>>>,
}

impl Telemetry {
    /// Opens the resource counters, initialises NVML once and starts the
    /// sampling thread; the first sample follows after about
    /// [`MIN_INTERVAL`], then one each `config.interval`.
    ///
    /// A machine without an NVIDIA driver is not an error: its samples say
    /// [`GpuState::Unavailable`](crate::model::GpuState::Unavailable), and
    /// that is logged once here.
    pub fn start(config: TelemetryConfig) -> Result<Self, TelemetryError> {
        let TelemetryConfig { interval, waker } = config;
        if interval < MIN_INTERVAL {
            return Err(TelemetryError::IntervalTooShort {
                interval_ms: interval.as_millis(),
                minimum_ms: MIN_INTERVAL.as_millis(),
            });
        }
        let sampler = Sampler::new()?;
        match sampler.gpus().unavailable() {
            Some(reason) => tracing::info!("GPU telemetry off: {reason}"),
            None => tracing::info!(
                devices = sampler.gpus().device_count().unwrap_or(0),
                "GPU telemetry on through NVML"
            ),
        }
        let shared = Arc::new(Shared::default());
        let (cancel_tx, cancel_rx) = crossbeam_channel::bounded(1);
        let thread_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || sample_loop(sampler, &thread_shared, &cancel_rx, interval, waker))
            .map_err(TelemetryError::Thread)?;
        Ok(Self {
            shared,
            cancel: Mutex::new(Some(cancel_tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The newest sample, or `None` before the first one.
    ///
    /// The lock is held only to clone the `Arc`.
    pub fn latest(&self) -> Option<Arc<ResourceSample>> {
        self.shared.latest.lock().clone()
    }

    /// A channel that receives every following sample.
    ///
    /// It is bounded: a reader that falls more than 64 samples behind misses
    /// newer ones until it catches up. Dropping the receiver unsubscribes.
    /// It disconnects when the thread stops.
    pub fn subscribe(&self) -> Receiver<Arc<ResourceSample>> {
        let (tx, rx) = crossbeam_channel::bounded(SUBSCRIBER_CAPACITY);
        // After stop the thread no longer sends, so handing out a connected
        // channel would leave the reader waiting forever. Holding the thread
        // lock while adding keeps stop from slipping in between.
        let thread = self.thread.lock();
        if thread.is_some() {
            self.shared.subscribers.lock().push(tx);
        }
        drop(thread);
        rx
    }

    /// Cancels the thread and waits for it to end; later calls do nothing.
    ///
    /// The thread ends within one sample's time, as it waits between
    /// samples on the cancel channel rather than sleeping.
    pub fn stop(&self) {
        // The handle is taken before cancelling, so a subscriber added while
        // the handle is still there is cleared when the thread ends.
        let handle = self.thread.lock().take();
        drop(self.cancel.lock().take());
        let Some(handle) = handle else {
            return;
        };
        // The waker could call stop on the thread itself; joining there
        // would wait forever, and the loop ends after this tick anyway.
        if handle.thread().id() == thread::current().id() {
            return;
        }
        if handle.join().is_err() {
            tracing::error!("the telemetry thread panicked");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("running", &self.thread.lock().is_some())
            .field("subscribers", &self.shared.subscribers.lock().len())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Makes `sample` the latest and offers it to every subscriber.
    fn publish(&self, sample: &Arc<ResourceSample>) {
        // The previous sample is dropped after the lock is released.
        let previous = self.latest.lock().replace(Arc::clone(sample));
        drop(previous);

        // Sending happens outside the lock, on a copy of the list.
        let subscribers = self.subscribers.lock().clone();
        let mut gone = Vec::new();
        for subscriber in &subscribers {
            match subscriber.try_send(Arc::clone(sample)) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => gone.push(subscriber),
            }
        }
        if !gone.is_empty() {
            self.subscribers
                .lock()
                .retain(|kept| !gone.iter().any(|dead| dead.same_channel(kept)));
        }
    }
}

/// Body of the "taskdeck-telemetry" thread.
fn sample_loop(
    mut sampler: Sampler,
    shared: &Shared,
    cancel: &Receiver<()>,
    interval: Duration,
    waker: Option<Waker>,
) {
    let _disconnect = DisconnectOnExit(shared);
    let mut wait = Sampler::warm_up();
    // A message or a disconnected channel both mean stop; only a timeout
    // means it is time for the next sample.
    while let Err(RecvTimeoutError::Timeout) = cancel.recv_timeout(wait) {
        let started = Instant::now();
        let sample = Arc::new(sampler.sample());
        shared.publish(&sample);
        if let Some(waker) = &waker {
            waker();
        }
        // Measuring from the start of the tick keeps the period steady.
        wait = interval.saturating_sub(started.elapsed());
    }
}

/// Drops the subscribers' senders when the thread ends, even by a panic, so
/// they learn that no more samples come.
struct DisconnectOnExit<'a>(&'a Shared);

impl Drop for DisconnectOnExit<'_> {
    fn drop(&mut self) {
        self.0.subscribers.lock().clear();
    }
}
