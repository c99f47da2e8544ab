//! What each route does: one function per route, from a parsed request to
//! an answer. No I/O beyond calling the scheduler.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::model::{ResourceSample, TaskId};
use crate::scheduler::{CancelOutcome, Scheduler, TaskQuery};

use super::error::ApiError;
use super::routes::{ListParams, Order, Route};
use super::views::{self, Batch, LegacySubmission, Submission};
use super::{legacy, prometheus};

/// Where the latest resource sample comes from.
pub type ResourceSource = Arc<dyn Fn() -> Option<Arc<ResourceSample>> + Send + Sync>;

/// What handlers need.
#[derive(Clone)]
pub struct Context {
    /// The engine.
    pub scheduler: Scheduler,
    /// Latest machine resources.
    pub resources: ResourceSource,
    /// Most tasks in one batch.
    pub max_batch: usize,
    /// Tasks that run code are accepted (see [`super::ApiConfig`]).
    pub allow_code_tasks: bool,
}

/// Who sent a request, as far as the code-task rule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// It connected from loopback, or the server requires the token (and
    /// the request carried it).
    pub trusted: bool,
}

/// Refuses tasks that run programs or code unless the server opted in and
/// the caller is trusted.
fn check_code_tasks<'a>(
    ctx: &Context,
    caller: Caller,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), ApiError> {
    let registry = ctx.scheduler.registry();
    for name in names {
        if !registry.runs_code(name) {
            continue;
        }
        if !ctx.allow_code_tasks {
            return Err(ApiError::forbidden(format!(
                "task {name:?} runs a program or code; this server does not accept such tasks \
                 over HTTP (start it with --allow-code-tasks)"
            )));
        }
        if !caller.trusted {
            return Err(ApiError::forbidden(format!(
                "task {name:?} runs a program or code; it is accepted only from loopback \
                 clients or with the server's token"
            )));
        }
    }
    Ok(())
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// JSON with a status.
    Json(u16, Value),
    /// Prometheus text.
    Metrics(String),
}

/// What the server should do with a request.
#[derive(Debug)]
pub enum Handled {
    /// Answer now.
    Reply(Reply),
    /// Answer when the task finishes or the time is up.
    LongPoll(TaskId, Duration),
}

fn ok(value: Value) -> Result<Handled, ApiError> {
    Ok(Handled::Reply(Reply::Json(200, value)))
}

/// Parses a JSON body into `T`, with a message that names the problem.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request needs a JSON body"));
    }
    serde_json::from_slice(body).map_err(|error| {
        let kind = if error.is_data() {
            "invalid request"
        } else {
            "invalid JSON"
        };
        ApiError::bad_request(format!("{kind}: {error}"))
    })
}

/// Runs a route.
pub fn handle(
    ctx: &Context,
    caller: Caller,
    route: Route,
    body: &[u8],
) -> Result<Handled, ApiError> {
    let scheduler = &ctx.scheduler;
    match route {
        Route::Submit => {
            let spec = parse_body::<Submission>(body)?.into_spec()?;
            check_code_tasks(ctx, caller, [spec.name.as_str()])?;
            let id = scheduler.submit(spec)?;
            Ok(Handled::Reply(Reply::Json(
                201,
                json!({ "id": id, "status": "queued" }),
            )))
        }
        Route::SubmitBatch => {
            let batch: Batch = parse_body(body)?;
            if batch.tasks.is_empty() || batch.tasks.len() > ctx.max_batch {
                return Err(ApiError::bad_request(format!(
                    "a batch holds 1 to {} tasks, got {}",
                    ctx.max_batch,
                    batch.tasks.len()
                )));
            }
            let specs = batch
                .tasks
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    s.into_spec().map_err(|e| {
                        ApiError::bad_request(format!("task {i} of the batch: {}", e.message))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            check_code_tasks(ctx, caller, specs.iter().map(|spec| spec.name.as_str()))?;
            let ids = scheduler.submit_batch(specs)?;
            Ok(Handled::Reply(Reply::Json(201, json!({ "ids": ids }))))
        }
        Route::List(params) => ok(list(scheduler, &params)),
        Route::Get(id) => {
            let record = scheduler.task(id).ok_or_else(|| not_found(id))?;
            ok(views::task(&record))
        }
        Route::Cancel(id) => {
            let outcome = scheduler.cancel(id)?;
            let record = scheduler.task(id).ok_or_else(|| not_found(id))?;
            let outcome = match outcome {
                CancelOutcome::Removed => "removed",
                CancelOutcome::StopRequested => "stop_requested",
            };
            ok(json!({ "id": id, "outcome": outcome, "task": views::task(&record) }))
        }
        Route::Retry(id) => {
            scheduler.retry(id)?;
            ok(json!({ "id": id, "status": "queued" }))
        }
        Route::Wait(id, secs) => {
            if scheduler.task(id).is_none() {
                return Err(not_found(id));
            }
            Ok(Handled::LongPoll(id, Duration::from_secs_f64(secs)))
        }
        Route::Monitoring => {
            let sample = (ctx.resources)();
            ok(views::monitoring(sample.as_deref(), &scheduler.stats()))
        }
        Route::Workers => ok(views::workers(&scheduler.workers(), &scheduler.stats())),
        Route::Report => ok(views::report(&scheduler.stats())),
        Route::TaskTypes => ok(views::task_types(scheduler.registry())),
        Route::Health => ok(match scheduler.transport_status() {
            None => json!({ "status": "ok" }),
            Some(Ok(())) => json!({ "status": "ok", "broker": { "connected": true } }),
            Some(Err(error)) => {
                json!({ "status": "ok", "broker": { "connected": false, "error": error } })
            }
        }),
        Route::Metrics => {
            let sample = (ctx.resources)();
            Ok(Handled::Reply(Reply::Metrics(prometheus::render(
                scheduler,
                sample.as_deref(),
            ))))
        }
        Route::LegacySubmit => {
            let LegacySubmission {
                function_name,
                arguments,
            } = parse_body(body)?;
            check_code_tasks(ctx, caller, [function_name.as_str()])?;
            ok(legacy::submit(scheduler, function_name, arguments)?)
        }
        Route::LegacyStatus(id) => ok(legacy::status(scheduler, &id)),
        Route::LegacyMonitoring => {
            let sample = (ctx.resources)();
            ok(legacy::monitoring(sample.as_deref(), &scheduler.stats()))
        }
        Route::LegacyTasks => ok(legacy::tasks(scheduler)),
        Route::LegacyRemove(id) => ok(legacy::remove(scheduler, &id)),
    }
}

fn not_found(id: TaskId) -> ApiError {
    ApiError::not_found(format!("task {id} not found"))
}

fn list(scheduler: &Scheduler, params: &ListParams) -> Value {
    let query = TaskQuery {
        status: params.status,
        name: params.task.clone(),
        offset: params.offset,
        limit: params.limit,
        oldest_first: params.order == Order::Oldest,
    };
    let tasks: Vec<Value> = scheduler.list(&query).iter().map(views::task).collect();
    json!({
        "count": tasks.len(),
        "limit": params.limit,
        "offset": params.offset,
        "tasks": tasks,
    })
}

/// The answer to a long poll once it ends: the record and whether it is final.
pub fn wait_reply(scheduler: &Scheduler, id: TaskId) -> Result<Reply, ApiError> {
    let record = scheduler.task(id).ok_or_else(|| not_found(id))?;
    Ok(Reply::Json(
        200,
        json!({ "finished": record.status.is_final(), "task": views::task(&record) }),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::scheduler::SchedulerConfig;
    use crate::tasks::{ExecSettings, Registry, register_exec_tasks};

    fn context(allow_code_tasks: bool) -> (Context, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut registry = Registry::with_builtins();
        register_exec_tasks(&mut registry, ExecSettings::new(dir.path().join("logs")));
        let mut config = SchedulerConfig::in_memory();
        config.workers = 0;
        let scheduler = Scheduler::start(config, registry).expect("scheduler");
        let ctx = Context {
            scheduler,
            resources: Arc::new(|| None),
            max_batch: 10,
            allow_code_tasks,
        };
        (ctx, dir)
    }

    fn submit(ctx: &Context, trusted: bool, body: &str) -> Result<Handled, ApiError> {
        handle(ctx, Caller { trusted }, Route::Submit, body.as_bytes())
    }

    #[test]
    fn code_tasks_need_the_opt_in_and_a_trusted_caller() {
        let command = r#"{"task": "command", "args": [["true"]]}"#;
        let (closed, _dir) = context(false);
        let refused = submit(&closed, true, command).expect_err("no opt-in");
        assert_eq!(refused.status, 403);
        assert!(
            refused.message.contains("--allow-code-tasks"),
            "{}",
            refused.message
        );
        assert!(
            submit(&closed, true, r#"{"task": "noop"}"#).is_ok(),
            "other tasks pass"
        );

        let (open, _dir) = context(true);
        let refused = submit(&open, false, command).expect_err("untrusted caller");
        assert_eq!(refused.status, 403);
        assert!(refused.message.contains("loopback"), "{}", refused.message);
        let batch = r#"{"tasks": [{"task": "noop"}, {"task": "python", "args": ["m:f"]}]}"#;
        let refused = handle(
            &open,
            Caller { trusted: false },
            Route::SubmitBatch,
            batch.as_bytes(),
        )
        .expect_err("a batch with a code task");
        assert_eq!(refused.status, 403);
        assert!(submit(&open, true, command).is_ok(), "opted in and trusted");
        assert_eq!(
            open.scheduler.stats().counts.queued,
            1,
            "only the accepted one"
        );
        let legacy = r#"{"function_name": "command", "arguments": [["true"]]}"#;
        let refused = handle(
            &closed,
            Caller { trusted: true },
            Route::LegacySubmit,
            legacy.as_bytes(),
        )
        .expect_err("legacy route too");
        assert_eq!(refused.status, 403);
        closed.scheduler.shutdown().expect("shutdown");
        open.scheduler.shutdown().expect("shutdown");
    }
}
