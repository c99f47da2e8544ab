//! SQLite persistence: schema, group commit and recovery.
//!
//! One writer thread, named `taskdeck-store`, owns the connection. Submits
//! ([`Store::insert`]) wait for their rows to be committed; status changes
//! ([`Store::save`]) are written asynchronously, and the newest version of a
//! task always wins, whatever order the writes arrive in. Concurrent callers
//! share commits (group commit, see the `writer` submodule). Resource samples
//! ([`Store::save_sample`]) are written the same way and kept for
//! [`SAMPLE_RETENTION`], so the window's plots survive a restart.
//!
//! Durability ([`Durability`]): the database runs in WAL mode. A task whose
//! [`Store::insert`] returned `Ok` survives the process crashing or being
//! killed; with [`Durability::Power`] (`synchronous=FULL`, an fsync per
//! commit) it also survives an operating-system crash or a power loss (on a
//! disk that honours fsync). A crash can lose only the latest saves not yet
//! committed; the task then recovers with an older status, which the
//! scheduler handles.
//!
//! A full disk: inserts fail with [`StoreError::Full`] and change nothing;
//! saves that cannot be written are kept (one per task, the newest) and
//! written once there is room, and while any wait, inserts are refused
//! without trying, so the state already accepted is written first.
//! [`Store::status`] tells readers.
//!
//! Safety of other data: [`Store::open`] takes an exclusive lock on
//! `<db file name>.lock` for the store's life and refuses any file that is
//! neither empty nor marked with [`APPLICATION_ID`].
//!
//! Layout: `schema` opens and migrates, `rows` maps records to rows,
//! `samples` maps resource samples to rows, `writer` runs the writer thread,
//! `retention` purges old history.
//! Depends only on [`crate::model`].

mod retention;
mod rows;
mod samples;
mod schema;
mod settings;
mod status;
mod writer;

#[cfg(test)]
mod sample_tests;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TryRecvError};
use parking_lot::{Mutex, RwLock};

pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use status::StorageStatus;

use crate::model::{ResourceSample, TaskRecord, now_us};
use rows::TaskUpdate;
use writer::{Op, Writer};

/// How long [`Store::insert`] watches for its commit before it parks.
const INSERT_SPIN: Duration = Duration::from_micros(200);

/// Largest insert whose caller watches for the commit.
const SPIN_MAX_RECORDS: usize = 8;

/// How long resource samples are kept: the window plots at most an hour.
pub const SAMPLE_RETENTION: Duration = Duration::from_secs(60 * 60);

/// How much finished-task history to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished tasks kept, newest first; older ones are deleted.
    pub max_finished: usize,
    /// Finished tasks older than this are deleted; none keeps them by count alone.
    pub max_age: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_finished: 100_000,
            max_age: Some(Duration::from_secs(30 * 24 * 3600)),
        }
    }
}

/// What a commit has survived when [`Store::insert`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// The commit is in the operating system's hands: it survives Taskdeck
    /// crashing or being killed (`kill -9`, the OOM killer), but an
    /// operating-system crash or a power loss can lose the latest commits
    /// (the database stays consistent). SQLite's `synchronous=NORMAL` in WAL
    /// mode: no fsync per commit.
    #[default]
    Process,
    /// The commit is on disk: it also survives an operating-system crash or
    /// a power loss, on a disk that honours fsync. `synchronous=FULL`: one
    /// fsync per commit (group commit shares it between concurrent callers).
    Power,
}

impl Durability {
    /// SQLite's `synchronous` setting for it.
    fn synchronous(self) -> &'static str {
        match self {
            Self::Process => "NORMAL",
            Self::Power => "FULL",
        }
    }

    /// The name used on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Power => "power",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "process" => Ok(Self::Process),
            "power" => Ok(Self::Power),
            other => Err(format!(
                "durability is \"process\" (survives Taskdeck being killed) or \"power\" (also a power loss), not {other:?}"
            )),
        }
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The file is not a Taskdeck database.
    #[error("{path} is not a Taskdeck database ({detail}); choose another path with --db")]
    NotTaskdeck {
        /// The file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// Another process holds the database.
    #[error("database {path} is in use by another Taskdeck process")]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a newer Taskdeck.
    #[error("database {path} has schema version {found}; this Taskdeck supports up to {supported}")]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Version found.
        found: i64,
        /// Newest version known here.
        supported: i64,
    },
    /// A statement failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A write transaction failed and was rolled back: nothing of it is
    /// stored. Shared because every caller in the failed batch gets it.
    #[error("writing to the database failed: {0}")]
    Write(Arc<rusqlite::Error>),
    /// The disk holding the database is full (or the database reached its
    /// size limit): nothing of the write is stored. Writes resume by
    /// themselves once there is room.
    #[error("the disk holding {path} is full; free some space and Taskdeck resumes by itself")]
    Full {
        /// The database file.
        path: PathBuf,
    },
    /// Earlier task changes could not be written (for another reason than a
    /// full disk) and wait; new tasks are refused until they are written.
    #[error(
        "the task database cannot be written ({0}); new tasks are refused until earlier changes are written"
    )]
    Unwritable(String),
    /// Writing a lock file or directory failed.
    #[error("cannot use {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The writer thread has stopped.
    #[error("the store is closed")]
    Closed,
}

/// What the store held when it was opened.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The id to give the next task.
    pub next_id: u64,
    /// Every unfinished task and the retained finished ones, by id.
    pub tasks: Vec<TaskRecord>,
    /// The resource samples of the last [`SAMPLE_RETENTION`], oldest first.
    pub samples: Vec<ResourceSample>,
    /// The stored settings, by key (see [`Store::set_setting`]).
    pub settings: std::collections::BTreeMap<String, String>,
}

/// Handle to the store's writer thread.
///
/// It is `Send + Sync`: share it behind an `Arc` and call [`Store::insert`]
/// and [`Store::save`] from any thread. Dropping it commits what is queued
/// and joins the writer, like [`Store::close`] without the result.
#[derive(Debug)]
pub struct Store {
    /// The database file.
    path: PathBuf,
    /// The writer's channel; taken on shutdown, which lets the writer drain
    /// it and stop. Senders hold the read lock only to send.
    ops: RwLock<Option<Sender<Op>>>,
    /// The writer thread; taken on shutdown.
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Set once a save found the writer gone, so that is logged only once.
    closed_logged: AtomicBool,
    /// The exclusive lock on the lock file; released after the writer joined.
    lock: Mutex<Option<File>>,
    /// Whether writes succeed, kept by the writer.
    status: Arc<status::Shared>,
}

impl Store {
    /// Opens or creates the database at `path` (and its parent directories),
    /// purges finished tasks beyond `retention` and samples older than
    /// [`SAMPLE_RETENTION`], and returns what is stored.
    ///
    /// Fails with [`StoreError::Locked`] when another store holds the file,
    /// [`StoreError::NotTaskdeck`] when it holds something else, and
    /// [`StoreError::NewerSchema`] when a newer Taskdeck wrote it.
    pub fn open(
        path: &Path,
        retention: Retention,
        durability: Durability,
    ) -> Result<(Self, Recovered), StoreError> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                path: parent.to_owned(),
                source,
            })?;
        }
        let lock = schema::lock(path)?;
        let mut conn = schema::open(path, durability)?;
        let open_error = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let now = now_us();
        let purged = retention::purge(&mut conn, &retention, now).map_err(open_error)?;
        let sample_cutoff_us = samples::cutoff_us(SAMPLE_RETENTION, now);
        let purged_samples = samples::purge(&conn, sample_cutoff_us).map_err(open_error)?;
        let rows::Loaded {
            mut records,
            next_id,
        } = rows::load(&conn).map_err(open_error)?;
        retention::retain(&mut records, &retention, now);
        let recent_samples = samples::load(&conn, sample_cutoff_us).map_err(open_error)?;
        let stored_settings = settings::load(&conn).map_err(open_error)?;
        tracing::info!(
            path = %path.display(),
            tasks = records.len(),
            next_id,
            purged,
            samples = recent_samples.len(),
            purged_samples,
            durability = durability.name(),
            "opened the task database"
        );
        let (ops, receiver) = crossbeam_channel::unbounded();
        let status = Arc::new(status::Shared::default());
        let writer = Writer::new(conn, receiver, retention, path, Arc::clone(&status));
        let handle = std::thread::Builder::new()
            .name("taskdeck-store".to_owned())
            .spawn(move || writer.run())
            .map_err(|source| StoreError::Io {
                path: path.to_owned(),
                source,
            })?;
        let store = Self {
            path: path.to_owned(),
            ops: RwLock::new(Some(ops)),
            writer: Mutex::new(Some(handle)),
            closed_logged: AtomicBool::new(false),
            lock: Mutex::new(Some(lock)),
            status,
        };
        let recovered = Recovered {
            next_id,
            tasks: records,
            samples: recent_samples,
            settings: stored_settings,
        };
        Ok((store, recovered))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes new tasks, returning once they are committed.
    ///
    /// All of `records` go into one transaction, possibly shared with other
    /// callers; on `Err` none of them is stored. An empty list returns at once.
    /// While saves wait for room on a full disk it fails at once with
    /// [`StoreError::Full`], so what was accepted before is written first.
    pub fn insert(&self, records: Vec<TaskRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        if self.status.has_backlog() {
            let status = self.status.snapshot();
            return Err(if status.full {
                StoreError::Full {
                    path: self.path.clone(),
                }
            } else {
                StoreError::Unwritable(status.error.unwrap_or_default())
            });
        }
        let spin = records.len() <= SPIN_MAX_RECORDS;
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.send(Op::Insert { records, reply })?;
        // A small commit takes tens of microseconds; watching for it
        // (yielding the core) spares the caller the wake-up of a parked
        // thread. A large one takes longer than the watch would last.
        let deadline = Instant::now() + INSERT_SPIN;
        while spin && Instant::now() < deadline {
            match answer.try_recv() {
                Ok(result) => return result,
                Err(TryRecvError::Empty) => std::thread::yield_now(),
                Err(TryRecvError::Disconnected) => return Err(StoreError::Closed),
            }
        }
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    /// Stores a setting under `key`; returns once it is committed.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.send(Op::Setting {
            key: key.to_owned(),
            value: value.to_owned(),
            reply,
        })?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    /// Queues a write of a task's changed fields; a newer version wins.
    ///
    /// Only the fields that change after submission are copied; the task
    /// must have been inserted before (an update of a missing row is
    /// dropped). A write that fails is kept and tried again (see
    /// [`Store::status`]); errors are logged by the writer, not returned.
    pub fn save(&self, record: &TaskRecord) {
        let update = TaskUpdate::from_record(record);
        if self.send(Op::Update(update)).is_err()
            && !self.closed_logged.swap(true, Ordering::Relaxed)
        {
            tracing::error!(id = %record.id, "the store's writer has stopped; task updates are lost");
        }
    }

    /// Queues a resource sample, written with the next group commit and kept
    /// for [`SAMPLE_RETENTION`].
    ///
    /// Fire-and-forget like [`Store::save`]: the sample is copied here and
    /// encoded on the writer thread; write errors are logged, not returned.
    pub fn save_sample(&self, sample: &ResourceSample) {
        if self.send(Op::Sample(sample.clone())).is_err()
            && !self.closed_logged.swap(true, Ordering::Relaxed)
        {
            tracing::error!("the store's writer has stopped; resource samples are lost");
        }
    }

    /// Whether writes succeed now, and what waits to be written.
    pub fn status(&self) -> StorageStatus {
        self.status.snapshot()
    }

    /// Returns once everything queued before it is committed; `Err` when
    /// saves queued with it could not be written (failed inserts are
    /// reported to their own callers instead).
    pub fn flush(&self) -> Result<(), StoreError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.send(Op::Flush(reply))?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    /// Commits what is queued, stops the writer and releases the database
    /// for another process. Later inserts fail with [`StoreError::Closed`];
    /// closing again does nothing.
    pub fn close(&self) -> Result<(), StoreError> {
        let flushed = match self.flush() {
            Err(StoreError::Closed) => Ok(()),
            other => other,
        };
        self.shutdown();
        flushed
    }

    /// Sends an operation to the writer.
    fn send(&self, op: Op) -> Result<(), StoreError> {
        let ops = self.ops.read();
        let ops = ops.as_ref().ok_or(StoreError::Closed)?;
        ops.send(op).map_err(|_| StoreError::Closed)
    }

    /// Closes the channel and joins the writer, which first commits
    /// everything still queued, then releases the lock file.
    fn shutdown(&self) {
        drop(self.ops.write().take());
        let writer = self.writer.lock().take();
        if let Some(writer) = writer
            && writer.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "the store's writer thread panicked");
        }
        drop(self.lock.lock().take());
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}
