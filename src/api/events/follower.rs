//! One follower's thread: writes the stream's head, the events it missed
//! (when it resumes), then new events as they come, until the client goes
//! away or the server stops.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tiny_http::Request;

use super::Shared;
use super::ring::{Batch, Filter, Start, event_id, sse};
use crate::api::streams::Chunked;

/// A comment line goes out after this long without events, so a client or
/// proxy can tell a quiet stream from a dead one, and a closed connection is
/// noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Least time between two writes of events to one follower.
const WRITE_GAP: Duration = Duration::from_millis(100);

/// Least time between two writes to a follower without a task filter while
/// task changes come in bursts (it gets summaries): a busy scheduler's
/// followers cost it four wake-ups a second each, which is as often as a
/// table of thousands of changing tasks can be read anyway.
const BUSY_WRITE_GAP: Duration = Duration::from_millis(250);

/// How long a client waits before reconnecting (the SSE `retry` field).
const RETRY_MS: u32 = 1000;

/// The stream's head. `Connection: close`: a stream ends with its
/// connection, so a browser that leaves the page closes the socket at once;
/// otherwise Chromium keeps reading a left stream to reuse its connection
/// (about a minute), and after five reloads its six connections to the
/// server are all taken.
const HEAD: &str = "HTTP/1.1 200 OK\r\n\
    Content-Type: text/event-stream; charset=utf-8\r\n\
    Cache-Control: no-cache\r\n\
    X-Accel-Buffering: no\r\n\
    Connection: close\r\n\
    Transfer-Encoding: chunked\r\n\r\n";

/// What the thread does next.
enum Next {
    /// Write these batches, skipping frames before `from`.
    Send { batches: Vec<Arc<Batch>>, from: u64 },
    /// Tell the client to reload and go on live from here.
    Reset { reason: &'static str, live: u64 },
    /// Nothing new for a while.
    KeepAlive,
    /// The server stops.
    Close,
}

/// Streams to `request` from `start` until the client or the server goes
/// away.
pub(super) fn run(shared: &Shared, request: Request, filter: &Filter, start: Start) {
    let Ok(mut out) = Chunked::start(request.into_writer(), HEAD) else {
        return;
    };
    if out
        .send(format!("retry: {RETRY_MS}\n\n").as_bytes())
        .is_err()
    {
        return;
    }
    let mut cursor = match start {
        Start::From(seq) => seq,
        Start::Reset { reason, live } => {
            if reset(shared, &mut out, reason, live).is_err() {
                return;
            }
            live
        }
    };
    let mut buffer = Vec::new();
    loop {
        let next = {
            let mut state = shared.state.lock();
            loop {
                if state.closed {
                    break Next::Close;
                }
                if state.ring.next_seq() > cursor {
                    break match state.ring.since(cursor) {
                        Some(batches) => Next::Send {
                            batches,
                            from: cursor,
                        },
                        None => Next::Reset {
                            reason: "this client fell behind the buffered events",
                            live: state.ring.next_seq(),
                        },
                    };
                }
                if shared.changed.wait_for(&mut state, KEEP_ALIVE).timed_out() {
                    break Next::KeepAlive;
                }
            }
        };
        let mut gap = None;
        let written = match next {
            Next::Close => {
                let _ = out.finish();
                return;
            }
            Next::KeepAlive => out.send(b": keep-alive\n\n"),
            Next::Reset { reason, live } => {
                cursor = live;
                reset(shared, &mut out, reason, live)
            }
            Next::Send { batches, from } => {
                buffer.clear();
                let mut summaries = false;
                for batch in &batches {
                    cursor = cursor.max(batch.end_seq());
                    if batch.summarized && !filter.follows_tasks() {
                        summaries = true;
                        continue;
                    }
                    for frame in &batch.frames {
                        if frame.seq >= from && filter.wants(frame) {
                            let records = |id| shared.scheduler.task_shared(id);
                            buffer
                                .extend_from_slice(frame.text(&shared.epoch, &records).as_bytes());
                        }
                    }
                }
                if !buffer.is_empty() {
                    gap = Some(if summaries { BUSY_WRITE_GAP } else { WRITE_GAP });
                }
                out.send(&buffer)
            }
        };
        if written.is_err() {
            return;
        }
        if let Some(gap) = gap {
            // What comes meanwhile goes in the next write: a follower wakes
            // at most ten times a second, four while the scheduler is busy.
            std::thread::sleep(gap);
        }
    }
}

/// Sends a `reset`: the client missed events and should reload its state
/// from the REST routes. Its id is the last event before `live`, so a
/// reconnect resumes after it.
fn reset(
    shared: &Shared,
    out: &mut Chunked<impl Write>,
    reason: &str,
    live: u64,
) -> std::io::Result<()> {
    let id = event_id(&shared.epoch, live.saturating_sub(1));
    out.send(sse(&id, "reset", &json!({ "reason": reason })).as_bytes())
}
