//! The protocol examples, `mini_redis` and `http_hello`, run as child
//! processes and driven by the clients people use against Redis and web
//! servers (`redis-cli`, `redis-benchmark`, `curl`, `wrk`), plus raw sockets
//! for the error paths no client sends on purpose.
//!
//! A missing client fails its test with the Debian package to install;
//! `ATOLL_SKIP_EXTERNAL_CLIENTS=1` skips those tests instead.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use util::examples::{external as client, signal, Served};
use util::{connect, is_closed, read_to_close, wait_until, PATIENCE};

// ------------------------------------------------------------- the clients

/// Runs a client to completion, feeding it `stdin`; kills it after `limit`.
fn run(mut command: Command, stdin: &[u8], limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    std::thread::spawn(move || input.write_all(&stdin));
    let pid = child.id().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("client output"),
        Err(_) => {
            let _ = signal("KILL", &pid);
            panic!("{command:?} did not finish within {limit:?}");
        }
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

// ------------------------------------------------------------ mini_redis

fn redis_cli(server: &Served, args: &[&str], stdin: &str) -> Option<String> {
    let mut cli = client("redis-cli", "redis-tools")?;
    cli.args(["-h", "127.0.0.1", "-p", &server.port()])
        .args(args);
    let output = run(cli, stdin.as_bytes(), PATIENCE);
    assert!(output.status.success(), "redis-cli: {}", stderr(&output));
    Some(stdout(&output))
}

#[test]
fn redis_cli_sets_gets_and_increments() {
    let server = Served::start("mini_redis", &["--workers", "2"]);
    let Some(ok) = redis_cli(&server, &["SET", "greeting", "hello world"], "") else {
        return;
    };
    assert_eq!(ok, "OK\n");
    let cli = |args: &[&str]| redis_cli(&server, args, "").unwrap_or_default();
    assert_eq!(cli(&["GET", "greeting"]), "hello world\n");
    assert_eq!(cli(&["INCR", "visits"]), "1\n");
    assert_eq!(cli(&["INCR", "visits"]), "2\n");
    assert_eq!(cli(&["GET", "nothing"]), "\n");
    assert_eq!(cli(&["MSET", "a", "1", "b", "2"]), "OK\n");
    assert_eq!(cli(&["MGET", "a", "b", "nothing"]), "1\n2\n\n");
    assert_eq!(cli(&["EXISTS", "a", "b", "nothing"]), "2\n");
    assert_eq!(cli(&["DEL", "a", "nothing"]), "1\n");
    // Several commands on one connection, as typed into redis-cli.
    let session = redis_cli(&server, &[], "SET n 41\nINCR n\nGET greeting\n").unwrap_or_default();
    assert_eq!(session, "OK\n42\nhello world\n");
    server.stop();
}

#[test]
fn redis_cli_gets_redis_errors_and_the_connection_survives() {
    let server = Served::start("mini_redis", &[]);
    let commands = "FOO bar\nGET\nSET k notanumber\nINCR k\nSET k 1 EX 0\nPING\n";
    let Some(output) = redis_cli(&server, &[], commands) else {
        return;
    };
    // What redis-cli prints for these against Redis 7.
    assert_eq!(
        output,
        "ERR unknown command 'FOO', with args beginning with: 'bar' \n\n\
         ERR wrong number of arguments for 'get' command\n\n\
         OK\n\
         ERR value is not an integer or out of range\n\n\
         ERR invalid expire time in 'set' command\n\n\
         PONG\n"
    );
    server.stop();
}

#[test]
fn redis_benchmark_completes_with_nonzero_rates() {
    let server = Served::start("mini_redis", &["--workers", "2"]);
    let Some(mut bench) = client("redis-benchmark", "redis-tools") else {
        return;
    };
    bench.args(["-h", "127.0.0.1", "-p", &server.port()]);
    bench.args(["-t", "ping,set,get", "-n", "2000", "-c", "10", "-q"]);
    let output = run(bench, b"", Duration::from_secs(60));
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(output.status.success(), "redis-benchmark: {out}{err}");
    assert!(!err.contains("WARNING"), "redis-benchmark warned: {err}");
    // Progress lines end in \r; the result of each test in \n.
    for test in ["PING_INLINE", "PING_MBULK", "SET", "GET"] {
        let rate = out
            .split(['\r', '\n'])
            .filter_map(|line| line.trim().strip_prefix(&format!("{test}: ")))
            .find_map(|rest| rest.split_once(" requests per second"))
            .and_then(|(rate, _)| rate.parse::<f64>().ok());
        assert!(
            rate.is_some_and(|r| r > 0.0),
            "no rate for {test} in {out:?}"
        );
    }
    server.stop();
}

/// A RESP2 reply, as the tests read them.
#[derive(Debug, PartialEq)]
enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

fn simple(s: &str) -> Resp {
    Resp::Simple(s.to_string())
}

fn error(s: &str) -> Resp {
    Resp::Error(s.to_string())
}

fn bulk(s: &[u8]) -> Resp {
    Resp::Bulk(Some(s.to_vec()))
}

fn read_reply(reader: &mut impl BufRead) -> Resp {
    let mut line = String::new();
    reader.read_line(&mut line).expect("a reply line");
    let line = line
        .strip_suffix("\r\n")
        .unwrap_or_else(|| panic!("reply line {line:?} without CRLF"));
    let (kind, rest) = line.split_at(1);
    let number = || rest.parse::<i64>().expect("a number");
    match kind {
        "+" => Resp::Simple(rest.to_string()),
        "-" => Resp::Error(rest.to_string()),
        ":" => Resp::Int(number()),
        "$" if number() < 0 => Resp::Bulk(None),
        "$" => {
            let mut data = vec![0; number() as usize + 2];
            reader.read_exact(&mut data).expect("bulk data");
            assert!(data.ends_with(b"\r\n"));
            data.truncate(data.len() - 2);
            Resp::Bulk(Some(data))
        }
        "*" => Resp::Array((0..number()).map(|_| read_reply(reader)).collect()),
        _ => panic!("not a RESP2 reply: {line:?}"),
    }
}

/// A raw connection to mini_redis.
struct Redis {
    reader: BufReader<TcpStream>,
}

impl Redis {
    fn connect(server: &Served) -> Redis {
        Redis {
            reader: BufReader::new(connect(server.addr)),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    /// Sends one command as a multibulk array and reads its reply.
    fn call(&mut self, args: &[&[u8]]) -> Resp {
        let mut command = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            command.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            command.extend_from_slice(arg);
            command.extend_from_slice(b"\r\n");
        }
        self.send(&command);
        self.reply()
    }

    fn reply(&mut self) -> Resp {
        read_reply(&mut self.reader)
    }

    /// Whether the server closed the connection (nothing left unread).
    fn is_closed(&mut self) -> bool {
        assert!(self.reader.buffer().is_empty(), "unread bytes left");
        is_closed(self.reader.get_mut())
    }
}

#[test]
fn malformed_multibulk_length_gets_a_protocol_error_then_close() {
    let server = Served::start("mini_redis", &[]);
    let mut redis = Redis::connect(&server);
    // The valid command before the bad one is still answered.
    redis.send(b"*1\r\n$4\r\nPING\r\n*x\r\n");
    assert_eq!(redis.reply(), simple("PONG"));
    assert_eq!(
        redis.reply(),
        error("ERR Protocol error: invalid multibulk length")
    );
    assert!(redis.is_closed());

    let mut redis = Redis::connect(&server);
    redis.send(b"*1\r\n:5\r\n");
    assert_eq!(
        redis.reply(),
        error("ERR Protocol error: expected '$', got ':'")
    );
    assert!(redis.is_closed());

    let mut redis = Redis::connect(&server);
    redis.send(b"PING \"unbalanced\r\n");
    assert_eq!(
        redis.reply(),
        error("ERR Protocol error: unbalanced quotes in request")
    );
    assert!(redis.is_closed());
    server.stop();
}

#[test]
fn command_errors_are_answered_and_the_connection_survives() {
    let server = Served::start("mini_redis", &[]);
    let mut redis = Redis::connect(&server);
    assert_eq!(
        redis.call(&[b"NOPE", b"x\r\ny"]),
        error("ERR unknown command 'NOPE', with args beginning with: 'x  y' ")
    );
    assert_eq!(
        redis.call(&[b"GET"]),
        error("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(redis.call(&[b"SET", b"word", b"hello"]), simple("OK"));
    assert_eq!(
        redis.call(&[b"INCR", b"word"]),
        error("ERR value is not an integer or out of range")
    );
    assert_eq!(
        redis.call(&[b"SET", b"k", b"v", b"NX", b"XX"]),
        error("ERR syntax error")
    );
    assert_eq!(
        redis.call(&[b"SET", b"max", b"9223372036854775807"]),
        simple("OK")
    );
    assert_eq!(
        redis.call(&[b"INCR", b"max"]),
        error("ERR increment or decrement would overflow")
    );
    assert_eq!(
        redis.call(&[b"SELECT", b"1"]),
        error("ERR DB index is out of range")
    );
    assert_eq!(redis.call(&[b"PING"]), simple("PONG"));
    server.stop();
}

#[test]
fn a_hundred_commands_in_one_write_are_answered_in_order() {
    let server = Served::start("mini_redis", &["--workers", "2"]);
    let mut redis = Redis::connect(&server);
    let batch: Vec<u8> = (0..100)
        .flat_map(|_| b"*2\r\n$4\r\nINCR\r\n$3\r\nseq\r\n".iter().copied())
        .collect();
    redis.send(&batch);
    for n in 1..=100 {
        assert_eq!(redis.reply(), Resp::Int(n));
    }
    // Inline and multibulk commands mixed in one write.
    redis.send(b"PING\r\n*1\r\n$4\r\nPING\r\nECHO hi\r\n*2\r\n$3\r\nGET\r\n$3\r\nseq\r\n");
    assert_eq!(redis.reply(), simple("PONG"));
    assert_eq!(redis.reply(), simple("PONG"));
    assert_eq!(redis.reply(), bulk(b"hi"));
    assert_eq!(redis.reply(), bulk(b"100"));
    server.stop();
}

#[test]
fn a_command_split_at_every_byte_is_parsed() {
    let server = Served::start("mini_redis", &[]);
    let mut redis = Redis::connect(&server);
    let command = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$11\r\nhello world\r\n";
    for byte in command {
        redis.send(&[*byte]);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(redis.reply(), simple("OK"));
    for byte in b"GET key\r\n" {
        redis.send(&[*byte]);
    }
    assert_eq!(redis.reply(), bulk(b"hello world"));
    server.stop();
}

#[test]
fn megabyte_values_round_trip() {
    let server = Served::start("mini_redis", &[]);
    let mut redis = Redis::connect(&server);
    let value: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    assert_eq!(redis.call(&[b"SET", b"big", &value]), simple("OK"));
    assert_eq!(redis.call(&[b"GET", b"big"]), bulk(&value));
    // A 3 MiB reply goes out in pieces, in order.
    assert_eq!(
        redis.call(&[b"MGET", b"big", b"none", b"big", b"big"]),
        Resp::Array(vec![
            bulk(&value),
            Resp::Bulk(None),
            bulk(&value),
            bulk(&value)
        ])
    );
    server.stop();
}

#[test]
fn an_oversized_bulk_string_is_refused_then_close() {
    let server = Served::start("mini_redis", &[]);
    let mut redis = Redis::connect(&server);
    // The documented limit is 64 MiB: one byte more is refused at its
    // length, before any of it is sent.
    redis.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$67108865\r\n");
    assert_eq!(
        redis.reply(),
        error("ERR Protocol error: invalid bulk length")
    );
    assert!(redis.is_closed());
    let mut redis = Redis::connect(&server);
    redis.send(b"*2\r\n$4\r\nECHO\r\n$-1\r\n");
    assert_eq!(
        redis.reply(),
        error("ERR Protocol error: invalid bulk length")
    );
    assert!(redis.is_closed());
    // The server goes on.
    assert_eq!(Redis::connect(&server).call(&[b"PING"]), simple("PONG"));
    server.stop();
}

#[test]
fn inline_commands_work_as_typed_in_telnet() {
    let server = Served::start("mini_redis", &[]);
    let mut redis = Redis::connect(&server);
    redis.send(
        b"PING\r\nSET greeting \"hello\\x21 world\"\r\nGET greeting\r\n\r\nECHO 'it\\'s'\nQUIT\r\n",
    );
    assert_eq!(redis.reply(), simple("PONG"));
    assert_eq!(redis.reply(), simple("OK"));
    assert_eq!(redis.reply(), bulk(b"hello! world"));
    assert_eq!(redis.reply(), bulk(b"it's"));
    assert_eq!(redis.reply(), simple("OK"));
    assert!(redis.is_closed());
    server.stop();
}

#[test]
fn keys_expire_and_set_conditions_hold() {
    let server = Served::start("mini_redis", &[]);
    let mut redis = Redis::connect(&server);
    assert_eq!(
        redis.call(&[b"SET", b"brief", b"v", b"PX", b"50"]),
        simple("OK")
    );
    assert_eq!(
        redis.call(&[b"SET", b"long", b"v", b"EX", b"1000"]),
        simple("OK")
    );
    wait_until("the key to expire", || {
        redis.call(&[b"GET", b"brief"]) == Resp::Bulk(None)
    });
    assert_eq!(redis.call(&[b"EXISTS", b"brief", b"long"]), Resp::Int(1));
    assert_eq!(
        redis.call(&[b"SET", b"long", b"w", b"NX"]),
        Resp::Bulk(None)
    );
    assert_eq!(
        redis.call(&[b"SET", b"brief", b"w", b"XX"]),
        Resp::Bulk(None)
    );
    assert_eq!(redis.call(&[b"SET", b"brief", b"w", b"NX"]), simple("OK"));
    assert_eq!(redis.call(&[b"SET", b"long", b"w", b"XX"]), simple("OK"));
    assert_eq!(
        redis.call(&[b"MGET", b"brief", b"long"]),
        Resp::Array(vec![bulk(b"w"), bulk(b"w")])
    );
    assert_eq!(
        redis.call(&[b"DEL", b"brief", b"long", b"brief"]),
        Resp::Int(2)
    );
    server.stop();
}

#[test]
fn connect_time_commands_answer_as_redis_7() {
    let server = Served::start("mini_redis", &[]);
    let mut redis = Redis::connect(&server);
    let Resp::Array(hello) = redis.call(&[b"HELLO", b"2"]) else {
        panic!("HELLO 2 is not an array");
    };
    assert_eq!(hello.len(), 14, "{hello:?}");
    assert_eq!(hello[0..2], [bulk(b"server"), bulk(b"redis")]);
    assert_eq!(hello[4..6], [bulk(b"proto"), Resp::Int(2)]);
    assert_eq!(hello[12..], [bulk(b"modules"), Resp::Array(vec![])]);
    assert_eq!(
        redis.call(&[b"HELLO", b"3"]),
        error("NOPROTO unsupported protocol version")
    );
    assert_eq!(
        redis.call(&[b"CONFIG", b"GET", b"save"]),
        Resp::Array(vec![bulk(b"save"), bulk(b"")])
    );
    assert_eq!(
        redis.call(&[b"CONFIG", b"GET", b"appendonly"]),
        Resp::Array(vec![bulk(b"appendonly"), bulk(b"no")])
    );
    assert_eq!(
        redis.call(&[b"CONFIG", b"GET", b"nosuch"]),
        Resp::Array(vec![])
    );
    assert_eq!(redis.call(&[b"COMMAND", b"DOCS"]), Resp::Array(vec![]));
    assert_eq!(redis.call(&[b"COMMAND"]), Resp::Array(vec![]));
    assert_eq!(
        redis.call(&[b"CLIENT", b"SETINFO", b"lib-name", b"atoll-tests"]),
        simple("OK")
    );
    assert_eq!(
        redis.call(&[b"CLIENT", b"SETNAME", b"tester"]),
        simple("OK")
    );
    assert_eq!(redis.call(&[b"CLIENT", b"GETNAME"]), bulk(b"tester"));
    assert_eq!(redis.call(&[b"SELECT", b"0"]), simple("OK"));
    let Resp::Bulk(Some(info)) = redis.call(&[b"INFO"]) else {
        panic!("INFO is not a bulk string");
    };
    assert!(info.starts_with(b"# Server\r\n"));
    server.stop();
}

#[test]
fn sigterm_closes_idle_connections_and_exits_cleanly() {
    let server = Served::start("mini_redis", &[]);
    let mut idle = Redis::connect(&server);
    assert_eq!(idle.call(&[b"PING"]), simple("PONG"));
    server.stop();
    assert!(idle.is_closed());
}

// ------------------------------------------------------------ http_hello

fn curl(args: &[&str]) -> Option<Output> {
    let mut curl = client("curl", "curl")?;
    curl.args(["--silent", "--show-error", "--max-time", "10"])
        .args(args);
    let output = run(curl, b"", PATIENCE * 2);
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        stderr(&output)
    );
    Some(output)
}

#[test]
fn curl_gets_hello_world_with_a_date() {
    let server = Served::start("http_hello", &["--workers", "2"]);
    let Some(output) = curl(&["--include", &server.url("/")]) else {
        return;
    };
    let text = stdout(&output);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\r\nContent-Length: 13\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nHello, World!"), "{text}");
    // GNU date reads the Date header and writes it back the same way.
    let date = text
        .lines()
        .find_map(|l| l.strip_prefix("Date: "))
        .expect("a Date header")
        .trim_end();
    let seconds = Command::new("date")
        .args(["-u", "-d", date, "+%s"])
        .output();
    let seconds: u64 = seconds
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("date cannot read {date:?}"));
    let again = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{seconds}"),
            "+%a, %d %b %Y %H:%M:%S GMT",
        ])
        .output()
        .expect("date");
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim_end(), date);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(seconds) < 3600, "Date {date} is not now");
    server.stop();
}

#[test]
fn curl_reuses_the_connection_for_two_urls() {
    let server = Served::start("http_hello", &[]);
    let Some(output) = curl(&[
        "--output",
        "/dev/null",
        "--output",
        "/dev/null",
        "--write-out",
        "%{num_connects} %{http_code}\n",
        &server.url("/a"),
        &server.url("/b"),
    ]) else {
        return;
    };
    // The second transfer made no new connection.
    assert_eq!(stdout(&output), "1 200\n0 200\n");
    server.stop();
}

#[test]
fn curl_posts_bodies_plain_and_chunked() {
    let server = Served::start("http_hello", &[]);
    let Some(output) = curl(&["--data", "name=atoll", &server.url("/form")]) else {
        return;
    };
    assert_eq!(stdout(&output), "Hello, World!");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let small = dir.join("http_hello_300k.bin");
    std::fs::write(&small, vec![b'x'; 300 << 10]).unwrap();
    let upload = format!("@{}", small.display());
    let chunked = curl(&[
        "--header",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &upload,
        "--write-out",
        " %{http_code}",
        &server.url("/upload"),
    ]);
    assert_eq!(stdout(&chunked.unwrap()), "Hello, World! 200");
    let big = dir.join("http_hello_2m.bin");
    std::fs::write(&big, vec![b'x'; 2 << 20]).unwrap();
    let upload = format!("@{}", big.display());
    let refused = curl(&[
        "--data-binary",
        &upload,
        "--output",
        "/dev/null",
        "--write-out",
        "%{http_code}",
        &server.url("/upload"),
    ]);
    assert_eq!(stdout(&refused.unwrap()), "413");
    server.stop();
}

#[test]
fn wrk_runs_without_errors() {
    let server = Served::start("http_hello", &["--workers", "2"]);
    let Some(mut wrk) = client("wrk", "wrk") else {
        return;
    };
    wrk.args(["-t1", "-c10", "-d1s", &server.url("/")]);
    let output = run(wrk, b"", Duration::from_secs(30));
    let text = stdout(&output);
    assert!(output.status.success(), "wrk: {text}{}", stderr(&output));
    // wrk prints these lines only when something went wrong.
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|r| r.trim().parse::<f64>().ok());
    assert!(rate.is_some_and(|r| r > 0.0), "{text}");
    server.stop();
}

/// An HTTP response, as the tests read them.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response; `head_only` for the answer to a HEAD request.
fn read_response(reader: &mut impl BufRead, head_only: bool) -> Response {
    let mut line = String::new();
    reader.read_line(&mut line).expect("a status line");
    let status = line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("status line {line:?}"));
    let mut headers = Vec::new();
    for _ in 0..200 {
        line.clear();
        reader.read_line(&mut line).expect("a header line");
        let header = line.trim_end_matches("\r\n");
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(": ").expect("name: value");
        headers.push((name.to_string(), value.to_string()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if !head_only {
        let len: usize = response
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .expect("a Content-Length");
        response.body = vec![0; len];
        reader.read_exact(&mut response.body).expect("the body");
    }
    response
}

struct Http {
    reader: BufReader<TcpStream>,
}

impl Http {
    fn connect(server: &Served) -> Http {
        Http {
            reader: BufReader::new(connect(server.addr)),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    fn response(&mut self) -> Response {
        read_response(&mut self.reader, false)
    }

    /// Reads a refusal, then expects the server to close.
    fn refused(&mut self) -> Response {
        let response = self.response();
        assert_eq!(response.header("connection"), Some("close"));
        assert!(read_to_close(self.reader.get_mut()).is_empty());
        response
    }

    fn is_closed(&mut self) -> bool {
        assert!(self.reader.buffer().is_empty(), "unread bytes left");
        is_closed(self.reader.get_mut())
    }
}

#[test]
fn three_pipelined_requests_in_one_write_are_answered_in_order() {
    let server = Served::start("http_hello", &[]);
    let mut http = Http::connect(&server);
    http.send(
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
          HEAD /2 HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    let first = http.response();
    assert_eq!(
        (first.status, first.body.as_slice()),
        (200, &b"Hello, World!"[..])
    );
    assert_eq!(first.header("connection"), None);
    let second = read_response(&mut http.reader, true);
    assert_eq!(second.status, 200);
    assert_eq!(second.header("content-length"), Some("13"));
    let third = http.response();
    assert_eq!(
        (third.status, third.body.as_slice()),
        (200, &b"Hello, World!"[..])
    );
    assert_eq!(third.header("connection"), Some("close"));
    assert!(http.is_closed());
    server.stop();
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = Served::start("http_hello", &[]);
    let mut http = Http::connect(&server);
    for i in 0..50 {
        http.send(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        assert_eq!(http.response().status, 200);
    }
    server.stop();
}

#[test]
fn a_9_kib_head_gets_431_then_close() {
    let server = Served::start("http_hello", &[]);
    let mut http = Http::connect(&server);
    let filler = "a".repeat(9 << 10);
    http.send(format!("GET / HTTP/1.1\r\nHost: a\r\nX-Filler: {filler}\r\n\r\n").as_bytes());
    assert_eq!(http.refused().status, 431);

    let mut http = Http::connect(&server);
    let headers: String = (0..101).map(|i| format!("X-{i}: {i}\r\n")).collect();
    http.send(format!("GET / HTTP/1.1\r\nHost: a\r\n{headers}\r\n").as_bytes());
    assert_eq!(http.refused().status, 431);
    server.stop();
}

#[test]
fn malformed_requests_get_400_then_close() {
    let server = Served::start("http_hello", &[]);
    let bad: [&[u8]; 7] = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n", // no Host
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 12x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ];
    for request in bad {
        let mut http = Http::connect(&server);
        http.send(request);
        let status = http.refused().status;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(request));
    }
    let mut http = Http::connect(&server);
    http.send(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n");
    assert_eq!(http.refused().status, 505);
    server.stop();
}

#[test]
fn a_body_over_1_mib_gets_413_then_close() {
    let server = Served::start("http_hello", &[]);
    let mut http = Http::connect(&server);
    http.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048577\r\n\r\n");
    assert_eq!(http.refused().status, 413);
    let mut http = Http::connect(&server);
    http.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n100001\r\n");
    assert_eq!(http.refused().status, 413);
    server.stop();
}

#[test]
fn connection_close_is_honoured() {
    let server = Served::start("http_hello", &[]);
    let mut http = Http::connect(&server);
    http.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let response = http.response();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(http.is_closed());
    server.stop();
}

#[test]
fn http_1_0_closes_unless_asked_to_keep_alive() {
    let server = Served::start("http_hello", &[]);
    let mut http = Http::connect(&server);
    http.send(b"GET / HTTP/1.0\r\n\r\n");
    let response = http.response();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(http.is_closed());

    let mut http = Http::connect(&server);
    for _ in 0..2 {
        http.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let response = http.response();
        assert_eq!(response.header("connection"), Some("keep-alive"));
    }
    server.stop();
}

#[test]
fn a_chunked_body_split_across_writes_is_skipped() {
    let server = Served::start("http_hello", &[]);
    let mut http = Http::connect(&server);
    let request: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: yes\r\n\r\n\
        GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    for piece in request.chunks(7) {
        http.send(piece);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(http.response().status, 200);
    assert_eq!(http.response().status, 200);
    // Expect: 100-continue is answered before the body is sent.
    http.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    let mut line = String::new();
    http.reader.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    line.clear();
    http.reader.read_line(&mut line).unwrap();
    assert_eq!(line, "\r\n");
    http.send(b"abc");
    assert_eq!(http.response().body, b"Hello, World!");
    server.stop();
}

// ------------------------------------------- handlers that block (--delay-ms, /sleep/MS)

#[test]
fn echo_with_a_delay_echoes_every_client_whole_and_in_order() {
    let server = Served::start("echo", &["--delay-ms", "20", "--workers", "2"]);
    let addr = server.addr;
    let clients: Vec<_> = (0..4)
        .map(|c| {
            std::thread::spawn(move || {
                let mut stream = connect(addr);
                for i in 0..5 {
                    util::round_trip(&mut stream, format!("client {c} message {i}\n").as_bytes());
                }
                // Several messages in one write come back as they went.
                let burst: Vec<u8> = (0..10)
                    .flat_map(|i| format!("{c}:{i};").into_bytes())
                    .collect();
                util::round_trip(&mut stream, &burst);
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client thread");
    }
    util::client_round_trip(addr, b"through atoll's own client");
    server.stop();
}

#[test]
fn echo_refuses_a_delay_that_is_not_a_number() {
    let output = run(
        {
            let mut echo = util::examples::command("echo");
            echo.args(["--port", "0", "--delay-ms", "soon"]);
            echo
        },
        b"",
        PATIENCE,
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--delay-ms"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn curl_gets_hello_world_from_the_sleep_route() {
    let server = Served::start("http_hello", &["--workers", "2"]);
    let Some(output) = curl(&[
        "--write-out",
        " %{http_code}\n",
        &server.url("/sleep/30"),
        &server.url("/"),
    ]) else {
        return;
    };
    assert_eq!(stdout(&output), "Hello, World! 200\nHello, World! 200\n");
    server.stop();
}

#[test]
fn pipelined_sleeping_and_fast_requests_are_answered_in_order() {
    let server = Served::start("http_hello", &["--workers", "2"]);
    let mut http = Http::connect(&server);
    http.send(
        b"GET /sleep/40 HTTP/1.1\r\nHost: a\r\n\r\n\
          HEAD /sleep/0 HTTP/1.1\r\nHost: a\r\n\r\n\
          GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let first = http.response();
    assert_eq!(
        (first.status, first.body.as_slice()),
        (200, &b"Hello, World!"[..])
    );
    assert_eq!(first.header("connection"), None);
    let second = read_response(&mut http.reader, true);
    assert_eq!(second.status, 200);
    assert_eq!(second.header("content-length"), Some("13"));
    let third = http.response();
    assert_eq!(
        (third.status, third.body.as_slice()),
        (200, &b"Hello, World!"[..])
    );
    assert_eq!(third.header("connection"), Some("close"));
    assert!(http.is_closed());
    server.stop();
}

#[test]
fn a_fast_request_is_answered_while_another_connection_sleeps() {
    let server = Served::start("http_hello", &["--workers", "2"]);
    let mut sleeper = Http::connect(&server);
    sleeper.send(b"GET /sleep/300 HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut fast = Http::connect(&server);
    for _ in 0..3 {
        fast.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(fast.response().body, b"Hello, World!");
    }
    assert_eq!(sleeper.response().body, b"Hello, World!");
    server.stop();
}

#[test]
fn a_sleep_that_is_not_a_number_or_too_long_gets_400_then_close() {
    let server = Served::start("http_hello", &[]);
    for path in ["/sleep/", "/sleep/soon", "/sleep/-1", "/sleep/60001"] {
        let mut http = Http::connect(&server);
        http.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        assert_eq!(http.refused().status, 400, "{path}");
    }
    server.stop();
}

#[test]
fn framing_that_could_smuggle_a_request_gets_400_then_close() {
    let server = Served::start("http_hello", &[]);
    let bad: [&[u8]; 7] = [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Bare: a\rb\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n",
    ];
    for request in bad {
        let mut http = Http::connect(&server);
        http.send(request);
        let status = http.refused().status;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(request));
    }
    server.stop();
}

#[test]
fn a_chunked_body_with_too_many_trailers_gets_431_then_close() {
    let server = Served::start("http_hello", &[]);
    let mut http = Http::connect(&server);
    let trailers: String = (0..101).map(|i| format!("X-{i}: {i}\r\n")).collect();
    http.send(
        format!(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n{trailers}\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(http.refused().status, 431);
    server.stop();
}

// ------------------------------------------------------------ flags

#[test]
fn flags_take_their_value_after_an_equals_sign() {
    let server = Served::start_with(
        "echo",
        &[
            "--port=0",
            "--workers=2",
            "--delay-ms=1",
            "--nodelay=false",
            "--keepalive",
        ],
    );
    let mut stream = connect(server.addr);
    util::round_trip(&mut stream, b"flags with values");
    server.stop();
}

#[test]
fn flags_after_a_double_dash_are_arguments_and_refused() {
    let mut echo = util::examples::command("echo");
    echo.args(["--port=0", "--", "--workers", "2"]);
    let output = run(echo, b"", PATIENCE);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(r#"unexpected argument "--workers""#),
        "{}",
        stderr(&output)
    );
    // A switch refuses a value other than true or false.
    let mut echo = util::examples::command("echo");
    echo.args(["--port=0", "--reuseport=yes"]);
    let output = run(echo, b"", PATIENCE);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--reuseport"),
        "{}",
        stderr(&output)
    );
}
