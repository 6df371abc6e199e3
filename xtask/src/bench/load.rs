//! A small closed-loop HTTP/1.1 load generator, for what wrk cannot report: responses counted by
//! status, and the latency of the accepted (200) ones only.
//!
//! Each connection is a thread with a keep-alive `TcpStream`: it sends `GET path`, reads the
//! whole response (framed by Content-Length or chunked), records it and sends the next request
//! at once. A failed or closed connection is reopened.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{sys, util};

/// How long one response may take before the connection counts as failed.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
pub struct Load {
    pub connections: usize,
    pub duration: Duration,
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Complete responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Failed exchanges: connect, read or write errors, timeouts, malformed responses.
    pub errors: u64,
    /// Latency of each 200 response, sorted once the run is over.
    pub accepted: Vec<Duration>,
    /// From the start until the last connection finished.
    pub elapsed: Duration,
}

impl Tally {
    /// Responses with this status.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Responses with a status other than these.
    pub fn others(&self, known: &[u16]) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| !known.contains(status))
            .map(|(_, n)| n)
            .sum()
    }

    /// The nearest-rank percentile `p` (0-100] of accepted requests' latency.
    pub fn accepted_percentile(&self, p: f64) -> Option<Duration> {
        let n = self.accepted.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.accepted.get(rank.clamp(1, n.max(1)) - 1).copied()
    }

    fn merge(&mut self, other: Tally) {
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.errors += other.errors;
        self.accepted.extend(other.accepted);
    }
}

/// Loads `GET path` on `addr` from `load.connections` closed-loop connections for
/// `load.duration`.
pub fn run(addr: SocketAddr, path: &str, load: Load) -> Result<Tally> {
    let request = request(addr, path);
    let start = Instant::now();
    let deadline = start + load.duration;
    let threads = (0..load.connections)
        .map(|i| {
            let request = request.clone();
            std::thread::Builder::new()
                .name(format!("load-{i}"))
                .spawn(move || connection(addr, &request, deadline))
                .context("cannot start a load thread")
        })
        .collect::<Result<Vec<_>>>()?;
    let mut tally = Tally::default();
    for thread in threads {
        tally.merge(thread.join().expect("load threads do not panic"));
    }
    tally.elapsed = start.elapsed();
    tally.accepted.sort();
    util::check_interrupted()?;
    Ok(tally)
}

/// One `GET path` on a fresh connection, e.g. to check a server answers what it should.
pub fn get(addr: SocketAddr, path: &str) -> Result<Response> {
    let mut stream = connect(addr)?;
    exchange(&mut stream, &request(addr, path))
}

fn request(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: xtask-load\r\n\r\n").into_bytes()
}

fn connect(addr: SocketAddr) -> Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    Ok(BufReader::new(stream))
}

fn exchange(stream: &mut BufReader<TcpStream>, request: &[u8]) -> Result<Response> {
    stream.get_mut().write_all(request)?;
    read_response(stream)
}

/// One connection's loop until `deadline` (or an interruption).
fn connection(addr: SocketAddr, request: &[u8], deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut open = None;
    while Instant::now() < deadline && sys::received().is_none() {
        let mut stream = match open.take() {
            Some(stream) => stream,
            None => match connect(addr) {
                Ok(stream) => stream,
                Err(_) => {
                    tally.errors += 1;
                    // Do not spin on a refused connection.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let sent = Instant::now();
        match exchange(&mut stream, request) {
            Ok(response) => {
                *tally.statuses.entry(response.status).or_default() += 1;
                if response.status == 200 {
                    tally.accepted.push(sent.elapsed());
                }
                if !response.close {
                    open = Some(stream);
                }
            }
            Err(_) => tally.errors += 1,
        }
    }
    tally
}

#[derive(Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server closes the connection after this response.
    pub close: bool,
}

/// Reads one response: status line, headers, then a body framed by `Transfer-Encoding:
/// chunked`, `Content-Length`, or the end of the connection. Interim 1xx responses are skipped.
pub fn read_response(r: &mut impl BufRead) -> Result<Response> {
    loop {
        let line = read_line(r)?;
        let (version, status) = parse_status_line(&line)?;
        let mut close = version == "HTTP/1.0";
        let mut length = None;
        let mut chunked = false;
        loop {
            let line = read_line(r)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .with_context(|| format!("malformed header line {line:?}"))?;
            let value = value.trim().to_ascii_lowercase();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    length = Some(value.parse::<usize>().context("bad Content-Length")?)
                }
                "transfer-encoding" => chunked = value.contains("chunked"),
                "connection" if value.contains("close") => close = true,
                "connection" if value.contains("keep-alive") => close = false,
                _ => {}
            }
        }
        if (100..200).contains(&status) {
            continue;
        }
        let body = if chunked {
            read_chunked(r)?
        } else if let Some(length) = length {
            let mut body = vec![0; length];
            r.read_exact(&mut body)
                .context("body shorter than its length")?;
            body
        } else if status == 204 || status == 304 {
            Vec::new()
        } else {
            // Neither framing: the body runs to the end of the connection.
            close = true;
            let mut body = Vec::new();
            r.read_to_end(&mut body)?;
            body
        };
        return Ok(Response {
            status,
            body,
            close,
        });
    }
}

/// `HTTP/1.1 200 OK` -> (`HTTP/1.1`, 200).
fn parse_status_line(line: &str) -> Result<(&str, u16)> {
    let mut parts = line.split_whitespace();
    let version = parts
        .next()
        .filter(|v| v.starts_with("HTTP/1."))
        .with_context(|| format!("not an HTTP/1.x status line: {line:?}"))?;
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..600).contains(s))
        .with_context(|| format!("no status code in {line:?}"))?;
    Ok((version, status))
}

fn read_chunked(r: &mut impl BufRead) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r)?;
        // `1a;name=value`: the size is hex, extensions are ignored.
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .with_context(|| format!("bad chunk size line {line:?}"))?;
        if size == 0 {
            // Trailers, up to an empty line.
            while !read_line(r)?.trim_end().is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])
            .context("chunk shorter than its size")?;
        if !read_line(r)?.trim_end().is_empty() {
            bail!("chunk not followed by CRLF");
        }
    }
}

/// One line including its `\n`, at most 16 KiB; the end of the stream is an error.
fn read_line(r: &mut impl BufRead) -> Result<String> {
    let mut line = Vec::new();
    r.take(16 * 1024).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        bail!("connection closed");
    }
    if !line.ends_with(b"\n") {
        bail!("truncated or overlong line");
    }
    String::from_utf8(line).context("line is not UTF-8")
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn parse(text: &str) -> Result<Response> {
        read_response(&mut Cursor::new(text.as_bytes()))
    }

    #[test]
    fn reads_a_content_length_body() {
        let r = parse("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 13\r\n\r\nHello, world!")
            .unwrap();
        assert_eq!(
            r,
            Response {
                status: 200,
                body: b"Hello, world!".to_vec(),
                close: false
            }
        );
    }

    #[test]
    fn reads_back_to_back_responses_on_one_connection() {
        let mut cursor = Cursor::new(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 2\r\n\r\n{}\
              HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
        );
        assert_eq!(read_response(&mut cursor).unwrap().status, 429);
        let second = read_response(&mut cursor).unwrap();
        assert_eq!((second.status, second.body.len()), (503, 0));
        assert!(read_response(&mut cursor).is_err(), "nothing left");
    }

    #[test]
    fn reads_a_chunked_body_with_extensions_and_trailers() {
        let r = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
             7;ext=1\r\nHello, \r\n6\r\nworld!\r\n0\r\nX-Trailer: yes\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"Hello, world!");
        assert!(!r.close);
    }

    #[test]
    fn knows_when_the_server_closes() {
        assert!(
            parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .close
        );
        assert!(
            parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .close
        );
        assert!(
            !parse("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .close
        );
        // No framing: the body is everything up to the end.
        let r = parse("HTTP/1.1 200 OK\r\n\r\nuntil the end").unwrap();
        assert_eq!((r.body.as_slice(), r.close), (&b"until the end"[..], true));
    }

    #[test]
    fn skips_interim_responses_and_empty_bodies() {
        let r = parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.len(), r.close), (204, 0, false));
    }

    #[test]
    fn rejects_malformed_responses() {
        assert!(parse("").is_err());
        assert!(parse("garbage\r\n\r\n").is_err());
        assert!(parse("HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(parse("HTTP/1.1 200 OK\r\nno colon\r\n\r\n").is_err());
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").is_err());
        assert!(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n").is_err());
        assert!(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n").is_err());
    }

    #[test]
    fn tallies_and_percentiles() {
        let mut tally = Tally::default();
        assert_eq!(tally.accepted_percentile(99.0), None);
        let mut part = Tally::default();
        part.statuses.insert(200, 3);
        part.statuses.insert(429, 5);
        part.errors = 1;
        part.accepted = (1..=3).map(Duration::from_millis).collect();
        tally.merge(part);
        let mut part = Tally::default();
        part.statuses.insert(200, 97);
        part.statuses.insert(500, 2);
        part.accepted = (4..=100).map(Duration::from_millis).collect();
        tally.merge(part);
        tally.accepted.sort();
        assert_eq!(
            (tally.count(200), tally.count(429), tally.count(503)),
            (100, 5, 0)
        );
        assert_eq!(tally.others(&[200, 429, 503]), 2);
        assert_eq!(tally.errors, 1);
        assert_eq!(
            tally.accepted_percentile(50.0),
            Some(Duration::from_millis(50))
        );
        assert_eq!(
            tally.accepted_percentile(99.0),
            Some(Duration::from_millis(99))
        );
        assert_eq!(
            tally.accepted_percentile(100.0),
            Some(Duration::from_millis(100))
        );
    }
}
