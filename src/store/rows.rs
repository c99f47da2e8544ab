//! Mapping between [`TaskRecord`] and rows of the `tasks` table: the insert
//! and update statements, the owned update value that [`super::Store::save`]
//! sends, and reading every row back at open.

use rusqlite::types::FromSql;
use rusqlite::{CachedStatement, Connection, Row, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::{AttemptFailure, Progress, TaskId, TaskLog, TaskRecord, TaskSpec, TaskStatus};

/// Inserts a whole record; parameters in [`insert`]'s order.
pub(super) const INSERT_SQL: &str = "INSERT INTO tasks (id, name, args, kwargs, priority, \
     max_retries, timeout_ms, status, attempts, failures, submitted_at_us, first_started_at_us, \
     started_at_us, finished_at_us, retry_at_us, worker, result, error, version, log, gpus, \
     gpu_memory_mb, gpu_ids, not_before_us, held, depends_on, on_dependency_failure, cancelled_by, \
     queue, progress) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
     ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)";

/// Writes the mutable fields unless the stored row is as new or newer, so
/// updates that arrive out of order never move a task backwards.
pub(super) const UPDATE_SQL: &str = "UPDATE tasks SET status = ?2, attempts = ?3, failures = ?4, \
     first_started_at_us = ?5, started_at_us = ?6, finished_at_us = ?7, retry_at_us = ?8, \
     worker = ?9, result = ?10, error = ?11, version = ?12, log = ?13, gpu_ids = ?14, held = ?15, \
     cancelled_by = ?16, progress = ?17 WHERE id = ?1 AND version < ?12";

/// Reads every row in id order; columns in [`decode`]'s order.
const SELECT_ALL_SQL: &str = "SELECT id, name, args, kwargs, priority, max_retries, timeout_ms, \
     status, attempts, failures, submitted_at_us, first_started_at_us, started_at_us, \
     finished_at_us, retry_at_us, worker, result, error, version, log, gpus, gpu_memory_mb, \
     gpu_ids, not_before_us, held, depends_on, on_dependency_failure, cancelled_by, queue, progress \
     FROM tasks ORDER BY id";

/// The fields of a [`TaskRecord`] that change after submission, copied out
/// of the caller's record so that it can be sent to the writer thread; JSON
/// encoding happens there, not on the caller's thread.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TaskUpdate {
    /// Which task.
    pub(super) id: TaskId,
    /// See [`TaskRecord::status`].
    status: TaskStatus,
    /// See [`TaskRecord::attempts`].
    attempts: u32,
    /// See [`TaskRecord::failures`].
    failures: Vec<AttemptFailure>,
    /// See [`TaskRecord::first_started_at_us`].
    first_started_at_us: Option<i64>,
    /// See [`TaskRecord::started_at_us`].
    started_at_us: Option<i64>,
    /// See [`TaskRecord::finished_at_us`].
    finished_at_us: Option<i64>,
    /// See [`TaskRecord::retry_at_us`].
    retry_at_us: Option<i64>,
    /// See [`TaskRecord::worker`].
    worker: Option<String>,
    /// See [`TaskRecord::result`].
    result: Option<Value>,
    /// See [`TaskRecord::error`].
    error: Option<String>,
    /// See [`TaskRecord::log`].
    log: Option<Box<TaskLog>>,
    /// See [`TaskRecord::gpu_ids`].
    gpu_ids: Vec<u32>,
    /// See [`TaskRecord::held`].
    held: bool,
    /// See [`TaskRecord::cancelled_by`].
    cancelled_by: Option<TaskId>,
    /// See [`TaskRecord::progress`] (boxed: most tasks report none, and
    /// updates travel by value).
    progress: Option<Box<Progress>>,
    /// See [`TaskRecord::version`]; the highest one wins.
    pub(super) version: u64,
}

impl TaskUpdate {
    /// Copies the mutable fields of `record`.
    pub(super) fn from_record(record: &TaskRecord) -> Self {
        // Destructured so that a new record field must be sorted into
        // "mutable" or "fixed at submission" here.
        let TaskRecord {
            id,
            spec: _,
            status,
            attempts,
            failures,
            submitted_at_us: _,
            first_started_at_us,
            started_at_us,
            finished_at_us,
            retry_at_us,
            worker,
            result,
            error,
            log,
            gpu_ids,
            held,
            cancelled_by,
            progress,
            version,
        } = record;
        Self {
            id: *id,
            status: *status,
            attempts: *attempts,
            failures: failures.clone(),
            first_started_at_us: *first_started_at_us,
            started_at_us: *started_at_us,
            finished_at_us: *finished_at_us,
            retry_at_us: *retry_at_us,
            worker: worker.clone(),
            result: result.clone(),
            error: error.clone(),
            log: log.clone().map(Box::new),
            gpu_ids: gpu_ids.clone(),
            held: *held,
            cancelled_by: *cancelled_by,
            progress: progress.clone().map(Box::new),
            version: *version,
        }
    }
}

/// Converts an unsigned id or count to SQLite's signed integer.
fn to_i64(value: u64) -> rusqlite::Result<i64> {
    i64::try_from(value).map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))
}

/// Encodes a value as JSON text for a JSON column.
fn to_json<T: Serialize + ?Sized>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value)
        .map_err(|error| rusqlite::Error::ToSqlConversionFailure(error.into()))
}

/// Inserts one record with a statement prepared from [`INSERT_SQL`].
pub(super) fn insert(stmt: &mut CachedStatement<'_>, record: &TaskRecord) -> rusqlite::Result<()> {
    let TaskRecord {
        id,
        spec,
        status,
        attempts,
        failures,
        submitted_at_us,
        first_started_at_us,
        started_at_us,
        finished_at_us,
        retry_at_us,
        worker,
        result,
        error,
        log,
        gpu_ids,
        held,
        cancelled_by,
        progress,
        version,
    } = record;
    let TaskSpec {
        name,
        args,
        kwargs,
        priority,
        max_retries,
        timeout_ms,
        gpus,
        gpu_memory_mb,
        not_before_us,
        depends_on,
        on_dependency_failure,
        queue,
    } = spec;
    stmt.execute(params![
        to_i64(id.0)?,
        name,
        to_json(args)?,
        to_json(kwargs)?,
        priority,
        max_retries,
        timeout_ms.map(to_i64).transpose()?,
        status.as_str(),
        attempts,
        to_json(failures)?,
        submitted_at_us,
        first_started_at_us,
        started_at_us,
        finished_at_us,
        retry_at_us,
        worker,
        result.as_ref().map(to_json).transpose()?,
        error,
        to_i64(*version)?,
        log.as_ref().map(to_json).transpose()?,
        gpus,
        gpu_memory_mb.map(to_i64).transpose()?,
        to_json(gpu_ids)?,
        not_before_us,
        held,
        to_json(depends_on)?,
        on_dependency_failure.as_str(),
        cancelled_by.map(|id| to_i64(id.0)).transpose()?,
        queue,
        progress.as_ref().map(to_json).transpose()?,
    ])?;
    Ok(())
}

/// Applies one update with a statement prepared from [`UPDATE_SQL`]; returns
/// whether a row changed (none when the row is missing or already newer).
pub(super) fn update(
    stmt: &mut CachedStatement<'_>,
    update: &TaskUpdate,
) -> rusqlite::Result<bool> {
    let TaskUpdate {
        id,
        status,
        attempts,
        failures,
        first_started_at_us,
        started_at_us,
        finished_at_us,
        retry_at_us,
        worker,
        result,
        error,
        log,
        gpu_ids,
        held,
        cancelled_by,
        progress,
        version,
    } = update;
    let changed = stmt.execute(params![
        to_i64(id.0)?,
        status.as_str(),
        attempts,
        to_json(failures)?,
        first_started_at_us,
        started_at_us,
        finished_at_us,
        retry_at_us,
        worker,
        result.as_ref().map(to_json).transpose()?,
        error,
        to_i64(*version)?,
        log.as_ref().map(to_json).transpose()?,
        to_json(gpu_ids)?,
        held,
        cancelled_by.map(|id| to_i64(id.0)).transpose()?,
        progress.as_ref().map(to_json).transpose()?,
    ])?;
    Ok(changed > 0)
}

/// Every row read at open.
pub(super) struct Loaded {
    /// The decodable rows, by id.
    pub(super) records: Vec<TaskRecord>,
    /// One more than the highest id stored, counting rows that could not be
    /// decoded, so a new task never collides with a stored one.
    pub(super) next_id: u64,
}

/// Reads every row; a row that cannot be decoded is skipped with a warning
/// naming its id, so that one damaged row does not keep the scheduler down.
pub(super) fn load(conn: &Connection) -> rusqlite::Result<Loaded> {
    let mut stmt = conn.prepare(SELECT_ALL_SQL)?;
    let mut rows = stmt.query([])?;
    let mut records = Vec::new();
    let mut max_id = 0_u64;
    while let Some(row) = rows.next()? {
        let raw_id: i64 = row.get(0)?;
        if let Ok(id) = u64::try_from(raw_id) {
            max_id = max_id.max(id);
        }
        match decode(row) {
            Ok(record) => records.push(record),
            Err(error) => {
                tracing::warn!(id = raw_id, %error, "skipping a stored task that cannot be decoded");
            }
        }
    }
    Ok(Loaded {
        records,
        next_id: max_id.saturating_add(1),
    })
}

/// Why a stored row is not a valid record.
#[derive(Debug, thiserror::Error)]
#[error("column {column}: {detail}")]
struct DecodeError {
    /// The column that failed.
    column: &'static str,
    /// What was wrong with it.
    detail: String,
}

/// Reads a plain column.
fn column<T: FromSql>(row: &Row<'_>, index: usize, column: &'static str) -> Result<T, DecodeError> {
    row.get(index).map_err(|error| DecodeError {
        column,
        detail: error.to_string(),
    })
}

/// Reads a JSON text column; NULL reads as `None`.
fn json_column<T: DeserializeOwned>(
    row: &Row<'_>,
    index: usize,
    column: &'static str,
) -> Result<Option<T>, DecodeError> {
    let fail = |detail: String| DecodeError { column, detail };
    let value = row
        .get_ref(index)
        .map_err(|error| fail(error.to_string()))?;
    let Some(text) = value
        .as_str_or_null()
        .map_err(|error| fail(error.to_string()))?
    else {
        return Ok(None);
    };
    serde_json::from_str(text)
        .map(Some)
        .map_err(|error| fail(error.to_string()))
}

/// Reads a JSON text column that must not be NULL.
fn required_json<T: DeserializeOwned>(
    row: &Row<'_>,
    index: usize,
    column: &'static str,
) -> Result<T, DecodeError> {
    json_column(row, index, column)?.ok_or_else(|| DecodeError {
        column,
        detail: "NULL".to_owned(),
    })
}

/// Reads a signed column that holds an unsigned value.
fn unsigned(value: i64, column: &'static str) -> Result<u64, DecodeError> {
    u64::try_from(value).map_err(|_| DecodeError {
        column,
        detail: format!("negative value {value}"),
    })
}

/// Builds a record from a row of [`SELECT_ALL_SQL`].
fn decode(row: &Row<'_>) -> Result<TaskRecord, DecodeError> {
    let status_text: String = column(row, 7, "status")?;
    let status = status_text
        .parse::<TaskStatus>()
        .map_err(|error| DecodeError {
            column: "status",
            detail: error.to_string(),
        })?;
    let timeout_ms: Option<i64> = column(row, 6, "timeout_ms")?;
    let gpu_memory_mb: Option<i64> = column(row, 21, "gpu_memory_mb")?;
    let policy: String = column(row, 26, "on_dependency_failure")?;
    let on_dependency_failure = policy.parse().map_err(|detail| DecodeError {
        column: "on_dependency_failure",
        detail,
    })?;
    let cancelled_by: Option<i64> = column(row, 27, "cancelled_by")?;
    Ok(TaskRecord {
        id: TaskId(unsigned(column(row, 0, "id")?, "id")?),
        spec: TaskSpec {
            name: column(row, 1, "name")?,
            args: required_json(row, 2, "args")?,
            kwargs: required_json(row, 3, "kwargs")?,
            priority: column(row, 4, "priority")?,
            max_retries: column(row, 5, "max_retries")?,
            timeout_ms: timeout_ms
                .map(|ms| unsigned(ms, "timeout_ms"))
                .transpose()?,
            gpus: column(row, 20, "gpus")?,
            gpu_memory_mb: gpu_memory_mb
                .map(|mb| unsigned(mb, "gpu_memory_mb"))
                .transpose()?,
            not_before_us: column(row, 23, "not_before_us")?,
            depends_on: required_json(row, 25, "depends_on")?,
            on_dependency_failure,
            queue: column(row, 28, "queue")?,
        },
        status,
        attempts: column(row, 8, "attempts")?,
        failures: required_json(row, 9, "failures")?,
        submitted_at_us: column(row, 10, "submitted_at_us")?,
        first_started_at_us: column(row, 11, "first_started_at_us")?,
        started_at_us: column(row, 12, "started_at_us")?,
        finished_at_us: column(row, 13, "finished_at_us")?,
        retry_at_us: column(row, 14, "retry_at_us")?,
        worker: column(row, 15, "worker")?,
        result: json_column(row, 16, "result")?,
        error: column(row, 17, "error")?,
        version: unsigned(column(row, 18, "version")?, "version")?,
        log: json_column(row, 19, "log")?,
        gpu_ids: required_json(row, 22, "gpu_ids")?,
        held: column(row, 24, "held")?,
        cancelled_by: cancelled_by
            .map(|id| unsigned(id, "cancelled_by").map(TaskId))
            .transpose()?,
        progress: json_column(row, 29, "progress")?,
    })
}
