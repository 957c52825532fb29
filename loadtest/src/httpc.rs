//! A tiny HTTP/1.1 client over one keep-alive TCP connection: just what the harness
//! needs to create and read tasks on a loopback hub, without a client library's
//! dependency tree. One request at a time per client; open several for concurrency.

use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response head or body accepted.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// An answer.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The id of the task a `POST /v1/tasks` created, or why there is none (for the
/// run's error list; `seq` names the task in it).
pub fn created_task_id(r: io::Result<Response>, seq: u64) -> Result<String, String> {
    match r {
        Ok(resp) if resp.status == 201 => serde_json::from_slice::<serde_json::Value>(&resp.body)
            .ok()
            .and_then(|v| v.get("task_id")?.as_str().map(str::to_owned))
            .ok_or_else(|| format!("task #{seq}: 201 without a task_id: {}", resp.text())),
        Ok(resp) => Err(format!(
            "task #{seq}: HTTP {}: {}",
            resp.status,
            resp.text()
        )),
        Err(e) => Err(format!("task #{seq}: {e}")),
    }
}

/// One keep-alive connection to a hub.
pub struct HttpClient {
    addr: SocketAddr,
    host: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    req: Vec<u8>,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl HttpClient {
    /// A client for `addr`; it connects on first use.
    pub fn new(addr: SocketAddr) -> HttpClient {
        HttpClient {
            addr,
            host: addr.to_string(),
            stream: None,
            buf: Vec::with_capacity(8192),
            req: Vec::with_capacity(2048),
        }
    }

    /// Sends one request and reads its answer. A connection that fails is dropped; the
    /// next request opens a new one. Nothing is retried.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        let r = self.exchange(method, path, bearer, body).await;
        if r.is_err() {
            self.stream = None;
            self.buf.clear();
        }
        r
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str, bearer: Option<&str>) -> io::Result<Response> {
        self.request("GET", path, bearer, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> io::Result<Response> {
        self.request("POST", path, bearer, Some(body)).await
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
            self.buf.clear();
        }
        self.req.clear();
        self.req.extend_from_slice(method.as_bytes());
        self.req.push(b' ');
        self.req.extend_from_slice(path.as_bytes());
        self.req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.req.extend_from_slice(self.host.as_bytes());
        self.req.extend_from_slice(b"\r\n");
        if let Some(t) = bearer {
            self.req.extend_from_slice(b"Authorization: Bearer ");
            self.req.extend_from_slice(t.as_bytes());
            self.req.extend_from_slice(b"\r\n");
        }
        if let Some(b) = body {
            self.req
                .extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
            self.req.extend_from_slice(b.len().to_string().as_bytes());
            self.req.extend_from_slice(b"\r\n\r\n");
            self.req.extend_from_slice(b);
        } else {
            self.req.extend_from_slice(b"\r\n");
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(bad("not connected"));
        };
        stream.write_all(&self.req).await?;
        let (resp, close) = read_response(stream, &mut self.buf).await?;
        if close {
            self.stream = None;
            self.buf.clear();
        }
        Ok(resp)
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    if buf.len() > MAX_RESPONSE_BYTES {
        return Err(bad("response too large"));
    }
    let n = stream.read_buf(buf).await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-response",
        ));
    }
    Ok(())
}

/// Reads one response from `stream`, keeping any bytes past it in `buf`. Returns the
/// response and whether the server will close the connection.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<(Response, bool)> {
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p;
        }
        fill(stream, buf).await?;
    };
    let head =
        std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("not an HTTP/1 response: {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().map_err(|_| bad("bad content-length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let mut pos = head_end + 4;
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(p) = find(&buf[pos..], b"\r\n") {
                    break pos + p;
                }
                fill(stream, buf).await?;
            };
            let size_text =
                std::str::from_utf8(&buf[pos..line_end]).map_err(|_| bad("bad chunk size"))?;
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
            if size > MAX_RESPONSE_BYTES {
                return Err(bad("chunk too large"));
            }
            pos = line_end + 2;
            if size == 0 {
                // Trailers end with an empty line.
                loop {
                    if let Some(p) = find(&buf[pos..], b"\r\n") {
                        let empty = p == 0;
                        pos += p + 2;
                        if empty {
                            break;
                        }
                    } else {
                        fill(stream, buf).await?;
                    }
                }
                break;
            }
            while buf.len() < pos + size + 2 {
                fill(stream, buf).await?;
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
        body
    } else if let Some(n) = length {
        if n > MAX_RESPONSE_BYTES {
            return Err(bad("body too large"));
        }
        while buf.len() < pos + n {
            fill(stream, buf).await?;
        }
        let body = buf[pos..pos + n].to_vec();
        pos += n;
        body
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else {
        // No length: the body runs to the end of the connection.
        loop {
            match stream.read_buf(buf).await {
                Ok(0) => break,
                Ok(_) if buf.len() > MAX_RESPONSE_BYTES => return Err(bad("body too large")),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        close = true;
        let body = buf[pos..].to_vec();
        pos = buf.len();
        body
    };
    buf.drain(..pos);
    Ok((Response { status, body }, close))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(replies: &'static [&'static [u8]]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            for r in replies {
                let mut seen = Vec::new();
                while find(&seen, b"\r\n\r\n").is_none() {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                if s.write_all(r).await.is_err() {
                    return;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_length_and_chunked_bodies_on_one_connection() {
        let addr = serve_once(&[
            b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        ])
        .await;
        let mut c = HttpClient::new(addr);
        let r = c.get("/a", Some("t")).await.expect("first");
        assert_eq!((r.status, r.text().as_str()), (201, "hello"));
        let r = c.post_json("/b", None, b"{}").await.expect("second");
        assert_eq!((r.status, r.text().as_str()), (200, "abcde"));
    }
}
