//! Opening the database file: the lock file, the check that a file is ours,
//! connection settings and schema migrations.
//!
//! Nothing here writes to a file until it has been shown to be a Taskdeck
//! database or an empty one, so a wrong `--db` path never damages someone
//! else's data.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use super::{Durability, StoreError};

/// The SQLite `application_id` of a Taskdeck database ("TDK1" in ASCII).
///
/// It marks a file as ours, so that opening another program's database is
/// refused instead of being written to.
pub const APPLICATION_ID: i32 = 0x5444_4B31;

/// The schema version this build writes, kept in SQLite's `user_version`.
pub const SCHEMA_VERSION: i64 = 9;

/// How long a statement waits for a lock held by another connection (a
/// reader such as the `sqlite3` shell) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations; entry `n` takes a database from version `n` to `n + 1`.
const MIGRATIONS: [&str; 9] = [
    // Version 1: one row per task, one column per record field. JSON columns
    // hold the spec's arguments, the failure list and the result. There are
    // no secondary indexes: recovery reads every row in id order (the rowid),
    // updates go by id, and the rare retention purge may scan the table.
    "CREATE TABLE tasks (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        args TEXT NOT NULL,
        kwargs TEXT NOT NULL,
        priority INTEGER NOT NULL,
        max_retries INTEGER NOT NULL,
        timeout_ms INTEGER,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        failures TEXT NOT NULL,
        submitted_at_us INTEGER NOT NULL,
        first_started_at_us INTEGER,
        started_at_us INTEGER,
        finished_at_us INTEGER,
        retry_at_us INTEGER,
        worker TEXT,
        result TEXT,
        error TEXT,
        version INTEGER NOT NULL
    ) STRICT;",
    // Version 2: the last hour of resource samples, so the window's plots
    // survive a restart. One JSON document per sample, keyed by its time;
    // the purge deletes by a range of that key.
    "CREATE TABLE resource_samples (
        at_us INTEGER PRIMARY KEY,
        sample TEXT NOT NULL
    ) STRICT;",
    // Version 3: the output log of tasks that run a process (path, size and
    // last lines, as JSON); NULL for the others.
    "ALTER TABLE tasks ADD COLUMN log TEXT;",
    // Version 4: GPUs a task asks for (count and memory per device) and the
    // device ids its latest attempt got.
    "ALTER TABLE tasks ADD COLUMN gpus INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE tasks ADD COLUMN gpu_memory_mb INTEGER;
     ALTER TABLE tasks ADD COLUMN gpu_ids TEXT NOT NULL DEFAULT '[]';",
    // Version 5: the time before which a task may not start (delayed start).
    "ALTER TABLE tasks ADD COLUMN not_before_us INTEGER;",
    // Version 6: a task held by a user (0 or 1).
    "ALTER TABLE tasks ADD COLUMN held INTEGER NOT NULL DEFAULT 0;",
    // Version 7: scheduler settings that survive restarts (paused or not).
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;",
    // Version 8: dependencies (a JSON array of task ids), what a task does
    // when one fails ('cancel' or 'run'), the dependency that cancelled it,
    // and the queue it belongs to (NULL: the default queue).
    "ALTER TABLE tasks ADD COLUMN depends_on TEXT NOT NULL DEFAULT '[]';
     ALTER TABLE tasks ADD COLUMN on_dependency_failure TEXT NOT NULL DEFAULT 'cancel';
     ALTER TABLE tasks ADD COLUMN cancelled_by INTEGER;
     ALTER TABLE tasks ADD COLUMN queue TEXT;",
    // Version 9: the latest progress a task reported (JSON; NULL: none).
    "ALTER TABLE tasks ADD COLUMN progress TEXT;",
];

/// The lock file that marks a database as in use: `<db file name>.lock`
/// beside the database.
pub(super) fn lock_path(path: &Path) -> Result<PathBuf, StoreError> {
    let Some(file_name) = path.file_name() else {
        return Err(StoreError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the database path does not name a file",
            ),
        });
    };
    let mut lock_name = file_name.to_owned();
    lock_name.push(".lock");
    Ok(path.with_file_name(lock_name))
}

/// Takes the exclusive lock on the database's lock file.
///
/// The lock lasts as long as the returned file stays open; the operating
/// system drops it when the process ends, however it ends, so a crash never
/// leaves a stale lock behind.
pub(super) fn lock(path: &Path) -> Result<File, StoreError> {
    let lock_path = lock_path(path)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| StoreError::Io {
            path: lock_path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: path.to_owned(),
        }),
        Err(TryLockError::Error(source)) => Err(StoreError::Io {
            path: lock_path,
            source,
        }),
    }
}

/// What the file turned out to hold.
enum Found {
    /// An empty database: no application id and no schema objects.
    Empty,
    /// A Taskdeck database with this schema version.
    Ours { version: i64 },
}

/// Opens the database, checks that it is ours (or empty), applies the
/// connection settings and brings the schema up to [`SCHEMA_VERSION`].
///
/// Settings:
/// - `journal_mode=WAL`, so readers (the `sqlite3` shell, tests) never block
///   the writer;
/// - `synchronous` as [`Durability`] asks: `NORMAL` (a commit is in the
///   operating system when it returns and survives the process dying) or
///   `FULL` (it is on disk and survives a power loss too);
/// - a busy timeout of [`BUSY_TIMEOUT`].
pub(super) fn open(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let open_error = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    let mut conn = Connection::open(path).map_err(open_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    let found = inspect(&conn, path)?;
    let version = match found {
        Found::Empty => 0,
        Found::Ours { version } if version > SCHEMA_VERSION => {
            return Err(StoreError::NewerSchema {
                path: path.to_owned(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Found::Ours { version } => version,
    };
    let journal_mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(open_error)?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        // Some file systems (network mounts) refuse WAL; the rollback journal
        // SQLite keeps instead is as durable, only readers block the writer.
        tracing::warn!(path = %path.display(), journal_mode, "SQLite refused WAL mode");
    }
    conn.pragma_update(None, "synchronous", durability.synchronous())
        .map_err(open_error)?;
    migrate(&mut conn, version, path)?;
    Ok(conn)
}

/// Reads the header fields that tell whose file this is, without writing.
fn inspect(conn: &Connection, path: &Path) -> Result<Found, StoreError> {
    let not_ours = |detail: String| StoreError::NotTaskdeck {
        path: path.to_owned(),
        detail,
    };
    let read_error = |source: rusqlite::Error| {
        if source.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
            not_ours(format!("not an SQLite database: {source}"))
        } else {
            StoreError::Open {
                path: path.to_owned(),
                source,
            }
        }
    };
    let application_id: i64 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(read_error)?;
    if application_id == i64::from(APPLICATION_ID) {
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(read_error)?;
        if version < 0 {
            return Err(not_ours(format!("negative schema version {version}")));
        }
        return Ok(Found::Ours { version });
    }
    if application_id != 0 {
        return Err(not_ours(format!(
            "an SQLite database of another application (application_id {application_id:#x})"
        )));
    }
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
        .map_err(read_error)?;
    if objects > 0 {
        return Err(not_ours(format!(
            "an SQLite database without Taskdeck's application_id and with {objects} schema objects"
        )));
    }
    Ok(Found::Empty)
}

/// Runs the migrations after `from` and stamps the file as ours, all in one
/// transaction, so a crash part-way leaves the file as it was.
fn migrate(conn: &mut Connection, from: i64, path: &Path) -> Result<(), StoreError> {
    if from == SCHEMA_VERSION {
        return Ok(());
    }
    let open_error = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    let skip = usize::try_from(from).unwrap_or(usize::MAX);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_error)?;
    for sql in MIGRATIONS.iter().skip(skip) {
        tx.execute_batch(sql).map_err(open_error)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(open_error)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(open_error)?;
    tx.commit().map_err(open_error)?;
    tracing::info!(path = %path.display(), from, to = SCHEMA_VERSION, "database schema created or migrated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_reach_the_schema_version() {
        assert_eq!(i64::try_from(MIGRATIONS.len()).ok(), Some(SCHEMA_VERSION));
    }

    #[test]
    fn lock_file_sits_beside_the_database() {
        let lock = lock_path(Path::new("/data/x/tasks.db")).expect("a file path has a lock path");
        assert_eq!(lock, Path::new("/data/x/tasks.db.lock"));
    }
}
