//! The socket as hyper sees it. Reads tell the connection's clock that a
//! request head has begun. Writes pass through, except hyper's own answer
//! to a head it refused (400, 414, 431 with an empty body): that is
//! replaced by the same status with the gateway's JSON error, so no client
//! ever gets an error that is not JSON.
//!
//! The stream is shared (`Arc`) so that the connection task can still
//! answer 408 and close properly after hyper's connection is dropped.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::clock::ConnClock;

pub struct ConnIo {
    stream: Arc<TcpStream>,
    clock: Arc<ConnClock>,
    max_header_bytes: usize,
    /// A replacement answer still being written, and how much of it is out.
    reply: Option<(Vec<u8>, usize)>,
}

impl ConnIo {
    pub fn new(stream: Arc<TcpStream>, clock: Arc<ConnClock>, max_header_bytes: usize) -> Self {
        Self {
            stream,
            clock,
            max_header_bytes,
            reply: None,
        }
    }

    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = self.reply.as_mut() {
            if *written == bytes.len() {
                self.reply = None;
                break;
            }
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(&bytes[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.stream.poll_read_ready(cx))?;
            match this.stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    if n > 0 {
                        this.clock.bytes_read(Instant::now());
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale; try_read cleared it, so wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_reply(cx))?;
        if this.clock.reading_head() {
            if let Some(reply) = replacement(buf, this.max_header_bytes) {
                this.reply = Some((reply, 0));
                // What is not out yet goes in poll_flush, which hyper calls next.
                let _ = this.poll_reply(cx)?;
                return Poll::Ready(Ok(buf.len()));
            }
        }
        loop {
            ready!(this.stream.poll_write_ready(cx))?;
            match this.stream.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TCP stream has nothing to flush beyond a pending replacement.
        self.get_mut().poll_reply(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_reply(cx))?;
        match socket2::SockRef::from(&*this.stream).shutdown(std::net::Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// hyper answers a head it cannot parse with a bodiless 4xx in one write;
/// our answers always have a body. Anything else passes through untouched.
fn replacement(written: &[u8], max_header_bytes: usize) -> Option<Vec<u8>> {
    let head = std::str::from_utf8(written).ok()?;
    let rest = head.strip_prefix("HTTP/1.1 ")?;
    if !head.ends_with("\r\n\r\n")
        || !head
            .to_ascii_lowercase()
            .contains("\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    let status = StatusCode::from_u16(rest.get(..3)?.parse().ok()?).ok()?;
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let message = match status {
        StatusCode::BAD_REQUEST => {
            "malformed HTTP request: the request line or a header could not be parsed".to_string()
        }
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => format!(
            "request head (request line and headers) larger than {max_header_bytes} bytes, or more than 100 headers"
        ),
        StatusCode::URI_TOO_LONG => "request URI too long".to_string(),
        other => other
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string(),
    };
    Some(raw_response(status, &message))
}

/// A complete `Connection: close` response with the gateway's JSON error,
/// for answers written outside hyper.
pub fn raw_response(status: StatusCode, message: &str) -> Vec<u8> {
    let body = crate::api::error_json(message, None);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_errors_are_replaced() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(replacement(hyper_431, 16384).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        assert!(out.contains("content-type: application/json"));
        let (_, body) = out.split_once("\r\n\r\n").unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(json["error"].as_str().unwrap().contains("16384"));
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n", 1).is_some());
        // Ours (with a body), successes and partial writes pass.
        assert!(replacement(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 20\r\n\r\n{\"error\":\"no route\"}",
            1
        )
        .is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", 1).is_none());
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n", 1).is_none());
        assert!(replacement(b"{\"requestId\":\"x\"}", 1).is_none());
    }
}
