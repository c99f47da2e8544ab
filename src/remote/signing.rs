//! Signed broker messages: every message Taskdeck publishes carries an
//! HMAC-SHA256 of its body under the shared [`BrokerKey`], hex, in the
//! [`SIGNATURE_HEADER`] header; receivers check it (in constant time)
//! before decoding anything, and refuse a message without it or with a
//! wrong one: acknowledged and dropped, counted, and logged at most once a
//! minute per sender.
//!
//! Holding the broker account is then not enough to make a worker run a
//! command or the scheduler take a forged result: that needs the key. The
//! body alone is signed (RabbitMQ keeps headers when it dead-letters a
//! worker's presence token, so that token stays verifiable); what a replay
//! of a signed message can do is in docs/ARCHITECTURE.md.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};

use super::key::BrokerKey;

/// The header carrying a message's signature.
pub const SIGNATURE_HEADER: &str = "x-taskdeck-signature";

/// How often a sender's refused messages are logged, at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Senders remembered for the log's rate limit; refusals from further
/// senders within a minute share one line (a sender's name is whatever
/// the message claims, so a flood may claim many).
const MAX_SENDERS: usize = 64;

/// The sender name refusals beyond [`MAX_SENDERS`] are logged under.
const OTHER_SENDERS: &str = "(other senders)";

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It has no signature.
    #[error("it is not signed")]
    Unsigned,
    /// Its signature is not a hex HMAC-SHA256.
    #[error("its signature is malformed")]
    Malformed,
    /// Its signature does not match: another key signed it, or its body
    /// was changed.
    #[error("its signature does not match (signed with another key, or changed)")]
    Mismatch,
}

/// Signs what one process publishes.
#[derive(Debug, Clone)]
pub struct Signer {
    key: BrokerKey,
    sender: String,
}

impl Signer {
    /// Signs with `key`; `sender` names this process in the messages'
    /// `app_id` (for the receiver's log only: it is not signed).
    pub fn new(key: BrokerKey, sender: &str) -> Self {
        Self {
            key,
            sender: sender.to_owned(),
        }
    }

    /// `properties` with the signature of `body` and the sender's name.
    pub fn sign(&self, properties: BasicProperties, body: &[u8]) -> BasicProperties {
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(
            SIGNATURE_HEADER.into(),
            AMQPValue::LongString(sign(&self.key, body).into()),
        );
        properties
            .with_headers(headers)
            .with_app_id(self.sender.as_str().into())
    }

    /// The key.
    pub fn key(&self) -> &BrokerKey {
        &self.key
    }
}

/// The signature of `body` under `key`, as hex.
pub fn sign(key: &BrokerKey, body: &[u8]) -> String {
    hex(ring::hmac::sign(key.hmac(), body).as_ref())
}

/// Checks that `headers` carry a signature of `body` under `key`.
pub fn verify(key: &BrokerKey, headers: Option<&FieldTable>, body: &[u8]) -> Result<(), Refusal> {
    let value = headers
        .and_then(|headers| headers.inner().get(SIGNATURE_HEADER))
        .ok_or(Refusal::Unsigned)?;
    let AMQPValue::LongString(text) = value else {
        return Err(Refusal::Malformed);
    };
    let tag = unhex(text.as_bytes()).ok_or(Refusal::Malformed)?;
    ring::hmac::verify(key.hmac(), body, &tag).map_err(|_| Refusal::Mismatch)
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

/// Hex (either case) as bytes; none when it is not hex.
fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Checks what a consumer receives: admits signed messages, and counts and
/// logs (rate-limited) the ones it refuses.
#[derive(Debug)]
pub struct Gate {
    key: BrokerKey,
    log: RefusalLog,
    refused: u64,
}

impl Gate {
    /// Checks against `key`.
    pub fn new(key: BrokerKey) -> Self {
        Self {
            key,
            log: RefusalLog::default(),
            refused: 0,
        }
    }

    /// Checks `delivery`: admitted when signed with the key; otherwise
    /// counted, and refused with what to log. The caller acknowledges a
    /// refused delivery with the others and never decodes it.
    pub fn check(&mut self, delivery: &Delivery) -> Result<(), Refused> {
        let properties = &delivery.properties;
        let reason = match verify(&self.key, properties.headers().as_ref(), &delivery.data) {
            Ok(()) => return Ok(()),
            Err(reason) => reason,
        };
        self.refused += 1;
        let sender = properties
            .app_id()
            .as_ref()
            .map_or_else(|| "(unnamed)".to_owned(), |id| shown_sender(id.as_str()));
        let log = self.log.note(&sender, Instant::now());
        Err(Refused {
            reason,
            sender,
            log,
        })
    }

    /// Messages refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

/// A message refused by a [`Gate`].
#[derive(Debug)]
pub struct Refused {
    reason: Refusal,
    /// The sender the message claims (its `app_id`, not signed).
    sender: String,
    /// Set when this refusal is to be logged: how many of the sender's
    /// went unlogged since its last line.
    log: Option<u64>,
}

impl Refused {
    /// Logs the refusal of a message taken from `queue`, when it is its
    /// sender's first in a minute.
    pub fn log(&self, queue: &str) {
        let Some(unlogged) = self.log else {
            return;
        };
        tracing::warn!(
            queue,
            sender = %self.sender,
            reason = %self.reason,
            refused_since_last_line = unlogged,
            "refused a broker message unread, as {}: someone with the broker account but not \
             the key sent it, or a Taskdeck process uses another broker key or is of an older \
             version, which signs nothing",
            self.reason
        );
    }
}

/// A claimed sender name, shortened and stripped of control characters
/// for the log.
fn shown_sender(claimed: &str) -> String {
    claimed
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect()
}

/// When to log a sender's refused messages: at most once a minute per
/// sender, for at most [`MAX_SENDERS`] senders a minute (the rest share
/// [`OTHER_SENDERS`]).
#[derive(Debug, Default)]
struct RefusalLog {
    senders: HashMap<String, Logged>,
}

#[derive(Debug)]
struct Logged {
    at: Instant,
    /// Refusals since that line.
    unlogged: u64,
}

impl RefusalLog {
    /// Notes a refusal from `sender` at `now`; returns, when it is to be
    /// logged, how many of the sender's refusals went unlogged before it.
    fn note(&mut self, sender: &str, now: Instant) -> Option<u64> {
        let mut sender = sender;
        if !self.senders.contains_key(sender) && self.senders.len() >= MAX_SENDERS {
            self.senders
                .retain(|_, logged| now.saturating_duration_since(logged.at) < LOG_EVERY);
            if self.senders.len() >= MAX_SENDERS {
                sender = OTHER_SENDERS;
            }
        }
        match self.senders.get_mut(sender) {
            None => {
                self.senders.insert(
                    sender.to_owned(),
                    Logged {
                        at: now,
                        unlogged: 0,
                    },
                );
                Some(0)
            }
            Some(logged) if now.saturating_duration_since(logged.at) >= LOG_EVERY => {
                logged.at = now;
                Some(std::mem::take(&mut logged.unlogged))
            }
            Some(logged) => {
                logged.unlogged += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::key::KeyOrigin;

    fn key(text: &str) -> BrokerKey {
        BrokerKey::from_secret(text.as_bytes(), KeyOrigin::Environment).expect("a long key")
    }

    fn signed(signer: &Signer, body: &[u8]) -> Option<FieldTable> {
        signer
            .sign(BasicProperties::default(), body)
            .headers()
            .clone()
    }

    #[test]
    fn a_signed_body_verifies_under_its_key_only() {
        let signer = Signer::new(key("the scheduler's key, 32 bytes.."), "scheduler");
        let body = br#"{"type":"run","task":1}"#;
        let headers = signed(&signer, body);
        assert_eq!(verify(signer.key(), headers.as_ref(), body), Ok(()));
        // Another key.
        let other = key("another key of enough length....");
        assert_eq!(
            verify(&other, headers.as_ref(), body),
            Err(Refusal::Mismatch)
        );
        // A changed body.
        let tampered = br#"{"type":"run","task":2}"#;
        assert_eq!(
            verify(signer.key(), headers.as_ref(), tampered),
            Err(Refusal::Mismatch)
        );
        // No header, or no headers at all.
        assert_eq!(
            verify(signer.key(), Some(&FieldTable::default()), body),
            Err(Refusal::Unsigned)
        );
        assert_eq!(verify(signer.key(), None, body), Err(Refusal::Unsigned));
        // A header that is not a hex signature.
        for bad in [
            AMQPValue::LongString("not hex".into()),
            AMQPValue::LongString("abc".into()),
            AMQPValue::Boolean(true),
        ] {
            let mut headers = FieldTable::default();
            headers.insert(SIGNATURE_HEADER.into(), bad);
            assert_eq!(
                verify(signer.key(), Some(&headers), body),
                Err(Refusal::Malformed)
            );
        }
        // A truncated signature is hex but does not match.
        let mut short = FieldTable::default();
        short.insert(
            SIGNATURE_HEADER.into(),
            AMQPValue::LongString(sign(signer.key(), body)[..32].to_owned().into()),
        );
        assert_eq!(
            verify(signer.key(), Some(&short), body),
            Err(Refusal::Mismatch)
        );
    }

    #[test]
    fn signing_keeps_other_headers_and_names_the_sender() {
        let signer = Signer::new(key("0123456789abcdef0123"), "gpu-box-1");
        let mut headers = FieldTable::default();
        headers.insert("x-other".into(), AMQPValue::Boolean(true));
        let properties = signer.sign(BasicProperties::default().with_headers(headers), b"x");
        let headers = properties.headers().clone().expect("headers");
        assert!(headers.contains_key("x-other"));
        assert!(headers.contains_key(SIGNATURE_HEADER));
        assert_eq!(
            properties.app_id().as_ref().map(|id| id.as_str()),
            Some("gpu-box-1")
        );
        // RFC 4231's first test case: any HMAC-SHA256 library can sign.
        let rfc = BrokerKey::from_secret(&[0x0b; 20], KeyOrigin::Generated).expect("20 bytes");
        assert_eq!(
            sign(&rfc, b"Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text = hex(&bytes);
        assert_eq!(&text[..6], "000102");
        assert_eq!(unhex(text.as_bytes()), Some(bytes.clone()));
        assert_eq!(unhex(text.to_uppercase().as_bytes()), Some(bytes));
        assert_eq!(unhex(b"0g"), None);
    }

    #[test]
    fn refusals_are_logged_once_a_minute_per_sender() {
        let mut log = RefusalLog::default();
        let start = Instant::now();
        assert_eq!(log.note("mallory", start), Some(0));
        for n in 1..=5 {
            assert_eq!(log.note("mallory", start + Duration::from_secs(n)), None);
        }
        // Another sender has its own minute.
        assert_eq!(log.note("w1", start + Duration::from_secs(2)), Some(0));
        // A minute on, the next line says how many were not logged.
        assert_eq!(log.note("mallory", start + LOG_EVERY), Some(5));
        assert_eq!(log.note("mallory", start + LOG_EVERY), None);
    }

    #[test]
    fn a_flood_claiming_many_senders_shares_one_line() {
        let mut log = RefusalLog::default();
        let start = Instant::now();
        let lines = (0..1_000)
            .filter(|n| log.note(&format!("sender-{n}"), start).is_some())
            .count();
        assert_eq!(
            lines,
            MAX_SENDERS + 1,
            "one line per sender kept, one for the rest"
        );
        assert!(log.senders.len() <= MAX_SENDERS + 1);
        // A minute later, new senders are logged again.
        assert_eq!(log.note("late", start + LOG_EVERY), Some(0));
    }
}
