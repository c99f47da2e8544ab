//! Pure helpers of the resource panel: which samples and markers of a
//! window to draw, and the line segments between gaps. No egui here, so
//! they are unit-tested without a window.

use std::time::Duration;

use crate::model::ResourceSample;
use crate::telemetry::Point;

use super::TaskMarker;

/// Microseconds in a second.
pub(super) const SECOND_US: f64 = 1_000_000.0;

/// The samples of a window to plot, oldest first, `None` where the line
/// must break.
///
/// Rules:
/// - samples before `from_us` are dropped, and so is a break before the
///   first sample kept;
/// - when more than `max_points` samples remain, each run between breaks
///   keeps every n-th sample and its last one, so a line still reaches its
///   newest value and no gap is bridged.
pub(super) fn visible<'a>(
    points: impl Iterator<Item = Point<'a>>,
    from_us: i64,
    max_points: usize,
) -> Vec<Option<&'a ResourceSample>> {
    let mut kept: Vec<Option<&'a ResourceSample>> = Vec::new();
    let mut samples = 0_usize;
    for point in points {
        match point {
            Point::Sample(sample) if sample.at_us >= from_us => {
                kept.push(Some(sample));
                samples += 1;
            }
            Point::Sample(_) => {}
            Point::Gap { .. } => {
                if kept.last().is_some_and(Option::is_some) {
                    kept.push(None);
                }
            }
        }
    }
    let stride = samples.div_ceil(max_points.max(1)).max(1);
    if stride == 1 {
        return kept;
    }
    let mut thinned = Vec::with_capacity(max_points + 16);
    let mut in_run = 0_usize;
    for (position, point) in kept.iter().enumerate() {
        let run_ends = !matches!(kept.get(position + 1), Some(Some(_)));
        match point {
            Some(_) if in_run.is_multiple_of(stride) || run_ends => thinned.push(*point),
            Some(_) => {}
            None => {
                thinned.push(None);
                in_run = 0;
                continue;
            }
        }
        in_run += 1;
    }
    thinned
}

/// Splits `samples` into line segments of `[seconds before now_us, value]`,
/// breaking at every `None` and wherever `value` has nothing for a sample
/// (a GPU or disk missing from it), so a missing reading never plots as 0.
pub(super) fn segments(
    samples: &[Option<&ResourceSample>],
    now_us: i64,
    value: impl Fn(&ResourceSample) -> Option<f64>,
) -> Vec<Vec<[f64; 2]>> {
    let mut segments = Vec::new();
    let mut current: Vec<[f64; 2]> = Vec::new();
    for point in samples {
        let reading = point.and_then(|sample| {
            value(sample).map(|y| [(sample.at_us - now_us) as f64 / SECOND_US, y])
        });
        match reading {
            Some(xy) => current.push(xy),
            None if current.is_empty() => {}
            None => segments.push(std::mem::take(&mut current)),
        }
    }
    if !current.is_empty() {
        segments.push(current);
    }
    segments
}

/// The last `max` of the markers at or after `from_us` (oldest first).
pub(super) fn recent_markers(markers: &[TaskMarker], from_us: i64, max: usize) -> &[TaskMarker] {
    let start = markers.partition_point(|marker| marker.at_us < from_us);
    let in_window = markers.get(start..).unwrap_or(&[]);
    let skip = in_window.len().saturating_sub(max);
    in_window.get(skip..).unwrap_or(&[])
}

/// A duration in whole microseconds, saturating for absurd lengths.
pub(super) fn duration_us(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GpuState;
    use crate::telemetry::History;

    const NOW_US: i64 = 1_700_000_000_000_000;
    const S: i64 = 1_000_000;

    /// A history of one-second samples at these seconds before `NOW_US`,
    /// each with its age as its CPU use.
    fn history(seconds_ago: &[i64]) -> History {
        let mut history = History::default();
        for &ago in seconds_ago {
            history.push(ResourceSample {
                at_us: NOW_US - ago * S,
                cpu_percent: ago as f32,
                cpu_per_core: Vec::new(),
                memory_used_bytes: 1,
                memory_total_bytes: 2,
                disks: Vec::new(),
                gpus: GpuState::Unavailable {
                    reason: "test".to_owned(),
                },
            });
        }
        history
    }

    #[test]
    fn segments_break_at_gaps_and_missing_values_never_at_zero() {
        // 10, 9 and 8 s ago, a gap, then 2 and 1 s ago.
        let history = history(&[10, 9, 8, 2, 1]);
        let samples = visible(
            history.window(Duration::from_secs(60)),
            NOW_US - 60 * S,
            600,
        );
        assert_eq!(samples.iter().filter(|point| point.is_none()).count(), 1);
        let cpu = segments(&samples, NOW_US, |s| Some(f64::from(s.cpu_percent)));
        assert_eq!(
            cpu,
            [
                vec![[-10.0, 10.0], [-9.0, 9.0], [-8.0, 8.0]],
                vec![[-2.0, 2.0], [-1.0, 1.0]],
            ]
        );
        // A value missing from one sample breaks the line there too.
        let odd = segments(&samples, NOW_US, |s| {
            (s.at_us != NOW_US - 9 * S).then_some(1.0)
        });
        assert_eq!(odd.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 2]);
    }

    #[test]
    fn visible_drops_old_samples_and_a_leading_gap() {
        let history = history(&[100, 30, 29]);
        let samples = visible(
            history.window(Duration::from_secs(3600)),
            NOW_US - 60 * S,
            600,
        );
        let times: Vec<Option<i64>> = samples.iter().map(|p| p.map(|s| s.at_us)).collect();
        assert_eq!(times, [Some(NOW_US - 30 * S), Some(NOW_US - 29 * S)]);
    }

    #[test]
    fn long_windows_are_thinned_keeping_run_ends() {
        let seconds: Vec<i64> = (1..=1000)
            .rev()
            .filter(|s| !(497..=503).contains(s))
            .collect();
        let history = history(&seconds);
        let all = visible(history.window(Duration::from_secs(3600)), 0, usize::MAX);
        assert_eq!(all.len(), 994);
        let thinned = visible(history.window(Duration::from_secs(3600)), 0, 100);
        assert!(thinned.len() <= 110, "{} points", thinned.len());
        let times: Vec<Option<i64>> = thinned.iter().map(|p| p.map(|s| s.at_us)).collect();
        assert_eq!(times.first(), Some(&Some(NOW_US - 1000 * S)));
        assert_eq!(times.last(), Some(&Some(NOW_US - S)));
        // The run before the gap ends with its last sample.
        let gap = times
            .iter()
            .position(Option::is_none)
            .expect("the gap should stay");
        assert_eq!(times.get(gap - 1), Some(&Some(NOW_US - 504 * S)));
        assert_eq!(times.get(gap + 1), Some(&Some(NOW_US - 496 * S)));
    }

    #[test]
    fn only_the_most_recent_markers_in_the_window_are_drawn() {
        let markers: Vec<TaskMarker> = (0..1000)
            .map(|n| TaskMarker {
                at_us: NOW_US - (1000 - n) * S,
                finished: n % 2 == 1,
                task_id: n as u64,
                name: "noop".to_owned(),
            })
            .collect();
        let recent = recent_markers(&markers, NOW_US - 300 * S, 200);
        assert_eq!(recent.len(), 200);
        assert_eq!(recent.last().map(|m| m.task_id), Some(999));
        assert_eq!(recent_markers(&markers, NOW_US - 50 * S, 200).len(), 50);
        assert!(recent_markers(&markers, NOW_US + S, 200).is_empty());
    }
}
