//! The writer thread: it owns the connection and turns the operations that
//! arrive over its channel into group commits.
//!
//! Each round blocks for one operation, drains up to [`MAX_BATCH_OPS`] more
//! that are already waiting, writes them all in one transaction and only
//! then answers the waiters, so concurrent submitters share one commit (and
//! one fsync). Within a batch inserts go first, in arrival order; updates
//! follow, coalesced per task to the highest version; resource samples come
//! last. Updates and samples are one unit: nobody waits for either.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rusqlite::{Connection, TransactionBehavior};

use super::rows::{self, INSERT_SQL, TaskUpdate, UPDATE_SQL};
use super::{Retention, SAMPLE_RETENTION, StoreError, retention, samples};
use crate::model::{ResourceSample, TaskId, TaskRecord, now_us};

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
}

impl Writer {
    /// A writer for a connection on which the open-time purge just ran.
    pub(super) fn new(conn: Connection, ops: Receiver<Op>, retention: Retention) -> Self {
        Self {
            conn,
            ops,
            retention,
            last_purge: Instant::now(),
        }
    }

    /// Runs until the channel is closed and drained, then closes the
    /// connection (which checkpoints the WAL into the database file).
    pub(super) fn run(mut self) {
        while let Ok(first) = self.ops.recv() {
            let mut batch = Batch::default();
            batch.push(first);
            for _ in 0..MAX_BATCH_OPS {
                let Ok(op) = self.ops.try_recv() else {
                    break;
                };
                batch.push(op);
            }
            batch.commit(&mut self.conn);
            if self.last_purge.elapsed() >= PURGE_INTERVAL {
                self.last_purge = Instant::now();
                self.purge();
            }
        }
        if let Err((_, error)) = self.conn.close() {
            tracing::error!(%error, "closing the task database failed");
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
}

impl Batch {
    /// Adds one operation, keeping only the newest update of each task.
    fn push(&mut self, op: Op) {
        match op {
            Op::Insert { records, reply } => self.inserts.push(InsertGroup { records, reply }),
            Op::Update(update) => match self.updates.entry(update.id) {
                Entry::Occupied(mut slot) => {
                    if update.version > slot.get().version {
                        slot.insert(update);
                    }
                }
                Entry::Vacant(slot) => {
                    slot.insert(update);
                }
            },
            Op::Sample(sample) => self.samples.push(sample),
            Op::Flush(reply) => self.flushes.push(reply),
        }
    }

    /// Writes the batch and answers every waiter.
    ///
    /// When the shared transaction fails and more than one caller's work was
    /// in it, each insert call and then the updates are retried in their own
    /// transactions, so that one bad insert (a duplicate id, say) fails only
    /// its own caller. Insert failures go to their callers alone. Update
    /// (and sample) failures are logged here, once per failed transaction,
    /// since nobody waits for them, and flush callers in the batch get them
    /// as an error, since what they waited for was not written.
    fn commit(self, conn: &mut Connection) {
        let Self {
            inserts,
            updates,
            samples,
            flushes,
        } = self;
        let mut updates: Vec<TaskUpdate> = updates.into_values().collect();
        updates.sort_unstable_by_key(|update| update.id);
        let groups: Vec<&[TaskRecord]> = inserts.iter().map(|group| &group.records[..]).collect();
        let unattended = Unattended {
            updates: &updates,
            samples: &samples,
        };
        let units = inserts.len() + usize::from(!unattended.is_empty());
        let mut lost_updates: Option<Arc<rusqlite::Error>> = None;
        match write(conn, &groups, unattended) {
            Ok(()) => {
                for group in &inserts {
                    answer(&group.reply, Ok(()));
                }
            }
            Err(error) if units <= 1 => {
                let error = Arc::new(error);
                for group in &inserts {
                    answer(&group.reply, Err(StoreError::Write(Arc::clone(&error))));
                }
                if !unattended.is_empty() {
                    unattended.log_failure(&error);
                    lost_updates = Some(error);
                }
            }
            Err(error) => {
                tracing::debug!(%error, units, "group commit failed; retrying each caller's writes alone");
                for group in &inserts {
                    let result = write(conn, &[&group.records], Unattended::NONE)
                        .map_err(|error| StoreError::Write(Arc::new(error)));
                    answer(&group.reply, result);
                }
                if !unattended.is_empty()
                    && let Err(error) = write(conn, &[], unattended)
                {
                    let error = Arc::new(error);
                    unattended.log_failure(&error);
                    lost_updates = Some(error);
                }
            }
        }
        for reply in &flushes {
            let result = match &lost_updates {
                None => Ok(()),
                Some(error) => Err(StoreError::Write(Arc::clone(error))),
            };
            answer(reply, result);
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

    /// Reports writes that failed; nobody waits for them.
    fn log_failure(self, error: &rusqlite::Error) {
        tracing::error!(
            %error,
            updates = self.updates.len(),
            samples = self.samples.len(),
            "writing task updates and resource samples to the database failed; they are lost"
        );
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
        let mut conn = super::super::schema::open(&dir.path().join("tasks.db"))
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
        batch.commit(&mut conn);

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
