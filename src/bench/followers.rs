//! Event stream followers for `taskdeck bench --http --followers N`: each
//! holds a connection to `/api/v1/events` and reads everything it is sent,
//! as dashboards do, while the benchmark's clients submit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::BenchError;

/// How long a follower's read waits before it looks at the stop flag.
const READ_WAIT: Duration = Duration::from_millis(200);

/// Connected followers, reading on threads of their own.
pub struct Followers {
    stop: Arc<AtomicBool>,
    readers: Vec<JoinHandle<u64>>,
}

impl Followers {
    /// Connects `count` followers to the server at `url` and waits until
    /// each has the stream's head (so each is registered).
    pub fn start(url: &str, token: Option<&str>, count: usize) -> Result<Self, BenchError> {
        let host = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let addr = host
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| BenchError::Stuck(format!("cannot resolve {host}")))?;
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let stop = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::with_capacity(count);
        for n in 0..count {
            let stuck = |e: std::io::Error| BenchError::Stuck(format!("follower {n}: {e}"));
            let mut socket = TcpStream::connect(addr).map_err(stuck)?;
            write!(
                socket,
                "GET /api/v1/events HTTP/1.1\r\nHost: {host}\r\n{auth}Accept: text/event-stream\r\n\r\n"
            )
            .map_err(stuck)?;
            let mut reader = BufReader::new(socket);
            let mut status = String::new();
            reader.read_line(&mut status).map_err(stuck)?;
            if !status.starts_with("HTTP/1.1 200") {
                return Err(BenchError::Stuck(format!(
                    "follower {n} was refused: {status}"
                )));
            }
            reader
                .get_ref()
                .set_read_timeout(Some(READ_WAIT))
                .map_err(stuck)?;
            let stop = Arc::clone(&stop);
            let handle = thread::Builder::new()
                .name(format!("bench-follower-{n}"))
                .stack_size(64 * 1024)
                .spawn(move || read_until(&mut reader, &stop))
                .map_err(stuck)?;
            readers.push(handle);
        }
        Ok(Self { stop, readers })
    }

    /// Stops every follower; the bytes they received in all.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.readers
            .into_iter()
            .map(|reader| reader.join().unwrap_or(0))
            .sum()
    }
}

/// Reads and drops what arrives until `stop`; the bytes read.
fn read_until(reader: &mut impl Read, stop: &AtomicBool) -> u64 {
    let mut buffer = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    while !stop.load(Ordering::Acquire) {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    total
}
