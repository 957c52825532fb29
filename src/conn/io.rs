//! The socket under hyper: it carries the connection's [`Slot`] (so that an upgraded
//! websocket stays counted until it closes), fails a write that makes no progress for
//! `limits.ping_timeout_ms` (a client that sends requests and never reads the answers
//! would otherwise hold hyper on its write, where no read timeout runs), and gives
//! hyper's own error answers the JSON body every other error has.
//!
//! hyper answers a request it cannot parse by itself, before the router sees anything:
//! `400` (a bad request line or header), `414` (a target over 64 KiB), `431` (a head
//! over `limits.max_header_bytes`), each a bare head with no body. Those answers are
//! recognised here, on their way out, by what they lack: every answer the router
//! writes has a `content-type`.

use super::Slot;
use crate::error::ErrorCode;
use crate::protocol::ErrorBody;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// A whole HTTP/1.1 answer carrying `body` as JSON, closing the connection.
pub(crate) fn answer(body: ErrorBody) -> Vec<u8> {
    let status = body.code.http_status();
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let json = serde_json::json!({ "error": body }).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
        json.len()
    )
    .into_bytes()
}

/// The JSON answer for one of hyper's bare error heads, or `None` for anything else.
fn rewrite(buf: &[u8], max_header_bytes: usize) -> Option<Vec<u8>> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
    let (code, message) = match rest.get(..4)? {
        b"400 " => (
            ErrorCode::BadRequest,
            "the request line or a header could not be read".to_owned(),
        ),
        b"414 " => (
            ErrorCode::UriTooLong,
            "the request target is too long".to_owned(),
        ),
        b"431 " => (
            ErrorCode::HeadersTooLarge,
            format!("the request line and headers are limited to {max_header_bytes} bytes"),
        ),
        _ => return None,
    };
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &buf[..head_end];
    let has_type = head
        .split(|&b| b == b'\n')
        .any(|line| line.len() > 13 && line[..13].eq_ignore_ascii_case(b"content-type:"));
    if has_type {
        return None;
    }
    Some(answer(ErrorBody::new(code, message)))
}

/// A counted socket.
pub(crate) struct Guarded {
    tcp: TcpStream,
    _slot: Slot,
    max_header_bytes: usize,
    /// A rewritten answer still to be written, and how much of it is.
    pending: Option<(Vec<u8>, usize)>,
    /// How long a write may wait for the peer to read.
    write_stall: Duration,
    /// Armed while a write waits; a write that completes at once arms nothing.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl Guarded {
    pub(crate) fn new(
        tcp: TcpStream,
        slot: Slot,
        max_header_bytes: usize,
        write_stall: Duration,
    ) -> Guarded {
        Guarded {
            tcp,
            _slot: slot,
            max_header_bytes,
            pending: None,
            write_stall,
            stalled: None,
        }
    }

    /// Passes a write's outcome through, failing it once it has waited too long.
    fn bound<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.write_stall;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer did not read",
            )));
        }
        Poll::Pending
    }

    /// Writes what is left of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((bytes, at)) = &mut self.pending {
            if *at >= bytes.len() {
                self.pending = None;
                break;
            }
            let r = Pin::new(&mut self.tcp).poll_write(cx, &bytes[*at..]);
            let n = ready!(self.bound(cx, r))?;
            let Some((_, at)) = &mut self.pending else {
                break;
            };
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *at += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(json) = rewrite(buf, this.max_header_bytes) {
            // hyper's head counts as written; the answer goes out in its place, here
            // or on the flush that follows.
            this.pending = Some((json, 0));
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        let r = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.bound(cx, r)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let r = Pin::new(&mut this.tcp).poll_flush(cx);
        this.bound(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let r = Pin::new(&mut this.tcp).poll_shutdown(cx);
        this.bound(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bare_error_heads_are_rewritten() {
        let bare =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = rewrite(bare, 8192).map(|b| String::from_utf8_lossy(&b).into_owned());
        let out = out.unwrap_or_default();
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        assert!(out.contains(r#""code":"headers_too_large""#), "{out}");
        let ours = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert!(rewrite(ours, 8192).is_none());
        assert!(rewrite(b"HTTP/1.1 200 OK\r\n\r\n", 8192).is_none());
        assert!(rewrite(b"HTTP/1.1 404 Not Found\r\n\r\n", 8192).is_none());
    }
}
