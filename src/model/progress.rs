//! Progress a running task reports: how far it is (a fraction), a short
//! message, and numeric metrics such as `loss` or `epoch`; the latest value
//! with an expected end, and a bounded history of points per attempt.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest progress message kept, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;
/// Most metrics in one report.
pub const MAX_METRICS: usize = 32;
/// Longest metric name, in bytes.
pub const MAX_METRIC_NAME: usize = 64;
/// Points kept per attempt; beyond it the history is thinned evenly.
pub const HISTORY_POINTS: usize = 1_000;

/// Weight of the newest rate in the smoothed rate behind the expected end.
const RATE_WEIGHT: f64 = 0.3;

/// One report from a task, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgressReport {
    /// How far the task is, 0 to 1.
    pub fraction: Option<f64>,
    /// A short note such as "epoch 3/10".
    pub message: Option<String>,
    /// Numeric metrics by name.
    pub metrics: BTreeMap<String, f64>,
}

impl ProgressReport {
    /// Checks a report: the fraction within 0-1, metrics finite, named,
    /// and not too many; a long message is cut.
    pub fn new(
        fraction: Option<f64>,
        message: Option<String>,
        metrics: BTreeMap<String, f64>,
    ) -> Result<Self, String> {
        if let Some(f) = fraction
            && !(f.is_finite() && (0.0..=1.0).contains(&f))
        {
            return Err(format!("fraction must be a number from 0 to 1, got {f}"));
        }
        if metrics.len() > MAX_METRICS {
            return Err(format!(
                "at most {MAX_METRICS} metrics per report, got {}",
                metrics.len()
            ));
        }
        for (name, value) in &metrics {
            if name.is_empty() || name.len() > MAX_METRIC_NAME {
                return Err(format!(
                    "metric names are 1 to {MAX_METRIC_NAME} bytes, got {name:?}"
                ));
            }
            if !value.is_finite() {
                return Err(format!("metric {name:?} must be a finite number"));
            }
        }
        let message = message.map(|m| m.chars().take(MAX_MESSAGE_CHARS).collect());
        Ok(Self {
            fraction,
            message,
            metrics,
        })
    }

    /// Reads one JSON line a process wrote: `{"fraction": 0.5, "message":
    /// "...", "metrics": {"loss": 0.3}}`; other numeric top-level fields
    /// count as metrics too (`{"fraction": 0.5, "loss": 0.3}`).
    pub fn parse_line(line: &str) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(line).map_err(|error| format!("not JSON: {error}"))?;
        let Value::Object(object) = value else {
            return Err("a progress line is a JSON object".into());
        };
        let mut fraction = None;
        let mut message = None;
        let mut metrics = BTreeMap::new();
        for (key, value) in object {
            match (key.as_str(), value) {
                ("fraction" | "progress", Value::Null) => {}
                ("fraction" | "progress", Value::Number(n)) => fraction = n.as_f64(),
                ("fraction" | "progress", other) => {
                    return Err(format!("fraction must be a number, got {other}"));
                }
                ("message", Value::String(text)) => message = Some(text),
                ("message", Value::Null) => {}
                ("message", other) => return Err(format!("message must be text, got {other}")),
                ("metrics", Value::Object(map)) => {
                    for (name, value) in map {
                        let number = value
                            .as_f64()
                            .ok_or_else(|| format!("metric {name:?} must be a number"))?;
                        metrics.insert(name, number);
                    }
                }
                ("metrics", other) => {
                    return Err(format!("metrics must be an object, got {other}"));
                }
                (_, Value::Number(n)) => {
                    if let Some(number) = n.as_f64() {
                        metrics.insert(key, number);
                    }
                }
                // Anything else is ignored, so richer writers stay readable.
                _ => {}
            }
        }
        Self::new(fraction, message, metrics)
    }
}

/// The latest progress of a task's current (or last) attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// How far it is, 0 to 1, when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// Its latest message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The latest value of each metric it reported.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// When the latest report came, microseconds since the epoch.
    pub updated_at_us: i64,
    /// Smoothed progress per second, from the fraction's recent rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// When it should end at that rate, microseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_at_us: Option<i64>,
}

impl Progress {
    /// The progress after `report` arrived at `at_us`, given the previous
    /// value of the same attempt and when the attempt started.
    ///
    /// - The message and the fraction carry over when a report leaves them
    ///   out; metrics merge, newest value per name.
    /// - The rate is the fraction gained per second since the previous
    ///   report, smoothed; with no earlier fraction, the fraction over the
    ///   time since the start.
    /// - The expected end is the time left at that rate; none while the
    ///   rate is unknown or zero; now once the fraction reaches 1.
    pub fn advance(
        previous: Option<&Progress>,
        report: ProgressReport,
        at_us: i64,
        started_at_us: i64,
    ) -> Self {
        let ProgressReport {
            fraction,
            message,
            metrics,
        } = report;
        let mut merged = previous.map(|p| p.metrics.clone()).unwrap_or_default();
        merged.extend(metrics);
        let prior_fraction = previous.and_then(|p| p.fraction);
        let fraction = fraction.or(prior_fraction);
        let prior_rate = previous.and_then(|p| p.rate_per_s);
        let rate = match (fraction, prior_fraction, previous) {
            (Some(now), Some(before), Some(prev)) if at_us > prev.updated_at_us => {
                let newest = (now - before) / ((at_us - prev.updated_at_us) as f64 / 1e6);
                Some(prior_rate.map_or(newest, |r| RATE_WEIGHT * newest + (1.0 - RATE_WEIGHT) * r))
            }
            (Some(now), None, _) if at_us > started_at_us => {
                Some(now / ((at_us - started_at_us) as f64 / 1e6))
            }
            _ => prior_rate,
        };
        let eta_at_us = match (fraction, rate) {
            (Some(f), _) if f >= 1.0 => Some(at_us),
            (Some(f), Some(rate)) if rate > 0.0 => {
                let left_s = (1.0 - f) / rate;
                (left_s.is_finite() && left_s < 1e9).then(|| at_us + (left_s * 1e6).round() as i64)
            }
            _ => None,
        };
        Self {
            fraction,
            message: message.or_else(|| previous.and_then(|p| p.message.clone())),
            metrics: merged,
            updated_at_us: at_us,
            rate_per_s: rate,
            eta_at_us,
        }
    }
}

/// One point of an attempt's progress history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressPoint {
    /// When, microseconds since the epoch.
    pub at_us: i64,
    /// The fraction then, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// The metrics reported then.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// The bounded history of one attempt: when full, every other point is
/// dropped and from then on only every other report is kept (then every
/// fourth, and so on), so it always spans the whole attempt evenly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgressHistory {
    points: Vec<ProgressPoint>,
    /// Keep one report of this many.
    stride: u64,
    /// Reports seen.
    seen: u64,
}

impl ProgressHistory {
    /// Records a report; the first and every `stride`-th are kept.
    pub fn push(&mut self, point: ProgressPoint) {
        let stride = self.stride.max(1);
        let keep = self.seen.is_multiple_of(stride);
        self.seen += 1;
        if !keep {
            return;
        }
        if self.points.len() >= HISTORY_POINTS {
            let mut index = 0usize;
            self.points.retain(|_| {
                index += 1;
                index % 2 == 1
            });
            self.stride = stride * 2;
        }
        self.points.push(point);
    }

    /// The points kept, oldest first.
    pub fn points(&self) -> &[ProgressPoint] {
        &self.points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(fraction: Option<f64>) -> ProgressReport {
        ProgressReport::new(fraction, None, BTreeMap::new()).expect("valid")
    }

    #[test]
    fn lines_parse_with_metrics_nested_or_at_the_top() {
        let parsed =
            ProgressReport::parse_line(r#"{"fraction": 0.25, "message": "epoch 1", "metrics": {"loss": 0.5}, "epoch": 1, "note": "x"}"#)
                .expect("valid");
        assert_eq!(parsed.fraction, Some(0.25));
        assert_eq!(parsed.message.as_deref(), Some("epoch 1"));
        assert_eq!(parsed.metrics.get("loss"), Some(&0.5));
        assert_eq!(parsed.metrics.get("epoch"), Some(&1.0));
        assert_eq!(parsed.metrics.len(), 2, "text fields are not metrics");
        for bad in [
            "not json",
            "[1]",
            r#"{"fraction": 1.5}"#,
            r#"{"fraction": -0.1}"#,
            r#"{"fraction": "half"}"#,
            r#"{"metrics": {"loss": "low"}}"#,
            r#"{"message": 3}"#,
        ] {
            assert!(ProgressReport::parse_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_expected_end_follows_the_rate_of_progress() {
        let first = Progress::advance(None, report(Some(0.1)), 10_000_000, 0);
        assert!(
            (first.rate_per_s.expect("a rate") - 0.01).abs() < 1e-12,
            "0.1 in 10 s"
        );
        let eta = first.eta_at_us.expect("an end");
        assert!((eta - 100_000_000).abs() <= 1, "0.9 left at 0.01/s: {eta}");
        // Twice as fast since: the smoothed rate moves towards it.
        let second = Progress::advance(Some(&first), report(Some(0.3)), 20_000_000, 0);
        let rate = second.rate_per_s.expect("a rate");
        assert!((rate - (0.3 * 0.02 + 0.7 * 0.01)).abs() < 1e-12);
        let eta = second.eta_at_us.expect("an end");
        assert!(eta > 20_000_000 && eta < 100_000_000);
        let done = Progress::advance(Some(&second), report(Some(1.0)), 30_000_000, 0);
        assert_eq!(done.eta_at_us, Some(30_000_000));
        let stalled = Progress::advance(None, report(Some(0.0)), 5, 0);
        assert_eq!(stalled.eta_at_us, None, "no progress, no end");
    }

    #[test]
    fn reports_that_leave_fields_out_keep_the_earlier_ones() {
        let mut metrics = BTreeMap::new();
        metrics.insert("loss".to_owned(), 1.0);
        let first = Progress::advance(
            None,
            ProgressReport::new(Some(0.5), Some("half".into()), metrics).expect("valid"),
            1_000_000,
            0,
        );
        let mut metrics = BTreeMap::new();
        metrics.insert("acc".to_owned(), 0.9);
        let second = Progress::advance(
            Some(&first),
            ProgressReport::new(None, None, metrics).expect("valid"),
            2_000_000,
            0,
        );
        assert_eq!(second.fraction, Some(0.5));
        assert_eq!(second.message.as_deref(), Some("half"));
        assert_eq!(second.metrics.len(), 2);
    }

    #[test]
    fn the_history_stays_bounded_and_spans_the_whole_attempt() {
        let mut history = ProgressHistory::default();
        let total = HISTORY_POINTS as i64 * 5;
        for at in 0..total {
            history.push(ProgressPoint {
                at_us: at,
                fraction: None,
                metrics: BTreeMap::new(),
            });
        }
        let points = history.points();
        assert!(points.len() <= HISTORY_POINTS);
        assert!(points.len() > HISTORY_POINTS / 2);
        assert_eq!(points.first().map(|p| p.at_us), Some(0));
        assert!(points.last().map_or(0, |p| p.at_us) > total * 9 / 10);
        assert!(points.windows(2).all(|w| w[0].at_us < w[1].at_us));
    }
}
