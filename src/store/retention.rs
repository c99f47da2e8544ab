//! Retention of finished tasks: the purge the writer runs on the database
//! and the same rules applied to the tasks recovered at open.
//!
//! Rules, applied to finished tasks (completed, failed, cancelled) only:
//! - a task that finished more than `max_age` ago goes;
//! - of the rest, only the newest `max_finished` by id stay;
//! - unfinished tasks (queued, running, retrying) always stay, and so do
//!   the finished tasks an unfinished one depends on (its way forward
//!   depends on how they ended);
//! - in the database the row with the highest id always stays, so that the
//!   next id, derived from it at open, never reuses a purged task's id.

use rusqlite::{Connection, TransactionBehavior, params};

use super::Retention;
use crate::model::{TaskId, TaskRecord};

/// The final statuses, as SQL string literals, for `status IN (...)`.
const FINAL_STATUSES_SQL: &str = "'completed', 'failed', 'cancelled'";

/// `AND` clause that spares the tasks an unfinished task depends on.
const SPARE_DEPENDENCIES_SQL: &str = "AND id NOT IN (SELECT d.value FROM tasks AS t, \
     json_each(t.depends_on) AS d WHERE t.depends_on <> '[]' \
     AND t.status NOT IN ('completed', 'failed', 'cancelled'))";

/// The oldest `finished_at_us` that `retention` keeps at `now_us`; `None`
/// keeps every age.
fn age_cutoff_us(retention: &Retention, now_us: i64) -> Option<i64> {
    let max_age = retention.max_age?;
    let max_age_us = i64::try_from(max_age.as_micros()).unwrap_or(i64::MAX);
    Some(now_us.saturating_sub(max_age_us))
}

/// Deletes the finished rows beyond `retention`, in one transaction, and
/// returns how many went.
///
/// Without an index on `status` or `finished_at_us` this scans the table;
/// it runs at open and at most every 30 seconds, while an index would cost
/// every insert and update.
pub(super) fn purge(
    conn: &mut Connection,
    retention: &Retention,
    now_us: i64,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut deleted = 0;
    if let Some(cutoff_us) = age_cutoff_us(retention, now_us) {
        let sql = format!(
            "DELETE FROM tasks WHERE status IN ({FINAL_STATUSES_SQL}) AND finished_at_us < ?1 \
             AND id < (SELECT max(id) FROM tasks) {SPARE_DEPENDENCIES_SQL}"
        );
        deleted += tx.prepare_cached(&sql)?.execute(params![cutoff_us])?;
    }
    // The subquery finds the newest finished id beyond the count; it yields
    // no row, and the comparison NULL, when there are few enough.
    let sql = format!(
        "DELETE FROM tasks WHERE status IN ({FINAL_STATUSES_SQL}) \
         AND id <= (SELECT id FROM tasks WHERE status IN ({FINAL_STATUSES_SQL}) \
                    ORDER BY id DESC LIMIT 1 OFFSET ?1) \
         AND id < (SELECT max(id) FROM tasks) {SPARE_DEPENDENCIES_SQL}"
    );
    let keep = i64::try_from(retention.max_finished).unwrap_or(i64::MAX);
    deleted += tx.prepare_cached(&sql)?.execute(params![keep])?;
    tx.commit()?;
    Ok(deleted)
}

/// Drops from `records` (sorted by id) the finished tasks beyond
/// `retention`, by the rules in the module docs.
pub(super) fn retain(records: &mut Vec<TaskRecord>, retention: &Retention, now_us: i64) {
    let cutoff_us = age_cutoff_us(retention, now_us);
    let needed: std::collections::HashSet<TaskId> = records
        .iter()
        .filter(|record| !record.status.is_final())
        .flat_map(|record| record.spec.dependency_ids())
        .collect();
    let mut finished_kept = 0_usize;
    let mut keep: Vec<bool> = records
        .iter()
        .rev()
        .map(|record| {
            if !record.status.is_final() {
                return true;
            }
            let spared = needed.contains(&record.id);
            let too_old = matches!(
                (cutoff_us, record.finished_at_us),
                (Some(cutoff), Some(finished)) if finished < cutoff
            );
            if too_old && !spared {
                return false;
            }
            // As in the purge, spared tasks count towards the newest kept.
            finished_kept += 1;
            spared || finished_kept <= retention.max_finished
        })
        .collect();
    keep.reverse();
    let mut keep = keep.into_iter();
    records.retain(|_| keep.next().unwrap_or(true));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{TaskSpec, TaskStatus};

    fn record(id: u64, status: TaskStatus, finished_at_us: Option<i64>) -> TaskRecord {
        let mut record = TaskRecord::new(TaskId(id), TaskSpec::new("noop", vec![]), 0);
        record.status = status;
        record.finished_at_us = finished_at_us;
        record
    }

    #[test]
    fn final_statuses_sql_lists_every_final_status() {
        let expected: Vec<String> = TaskStatus::ALL
            .into_iter()
            .filter(|status| status.is_final())
            .map(|status| format!("'{status}'"))
            .collect();
        assert_eq!(FINAL_STATUSES_SQL, expected.join(", "));
    }

    #[test]
    fn retain_keeps_unfinished_and_the_newest_young_finished() {
        let retention = Retention {
            max_finished: 2,
            max_age: Some(Duration::from_micros(1_000)),
        };
        let mut records = vec![
            record(1, TaskStatus::Queued, None),
            record(2, TaskStatus::Completed, Some(9_500)),
            record(3, TaskStatus::Failed, Some(9_600)),
            record(4, TaskStatus::Running, None),
            record(5, TaskStatus::Cancelled, Some(9_700)),
            record(6, TaskStatus::Completed, Some(100)),
            record(7, TaskStatus::Retrying, None),
        ];
        retain(&mut records, &retention, 10_000);
        let ids: Vec<u64> = records.iter().map(|record| record.id.0).collect();
        assert_eq!(ids, [1, 3, 4, 5, 7]);
    }

    #[test]
    fn retain_spares_what_an_unfinished_task_depends_on() {
        let retention = Retention {
            max_finished: 0,
            max_age: None,
        };
        let mut waiting = record(3, TaskStatus::Queued, None);
        waiting.spec = waiting.spec.after(TaskId(1));
        let mut done = record(4, TaskStatus::Completed, Some(10));
        done.spec = done.spec.after(TaskId(2));
        let mut records = vec![
            record(1, TaskStatus::Completed, Some(10)),
            record(2, TaskStatus::Failed, Some(10)),
            waiting,
            done,
        ];
        retain(&mut records, &retention, 10_000);
        let ids: Vec<u64> = records.iter().map(|record| record.id.0).collect();
        assert_eq!(ids, [1, 3]);
    }
}
