//! How many placed attempts may wait on a worker for a slot: a fixed number,
//! or, by default, two per slot while the attempts it ran lately were short
//! and none otherwise. Short tasks then start the moment a slot frees,
//! without a round trip to the scheduler, and a long task never waits on a
//! busy worker, showing as running while it waits.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

/// Attempts kept for the recent mean run time.
const KEPT: usize = 16;
/// Fewest attempts that must have ended before tasks count as short.
const FEWEST: usize = 4;
/// A mean run time below this turns prefetch on...
const SHORT_US: i64 = 100_000;
/// ...and one above this turns it off again.
const LONG_US: i64 = 200_000;
/// Attempts per slot that wait while tasks are short.
const PER_SLOT: usize = 2;

/// `worker --prefetch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefetch {
    /// Two per slot while the last attempts' mean run time is short (under
    /// 0.1 s; off again above 0.2 s), none otherwise.
    #[default]
    Auto,
    /// Always this many.
    Fixed(usize),
}

impl FromStr for Prefetch {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        match text.parse::<u16>() {
            Ok(count) => Ok(Self::Fixed(usize::from(count))),
            Err(_) => Err(format!(
                "expected \"auto\" or a number of attempts from 0 to {}, got {text:?}",
                u16::MAX
            )),
        }
    }
}

impl fmt::Display for Prefetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(count) => write!(f, "{count}"),
        }
    }
}

/// The run times of the attempts a worker ran lately.
#[derive(Debug, Default)]
pub(super) struct Lately {
    runs: VecDeque<i64>,
    sum: i64,
    short: bool,
}

impl Lately {
    /// Takes an ended attempt's run time; true when tasks just turned
    /// short or long.
    pub(super) fn took(&mut self, run_time_us: i64) -> bool {
        let run_time_us = run_time_us.max(0);
        self.runs.push_back(run_time_us);
        self.sum = self.sum.saturating_add(run_time_us);
        if self.runs.len() > KEPT
            && let Some(oldest) = self.runs.pop_front()
        {
            self.sum -= oldest;
        }
        if self.runs.len() < FEWEST {
            return false;
        }
        let mean = self.sum / self.runs.len() as i64;
        let short = if self.short {
            mean <= LONG_US
        } else {
            mean < SHORT_US
        };
        std::mem::replace(&mut self.short, short) != short
    }

    /// Attempts that may wait on a worker of `slots` slots.
    pub(super) fn prefetch(&self, setting: Prefetch, slots: usize) -> usize {
        match setting {
            Prefetch::Fixed(count) => count,
            Prefetch::Auto if self.short => slots.saturating_mul(PER_SLOT),
            Prefetch::Auto => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_reads_auto_or_a_number() {
        assert_eq!("auto".parse(), Ok(Prefetch::Auto));
        assert_eq!("AUTO".parse(), Ok(Prefetch::Auto));
        assert_eq!("0".parse(), Ok(Prefetch::Fixed(0)));
        assert_eq!("40".parse(), Ok(Prefetch::Fixed(40)));
        for bad in ["", "-1", "65536", "some"] {
            let error = bad.parse::<Prefetch>().expect_err(bad);
            assert!(error.contains("\"auto\" or a number"), "{error}");
        }
        assert_eq!(Prefetch::Auto.to_string(), "auto");
        assert_eq!(Prefetch::Fixed(3).to_string(), "3");
    }

    #[test]
    fn short_tasks_turn_prefetch_on_and_long_ones_off_again() {
        let mut lately = Lately::default();
        assert_eq!(lately.prefetch(Prefetch::Auto, 4), 0, "nothing ran yet");
        for _ in 0..FEWEST - 1 {
            assert!(!lately.took(1_000));
        }
        assert_eq!(lately.prefetch(Prefetch::Auto, 4), 0, "too few to tell");
        assert!(lately.took(1_000), "short now");
        assert_eq!(lately.prefetch(Prefetch::Auto, 4), 8);
        assert_eq!(
            lately.prefetch(Prefetch::Fixed(1), 4),
            1,
            "a number always wins"
        );
        // One long attempt among short ones changes nothing; between the
        // two marks it stays as it was.
        for _ in 0..KEPT {
            assert!(!lately.took(1_000));
        }
        assert!(!lately.took(1_000_000));
        assert_eq!(lately.prefetch(Prefetch::Auto, 4), 8);
        let mut changes = 0;
        for _ in 0..KEPT {
            changes += usize::from(lately.took(5_000_000));
        }
        assert_eq!(changes, 1, "turned off once");
        assert_eq!(lately.prefetch(Prefetch::Auto, 4), 0);
        for _ in 0..KEPT {
            lately.took(150_000);
        }
        assert_eq!(lately.prefetch(Prefetch::Auto, 4), 0, "0.15 s is not short");
        for _ in 0..KEPT {
            lately.took(50_000);
        }
        assert_eq!(lately.prefetch(Prefetch::Auto, 4), 8);
        for _ in 0..KEPT {
            lately.took(150_000);
        }
        assert_eq!(lately.prefetch(Prefetch::Auto, 4), 8, "nor long");
    }
}
