//! Built-in tasks: small tasks for benchmarks and tests. (The demo
//! workloads, `mock_ml_task` and `mock_cv_task`, live in the `demo` module.)

use std::time::Duration;

use serde_json::{Value, json};

use super::{Param, ParamType, Registry, Signature, TaskError};

/// Registers `noop`, `sleep` and `fail`.
pub fn register_builtins(registry: &mut Registry) {
    registry.register(
        "noop",
        "Returns its arguments at once; for benchmarks.",
        Signature::new(vec![]).with_rest("args"),
        |_ctx, args| Ok(Value::Array(args.rest().to_vec())),
    );
    registry.register(
        "sleep",
        "Waits for ms milliseconds without using the CPU; stops at once when cancelled.",
        Signature::new(vec![Param::required("ms", ParamType::UInt)]),
        |ctx, args| {
            let ms = args.u64("ms")?;
            ctx.sleep(Duration::from_millis(ms))?;
            Ok(json!({ "slept_ms": ms }))
        },
    );
    registry.register(
        "fail",
        "Fails its first n attempts, then succeeds; for retry tests.",
        Signature::new(vec![Param::required("n", ParamType::UInt)]),
        |ctx, args| {
            let n = args.u64("n")?;
            if u64::from(ctx.attempt) <= n {
                Err(TaskError::retryable(format!(
                    "planned failure {} of {n}",
                    ctx.attempt
                )))
            } else {
                Ok(json!({ "succeeded_on_attempt": ctx.attempt }))
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskId;
    use crate::tasks::{CancelToken, StopReason, TaskContext};
    use serde_json::Map;

    fn run(name: &str, args: Vec<Value>, attempt: u32) -> Result<Value, TaskError> {
        let registry = Registry::with_builtins();
        let def = registry.get(name).expect("builtin should be registered");
        let bound = def
            .signature
            .bind(&args, &Map::new())
            .expect("args should bind");
        let ctx = TaskContext::new(TaskId(1), attempt, "test".into(), CancelToken::new());
        def.call(&ctx, &bound)
    }

    #[test]
    fn noop_returns_its_arguments() {
        assert_eq!(
            run("noop", vec![json!(1), json!("a")], 1),
            Ok(json!([1, "a"]))
        );
    }

    #[test]
    fn fail_fails_its_first_n_attempts() {
        assert!(run("fail", vec![json!(2)], 1).is_err());
        assert!(run("fail", vec![json!(2)], 2).is_err());
        assert_eq!(
            run("fail", vec![json!(2)], 3),
            Ok(json!({ "succeeded_on_attempt": 3 }))
        );
    }

    #[test]
    fn sleep_stops_when_cancelled() {
        let registry = Registry::with_builtins();
        let def = registry.get("sleep").expect("sleep should be registered");
        let bound = def
            .signature
            .bind(&[json!(60_000)], &Map::new())
            .expect("args should bind");
        let token = CancelToken::new();
        token.cancel(StopReason::Cancelled);
        let ctx = TaskContext::new(TaskId(1), 1, "test".into(), token);
        let error = def
            .call(&ctx, &bound)
            .expect_err("cancelled sleep should stop");
        assert_eq!(error.stop, Some(StopReason::Cancelled));
    }
}
