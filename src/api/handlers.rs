//! What each route does: one function per route, from a parsed request to
//! an answer. No I/O beyond calling the scheduler.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::model::{ResourceSample, TaskId, TaskRecord, TaskStatus, now_us};
use crate::scheduler::{CancelOutcome, Scheduler, TaskQuery, Waiting};

use super::error::ApiError;
use super::routes::{ListParams, Order, Route};
use super::views::{self, Batch, LegacySubmission, Submission, WaitMany};
use super::{legacy, prometheus};

/// Where the latest resource sample comes from.
pub type ResourceSource = Arc<dyn Fn() -> Option<Arc<ResourceSample>> + Send + Sync>;

/// Where the resource history comes from: the samples of the last hour,
/// oldest first, shared.
pub type HistorySource = Arc<dyn Fn() -> Arc<Vec<Arc<ResourceSample>>> + Send + Sync>;

/// Makes a new example task, e.g. a random mock ML or CV task.
pub type ExampleSource = Arc<dyn Fn() -> crate::model::TaskSpec + Send + Sync>;

/// What handlers need.
#[derive(Clone)]
pub struct Context {
    /// The engine.
    pub scheduler: Scheduler,
    /// Latest machine resources.
    pub resources: ResourceSource,
    /// The last hour of them; none where this server keeps no history.
    pub history: Option<HistorySource>,
    /// Most tasks in one batch.
    pub max_batch: usize,
    /// Tasks that run code are accepted (see [`super::ApiConfig`]).
    pub allow_code_tasks: bool,
    /// Where task output logs are.
    pub log_dir: Option<std::path::PathBuf>,
    /// What `POST /api/v1/tasks/example` submits.
    pub example_task: Option<ExampleSource>,
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
                "task {name:?} runs a program or code; it is accepted only with the server's \
                 token or secret (or from loopback on a server that has neither), and never \
                 through the older scripts' routes"
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
    /// Raw bytes (a part of a log) with headers that describe them.
    Bytes {
        /// Headers beyond the content type.
        headers: Vec<(&'static str, String)>,
        /// The bytes.
        body: Vec<u8>,
    },
}

/// What the server should do with a request.
#[derive(Debug)]
pub enum Handled {
    /// Answer now.
    Reply(Reply),
    /// Answer when the tasks have finished or the time is up.
    LongPoll(Awaited, Duration),
}

/// The tasks a long poll waits for, and the shape of its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Awaited {
    /// One task (`/tasks/{id}/wait`, `/tasks/run`): `{"finished", "task"}`.
    One([TaskId; 1]),
    /// Several distinct tasks (`/tasks/wait`): `{"finished", "tasks"}`.
    Many(Vec<TaskId>),
}

impl Awaited {
    /// The tasks awaited.
    pub fn ids(&self) -> &[TaskId] {
        match self {
            Self::One(id) => id,
            Self::Many(ids) => ids,
        }
    }
}

/// How long `/tasks/run` waits on its request thread before it hands the
/// request to the long-poll thread: short tasks (the common "run this and
/// give me the result") are answered without that hand-off, and a request
/// thread is never held longer than this.
const RUN_INLINE_WAIT: Duration = Duration::from_millis(1);

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
        Route::SubmitExample => {
            let make = ctx
                .example_task
                .as_ref()
                .ok_or_else(|| ApiError::not_found("this server has no example task"))?;
            let spec = make();
            check_code_tasks(ctx, caller, [spec.name.as_str()])?;
            let (task, args) = (spec.name.clone(), spec.args.clone());
            let id = scheduler.submit(spec)?;
            Ok(Handled::Reply(Reply::Json(
                201,
                json!({ "id": id, "status": "queued", "task": task, "args": args }),
            )))
        }
        Route::Asset(asset) => Ok(Handled::Reply(Reply::Bytes {
            headers: super::web::headers(asset),
            body: asset.body.to_vec(),
        })),
        Route::List(params) => ok(list(scheduler, &params)),
        Route::Log(params) => {
            let located = super::logs::locate(scheduler, ctx.log_dir.as_deref(), &params)?;
            let (part, complete) = super::logs::read(scheduler, &located, &params)?;
            Ok(Handled::Reply(Reply::Bytes {
                headers: super::logs::headers(located.attempt, &part, complete),
                body: part.bytes,
            }))
        }
        Route::Progress(id, attempt) => {
            if scheduler.task_shared(id).is_none() {
                return Err(ApiError::not_found(format!("no task {id}")));
            }
            let (attempt, points) = scheduler
                .progress_history(id, attempt)
                .unwrap_or((attempt.unwrap_or(0), Vec::new()));
            ok(json!({ "task": id, "attempt": attempt, "points": points }))
        }
        Route::Events { .. } => Err(ApiError::internal(
            "the event stream is answered by the listener",
        )),
        Route::Get(id) => ok(record_view(scheduler, id)?),
        Route::Cancel(id) => {
            let outcome = scheduler.cancel(id)?;
            let record = scheduler.task_shared(id).ok_or_else(|| not_found(id))?;
            let outcome = match outcome {
                CancelOutcome::Removed => "removed",
                CancelOutcome::StopRequested => "stop_requested",
            };
            ok(json!({ "id": id, "outcome": outcome, "task": views::task(&record) }))
        }
        Route::Retry { id, cascade } => {
            let ids = scheduler.retry_cascade(id, cascade)?;
            ok(json!({ "id": id, "status": "queued", "ids": ids }))
        }
        Route::Hold(id) => {
            scheduler.hold(id)?;
            ok(record_view(scheduler, id)?)
        }
        Route::Release(id) => {
            scheduler.release(id)?;
            ok(record_view(scheduler, id)?)
        }
        Route::Wait(id, secs) => {
            let record = scheduler.task_shared(id).ok_or_else(|| not_found(id))?;
            if record.status.is_final() || secs <= 0.0 {
                return ok(one_reply(&record));
            }
            Ok(Handled::LongPoll(
                Awaited::One([id]),
                Duration::from_secs_f64(secs),
            ))
        }
        Route::WaitMany(secs) => {
            let WaitMany { ids } = parse_body(body)?;
            let mut seen = std::collections::HashSet::with_capacity(ids.len());
            let ids: Vec<TaskId> = ids.into_iter().filter(|id| seen.insert(*id)).collect();
            if ids.is_empty() || ids.len() > ctx.max_batch {
                return Err(ApiError::bad_request(format!(
                    "a wait names 1 to {} different tasks, got {}",
                    ctx.max_batch,
                    ids.len()
                )));
            }
            let records = many_records(scheduler, &ids)?;
            if secs <= 0.0 || records.iter().all(|record| record.status.is_final()) {
                return ok(many_reply(&records));
            }
            Ok(Handled::LongPoll(
                Awaited::Many(ids),
                Duration::from_secs_f64(secs),
            ))
        }
        Route::Run(secs) => {
            let spec = parse_body::<Submission>(body)?.into_spec()?;
            check_code_tasks(ctx, caller, [spec.name.as_str()])?;
            let id = scheduler.submit(spec)?;
            let wait = Duration::from_secs_f64(secs);
            let record = scheduler
                .wait(id, RUN_INLINE_WAIT.min(wait))
                .ok_or_else(|| not_found(id))?;
            if record.status.is_final() || wait <= RUN_INLINE_WAIT {
                return ok(one_reply(&record));
            }
            Ok(Handled::LongPoll(
                Awaited::One([id]),
                wait - RUN_INLINE_WAIT,
            ))
        }
        Route::Queues => {
            let queues: Vec<Value> = scheduler.queues().iter().map(views::queue).collect();
            ok(json!({ "queues": queues }))
        }
        Route::Queue(name) => ok(views::queue(&scheduler.queue(&name)?)),
        Route::SetQueue(name) => {
            let change = views::queue_change(body)?;
            ok(views::queue(&scheduler.set_queue(&name, change)?))
        }
        Route::Monitoring => {
            let sample = (ctx.resources)();
            ok(views::monitoring(sample.as_deref(), &scheduler.stats()))
        }
        Route::History(minutes) => {
            let history = ctx
                .history
                .as_ref()
                .ok_or_else(|| ApiError::not_found("this server keeps no resource history"))?;
            ok(views::history(&history(), minutes, now_us()))
        }
        Route::Workers => ok(views::workers(&scheduler.workers(), &scheduler.stats())),
        Route::Report => ok(views::report(&scheduler.stats())),
        Route::Pause { stop_running } => {
            let stopped = if stop_running {
                scheduler.pause_and_stop()?
            } else {
                scheduler.pause()?;
                0
            };
            ok(json!({ "paused": scheduler.is_paused(), "stopped": stopped }))
        }
        Route::Resume => {
            scheduler.resume()?;
            ok(json!({ "paused": scheduler.is_paused() }))
        }
        Route::TaskTypes => ok(views::task_types(scheduler.registry())),
        Route::Health => Ok(Handled::Reply(health(scheduler))),
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

/// One task's record with why it waits; 404 for an unknown id.
fn record_view(scheduler: &Scheduler, id: TaskId) -> Result<Value, ApiError> {
    let record = scheduler.task_shared(id).ok_or_else(|| not_found(id))?;
    let waiting = scheduler.waiting(&[id]).pop().flatten();
    let mut view = views::task_waiting(&record, waiting);
    view["dependents"] = json!(scheduler.dependents(id));
    Ok(view)
}

fn list(scheduler: &Scheduler, params: &ListParams) -> Value {
    let query = TaskQuery {
        status: params.status,
        name: params.task.clone(),
        offset: params.offset,
        limit: params.limit,
        oldest_first: params.order == Order::Oldest,
        sort: params.sort,
    };
    let (records, total) = scheduler.list_page(&query);
    // Only tasks that have not started can wait: ask for those alone, so a
    // page of finished tasks costs the scheduler's lock nothing more.
    let unstarted: Vec<TaskId> = records
        .iter()
        .filter(|record| matches!(record.status, TaskStatus::Queued | TaskStatus::Retrying))
        .map(|record| record.id)
        .collect();
    let reasons: HashMap<TaskId, Waiting> = if unstarted.is_empty() {
        HashMap::new()
    } else {
        unstarted
            .iter()
            .copied()
            .zip(scheduler.waiting(&unstarted))
            .filter_map(|(id, waiting)| Some((id, waiting?)))
            .collect()
    };
    let tasks: Vec<Value> = records
        .iter()
        .map(|record| views::task_waiting(record, reasons.get(&record.id).cloned()))
        .collect();
    json!({
        "count": tasks.len(),
        "total": total,
        "limit": params.limit,
        "offset": params.offset,
        "tasks": tasks,
    })
}

/// `/healthz`: 200 while the server can take tasks; 503 while its store
/// cannot write (a full disk), saying why. The broker's connection is
/// reported, not judged: submits say when it is missing.
fn health(scheduler: &Scheduler) -> Reply {
    let mut body = json!({ "status": "ok" });
    let mut code = 200;
    if let Some(storage) = scheduler.storage_status() {
        if !storage.is_ok() {
            code = 503;
            body["status"] = json!(if storage.full {
                "storage_full"
            } else {
                "storage_unavailable"
            });
        }
        body["storage"] = views::storage(&storage);
    }
    match scheduler.transport_status() {
        None => {}
        Some(Ok(())) => body["broker"] = json!({ "connected": true }),
        Some(Err(error)) => body["broker"] = json!({ "connected": false, "error": error }),
    }
    Reply::Json(code, body)
}

/// `{"finished", "task"}` for one record.
fn one_reply(record: &TaskRecord) -> Value {
    json!({ "finished": record.status.is_final(), "task": views::task(record) })
}

/// The records of `ids`, in order; 404 naming the first unknown id.
fn many_records(scheduler: &Scheduler, ids: &[TaskId]) -> Result<Vec<Arc<TaskRecord>>, ApiError> {
    ids.iter()
        .zip(scheduler.records(ids))
        .map(|(id, record)| record.ok_or_else(|| not_found(*id)))
        .collect()
}

/// `{"finished", "tasks"}`: whether all are final, and their records.
fn many_reply(records: &[Arc<TaskRecord>]) -> Value {
    let finished = records.iter().all(|record| record.status.is_final());
    let tasks: Vec<Value> = records.iter().map(|record| views::task(record)).collect();
    json!({ "finished": finished, "tasks": tasks })
}

/// The answer to a long poll once it ends: the records and whether they are final.
pub fn awaited_reply(scheduler: &Scheduler, awaited: &Awaited) -> Result<Reply, ApiError> {
    match awaited {
        Awaited::One([id]) => {
            let record = scheduler.task_shared(*id).ok_or_else(|| not_found(*id))?;
            Ok(Reply::Json(200, one_reply(&record)))
        }
        Awaited::Many(ids) => Ok(Reply::Json(200, many_reply(&many_records(scheduler, ids)?))),
    }
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
            history: None,
            max_batch: 10,
            allow_code_tasks,
            log_dir: None,
            example_task: None,
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
