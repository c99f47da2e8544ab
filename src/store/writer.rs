//! The writer thread: it owns the connection and turns the operations that
//! arrive over its channel into group commits.
//!
//! Each round blocks for one operation, drains up to [`MAX_BATCH_OPS`] more
//! that are already waiting, writes them all in one transaction and only
//! then answers the waiters, so concurrent submitters share one commit (and
//! one fsync). Within a batch inserts go first, in arrival order; updates
//! follow, coalesced per task to the highest version; resource samples come
//! last. Updates and samples are one unit: nobody waits for either.
//!
//! Updates and samples that cannot be written (a full disk, an I/O error)
//! are kept in a backlog, one update per task (the newest) and at most
//! [`MAX_PENDING_SAMPLES`] samples, and written with the next round; while
//! the backlog is not empty the writer wakes every [`RETRY_EVERY`] to try
//! again, so it recovers by itself once there is room. The backlog's memory
//! is bounded by the tasks the scheduler holds anyway.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use super::rows::{self, INSERT_SQL, TaskUpdate, UPDATE_SQL};
use super::status::Shared;
use super::{Retention, SAMPLE_RETENTION, SCHEMA_VERSION, StoreError, retention, samples};
use crate::model::{ResourceSample, TaskId, TaskRecord, now_us};

/// Most resource samples kept while they cannot be written: an hour's worth.
const MAX_PENDING_SAMPLES: usize = 3_600;

/// How often the writer tries again while writes fail.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// Most operations drained into one batch after the one that woke the writer.
const MAX_BATCH_OPS: usize = 8192;

/// Shortest time between two retention purges.
const PURGE_INTERVAL: Duration = Duration::from_secs(30);

/// Where the writer answers a waiting caller.
pub(super) type Reply = Sender<Result<(), StoreError>>;

/// One request to the writer.
#[derive(Debug)]
pub(super) enum Op {
    /// New tasks; the reply comes once they are committed.
    Insert {
        /// The rows to insert, all in one transaction.
        records: Vec<TaskRecord>,
        /// Where to say whether they were committed.
        reply: Reply,
    },
    /// Changed fields of a stored task; nobody waits for it.
    Update(TaskUpdate),
    /// A resource sample to keep for an hour; nobody waits for it.
    Sample(ResourceSample),
    /// A request to answer once everything sent before it is committed.
    Flush(Reply),
    /// A setting to store; the reply comes once it is committed.
    Setting {
        /// Its key.
        key: String,
        /// Its new value.
        value: String,
        /// Where to say whether it was committed.
        reply: Reply,
    },
}

/// The state of the writer thread.
pub(super) struct Writer {
    /// The connection, used by this thread alone.
    conn: Connection,
    /// Where operations arrive; the writer stops once every sender is gone
    /// and the channel is drained.
    ops: Receiver<Op>,
    /// How much finished history to keep.
    retention: Retention,
    /// When the last purge ran.
    last_purge: Instant,
    /// The database file, for errors.
    path: PathBuf,
    /// What readers see of the writes.
    status: Arc<Shared>,
    /// Updates and samples that could not be written yet.
    backlog: Backlog,
    /// Whether the last write failed.
    failing: bool,
}

/// Writes that failed and wait for the next round.
#[derive(Default)]
struct Backlog {
    /// The newest unwritten update of each task.
    updates: HashMap<TaskId, TaskUpdate>,
    /// Unwritten samples, oldest first, at most [`MAX_PENDING_SAMPLES`].
    samples: VecDeque<ResourceSample>,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.samples.is_empty()
    }
}

impl Writer {
    /// A writer for a connection on which the open-time purge just ran.
    pub(super) fn new(
        conn: Connection,
        ops: Receiver<Op>,
        retention: Retention,
        path: &Path,
        status: Arc<Shared>,
    ) -> Self {
        Self {
            conn,
            ops,
            retention,
            last_purge: Instant::now(),
            path: path.to_owned(),
            status,
            backlog: Backlog::default(),
            failing: false,
        }
    }

    /// Runs until the channel is closed and drained, then closes the
    /// connection (which checkpoints the WAL into the database file).
    pub(super) fn run(mut self) {
        loop {
            let first = if self.failing {
                match self.ops.recv_timeout(RETRY_EVERY) {
                    Ok(op) => Some(op),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match self.ops.recv() {
                    Ok(op) => Some(op),
                    Err(_) => break,
                }
            };
            let mut batch = Batch::take_backlog(&mut self.backlog);
            batch.extend(first);
            for _ in 0..MAX_BATCH_OPS {
                let Ok(op) = self.ops.try_recv() else {
                    break;
                };
                batch.push(op);
            }
            self.commit(batch);
            if !self.failing && self.last_purge.elapsed() >= PURGE_INTERVAL {
                self.last_purge = Instant::now();
                self.purge();
            }
        }
        if !self.backlog.is_empty() {
            // One last try at what waited; the channel is closed and drained.
            let batch = Batch::take_backlog(&mut self.backlog);
            self.commit(batch);
            if !self.backlog.is_empty() {
                tracing::error!(
                    path = %self.path.display(),
                    updates = self.backlog.updates.len(),
                    samples = self.backlog.samples.len(),
                    "stopping with task updates that could not be written; those tasks restart from their last written state"
                );
            }
        }
        if let Err((_, error)) = self.conn.close() {
            tracing::error!(%error, "closing the task database failed");
        }
    }

    /// Writes one round, keeps what failed in the backlog, and publishes
    /// whether writes succeed. With nothing to write while writes fail, it
    /// probes whether there is room again.
    fn commit(&mut self, batch: Batch) {
        let outcome = if batch.is_empty() {
            if !self.failing {
                return;
            }
            probe(&mut self.conn).map_err(Arc::new)
        } else {
            let Committed {
                unwritten,
                insert_error,
            } = batch.commit(&mut self.conn, &self.path);
            if let Some(Unwritten {
                updates,
                samples,
                error,
            }) = unwritten
            {
                // The round began by taking the whole backlog, so what
                // failed is the backlog now; the newest samples stay.
                self.backlog.updates = updates.into_iter().map(|u| (u.id, u)).collect();
                self.backlog.samples = samples.into();
                let excess = self
                    .backlog
                    .samples
                    .len()
                    .saturating_sub(MAX_PENDING_SAMPLES);
                self.backlog.samples.drain(..excess);
                Err(error)
            } else if let Some(error) = insert_error {
                Err(error)
            } else {
                Ok(())
            }
        };
        self.status
            .set_backlog(self.backlog.updates.len(), self.backlog.samples.len());
        match outcome {
            Ok(()) => {
                self.failing = false;
                if self.status.succeeded() {
                    tracing::info!(
                        path = %self.path.display(),
                        "the task database is writable again; the changes kept meanwhile are written"
                    );
                }
            }
            Err(error) => {
                self.failing = true;
                let full = is_disk_full(&error);
                if self.status.failed(full, error.to_string(), now_us()) {
                    tracing::error!(
                        path = %self.path.display(),
                        %error,
                        full,
                        pending_updates = self.backlog.updates.len(),
                        "writing to the task database failed; task changes are kept in memory and written once it works again, and new tasks are refused meanwhile"
                    );
                }
            }
        }
    }

    /// Deletes finished tasks beyond the retention and resource samples
    /// older than [`SAMPLE_RETENTION`].
    fn purge(&mut self) {
        let now = now_us();
        match retention::purge(&mut self.conn, &self.retention, now) {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "purged finished tasks beyond the retention"),
            Err(error) => tracing::error!(%error, "purging finished tasks failed"),
        }
        match samples::purge(&self.conn, samples::cutoff_us(SAMPLE_RETENTION, now)) {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "purged resource samples older than an hour"),
            Err(error) => tracing::error!(%error, "purging old resource samples failed"),
        }
    }
}

/// Inserts from one `insert` call, with the caller waiting for them.
struct InsertGroup {
    /// The rows.
    records: Vec<TaskRecord>,
    /// The waiting caller.
    reply: Reply,
}

/// The operations of one round.
#[derive(Default)]
struct Batch {
    /// Insert calls in arrival order.
    inserts: Vec<InsertGroup>,
    /// The newest update per task.
    updates: HashMap<TaskId, TaskUpdate>,
    /// Resource samples in arrival order.
    samples: Vec<ResourceSample>,
    /// Flush callers waiting for this commit.
    flushes: Vec<Reply>,
    /// Settings to store, each in its own transaction.
    settings: Vec<(String, String, Reply)>,
}

/// Keeps `update` unless `updates` holds a newer version of its task.
fn keep_newest(updates: &mut HashMap<TaskId, TaskUpdate>, update: TaskUpdate) {
    match updates.entry(update.id) {
        Entry::Occupied(mut slot) => {
            if update.version > slot.get().version {
                slot.insert(update);
            }
        }
        Entry::Vacant(slot) => {
            slot.insert(update);
        }
    }
}

/// True when SQLite failed for lack of space.
fn is_disk_full(error: &rusqlite::Error) -> bool {
    error.sqlite_error_code() == Some(ErrorCode::DiskFull)
}

/// True when the error is about the storage rather than the data written
/// (a duplicate id, say): the disk, the file system or the file.
fn is_storage_error(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
        )
    )
}

/// A write that needs a page of room: it tells whether writes work again
/// when nothing else waits to be written.
fn probe(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// What a round could not write.
struct Unwritten {
    /// Updates to keep for the next round.
    updates: Vec<TaskUpdate>,
    /// Samples to keep for the next round.
    samples: Vec<ResourceSample>,
    /// Why.
    error: Arc<rusqlite::Error>,
}

/// The outcome of one round.
struct Committed {
    /// Updates and samples that failed, if any.
    unwritten: Option<Unwritten>,
    /// Why inserts failed, when the storage was the reason.
    insert_error: Option<Arc<rusqlite::Error>>,
}

impl Batch {
    /// A batch that starts with what the backlog kept, so that newer updates
    /// arriving now replace kept ones of the same task.
    fn take_backlog(backlog: &mut Backlog) -> Self {
        Self {
            updates: std::mem::take(&mut backlog.updates),
            samples: std::mem::take(&mut backlog.samples).into(),
            ..Self::default()
        }
    }

    /// Nothing to write and nobody to answer.
    fn is_empty(&self) -> bool {
        self.inserts.is_empty()
            && self.updates.is_empty()
            && self.samples.is_empty()
            && self.flushes.is_empty()
            && self.settings.is_empty()
    }

    /// Adds an operation, if any.
    fn extend(&mut self, op: Option<Op>) {
        if let Some(op) = op {
            self.push(op);
        }
    }

    /// Adds one operation, keeping only the newest update of each task.
    fn push(&mut self, op: Op) {
        match op {
            Op::Insert { records, reply } => self.inserts.push(InsertGroup { records, reply }),
            Op::Update(update) => keep_newest(&mut self.updates, update),
            Op::Sample(sample) => self.samples.push(sample),
            Op::Flush(reply) => self.flushes.push(reply),
            Op::Setting { key, value, reply } => self.settings.push((key, value, reply)),
        }
    }

    /// Writes the batch and answers every waiter.
    ///
    /// When the shared transaction fails and more than one caller's work was
    /// in it, each insert call and then the updates are retried in their own
    /// transactions, so that one bad insert (a duplicate id, say) fails only
    /// its own caller. Insert failures go to their callers alone (as
    /// [`StoreError::Full`] when the disk is full). Update and sample
    /// failures come back as [`Unwritten`] for the backlog, and flush callers
    /// in the batch get them as an error, since what they waited for was not
    /// written.
    fn commit(self, conn: &mut Connection, path: &Path) -> Committed {
        let Self {
            inserts,
            updates,
            samples,
            flushes,
            settings,
        } = self;
        for (key, value, reply) in settings {
            let result = super::settings::upsert(conn, &key, &value).map_err(|error| {
                if is_disk_full(&error) {
                    StoreError::Full {
                        path: path.to_owned(),
                    }
                } else {
                    StoreError::Write(Arc::new(error))
                }
            });
            answer(&reply, result);
        }
        let mut updates: Vec<TaskUpdate> = updates.into_values().collect();
        updates.sort_unstable_by_key(|update| update.id);
        let groups: Vec<&[TaskRecord]> = inserts.iter().map(|group| &group.records[..]).collect();
        let unattended = Unattended {
            updates: &updates,
            samples: &samples,
        };
        let units = inserts.len() + usize::from(!unattended.is_empty());
        let mut unattended_error: Option<Arc<rusqlite::Error>> = None;
        let mut insert_error: Option<Arc<rusqlite::Error>> = None;
        let insert_failed = |error: &Arc<rusqlite::Error>| {
            if is_disk_full(error) {
                StoreError::Full {
                    path: path.to_owned(),
                }
            } else {
                StoreError::Write(Arc::clone(error))
            }
        };
        match write(conn, &groups, unattended) {
            Ok(()) => {
                for group in &inserts {
                    answer(&group.reply, Ok(()));
                }
            }
            Err(error) if units <= 1 => {
                let error = Arc::new(error);
                for group in &inserts {
                    answer(&group.reply, Err(insert_failed(&error)));
                }
                if unattended.is_empty() {
                    insert_error = Some(error);
                } else {
                    unattended_error = Some(error);
                }
            }
            Err(error) => {
                tracing::debug!(%error, units, "group commit failed; retrying each caller's writes alone");
                for group in &inserts {
                    let result =
                        write(conn, &[&group.records], Unattended::NONE).map_err(|error| {
                            let error = Arc::new(error);
                            let refusal = insert_failed(&error);
                            insert_error = Some(error);
                            refusal
                        });
                    answer(&group.reply, result);
                }
                if !unattended.is_empty()
                    && let Err(error) = write(conn, &[], unattended)
                {
                    unattended_error = Some(Arc::new(error));
                }
            }
        }
        for reply in &flushes {
            let result = match &unattended_error {
                None => Ok(()),
                Some(error) => Err(StoreError::Write(Arc::clone(error))),
            };
            answer(reply, result);
        }
        Committed {
            insert_error: insert_error.filter(|error| is_storage_error(error)),
            unwritten: unattended_error.map(|error| Unwritten {
                updates,
                samples,
                error,
            }),
        }
    }
}

/// The writes of a batch that nobody waits for: task updates and samples.
#[derive(Clone, Copy)]
struct Unattended<'a> {
    /// Task updates, by id.
    updates: &'a [TaskUpdate],
    /// Resource samples, in arrival order.
    samples: &'a [ResourceSample],
}

impl Unattended<'_> {
    /// Nothing to write.
    const NONE: Unattended<'static> = Unattended {
        updates: &[],
        samples: &[],
    };

    /// Whether there is nothing to write.
    fn is_empty(self) -> bool {
        self.updates.is_empty() && self.samples.is_empty()
    }
}

/// Writes insert groups, then updates, then samples, in one transaction; on
/// error the transaction rolls back and nothing of it is stored.
fn write(
    conn: &mut Connection,
    groups: &[&[TaskRecord]],
    unattended: Unattended<'_>,
) -> rusqlite::Result<()> {
    let Unattended {
        updates,
        samples: new_samples,
    } = unattended;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if groups.iter().any(|group| !group.is_empty()) {
        let mut stmt = tx.prepare_cached(INSERT_SQL)?;
        for record in groups.iter().flat_map(|group| group.iter()) {
            rows::insert(&mut stmt, record)?;
        }
    }
    if !updates.is_empty() {
        let mut stmt = tx.prepare_cached(UPDATE_SQL)?;
        for update in updates {
            rows::update(&mut stmt, update)?;
        }
    }
    if !new_samples.is_empty() {
        let mut stmt = tx.prepare_cached(samples::INSERT_SQL)?;
        for sample in new_samples {
            samples::insert(&mut stmt, sample)?;
        }
    }
    tx.commit()
}

/// Sends a result to a waiting caller.
fn answer(reply: &Reply, result: Result<(), StoreError>) {
    // The caller blocks on this reply; it can only be gone if its thread
    // died, and then nobody is left to tell.
    let _ = reply.send(result);
}

#[cfg(test)]
mod tests {
    use crossbeam_channel::Receiver;
    use serde_json::json;

    use super::*;
    use crate::model::{TaskSpec, TaskStatus};

    fn queued(id: u64) -> TaskRecord {
        TaskRecord::new(TaskId(id), TaskSpec::new("noop", vec![json!(id)]), 0)
    }

    fn insert_op(batch: &mut Batch, ids: &[u64]) -> Receiver<Result<(), StoreError>> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let records = ids.iter().copied().map(queued).collect();
        batch.push(Op::Insert { records, reply });
        answer
    }

    fn update_op(batch: &mut Batch, id: u64, status: TaskStatus, version: u64) {
        let mut record = queued(id);
        record.status = status;
        record.version = version;
        batch.push(Op::Update(TaskUpdate::from_record(&record)));
    }

    fn stored(conn: &Connection) -> Vec<(i64, String, i64)> {
        let mut stmt = conn
            .prepare("SELECT id, status, version FROM tasks ORDER BY id")
            .expect("the query should prepare");
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .expect("the query should run")
            .map(|row| row.expect("the row should read"))
            .collect()
    }

    #[test]
    fn one_bad_insert_fails_only_its_caller() {
        let dir = tempfile::tempdir().expect("a temp dir should be creatable");
        let mut conn = super::super::schema::open(
            &dir.path().join("tasks.db"),
            super::super::Durability::Power,
        )
        .expect("the database should open");
        let mut batch = Batch::default();
        let first = insert_op(&mut batch, &[1]);
        // Its id 1 collides with the first caller's row.
        let bad = insert_op(&mut batch, &[2, 1]);
        // Updates to a row inserted in the same batch apply after the inserts,
        // and the highest version wins whatever the arrival order.
        update_op(&mut batch, 3, TaskStatus::Completed, 4);
        update_op(&mut batch, 3, TaskStatus::Running, 2);
        let third = insert_op(&mut batch, &[3]);
        let (reply, flushed) = crossbeam_channel::bounded(1);
        batch.push(Op::Flush(reply));
        let committed = batch.commit(&mut conn, dir.path());
        assert!(committed.unwritten.is_none() && committed.insert_error.is_none());

        assert!(matches!(first.recv(), Ok(Ok(()))));
        assert!(matches!(bad.recv(), Ok(Err(StoreError::Write(_)))));
        assert!(matches!(third.recv(), Ok(Ok(()))));
        assert!(matches!(flushed.recv(), Ok(Ok(()))));
        assert_eq!(
            stored(&conn),
            [(1, "queued".to_owned(), 1), (3, "completed".to_owned(), 4)]
        );
    }
}
