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

/// An example's `main`: runs `run` and, if it fails, prints
/// `NAME: ERROR: CAUSE: ...` (each error's `source()` in turn) on stderr
/// and exits with status 1.
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
            eprint!("{name}: {e}");
            let mut cause = e.source();
            while let Some(c) = cause {
                eprint!(": {c}");
                cause = c.source();
            }
            eprintln!();
            ExitCode::FAILURE
        }
    }
}

/// The command line after the program name, read flag by flag with
/// `lexopt`: `--port 4000` and `--port=4000` alike, short flags (`-h`),
/// and `--` before arguments that only look like flags.
///
/// [`flag`](Args::flag) yields each flag as written without its value
/// (`--port`); a flag that takes a value then reads it with
/// [`value`](Args::value), [`parse`](Args::parse), [`ms`](Args::ms) or
/// [`timeout_ms`](Args::timeout_ms). A switch reads nothing, or a
/// `=true`/`=false` after it with [`switch`](Args::switch). Positional
/// arguments are refused unless the example asked for them
/// ([`with_operands`](Args::with_operands)).
///
/// ```ignore
/// let mut args = common::Args::from_env();
/// while let Some(flag) = args.flag()? {
///     match flag.as_str() {
///         "--verbose" => verbose = args.switch()?,
///         "--port" => port = args.value()?.parse()?,
///         _ => return Err(args.unknown()),
///     }
/// }
/// ```
pub struct Args {
    parser: lexopt::Parser,
    /// The flag last yielded, named by the errors.
    flag: String,
    /// Positional arguments, when the example takes them.
    operands: Option<Vec<String>>,
}

impl Args {
    /// The arguments this process was started with.
    pub fn from_env() -> Args {
        Args {
            parser: lexopt::Parser::from_env(),
            flag: String::new(),
            operands: None,
        }
    }

    /// The same, for an example that takes positional arguments:
    /// [`flag`](Args::flag) sets them aside, to be read with
    /// [`operands`](Args::operands).
    pub fn with_operands() -> Args {
        Args {
            operands: Some(Vec::new()),
            ..Args::from_env()
        }
    }

    /// The next flag (`--name` or `-c`), or `None` at the end. A flag
    /// given a value it does not take (`--reuseport=1`) is an error here.
    pub fn flag(&mut self) -> Result<Option<String>> {
        loop {
            let flag = match self.parser.next()? {
                None => return Ok(None),
                Some(lexopt::Arg::Long(name)) => format!("--{name}"),
                Some(lexopt::Arg::Short(c)) => format!("-{c}"),
                Some(lexopt::Arg::Value(value)) => {
                    let value = value
                        .into_string()
                        .map_err(|v| format!("{v:?} is not UTF-8"))?;
                    match &mut self.operands {
                        Some(operands) => {
                            operands.push(value);
                            continue;
                        }
                        None => {
                            return Err(format!("unexpected argument {value:?} (see --help)").into())
                        }
                    }
                }
            };
            self.flag.clone_from(&flag);
            return Ok(Some(flag));
        }
    }

    /// The positional arguments read so far.
    pub fn operands(&self) -> &[String] {
        self.operands.as_deref().unwrap_or_default()
    }

    /// The value of the flag last yielded: the argument after it, or what
    /// follows its `=`; if there is none, the error
    /// `--flag needs a value (see --help)`.
    pub fn value(&mut self) -> Result<String> {
        match self.parser.value() {
            Ok(value) => value
                .into_string()
                .map_err(|v| format!("{} {v:?}: not UTF-8", self.flag).into()),
            Err(lexopt::Error::MissingValue { .. }) => {
                Err(format!("{} needs a value (see --help)", self.flag).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A switch: `true`, or what follows its `=` (`--nodelay=false`).
    pub fn switch(&mut self) -> Result<bool> {
        match self.parser.optional_value() {
            None => Ok(true),
            Some(value) => match value.to_str() {
                Some("true") => Ok(true),
                Some("false") => Ok(false),
                _ => Err(format!("{}={value:?}: true or false", self.flag).into()),
            },
        }
    }

    /// The value parsed as a `T` (an address, a port, a count); the
    /// error names flag and value: `--port x: invalid digit found in
    /// string`.
    pub fn parse<T: std::str::FromStr>(&mut self) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let value = self.value()?;
        value
            .parse()
            .map_err(|e| format!("{} {value}: {e}", self.flag).into())
    }

    /// The value as a whole number, as [`parse`](Args::parse) reads it.
    pub fn num(&mut self) -> Result<u64> {
        self.parse()
    }

    /// The value as milliseconds, as [`num`](Args::num) reads them.
    pub fn ms(&mut self) -> Result<Duration> {
        Ok(Duration::from_millis(self.num()?))
    }

    /// The value as a timeout in milliseconds, 0 for none.
    pub fn timeout_ms(&mut self) -> Result<Option<Duration>> {
        Ok(optional_ms(self.num()?))
    }

    /// The value as a size or count, 0 for none (no limit, the kernel's).
    pub fn optional_num(&mut self) -> Result<Option<usize>> {
        Ok(Some(self.parse::<usize>()?).filter(|&n| n > 0))
    }

    /// Applies one of the flags every atoll server example takes
    /// (`--ip`, `--port`, `--workers`, `--acceptors`) to `builder`;
    /// `false` for any other flag.
    pub fn server_flag<K>(&mut self, flag: &str, builder: &mut atoll::Builder<K>) -> Result<bool>
    where
        atoll::Builder<K>: Default,
    {
        let b = std::mem::take(builder);
        *builder = match flag {
            "--ip" => b.ip(self.parse()?),
            "--port" => b.port(self.parse()?),
            "--workers" => b.num_workers(self.parse()?),
            "--acceptors" => b.num_acceptors(self.parse()?),
            "--max-workers" => b.max_workers(self.parse()?),
            _ => {
                *builder = b;
                return Ok(false);
            }
        };
        Ok(true)
    }

    /// The error for a flag that no option matches:
    /// `unknown option --flag (see --help)`.
    pub fn unknown(&self) -> Box<dyn Error> {
        unknown_option(&self.flag)
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
