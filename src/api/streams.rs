//! Long-lived answers (the event stream, log follow) each on a small thread
//! of their own, never on a request thread, with a cap on how many run.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tiny_http::Request;

use super::error::ApiError;
use super::server::respond;

/// Stack of a streaming thread: it only copies bytes.
const STACK_BYTES: usize = 256 * 1024;

/// The streaming threads of one kind.
pub struct Streams {
    what: &'static str,
    max: usize,
    running: Arc<AtomicUsize>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Streams {
    /// At most `max` streams of `what` (a thread name and a word for
    /// errors, e.g. `events`) at once.
    pub fn new(what: &'static str, max: usize) -> Self {
        Self {
            what,
            max: max.max(1),
            running: Arc::new(AtomicUsize::new(0)),
            handles: Mutex::new(Vec::new()),
        }
    }

    /// Streams running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Runs `stream` with `request` on a thread of its own, or answers 503
    /// when `max` run already.
    pub fn spawn(&self, request: Request, stream: impl FnOnce(Request) + Send + 'static) {
        if self.running.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.running.fetch_sub(1, Ordering::AcqRel);
            return respond(
                request,
                Err(ApiError::unavailable(format!(
                    "{} {} streams are open already; try again later",
                    self.max, self.what
                ))),
            );
        }
        let running = Arc::clone(&self.running);
        let spawned = thread::Builder::new()
            .name(format!("taskdeck-{}", self.what))
            .stack_size(STACK_BYTES)
            .spawn(move || {
                stream(request);
                running.fetch_sub(1, Ordering::AcqRel);
            });
        match spawned {
            Ok(handle) => {
                let mut handles = self.handles.lock();
                handles.retain(|handle| !handle.is_finished());
                handles.push(handle);
            }
            Err(error) => {
                self.running.fetch_sub(1, Ordering::AcqRel);
                // The request went with the closure; its connection closes.
                tracing::warn!(%error, what = self.what, "cannot start a streaming thread");
            }
        }
    }

    /// Joins the threads that end within `wait` (they were told to stop);
    /// one still blocked writing to a client that stopped reading ends when
    /// the listener's send timeout fails its write, by itself.
    pub fn join(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut handles = std::mem::take(&mut *self.handles.lock());
        loop {
            let (done, running): (Vec<_>, Vec<_>) =
                handles.into_iter().partition(JoinHandle::is_finished);
            for handle in done {
                if handle.join().is_err() {
                    tracing::error!(what = self.what, "a streaming thread panicked");
                }
            }
            handles = running;
            if handles.is_empty() || Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        if !handles.is_empty() {
            tracing::warn!(
                count = handles.len(),
                what = self.what,
                "streams still writing to clients that stopped reading"
            );
        }
    }
}

/// A streamed answer's body in chunked transfer encoding: the client sees
/// where it ends, so the connection stays usable (tiny_http keeps reading
/// requests on it) and no end of stream depends on closing the socket.
pub struct Chunked<W: Write> {
    out: W,
    /// The chunk being written: its size line, its bytes and its end go out
    /// in one write (the socket's own buffer is small, so three writes would
    /// often be three packets and three wake-ups of the reader).
    chunk: Vec<u8>,
}

impl<W: Write> Chunked<W> {
    /// Writes `head` (the status line and headers, which must announce
    /// `Transfer-Encoding: chunked`) and starts the body.
    pub fn start(mut out: W, head: &str) -> io::Result<Self> {
        out.write_all(head.as_bytes())?;
        out.flush()?;
        Ok(Self {
            out,
            chunk: Vec::new(),
        })
    }

    /// Sends `bytes` as one chunk, at once.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.chunk.clear();
        write!(self.chunk, "{:x}\r\n", bytes.len())?;
        self.chunk.extend_from_slice(bytes);
        self.chunk.extend_from_slice(b"\r\n");
        self.out.write_all(&self.chunk)?;
        self.out.flush()
    }

    /// Ends the body.
    pub fn finish(mut self) -> io::Result<()> {
        self.out.write_all(b"0\r\n\r\n")?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::Chunked;

    #[test]
    fn chunks_carry_their_length_and_the_body_ends_with_an_empty_one() {
        let mut out = Vec::new();
        let mut body = Chunked::start(&mut out, "HEAD\r\n\r\n").expect("start");
        body.send(b"hello").expect("send");
        body.send(b"").expect("nothing to send");
        body.send(&[b'x'; 26]).expect("send");
        body.finish().expect("finish");
        let expected = format!(
            "HEAD\r\n\r\n5\r\nhello\r\n1a\r\n{}\r\n0\r\n\r\n",
            "x".repeat(26)
        );
        assert_eq!(String::from_utf8(out).expect("text"), expected);
    }

    /// Counts the writes it is given.
    #[derive(Default)]
    struct Writes(Vec<usize>);

    impl std::io::Write for Writes {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.push(bytes.len());
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_chunk_goes_out_in_one_write() {
        let mut out = Writes::default();
        let mut body = Chunked::start(&mut out, "HEAD\r\n\r\n").expect("start");
        body.send(&[b'x'; 5000]).expect("send");
        body.send(b"y").expect("send");
        drop(body);
        assert_eq!(out.0, [8, "1388\r\n".len() + 5000 + 2, 6]);
    }
}
