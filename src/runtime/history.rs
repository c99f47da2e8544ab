//! The resource history: the runtime keeps the last hour of telemetry
//! samples in memory for readers (the HTTP API) and records every sample in
//! the store, which keeps the last hour too, so `taskdeck serve` and the
//! window alike have an hour of CPU, memory, disk and GPU history, also
//! after a restart. The scheduler takes no part in it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, select};
use parking_lot::Mutex;

use crate::model::ResourceSample;
use crate::store::{SAMPLE_RETENTION, Store};

/// Most samples kept in memory: an hour at one a second, with room for a
/// faster sampler.
const MAX_SAMPLES: usize = 2 * 3600;

/// The last hour of samples, oldest first, as readers see it: a snapshot
/// they clone an `Arc` of, replaced after each new sample. Readers hold the
/// lock only to clone that `Arc`.
#[derive(Clone, Default)]
pub struct HistoryView {
    latest: Arc<Mutex<Arc<Vec<Arc<ResourceSample>>>>>,
}

impl std::fmt::Debug for HistoryView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryView")
            .field("samples", &self.snapshot().len())
            .finish()
    }
}

impl HistoryView {
    /// The samples kept now, oldest first.
    pub fn snapshot(&self) -> Arc<Vec<Arc<ResourceSample>>> {
        Arc::clone(&self.latest.lock())
    }

    fn publish(&self, samples: &VecDeque<Arc<ResourceSample>>) {
        let snapshot = Arc::new(samples.iter().cloned().collect::<Vec<_>>());
        *self.latest.lock() = snapshot;
    }
}

/// Called with each sample as it arrives (on the history thread; it must
/// not block).
pub(super) type SampleObserver = Box<dyn Fn(&ResourceSample) + Send>;

/// The thread that keeps the history and writes samples to the store.
pub(super) struct Recorder {
    /// Closing it stops the thread.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Starts `taskdeck-history`: it begins with `past` (what the store
    /// held at start), adds each sample from `samples`, saves those to
    /// `store` when there is one, and shows each to `observer`.
    pub(super) fn start(
        samples: Receiver<Arc<ResourceSample>>,
        store: Option<Arc<Store>>,
        past: Vec<ResourceSample>,
        observer: Option<SampleObserver>,
    ) -> std::io::Result<(Self, HistoryView)> {
        let view = HistoryView::default();
        let mut kept: VecDeque<Arc<ResourceSample>> = past.into_iter().map(Arc::new).collect();
        prune(&mut kept);
        view.publish(&kept);
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = {
            let view = view.clone();
            std::thread::Builder::new()
                .name("taskdeck-history".into())
                .spawn(move || {
                    record(
                        &samples,
                        &stopped,
                        store.as_deref(),
                        observer.as_deref(),
                        kept,
                        &view,
                    );
                })?
        };
        let recorder = Self {
            stop: Some(stop),
            thread: Some(thread),
        };
        Ok((recorder, view))
    }

    /// Stops the thread and waits for it.
    pub(super) fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the resource history thread panicked");
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Keeps and saves samples until told to stop or until telemetry stops
/// sending.
fn record(
    samples: &Receiver<Arc<ResourceSample>>,
    stopped: &Receiver<()>,
    store: Option<&Store>,
    observer: Option<&(dyn Fn(&ResourceSample) + Send)>,
    mut kept: VecDeque<Arc<ResourceSample>>,
    view: &HistoryView,
) {
    loop {
        select! {
            recv(samples) -> sample => {
                let Ok(sample) = sample else {
                    return;
                };
                if let Some(store) = store {
                    store.save_sample(&sample);
                }
                if let Some(observer) = observer {
                    observer(&sample);
                }
                kept.push_back(sample);
                prune(&mut kept);
                view.publish(&kept);
            },
            recv(stopped) -> _ => return,
        }
    }
}

/// Drops samples older than [`SAMPLE_RETENTION`] before the newest, and
/// the oldest beyond [`MAX_SAMPLES`].
fn prune(kept: &mut VecDeque<Arc<ResourceSample>>) {
    let window_us = i64::try_from(SAMPLE_RETENTION.as_micros()).unwrap_or(i64::MAX);
    if let Some(newest) = kept.back().map(|sample| sample.at_us) {
        while kept
            .front()
            .is_some_and(|oldest| newest.saturating_sub(oldest.at_us) > window_us)
        {
            kept.pop_front();
        }
    }
    while kept.len() > MAX_SAMPLES {
        kept.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sample(at_us: i64) -> ResourceSample {
        ResourceSample::for_tests(at_us)
    }

    #[test]
    fn history_keeps_the_last_hour_and_a_bounded_count() {
        let hour_us = 3_600_000_000;
        let mut kept: VecDeque<Arc<ResourceSample>> = [0, 1, hour_us + 2]
            .into_iter()
            .map(|at| Arc::new(sample(at)))
            .collect();
        prune(&mut kept);
        assert_eq!(
            kept.iter().map(|s| s.at_us).collect::<Vec<_>>(),
            [hour_us + 2],
            "samples more than an hour before the newest go"
        );
        let mut many: VecDeque<Arc<ResourceSample>> = (0..MAX_SAMPLES as i64 + 5)
            .map(|at| Arc::new(sample(at)))
            .collect();
        prune(&mut many);
        assert_eq!(many.len(), MAX_SAMPLES);
        assert_eq!(many.front().map(|s| s.at_us), Some(5));
    }

    #[test]
    fn the_view_starts_with_the_past_and_adds_each_sample() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (recorder, view) =
            Recorder::start(rx, None, vec![sample(1), sample(2)], None).expect("the thread starts");
        assert_eq!(view.snapshot().len(), 2);
        tx.send(Arc::new(sample(3))).expect("the recorder listens");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while view.snapshot().len() < 3 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let at: Vec<i64> = view.snapshot().iter().map(|s| s.at_us).collect();
        assert_eq!(at, [1, 2, 3]);
        recorder.stop();
    }
}
