//! A minimal HTTP/1.1 keep-alive connection for the load generator: it
//! writes prepared requests and reads answers with a Content-Length, and
//! nothing else. A general client (ureq) spends more CPU per request than
//! the server does, which on a small machine would measure the client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};

/// One kept-alive connection to the server.
pub struct Wire {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
    auth: String,
    buffer: Vec<u8>,
}

/// An error of the load generator's connection.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not HTTP as this connection understands it.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl Wire {
    /// Connects to `url` (`http://host:port`).
    pub fn connect(url: &str, token: Option<&str>) -> Result<Self, WireError> {
        let host = url
            .strip_prefix("http://")
            .ok_or_else(|| {
                WireError::Protocol(format!("only http:// URLs are supported, got {url}"))
            })?
            .trim_end_matches('/')
            .to_owned();
        let addr: SocketAddr = host
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| WireError::Protocol(format!("{host} resolves to no address")))?;
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::with_capacity(64 * 1024, stream.try_clone()?),
            writer: stream,
            host,
            auth: token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n")),
            buffer: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends one request and returns the status and body of its answer.
    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), WireError> {
        self.buffer.clear();
        write!(
            self.buffer,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            self.auth,
            body.len()
        )?;
        self.buffer.extend_from_slice(body);
        self.writer.write_all(&self.buffer)?;

        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| WireError::Protocol(format!("status line {line:?}")))?;
        let mut length = None;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(WireError::Protocol(
                    "connection closed in the headers".into(),
                ));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse::<usize>().ok();
            }
        }
        let length =
            length.ok_or_else(|| WireError::Protocol("answer without Content-Length".into()))?;
        let mut answer = vec![0; length];
        self.reader.read_exact(&mut answer)?;
        Ok((status, answer))
    }
}
