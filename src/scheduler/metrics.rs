//! Timing and throughput aggregates: latency percentiles overall and per
//! task name, completions over the last minute.
//!
//! Recording is a few histogram increments behind a lock of its own, so it
//! is cheap enough to leave on and never contends with dispatch.

use std::collections::HashMap;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency the histograms resolve: one day, in microseconds.
const MAX_TRACKED_US: u64 = 24 * 3600 * 1_000_000;
/// Seconds of history behind the throughput figure.
const THROUGHPUT_WINDOW_SECS: usize = 60;

/// Percentiles of one latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

#[derive(Debug, Clone)]
struct LatencyHistogram(Histogram<u64>);

impl LatencyHistogram {
    fn new() -> Self {
        Self(
            Histogram::new_with_bounds(1, MAX_TRACKED_US, 3)
                .expect("constant histogram bounds should be valid"),
        )
    }

    fn record(&mut self, micros: i64) {
        let value = u64::try_from(micros).unwrap_or(0).max(1);
        self.0.saturating_record(value);
    }

    fn summary(&self) -> LatencySummary {
        let h = &self.0;
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p95_us: h.value_at_quantile(0.95),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }
}

#[derive(Debug, Clone)]
struct NameStats {
    runs: u64,
    attempt_failures: u64,
    completed: u64,
    failed: u64,
    run_time: LatencyHistogram,
    total_latency: LatencyHistogram,
}

impl NameStats {
    fn new() -> Self {
        Self {
            runs: 0,
            attempt_failures: 0,
            completed: 0,
            failed: 0,
            run_time: LatencyHistogram::new(),
            total_latency: LatencyHistogram::new(),
        }
    }
}

/// Report for one task name.
#[derive(Debug, Clone, Serialize)]
pub struct NameReport {
    /// Task name.
    pub name: String,
    /// Attempts that ended (successfully or not).
    pub runs: u64,
    /// Attempts that failed.
    pub attempt_failures: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Tasks that failed for good.
    pub failed: u64,
    /// Duration of attempts.
    pub run_time: LatencySummary,
    /// Submission to completion of finished tasks.
    pub total_latency: LatencySummary,
}

/// Counts tasks that finished in each of the last 60 seconds.
#[derive(Debug, Clone)]
struct Throughput {
    origin: Instant,
    buckets: [(u64, u64); THROUGHPUT_WINDOW_SECS],
}

impl Throughput {
    fn new(origin: Instant) -> Self {
        Self {
            origin,
            buckets: [(u64::MAX, 0); THROUGHPUT_WINDOW_SECS],
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    fn record(&mut self, now: Instant) {
        let second = self.second(now);
        let slot = &mut self.buckets[(second % THROUGHPUT_WINDOW_SECS as u64) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += 1;
    }

    /// Finished tasks over the last minute (or since start when younger),
    /// as a rate per second, and the raw count.
    fn rate(&self, now: Instant) -> (f64, u64) {
        let current = self.second(now);
        let window_start = current.saturating_sub(THROUGHPUT_WINDOW_SECS as u64 - 1);
        let count: u64 = self
            .buckets
            .iter()
            .filter(|(second, _)| *second != u64::MAX && *second >= window_start)
            .map(|(_, n)| n)
            .sum();
        let elapsed = now
            .saturating_duration_since(self.origin)
            .as_secs_f64()
            .min(THROUGHPUT_WINDOW_SECS as f64)
            .max(1.0);
        (count as f64 / elapsed, count)
    }
}

/// Aggregates owned by the scheduler; readers take a [`MetricsReport`].
#[derive(Debug, Clone)]
pub struct Metrics {
    total_latency: LatencyHistogram,
    per_name: HashMap<String, NameStats>,
    throughput: Throughput,
}

/// Cumulative latency counts, see [`Metrics::latency_buckets`].
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyBuckets {
    /// Samples at or below each bound, in the bounds' order.
    pub cumulative: Vec<u64>,
    /// All samples.
    pub count: u64,
    /// Sum of all samples, microseconds (from the histogram's resolution).
    pub sum_us: f64,
}

/// What [`Metrics::report`] returns.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsReport {
    /// Submission-to-completion latency of every finished task.
    pub total_latency: LatencySummary,
    /// Tasks finished per second over the last minute.
    pub throughput_per_s: f64,
    /// Tasks finished in the last minute.
    pub finished_last_minute: u64,
    /// Per task name, sorted by name.
    pub per_name: Vec<NameReport>,
}

impl Metrics {
    /// Empty aggregates; throughput is measured from `origin`.
    pub fn new(origin: Instant) -> Self {
        Self {
            total_latency: LatencyHistogram::new(),
            per_name: HashMap::new(),
            throughput: Throughput::new(origin),
        }
    }

    fn name(&mut self, name: &str) -> &mut NameStats {
        if !self.per_name.contains_key(name) {
            self.per_name.insert(name.to_owned(), NameStats::new());
        }
        self.per_name
            .get_mut(name)
            .expect("the entry was inserted just above")
    }

    /// One attempt ended after `run_time_us`.
    pub fn record_attempt(&mut self, name: &str, succeeded: bool, run_time_us: i64) {
        let stats = self.name(name);
        stats.runs += 1;
        if !succeeded {
            stats.attempt_failures += 1;
        }
        stats.run_time.record(run_time_us);
    }

    /// A task finished by running (completed or failed for good) after
    /// `total_latency_us` since its submission.
    pub fn record_finished(
        &mut self,
        name: &str,
        completed: bool,
        total_latency_us: i64,
        now: Instant,
    ) {
        self.total_latency.record(total_latency_us);
        self.throughput.record(now);
        let stats = self.name(name);
        if completed {
            stats.completed += 1;
        } else {
            stats.failed += 1;
        }
        stats.total_latency.record(total_latency_us);
    }

    /// Total latency as cumulative counts at each upper bound (for
    /// Prometheus-style histograms), with the overall count and sum.
    pub fn latency_buckets(&self, bounds_us: &[u64]) -> LatencyBuckets {
        let histogram = &self.total_latency.0;
        let mut per_bucket = vec![0u64; bounds_us.len()];
        for value in histogram.iter_recorded() {
            let at = histogram.lowest_equivalent(value.value_iterated_to());
            if let Some(slot) = bounds_us.iter().position(|bound| at <= *bound) {
                per_bucket[slot] += value.count_at_value();
            }
        }
        let mut running = 0;
        let cumulative = per_bucket
            .into_iter()
            .map(|n| {
                running += n;
                running
            })
            .collect();
        LatencyBuckets {
            cumulative,
            count: histogram.len(),
            sum_us: histogram.mean() * histogram.len() as f64,
        }
    }

    /// Percentiles and rates as of `now`.
    pub fn report(&self, now: Instant) -> MetricsReport {
        let (throughput_per_s, finished_last_minute) = self.throughput.rate(now);
        let mut per_name: Vec<NameReport> = self
            .per_name
            .iter()
            .map(|(name, stats)| NameReport {
                name: name.clone(),
                runs: stats.runs,
                attempt_failures: stats.attempt_failures,
                completed: stats.completed,
                failed: stats.failed,
                run_time: stats.run_time.summary(),
                total_latency: stats.total_latency.summary(),
            })
            .collect();
        per_name.sort_by(|a, b| a.name.cmp(&b.name));
        MetricsReport {
            total_latency: self.total_latency.summary(),
            throughput_per_s,
            finished_last_minute,
            per_name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_follow_the_recorded_distribution() {
        let origin = Instant::now();
        let mut metrics = Metrics::new(origin);
        for latency in 1..=100 {
            metrics.record_finished("noop", true, latency * 1_000, origin);
        }
        metrics.record_attempt("noop", false, 10);
        let report = metrics.report(origin);
        let summary = report.total_latency;
        assert_eq!(summary.count, 100);
        assert!((49_000..=51_000).contains(&summary.p50_us), "{summary:?}");
        assert!((98_000..=100_100).contains(&summary.p99_us), "{summary:?}");
        let buckets = metrics.latency_buckets(&[10_000, 50_000, 1_000_000]);
        assert_eq!(buckets.cumulative, vec![10, 50, 100]);
        assert_eq!(buckets.count, 100);
        assert!(
            (buckets.sum_us - 5_050_000.0).abs() < 20_000.0,
            "{buckets:?}"
        );
        let noop = &report.per_name[0];
        assert_eq!(
            (noop.completed, noop.runs, noop.attempt_failures),
            (100, 1, 1)
        );
    }

    #[test]
    fn throughput_counts_only_the_last_minute() {
        let origin = Instant::now();
        let mut metrics = Metrics::new(origin);
        for _ in 0..30 {
            metrics.record_finished("noop", true, 5, origin);
        }
        let later = origin + Duration::from_secs(10);
        for _ in 0..10 {
            metrics.record_finished("noop", true, 5, later);
        }
        let (rate, count) = metrics.throughput.rate(later);
        assert_eq!(count, 40);
        assert!((rate - 4.0).abs() < 0.5, "{rate}");
        let (_, count) = metrics.throughput.rate(origin + Duration::from_secs(65));
        assert_eq!(count, 10);
        let (_, count) = metrics.throughput.rate(origin + Duration::from_secs(200));
        assert_eq!(count, 0);
    }
}
