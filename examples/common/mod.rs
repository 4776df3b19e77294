//! What the examples share: their `main`, reading their flags, `--log`,
//! and stopping on SIGINT or SIGTERM.
//!
//! An example includes it with `mod common;`. It lives in a folder as
//! `common/mod.rs` because cargo takes every `examples/*.rs` file for an
//! example of its own, but not a folder without a `main.rs`.

// Each example uses only some of these helpers, and the others would warn
// as dead code when that example is built.
#![allow(dead_code)]

use std::error::Error;
use std::io::{self, Write as _};
use std::process::ExitCode;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use atoll::logger::Level;
use atoll::Server;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// What an example's `run` returns: any error, shown by [`run_main`].
pub type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;

/// An example's `main`: runs `run` and, if it fails, prints `NAME: ERROR`
/// on stderr and exits with status 1.
pub fn run_main(name: &str, run: impl FnOnce() -> Result) -> ExitCode {
    // Catch SIGINT and SIGTERM from the start: one that arrives while the
    // server starts, before `wait_for_signal`, must stop it gracefully
    // rather than kill the process.
    if let Err(e) = Signals::new([SIGINT, SIGTERM]).map(|s| SIGNALS.set(Mutex::new(s))) {
        eprintln!("{name}: cannot catch SIGINT and SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The command line after the program name, read flag by flag.
///
/// As an iterator it yields each flag (or positional argument). A flag
/// that takes a value then reads it with [`value`](Args::value),
/// [`num`](Args::num), [`ms`](Args::ms) or
/// [`timeout_ms`](Args::timeout_ms): the argument after the flag,
/// whatever it looks like. A switch reads nothing.
///
/// ```ignore
/// let mut args = common::Args::from_env();
/// while let Some(flag) = args.next() {
///     match flag.as_str() {
///         "--verbose" => verbose = true,
///         "--port" => port = args.value()?.parse()?,
///         _ => return Err(args.unknown()),
///     }
/// }
/// ```
pub struct Args {
    args: std::iter::Skip<std::env::Args>,
    /// The flag last yielded, named by the errors.
    flag: String,
}

impl Args {
    /// The arguments this process was started with.
    pub fn from_env() -> Args {
        Args {
            args: std::env::args().skip(1),
            flag: String::new(),
        }
    }

    /// The value of the flag last yielded; if the command line ends
    /// there, the error `--flag needs a value (see --help)`.
    pub fn value(&mut self) -> Result<String> {
        self.args
            .next()
            .ok_or_else(|| format!("{} needs a value (see --help)", self.flag).into())
    }

    /// The value as a whole number; the error names flag and value:
    /// `--port x: invalid digit found in string`.
    pub fn num(&mut self) -> Result<u64> {
        let value = self.value()?;
        value
            .parse()
            .map_err(|e| format!("{} {value}: {e}", self.flag).into())
    }

    /// The value as milliseconds, as [`num`](Args::num) reads them.
    pub fn ms(&mut self) -> Result<Duration> {
        Ok(Duration::from_millis(self.num()?))
    }

    /// The value as a timeout in milliseconds, 0 for none.
    pub fn timeout_ms(&mut self) -> Result<Option<Duration>> {
        Ok(optional_ms(self.num()?))
    }

    /// Applies one of the flags every atoll server example takes
    /// (`--ip`, `--port`, `--workers`, `--acceptors`) to `builder`;
    /// `false` for any other flag.
    pub fn server_flag(&mut self, flag: &str, builder: &mut atoll::Builder) -> Result<bool> {
        let b = std::mem::take(builder);
        *builder = match flag {
            "--ip" => b.ip(self.value()?.parse()?),
            "--port" => b.port(self.num()?.try_into()?),
            "--workers" => b.num_workers(self.num()?.try_into()?),
            "--acceptors" => b.num_acceptors(self.num()?.try_into()?),
            _ => {
                *builder = b;
                return Ok(false);
            }
        };
        Ok(true)
    }

    /// The error for a flag that no option matches. Its value is read
    /// first, as every flag's is: a flag with nothing after it says it
    /// needs a value, else `unknown option --flag (see --help)`.
    pub fn unknown(&mut self) -> Box<dyn Error> {
        match self.value() {
            Ok(_) => unknown_option(&self.flag),
            Err(e) => e,
        }
    }
}

impl Iterator for Args {
    type Item = String;

    /// The next flag (or positional argument).
    fn next(&mut self) -> Option<String> {
        let flag = self.args.next()?;
        self.flag.clone_from(&flag);
        Some(flag)
    }
}

/// `unknown option FLAG (see --help)`.
pub fn unknown_option(flag: &str) -> Box<dyn Error> {
    format!("unknown option {flag} (see --help)").into()
}

/// A timeout of `ms` milliseconds, 0 for none.
pub fn optional_ms(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Logs on stdout, as `[LEVEL] message`, the records of `targets`.
struct Stdout {
    targets: &'static [&'static str],
}

impl log::Log for Stdout {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.targets.contains(&metadata.target())
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            println!("[{}] {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

/// `--log LEVEL`: logs atoll's events at `level` (error, info, debug or
/// trace) on stdout, with the records of the other `targets` (the
/// example's own, all levels). Include `"atoll"` in `targets` to see
/// atoll's. Fails if a logger is set already (`--log` given twice).
pub fn init_log(level: &str, targets: &'static [&'static str]) -> Result {
    let level = match level {
        "error" => Level::Error,
        "info" => Level::Info,
        "debug" => Level::Debug,
        "trace" => Level::Trace,
        _ => return Err(format!("--log {level}: error, info, debug or trace").into()),
    };
    log::set_boxed_logger(Box::new(Stdout { targets }))?;
    log::set_max_level(log::LevelFilter::Trace);
    atoll::logger::attach_logger(level)?;
    Ok(())
}

/// Flushes stdout (a parent reading it sees all printed so far), then
/// blocks until SIGINT or SIGTERM arrives.
pub fn wait_for_signal() -> io::Result<()> {
    io::stdout().flush()?;
    match SIGNALS.get() {
        Some(signals) => {
            signals
                .lock()
                .map_err(|_| io::Error::other("signal wait poisoned"))?
                .forever()
                .next();
        }
        None => {
            Signals::new([SIGINT, SIGTERM])?.forever().next();
        }
    }
    Ok(())
}

/// SIGINT and SIGTERM, caught since [`run_main`] began.
static SIGNALS: OnceLock<Mutex<Signals>> = OnceLock::new();

/// [`wait_for_signal`], then stops `server`: it refuses new connections at
/// once and drains the open ones for up to `timeout`.
pub fn wait_for_signal_then_stop<M: Send + 'static>(
    server: &Server<M>,
    timeout: Duration,
) -> io::Result<()> {
    wait_for_signal()?;
    server.stop(timeout);
    Ok(())
}
