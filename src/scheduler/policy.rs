//! Pure decisions of the scheduler: retry backoff and what happens to each
//! stored task when the scheduler starts again.

use std::time::Duration;

use crate::model::{TaskStatus, now_us};

/// Exponential backoff between attempts.
///
/// Rules:
/// - the delay before attempt n+1 is `base * 2^(n-1)`, capped at `max`;
/// - a random jitter of up to a quarter of the delay is added, so tasks that
///   failed together do not come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// Delay after failed attempt `attempt` (1-based); `unit_random` is in
    /// [0, 1) and picks the jitter.
    pub fn delay(&self, attempt: u32, unit_random: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(32);
        let raw = self.base.saturating_mul(1u32 << exponent.min(31));
        let capped = raw.min(self.max);
        let jitter = capped.mul_f64(unit_random.clamp(0.0, 1.0) * 0.25);
        capped + jitter
    }
}

/// What to do with a stored task when the scheduler starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Finished: keep it for queries.
    Keep,
    /// Put it back in the queue.
    Requeue,
    /// It was running when the process stopped: count the attempt as lost,
    /// then queue it again.
    LostThenRequeue,
    /// It was running, and the lost attempt used up its retries.
    LostThenFail,
}

/// Rules:
/// - finished tasks stay as they are;
/// - queued and retrying tasks are queued again (a pending backoff is not
///   waited out again);
/// - a running task's attempt is lost; it is queued again while it has
///   retries left (`attempts <= max_retries`), otherwise it fails.
pub fn recovery(status: TaskStatus, attempts: u32, max_retries: u32) -> Recovery {
    match status {
        TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled => Recovery::Keep,
        TaskStatus::Queued | TaskStatus::Retrying => Recovery::Requeue,
        TaskStatus::Running if attempts <= max_retries => Recovery::LostThenRequeue,
        TaskStatus::Running => Recovery::LostThenFail,
    }
}

/// Whether a failed attempt is followed by another one.
///
/// Rules:
/// - only retryable errors are retried (timeouts and panics are retryable);
/// - `attempts` counts the attempts made so far, so a task with
///   `max_retries` r runs at most r + 1 times.
pub fn should_retry(retryable: bool, attempts: u32, max_retries: u32) -> bool {
    retryable && attempts <= max_retries
}

/// Microseconds since the epoch at which a delay from now ends.
pub fn due_at_us(delay: Duration) -> i64 {
    now_us().saturating_add(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
        };
        assert_eq!(backoff.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(backoff.delay(2, 0.0), Duration::from_millis(200));
        assert_eq!(backoff.delay(3, 0.0), Duration::from_millis(400));
        assert_eq!(backoff.delay(5, 0.0), Duration::from_millis(1_000));
        assert_eq!(backoff.delay(60, 0.0), Duration::from_millis(1_000));
        let jittered = backoff.delay(2, 0.999);
        assert!(jittered > Duration::from_millis(249) && jittered < Duration::from_millis(250));
    }

    #[test]
    fn recovery_counts_a_lost_attempt_against_the_retries() {
        assert_eq!(recovery(TaskStatus::Completed, 1, 3), Recovery::Keep);
        assert_eq!(recovery(TaskStatus::Retrying, 2, 3), Recovery::Requeue);
        assert_eq!(recovery(TaskStatus::Queued, 0, 0), Recovery::Requeue);
        assert_eq!(recovery(TaskStatus::Running, 4, 3), Recovery::LostThenFail);
        assert_eq!(
            recovery(TaskStatus::Running, 3, 3),
            Recovery::LostThenRequeue
        );
    }

    #[test]
    fn retries_stop_after_max_retries_or_a_fatal_error() {
        assert!(should_retry(true, 1, 3));
        assert!(should_retry(true, 3, 3));
        assert!(!should_retry(true, 4, 3));
        assert!(!should_retry(false, 1, 3));
    }
}
