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
//! An HTTP/1.1 request without exactly one `Host`, and one with both
//! `Content-Length` and `Transfer-Encoding`, are malformed (RFC 9112).
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
/// The longest chunk-size line (with extensions) or trailer line.
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
    Trailer(usize),
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
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Request)>, Status> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let mut lines = Lines {
        buf: window,
        pos: 0,
    };
    let Some(request_line) = lines.next()? else {
        return incomplete(buf);
    };
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Status::BadRequest);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Status::BadRequest);
    }
    if target.is_empty() || !target.iter().all(|&b| b > b' ' && b != 0x7f) {
        return Err(Status::BadRequest);
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(Status::VersionNotSupported)
        }
        _ => return Err(Status::BadRequest),
    };

    let mut headers = 0;
    let (mut close, mut keep_alive, mut expect_continue) = (false, false, false);
    let (mut hosts, mut length, mut chunked) = (0, None::<u64>, None::<bool>);
    loop {
        let Some(line) = lines.next()? else {
            return incomplete(buf);
        };
        if line.is_empty() {
            break;
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return Err(Status::HeadersTooLarge);
        }
        let (name, value) = split_header(line)?;
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_decimal(value).ok_or(Status::BadRequest)?;
            if length.is_some_and(|m| m != n) {
                return Err(Status::BadRequest);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked must be the last coding, once; the others describe
            // content this server drops anyway.
            for coding in list(value) {
                if chunked == Some(true) {
                    return Err(Status::BadRequest);
                }
                chunked = Some(coding.eq_ignore_ascii_case(b"chunked"));
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in list(value) {
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue = value.eq_ignore_ascii_case(b"100-continue");
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
        head_only: method == b"HEAD",
        http10,
        sleep: sleep_route(target)?,
    };
    Ok(Some((
        lines.pos,
        Request {
            reply,
            body,
            expect_continue,
        },
    )))
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

/// No complete head yet: fine unless it can no longer fit the limit.
fn incomplete<T>(buf: &[u8]) -> Result<Option<T>, Status> {
    if buf.len() >= MAX_HEAD {
        Err(Status::HeadersTooLarge)
    } else {
        Ok(None)
    }
}

/// Lines ended by LF, with an optional CR before it (RFC 9112 §2.2).
struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Lines<'a> {
    /// The next complete line, without its ending; `None` if incomplete.
    fn next(&mut self) -> Result<Option<&'a [u8]>, Status> {
        let rest = &self.buf[self.pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        self.pos += nl + 1;
        let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
        if line.contains(&b'\r') {
            return Err(Status::BadRequest); // a bare CR
        }
        Ok(Some(line))
    }
}

/// `name: value`, the value without surrounding whitespace.
fn split_header(line: &[u8]) -> Result<(&[u8], &[u8]), Status> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(Status::BadRequest)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    // An empty or spaced name also rejects obsolete line folding.
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(Status::BadRequest);
    }
    if value.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return Err(Status::BadRequest);
    }
    Ok((name, value.trim_ascii()))
}

/// The non-empty elements of a comma-separated header value.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|s| !s.is_empty())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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
        let line = || -> Result<Option<(usize, &[u8])>, Status> {
            let window = &rest[..rest.len().min(MAX_LINE)];
            match window.iter().position(|&b| b == b'\n') {
                Some(nl) => Ok(Some((nl + 1, window[..nl].trim_ascii_end()))),
                None if rest.len() >= MAX_LINE => Err(Status::BadRequest),
                None => Ok(None),
            }
        };
        let pending = Ok(Some(Body::Chunked { total, step }));
        step = match step {
            Chunk::Size => {
                let Some((used, line)) = line()? else {
                    return pending;
                };
                let digits = line.split(|&b| b == b';').next().unwrap_or_default();
                let size = parse_hex(digits.trim_ascii()).ok_or(Status::BadRequest)?;
                total = total.saturating_add(size);
                if total > MAX_BODY {
                    return Err(Status::PayloadTooLarge);
                }
                *pos += used;
                if size == 0 {
                    Chunk::Trailer(0)
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
            Chunk::Trailer(lines) => {
                let Some((used, line)) = line()? else {
                    return pending;
                };
                *pos += used;
                if line.is_empty() {
                    return Ok(None);
                }
                if lines >= MAX_HEADERS {
                    return Err(Status::HeadersTooLarge);
                }
                Chunk::Trailer(lines + 1)
            }
        };
    }
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 15 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &h| {
        Some(n * 16 + u64::from((h as char).to_digit(16)?))
    })
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
  --workers N      worker threads [2 x cores, at least 4]
  --acceptors N    poll threads [one per core, at most 16]
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
    while let Some(flag) = args.next() {
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
