//! An HTTP/1.1 server answering every request with "Hello, World!":
//! keep-alive, pipelining, request bodies, and the limits a server exposed
//! to any client needs.
//!
//! ```text
//! cargo run --release --example http_hello -- --port 8080
//! curl -i http://127.0.0.1:8080/
//! curl -i http://127.0.0.1:8080/sleep/100
//! wrk -t2 -c100 -d10s http://127.0.0.1:8080/
//! ```
//!
//! # What it handles
//!
//! - `GET /sleep/MS` sleeps MS milliseconds (at most 60 000) on its worker
//!   thread, then answers as every other path does: a stand-in for a
//!   handler that makes a blocking call (a database query, a C library).
//!   The fast paths stay fast while it sleeps, as long as workers remain.
//! - Keep-alive: HTTP/1.1 connections stay open unless the request says
//!   `Connection: close`; HTTP/1.0 ones close unless it says
//!   `Connection: keep-alive`. Idle connections close after 60 s (atoll's
//!   `read_timeout`).
//! - Pipelining: every complete request in the bytes received is answered,
//!   in order, with one `send`.
//! - Bodies are read and thrown away: `Content-Length`, and
//!   `Transfer-Encoding: chunked` decoded (chunk extensions and trailers
//!   skipped), so any client's upload keeps the connection usable.
//!   `Expect: 100-continue` gets its `100 Continue`.
//!
//! # Limits
//!
//! | what | limit | answer, then close |
//! |---|---|---|
//! | request head (request line and headers) | 8 KiB | 431 |
//! | header fields | 100 | 431 |
//! | body (declared or chunked total) | 1 MiB | 413 |
//! | malformed request line, header, length or chunk | | 400 |
//! | `/sleep/MS` with MS not a number or over 60 000 | | 400 |
//! | an HTTP version other than 1.0 and 1.1 | | 505 |
//!
//! Request heads, chunk-size lines and trailers are parsed by the
//! `httparse` crate: hand-written HTTP framing is where request smuggling
//! starts. This file adds the framing rules on top: an HTTP/1.1 request
//! without exactly one `Host`, one with both `Content-Length` and
//! `Transfer-Encoding`, and one with differing `Content-Length`s are
//! malformed (RFC 9112).
//!
//! When the server closes a connection (an error, `Connection: close`), it
//! shuts down its sending side and reads on for up to 2 s, so that request
//! bytes still arriving do not turn the close into a reset that would
//! destroy the answer before the client reads it.

mod common;

use std::cell::Cell;
use std::io::Write as _;
use std::net::{IpAddr, Shutdown};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atoll::{Flow, Handler, Server, Socket};

const MAX_HEAD: usize = 8 << 10;
const MAX_HEADERS: usize = 100;
const MAX_BODY: u64 = 1 << 20;
/// The longest chunk-size line (with extensions).
const MAX_LINE: usize = 4 << 10;
/// How long a closing connection reads on for what the client still sends.
const LINGER: Duration = Duration::from_secs(2);
const HELLO: &[u8] = b"Hello, World!";
/// The longest sleep `/sleep/MS` asks for: a client must not be able to
/// hold a worker for ever.
const MAX_SLEEP_MS: u64 = 60_000;
/// Buffers that grew past this for one request are given back after it.
const KEEP_CAPACITY: usize = 64 << 10;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Status {
    BadRequest,
    PayloadTooLarge,
    HeadersTooLarge,
    VersionNotSupported,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::BadRequest => "400 Bad Request",
            Status::PayloadTooLarge => "413 Content Too Large",
            Status::HeadersTooLarge => "431 Request Header Fields Too Large",
            Status::VersionNotSupported => "505 HTTP Version Not Supported",
        }
    }
}

/// How the answer to a request is shaped.
#[derive(Clone, Copy)]
struct Reply {
    keep_alive: bool,
    head_only: bool,
    http10: bool,
    /// Slept before answering (`/sleep/MS`).
    sleep: Option<Duration>,
}

/// How the body of a request is delimited.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Body {
    Length(u64),
    Chunked { total: u64, step: Chunk },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

enum State {
    /// Waiting for a request head.
    Head,
    /// Reading (and dropping) the body of a request, then answering it.
    Body(Body, Reply),
}

/// What the connection does once this batch's answers are sent.
enum Next {
    Continue,
    Close,
}

/// A request head, as far as this server cares.
struct Request {
    reply: Reply,
    body: Option<Body>,
    expect_continue: bool,
}

struct Conn {
    state: State,
    /// Bytes of a request not complete yet.
    input: Vec<u8>,
    /// Answers of this batch, sent together.
    out: Vec<u8>,
    /// Set when the server closes: until when it drains the client's bytes.
    linger_until: Option<Instant>,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            state: State::Head,
            input: Vec::new(),
            out: Vec::with_capacity(1024),
            linger_until: None,
        }
    }

    /// Handles every complete request (and body) in `buf`, answering into
    /// `self.out`. Returns how many bytes it used and what to do next.
    fn process(&mut self, buf: &[u8]) -> (usize, Next) {
        let mut pos = 0;
        loop {
            match std::mem::replace(&mut self.state, State::Head) {
                State::Head => {
                    // A client may send empty lines between requests.
                    while let Some(rest) = buf[pos..]
                        .strip_prefix(b"\r\n")
                        .or_else(|| buf[pos..].strip_prefix(b"\n"))
                    {
                        pos = buf.len() - rest.len();
                    }
                    if pos == buf.len() {
                        return (pos, Next::Continue);
                    }
                    let request = match parse_head(&buf[pos..]) {
                        Ok(Some((len, request))) => {
                            pos += len;
                            request
                        }
                        Ok(None) => return (pos, Next::Continue),
                        Err(status) => return (pos, self.refuse(status)),
                    };
                    match request.body {
                        None => {
                            if let Next::Close = self.answer(request.reply) {
                                return (pos, Next::Close);
                            }
                        }
                        Some(Body::Length(n)) | Some(Body::Chunked { total: n, .. })
                            if n > MAX_BODY =>
                        {
                            return (pos, self.refuse(Status::PayloadTooLarge));
                        }
                        Some(body) => {
                            if request.expect_continue && pos == buf.len() {
                                self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                            }
                            self.state = State::Body(body, request.reply);
                        }
                    }
                }
                State::Body(body, reply) => match skip_body(buf, &mut pos, body) {
                    Ok(None) => {
                        if let Next::Close = self.answer(reply) {
                            return (pos, Next::Close);
                        }
                    }
                    Ok(Some(body)) => {
                        self.state = State::Body(body, reply);
                        return (pos, Next::Continue);
                    }
                    Err(status) => return (pos, self.refuse(status)),
                },
            }
        }
    }

    fn answer(&mut self, reply: Reply) -> Next {
        if let Some(sleep) = reply.sleep {
            std::thread::sleep(sleep);
        }
        let out = &mut self.out;
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: atoll\r\nDate: ");
        http_date(out);
        out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nContent-Length: ");
        let _ = write!(out, "{}", HELLO.len());
        out.extend_from_slice(match (reply.keep_alive, reply.http10) {
            (false, _) => b"\r\nConnection: close\r\n\r\n".as_slice(),
            (true, true) => b"\r\nConnection: keep-alive\r\n\r\n",
            (true, false) => b"\r\n\r\n",
        });
        if !reply.head_only {
            out.extend_from_slice(HELLO);
        }
        if reply.keep_alive {
            Next::Continue
        } else {
            Next::Close
        }
    }

    fn refuse(&mut self, status: Status) -> Next {
        let out = &mut self.out;
        let line = status.line();
        let reason = &line[4..];
        let _ = write!(out, "HTTP/1.1 {line}\r\nServer: atoll\r\nDate: ");
        http_date(out);
        let _ = write!(
            out,
            "\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reason}\n",
            reason.len() + 1
        );
        Next::Close
    }

    /// The server is done with the connection: stop sending, and drop what
    /// the client still sends until it closes or `LINGER` passes.
    fn linger(&mut self, socket: &mut Socket) -> Flow {
        if socket.shutdown(Shutdown::Write).is_err() {
            return Flow::Close;
        }
        self.input = Vec::new();
        self.linger_until = Some(Instant::now() + LINGER);
        Flow::ContinueTimeout(Some(LINGER))
    }
}

impl Handler for Conn {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        if let Some(until) = self.linger_until {
            let left = until.saturating_duration_since(Instant::now());
            return if left.is_zero() {
                Flow::Close
            } else {
                Flow::ContinueTimeout(Some(left))
            };
        }
        let next = if self.input.is_empty() {
            // The common case: whole requests, parsed where they lie.
            let (used, next) = self.process(data);
            self.input.extend_from_slice(&data[used..]);
            next
        } else {
            self.input.extend_from_slice(data);
            let mut input = std::mem::take(&mut self.input);
            let (used, next) = self.process(&input);
            input.drain(..used);
            self.input = input;
            next
        };
        if !self.out.is_empty() {
            if let Err(e) = socket.send(&self.out) {
                return Flow::error(e);
            }
            self.out.clear();
        }
        if self.input.is_empty() && self.input.capacity() > KEEP_CAPACITY {
            self.input = Vec::new();
        }
        match next {
            Next::Continue => Flow::Continue,
            Next::Close => self.linger(socket),
        }
    }
}

/// Parses a request head at the start of `buf`: `None` while incomplete,
/// else its length and what matters of it.
///
/// `httparse` does the syntax (request line, header names and values,
/// line endings, no obsolete folding); this function adds the framing
/// rules that keep a proxy in front and this server agreeing on where a
/// request ends (RFC 9112 §6.3): one `Content-Length` value, chunked last,
/// never both.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Request)>, Status> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(Status::HeadersTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Status::HeadersTooLarge),
        Err(httparse::Error::Version) => return Err(version_error(window)),
        Err(_) => return Err(Status::BadRequest),
    };
    // A complete parse has all three; the defaults only satisfy the types.
    let method = request.method.unwrap_or_default();
    let target = request.path.unwrap_or_default();
    let http10 = request.version == Some(0);

    let (mut close, mut keep_alive, mut expect_continue) = (false, false, false);
    let (mut hosts, mut length, mut chunked) = (0, None::<u64>, None::<bool>);
    for header in request.headers.iter() {
        let (name, value) = (header.name, header.value);
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_decimal(value.trim_ascii()).ok_or(Status::BadRequest)?;
            if length.is_some_and(|m| m != n) {
                return Err(Status::BadRequest);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked must be the last coding, once; the others describe
            // content this server drops anyway.
            for coding in list(value) {
                if chunked == Some(true) {
                    return Err(Status::BadRequest);
                }
                chunked = Some(coding.eq_ignore_ascii_case(b"chunked"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for option in list(value) {
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    if hosts > 1 || (!http10 && hosts == 0) {
        return Err(Status::BadRequest);
    }
    let body = match (chunked, length) {
        (Some(_), Some(_)) => return Err(Status::BadRequest),
        (Some(true), None) if !http10 => Some(Body::Chunked {
            total: 0,
            step: Chunk::Size,
        }),
        (Some(_), None) => return Err(Status::BadRequest),
        (None, Some(0) | None) => None,
        (None, Some(n)) => Some(Body::Length(n)),
    };
    let reply = Reply {
        keep_alive: if http10 { keep_alive && !close } else { !close },
        head_only: method == "HEAD",
        http10,
        sleep: sleep_route(target.as_bytes())?,
    };
    Ok(Some((
        len,
        Request {
            reply,
            body,
            expect_continue,
        },
    )))
}

/// `httparse` knows HTTP/1.0 and 1.1 only: a well-formed other version
/// (`HTTP/2.0`) is one this server does not support, anything else is
/// malformed.
fn version_error(head: &[u8]) -> Status {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let version = line.trim_ascii_end().rsplit(|&b| b == b' ').next();
    match version {
        Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor])
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Status::VersionNotSupported
        }
        _ => Status::BadRequest,
    }
}

/// The sleep `/sleep/MS` asks for; `None` for every other path.
fn sleep_route(target: &[u8]) -> Result<Option<Duration>, Status> {
    let Some(ms) = target.strip_prefix(b"/sleep/") else {
        return Ok(None);
    };
    match parse_decimal(ms) {
        Some(ms) if ms <= MAX_SLEEP_MS => Ok(Some(Duration::from_millis(ms))),
        _ => Err(Status::BadRequest),
    }
}

/// The non-empty elements of a comma-separated header value.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|s| !s.is_empty())
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Drops body bytes from `buf[*pos..]`. Returns `None` when the body is
/// complete, else what is left of it.
fn skip_body(buf: &[u8], pos: &mut usize, body: Body) -> Result<Option<Body>, Status> {
    let (mut total, mut step) = match body {
        Body::Length(left) => {
            let take = left.min((buf.len() - *pos) as u64);
            *pos += take as usize;
            return Ok((left > take).then_some(Body::Length(left - take)));
        }
        Body::Chunked { total, step } => (total, step),
    };
    loop {
        let rest = &buf[*pos..];
        let pending = Ok(Some(Body::Chunked { total, step }));
        step = match step {
            Chunk::Size => {
                // The size line with its extensions, which are skipped.
                let window = &rest[..rest.len().min(MAX_LINE)];
                let (used, size) = match httparse::parse_chunk_size(window) {
                    Ok(httparse::Status::Complete(line)) => line,
                    Ok(httparse::Status::Partial) if rest.len() < MAX_LINE => return pending,
                    _ => return Err(Status::BadRequest),
                };
                total = total.saturating_add(size);
                if total > MAX_BODY {
                    return Err(Status::PayloadTooLarge);
                }
                *pos += used;
                if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                }
            }
            Chunk::Data(left) => {
                let take = left.min(rest.len() as u64);
                *pos += take as usize;
                if take < left {
                    let step = Chunk::Data(left - take);
                    return Ok(Some(Body::Chunked { total, step }));
                }
                Chunk::DataEnd
            }
            Chunk::DataEnd => match rest {
                [b'\r', b'\n', ..] | [b'\n', ..] => {
                    *pos += if rest[0] == b'\r' { 2 } else { 1 };
                    Chunk::Size
                }
                [] | [b'\r'] => return pending,
                _ => return Err(Status::BadRequest),
            },
            // The trailer section, checked and dropped once it is whole.
            Chunk::Trailers => {
                let window = &rest[..rest.len().min(MAX_HEAD)];
                let mut trailers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                return match httparse::parse_headers(window, &mut trailers) {
                    Ok(httparse::Status::Complete((used, _))) => {
                        *pos += used;
                        Ok(None)
                    }
                    Ok(httparse::Status::Partial) if rest.len() < MAX_HEAD => pending,
                    Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                        Err(Status::HeadersTooLarge)
                    }
                    Err(_) => Err(Status::BadRequest),
                };
            }
        };
    }
}

/// Appends the current time as an HTTP date. Each worker thread formats it
/// once a second and copies it otherwise.
fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHE: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|cache| {
        let (second, mut text) = cache.get();
        if second != now {
            text = format_date(now);
            cache.set((now, text));
        }
        out.extend_from_slice(&text);
    });
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110's IMF-fixdate).
fn format_date(secs: u64) -> [u8; 29] {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let (hour, minute, second) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let weekday = DAYS[(days % 7 + 4) as usize % 7]; // 1970-01-01 was a Thursday
                                                     // Howard Hinnant's days-to-civil, for days since 1970-01-01.
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut text = [b' '; 29];
    let _ = write!(
        &mut text[..],
        "{weekday}, {day:02} {} {year:04} {hour:02}:{minute:02}:{second:02} GMT",
        MONTHS[(month - 1) as usize]
    );
    text
}

const HELP: &str = "\
http_hello: an HTTP/1.1 hello-world server on atoll

Options (defaults in brackets):
  --ip ADDR        address to listen on [127.0.0.1]
  --port N         port, 0 for a free one [8080]
  --workers N      base worker threads [one per core]
  --max-workers N  most worker threads, for blocking handlers [4096]
  --acceptors N    acceptor threads [one per core, at most 16]
  --help           this text

Routes: GET /sleep/MS sleeps MS ms (at most 60000) before answering, as a
blocking call would; every other path answers at once.";

fn main() -> ExitCode {
    common::run_main("http_hello", run)
}

fn run() -> common::Result {
    let mut builder = Server::builder()
        .ip(IpAddr::from([127, 0, 0, 1]))
        .port(8080);
    let mut args = common::Args::from_env();
    while let Some(flag) = args.flag()? {
        if args.server_flag(&flag, &mut builder)? {
            continue;
        }
        if matches!(flag.as_str(), "--help" | "-h") {
            println!("{HELP}");
            return Ok(());
        }
        return Err(args.unknown());
    }
    let server = builder.start(|_conn| Ok(Conn::new()))?;
    println!("listening on {}", server.local_addr()?);
    common::wait_for_signal_then_stop(&server, Duration::from_secs(5))?;
    Ok(())
}
