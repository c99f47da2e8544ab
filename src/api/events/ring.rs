//! The bounded buffer of recent stream events, what a follower asks for
//! (filters, where to resume) and the Server-Sent Events framing: pure
//! data, no threads and no I/O, so every rule is unit-tested.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};

use crate::model::{EventKind, TaskId, TaskRecord, TaskStatus};

/// What an event is about; followers filter on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// A task changed.
    Task,
    /// A worker appeared, changed or left.
    Worker,
    /// A queue's settings or counts changed.
    Queue,
    /// A new resource sample (about once a second).
    Resources,
}

impl StreamKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [Self; 4] = [Self::Task, Self::Worker, Self::Queue, Self::Resources];

    /// Its place in [`StreamKind::ALL`].
    fn index(self) -> usize {
        match self {
            Self::Task => 0,
            Self::Worker => 1,
            Self::Queue => 2,
            Self::Resources => 3,
        }
    }

    /// The SSE event type and the `kinds` filter's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Worker => "worker",
            Self::Queue => "queue",
            Self::Resources => "resources",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == word)
    }
}

/// Where a frame rendered late finds a task's current record.
pub type Records<'a> = &'a dyn Fn(TaskId) -> Option<Arc<TaskRecord>>;

/// What an event carries before it is written out.
pub enum Payload {
    /// A task's transition and its record right after it; serialized only
    /// when a follower needs it.
    Task(EventKind, Arc<TaskRecord>),
    /// A task's transition (and its status after it) in a tick with so many
    /// that a [`Payload::Summary`] tells followers without a task filter;
    /// only followers of this task get it, with the task's record as it is
    /// when the first of them reads the event.
    SummarizedTask(EventKind, TaskId, TaskStatus),
    /// Many task changes at once (an SSE `tasks` event): which tasks
    /// changed, by their new status.
    Summary(Value),
    /// Anything else, already in its JSON form.
    Json(Value),
}

/// One event of the stream.
pub struct Frame {
    /// Position in this server's stream, from 1.
    pub seq: u64,
    /// What it is about.
    pub kind: StreamKind,
    /// The task, for task events.
    pub task: Option<TaskId>,
    /// A task change also told in a summary (see [`Payload::SummarizedTask`]).
    summarized: bool,
    payload: Payload,
    text: OnceLock<Arc<str>>,
}

impl Frame {
    /// A frame not yet serialized.
    pub fn new(seq: u64, kind: StreamKind, payload: Payload) -> Self {
        let task = match &payload {
            Payload::Task(_, record) => Some(record.id),
            Payload::SummarizedTask(_, id, _) => Some(*id),
            Payload::Summary(_) | Payload::Json(_) => None,
        };
        Self {
            seq,
            kind,
            task,
            summarized: matches!(payload, Payload::SummarizedTask(..)),
            payload,
            text: OnceLock::new(),
        }
    }

    /// The frame in SSE form, serialized once and shared by every follower.
    pub fn text(&self, epoch: &str, records: Records<'_>) -> Arc<str> {
        Arc::clone(self.text.get_or_init(|| {
            let (event, data) = match &self.payload {
                Payload::Task(kind, record) => (
                    self.kind.as_str(),
                    json!({ "kind": kind, "task": crate::api::views::task(record) }),
                ),
                Payload::SummarizedTask(kind, id, status) => {
                    let task = records(*id).map_or_else(
                        || json!({ "id": id.0, "status": status }),
                        |record| crate::api::views::task(&record),
                    );
                    (self.kind.as_str(), json!({ "kind": kind, "task": task }))
                }
                Payload::Summary(value) => ("tasks", value.clone()),
                Payload::Json(value) => (self.kind.as_str(), value.clone()),
            };
            sse(&event_id(epoch, self.seq), event, &data).into()
        }))
    }
}

/// Frames published together (one tick of the hub): followers take a whole
/// batch under the lock by cloning one `Arc`.
pub struct Batch {
    /// The frames, in stream order, with consecutive sequence numbers.
    pub frames: Vec<Frame>,
    /// Every frame is a task change also told in a summary: a follower
    /// without a task filter skips the batch without looking at them.
    pub summarized: bool,
}

impl Batch {
    fn first_seq(&self) -> u64 {
        self.frames.first().map_or(0, |frame| frame.seq)
    }

    /// The sequence number after its last frame.
    pub fn end_seq(&self) -> u64 {
        self.first_seq() + self.frames.len() as u64
    }
}

/// The most recent events, bounded by count: a follower that resumes within
/// it misses nothing; one that fell further behind is told to reload.
pub struct Ring {
    batches: VecDeque<Arc<Batch>>,
    frames: usize,
    capacity: usize,
    next_seq: u64,
}

/// Where a new or lagging follower starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Send every buffered event from this sequence number on.
    From(u64),
    /// Events it needs are gone: send a `reset` (reload), then go on live
    /// from this sequence number.
    Reset {
        /// Why, for the client.
        reason: &'static str,
        /// The first live sequence number.
        live: u64,
    },
}

impl Ring {
    /// An empty ring that keeps about `capacity` events.
    pub fn new(capacity: usize) -> Self {
        Self {
            batches: VecDeque::new(),
            frames: 0,
            capacity: capacity.max(1),
            next_seq: 1,
        }
    }

    /// The sequence number the next event gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The oldest sequence number still held (`next_seq` when empty).
    fn oldest_seq(&self) -> u64 {
        self.batches
            .front()
            .map_or(self.next_seq, |batch| batch.first_seq())
    }

    /// Builds the frames of one batch with the next sequence numbers and
    /// appends it, dropping the oldest batches beyond the capacity (the
    /// newest batch always stays).
    pub fn push(&mut self, items: Vec<(StreamKind, Payload)>) {
        if items.is_empty() {
            return;
        }
        // Summarized task changes go in batches of their own.
        let mut batch = Batch {
            frames: Vec::new(),
            summarized: false,
        };
        for (kind, payload) in items {
            let summarized = matches!(payload, Payload::SummarizedTask(..));
            if summarized != batch.summarized && !batch.frames.is_empty() {
                let full = std::mem::replace(
                    &mut batch,
                    Batch {
                        frames: Vec::new(),
                        summarized,
                    },
                );
                self.frames += full.frames.len();
                self.batches.push_back(Arc::new(full));
            }
            batch.summarized = summarized;
            batch.frames.push(Frame::new(self.next_seq, kind, payload));
            self.next_seq += 1;
        }
        self.frames += batch.frames.len();
        self.batches.push_back(Arc::new(batch));
        while self.frames > self.capacity && self.batches.len() > 1 {
            if let Some(old) = self.batches.pop_front() {
                self.frames -= old.frames.len();
            }
        }
    }

    /// Where a follower that last saw `last` starts (`None`: a new follower,
    /// which gets live events only).
    pub fn start(&self, epoch: &str, last: Option<&str>) -> Start {
        let Some(last) = last else {
            return Start::From(self.next_seq);
        };
        let live = self.next_seq;
        let Some((their_epoch, seq)) = parse_event_id(last) else {
            return Start::Reset {
                reason: "the Last-Event-ID is not one this server gave",
                live,
            };
        };
        if their_epoch != epoch {
            return Start::Reset {
                reason: "the server restarted since that event",
                live,
            };
        }
        if seq >= live {
            return Start::Reset {
                reason: "that event is not one this server gave yet",
                live,
            };
        }
        if seq + 1 < self.oldest_seq() {
            return Start::Reset {
                reason: "events since then are no longer buffered",
                live,
            };
        }
        Start::From(seq + 1)
    }

    /// The batches holding events from `from` on, or `None` when some of
    /// those events were dropped already (the follower fell behind).
    pub fn since(&self, from: u64) -> Option<Vec<Arc<Batch>>> {
        if from < self.oldest_seq() {
            return None;
        }
        let first = self
            .batches
            .partition_point(|batch| batch.end_seq() <= from);
        Some(self.batches.range(first..).cloned().collect())
    }
}

/// What one follower wants to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// By [`StreamKind::index`].
    kinds: [bool; 4],
    tasks: Option<HashSet<TaskId>>,
}

impl Filter {
    /// The filter of a request's query: `kinds` (comma list; all by
    /// default, only `task` when `task` is given) and `task` (comma list of
    /// task ids).
    pub fn from_query(query: &HashMap<String, String>) -> Result<Self, String> {
        let tasks = match query.get("task") {
            None => None,
            Some(text) => Some(
                words(text)
                    .map(|word| {
                        word.parse::<u64>().map(TaskId).map_err(|_| {
                            format!("task must be a comma list of task ids, got {word:?}")
                        })
                    })
                    .collect::<Result<HashSet<_>, _>>()?,
            ),
        };
        let kinds = match query.get("kinds") {
            None if tasks.is_some() => HashSet::from([StreamKind::Task]),
            None => StreamKind::ALL.into_iter().collect(),
            Some(text) => words(text)
                .map(|word| {
                    StreamKind::parse(word).ok_or_else(|| {
                        format!(
                            "kinds must be a comma list of task, worker, queue, resources; \
                             got {word:?}"
                        )
                    })
                })
                .collect::<Result<HashSet<_>, _>>()?,
        };
        if kinds.is_empty() {
            return Err("kinds names no kind of event".into());
        }
        let kinds = StreamKind::ALL.map(|kind| kinds.contains(&kind));
        if tasks.as_ref().is_some_and(HashSet::is_empty) {
            return Err("task names no task".into());
        }
        Ok(Self { kinds, tasks })
    }

    /// Whether it follows particular tasks.
    pub fn follows_tasks(&self) -> bool {
        self.tasks.is_some()
    }

    /// Whether the follower gets this frame.
    ///
    /// - Only the kinds it asked for.
    /// - With a task filter: only those tasks' changes, each in full.
    /// - Without one: task changes in full, except in ticks with so many
    ///   that a summary (`tasks`) tells them instead.
    pub fn wants(&self, frame: &Frame) -> bool {
        if !self.kinds[frame.kind.index()] {
            return false;
        }
        match (&self.tasks, frame.task) {
            (Some(tasks), Some(task)) => tasks.contains(&task),
            (Some(_), None) => !matches!(frame.payload, Payload::Summary(_)),
            (None, Some(_)) => !frame.summarized,
            (None, None) => true,
        }
    }
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(',')
        .map(str::trim)
        .filter(|word| !word.is_empty())
}

/// The id of event `seq` of the stream started at `epoch`.
pub fn event_id(epoch: &str, seq: u64) -> String {
    format!("{epoch}-{seq}")
}

/// The epoch and sequence number of an event id.
fn parse_event_id(id: &str) -> Option<(&str, u64)> {
    let (epoch, seq) = id.trim().rsplit_once('-')?;
    Some((epoch, seq.parse().ok()?))
}

/// One event in Server-Sent Events form. `data` is compact JSON, which
/// holds no newline, so one `data:` line carries it.
pub fn sse(id: &str, event: &str, data: &Value) -> String {
    format!("id: {id}\nevent: {event}\ndata: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskSpec;

    fn task_payload(id: u64) -> (StreamKind, Payload) {
        let record = TaskRecord::new(TaskId(id), TaskSpec::new("noop", vec![]), 0);
        (
            StreamKind::Task,
            Payload::Task(EventKind::Submitted, Arc::new(record)),
        )
    }

    fn other(kind: StreamKind) -> (StreamKind, Payload) {
        (kind, Payload::Json(json!({ "n": 1 })))
    }

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_follower_resumes_right_after_its_last_event_while_it_is_buffered() {
        let mut ring = Ring::new(10);
        ring.push(vec![task_payload(1), task_payload(2)]);
        ring.push(vec![task_payload(3)]);
        assert_eq!(ring.start("e", None), Start::From(4), "new: live only");
        assert_eq!(ring.start("e", Some("e-1")), Start::From(2));
        assert_eq!(ring.start("e", Some("e-3")), Start::From(4));
        let batches = ring.since(2).expect("still buffered");
        let seqs: Vec<u64> = batches
            .iter()
            .flat_map(|b| b.frames.iter().map(|f| f.seq))
            .collect();
        assert_eq!(seqs, [1, 2, 3], "whole batches; the follower skips seq < 2");
        assert_eq!(ring.since(4).map(|b| b.len()), Some(0));
    }

    #[test]
    fn a_follower_that_fell_behind_or_comes_from_another_run_is_told_to_reload() {
        let mut ring = Ring::new(3);
        for id in 1..=5 {
            ring.push(vec![task_payload(id)]);
        }
        assert_eq!(ring.next_seq(), 6);
        assert!(ring.since(2).is_none(), "event 2 was dropped");
        assert!(ring.since(3).is_some());
        assert!(matches!(
            ring.start("e", Some("e-1")),
            Start::Reset { live: 6, .. }
        ));
        assert_eq!(ring.start("e", Some("e-2")), Start::From(3));
        for last in ["other-3", "e-9", "garbage", "e-x"] {
            assert!(
                matches!(ring.start("e", Some(last)), Start::Reset { live: 6, .. }),
                "{last}"
            );
        }
    }

    #[test]
    fn the_newest_batch_stays_even_beyond_the_capacity() {
        let mut ring = Ring::new(2);
        ring.push((1..=5).map(task_payload).collect());
        assert_eq!(ring.since(1).map(|b| b.len()), Some(1));
        ring.push(vec![task_payload(6)]);
        assert!(ring.since(5).is_none());
        assert_eq!(ring.since(6).map(|b| b.len()), Some(1));
    }

    #[test]
    fn filters_select_kinds_and_tasks() {
        let mut ring = Ring::new(10);
        ring.push(vec![
            task_payload(1),
            task_payload(2),
            other(StreamKind::Worker),
            other(StreamKind::Resources),
        ]);
        let batch = ring.since(1).expect("buffered");
        let picked = |pairs: &[(&str, &str)]| wanted(&batch[0].frames, pairs);
        assert_eq!(picked(&[]), [1, 2, 3, 4]);
        assert_eq!(picked(&[("task", "2")]), [2]);
        assert_eq!(
            picked(&[("task", "2,1"), ("kinds", "task,worker")]),
            [1, 2, 3]
        );
        assert_eq!(picked(&[("kinds", "resources, worker")]), [3, 4]);
        for bad in [
            [("kinds", "tasks")],
            [("kinds", ",")],
            [("task", "x")],
            [("task", "")],
        ] {
            assert!(Filter::from_query(&query(&bad)).is_err(), "{bad:?}");
        }
    }

    /// The numbers of the frames a follower with the filter `pairs` gets.
    fn wanted<'a>(frames: impl IntoIterator<Item = &'a Frame>, pairs: &[(&str, &str)]) -> Vec<u64> {
        let filter = Filter::from_query(&query(pairs)).expect("valid");
        frames
            .into_iter()
            .filter(|f| filter.wants(f))
            .map(|f| f.seq)
            .collect()
    }

    #[test]
    fn a_summarized_tick_goes_whole_to_task_followers_and_as_a_summary_to_the_others() {
        let mut ring = Ring::new(10);
        let summarized = |id: u64| {
            (
                StreamKind::Task,
                Payload::SummarizedTask(EventKind::Completed, TaskId(id), TaskStatus::Completed),
            )
        };
        ring.push(vec![
            (StreamKind::Task, Payload::Summary(json!({ "changed": 2 }))),
            summarized(1),
            summarized(2),
        ]);
        let batches = ring.since(1).expect("buffered");
        assert_eq!(batches.len(), 2, "the summarized changes apart");
        assert!(!batches[0].summarized && batches[1].summarized);
        let frames: Vec<&Frame> = batches.iter().flat_map(|b| b.frames.iter()).collect();
        let picked = |pairs: &[(&str, &str)]| wanted(frames.iter().copied(), pairs);
        assert_eq!(picked(&[]), [1], "the summary only");
        assert_eq!(picked(&[("task", "2")]), [3], "the task in full");
        assert_eq!(picked(&[("kinds", "worker")]), Vec::<u64>::new());
        let mut current = TaskRecord::new(TaskId(2), TaskSpec::new("noop", vec![]), 0);
        current.status = TaskStatus::Completed;
        let current = Arc::new(current);
        let records = |id: TaskId| (id == TaskId(2)).then(|| Arc::clone(&current));
        assert!(
            frames[0]
                .text("e", &records)
                .starts_with("id: e-1\nevent: tasks\n")
        );
        let text = frames[2].text("e", &records);
        assert!(text.contains("event: task\n"));
        assert!(
            text.contains(r#""task":"noop""#),
            "the current record: {text}"
        );
        let gone = frames[1].text("e", &records);
        assert!(
            gone.contains(r#""task":{"id":1,"status":"completed"}"#),
            "a task no longer known is told by id and status: {gone}"
        );
    }

    #[test]
    fn frames_are_one_sse_event_each_with_their_id_and_one_data_line() {
        let mut ring = Ring::new(10);
        let mut record = TaskRecord::new(TaskId(7), TaskSpec::new("noop", vec![]), 0);
        record.error = Some("two\nlines".into());
        ring.push(vec![(
            StreamKind::Task,
            Payload::Task(EventKind::Failed, Arc::new(record)),
        )]);
        let batch = ring.since(1).expect("buffered");
        let text = batch[0].frames[0].text("ab12", &|_| None);
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], "id: ab12-1");
        assert_eq!(lines[1], "event: task");
        let data: Value =
            serde_json::from_str(lines[2].trim_start_matches("data: ")).expect("JSON");
        assert_eq!(data["kind"], "failed");
        assert_eq!(data["task"]["id"], 7);
        assert_eq!(data["task"]["error"], "two\nlines");
        assert_eq!(&lines[3..], ["", ""], "a blank line ends the event");
    }
}
