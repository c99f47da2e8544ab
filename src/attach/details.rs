//! What the window asks of single tasks beyond their records, kept for
//! the reads of a remote backend: why a waiting task waits, and an
//! attempt's progress history. The reads only look here, and note what
//! they asked for; the `taskdeck-attach-details` thread fetches what was
//! asked for lately, over HTTP, and wakes the window when an answer
//! changed.
//!
//! - A read of [`Remote::waiting`] or [`Remote::progress_history`] asks
//!   for those tasks for [`ASKED_FOR`]; the window reads its visible
//!   waiting rows and its selected task at least once a second, so what
//!   it shows stays asked for, and what scrolled away lapses. At most
//!   [`MOST_ASKED`] of each are kept.
//! - Every [`FETCH_EVERY`] the thread reads `GET /api/v1/tasks/{id}` for
//!   each waiting task asked for (queue positions change without events),
//!   and `GET /api/v1/tasks/{id}/progress?attempt=N` for each history whose
//!   copy is older than the task's record. A round ends at the first
//!   call that cannot reach the server, and between calls when the
//!   attachment stops.
//! - A history older than the record is still given while its attempt
//!   runs (it is at most a second behind); once the attempt ended, none is
//!   given until the last one is fetched, so the window asks again rather
//!   than keep an incomplete copy.
//!
//! [`Remote::waiting`]: crate::app::Backend::waiting
//! [`Remote::progress_history`]: crate::app::Backend::progress_history

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::{Remote, convert};
use crate::client::{Client, ClientError};
use crate::model::{ProgressPoint, TaskId, TaskRecord, TaskStatus};
use crate::scheduler::Waiting;

/// How long a read keeps a task asked for.
pub const ASKED_FOR: Duration = Duration::from_secs(3);
/// Most tasks asked for at a time, of each kind.
pub const MOST_ASKED: usize = 200;
/// How often what is asked for is fetched.
pub const FETCH_EVERY: Duration = Duration::from_secs(1);

/// Which history: a task and an attempt (none: the latest that reported).
pub type HistoryKey = (TaskId, Option<u32>);

/// A history as fetched, with the version of the record held then.
#[derive(Debug, Clone, PartialEq)]
struct Fetched {
    version: u64,
    attempt: u32,
    points: Vec<ProgressPoint>,
}

/// What was asked for and what was fetched.
#[derive(Debug, Default)]
pub struct Details {
    waiting_asked: HashMap<TaskId, Instant>,
    reasons: HashMap<TaskId, Option<Waiting>>,
    history_asked: HashMap<HistoryKey, Instant>,
    histories: HashMap<HistoryKey, Fetched>,
}

/// Notes `key` as asked for at `now`, unless the map is full.
fn ask<K: std::hash::Hash + Eq>(asked: &mut HashMap<K, Instant>, key: K, now: Instant) {
    if asked.len() < MOST_ASKED || asked.contains_key(&key) {
        asked.insert(key, now);
    }
}

impl Details {
    /// Why each of `ids` waits, as fetched; asks for them.
    pub fn waiting(&mut self, ids: &[TaskId], now: Instant) -> Vec<Option<Waiting>> {
        ids.iter()
            .map(|id| {
                ask(&mut self.waiting_asked, *id, now);
                self.reasons.get(id).cloned().flatten()
            })
            .collect()
    }

    /// The history of `key` as fetched, when it may be shown for `record`
    /// (see the module docs); asks for it.
    pub fn history(
        &mut self,
        key: HistoryKey,
        record: Option<&TaskRecord>,
        now: Instant,
    ) -> Option<(u32, Vec<ProgressPoint>)> {
        ask(&mut self.history_asked, key, now);
        let fetched = self.histories.get(&key)?;
        let current = record.is_none_or(|record| fetched.version >= record.version);
        let running = record.is_some_and(|record| {
            record.status == TaskStatus::Running
                && key.1.is_none_or(|attempt| attempt == record.attempts)
        });
        (current || running).then(|| (fetched.attempt, fetched.points.clone()))
    }

    /// Forgets what was not asked for within [`ASKED_FOR`] of `now`, and
    /// returns what is asked for: the waiting tasks, and the histories
    /// with the version of the copy held.
    pub fn asked(&mut self, now: Instant) -> (Vec<TaskId>, Vec<(HistoryKey, Option<u64>)>) {
        let lapsed = |at: &Instant| now.saturating_duration_since(*at) > ASKED_FOR;
        self.waiting_asked.retain(|_, at| !lapsed(at));
        self.history_asked.retain(|_, at| !lapsed(at));
        let Self {
            waiting_asked,
            reasons,
            history_asked,
            histories,
        } = self;
        reasons.retain(|id, _| waiting_asked.contains_key(id));
        histories.retain(|key, _| history_asked.contains_key(key));
        let mut waiting: Vec<TaskId> = waiting_asked.keys().copied().collect();
        waiting.sort_unstable();
        let mut wanted: Vec<(HistoryKey, Option<u64>)> = history_asked
            .keys()
            .map(|key| (*key, histories.get(key).map(|fetched| fetched.version)))
            .collect();
        wanted.sort_unstable_by_key(|(key, _)| *key);
        (waiting, wanted)
    }

    /// Keeps why `id` waits; true when it changed.
    pub fn set_reason(&mut self, id: TaskId, reason: Option<Waiting>) -> bool {
        if !self.waiting_asked.contains_key(&id) {
            return false;
        }
        self.reasons.insert(id, reason.clone()) != Some(reason)
    }

    /// Keeps a history fetched while the record's version was `version`;
    /// true when it changed.
    pub fn set_history(
        &mut self,
        key: HistoryKey,
        version: u64,
        (attempt, points): (u32, Vec<ProgressPoint>),
    ) -> bool {
        if !self.history_asked.contains_key(&key) {
            return false;
        }
        let fetched = Fetched {
            version,
            attempt,
            points,
        };
        let old = self.histories.insert(key, fetched.clone());
        old.is_none_or(|old| (old.attempt, old.points) != (fetched.attempt, fetched.points))
    }
}

/// The `taskdeck-attach-details` thread's work.
pub struct Fetcher {
    /// The server.
    pub client: Client,
    /// The backend whose [`Details`] it fills.
    pub remote: Arc<Remote>,
    /// Disconnected when the attachment stops.
    pub cancelled: Receiver<()>,
}

impl Fetcher {
    /// Fetches what is asked for every [`FETCH_EVERY`] until cancelled.
    pub fn run(self) {
        loop {
            match self.cancelled.recv_timeout(FETCH_EVERY) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            let (waiting, histories) = self.remote.details.lock().asked(Instant::now());
            let fetches = waiting.into_iter().map(Fetch::Reason).chain(
                histories
                    .into_iter()
                    .map(|(key, held)| Fetch::History(key, held)),
            );
            let mut changed = false;
            for fetch in fetches {
                // A round of many calls to a server that went away ends at
                // its first failure, and a close is not kept waiting.
                if !matches!(self.cancelled.try_recv(), Err(TryRecvError::Empty)) {
                    return;
                }
                let answer = match fetch {
                    Fetch::Reason(id) => self.fetch_reason(id),
                    Fetch::History(key, held) => self.fetch_history(key, held),
                };
                match answer {
                    Ok(fresh) => changed |= fresh,
                    Err(Unreachable) => break,
                }
            }
            if changed {
                self.remote.wake();
            }
        }
    }

    // A failed fetch leaves the copy as it was: the connection's state,
    // which the header shows, is the event follower's to report, and the
    // next round tries again.

    fn fetch_reason(&self, id: TaskId) -> Result<bool, Unreachable> {
        let Some(record) = self.remote.tasks.lock().get(&id).cloned() else {
            return Ok(false);
        };
        let reason = if matches!(record.status, TaskStatus::Queued | TaskStatus::Retrying) {
            let value = match self.client.task(id.0) {
                Ok(value) => value,
                Err(error) => return unreachable_or_nothing(&error),
            };
            match convert::waiting(&value, &record) {
                Ok(reason) => reason,
                Err(error) => {
                    tracing::debug!("task {id}: {error}");
                    return Ok(false);
                }
            }
        } else {
            None
        };
        Ok(self.remote.details.lock().set_reason(id, reason))
    }

    fn fetch_history(&self, key: HistoryKey, held: Option<u64>) -> Result<bool, Unreachable> {
        let (id, attempt) = key;
        let Some(version) = self.remote.held_version(id) else {
            return Ok(false);
        };
        if held.is_some_and(|held| held >= version) {
            return Ok(false);
        }
        let path = match attempt {
            Some(attempt) => format!("/api/v1/tasks/{id}/progress?attempt={attempt}"),
            None => format!("/api/v1/tasks/{id}/progress"),
        };
        let value = match self.client.call("GET", &path, None) {
            Ok(value) => value,
            Err(error) => return unreachable_or_nothing(&error),
        };
        match convert::progress(&value) {
            Ok(history) => Ok(self
                .remote
                .details
                .lock()
                .set_history(key, version, history)),
            Err(error) => {
                tracing::debug!("task {id}: {error}");
                Ok(false)
            }
        }
    }
}

/// One fetch of a round.
enum Fetch {
    Reason(TaskId),
    History(HistoryKey, Option<u64>),
}

/// The server could not be reached: the round ends.
struct Unreachable;

/// A connection failure ends the round; an answer (a task gone: 404)
/// changes nothing.
fn unreachable_or_nothing(error: &ClientError) -> Result<bool, Unreachable> {
    match error {
        ClientError::Connect { .. } => Err(Unreachable),
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskSpec;

    fn record(status: TaskStatus, version: u64) -> TaskRecord {
        let mut record = TaskRecord::new(TaskId(1), TaskSpec::new("train", vec![]), 0);
        record.status = status;
        record.attempts = 1;
        record.version = version;
        record
    }

    fn point(at_us: i64) -> ProgressPoint {
        ProgressPoint {
            at_us,
            fraction: None,
            metrics: Default::default(),
        }
    }

    #[test]
    fn what_a_read_asks_for_is_fetched_until_it_lapses() {
        let mut details = Details::default();
        let start = Instant::now();
        assert_eq!(
            details.waiting(&[TaskId(2), TaskId(1)], start),
            [None, None]
        );
        assert_eq!(details.asked(start).0, [TaskId(1), TaskId(2)]);
        assert!(details.set_reason(TaskId(1), Some(Waiting::Held)));
        assert!(
            !details.set_reason(TaskId(1), Some(Waiting::Held)),
            "no change"
        );
        assert!(
            !details.set_reason(TaskId(3), Some(Waiting::Held)),
            "not asked"
        );
        let later = start + ASKED_FOR / 2;
        assert_eq!(details.waiting(&[TaskId(1)], later), [Some(Waiting::Held)]);
        let lapsed = start + ASKED_FOR + Duration::from_millis(1);
        assert_eq!(details.asked(lapsed).0, [TaskId(1)], "task 2 lapsed");
        let (waiting, histories) = details.asked(later + ASKED_FOR * 2);
        assert!(waiting.is_empty() && histories.is_empty());
        assert_eq!(details.waiting(&[TaskId(1)], later), [None], "forgotten");
    }

    #[test]
    fn a_history_older_than_the_record_shows_only_while_its_attempt_runs() {
        let mut details = Details::default();
        let now = Instant::now();
        let key = (TaskId(1), Some(1));
        let running = record(TaskStatus::Running, 5);
        assert_eq!(
            details.history(key, Some(&running), now),
            None,
            "not fetched"
        );
        assert_eq!(details.asked(now).1, [(key, None)]);
        assert!(details.set_history(key, 4, (1, vec![point(1)])));
        assert_eq!(
            details.history(key, Some(&running), now),
            Some((1, vec![point(1)])),
            "a second behind while it runs"
        );
        let ended = record(TaskStatus::Completed, 6);
        assert_eq!(details.history(key, Some(&ended), now), None, "incomplete");
        assert_eq!(details.asked(now).1, [(key, Some(4))]);
        assert!(details.set_history(key, 6, (1, vec![point(1), point(2)])));
        assert_eq!(
            details.history(key, Some(&ended), now),
            Some((1, vec![point(1), point(2)]))
        );
    }
}
