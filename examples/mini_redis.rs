//! A Redis server in one file: RESP2, the string commands, pipelining, and a
//! keyspace that every worker shares.
//!
//! ```text
//! cargo run --release --example mini_redis -- --port 6379
//! redis-cli -p 6379 SET greeting hello
//! redis-benchmark -p 6379 -t ping,set,get -q
//! ```
//!
//! Commands: PING, ECHO, GET, SET (EX, PX, NX, XX), DEL, EXISTS, INCR, MGET,
//! MSET, DBSIZE, QUIT, and what `redis-cli` and `redis-benchmark` send on
//! connect: CONFIG GET, COMMAND (an empty table), HELLO, CLIENT SETNAME /
//! SETINFO / GETNAME / ID, SELECT 0 and INFO. Inline commands (`PING` typed
//! in telnet) work as in Redis.
//!
//! # Plugging in a threaded application
//!
//! The keyspace belongs to the application, not to atoll: a [`Store`] of 64
//! shards, each a `std::sync::Mutex<HashMap>`, made once in `main` and handed
//! to every connection's handler by the factory through an `Arc`. Workers
//! lock only the shard a key hashes to; commands on several keys (MGET,
//! MSET, DEL, EXISTS) lock their shards in ascending order, so they are
//! atomic as in Redis and cannot deadlock.
//!
//! # Pipelining
//!
//! A connection keeps the bytes of an incomplete command between callbacks.
//! Each `handle_data` runs every complete command it has, writes the replies
//! into one reused buffer and sends them with one `send` (more only when
//! they pass 256 KiB).
//!
//! # Limits and differences from Redis
//!
//! - A bulk string holds at most 64 MiB (Redis allows 512 MiB), an inline
//!   command line 64 KiB, a command 1,048,576 arguments. Beyond them, as
//!   for any malformed framing, the reply is `-ERR Protocol error: ...` and
//!   the connection closes, as Redis does. Errors in a well-framed command
//!   (unknown command, wrong arity, not an integer) keep the connection.
//! - A bulk string must be followed by CRLF (Redis skips two bytes blindly).
//! - Expiry is lazy only: an expired key reads as absent everywhere, and is
//!   removed when GET, SET, INCR or DEL touches it. Redis also samples keys
//!   in the background; here an expired key nobody touches again keeps its
//!   memory.
//! - One database: SELECT 0 only. RESP2 only: `HELLO 3` gets `-NOPROTO`.
//! - No idle timeout, as Redis's default `timeout 0`.

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::ops::Range;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atoll::{Error, Flow, Handler, Server, Socket};

/// The largest bulk string accepted (Redis: `proto-max-bulk-len`, 512 MiB).
const MAX_BULK: i64 = 64 << 20;
/// The longest inline command, or `*N` / `$N` line (Redis: the same).
const MAX_INLINE: usize = 64 << 10;
/// The most arguments in one command.
const MAX_ARGS: i64 = 1 << 20;
/// Replies are sent once this much piled up, even mid-batch.
const FLUSH_AT: usize = 256 << 10;
/// Buffers that grew past this for one big command are given back after it.
const KEEP_CAPACITY: usize = 1 << 20;
const SHARDS: usize = 64;

// ---------------------------------------------------------------- keyspace

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn expired(&self) -> bool {
        self.expires.is_some_and(|at| at <= Instant::now())
    }
}

type Shard = HashMap<Vec<u8>, Entry>;

/// The application's keyspace: lock-sharded so that workers serving
/// different keys rarely wait for each other.
struct Store {
    shards: Vec<Mutex<Shard>>,
}

impl Store {
    fn new() -> Store {
        Store {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// FNV-1a: cheap, and only picks a shard (each map hashes with SipHash).
    fn shard_of(key: &[u8]) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in key {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        (h ^ (h >> 32)) as usize % SHARDS
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A panic elsewhere cannot leave a map half-updated: keep serving.
        self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_key(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        self.lock(Store::shard_of(key))
    }

    /// Locks the shards of all `keys` at once, in ascending order: a
    /// multi-key command sees and leaves a consistent state, and two such
    /// commands cannot deadlock.
    fn lock_keys<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) -> Locked<'_> {
        let mask = keys.fold(0u64, |m, k| m | 1 << Store::shard_of(k));
        let mut guards: [Option<MutexGuard<'_, Shard>>; SHARDS] = std::array::from_fn(|_| None);
        for (i, guard) in guards.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                *guard = Some(self.lock(i));
            }
        }
        Locked {
            store: self,
            guards,
        }
    }

    /// Keys, expired ones not yet removed included.
    fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.lock(i).len()).sum()
    }

    /// Keys, and keys with an expiry (expired ones not yet removed included).
    fn counts(&self) -> (usize, usize) {
        (0..SHARDS).fold((0, 0), |(keys, expires), i| {
            let shard = self.lock(i);
            let with_ttl = shard.values().filter(|e| e.expires.is_some()).count();
            (keys + shard.len(), expires + with_ttl)
        })
    }
}

struct Locked<'a> {
    store: &'a Store,
    guards: [Option<MutexGuard<'a, Shard>>; SHARDS],
}

impl Locked<'_> {
    fn shard(&mut self, key: &[u8]) -> &mut Shard {
        let i = Store::shard_of(key);
        // `lock_keys` locked every shard the command names already.
        self.guards[i].get_or_insert_with(|| self.store.lock(i))
    }
}

/// Writes `value` over `entry`, reusing its allocation when the size fits.
fn overwrite(entry: &mut Entry, value: &[u8], expires: Option<Instant>) {
    let cap = entry.value.capacity();
    if cap >= value.len() && cap <= 2 * value.len() + 64 {
        entry.value.clear();
        entry.value.extend_from_slice(value);
    } else {
        entry.value = value.to_vec();
    }
    entry.expires = expires;
}

fn set_value(map: &mut Shard, key: &[u8], value: &[u8], expires: Option<Instant>) {
    match map.get_mut(key) {
        Some(entry) => overwrite(entry, value, expires),
        None => {
            let value = value.to_vec();
            map.insert(key.to_vec(), Entry { value, expires });
        }
    }
}

fn is_live(map: &Shard, key: &[u8]) -> bool {
    map.get(key).is_some_and(|e| !e.expired())
}

// ------------------------------------------------------------------ parsing

/// Framing the server cannot recover from: answered, then the connection
/// closes.
struct ProtocolError(String);

impl ProtocolError {
    fn new(what: &str) -> ProtocolError {
        ProtocolError(what.to_string())
    }
}

enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// `used` bytes made nothing to run: an empty line, `*0`, `*-1`.
    Skip(usize),
    /// A command used `used` bytes; its arguments are ranges into the
    /// buffer parsed, or into the scratch buffer for an inline command.
    Command { used: usize, inline: bool },
}

/// Where parsing of an incomplete multibulk command stopped, so the next
/// callback resumes there instead of parsing its arguments again.
#[derive(Clone, Copy)]
struct Resume {
    pos: usize,
    left: i64,
}

/// Parses one command at the start of `buf`.
fn parse(
    buf: &[u8],
    ranges: &mut Vec<Range<usize>>,
    scratch: &mut Vec<u8>,
    resume: &mut Option<Resume>,
) -> Result<Parsed, ProtocolError> {
    match buf.first() {
        None => Ok(Parsed::Incomplete),
        Some(b'*') => parse_multibulk(buf, ranges, resume),
        Some(_) => parse_inline(buf, ranges, scratch),
    }
}

fn parse_multibulk(
    buf: &[u8],
    ranges: &mut Vec<Range<usize>>,
    resume: &mut Option<Resume>,
) -> Result<Parsed, ProtocolError> {
    let Resume { mut pos, mut left } = match resume.take() {
        Some(state) => state,
        None => {
            let Some((count, pos)) = number_line(buf, 1, "too big mbulk count string")? else {
                return Ok(Parsed::Incomplete);
            };
            let count = count.ok_or_else(|| ProtocolError::new("invalid multibulk length"))?;
            if count > MAX_ARGS {
                return Err(ProtocolError::new("invalid multibulk length"));
            }
            if count <= 0 {
                return Ok(Parsed::Skip(pos));
            }
            ranges.clear();
            Resume { pos, left: count }
        }
    };
    while left > 0 {
        let incomplete = |resume: &mut Option<Resume>| -> Result<Parsed, ProtocolError> {
            *resume = Some(Resume { pos, left });
            Ok(Parsed::Incomplete)
        };
        match buf.get(pos) {
            None => return incomplete(resume),
            Some(b'$') => {}
            Some(&other) => {
                return Err(ProtocolError(format!(
                    "expected '$', got '{}'",
                    printable(other)
                )))
            }
        }
        let Some((len, start)) = number_line(buf, pos + 1, "too big bulk count string")? else {
            return incomplete(resume);
        };
        let len = match len {
            Some(len @ 0..=MAX_BULK) => len as usize,
            _ => return Err(ProtocolError::new("invalid bulk length")),
        };
        let end = start + len;
        if buf.len() < end + 2 {
            return incomplete(resume);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::new("expected CRLF after bulk string"));
        }
        ranges.push(start..end);
        pos = end + 2;
        left -= 1;
    }
    Ok(Parsed::Command {
        used: pos,
        inline: false,
    })
}

/// Reads the number of a `*N\r\n` or `$N\r\n` line whose digits start at
/// `from`: `None` if the line is incomplete, else the number (`None` if it
/// is not one) and where the next line starts.
fn number_line(
    buf: &[u8],
    from: usize,
    too_big: &str,
) -> Result<Option<(Option<i64>, usize)>, ProtocolError> {
    let rest = buf.get(from..).unwrap_or_default();
    let window = &rest[..rest.len().min(MAX_INLINE)];
    match window.iter().position(|&b| b == b'\r') {
        Some(cr) if cr + 1 < rest.len() => {
            let number = parse_i64(&rest[..cr]).filter(|_| rest[cr + 1] == b'\n');
            Ok(Some((number, from + cr + 2)))
        }
        Some(_) => Ok(None),
        None if rest.len() >= MAX_INLINE => Err(ProtocolError::new(too_big)),
        None => Ok(None),
    }
}

/// An inline command: one line of space-separated arguments, with Redis's
/// quoting (`"a\x41\n"`, `'it''s'`).
fn parse_inline(
    buf: &[u8],
    ranges: &mut Vec<Range<usize>>,
    scratch: &mut Vec<u8>,
) -> Result<Parsed, ProtocolError> {
    let window = &buf[..buf.len().min(MAX_INLINE + 1)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_INLINE {
            return Err(ProtocolError::new("too big inline request"));
        }
        return Ok(Parsed::Incomplete);
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    split_args(line, ranges, scratch)
        .ok_or_else(|| ProtocolError::new("unbalanced quotes in request"))?;
    if ranges.is_empty() {
        return Ok(Parsed::Skip(nl + 1));
    }
    Ok(Parsed::Command {
        used: nl + 1,
        inline: true,
    })
}

/// Redis's `sdssplitargs`: the unquoted arguments go to `scratch`, their
/// ranges to `ranges`. `None` for unbalanced quotes.
fn split_args(line: &[u8], ranges: &mut Vec<Range<usize>>, scratch: &mut Vec<u8>) -> Option<()> {
    ranges.clear();
    scratch.clear();
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut i = 0;
    loop {
        while i < line.len() && space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Some(());
        }
        let start = scratch.len();
        let (mut double, mut single) = (false, false);
        loop {
            let c = line.get(i).copied();
            let done = if double {
                let c = c?;
                let hex = |j: usize| line.get(j).and_then(|&h| (h as char).to_digit(16));
                let byte = (c == b'\\' && line.get(i + 1) == Some(&b'x'))
                    .then(|| Some(hex(i + 2)? * 16 + hex(i + 3)?))
                    .flatten();
                if let Some(byte) = byte {
                    scratch.push(byte as u8);
                    i += 3;
                    false
                } else if let (b'\\', Some(&e)) = (c, line.get(i + 1)) {
                    scratch.push(match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                    i += 1;
                    false
                } else if c == b'"' {
                    // A closing quote must end the argument.
                    if line.get(i + 1).is_some_and(|&n| !space(n)) {
                        return None;
                    }
                    true
                } else {
                    scratch.push(c);
                    false
                }
            } else if single {
                let c = c?;
                if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                    scratch.push(b'\'');
                    i += 1;
                    false
                } else if c == b'\'' {
                    if line.get(i + 1).is_some_and(|&n| !space(n)) {
                        return None;
                    }
                    true
                } else {
                    scratch.push(c);
                    false
                }
            } else {
                match c {
                    None => true,
                    Some(c) if space(c) => true,
                    Some(b'"') => {
                        double = true;
                        false
                    }
                    Some(b'\'') => {
                        single = true;
                        false
                    }
                    Some(c) => {
                        scratch.push(c);
                        false
                    }
                }
            };
            if i < line.len() {
                i += 1;
            }
            if done {
                break;
            }
        }
        ranges.push(start..scratch.len());
    }
}

/// Redis's `string2ll`: decimal, no sign but `-`, no leading zero, no
/// spaces, within `i64`.
fn parse_i64(s: &[u8]) -> Option<i64> {
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.strip_prefix(b"-") {
        Some(digits) => (true, digits),
        None => (false, s),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) || digits.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(n)
    } else {
        i64::try_from(n).ok()
    }
}

fn printable(b: u8) -> char {
    if b.is_ascii_graphic() || b == b' ' {
        b as char
    } else {
        '?'
    }
}

// ------------------------------------------------------------------ replies

fn push_int(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

fn simple(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn ok(out: &mut Vec<u8>) {
    out.extend_from_slice(b"+OK\r\n");
}

fn error(out: &mut Vec<u8>, message: &str) {
    out.push(b'-');
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn int(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    push_int(out, n);
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'$');
    push_int(out, data.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn nil(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

fn array(out: &mut Vec<u8>, len: usize) {
    out.push(b'*');
    push_int(out, len as i64);
    out.extend_from_slice(b"\r\n");
}

/// Client bytes inside an error line: at most 128, no CR or LF (they would
/// end the line), as Redis does.
fn push_quoted(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'\'');
    let n = data.len().min(128);
    out.extend(
        data[..n]
            .iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.push(b'\'');
}

fn arity_error(out: &mut Vec<u8>, command: &str) {
    let _ = write!(
        out,
        "-ERR wrong number of arguments for '{command}' command\r\n"
    );
}

fn not_an_integer(out: &mut Vec<u8>) {
    error(out, "ERR value is not an integer or out of range");
}

fn unknown_subcommand(out: &mut Vec<u8>, sub: &[u8], command: &str) {
    out.extend_from_slice(b"-ERR unknown subcommand ");
    push_quoted(out, sub);
    let _ = write!(out, ". Try {command} HELP.\r\n");
}

// ----------------------------------------------------------------- commands

/// A command's arguments: ranges into the bytes it was parsed from.
struct Args<'a> {
    buf: &'a [u8],
    ranges: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    fn len(&self) -> usize {
        self.ranges.len()
    }

    /// The `i`-th argument (0 is the command's name); empty past the end.
    fn get(&self, i: usize) -> &'a [u8] {
        self.ranges
            .get(i)
            .and_then(|r| self.buf.get(r.clone()))
            .unwrap_or_default()
    }

    fn from(&self, first: usize) -> impl Iterator<Item = &'a [u8]> + '_ {
        (first..self.len()).map(|i| self.get(i))
    }

    fn is(&self, i: usize, word: &str) -> bool {
        self.get(i).eq_ignore_ascii_case(word.as_bytes())
    }
}

#[derive(Clone, Copy)]
enum Cmd {
    Ping,
    Echo,
    Get,
    Set,
    Del,
    Exists,
    Incr,
    Mget,
    Mset,
    Dbsize,
    Config,
    Command,
    Hello,
    Client,
    Select,
    Info,
    Quit,
}

/// The command, its name for error messages and its arity (Redis's rule:
/// positive is exact, negative a minimum), counting the name.
fn lookup(name: &[u8]) -> Option<(Cmd, &'static str, i32)> {
    let mut upper = [0u8; 8];
    let upper = upper.get_mut(..name.len())?;
    upper.copy_from_slice(name);
    upper.make_ascii_uppercase();
    Some(match &*upper {
        b"PING" => (Cmd::Ping, "ping", -1),
        b"ECHO" => (Cmd::Echo, "echo", 2),
        b"GET" => (Cmd::Get, "get", 2),
        b"SET" => (Cmd::Set, "set", -3),
        b"DEL" => (Cmd::Del, "del", -2),
        b"EXISTS" => (Cmd::Exists, "exists", -2),
        b"INCR" => (Cmd::Incr, "incr", 2),
        b"MGET" => (Cmd::Mget, "mget", -2),
        b"MSET" => (Cmd::Mset, "mset", -3),
        b"DBSIZE" => (Cmd::Dbsize, "dbsize", 1),
        b"CONFIG" => (Cmd::Config, "config", -2),
        b"COMMAND" => (Cmd::Command, "command", -1),
        b"HELLO" => (Cmd::Hello, "hello", -1),
        b"CLIENT" => (Cmd::Client, "client", -2),
        b"SELECT" => (Cmd::Select, "select", 2),
        b"INFO" => (Cmd::Info, "info", -1),
        b"QUIT" => (Cmd::Quit, "quit", -1),
        _ => return None,
    })
}

/// What the connection does after a command.
#[derive(PartialEq)]
enum After {
    Continue,
    Close,
}

/// One connection's state besides its buffers.
struct Session {
    id: u64,
    name: Option<Vec<u8>>,
}

/// Runs one command, appending its reply to `out`.
fn execute(store: &Store, session: &mut Session, args: &Args<'_>, out: &mut Vec<u8>) -> After {
    let argc = args.len();
    let Some((command, name, arity)) = lookup(args.get(0)) else {
        out.extend_from_slice(b"-ERR unknown command ");
        push_quoted(out, args.get(0));
        out.extend_from_slice(b", with args beginning with: ");
        let mut shown = 0;
        for arg in args.from(1) {
            if shown >= 128 {
                break;
            }
            let arg = &arg[..arg.len().min(128 - shown)];
            push_quoted(out, arg);
            out.push(b' ');
            shown += arg.len() + 3;
        }
        out.extend_from_slice(b"\r\n");
        return After::Continue;
    };
    let argc_i32 = i32::try_from(argc).unwrap_or(i32::MAX);
    if (arity > 0 && argc_i32 != arity) || argc_i32 < arity.abs() {
        arity_error(out, name);
        return After::Continue;
    }
    match command {
        Cmd::Ping => match argc {
            1 => simple(out, "PONG"),
            2 => bulk(out, args.get(1)),
            _ => arity_error(out, name),
        },
        Cmd::Echo => bulk(out, args.get(1)),
        Cmd::Get => {
            let key = args.get(1);
            let mut map = store.lock_key(key);
            match map.get(key) {
                Some(entry) if !entry.expired() => bulk(out, &entry.value),
                Some(_) => {
                    map.remove(key);
                    nil(out);
                }
                None => nil(out),
            }
        }
        Cmd::Set => set(store, args, out),
        Cmd::Del => {
            let mut locked = store.lock_keys(args.from(1));
            let removed = args
                .from(1)
                .filter(|key| locked.shard(key).remove(*key).is_some_and(|e| !e.expired()))
                .count();
            int(out, removed as i64);
        }
        Cmd::Exists => {
            let mut locked = store.lock_keys(args.from(1));
            let found = args
                .from(1)
                .filter(|key| is_live(locked.shard(key), key))
                .count();
            int(out, found as i64);
        }
        Cmd::Incr => incr(store, args.get(1), out),
        Cmd::Mget => {
            let mut locked = store.lock_keys(args.from(1));
            array(out, argc - 1);
            for key in args.from(1) {
                match locked.shard(key).get(key) {
                    Some(entry) if !entry.expired() => bulk(out, &entry.value),
                    _ => nil(out),
                }
            }
        }
        Cmd::Mset => {
            if argc % 2 == 0 {
                arity_error(out, name);
                return After::Continue;
            }
            let mut locked = store.lock_keys(args.from(1).step_by(2));
            for i in (1..argc).step_by(2) {
                let key = args.get(i);
                set_value(locked.shard(key), key, args.get(i + 1), None);
            }
            ok(out);
        }
        Cmd::Dbsize => int(out, store.len() as i64),
        Cmd::Config => config(args, out),
        Cmd::Command => {
            if argc == 1 || args.is(1, "DOCS") || args.is(1, "INFO") || args.is(1, "LIST") {
                array(out, 0); // no command table: clients cope with an empty one
            } else if args.is(1, "COUNT") {
                int(out, 0);
            } else {
                unknown_subcommand(out, args.get(1), "COMMAND");
            }
        }
        Cmd::Hello => hello(session, args, out),
        Cmd::Client => client(session, args, out),
        Cmd::Select => match parse_i64(args.get(1)) {
            Some(0) => ok(out),
            Some(_) => error(out, "ERR DB index is out of range"),
            None => not_an_integer(out),
        },
        Cmd::Info => {
            let (keys, expires) = store.counts();
            let text = format!(
                "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\n\
                 process_id:{}\r\n\r\n# Keyspace\r\ndb0:keys={keys},expires={expires},avg_ttl=0\r\n",
                std::process::id()
            );
            bulk(out, text.as_bytes());
        }
        Cmd::Quit => {
            ok(out);
            return After::Close;
        }
    }
    After::Continue
}

/// `SET key value [EX seconds | PX milliseconds] [NX | XX]`.
fn set(store: &Store, args: &Args<'_>, out: &mut Vec<u8>) {
    #[derive(PartialEq)]
    enum Only {
        Always,
        IfAbsent,
        IfPresent,
    }
    let mut only = Only::Always;
    let mut ttl: Option<(&[u8], u64)> = None; // the number and its unit in ms
    let mut i = 3;
    while i < args.len() {
        let next = (i + 1 < args.len()).then(|| args.get(i + 1));
        if args.is(i, "NX") && only != Only::IfPresent {
            only = Only::IfAbsent;
        } else if args.is(i, "XX") && only != Only::IfAbsent {
            only = Only::IfPresent;
        } else if let (Some(n), Some(unit)) = (next, ttl_unit(args, i, ttl)) {
            ttl = Some((n, unit)); // EX and PX exclude each other; a repeat wins
            i += 1;
        } else {
            return error(out, "ERR syntax error");
        }
        i += 1;
    }
    let expires = match ttl {
        None => None,
        Some((number, unit)) => {
            let Some(n) = parse_i64(number) else {
                return not_an_integer(out);
            };
            match expiry(n, unit) {
                Some(at) => Some(at),
                None => return error(out, "ERR invalid expire time in 'set' command"),
            }
        }
    };
    let (key, value) = (args.get(1), args.get(2));
    let mut map = store.lock_key(key);
    if only != Only::Always && (only == Only::IfAbsent) == is_live(&map, key) {
        return nil(out);
    }
    set_value(&mut map, key, value, expires);
    ok(out);
}

/// The unit in ms if argument `i` is EX or PX and the TTL so far does not
/// use the other one.
fn ttl_unit(args: &Args<'_>, i: usize, ttl: Option<(&[u8], u64)>) -> Option<u64> {
    let unit = if args.is(i, "EX") {
        1000
    } else if args.is(i, "PX") {
        1
    } else {
        return None;
    };
    ttl.map_or(true, |(_, u)| u == unit).then_some(unit)
}

/// When a TTL of `n` × `unit_ms` from now ends; `None` if not positive, or
/// so far that Redis's millisecond clock would overflow.
fn expiry(n: i64, unit_ms: u64) -> Option<Instant> {
    let ms = u64::try_from(n)
        .ok()
        .filter(|&ms| ms > 0)?
        .checked_mul(unit_ms)?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    i64::try_from(ms.checked_add(now_ms)?).ok()?;
    Instant::now().checked_add(Duration::from_millis(ms))
}

fn incr(store: &Store, key: &[u8], out: &mut Vec<u8>) {
    let mut map = store.lock_key(key);
    if let Some(entry) = map.get_mut(key).filter(|e| !e.expired()) {
        let Some(n) = parse_i64(&entry.value) else {
            return not_an_integer(out);
        };
        let Some(n) = n.checked_add(1) else {
            return error(out, "ERR increment or decrement would overflow");
        };
        entry.value.clear();
        push_int(&mut entry.value, n); // the TTL stays, as in Redis
        return int(out, n);
    }
    set_value(&mut map, key, b"1", None);
    int(out, 1);
}

/// `CONFIG GET name...`: the parameters `redis-benchmark` asks for, in
/// Redis's answer format (pairs, nothing for unknown names).
fn config(args: &Args<'_>, out: &mut Vec<u8>) {
    const KNOWN: [(&str, &str); 3] = [("appendonly", "no"), ("databases", "1"), ("save", "")];
    if !args.is(1, "GET") {
        return unknown_subcommand(out, args.get(1), "CONFIG");
    }
    if args.len() < 3 {
        return arity_error(out, "config|get");
    }
    let found = || {
        KNOWN.iter().filter(|(name, _)| {
            args.from(2)
                .any(|a| a.eq_ignore_ascii_case(name.as_bytes()))
        })
    };
    array(out, 2 * found().count());
    for (name, value) in found() {
        bulk(out, name.as_bytes());
        bulk(out, value.as_bytes());
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`, answered as Redis 7
/// answers a RESP2 client; RESP3 is refused.
fn hello(session: &mut Session, args: &Args<'_>, out: &mut Vec<u8>) {
    let version = if args.len() >= 2 {
        match parse_i64(args.get(1)) {
            Some(v) => Some(v),
            None => {
                return error(
                    out,
                    "ERR Protocol version is not an integer or out of range",
                )
            }
        }
    } else {
        None
    };
    let mut i = 2;
    while i < args.len() {
        let left = args.len() - i - 1;
        if args.is(i, "AUTH") && left >= 2 {
            i += 3; // there are no passwords to check
        } else if args.is(i, "SETNAME") && left >= 1 {
            session.name = Some(args.get(i + 1).to_vec());
            i += 2;
        } else {
            out.extend_from_slice(b"-ERR Syntax error in HELLO option ");
            push_quoted(out, args.get(i));
            return out.extend_from_slice(b"\r\n");
        }
    }
    if version.is_some_and(|v| v != 2) {
        return error(out, "NOPROTO unsupported protocol version");
    }
    // A RESP2 client gets the map as a flat array of pairs. The version is
    // what clients gate features on.
    array(out, 14);
    for (key, value) in [("server", "redis"), ("version", "7.0.0")] {
        bulk(out, key.as_bytes());
        bulk(out, value.as_bytes());
    }
    bulk(out, b"proto");
    int(out, 2);
    bulk(out, b"id");
    int(out, session.id as i64);
    for (key, value) in [("mode", "standalone"), ("role", "master")] {
        bulk(out, key.as_bytes());
        bulk(out, value.as_bytes());
    }
    bulk(out, b"modules");
    array(out, 0);
}

/// `CLIENT SETNAME | SETINFO | GETNAME | ID`.
fn client(session: &mut Session, args: &Args<'_>, out: &mut Vec<u8>) {
    let (sub, arity) = if args.is(1, "SETNAME") {
        ("client|setname", 3)
    } else if args.is(1, "SETINFO") {
        ("client|setinfo", 4)
    } else if args.is(1, "GETNAME") {
        ("client|getname", 2)
    } else if args.is(1, "ID") {
        ("client|id", 2)
    } else {
        return unknown_subcommand(out, args.get(1), "CLIENT");
    };
    if args.len() != arity {
        return arity_error(out, sub);
    }
    match sub {
        "client|setname" => {
            session.name = Some(args.get(2).to_vec());
            ok(out);
        }
        "client|getname" => match &session.name {
            Some(name) => bulk(out, name),
            None => nil(out),
        },
        "client|id" => int(out, session.id as i64),
        _ => ok(out), // SETINFO: library name and version, not kept
    }
}

// --------------------------------------------------------------- connection

/// One connection: its session and the buffers reused for every command.
struct Client {
    store: Arc<Store>,
    session: Session,
    /// Bytes of a command not complete yet.
    input: Vec<u8>,
    /// Replies of this batch, sent together.
    out: Vec<u8>,
    ranges: Vec<Range<usize>>,
    scratch: Vec<u8>,
    resume: Option<Resume>,
}

impl Client {
    fn new(store: Arc<Store>, id: u64) -> Client {
        Client {
            store,
            session: Session { id, name: None },
            input: Vec::new(),
            out: Vec::with_capacity(4096),
            ranges: Vec::new(),
            scratch: Vec::new(),
            resume: None,
        }
    }

    /// Runs every complete command in `buf`, replying into `self.out`, and
    /// sends the replies. Returns how many bytes it used and what to do next.
    fn process(&mut self, buf: &[u8], socket: &mut Socket) -> Result<(usize, After), Error> {
        let mut pos = 0;
        let mut after = After::Continue;
        while pos < buf.len() && after == After::Continue {
            let rest = &buf[pos..];
            match parse(rest, &mut self.ranges, &mut self.scratch, &mut self.resume) {
                Ok(Parsed::Incomplete) => break,
                Ok(Parsed::Skip(used)) => pos += used,
                Ok(Parsed::Command { used, inline }) => {
                    let args = Args {
                        buf: if inline { &self.scratch[..] } else { rest },
                        ranges: &self.ranges,
                    };
                    pos += used;
                    after = execute(&self.store, &mut self.session, &args, &mut self.out);
                    // Many big replies (MGET, GET of large values) go out
                    // as they come rather than piling up.
                    if self.out.len() >= FLUSH_AT {
                        socket.send(&self.out)?;
                        self.out.clear();
                    }
                }
                Err(ProtocolError(what)) => {
                    let _ = write!(self.out, "-ERR Protocol error: {what}\r\n");
                    after = After::Close;
                }
            }
        }
        if !self.out.is_empty() {
            socket.send(&self.out)?;
            self.out.clear();
        }
        Ok((pos, after))
    }
}

impl Handler for Client {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        let result = if self.input.is_empty() {
            // The common case: whole commands, parsed where they lie.
            self.process(data, socket).map(|(used, after)| {
                self.input.extend_from_slice(&data[used..]);
                after
            })
        } else {
            self.input.extend_from_slice(data);
            let mut input = std::mem::take(&mut self.input);
            let result = self.process(&input, socket);
            if let Ok((used, _)) = result {
                input.drain(..used);
            }
            self.input = input;
            result.map(|(_, after)| after)
        };
        // Give back what one big command needed.
        if self.out.capacity() > KEEP_CAPACITY {
            self.out = Vec::with_capacity(4096);
        }
        if self.input.is_empty() && self.input.capacity() > KEEP_CAPACITY {
            self.input = Vec::new();
        }
        match result {
            Ok(After::Continue) => Flow::Continue,
            Ok(After::Close) => Flow::Close,
            Err(e) => Flow::error(e),
        }
    }
}

const HELP: &str = "\
mini_redis: a Redis server (RESP2, strings) on atoll

Options (defaults in brackets):
  --ip ADDR        address to listen on [127.0.0.1]
  --port N         port, 0 for a free one [6379]
  --workers N      base worker threads [one per core]
  --max-workers N  most worker threads, for blocking handlers [4096]
  --acceptors N    acceptor threads [one per core, at most 16]
  --help           this text";

fn main() -> ExitCode {
    common::run_main("mini_redis", run)
}

fn run() -> common::Result {
    let mut builder = Server::builder()
        .ip(IpAddr::from([127, 0, 0, 1]))
        .port(6379)
        .read_timeout(None);
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
    // The application's state, shared by every connection.
    let store = Arc::new(Store::new());
    let server = builder.start(move |conn| Ok(Client::new(store.clone(), conn.id())))?;
    println!("listening on {}", server.local_addr()?);
    common::wait_for_signal_then_stop(&server, Duration::from_secs(5))?;
    Ok(())
}
