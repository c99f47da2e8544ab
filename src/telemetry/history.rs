//! Bounded history of samples for plots: pure data, no threads, no clock.
//!
//! Time comes only from the samples' own `at_us`, so tests inject it. The
//! history is bounded both by age (relative to the newest sample) and by
//! length. A missing sample is recorded as a gap, never as a zero, so a plot
//! can break its line instead of drawing a false dip.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::model::ResourceSample;

/// How many intervals may pass between two samples before the history says
/// one or more are missing.
const GAP_FACTOR: f64 = 2.5;

/// One step of a [`History::window`]: a sample, or a break in the line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Point<'a> {
    /// A sample that was taken.
    Sample(&'a ResourceSample),
    /// Samples are missing between these two times; a plot breaks its line.
    Gap {
        /// When the last sample before the gap was taken, µs since the epoch.
        from_us: i64,
        /// When the first sample after the gap was taken, µs since the epoch.
        to_us: i64,
    },
}

/// Samples kept for plotting, bounded by age and by length.
#[derive(Debug, Clone)]
pub struct History {
    samples: VecDeque<Arc<ResourceSample>>,
    max_age_us: i64,
    max_len: usize,
    gap_after_us: i64,
}

impl Default for History {
    /// One hour of one-second samples.
    fn default() -> Self {
        Self::new(
            Duration::from_secs(1),
            Duration::from_secs(60 * 60),
            60 * 60 + 60,
        )
    }
}

impl History {
    /// An empty history for samples taken every `interval`, keeping those
    /// within `max_age` of the newest and at most `max_len` of them.
    ///
    /// A pause longer than 2.5 × `interval` between two samples is a gap.
    pub fn new(interval: Duration, max_age: Duration, max_len: usize) -> Self {
        let interval_us = duration_us(interval).max(1);
        Self {
            samples: VecDeque::with_capacity(max_len.min(4096)),
            max_age_us: duration_us(max_age),
            max_len,
            gap_after_us: (interval_us as f64 * GAP_FACTOR).round() as i64,
        }
    }

    /// Adds a sample and drops those now too old or too many.
    ///
    /// A sample not newer than the newest one means the wall clock stepped
    /// back; the old timeline cannot be ordered against the new one, so the
    /// history starts again from this sample.
    pub fn push(&mut self, sample: impl Into<Arc<ResourceSample>>) {
        let sample = sample.into();
        if self
            .samples
            .back()
            .is_some_and(|newest| newest.at_us >= sample.at_us)
        {
            self.samples.clear();
        }
        let oldest_kept_us = sample.at_us.saturating_sub(self.max_age_us);
        self.samples.push_back(sample);
        while self
            .samples
            .front()
            .is_some_and(|oldest| oldest.at_us < oldest_kept_us)
        {
            self.samples.pop_front();
        }
        while self.samples.len() > self.max_len {
            self.samples.pop_front();
        }
    }

    /// The samples within `duration` of the newest, oldest first, with a
    /// [`Point::Gap`] wherever samples are missing.
    pub fn window(&self, duration: Duration) -> Window<'_> {
        let start = match self.samples.back() {
            Some(newest) => {
                let from_us = newest.at_us.saturating_sub(duration_us(duration));
                self.samples
                    .partition_point(|sample| sample.at_us < from_us)
            }
            None => 0,
        };
        Window {
            samples: self.samples.range(start..),
            previous_at_us: None,
            pending: None,
            gap_after_us: self.gap_after_us,
        }
    }

    /// The newest sample, if any.
    pub fn latest(&self) -> Option<&Arc<ResourceSample>> {
        self.samples.back()
    }

    /// The oldest sample kept, if any.
    pub fn oldest(&self) -> Option<&Arc<ResourceSample>> {
        self.samples.front()
    }

    /// How many samples are kept.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is kept.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// Iterator over a [`History::window`].
#[derive(Debug, Clone)]
pub struct Window<'a> {
    samples: std::collections::vec_deque::Iter<'a, Arc<ResourceSample>>,
    previous_at_us: Option<i64>,
    /// A sample held back while the gap before it is yielded.
    pending: Option<&'a ResourceSample>,
    gap_after_us: i64,
}

impl<'a> Iterator for Window<'a> {
    type Item = Point<'a>;

    fn next(&mut self) -> Option<Point<'a>> {
        let sample = match self.pending.take() {
            Some(sample) => sample,
            None => {
                let sample: &'a ResourceSample = self.samples.next()?;
                if let Some(from_us) = self.previous_at_us
                    && sample.at_us - from_us > self.gap_after_us
                {
                    self.pending = Some(sample);
                    return Some(Point::Gap {
                        from_us,
                        to_us: sample.at_us,
                    });
                }
                sample
            }
        };
        self.previous_at_us = Some(sample.at_us);
        Some(Point::Sample(sample))
    }
}

/// A duration in whole microseconds, saturating for absurd lengths.
fn duration_us(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND_US: i64 = 1_000_000;

    fn sample_at(at_us: i64) -> ResourceSample {
        ResourceSample::for_tests(at_us)
    }

    fn times(history: &History, duration: Duration) -> Vec<Option<i64>> {
        history
            .window(duration)
            .map(|point| match point {
                Point::Sample(sample) => Some(sample.at_us),
                Point::Gap { .. } => None,
            })
            .collect()
    }

    fn one_second_history(max_age: Duration, max_len: usize) -> History {
        History::new(Duration::from_secs(1), max_age, max_len)
    }

    #[test]
    fn old_samples_are_pruned_by_age() {
        let mut history = one_second_history(Duration::from_secs(10), 1000);
        for second in 0..=30 {
            history.push(sample_at(second * SECOND_US));
        }
        assert_eq!(history.len(), 11);
        let all = times(&history, Duration::from_secs(3600));
        assert_eq!(all.first(), Some(&Some(20 * SECOND_US)));
        assert_eq!(all.last(), Some(&Some(30 * SECOND_US)));
    }

    #[test]
    fn excess_samples_are_pruned_by_length() {
        let mut history = one_second_history(Duration::from_secs(3600), 5);
        for second in 0..20 {
            history.push(sample_at(second * SECOND_US));
        }
        assert_eq!(history.len(), 5);
        assert_eq!(
            times(&history, Duration::from_secs(3600)),
            [15, 16, 17, 18, 19].map(|s| Some(s * SECOND_US))
        );
    }

    #[test]
    fn a_missing_sample_is_a_gap_not_a_zero() {
        let mut history = one_second_history(Duration::from_secs(3600), 100);
        // Two seconds apart is late but within 2.5 intervals; five is a gap.
        for at_us in [0, SECOND_US, 3 * SECOND_US, 8 * SECOND_US, 9 * SECOND_US] {
            history.push(sample_at(at_us));
        }
        let points: Vec<Point<'_>> = history.window(Duration::from_secs(3600)).collect();
        assert_eq!(points.len(), 6);
        assert_eq!(
            points.get(3),
            Some(&Point::Gap {
                from_us: 3 * SECOND_US,
                to_us: 8 * SECOND_US,
            })
        );
        assert_eq!(
            times(&history, Duration::from_secs(3600)),
            vec![
                Some(0),
                Some(SECOND_US),
                Some(3 * SECOND_US),
                None,
                Some(8 * SECOND_US),
                Some(9 * SECOND_US),
            ]
        );
    }

    #[test]
    fn window_keeps_only_recent_samples_and_starts_without_a_gap() {
        let mut history = one_second_history(Duration::from_secs(3600), 100);
        for at_us in [0, 10 * SECOND_US, 11 * SECOND_US, 12 * SECOND_US] {
            history.push(sample_at(at_us));
        }
        assert_eq!(
            times(&history, Duration::from_secs(2)),
            [10, 11, 12].map(|s| Some(s * SECOND_US))
        );
        assert_eq!(
            times(&history, Duration::from_secs(60)),
            vec![
                Some(0),
                None,
                Some(10 * SECOND_US),
                Some(11 * SECOND_US),
                Some(12 * SECOND_US),
            ]
        );
    }

    #[test]
    fn a_clock_step_back_restarts_the_history() {
        let mut history = one_second_history(Duration::from_secs(3600), 100);
        for second in [100, 101, 102, 50] {
            history.push(sample_at(second * SECOND_US));
        }
        assert_eq!(history.len(), 1);
        assert_eq!(history.latest().map(|s| s.at_us), Some(50 * SECOND_US));
    }

    #[test]
    fn an_empty_history_yields_nothing() {
        let history = History::default();
        assert!(history.is_empty());
        assert_eq!(history.window(Duration::from_secs(60)).count(), 0);
    }

    #[test]
    fn shared_samples_can_be_pushed_without_copying() {
        let mut history = History::default();
        let shared = Arc::new(sample_at(SECOND_US));
        history.push(Arc::clone(&shared));
        assert!(
            history
                .latest()
                .is_some_and(|kept| Arc::ptr_eq(kept, &shared))
        );
    }
}
