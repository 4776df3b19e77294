//! A logger built on [`crate::telemetry`] events, switched on and off at
//! run time, level by level. A telemetry sink; never touches a connection.
//!
//! Records go through the `log` crate with the target `atoll`, one line per
//! event, with the connection id and peer address. The levels, from the
//! most to the least severe:
//!
//! | level | events |
//! |---|---|
//! | [`Level::Error`] | spawn errors, accept errors, failed reads, sends and sendfiles, connections that ended in error |
//! | [`Level::Info`] | listener start and stop |
//! | [`Level::Debug`] | acceptor start and stop, connection start, ready and stop, aborted accepts |
//! | [`Level::Trace`] | every read, send, sendfile and shutdown |
//!
//! ```
//! use atoll::logger::{self, Level};
//!
//! logger::attach_logger(Level::Info).unwrap(); // error and info
//! logger::attach_logger(Level::Trace).unwrap(); // now everything
//! logger::detach_logger(Level::Debug).unwrap(); // back to error and info
//! logger::detach_logger(Level::Error).unwrap(); // off
//! ```

use std::fmt;
use std::io::IoSlice;

use parking_lot::Mutex;

use crate::error::Chain;
use crate::telemetry::{self, Event, Kind, SinkId};

/// A log level of the logger; enabling one enables the more severe ones.
///
/// ```
/// assert!(atoll::logger::Level::Error < atoll::logger::Level::Trace);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Failures.
    Error,
    /// Listeners opening and closing.
    Info,
    /// Acceptors and connections coming and going.
    Debug,
    /// Every byte moved.
    Trace,
}

/// Why [`attach_logger`] or [`detach_logger`] did nothing.
///
/// ```
/// use atoll::logger::{detach_logger, Level, LoggerError};
/// assert_eq!(detach_logger(Level::Trace), Err(LoggerError::NotFound));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoggerError {
    /// The level is already enabled.
    AlreadyExists,
    /// The level is not enabled.
    NotFound,
}

impl fmt::Display for LoggerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoggerError::AlreadyExists => "that log level is already enabled",
            LoggerError::NotFound => "that log level is not enabled",
        })
    }
}

impl std::error::Error for LoggerError {}

/// The most verbose enabled level and the sink that logs, if on.
static STATE: Mutex<Option<(Level, SinkId)>> = Mutex::new(None);

/// Starts logging at `level` and every more severe level, on every server
/// of the process.
///
/// ```
/// # use atoll::logger::{self, Level, LoggerError};
/// logger::attach_logger(Level::Debug).unwrap();
/// assert_eq!(logger::attach_logger(Level::Info), Err(LoggerError::AlreadyExists));
/// # logger::detach_logger(Level::Error).unwrap();
/// ```
pub fn attach_logger(level: Level) -> Result<(), LoggerError> {
    let mut state = STATE.lock();
    match *state {
        Some((current, _)) if current >= level => Err(LoggerError::AlreadyExists),
        _ => {
            set(&mut state, Some(level));
            Ok(())
        }
    }
}

/// Stops logging at `level` and every less severe level.
///
/// ```
/// # use atoll::logger::{self, Level, LoggerError};
/// assert_eq!(logger::detach_logger(Level::Trace), Err(LoggerError::NotFound));
/// ```
pub fn detach_logger(level: Level) -> Result<(), LoggerError> {
    let mut state = STATE.lock();
    match *state {
        Some((current, _)) if current >= level => {
            let below = match level {
                Level::Error => None,
                Level::Info => Some(Level::Error),
                Level::Debug => Some(Level::Info),
                Level::Trace => Some(Level::Debug),
            };
            set(&mut state, below);
            Ok(())
        }
        _ => Err(LoggerError::NotFound),
    }
}

/// The most verbose level enabled, if any.
///
/// ```
/// let level = atoll::logger::level();
/// ```
pub fn level() -> Option<Level> {
    STATE.lock().map(|(level, _)| level)
}

fn set(state: &mut Option<(Level, SinkId)>, level: Option<Level>) {
    if let Some((_, id)) = state.take() {
        telemetry::detach(id);
    }
    *state = level.map(|level| {
        (
            level,
            telemetry::attach(move |event: &Event<'_>| log_event(level, event)),
        )
    });
}

/// The level an event is logged at.
fn level_of(kind: &Kind<'_>) -> Level {
    match kind {
        Kind::SpawnError { .. }
        | Kind::Emfile { .. }
        | Kind::AcceptError { .. }
        | Kind::RecvError { .. }
        | Kind::SendError { .. }
        | Kind::SendfileError { .. }
        | Kind::DatagramDropped { .. }
        | Kind::ConnectionStop { error: Some(_), .. } => Level::Error,
        Kind::ListenerStart { .. } | Kind::ListenerStop { .. } => Level::Info,
        Kind::AcceptorStart
        | Kind::AcceptorStop { .. }
        | Kind::ConnectionAborted
        | Kind::ConnectionStart { .. }
        | Kind::ConnectionStop { .. }
        | Kind::Ready => Level::Debug,
        _ => Level::Trace,
    }
}

fn log_event(enabled: Level, event: &Event<'_>) {
    let level = level_of(&event.kind);
    if level > enabled {
        return;
    }
    let log_level = match level {
        Level::Error => log::Level::Error,
        Level::Info => log::Level::Info,
        Level::Debug => log::Level::Debug,
        Level::Trace => log::Level::Trace,
    };
    if !log::log_enabled!(target: "atoll", log_level) {
        return;
    }
    let who = match (event.connection, event.peer) {
        (Some(id), Some(peer)) => format!(" connection={id} peer={peer}"),
        _ => String::new(),
    };
    log::log!(target: "atoll", log_level, "{} span={}{who}{}", event.name(), event.id.0, Details(&event.kind));
}

/// The measurements and metadata of an event, as ` key=value` pairs.
struct Details<'a, 'b>(&'a Kind<'b>);

impl fmt::Display for Details<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = |data: &[IoSlice<'_>]| data.iter().map(|s| s.len()).sum::<usize>();
        match self.0 {
            Kind::ListenerStart {
                local, transport, ..
            } => write!(f, " local={local} transport={transport}"),
            Kind::ListenerStop {
                local,
                duration,
                transport,
                ..
            } => {
                write!(
                    f,
                    " local={local} duration={duration:?} transport={transport}"
                )
            }
            Kind::AcceptorStop {
                duration,
                connections,
            } => {
                write!(f, " duration={duration:?} connections={connections}")
            }
            Kind::SpawnError { peer, reason } => write!(f, " peer={peer} reason={reason:?}"),
            Kind::Emfile { error } | Kind::AcceptError { error } => {
                write!(f, " error=\"{}\"", Chain(*error))
            }
            Kind::ConnectionStart { local, via, .. } => {
                write!(f, " local={local}")?;
                match via {
                    Some(via) => write!(f, " via={via}"),
                    None => Ok(()),
                }
            }
            Kind::ConnectionStop {
                duration,
                stats,
                error,
            } => {
                write!(
                    f,
                    " duration={duration:?} recv_oct={} recv_cnt={} send_oct={} send_cnt={}",
                    stats.recv_bytes, stats.recv_count, stats.send_bytes, stats.send_count
                )?;
                match error {
                    Some(e) => write!(f, " error=\"{}\"", Chain(*e)),
                    None => Ok(()),
                }
            }
            Kind::AsyncRecv { data } | Kind::Recv { data } => write!(f, " bytes={}", data.len()),
            Kind::Send { data } => write!(f, " bytes={}", bytes(data)),
            Kind::RecvError { error } => write!(f, " error=\"{}\"", Chain(*error)),
            Kind::SendError { data, error } => {
                write!(f, " bytes={} error=\"{}\"", bytes(data), Chain(*error))
            }
            Kind::Sendfile {
                path,
                offset,
                bytes_written,
                ..
            } => {
                write_path(f, *path)?;
                write!(f, " offset={offset} bytes={bytes_written}")
            }
            Kind::SendfileError {
                path,
                offset,
                length,
                error,
                ..
            } => {
                write_path(f, *path)?;
                write!(
                    f,
                    " offset={offset} length={length} error=\"{}\"",
                    Chain(*error)
                )
            }
            Kind::Custom {
                name,
                measurements,
                metadata,
            } => {
                write!(f, " name={name}")?;
                for (key, value) in measurements.iter() {
                    write!(f, " {key}={value}")?;
                }
                for (key, value) in metadata.iter() {
                    write!(f, " {key}=\"{value}\"")?;
                }
                Ok(())
            }
            Kind::SocketShutdown { way } => write!(f, " way={way:?}"),
            Kind::DatagramDropped { peer, len, reason } => {
                write!(f, " peer={peer} len={len} reason={reason:?}")
            }
            _ => Ok(()),
        }
    }
}

fn write_path(f: &mut fmt::Formatter<'_>, path: Option<&std::path::Path>) -> fmt::Result {
    match path {
        Some(path) => write!(f, " path=\"{}\"", path.display()),
        None => Ok(()),
    }
}
