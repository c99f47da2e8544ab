//! Which route a request names: pure parsing of method, path and query.

use std::collections::HashMap;

use crate::model::{TaskId, TaskStatus};
use crate::scheduler::TaskSort;

use super::error::ApiError;
use super::events::Filter;
use super::web::{self, Asset};

/// HTTP methods the API distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET (and HEAD).
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
    /// PATCH.
    Patch,
    /// Anything else.
    Other,
}

/// Direction of a task listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Highest first (`newest`, `desc`).
    Newest,
    /// Lowest first (`oldest`, `asc`).
    Oldest,
}

/// Filters and paging of `GET /api/v1/tasks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParams {
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// Only this task name.
    pub task: Option<String>,
    /// Page size, 1-1000.
    pub limit: usize,
    /// Matches skipped.
    pub offset: usize,
    /// Direction.
    pub order: Order,
    /// What the tasks are sorted by.
    pub sort: TaskSort,
}

/// What part of a task's output log to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogParams {
    /// The task.
    pub id: TaskId,
    /// The attempt; the latest when not given.
    pub attempt: Option<u32>,
    /// First byte to read.
    pub offset: u64,
    /// Most bytes to read (not with `follow`).
    pub limit: usize,
    /// Start at the beginning of the last this many lines instead of `offset`.
    pub tail: Option<usize>,
    /// Stream what is written until the attempt ends.
    pub follow: bool,
}

/// Most bytes one log read returns.
pub const MAX_LOG_LIMIT: usize = 4 * 1024 * 1024;

/// Longest long poll a client may ask for.
pub const MAX_WAIT_SECS: f64 = 300.0;
/// Largest page of a listing.
pub const MAX_LIMIT: usize = 1_000;

/// Every route the server answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// `POST /api/v1/tasks`
    Submit,
    /// `POST /api/v1/tasks/batch`
    SubmitBatch,
    /// `POST /api/v1/tasks/example`: a random example task (on `serve`, a
    /// mock ML or CV task like the old demo script's)
    SubmitExample,
    /// `GET /api/v1/tasks`
    List(ListParams),
    /// `GET /api/v1/tasks/{id}`
    Get(TaskId),
    /// `DELETE /api/v1/tasks/{id}` or `POST /api/v1/tasks/{id}/cancel`
    Cancel(TaskId),
    /// `POST /api/v1/tasks/{id}/retry?cascade=true|false`
    Retry {
        /// The task.
        id: TaskId,
        /// Also queue again the dependents its failure cancelled.
        cascade: bool,
    },
    /// `POST /api/v1/tasks/{id}/hold`
    Hold(TaskId),
    /// `POST /api/v1/tasks/{id}/release`
    Release(TaskId),
    /// `GET /api/v1/tasks/{id}/wait?timeout_s=S`
    Wait(TaskId, f64),
    /// `POST /api/v1/tasks/wait?timeout_s=S`: several tasks, ids in the body
    WaitMany(f64),
    /// `POST /api/v1/tasks/run?timeout_s=S`: submit, then wait
    Run(f64),
    /// `GET /api/v1/tasks/{id}/log?attempt=N&offset=B&limit=L&tail=T&follow=true`
    Log(LogParams),
    /// `GET /api/v1/tasks/{id}/progress?attempt=N`: the metric history
    Progress(TaskId, Option<u32>),
    /// `GET /api/v1/events?kinds=..&task=..&last_event_id=..`: Server-Sent Events
    Events {
        /// What the follower wants.
        filter: Filter,
        /// Resume after this event (the `Last-Event-ID` header wins).
        last_event_id: Option<String>,
    },
    /// `GET /api/v1/queues`
    Queues,
    /// `GET /api/v1/queues/{name}`
    Queue(String),
    /// `PATCH /api/v1/queues/{name}`: limit, pause, resume
    SetQueue(String),
    /// `GET /api/v1/monitoring`
    Monitoring,
    /// `GET /api/v1/monitoring/history?minutes=M` (1-60)
    History(u32),
    /// `GET /api/v1/workers`
    Workers,
    /// `GET /api/v1/report`
    Report,
    /// `POST /api/v1/pause[?stop_running=true]`
    Pause {
        /// Also stop the running tasks and put them back in the queue.
        stop_running: bool,
    },
    /// `POST /api/v1/resume`
    Resume,
    /// `GET /api/v1/task-types`
    TaskTypes,
    /// `GET /healthz`
    Health,
    /// `GET /` and `GET /web/...`: a file of the web dashboard
    Asset(&'static Asset),
    /// `GET /metrics`
    Metrics,
    /// `POST /submit_task` (legacy)
    LegacySubmit,
    /// `GET /task_status/<id>` (legacy; any text id is answered)
    LegacyStatus(String),
    /// `GET /monitoring_data` (legacy)
    LegacyMonitoring,
    /// `GET /get_tasks` (legacy)
    LegacyTasks,
    /// `DELETE /remove_task/<id>` (legacy)
    LegacyRemove(String),
}

impl Route {
    /// True for the routes open without a token: `/healthz`, and the
    /// dashboard's embedded files, which hold no data (the page asks the
    /// API for everything with the secret the user gives it).
    pub fn is_public(&self) -> bool {
        matches!(self, Route::Health | Route::Asset(_))
    }

    /// True for the routes the older scripts call (see [`super::auth`]).
    pub fn is_legacy(&self) -> bool {
        matches!(
            self,
            Route::LegacySubmit
                | Route::LegacyStatus(_)
                | Route::LegacyMonitoring
                | Route::LegacyTasks
                | Route::LegacyRemove(_)
        )
    }
}

/// Finds the route for a request target such as `/api/v1/tasks?limit=5`.
pub fn parse(method: Method, target: &str) -> Result<Route, ApiError> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    use Method::{Delete, Get, Patch, Post};
    if let Some(asset) = web::find(path) {
        return match method {
            Get => Ok(Route::Asset(asset)),
            _ => Err(ApiError::method_not_allowed("GET")),
        };
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let query = parse_query(query)?;
    let (route, allowed): (Option<Route>, &'static str) = match segments.as_slice() {
        ["api", "v1", "tasks"] => match method {
            Post => (Some(Route::Submit), ""),
            Get => (Some(Route::List(list_params(&query)?)), ""),
            _ => (None, "GET, POST"),
        },
        ["api", "v1", "tasks", "batch"] => one(method, Post, Route::SubmitBatch, "POST"),
        ["api", "v1", "tasks", "example"] => one(method, Post, Route::SubmitExample, "POST"),
        ["api", "v1", "tasks", "wait"] => {
            one(method, Post, Route::WaitMany(wait_timeout(&query)?), "POST")
        }
        ["api", "v1", "tasks", "run"] => {
            one(method, Post, Route::Run(wait_timeout(&query)?), "POST")
        }
        ["api", "v1", "tasks", id] => {
            let id = task_id(id)?;
            match method {
                Get => (Some(Route::Get(id)), ""),
                Delete => (Some(Route::Cancel(id)), ""),
                _ => (None, "GET, DELETE"),
            }
        }
        ["api", "v1", "tasks", id, "cancel"] => {
            one(method, Post, Route::Cancel(task_id(id)?), "POST")
        }
        ["api", "v1", "tasks", id, "retry"] => {
            let retry = Route::Retry {
                id: task_id(id)?,
                cascade: flag(&query, "cascade")?,
            };
            one(method, Post, retry, "POST")
        }
        ["api", "v1", "tasks", id, "hold"] => one(method, Post, Route::Hold(task_id(id)?), "POST"),
        ["api", "v1", "tasks", id, "release"] => {
            one(method, Post, Route::Release(task_id(id)?), "POST")
        }
        ["api", "v1", "tasks", id, "wait"] => {
            let id = task_id(id)?;
            one(method, Get, Route::Wait(id, wait_timeout(&query)?), "GET")
        }
        ["api", "v1", "tasks", id, "log"] => one(
            method,
            Get,
            Route::Log(log_params(task_id(id)?, &query)?),
            "GET",
        ),
        ["api", "v1", "tasks", id, "progress"] => {
            let attempt = attempt(&query)?;
            one(method, Get, Route::Progress(task_id(id)?, attempt), "GET")
        }
        ["api", "v1", "events"] => {
            let filter = Filter::from_query(&query).map_err(ApiError::bad_request)?;
            let last_event_id = query.get("last_event_id").cloned();
            let events = Route::Events {
                filter,
                last_event_id,
            };
            one(method, Get, events, "GET")
        }
        ["api", "v1", "queues"] => one(method, Get, Route::Queues, "GET"),
        ["api", "v1", "queues", name] => {
            let name = decode(name)?;
            match method {
                Get => (Some(Route::Queue(name)), ""),
                Patch => (Some(Route::SetQueue(name)), ""),
                _ => (None, "GET, PATCH"),
            }
        }
        ["api", "v1", "monitoring"] => one(method, Get, Route::Monitoring, "GET"),
        ["api", "v1", "monitoring", "history"] => {
            one(method, Get, Route::History(history_minutes(&query)?), "GET")
        }
        ["api", "v1", "workers"] => one(method, Get, Route::Workers, "GET"),
        ["api", "v1", "report"] => one(method, Get, Route::Report, "GET"),
        ["api", "v1", "pause"] => {
            let stop_running = stop_running(&query)?;
            one(method, Post, Route::Pause { stop_running }, "POST")
        }
        ["api", "v1", "resume"] => one(method, Post, Route::Resume, "POST"),
        ["api", "v1", "task-types"] => one(method, Get, Route::TaskTypes, "GET"),
        ["healthz"] => one(method, Get, Route::Health, "GET"),
        ["metrics"] => one(method, Get, Route::Metrics, "GET"),
        ["submit_task"] => one(method, Post, Route::LegacySubmit, "POST"),
        ["task_status", id] => one(method, Get, Route::LegacyStatus(decode(id)?), "GET"),
        ["monitoring_data"] => one(method, Get, Route::LegacyMonitoring, "GET"),
        ["get_tasks"] => one(method, Get, Route::LegacyTasks, "GET"),
        ["remove_task", id] => one(method, Delete, Route::LegacyRemove(decode(id)?), "DELETE"),
        _ => return Err(ApiError::not_found(format!("no route {path}"))),
    };
    route.ok_or_else(|| ApiError::method_not_allowed(allowed))
}

fn one(
    method: Method,
    wanted: Method,
    route: Route,
    allowed: &'static str,
) -> (Option<Route>, &'static str) {
    if method == wanted {
        (Some(route), "")
    } else {
        (None, allowed)
    }
}

fn attempt(query: &HashMap<String, String>) -> Result<Option<u32>, ApiError> {
    query
        .get("attempt")
        .map(|text| match text.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "attempt must be a positive integer, got {text:?}"
            ))),
        })
        .transpose()
}

fn log_params(id: TaskId, query: &HashMap<String, String>) -> Result<LogParams, ApiError> {
    let number = |name: &str, max: u64| -> Result<Option<u64>, ApiError> {
        query
            .get(name)
            .map(|text| match text.parse::<u64>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "{name} must be an integer from 0 to {max}, got {text:?}"
                ))),
            })
            .transpose()
    };
    let limit = match number("limit", MAX_LOG_LIMIT as u64)? {
        Some(0) => return Err(ApiError::bad_request("limit must be at least 1")),
        Some(n) => n as usize,
        None => MAX_LOG_LIMIT,
    };
    let tail = number("tail", 100_000)?.map(|n| n as usize);
    let offset = number("offset", u64::MAX >> 1)?;
    if tail.is_some() && offset.is_some() {
        return Err(ApiError::bad_request("give offset or tail, not both"));
    }
    Ok(LogParams {
        id,
        attempt: attempt(query)?,
        offset: offset.unwrap_or(0),
        limit,
        tail,
        follow: flag(query, "follow")?,
    })
}

fn task_id(text: &str) -> Result<TaskId, ApiError> {
    text.parse::<u64>().map(TaskId).map_err(|_| {
        ApiError::bad_request(format!("task id must be a positive integer, got {text:?}"))
    })
}

fn wait_timeout(query: &HashMap<String, String>) -> Result<f64, ApiError> {
    let Some(text) = query.get("timeout_s") else {
        return Ok(30.0);
    };
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=MAX_WAIT_SECS).contains(&secs) => Ok(secs),
        _ => Err(ApiError::bad_request(format!(
            "timeout_s must be a number of seconds from 0 to {MAX_WAIT_SECS}, got {text:?}"
        ))),
    }
}

/// `stop_running` of a pause: `true` or `false`, default false.
fn stop_running(query: &HashMap<String, String>) -> Result<bool, ApiError> {
    flag(query, "stop_running")
}

/// A boolean query parameter: `true` or `false`, false when absent.
fn flag(query: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match query.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(text) => Err(ApiError::bad_request(format!(
            "{name} must be true or false, got {text:?}"
        ))),
    }
}

/// The `minutes` of a history request: 1 to 60, default 60.
fn history_minutes(query: &HashMap<String, String>) -> Result<u32, ApiError> {
    let Some(text) = query.get("minutes") else {
        return Ok(60);
    };
    match text.parse::<u32>() {
        Ok(minutes) if (1..=60).contains(&minutes) => Ok(minutes),
        _ => Err(ApiError::bad_request(format!(
            "minutes must be a whole number from 1 to 60, got {text:?}"
        ))),
    }
}

fn list_params(query: &HashMap<String, String>) -> Result<ListParams, ApiError> {
    let number = |name: &str, default: usize| -> Result<usize, ApiError> {
        query.get(name).map_or(Ok(default), |text| {
            text.parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!(
                    "{name} must be a non-negative integer, got {text:?}"
                ))
            })
        })
    };
    let limit = number("limit", 100)?;
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}, got {limit}"
        )));
    }
    let status = match query.get("status") {
        None => None,
        Some(text) => Some(
            text.parse::<TaskStatus>()
                .map_err(|error| ApiError::bad_request(error.to_string()))?,
        ),
    };
    let order = match query.get("order").map(String::as_str) {
        None | Some("newest" | "desc") => Order::Newest,
        Some("oldest" | "asc") => Order::Oldest,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "order must be newest, oldest, desc or asc, got {other:?}"
            )));
        }
    };
    let sort = match query.get("sort") {
        None => TaskSort::Id,
        Some(text) => TaskSort::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "sort must be one of {}, got {text:?}",
                TaskSort::NAMES.join(", ")
            ))
        })?,
    };
    Ok(ListParams {
        status,
        task: query.get("task").cloned(),
        limit,
        offset: number("offset", 0)?,
        order,
        sort,
    })
}

/// Splits `a=1&b=two` into decoded pairs.
fn parse_query(query: &str) -> Result<HashMap<String, String>, ApiError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(key)?, decode(value)?))
        })
        .collect()
}

/// Percent-decodes one URL component (`+` means a space in queries).
fn decode(text: &str) -> Result<String, ApiError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("bad percent-encoding in {text:?}"))
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::bad_request(format!("{text:?} is not UTF-8 once decoded")))
}

#[cfg(test)]
mod tests;
