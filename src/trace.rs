//! atoll's own report lines, and its spans in `tracing` (feature
//! `tracing`). Formats and forwards; holds no state.
//!
//! Without the feature a report is the `log` record it always was, with
//! its words; with it, a `tracing` event (target `atoll`) whose values are
//! fields rather than text. atoll does not turn on `tracing`'s own `log`
//! bridge: it would also log every span's creation, a line per connection;
//! an application that wants it enables it. The spans (listener, acceptor,
//! connection) are made beside the telemetry spans of the same names.

/// Reports a line: `report!(level, { fields and message for tracing },
/// arguments of log's macro)`. Both halves are given so that the `log`
/// line stays word for word what it was without the feature.
macro_rules! report {
    ($level:ident, { $($event:tt)* }, $($log:tt)+) => {{
        #[cfg(feature = "tracing")]
        ::tracing::$level!(target: "atoll", $($event)*);
        #[cfg(not(feature = "tracing"))]
        ::log::$level!($($log)+);
    }};
}
