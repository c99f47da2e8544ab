//! A blocking reader of the server's event stream (`GET /api/v1/events`,
//! `text/event-stream`): it parses frames as they arrive and remembers the
//! last event id, so a caller that reconnects after an error resumes where
//! it left off (`Last-Event-ID`) and gets what it missed from the server's
//! buffer, or a `reset` event when that is no longer possible.
//!
//! The parser ([`FrameParser`]) is pure: it takes bytes in any pieces and
//! gives whole frames, following the Server-Sent Events rules the server
//! uses (`id:`, `event:`, `data:` lines, comments, a blank line ends a
//! frame).

use std::io::Read;
use std::time::Duration;

use super::{Client, ClientError};

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    /// The event's id (`EPOCH-SEQ`), when it had one.
    pub id: Option<String>,
    /// Its type: `task`, `tasks`, `worker`, `queue`, `resources`, `reset`
    /// (`message` when the frame named none).
    pub kind: String,
    /// Its data lines, joined by newlines (JSON for this server).
    pub data: String,
}

/// Turns bytes into frames; keeps a partial line or frame between pieces.
#[derive(Debug, Default)]
pub struct FrameParser {
    line: Vec<u8>,
    id: Option<String>,
    kind: Option<String>,
    data: Vec<String>,
}

impl FrameParser {
    /// Takes the next piece of the stream; returns the frames it completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        for &byte in bytes {
            if byte != b'\n' {
                self.line.push(byte);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(event) = self.take_line(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
        }
        events
    }

    /// One whole line: a field, a comment, or the blank line that ends a
    /// frame (then the frame, when it had data).
    fn take_line(&mut self, line: &str) -> Option<StreamEvent> {
        if line.is_empty() {
            let kind = self.kind.take();
            if self.data.is_empty() {
                return None;
            }
            let data = std::mem::take(&mut self.data).join("\n");
            return Some(StreamEvent {
                id: self.id.clone(),
                kind: kind.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => self.id = Some(value.to_owned()),
            "event" => self.kind = Some(value.to_owned()),
            "data" => self.data.push(value.to_owned()),
            _ => {}
        }
        None
    }

    /// The id of the last frame seen (sent as `Last-Event-ID` to resume).
    pub fn last_id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// An open event stream.
pub struct EventStream {
    reader: Box<dyn Read + Send>,
    parser: FrameParser,
    ready: std::collections::VecDeque<StreamEvent>,
    base: String,
}

impl EventStream {
    /// The next event; blocks until one comes. An error or `Ok(None)` (the
    /// server ended the stream) means: reconnect with [`EventStream::last_id`].
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, ClientError> {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            let n = self
                .reader
                .read(&mut buffer)
                .map_err(|error| ClientError::Connect {
                    url: self.base.clone(),
                    detail: error.to_string(),
                })?;
            if n == 0 {
                return Ok(None);
            }
            let events = self.parser.push(buffer.get(..n).unwrap_or_default());
            self.ready.extend(events);
        }
    }

    /// The id of the last event read, to resume from.
    pub fn last_id(&self) -> Option<&str> {
        self.parser.last_id()
    }
}

impl Client {
    /// Opens the event stream (`query` without the `?`, e.g. `kinds=task`),
    /// resuming after `last_id` when given. The stream has no overall time
    /// limit; a server that goes away ends it with an error or its end.
    pub fn events(&self, query: &str, last_id: Option<&str>) -> Result<EventStream, ClientError> {
        let agent = self.agent(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(10)))
                .timeout_recv_response(Some(Duration::from_secs(10)))
                .timeout_per_call(None)
                .build(),
        );
        let mut path = "/api/v1/events".to_owned();
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        let url = format!("{}{path}", self.base);
        let (response, status) = self.authorized(|| {
            let mut request = self.authorize(agent.get(&url));
            if let Some(id) = last_id {
                request = request.header("Last-Event-ID", id);
            }
            request.call().map_err(|e| self.connect_error(&e))
        })?;
        if !(200..300).contains(&status) {
            return Err(ClientError::Server {
                status,
                code: "unknown".to_owned(),
                message: format!("the event stream was refused ({status})"),
            });
        }
        let reader = response.into_body().into_reader();
        let parser = FrameParser {
            id: last_id.map(str::to_owned),
            ..FrameParser::default()
        };
        Ok(EventStream {
            reader: Box::new(reader),
            parser,
            ready: std::collections::VecDeque::new(),
            base: self.base.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn frames_parse_across_pieces_with_comments_and_ids() {
        let mut parser = FrameParser::default();
        let text = ": hello\n\nid: 1-1\nevent: task\ndata: {\"a\":\r\ndata: 1}\n\nid: 1-2\nev";
        let (first, second) = text.split_at(20);
        let mut events = parser.push(first.as_bytes());
        events.extend(parser.push(second.as_bytes()));
        assert_eq!(
            events,
            [StreamEvent {
                id: Some("1-1".into()),
                kind: "task".into(),
                data: "{\"a\":\n1}".into()
            }]
        );
        let events = parser.push(b"ent: reset\ndata: {}\n\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "reset");
        assert_eq!(parser.last_id(), Some("1-2"));
    }

    /// A server on a real socket that answers two connections: the first
    /// sends two events and closes, the second checks the resume header.
    #[test]
    fn a_stream_reads_over_a_socket_and_resumes_after_the_last_id() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let server = std::thread::spawn(move || {
            let mut resumed_from = None;
            for round in 0..2 {
                let (stream, _) = listener.accept().expect("accept");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                while reader.read_line(&mut line).expect("read") > 2 {
                    if let Some(id) = line.to_ascii_lowercase().strip_prefix("last-event-id:") {
                        resumed_from = Some(id.trim().to_owned());
                    }
                    line.clear();
                }
                let body = if round == 0 {
                    "id: 7-1\nevent: task\ndata: {\"n\":1}\n\n: tick\n\nid: 7-2\nevent: queue\ndata: {\"n\":2}\n\n"
                } else {
                    "id: 7-3\nevent: task\ndata: {\"n\":3}\n\n"
                };
                let mut stream = stream;
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .expect("write");
            }
            resumed_from
        });
        let client = Client::new(&url, Some("token"), Duration::from_secs(5));
        let mut stream = client.events("", None).expect("open");
        let first = stream.next_event().expect("read").expect("an event");
        assert_eq!(
            (first.kind.as_str(), first.data.as_str()),
            ("task", "{\"n\":1}")
        );
        let second = stream.next_event().expect("read").expect("an event");
        assert_eq!(second.id.as_deref(), Some("7-2"));
        assert_eq!(stream.next_event().expect("the end"), None);
        let last = stream.last_id().map(str::to_owned);
        let mut stream = client
            .events("kinds=task", last.as_deref())
            .expect("reopen");
        let third = stream.next_event().expect("read").expect("an event");
        assert_eq!(third.id.as_deref(), Some("7-3"));
        assert_eq!(server.join().expect("server").as_deref(), Some("7-2"));
    }
}
