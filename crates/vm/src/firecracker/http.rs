//! A small HTTP/1.1 client for Firecracker's API socket.
//!
//! Firecracker serves its API over a Unix socket and answers with
//! `Content-Length` bodies; the parser also accepts chunked bodies and bodies
//! delimited by the end of the connection so that any conforming server works.
//! One connection is opened per request, which keeps the client stateless.

use std::path::Path;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Longest status line or header line accepted.
const MAX_LINE: usize = 8 * 1024;
/// Most header lines accepted in one response.
const MAX_HEADERS: usize = 100;
/// Largest response body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Errors of one HTTP exchange.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The socket could not be reached, written or read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server's answer is not a valid HTTP/1.x response.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
}

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. 204.
    pub status: u16,
    /// The reason phrase after the status code.
    pub reason: String,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The decoded body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Encodes a request with an optional JSON body.
pub fn encode_request(method: &str, path: &str, json_body: Option<&[u8]>) -> Vec<u8> {
    let mut out =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
    match json_body {
        Some(body) => {
            out.push_str("Content-Type: application/json\r\n");
            out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(body);
            bytes
        }
        None => {
            out.push_str("\r\n");
            out.into_bytes()
        }
    }
}

/// Sends one request over a fresh connection to `socket` and reads the response.
pub async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    json_body: Option<&[u8]>,
) -> Result<Response, HttpError> {
    let mut stream = UnixStream::connect(socket).await?;
    stream
        .write_all(&encode_request(method, path, json_body))
        .await?;
    stream.flush().await?;
    let is_head = method.eq_ignore_ascii_case("HEAD");
    read_response(&mut BufReader::new(stream), is_head).await
}

/// Reads one response from `reader`; `is_head` says the request was `HEAD`
/// (whose response never has a body).
pub async fn read_response<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    is_head: bool,
) -> Result<Response, HttpError> {
    let status_line = read_line(reader).await?;
    let (status, reason) = parse_status_line(&status_line)?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader).await?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::Malformed("too many header lines".into()));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| HttpError::Malformed(format!("header line without ':': {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut response = Response {
        status,
        reason,
        headers,
        body: Vec::new(),
    };
    if is_head || status < 200 || status == 204 || status == 304 {
        return Ok(response);
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
    response.body = if chunked {
        read_chunked(reader).await?
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| HttpError::Malformed(format!("bad Content-Length {length:?}")))?;
        if length > MAX_BODY {
            return Err(HttpError::Malformed(format!(
                "body of {length} bytes is too large"
            )));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        body
    } else {
        let mut body = Vec::new();
        reader
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut body)
            .await?;
        if body.len() > MAX_BODY {
            return Err(HttpError::Malformed("body is too large".into()));
        }
        body
    };
    Ok(response)
}

fn parse_status_line(line: &str) -> Result<(u16, String), HttpError> {
    let malformed = || HttpError::Malformed(format!("bad status line {line:?}"));
    let rest = line.strip_prefix("HTTP/1.").ok_or_else(malformed)?;
    let mut parts = rest.splitn(3, ' ');
    let _minor = parts
        .next()
        .filter(|m| m.len() == 1)
        .ok_or_else(malformed)?;
    let code = parts.next().ok_or_else(malformed)?;
    if code.len() != 3 {
        return Err(malformed());
    }
    let status = code.parse().map_err(|_| malformed())?;
    Ok((status, parts.next().unwrap_or("").to_string()))
}

async fn read_chunked<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader).await?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpError::Malformed(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailer fields, if any, end with an empty line.
            while !read_line(reader).await?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(HttpError::Malformed("chunked body is too large".into()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).await?;
        if !read_line(reader).await?.is_empty() {
            return Err(HttpError::Malformed("chunk not followed by CRLF".into()));
        }
    }
}

/// Reads one CRLF- (or LF-) terminated line without its terminator.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<String, HttpError> {
    let mut line = Vec::new();
    let n = reader
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Err(HttpError::Malformed(
            "connection closed mid-response".into(),
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(HttpError::Malformed(if line.len() > MAX_LINE {
            "line too long".into()
        } else {
            "connection closed mid-line".into()
        }));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| HttpError::Malformed("line is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(raw: &[u8]) -> Result<Response, HttpError> {
        read_response(&mut BufReader::new(raw), false).await
    }

    #[test]
    fn encodes_a_put_with_json_body() {
        let raw = encode_request(
            "PUT",
            "/actions",
            Some(br#"{"action_type":"InstanceStart"}"#),
        );
        assert_eq!(
            String::from_utf8(raw).unwrap(),
            "PUT /actions HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
             Content-Type: application/json\r\nContent-Length: 31\r\n\r\n\
             {\"action_type\":\"InstanceStart\"}"
        );
    }

    #[test]
    fn encodes_a_get_without_body() {
        let raw = encode_request("GET", "/version", None);
        assert_eq!(
            String::from_utf8(raw).unwrap(),
            "GET /version HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn parses_no_content() {
        let response =
            parse(b"HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n")
                .await
                .unwrap();
        assert_eq!(response.status, 204);
        assert!(response.is_success());
        assert_eq!(response.header("SERVER"), Some("Firecracker API"));
        assert!(response.body.is_empty());
    }

    #[tokio::test]
    async fn parses_a_content_length_body_and_leaves_the_rest() {
        let raw = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 23\r\n\r\n{\"fault_message\":\"no\"}\nHTTP/1.1 204";
        let mut reader = BufReader::new(&raw[..]);
        let response = read_response(&mut reader, false).await.unwrap();
        assert_eq!(response.status, 400);
        assert_eq!(response.reason, "Bad Request");
        assert_eq!(response.body, b"{\"fault_message\":\"no\"}\n");
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"HTTP/1.1 204");
    }

    #[tokio::test]
    async fn parses_a_chunked_body_with_extensions_and_trailers() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"a\"\r\nA\r\n:\"bcdefgh\"\r\n1\r\n}\r\n0\r\nX-Trailer: y\r\n\r\n";
        let response = parse(raw).await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"{\"a\":\"bcdefgh\"}");
    }

    #[tokio::test]
    async fn reads_to_the_end_without_length() {
        let response = parse(b"HTTP/1.0 200 OK\n\nplain body").await.unwrap();
        assert_eq!(response.body, b"plain body");
    }

    #[tokio::test]
    async fn head_and_1xx_and_304_have_no_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        let response = read_response(&mut BufReader::new(&raw[..]), true)
            .await
            .unwrap();
        assert!(response.body.is_empty());
        let response = parse(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n")
            .await
            .unwrap();
        assert!(response.body.is_empty());
    }

    #[tokio::test]
    async fn rejects_malformed_responses() {
        for raw in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\n",
            b"",
        ] {
            assert!(
                parse(raw).await.is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[tokio::test]
    async fn rejects_oversized_lines_and_bodies() {
        let mut long = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE + 10));
        long.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(parse(&long).await, Err(HttpError::Malformed(_))));
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(matches!(
            parse(huge.as_bytes()).await,
            Err(HttpError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn round_trips_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; 2];
            reader.read_exact(&mut body).await.unwrap();
            reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
                .await
                .unwrap();
            (head, body)
        });
        let response = request(&socket, "PATCH", "/vm", Some(b"{}")).await.unwrap();
        assert_eq!(response.body, b"done");
        let (head, body) = server.await.unwrap();
        assert!(head.starts_with("PATCH /vm HTTP/1.1\r\n"));
        assert!(head.contains("Content-Length: 2\r\n"));
        assert_eq!(body, b"{}");
    }
}
