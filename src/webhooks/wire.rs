//! HTTP/1.1 as the webhook client speaks it (RFC 9112), pure: a request written into a
//! buffer, and the receiver's answers read out of a byte stream one after another, in
//! order (a pipelined connection carries several), their bodies read and discarded.
//!
//! Everything read from the receiver is bounded: the head (status line and fields),
//! the body (by `Content-Length` or chunked, its chunks and trailers too). Past a bound,
//! or on anything that is not HTTP/1.1, a [`WireError`] says what: the connection is
//! then closed, since what follows can no longer be told apart from the rest.

use super::client::parse_retry_after;
use axum::http::{HeaderName, HeaderValue};
use std::time::Duration;

/// A head (status line and fields) is at most this long.
pub const MAX_HEAD: usize = 16 * 1024;
/// A body (every chunk together) is at most this long: an answer's body is not wanted.
pub const MAX_BODY: usize = 64 * 1024;
/// Fields in a head.
const MAX_FIELDS: usize = 64;
/// A chunk-size line (with extensions) is at most this long.
const MAX_CHUNK_LINE: usize = 1024;

/// What the receiver said wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The head is longer than [`MAX_HEAD`].
    #[error("an answer's head is over {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// The head is not HTTP/1.x.
    #[error("an answer that is not HTTP/1.1: {0}")]
    Malformed(String),
    /// The body is longer than [`MAX_BODY`].
    #[error("an answer's body is over {MAX_BODY} bytes")]
    BodyTooLarge,
    /// `Content-Length` is not a number, or two disagree.
    #[error("an answer's content-length is not valid")]
    BadContentLength,
    /// A chunk is not `size CRLF data CRLF`, or its size line is too long.
    #[error("an answer's chunked body is not valid: {0}")]
    BadChunk(&'static str),
    /// `101 Switching Protocols`: never asked for.
    #[error("an answer switching protocols, never asked for")]
    Upgrade,
    /// Bytes when no request is waiting for an answer.
    #[error("bytes from the receiver with no request unanswered")]
    Unsolicited,
}

/// An answer's head: what the delivery needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// `Retry-After`, when given.
    pub retry_after: Option<Duration>,
    /// The receiver closes the connection after this answer (`Connection: close`,
    /// HTTP/1.0, or a body that ends with the connection).
    pub close: bool,
}

/// One step of reading answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// More bytes are needed.
    More,
    /// An answer's head (its body follows and is read next).
    Head(Head),
    /// The answer's body is read: the next bytes are the next answer.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before an answer's head.
    Head,
    /// This many body bytes left.
    Length(u64),
    /// Before a chunk-size line.
    ChunkSize,
    /// This many bytes left of a chunk, then its CRLF.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer fields, up to an empty line; this many bytes read of them.
    Trailers(usize),
    /// Until the connection ends.
    UntilClose,
}

/// Reads answers one after another from the bytes of one connection.
#[derive(Debug)]
pub struct Answers {
    state: State,
    /// Body bytes read of this answer.
    body: usize,
}

impl Default for Answers {
    fn default() -> Self {
        Answers::new()
    }
}

impl Answers {
    /// Before the first answer.
    pub fn new() -> Answers {
        Answers {
            state: State::Head,
            body: 0,
        }
    }

    /// Between answers (no byte of one read yet): the connection may end here cleanly.
    pub fn between(&self) -> bool {
        self.state == State::Head
    }

    /// The body ends with the connection (read until it closes).
    pub fn until_close(&self) -> bool {
        self.state == State::UntilClose
    }

    /// Reads from `buf`: how many bytes were used, and what they made.
    pub fn step(&mut self, buf: &[u8]) -> Result<(usize, Step), WireError> {
        match self.state {
            State::Head => self.head(buf),
            State::Length(left) => {
                let n = left.min(buf.len() as u64);
                self.taken(n as usize)?;
                let left = left - n;
                if left == 0 {
                    self.state = State::Head;
                    Ok((n as usize, Step::End))
                } else {
                    self.state = State::Length(left);
                    Ok((n as usize, Step::More))
                }
            }
            State::UntilClose => {
                self.taken(buf.len())?;
                Ok((buf.len(), Step::More))
            }
            State::ChunkSize => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        if size > MAX_BODY as u64 {
                            return Err(WireError::BodyTooLarge);
                        }
                        State::ChunkData(size)
                    };
                    Ok((used, Step::More))
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                    Err(WireError::BadChunk("a chunk-size line over 1,024 bytes"))
                }
                Ok(httparse::Status::Partial) => Ok((0, Step::More)),
                Err(_) => Err(WireError::BadChunk("a chunk size that is not hexadecimal")),
            },
            State::ChunkData(left) => {
                let n = left.min(buf.len() as u64);
                self.taken(n as usize)?;
                self.state = match left - n {
                    0 => State::ChunkEnd,
                    left => State::ChunkData(left),
                };
                Ok((n as usize, Step::More))
            }
            State::ChunkEnd => match buf {
                [b'\r', b'\n', ..] => {
                    self.state = State::ChunkSize;
                    Ok((2, Step::More))
                }
                [] | [b'\r'] => Ok((0, Step::More)),
                _ => Err(WireError::BadChunk("no CRLF after a chunk's data")),
            },
            State::Trailers(read) => {
                if buf.starts_with(b"\r\n") {
                    self.state = State::Head;
                    return Ok((2, Step::End));
                }
                match buf.windows(2).position(|w| w == b"\r\n") {
                    Some(i) if read + i + 2 <= MAX_HEAD => {
                        self.state = State::Trailers(read + i + 2);
                        Ok((i + 2, Step::More))
                    }
                    None if read + buf.len() <= MAX_HEAD => Ok((0, Step::More)),
                    _ => Err(WireError::HeadTooLarge),
                }
            }
        }
    }

    fn taken(&mut self, n: usize) -> Result<(), WireError> {
        self.body += n;
        if self.body > MAX_BODY {
            return Err(WireError::BodyTooLarge);
        }
        Ok(())
    }

    fn head(&mut self, buf: &[u8]) -> Result<(usize, Step), WireError> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut res = httparse::Response::new(&mut fields);
        let used = match res.parse(buf) {
            Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
            Ok(httparse::Status::Complete(_)) => return Err(WireError::HeadTooLarge),
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(WireError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok((0, Step::More)),
            Err(e) => return Err(WireError::Malformed(e.to_string())),
        };
        let status = res.code.unwrap_or(0);
        if status == 101 {
            return Err(WireError::Upgrade);
        }
        if (100..200).contains(&status) {
            // An interim answer (100 Continue, 103 Early Hints): the final one follows.
            return Ok((used, Step::More));
        }
        let mut close = res.version != Some(1);
        let mut length: Option<u64> = None;
        let mut chunked = None;
        let mut retry_after = None;
        for f in res.headers.iter() {
            let name = f.name;
            if name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(f.value)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(WireError::BadContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(WireError::BadContentLength);
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Only a final `chunked` delimits the body; any other coding runs to
                // the connection's end.
                let last = f.value.rsplit(|&b| b == b',').next().unwrap_or_default();
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case("connection") {
                if f.value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                {
                    close = true;
                }
            } else if name.eq_ignore_ascii_case("retry-after") {
                retry_after = std::str::from_utf8(f.value)
                    .ok()
                    .and_then(parse_retry_after);
            }
        }
        self.body = 0;
        self.state = if status == 204 || status == 304 {
            State::Head
        } else {
            match (chunked, length) {
                (Some(true), l) => {
                    // Both: the length is ignored, and the connection is not trusted
                    // further (RFC 9112 §6.3).
                    close |= l.is_some();
                    State::ChunkSize
                }
                (Some(false), _) | (None, None) => {
                    close = true;
                    State::UntilClose
                }
                (None, Some(n)) if n > MAX_BODY as u64 => return Err(WireError::BodyTooLarge),
                (None, Some(0)) => State::Head,
                (None, Some(n)) => State::Length(n),
            }
        };
        let head = Head {
            status,
            retry_after,
            close,
        };
        Ok((used, Step::Head(head)))
    }
}

/// An endpoint's request line and constant fields, made once.
#[derive(Debug, Clone)]
pub struct Request {
    prefix: Vec<u8>,
}

impl Request {
    /// `POST path` to `host` (both already checked as a request target and a field
    /// value).
    pub fn new(path: &str, host: &HeaderValue) -> Request {
        let mut prefix = Vec::with_capacity(128 + path.len());
        prefix.extend_from_slice(b"POST ");
        prefix.extend_from_slice(path.as_bytes());
        prefix.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        prefix.extend_from_slice(host.as_bytes());
        prefix.extend_from_slice(
            b"\r\ncontent-type: application/json\r\nuser-agent: switchboard-webhooks/1\r\n",
        );
        Request { prefix }
    }

    /// One request, head and body, appended to `out` (a connection's write buffer,
    /// kept from write to write: a request costs no allocation of its own).
    pub fn encode_into(
        &self,
        out: &mut Vec<u8>,
        fields: &[(HeaderName, HeaderValue)],
        body: &[u8],
    ) {
        let extra: usize = fields
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        out.reserve(self.prefix.len() + extra + 40 + body.len());
        out.extend_from_slice(&self.prefix);
        for (k, v) in fields {
            // A HeaderValue holds no CR or LF: nothing can be injected.
            out.extend_from_slice(k.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"content-length: ");
        let mut digits = [0u8; 20];
        out.extend_from_slice(crate::events::decimal(body.len() as u64, &mut digits));
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step over `bytes`, fed in pieces of `piece` bytes.
    fn read_all(bytes: &[u8], piece: usize) -> Result<Vec<Step>, WireError> {
        let mut a = Answers::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for p in bytes.chunks(piece) {
            buf.extend_from_slice(p);
            loop {
                let (used, step) = a.step(&buf)?;
                buf.drain(..used);
                match step {
                    Step::More if used == 0 => break,
                    Step::More => {}
                    s => out.push(s),
                }
            }
        }
        Ok(out)
    }

    fn head(status: u16, close: bool) -> Step {
        Step::Head(Head {
            status,
            retry_after: None,
            close,
        })
    }

    #[test]
    fn pipelined_answers_are_read_in_order_whatever_the_pieces() {
        let bytes = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nRetry-After: 3\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nbusy\r\n1\r\n!\r\n0\r\nx-trailer: 1\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 410 Gone\r\nConnection: close\r\ncontent-length: 0\r\n\r\n";
        let busy = Step::Head(Head {
            status: 503,
            retry_after: Some(Duration::from_secs(3)),
            close: false,
        });
        let want = vec![
            head(200, false),
            Step::End,
            busy,
            Step::End,
            head(204, false),
            head(410, true),
        ];
        for piece in [1, 2, 7, bytes.len()] {
            assert_eq!(read_all(bytes, piece).expect("reads"), want, "{piece}");
        }
    }

    #[test]
    fn a_body_without_a_length_runs_to_the_close_and_http_1_0_closes() {
        let mut a = Answers::new();
        let (_, s) = a.step(b"HTTP/1.1 200 OK\r\n\r\nrest").expect("head");
        assert_eq!(s, head(200, true));
        assert!(a.until_close());
        let (_, s) = Answers::new()
            .step(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n")
            .expect("head");
        assert_eq!(s, head(200, true));
    }

    #[test]
    fn what_the_receiver_sends_is_bounded_with_a_typed_error() {
        let big_head = format!("HTTP/1.1 200 OK\r\nx: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(
            read_all(big_head.as_bytes(), 4096),
            Err(WireError::HeadTooLarge)
        );
        let endless = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD + 10));
        assert_eq!(
            read_all(endless.as_bytes(), 4096),
            Err(WireError::HeadTooLarge)
        );
        let long = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(read_all(long.as_bytes(), 64), Err(WireError::BodyTooLarge));
        let chunk = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nfffffffff\r\n";
        assert_eq!(read_all(chunk.as_bytes(), 64), Err(WireError::BodyTooLarge));
        let mut chunks = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_owned();
        for _ in 0..20 {
            chunks.push_str(&format!("1000\r\n{}\r\n", "z".repeat(4096)));
        }
        assert_eq!(
            read_all(chunks.as_bytes(), 999),
            Err(WireError::BodyTooLarge)
        );
        let line = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1;{}",
            "e".repeat(2000)
        );
        assert!(matches!(
            read_all(line.as_bytes(), 4096),
            Err(WireError::BadChunk(_))
        ));
        let no_crlf = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokXX";
        assert!(matches!(
            read_all(no_crlf.as_bytes(), 64),
            Err(WireError::BadChunk(_))
        ));
        let trailers = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n{}",
            "t: 1\r\n".repeat(MAX_HEAD / 5)
        );
        assert_eq!(
            read_all(trailers.as_bytes(), 512),
            Err(WireError::HeadTooLarge)
        );
        let two = "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n";
        assert_eq!(
            read_all(two.as_bytes(), 64),
            Err(WireError::BadContentLength)
        );
        let neg = "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n";
        assert_eq!(
            read_all(neg.as_bytes(), 64),
            Err(WireError::BadContentLength)
        );
        assert!(matches!(
            read_all(b"SMTP ready\r\n\r\n", 64),
            Err(WireError::Malformed(_))
        ));
        assert_eq!(
            read_all(b"HTTP/1.1 101 Switching\r\n\r\n", 64),
            Err(WireError::Upgrade)
        );
    }

    #[test]
    fn a_request_is_one_buffer_with_its_length() {
        let r = Request::new("/h?x=1", &HeaderValue::from_static("crm:8080"));
        let mut out = Vec::new();
        r.encode_into(
            &mut out,
            &[(
                HeaderName::from_static("webhook-id"),
                HeaderValue::from_static("e-1"),
            )],
            b"{}",
        );
        assert_eq!(
            String::from_utf8(out).expect("text"),
            "POST /h?x=1 HTTP/1.1\r\nhost: crm:8080\r\ncontent-type: application/json\r\nuser-agent: switchboard-webhooks/1\r\nwebhook-id: e-1\r\ncontent-length: 2\r\n\r\n{}"
        );
        // Appended: a second request after the first, each with its own length.
        let mut both = Vec::new();
        r.encode_into(&mut both, &[], b"{}");
        r.encode_into(&mut both, &[], &[b'x'; 1234]);
        let text = String::from_utf8(both).expect("text");
        assert_eq!(text.matches("POST /h?x=1 HTTP/1.1\r\n").count(), 2);
        assert!(
            text.contains("content-length: 2\r\n\r\n{}POST"),
            "{text:.200}"
        );
        assert!(text.ends_with(&format!("content-length: 1234\r\n\r\n{}", "x".repeat(1234))));
    }
}
