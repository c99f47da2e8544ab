//! The TLS front: accepts connections on the listener's public address,
//! completes each TLS handshake, and passes the plain bytes both ways
//! between the client and the request threads' Unix socket.
//!
//! Threads: `taskdeck-tls-accept` takes connections; each connection gets
//! a `taskdeck-tls` thread (at most [`MAX_CONNECTIONS`] at once) that waits
//! on both sockets with `poll` and moves what is ready. Memory per
//! connection is bounded: the client's bytes are read only while the
//! backend has taken the previous ones, and the backend's only while the
//! encrypted previous ones have gone out.
//!
//! Rules:
//! - a handshake must finish within [`HANDSHAKE_TIMEOUT`];
//! - a client that takes none of its answer for [`STALL_TIMEOUT`] is
//!   dropped (as a plain connection's write times out);
//! - plain HTTP sent to the TLS port gets a plain 400 that says to use
//!   `https://`, not a TLS alert the user cannot read;
//! - the Unix socket lives in a fresh directory only this account may
//!   open, removed when the front stops.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rustls::{ServerConfig, ServerConnection};

use super::ServerTls;

/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client that takes none of the answer waiting for it this long is
/// dropped.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a waiting thread looks at whether the front is stopping.
const TICK: Duration = Duration::from_millis(250);

/// Most TLS connections served at once; further ones are closed at once.
const MAX_CONNECTIONS: usize = 4096;

/// Bytes moved per read, and the most plain bytes held for the backend.
const BUFFER_BYTES: usize = 64 * 1024;

/// How long stopping waits for connection threads to end.
const STOP_WAIT: Duration = Duration::from_secs(1);

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The running front. Stop it with [`TlsFront::stop`] (also on drop).
pub(crate) struct TlsFront {
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    live: Arc<Live>,
    socket_dir: PathBuf,
    socket: PathBuf,
}

/// Connection threads still running.
#[derive(Default)]
struct Live {
    count: Mutex<usize>,
    ended: Condvar,
}

/// Decrements [`Live`] when a connection thread ends, however it ends.
struct LiveGuard(Arc<Live>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut count = self.0.count.lock();
        *count = count.saturating_sub(1);
        self.0.ended.notify_all();
    }
}

impl TlsFront {
    /// Serves TLS on `listener` (whose address clients use) and returns the
    /// Unix listener the request threads take the plain connections from.
    pub(crate) fn start(
        listener: TcpListener,
        tls: &ServerTls,
    ) -> io::Result<(Self, UnixListener)> {
        let socket_dir = private_socket_dir()?;
        let socket = socket_dir.join("http.sock");
        let backend = match UnixListener::bind(&socket) {
            Ok(backend) => backend,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&socket_dir);
                return Err(error);
            }
        };
        listener.set_nonblocking(true)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Live::default());
        let acceptor = {
            let config = tls.config();
            let stopping = Arc::clone(&stopping);
            let live = Arc::clone(&live);
            let socket = socket.clone();
            thread::Builder::new()
                .name("taskdeck-tls-accept".into())
                .spawn(move || accept_loop(&listener, &config, &socket, &stopping, &live))?
        };
        Ok((
            Self {
                stopping,
                acceptor: Some(acceptor),
                live,
                socket_dir,
                socket,
            },
            backend,
        ))
    }

    /// The Unix socket the plain connections come from.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops accepting, ends the connections (waiting up to [`STOP_WAIT`])
    /// and removes the socket.
    pub(crate) fn stop(&mut self) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(acceptor) = self.acceptor.take()
            && acceptor.join().is_err()
        {
            tracing::error!("the TLS accept thread panicked");
        }
        let deadline = Instant::now() + STOP_WAIT;
        let mut count = self.live.count.lock();
        while *count > 0 {
            if self.live.ended.wait_until(&mut count, deadline).timed_out() {
                tracing::warn!(
                    connections = *count,
                    "TLS connections still open at shutdown"
                );
                break;
            }
        }
        drop(count);
        if let Err(error) = std::fs::remove_dir_all(&self.socket_dir) {
            tracing::debug!(%error, dir = %self.socket_dir.display(), "cannot remove the TLS front's socket");
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Prefix of the socket directories; the process id follows.
const SOCKET_DIR_PREFIX: &str = "taskdeck-tls-";

/// Where the socket directories go: the temporary directory, or `/tmp`
/// when its path is too long for a Unix socket's address (macOS's is long).
fn socket_base() -> PathBuf {
    let base = std::env::temp_dir();
    if base.as_os_str().len() > 60 {
        PathBuf::from("/tmp")
    } else {
        base
    }
}

/// A new directory for the Unix socket that only this account may open:
/// the socket is the API without TLS. Directories that processes of this
/// account killed before they could remove theirs are removed first.
fn private_socket_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = socket_base();
    remove_orphans(&base);
    let mut last = None;
    for _ in 0..8 {
        let dir = base.join(format!(
            "{SOCKET_DIR_PREFIX}{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => last = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("cannot make a directory for the TLS front")))
}

/// Removes this account's socket directories whose process is gone.
fn remove_orphans(base: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(SOCKET_DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let ours = entry
            .metadata()
            .is_ok_and(|meta| meta.is_dir() && meta.uid() == me);
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if ours && gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    config: &Arc<ServerConfig>,
    backend: &Path,
    stopping: &Arc<AtomicBool>,
    live: &Arc<Live>,
) {
    while !stopping.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, peer)) => {
                {
                    let mut count = live.count.lock();
                    if *count >= MAX_CONNECTIONS {
                        tracing::debug!(%peer, "too many TLS connections; closing a new one");
                        continue;
                    }
                    *count += 1;
                }
                let guard = LiveGuard(Arc::clone(live));
                let config = Arc::clone(config);
                let backend = backend.to_owned();
                let stopping = Arc::clone(stopping);
                let spawned = thread::Builder::new()
                    .name("taskdeck-tls".into())
                    .spawn(move || {
                        let _guard = guard;
                        if let Err(error) = serve(stream, config, &backend, &stopping) {
                            tracing::debug!(%peer, %error, "TLS connection ended");
                        }
                    });
                if let Err(error) = spawned {
                    tracing::warn!(%error, "cannot start a thread for a TLS connection");
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                let mut fds = [pollfd(listener.as_raw_fd(), true, false)];
                if let Err(error) = wait(&mut fds, TICK) {
                    tracing::warn!(%error, "waiting for TLS connections failed");
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                // Out of descriptors, say: wait a tick instead of spinning.
                tracing::warn!(%error, "accepting a TLS connection failed");
                let mut fds = [pollfd(-1, false, false)];
                let _ = wait(&mut fds, TICK);
            }
        }
    }
}

/// One connection: the handshake, then bytes both ways until either side
/// is done.
fn serve(
    mut tcp: TcpStream,
    config: Arc<ServerConfig>,
    backend: &Path,
    stopping: &AtomicBool,
) -> io::Result<()> {
    // Some systems hand out accepted sockets non-blocking like their
    // listener: the handshake is blocking, with time limits.
    tcp.set_nonblocking(false)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    tcp.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut first = [0u8; 1];
    if tcp.peek(&mut first)? == 0 {
        return Ok(());
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        return answer_plain_http(&mut tcp);
    }
    let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    while conn.is_handshaking() {
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the TLS handshake took too long",
            ));
        }
        conn.complete_io(&mut tcp)?;
    }
    let plain = UnixStream::connect(backend)?;
    plain.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    Pump {
        conn,
        tcp,
        plain,
        to_backend: Vec::with_capacity(BUFFER_BYTES),
        client_done: false,
        backend_done: false,
        backend_shut: false,
        close_sent: false,
    }
    .run(stopping)
}

/// A plain HTTP request on the TLS port: answered in plain HTTP with what
/// to do, after reading its head (closing with unread bytes would reset
/// the connection before the answer arrives).
fn answer_plain_http(tcp: &mut TcpStream) -> io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while head.len() < BUFFER_BYTES && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(buffer.get(..n).unwrap_or_default()),
        }
    }
    let body = serde_json::json!({
        "error": {
            "code": "tls_required",
            "message": "this Taskdeck server speaks HTTPS only: use an https:// URL \
                        (with --ca-file or --tls-fingerprint for its certificate)",
        }
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(answer.as_bytes())?;
    tcp.shutdown(std::net::Shutdown::Write)
}

/// The state of one connection after its handshake.
struct Pump {
    conn: ServerConnection,
    tcp: TcpStream,
    plain: UnixStream,
    /// Plain bytes from the client the backend has not taken yet.
    to_backend: Vec<u8>,
    /// The client sends nothing more.
    client_done: bool,
    /// The backend sends nothing more.
    backend_done: bool,
    /// The backend was told the client sends nothing more.
    backend_shut: bool,
    /// The client was told the session ends.
    close_sent: bool,
}

impl Pump {
    fn run(mut self, stopping: &AtomicBool) -> io::Result<()> {
        let mut buffer = vec![0u8; BUFFER_BYTES];
        let mut last_sent = Instant::now();
        loop {
            self.client_to_backend(&mut buffer)?;
            self.backend_to_client(&mut buffer)?;
            let sent = self.flush_to_client()?;
            if self.close_sent && !self.conn.wants_write() {
                return Ok(());
            }
            let waiting_to_send = self.conn.wants_write();
            if sent || !waiting_to_send {
                last_sent = Instant::now();
            } else if last_sent.elapsed() >= STALL_TIMEOUT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client took none of its answer",
                ));
            }
            let read_client =
                !self.client_done && self.conn.wants_read() && self.to_backend.len() < BUFFER_BYTES;
            let read_backend = !self.backend_done && !waiting_to_send;
            let mut fds = [
                pollfd(self.tcp.as_raw_fd(), read_client, waiting_to_send),
                pollfd(
                    self.plain.as_raw_fd(),
                    read_backend,
                    !self.to_backend.is_empty(),
                ),
            ];
            wait(&mut fds, TICK)?;
            if stopping.load(Ordering::Acquire) {
                return Ok(());
            }
            if read_client && fds[0].revents != 0 {
                self.read_client()?;
            }
        }
    }

    /// Takes the client's encrypted bytes into the session.
    fn read_client(&mut self) -> io::Result<()> {
        match self.conn.read_tls(&mut self.tcp) {
            // End of the client's stream: the session's reader says the
            // rest (whatever plain bytes are left, then the end).
            Ok(_) => {}
            Err(error) if is_transient(&error) => return Ok(()),
            Err(error) => return Err(error),
        }
        if let Err(error) = self.conn.process_new_packets() {
            // Tell the client why (the alert is queued), then give up.
            let _ = self.conn.write_tls(&mut self.tcp);
            return Err(io::Error::new(io::ErrorKind::InvalidData, error));
        }
        Ok(())
    }

    /// Moves the client's plain bytes to the backend, and tells the backend
    /// when the client is done.
    fn client_to_backend(&mut self, buffer: &mut [u8]) -> io::Result<()> {
        while !self.client_done && self.to_backend.len() < BUFFER_BYTES {
            match self.conn.reader().read(buffer) {
                Ok(0) => self.client_done = true,
                Ok(n) => self
                    .to_backend
                    .extend_from_slice(buffer.get(..n).unwrap_or_default()),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                // The client closed without ending the session cleanly:
                // what it sent still counts.
                Err(_) => self.client_done = true,
            }
        }
        while !self.to_backend.is_empty() {
            match self.plain.write(&self.to_backend) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.to_backend.drain(..n);
                }
                Err(error) if is_transient(&error) => break,
                Err(error) => return Err(error),
            }
        }
        if self.client_done && self.to_backend.is_empty() && !self.backend_shut {
            self.backend_shut = true;
            // Answers to what was asked still come back.
            let _ = self.plain.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }

    /// Takes the backend's answer into the session once the previous one
    /// has gone out; ends the session when the backend is done.
    fn backend_to_client(&mut self, buffer: &mut [u8]) -> io::Result<()> {
        if !self.backend_done && !self.conn.wants_write() {
            match self.plain.read(buffer) {
                Ok(0) => self.backend_done = true,
                Ok(n) => self
                    .conn
                    .writer()
                    .write_all(buffer.get(..n).unwrap_or_default())?,
                Err(error) if is_transient(&error) => {}
                Err(error) => {
                    tracing::debug!(%error, "the API side of a TLS connection broke");
                    self.backend_done = true;
                }
            }
        }
        if self.backend_done && !self.close_sent {
            self.close_sent = true;
            self.conn.send_close_notify();
        }
        Ok(())
    }

    /// Writes what the session has for the client; says whether anything went.
    fn flush_to_client(&mut self) -> io::Result<bool> {
        let mut sent = false;
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(n) => sent |= n > 0,
                Err(error) if is_transient(&error) => break,
                Err(error) => return Err(error),
            }
        }
        Ok(sent)
    }
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// A `poll` entry; a descriptor with nothing to wait for is left out.
fn pollfd(fd: i32, read: bool, write: bool) -> libc::pollfd {
    let mut events = 0;
    if read {
        events |= libc::POLLIN;
    }
    if write {
        events |= libc::POLLOUT;
    }
    libc::pollfd {
        fd: if events == 0 { -1 } else { fd },
        events,
        revents: 0,
    }
}

/// Waits until one of `fds` is ready or `timeout` passes.
fn wait(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<()> {
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let count = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `fds` is a valid, exclusively borrowed slice of `count`
    // pollfd entries for the duration of the call.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), count, timeout_ms) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_directories_of_processes_that_are_gone_are_removed() {
        let base = tempfile::tempdir().expect("temp dir");
        let mut exited = std::process::Command::new("true").spawn().expect("spawn");
        let dead_pid = exited.id();
        exited.wait().expect("wait");
        let dead = base
            .path()
            .join(format!("{SOCKET_DIR_PREFIX}{dead_pid}-0123456789abcdef"));
        let alive = base.path().join(format!(
            "{SOCKET_DIR_PREFIX}{}-0123456789abcdef",
            std::process::id()
        ));
        let other = base.path().join("unrelated-dir");
        for dir in [&dead, &alive, &other] {
            std::fs::create_dir(dir).expect("dir");
        }
        remove_orphans(base.path());
        assert!(!dead.exists(), "the dead process's directory is removed");
        assert!(alive.exists(), "a running process's directory stays");
        assert!(other.exists(), "other directories are left alone");
    }
}
