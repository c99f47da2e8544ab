//! The demo workloads: mock machine-learning and computer-vision jobs
//! (`mock_ml_task`, `mock_cv_task`) like those of the user's earlier demo
//! scripts, registered beside the built-in tasks by [`registry`].
//!
//! They do real CPU work on synthetic data for the requested time, so a
//! resource monitor visibly moves, and return a small JSON summary computed
//! from that work. The kernels live in [`ml`], [`unsupervised`] and [`cv`];
//! this module holds the names, the registration, the shared compute pool
//! and the pacing loop.
//!
//! Pacing rules:
//! - Work runs in short steps (about 2-8 ms) on one shared rayon pool with
//!   half the machine's cores, so several tasks interleave and the workers
//!   that run other tasks are not starved.
//! - Between steps the loop checks the cancellation token and the clock, so a
//!   stopped task returns within one step and a finished one overshoots its
//!   duration by at most one step.
//!
//! A user of the task registry like any program that embeds Taskdeck:
//! depends only on [`crate::model`] and [`crate::tasks`].

mod cv;
mod ml;
mod unsupervised;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rayon::{ThreadPool, ThreadPoolBuilder};
use serde_json::Value;

use crate::model::TaskSpec;
use crate::tasks::{Param, ParamType, Registry, Signature, TaskContext, TaskError};

/// Algorithms the mock ML task knows by name.
pub const ML_ALGORITHMS: &[&str] = &[
    "Random Forest",
    "Support Vector Machines (SVM)",
    "K-Means Clustering",
    "Gradient Boosting",
    "Principal Component Analysis (PCA)",
];

/// Operations the mock CV task knows by name.
pub const CV_OPERATIONS: &[&str] = &[
    "Object Detection",
    "Image Segmentation",
    "Background Subtraction",
    "Field Registration",
    "Facial Recognition",
    "Gender and Age Prediction",
];

/// The built-in tasks ([`Registry::with_builtins`]) and the demo tasks:
/// what `taskdeck serve` and the window offer before `command` and
/// `python` are added.
pub fn registry() -> Registry {
    let mut registry = Registry::with_builtins();
    register_demo_tasks(&mut registry);
    registry
}

/// Registers `mock_ml_task` and `mock_cv_task`.
pub fn register_demo_tasks(registry: &mut Registry) {
    registry.register(
        "mock_ml_task",
        format!(
            "Trains a small model on synthetic data for duration_ms, doing real CPU work. \
             Algorithms: {}.",
            ML_ALGORITHMS.join(", ")
        ),
        Signature::new(vec![
            Param::required("duration_ms", ParamType::UInt),
            Param::required("algorithm", ParamType::String),
        ]),
        |ctx, args| {
            let duration = Duration::from_millis(args.u64("duration_ms")?);
            run_ml(ctx, duration, args.str("algorithm")?)
        },
    );
    registry.register(
        "mock_cv_task",
        format!(
            "Processes synthetic video frames for duration_ms, doing real CPU work. \
             Operations: {}.",
            CV_OPERATIONS.join(", ")
        ),
        Signature::new(vec![
            Param::required("duration_ms", ParamType::UInt),
            Param::required("operation", ParamType::String),
        ]),
        |ctx, args| {
            let duration = Duration::from_millis(args.u64("duration_ms")?);
            run_cv(ctx, duration, args.str("operation")?)
        },
    );
}

/// Shortest duration of a random mock task, in ms.
pub const RANDOM_MIN_MS: u64 = 1_000;
/// Longest duration of a random mock task by default, in ms.
pub const RANDOM_MAX_MS: u64 = 20_000;

/// A random mock task the way the user's old demo script made them: either
/// kind, a random algorithm or operation, `RANDOM_MIN_MS` to `max_ms` long.
pub fn random_mock_spec(rng: &mut fastrand::Rng, max_ms: u64) -> TaskSpec {
    let max_ms = max_ms.max(1);
    let duration = rng.u64(RANDOM_MIN_MS.min(max_ms)..=max_ms);
    if rng.bool() {
        let algorithm = ML_ALGORITHMS[rng.usize(..ML_ALGORITHMS.len())];
        TaskSpec::new("mock_ml_task", vec![duration.into(), algorithm.into()])
    } else {
        let operation = CV_OPERATIONS[rng.usize(..CV_OPERATIONS.len())];
        TaskSpec::new("mock_cv_task", vec![duration.into(), operation.into()])
    }
}

/// Runs the mock ML job: trains a small model on synthetic data for about
/// `duration` and summarises the fit. Unknown algorithm names train the
/// classifier kernel; the result's `kernel` field says which kernel ran.
pub fn run_ml(ctx: &TaskContext, duration: Duration, algorithm: &str) -> Result<Value, TaskError> {
    ml::run(ctx, duration, algorithm)
}

/// Runs the mock CV job: processes synthetic video frames for about
/// `duration` and summarises what it found. Unknown operation names run the
/// detection kernel; the result's `kernel` field says which kernel ran.
pub fn run_cv(ctx: &TaskContext, duration: Duration, operation: &str) -> Result<Value, TaskError> {
    cv::run(ctx, duration, operation)
}

/// A step shorter than this runs more units next time.
const STEP_MIN: Duration = Duration::from_millis(2);
/// A step longer than this runs fewer units next time.
const STEP_MAX: Duration = Duration::from_millis(8);
/// The most units (epochs, frames) one step may run.
const MAX_UNITS_PER_STEP: u32 = 256;

/// The shared compute pool, created on first use and kept for the life of
/// the process (like rayon's global pool). `None` when its threads could not
/// be started; the kernels then fall back to rayon's global pool.
fn compute_pool() -> Option<&'static ThreadPool> {
    static POOL: OnceLock<Option<ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
        match ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|index| format!("taskdeck-compute-{index}"))
            .build()
        {
            Ok(pool) => Some(pool),
            Err(error) => {
                tracing::warn!(%error, "could not start the compute pool; using rayon's global pool");
                None
            }
        }
    })
    .as_ref()
}

/// Runs `op` on the shared compute pool, so its parallel iterators use that
/// pool's threads.
fn in_pool<R: Send>(op: impl FnOnce() -> R + Send) -> R {
    match compute_pool() {
        Some(pool) => pool.install(op),
        None => op(),
    }
}

/// What a paced run did.
#[derive(Debug, Clone, Copy)]
struct Paced {
    /// Units of work done (epochs or frames).
    units: u64,
    /// Wall time from the start of the job to the end of the last step.
    elapsed: Duration,
}

impl Paced {
    /// Elapsed whole milliseconds.
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    /// Units per second, zero when no time passed.
    fn units_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.units as f64 / secs
        } else {
            0.0
        }
    }
}

/// Calls `step(units)` on the compute pool until `duration` has passed
/// since `start` (when the job began, so setting up counts too), always at
/// least once, checking for a stop before each step and after the last one.
/// The number of units per step adapts so that a step takes about
/// [`STEP_MIN`]-[`STEP_MAX`] and does not plan past the deadline.
fn run_paced<F>(
    ctx: &TaskContext,
    start: Instant,
    duration: Duration,
    mut step: F,
) -> Result<Paced, TaskError>
where
    F: FnMut(u32) + Send,
{
    let mut units_per_step: u32 = 1;
    let mut units: u64 = 0;
    loop {
        ctx.checkpoint()?;
        let step_start = Instant::now();
        in_pool(|| step(units_per_step));
        let took = step_start.elapsed();
        units = units.saturating_add(u64::from(units_per_step));
        let elapsed = start.elapsed();
        if elapsed >= duration {
            ctx.checkpoint()?;
            return Ok(Paced { units, elapsed });
        }
        units_per_step = next_units_per_step(units_per_step, took, duration - elapsed);
    }
}

/// How many units the next step should run, given how long the last
/// `units` took and how much time is left.
fn next_units_per_step(units: u32, took: Duration, remaining: Duration) -> u32 {
    let units = units.max(1);
    let mut next = if took < STEP_MIN {
        units.saturating_mul(2).min(MAX_UNITS_PER_STEP)
    } else if took > STEP_MAX {
        (units / 2).max(1)
    } else {
        units
    };
    let per_unit_nanos = took.as_nanos() / u128::from(units);
    if let Some(fit) = remaining.as_nanos().checked_div(per_unit_nanos) {
        next = next.min(u32::try_from(fit).unwrap_or(u32::MAX).max(1));
    }
    next
}

/// Rounds to `places` decimals for a readable summary.
fn round_to(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    // One minus a sample in [0, 1) lies in (0, 1], so the logarithm is finite.
    let radius = (-2.0 * (1.0 - rng.f64()).ln()).sqrt();
    radius * (std::f64::consts::TAU * rng.f64()).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskId;
    use crate::tasks::{CancelToken, StopReason};
    use std::thread;

    fn context(token: CancelToken) -> TaskContext {
        TaskContext::new(TaskId(1), 1, "test".into(), token)
    }

    /// Runs `job` for 150 ms and checks it took about that long.
    fn run_timed(job: impl Fn(&TaskContext, Duration) -> Result<Value, TaskError>) -> Value {
        let ctx = context(CancelToken::new());
        let start = Instant::now();
        let result = job(&ctx, Duration::from_millis(150)).expect("the job should succeed");
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
        result
    }

    fn assert_keys(result: &Value, keys: &[&str]) {
        for key in keys {
            assert!(result.get(key).is_some(), "missing {key} in {result}");
        }
    }

    const ML_KEYS: &[&str] = &[
        "algorithm",
        "kernel",
        "samples",
        "features",
        "epochs",
        "duration_ms",
    ];
    const CV_KEYS: &[&str] = &[
        "operation",
        "kernel",
        "frames",
        "width",
        "height",
        "objects_detected",
        "mean_intensity",
        "fps",
        "duration_ms",
    ];

    #[test]
    fn every_ml_algorithm_runs_for_its_duration() {
        for &algorithm in ML_ALGORITHMS {
            let result = run_timed(|ctx, duration| run_ml(ctx, duration, algorithm));
            assert_keys(&result, ML_KEYS);
            assert_eq!(result["algorithm"], algorithm);
            let metric = ["accuracy", "inertia", "explained_variance"]
                .iter()
                .find_map(|key| result.get(*key).and_then(Value::as_f64));
            assert!(metric.is_some_and(f64::is_finite), "{result}");
            assert!(result["epochs"].as_u64().is_some_and(|n| n > 0), "{result}");
        }
    }

    #[test]
    fn every_cv_operation_runs_for_its_duration() {
        for &operation in CV_OPERATIONS {
            let result = run_timed(|ctx, duration| run_cv(ctx, duration, operation));
            assert_keys(&result, CV_KEYS);
            assert_eq!(result["operation"], operation);
            assert!(result["frames"].as_u64().is_some_and(|n| n > 0), "{result}");
        }
    }

    #[test]
    fn unknown_names_use_the_generic_kernels() {
        let ctx = context(CancelToken::new());
        let ml = run_ml(&ctx, Duration::from_millis(20), "Quantum Forest").expect("ml should run");
        assert_eq!(ml["kernel"], "logistic_regression");
        assert!(ml.get("accuracy").is_some(), "{ml}");
        let cv = run_cv(&ctx, Duration::from_millis(20), "").expect("cv should run");
        assert_eq!(cv["kernel"], "blob_detection");
    }

    #[test]
    fn zero_duration_returns_a_result_quickly() {
        let ctx = context(CancelToken::new());
        let start = Instant::now();
        let ml = run_ml(&ctx, Duration::ZERO, "K-Means Clustering").expect("ml should run");
        let cv = run_cv(&ctx, Duration::ZERO, "Object Detection").expect("cv should run");
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        assert_keys(&ml, ML_KEYS);
        assert_keys(&cv, CV_KEYS);
    }

    /// Starts `job` with a long duration, cancels it from another thread
    /// after 50 ms and checks it stops within 100 ms of the cancel.
    fn assert_stops_promptly(job: impl FnOnce(&TaskContext) -> Result<Value, TaskError>) {
        let token = CancelToken::new();
        let canceller = {
            let token = token.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                let cancelled_at = Instant::now();
                token.cancel(StopReason::Cancelled);
                cancelled_at
            })
        };
        let error = job(&context(token)).expect_err("a cancelled job should stop");
        let returned_at = Instant::now();
        let cancelled_at = canceller.join().expect("the canceller should not panic");
        assert_eq!(error.stop, Some(StopReason::Cancelled));
        let lag = returned_at.saturating_duration_since(cancelled_at);
        assert!(
            lag < Duration::from_millis(100),
            "stopped {lag:?} after the cancel"
        );
    }

    #[test]
    fn cancelled_jobs_stop_promptly() {
        let long = Duration::from_secs(30);
        assert_stops_promptly(|ctx| run_ml(ctx, long, "Random Forest"));
        assert_stops_promptly(|ctx| run_ml(ctx, long, "K-Means Clustering"));
        assert_stops_promptly(|ctx| run_ml(ctx, long, "Principal Component Analysis (PCA)"));
        assert_stops_promptly(|ctx| run_cv(ctx, long, "Object Detection"));
        assert_stops_promptly(|ctx| run_cv(ctx, long, "Background Subtraction"));
    }

    #[test]
    fn an_already_cancelled_job_does_no_work() {
        let token = CancelToken::new();
        token.cancel(StopReason::TimedOut);
        let error = run_ml(&context(token), Duration::from_secs(30), "Random Forest")
            .expect_err("a cancelled job should stop");
        assert_eq!(error.stop, Some(StopReason::TimedOut));
    }

    #[test]
    fn steps_grow_when_short_and_never_plan_past_the_deadline() {
        let ms = Duration::from_millis;
        assert_eq!(next_units_per_step(4, ms(1), ms(1000)), 8);
        assert_eq!(next_units_per_step(4, ms(5), ms(1000)), 4);
        assert_eq!(next_units_per_step(4, ms(20), ms(1000)), 2);
        assert_eq!(next_units_per_step(1, ms(20), ms(1000)), 1);
        assert_eq!(next_units_per_step(8, ms(1), ms(1)), 8);
        assert_eq!(next_units_per_step(8, ms(4), ms(1)), 2);
        assert_eq!(next_units_per_step(0, Duration::ZERO, Duration::ZERO), 2);
        assert_eq!(
            next_units_per_step(MAX_UNITS_PER_STEP, Duration::ZERO, ms(1)),
            MAX_UNITS_PER_STEP
        );
    }

    #[test]
    fn the_pool_is_shared_and_named() {
        let name = in_pool(|| thread::current().name().map(str::to_owned));
        assert!(name.is_some_and(|n| n.starts_with("taskdeck-compute-")));
        let first = compute_pool().map(|pool| pool as *const ThreadPool);
        let second = compute_pool().map(|pool| pool as *const ThreadPool);
        assert_eq!(first, second);
    }
}
