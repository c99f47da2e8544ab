//! Follows one attempt's output log for the details: reads only new bytes,
//! by offset, on a reader thread of its own, so the UI thread never waits
//! on the disk or the network. Where the bytes come from is the backend's
//! [`LogReader`]: files on this machine ([`LocalFiles`]) in-process, the
//! server's log route when attached. No egui here.
//!
//! - A read asks for at most [`READ_BYTES`]; when the file holds more than
//!   [`MAX_BYTES`] beyond the offset (a long log opened, or a task that
//!   prints faster than the window reads), the read jumps to that far from
//!   the end and the tail says earlier output is not shown. A log of
//!   gigabytes costs what its last two megabytes cost.
//! - One read is in flight at a time; the next is asked at once while the
//!   file holds more, else [`POLL_EVERY`] later while the attempt may
//!   still write ([`MISSING_POLL_EVERY`] while it has no log), and never
//!   again once a finished attempt's end was read.
//! - The thread (`taskdeck-log-reader`) starts at the first read, wakes
//!   the window after each answer, and ends and is joined when the
//!   follower is dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::log_tail::{LogTail, MAX_BYTES};
use crate::model::TaskId;
use crate::scheduler::Waker;
use crate::tasks::logfile;

/// Most bytes one read takes (a few hundred microseconds of work for the
/// frame that takes them in).
pub const READ_BYTES: usize = 256 * 1024;
/// How often a log that may still grow is looked at again.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// How often a running attempt without a log (yet) is looked at again:
/// most tasks never write one.
pub const MISSING_POLL_EVERY: Duration = Duration::from_secs(1);

/// Which log to follow, and where it may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSource {
    /// The task.
    pub task: TaskId,
    /// Its attempt.
    pub attempt: u32,
    /// Paths to try, in order (the window's log directory, where the
    /// record says the log is).
    pub candidates: Vec<PathBuf>,
}

/// What the follower knows of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FileState {
    /// Not looked for yet.
    #[default]
    Unknown,
    /// Being read: where from and its size.
    Found {
        /// Where it is read from (a path, or the server's route), in words.
        origin: String,
        /// Its size at the last read, in bytes.
        size: u64,
    },
    /// None of the candidates exists (yet).
    Missing,
    /// It could not be read.
    Failed(String),
}

/// Reads parts of attempts' logs for the follower. It is called on the
/// follower's reader thread only, so it may wait on the disk or the
/// network; the window's thread never calls it.
pub trait LogReader: Send + Sync {
    /// The next part of `source`'s log: at most [`READ_BYTES`] from
    /// `offset`, or from [`MAX_BYTES`] before the end when `offset` is
    /// none or that far behind (see [`read_start`]).
    fn read(&self, source: &LogSource, offset: Option<u64>) -> ReadOutcome;
}

/// What one read of a log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// A part of it.
    Read {
        /// Where it was read from, in words.
        origin: String,
        /// The bytes, where they start and the log's size.
        part: logfile::LogPart,
        /// Whether output before the part was skipped.
        gap: bool,
    },
    /// There is no log (yet).
    Missing,
    /// It could not be read, in words.
    Failed(String),
}

/// Where a read of a log of `size` bytes starts when the follower is at
/// `offset`, and whether that skips output: at `offset` while it is at
/// most [`MAX_BYTES`] behind the end (and not past it: the log was
/// replaced), else that far before the end.
pub fn read_start(offset: Option<u64>, size: u64) -> (u64, bool) {
    let tail_start = size.saturating_sub(MAX_BYTES as u64);
    let start = match offset {
        Some(offset) if offset <= size && offset >= tail_start => offset,
        _ => tail_start,
    };
    let gap = offset.map_or(start > 0, |offset| offset != start);
    (start, gap)
}

/// Logs as files on this machine: the first of the source's candidates
/// that exists.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalFiles;

impl LogReader for LocalFiles {
    fn read(&self, source: &LogSource, offset: Option<u64>) -> ReadOutcome {
        read(&source.candidates, offset)
    }
}

struct Request {
    seq: u64,
    reader: Arc<dyn LogReader>,
    source: LogSource,
    offset: Option<u64>,
}

struct Reply {
    seq: u64,
    outcome: ReadOutcome,
}

/// The reader thread and its channels.
struct ReaderThread {
    requests: Option<Sender<Request>>,
    replies: Receiver<Reply>,
    handle: Option<JoinHandle<()>>,
}

impl ReaderThread {
    fn start(waker: Option<Waker>) -> std::io::Result<Self> {
        let (request_tx, request_rx) = crossbeam_channel::unbounded::<Request>();
        let (reply_tx, reply_rx) = crossbeam_channel::unbounded();
        let handle = std::thread::Builder::new()
            .name("taskdeck-log-reader".into())
            .spawn(move || {
                // Ends when the follower drops its sender.
                while let Ok(request) = request_rx.recv() {
                    let reply = Reply {
                        seq: request.seq,
                        outcome: request.reader.read(&request.source, request.offset),
                    };
                    if reply_tx.send(reply).is_err() {
                        break;
                    }
                    if let Some(waker) = &waker {
                        waker();
                    }
                }
            })?;
        Ok(Self {
            requests: Some(request_tx),
            replies: reply_rx,
            handle: Some(handle),
        })
    }
}

impl Drop for ReaderThread {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(handle) = self.handle.take()
            && handle.join().is_err()
        {
            tracing::warn!("the log reader thread panicked");
        }
    }
}

/// Reads the next part of the first candidate that exists: from `offset`,
/// or from [`MAX_BYTES`] before the end when `offset` is none or that far
/// behind (or past the end: the file was replaced).
fn read(candidates: &[PathBuf], offset: Option<u64>) -> ReadOutcome {
    let Some(path) = candidates.iter().find(|path| path.is_file()) else {
        return ReadOutcome::Missing;
    };
    let size = match std::fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(error) => return failed(path, &error),
    };
    let (start, gap) = read_start(offset, size);
    match logfile::read_log(path, start, READ_BYTES) {
        Ok(part) => ReadOutcome::Read {
            origin: path.display().to_string(),
            gap,
            part,
        },
        Err(error) => failed(path, &error),
    }
}

fn failed(path: &Path, error: &std::io::Error) -> ReadOutcome {
    ReadOutcome::Failed(format!("cannot read {}: {error}", path.display()))
}

/// Follows one log at a time into a bounded [`LogTail`].
#[derive(Default)]
pub struct LogFollower {
    thread: Option<ReaderThread>,
    /// Why the thread could not start, once.
    thread_error: Option<String>,
    source: Option<LogSource>,
    tail: LogTail,
    file: FileState,
    /// Where the next read starts; none: near the end.
    offset: Option<u64>,
    /// The read in flight, and whether the attempt could still write when
    /// it was asked.
    in_flight: Option<(u64, bool)>,
    seq: u64,
    next_at: Option<Instant>,
    /// The end of a finished attempt's log was read: nothing more comes.
    done: bool,
}

impl LogFollower {
    /// Follows `source` (none: nothing) through `reader`, whose attempt
    /// may still write when `live`: takes the answers that came, and asks
    /// for the next read when due. `waker` is given to the reader thread
    /// when it starts. Returns true when the tail or the file's state
    /// changed.
    pub fn poll(
        &mut self,
        source: Option<(&LogSource, &Arc<dyn LogReader>)>,
        live: bool,
        now: Instant,
        waker: Option<&Waker>,
    ) -> bool {
        let (source, reader) = source.unzip();
        let mut changed = false;
        if source != self.source.as_ref() {
            let same_log = match (source, &self.source) {
                (Some(new), Some(old)) => (new.task, new.attempt) == (old.task, old.attempt),
                _ => false,
            };
            if !same_log {
                // The thread and the numbering stay; an answer still in
                // flight is about the old log and will be ignored.
                *self = Self {
                    thread: self.thread.take(),
                    thread_error: self.thread_error.take(),
                    seq: self.seq,
                    ..Self::default()
                };
                changed = true;
            }
            self.source = source.cloned();
        }
        changed |= self.take_replies(now);
        let (Some(source), Some(reader)) = (&self.source, reader) else {
            return changed;
        };
        let due = self.next_at.is_none_or(|at| now >= at);
        if self.in_flight.is_some() || self.done || !due {
            return changed;
        }
        if self.thread.is_none() && self.thread_error.is_none() {
            match ReaderThread::start(waker.cloned()) {
                Ok(thread) => self.thread = Some(thread),
                Err(error) => {
                    self.thread_error = Some(format!("cannot start the log reader: {error}"));
                    return true;
                }
            }
        }
        let Some(requests) = self.thread.as_ref().and_then(|t| t.requests.as_ref()) else {
            return changed;
        };
        self.seq += 1;
        let request = Request {
            seq: self.seq,
            reader: Arc::clone(reader),
            source: source.clone(),
            offset: self.offset,
        };
        if requests.send(request).is_ok() {
            self.in_flight = Some((self.seq, live));
        }
        changed
    }

    fn take_replies(&mut self, now: Instant) -> bool {
        let Some(thread) = &self.thread else {
            return false;
        };
        let mut changed = false;
        while let Ok(Reply { seq, outcome }) = thread.replies.try_recv() {
            let Some((expected, live)) = self.in_flight else {
                continue;
            };
            if seq != expected {
                // An answer about a log no longer followed.
                continue;
            }
            self.in_flight = None;
            changed = true;
            let mut more = false;
            let mut wait = POLL_EVERY;
            match outcome {
                ReadOutcome::Read { origin, part, gap } => {
                    self.tail.push(&part.bytes, gap);
                    more = part.next_offset() < part.size;
                    self.offset = Some(part.next_offset());
                    self.file = FileState::Found {
                        origin,
                        size: part.size,
                    };
                }
                ReadOutcome::Missing => {
                    self.file = FileState::Missing;
                    wait = MISSING_POLL_EVERY;
                }
                ReadOutcome::Failed(error) => self.file = FileState::Failed(error),
            }
            self.done = !live && !more;
            self.next_at = Some(if more { now } else { now + wait });
        }
        changed
    }

    /// How long until the next read is due, while one will be.
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        if self.source.is_none() || self.done || self.in_flight.is_some() {
            return None;
        }
        Some(
            self.next_at
                .map_or(Duration::ZERO, |at| at.saturating_duration_since(now)),
        )
    }

    /// The tail read so far.
    pub fn tail(&self) -> &LogTail {
        &self.tail
    }

    /// The tail, for a new search.
    pub fn tail_mut(&mut self) -> &mut LogTail {
        &mut self.tail
    }

    /// What is known of the file.
    pub fn file(&self) -> &FileState {
        &self.file
    }

    /// Why logs cannot be read at all, when the reader could not start.
    pub fn thread_error(&self) -> Option<&str> {
        self.thread_error.as_deref()
    }

    /// Whether the whole of a finished attempt's log was read.
    pub fn done(&self) -> bool {
        self.done
    }

    /// The log followed.
    pub fn source(&self) -> Option<&LogSource> {
        self.source.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn source(path: &Path) -> LogSource {
        LogSource {
            task: TaskId(1),
            attempt: 1,
            candidates: vec![path.with_extension("absent"), path.to_owned()],
        }
    }

    /// Polls until `done` holds, as frames would.
    fn poll_until(
        follower: &mut LogFollower,
        source: &LogSource,
        live: bool,
        mut done: impl FnMut(&LogFollower) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(follower) {
            assert!(Instant::now() < deadline, "timed out");
            let reader: Arc<dyn LogReader> = Arc::new(LocalFiles);
            follower.poll(Some((source, &reader)), live, Instant::now(), None);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn lines(follower: &LogFollower) -> Vec<String> {
        let tail = follower.tail();
        (0..tail.shown_len(false))
            .filter_map(|i| tail.shown(i, false).map(str::to_owned))
            .collect()
    }

    #[test]
    fn new_output_is_read_by_offset_and_a_finished_log_is_read_to_its_end() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("task-1-attempt-1.log");
        let source = source(&path);
        let mut follower = LogFollower::default();
        poll_until(&mut follower, &source, true, |f| {
            *f.file() == FileState::Missing
        });
        let mut file = std::fs::File::create(&path).expect("create");
        file.write_all(b"one\ntw").expect("write");
        poll_until(&mut follower, &source, true, |f| lines(f) == ["one", "tw"]);
        file.write_all(b"o\nthree\n").expect("write");
        poll_until(&mut follower, &source, false, |f| f.done());
        assert_eq!(lines(&follower), ["one", "two", "three"]);
        assert!(!follower.tail().earlier_dropped());
        assert_eq!(
            follower.due_in(Instant::now()),
            None,
            "nothing more to read"
        );
    }

    #[test]
    fn a_long_log_is_read_from_near_its_end_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("task-1-attempt-1.log");
        let line = format!("{}\n", "z".repeat(99));
        let text = line.repeat(3 * MAX_BYTES / 100);
        std::fs::write(&path, format!("{text}last\n")).expect("write");
        let source = source(&path);
        let mut follower = LogFollower::default();
        poll_until(&mut follower, &source, false, |f| f.done());
        assert!(follower.tail().earlier_dropped());
        assert_eq!(lines(&follower).last().map(String::as_str), Some("last"));
        let shown = follower.tail().shown_len(false);
        assert!(shown * 100 <= MAX_BYTES + 100, "{shown} lines kept");
    }

    #[test]
    fn a_read_starts_at_the_offset_unless_it_is_far_behind_or_past_the_end() {
        let max = MAX_BYTES as u64;
        assert_eq!(
            read_start(None, 10),
            (0, false),
            "a short log from its start"
        );
        assert_eq!(
            read_start(None, 3 * max),
            (2 * max, true),
            "a long one near its end"
        );
        assert_eq!(read_start(Some(5), 10), (5, false));
        assert_eq!(read_start(Some(10), 10), (10, false), "at the end");
        assert_eq!(read_start(Some(20), 10), (0, true), "a replaced log");
        assert_eq!(read_start(Some(1), 3 * max), (2 * max, true), "far behind");
    }

    #[test]
    fn another_attempt_starts_a_fresh_tail() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = dir.path().join("task-1-attempt-1.log");
        let second = dir.path().join("task-1-attempt-2.log");
        std::fs::write(&first, "first\n").expect("write");
        std::fs::write(&second, "second\n").expect("write");
        let mut follower = LogFollower::default();
        let one = source(&first);
        poll_until(&mut follower, &one, false, |f| f.done());
        let two = LogSource {
            attempt: 2,
            ..source(&second)
        };
        poll_until(&mut follower, &two, false, |f| {
            f.done() && f.source().is_some_and(|s| s.attempt == 2)
        });
        assert_eq!(lines(&follower), ["second"]);
    }
}
