//! A server's numbers through the [`metrics`](https://docs.rs/metrics)
//! facade (feature `metrics`), for Prometheus or any other recorder the
//! application installs.
//!
//! [`Metrics::publish`] attaches a telemetry sink to one server, which
//! takes the histograms' samples as events happen, and starts a thread
//! (`atoll-metrics`) that copies [`ServerStats`] into counters and gauges
//! at an interval (and whenever [`Publisher::update`] is called, before a
//! scrape for one). Nothing is recorded, and the server pays nothing, until
//! then. After it, the sink asks only for the three events it records
//! ([`Interest`]), and each worker keeps its samples in a buffer of its
//! own that the thread hands to the recorder every 50 ms (and `update`
//! at once): the workers never contend in the recorder, and a histogram
//! lags the server by 50 ms at most.
//!
//! | name | kind | from |
//! |---|---|---|
//! | `atoll_connections_accepted_total` | counter | [`ServerStats::accepted`] |
//! | `atoll_connections_rejected_total` | counter | [`ServerStats::rejected`] |
//! | `atoll_connections_refused_total` | counter | [`ServerStats::refused`] |
//! | `atoll_accept_errors_total` | counter | [`ServerStats::accept_errors`] |
//! | `atoll_handler_panics_total` | counter | [`ServerStats::panics`] |
//! | `atoll_received_bytes_total` | counter | [`ServerStats::bytes_in`] |
//! | `atoll_sent_bytes_total` | counter | [`ServerStats::bytes_out`] |
//! | `atoll_dispatches_total` | counter | [`ServerStats::dispatches`] |
//! | `atoll_saturations_total` | counter | [`ServerStats::saturations`] |
//! | `atoll_messages_refused_total` | counter | [`ServerStats::messages_refused`] |
//! | `atoll_proxy_errors_total` | counter | [`ServerStats::proxy_errors`] |
//! | `atoll_connections` | gauge | [`ServerStats::live`] |
//! | `atoll_workers` | gauge | [`ServerStats::workers`] |
//! | `atoll_workers_busy` | gauge | [`ServerStats::busy_workers`] |
//! | `atoll_workers_blocked` | gauge | [`ServerStats::blocked_workers`] |
//! | `atoll_queued_connections` | gauge | [`ServerStats::queued`] |
//! | `atoll_connection_duration_seconds` | histogram | each connection's life ([`Kind::ConnectionStop`]) |
//! | `atoll_dispatch_wait_seconds` | histogram | readiness to worker ([`Kind::Dispatch`]) |
//! | `atoll_callback_duration_seconds` | histogram | one round of a connection's callbacks on a worker ([`Kind::Callbacks`]) |
//!
//! Every metric carries the labels given with [`Metrics::label`], to tell
//! several servers of one process apart.
//!
//! ```
//! use std::time::Duration;
//! use atoll::{Handler, Server};
//! # struct Echo;
//! # impl Handler for Echo {}
//!
//! // First the application installs a recorder (a Prometheus exporter,
//! // say); handles taken before that record nothing.
//! let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(Echo))?;
//! let publisher = atoll::metrics::Metrics::new()
//!     .label("server", "echo")
//!     .interval(Duration::from_secs(5))
//!     .publish(&server)?;
//! // ... serve; scrape ...
//! publisher.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Label, Unit,
};
use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::error::Error;
use crate::server::Server;
use crate::stats::ServerStats;
use crate::telemetry::{Event, Interest, Kind, Sink, SinkId, Telemetry};

/// What to publish a server's numbers with: labels and the interval of the
/// counters and gauges. [`publish`](Metrics::publish) starts it.
///
/// ```
/// let metrics = atoll::metrics::Metrics::new().label("server", "api");
/// ```
#[derive(Clone, Debug)]
#[must_use = "nothing is recorded until `publish`"]
pub struct Metrics {
    labels: Vec<Label>,
    interval: Duration,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// No labels; counters and gauges every second.
    ///
    /// ```
    /// let metrics = atoll::metrics::Metrics::new();
    /// ```
    pub fn new() -> Metrics {
        Metrics {
            labels: Vec::new(),
            interval: Duration::from_secs(1),
        }
    }

    /// Adds a label to every metric (`server="api"`). Default: none.
    ///
    /// ```
    /// let metrics = atoll::metrics::Metrics::new().label("server", "api").label("port", "4000");
    /// ```
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Metrics {
        self.labels.push(Label::new(key.into(), value.into()));
        self
    }

    /// How often the counters and gauges are copied from
    /// [`Server::stats`]. Default is 1 s; a zero interval is taken as 1 ms.
    ///
    /// ```
    /// use std::time::Duration;
    /// let metrics = atoll::metrics::Metrics::new().interval(Duration::from_millis(250));
    /// ```
    pub fn interval(mut self, every: Duration) -> Metrics {
        self.interval = every.max(Duration::from_millis(1));
        self
    }

    /// Publishes `server`'s numbers to the recorder installed now: attaches
    /// the histograms' sink to it, copies its stats once, and starts a
    /// thread (`atoll-metrics`) that copies them at the interval. The
    /// returned [`Publisher`] stops both when stopped or dropped; so does
    /// the server's end (drop).
    ///
    /// A server has one publisher at a time: while one runs, publishing
    /// the same server again fails with [`Error::Config`] (a second sink
    /// would record every histogram sample twice). Once the first is
    /// stopped or dropped, the server can be published again.
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// let publisher = atoll::metrics::Metrics::new().publish(&server)?;
    /// publisher.update(); // now, rather than at the next interval
    /// assert!(atoll::metrics::Metrics::new().publish(&server).is_err());
    /// publisher.stop();
    /// let again = atoll::metrics::Metrics::new().publish(&server)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish<M: Send + 'static>(self, server: &Server<M>) -> Result<Publisher, Error> {
        let telemetry = server.weak_telemetry();
        let claimed = telemetry
            .upgrade()
            .is_some_and(|t| !t.published.swap(true, Ordering::AcqRel));
        if !claimed {
            return Err(Error::Config(
                "this server's metrics are already published: stop its Publisher first".into(),
            ));
        }
        describe();
        let gauges = Arc::new(Numbers::new(&self.labels));
        let histograms = Arc::new(Histograms::new(&self.labels));
        let stats = server.weak_stats();
        if let Some(now) = stats() {
            gauges.set(&now);
        }
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = {
            let gauges = gauges.clone();
            let histograms = histograms.clone();
            let stats = server.weak_stats();
            let every = self.interval;
            std::thread::Builder::new()
                .name("atoll-metrics".into())
                .spawn(move || {
                    let tick = every.min(FLUSH_EVERY);
                    let mut copy_at = Instant::now() + every;
                    loop {
                        match stopped.recv_timeout(tick) {
                            Err(RecvTimeoutError::Timeout) => {}
                            _ => return,
                        }
                        histograms.flush();
                        if Instant::now() >= copy_at {
                            match stats() {
                                Some(now) => gauges.set(&now),
                                None => return, // the server is gone
                            }
                            copy_at = Instant::now() + every;
                        }
                    }
                })
        };
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(e) => {
                // The histograms record on the workers' threads instead,
                // and `update` copies the stats.
                histograms.buffered.store(false, Ordering::Relaxed);
                report!(
                    error,
                    { error = %e, "cannot start the metrics thread; counters and gauges change only on Publisher::update" },
                    target: "atoll",
                    "cannot start the metrics thread ({e}); counters and gauges change only on Publisher::update"
                );
                None
            }
        };
        let sink = server.attach_sink(Recording(histograms.clone()));
        Ok(Publisher {
            gauges,
            histograms,
            stats,
            inner: Mutex::new(Running {
                stop: Some(stop),
                thread,
                sink: Some((telemetry, sink)),
            }),
        })
    }
}

/// Describes the metrics to the installed recorder (units, help text).
fn describe() {
    let counters: [(&'static str, Unit, &'static str); 11] = [
        (
            ACCEPTED,
            Unit::Count,
            "Connections accepted from the listener.",
        ),
        (
            REJECTED,
            Unit::Count,
            "Connections closed because the connection limit stayed full.",
        ),
        (
            REFUSED,
            Unit::Count,
            "Connections the handler factory refused.",
        ),
        (ACCEPT_ERRORS, Unit::Count, "Failed accept calls."),
        (PANICS, Unit::Count, "Handler callbacks that panicked."),
        (BYTES_IN, Unit::Bytes, "Bytes received from clients."),
        (BYTES_OUT, Unit::Bytes, "Bytes sent to clients."),
        (
            DISPATCHES,
            Unit::Count,
            "Times a worker took a connection up to run its callbacks.",
        ),
        (
            SATURATIONS,
            Unit::Count,
            "Times every worker was busy for half a second with work waiting.",
        ),
        (
            MESSAGES_REFUSED,
            Unit::Count,
            "Messages refused because a connection's queue was full.",
        ),
        (
            PROXY_ERRORS,
            Unit::Count,
            "Connections closed for a bad PROXY protocol header.",
        ),
    ];
    for (name, unit, help) in counters {
        describe_counter!(name, unit, help);
    }
    describe_gauge!(LIVE, Unit::Count, "Live connections.");
    describe_gauge!(WORKERS, Unit::Count, "Worker threads.");
    describe_gauge!(BUSY, Unit::Count, "Workers running a callback.");
    describe_gauge!(BLOCKED, Unit::Count, "Workers in a callback that blocks.");
    describe_gauge!(QUEUED, Unit::Count, "Connections waiting for a worker.");
    describe_histogram!(
        CONNECTION_DURATION,
        Unit::Seconds,
        "How long connections lived."
    );
    describe_histogram!(
        DISPATCH_WAIT,
        Unit::Seconds,
        "Time from readiness to a worker."
    );
    describe_histogram!(
        CALLBACK_DURATION,
        Unit::Seconds,
        "Time a worker spent in one round of a connection's callbacks."
    );
}

const ACCEPTED: &str = "atoll_connections_accepted_total";
const REJECTED: &str = "atoll_connections_rejected_total";
const REFUSED: &str = "atoll_connections_refused_total";
const ACCEPT_ERRORS: &str = "atoll_accept_errors_total";
const PANICS: &str = "atoll_handler_panics_total";
const BYTES_IN: &str = "atoll_received_bytes_total";
const BYTES_OUT: &str = "atoll_sent_bytes_total";
const DISPATCHES: &str = "atoll_dispatches_total";
const SATURATIONS: &str = "atoll_saturations_total";
const MESSAGES_REFUSED: &str = "atoll_messages_refused_total";
const PROXY_ERRORS: &str = "atoll_proxy_errors_total";
const LIVE: &str = "atoll_connections";
const WORKERS: &str = "atoll_workers";
const BUSY: &str = "atoll_workers_busy";
const BLOCKED: &str = "atoll_workers_blocked";
const QUEUED: &str = "atoll_queued_connections";
const CONNECTION_DURATION: &str = "atoll_connection_duration_seconds";
const DISPATCH_WAIT: &str = "atoll_dispatch_wait_seconds";
const CALLBACK_DURATION: &str = "atoll_callback_duration_seconds";

/// The counters and gauges, registered once: copying the stats is then a
/// store per metric, with no lookup by name.
struct Numbers {
    counters: [Counter; 11],
    gauges: [Gauge; 5],
}

impl Numbers {
    fn new(labels: &[Label]) -> Numbers {
        let c = |name: &'static str| counter!(name, labels.iter());
        let g = |name: &'static str| gauge!(name, labels.iter());
        Numbers {
            counters: [
                c(ACCEPTED),
                c(REJECTED),
                c(REFUSED),
                c(ACCEPT_ERRORS),
                c(PANICS),
                c(BYTES_IN),
                c(BYTES_OUT),
                c(DISPATCHES),
                c(SATURATIONS),
                c(MESSAGES_REFUSED),
                c(PROXY_ERRORS),
            ],
            gauges: [g(LIVE), g(WORKERS), g(BUSY), g(BLOCKED), g(QUEUED)],
        }
    }

    fn set(&self, s: &ServerStats) {
        let counts = [
            s.accepted,
            s.rejected,
            s.refused,
            s.accept_errors,
            s.panics,
            s.bytes_in,
            s.bytes_out,
            s.dispatches,
            s.saturations,
            s.messages_refused,
            s.proxy_errors,
        ];
        // The stats are totals already: the counters take them as they are.
        for (counter, value) in self.counters.iter().zip(counts) {
            counter.absolute(value);
        }
        let levels = [
            s.live,
            s.workers,
            s.busy_workers,
            s.blocked_workers,
            s.queued,
        ];
        for (gauge, value) in self.gauges.iter().zip(levels) {
            gauge.set(value as f64);
        }
    }
}

/// How often the metrics thread hands the workers' samples to the
/// recorder (or at the interval, if shorter).
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Samples a worker keeps at most: beyond, it records them itself (only
/// at rates of millions of events a second per worker, or with no
/// metrics thread).
const BUFFER_CAP: usize = 1 << 16;

/// Ids of [`Histograms`], to find a thread's buffer for each.
static NEXT_HISTOGRAMS: AtomicU64 = AtomicU64::new(1);

/// One histogram sample: which histogram, and the value in seconds.
#[derive(Clone, Copy)]
enum Sample {
    Connection(f64),
    DispatchWait(f64),
    Callbacks(f64),
}

/// A thread's samples for one [`Histograms`]: locked by that thread to add
/// one, by the metrics thread to take them all.
#[derive(Default)]
struct Buffer {
    samples: Mutex<Vec<Sample>>,
    /// Set when the histograms are gone: the thread drops its entry.
    closed: AtomicBool,
}

thread_local! {
    /// This thread's buffers, by the id of their histograms.
    static BUFFERS: RefCell<Vec<(u64, Arc<Buffer>)>> = const { RefCell::new(Vec::new()) };
}

/// The histograms, registered once, and the buffers of the threads that
/// take samples for them.
struct Histograms {
    connection: Histogram,
    dispatch_wait: Histogram,
    callbacks: Histogram,
    id: u64,
    /// Off (samples recorded where they are taken) when there is no
    /// metrics thread to flush the buffers.
    buffered: AtomicBool,
    buffers: Mutex<Vec<Arc<Buffer>>>,
}

impl Histograms {
    fn new(labels: &[Label]) -> Histograms {
        Histograms {
            connection: histogram!(CONNECTION_DURATION, labels.iter()),
            dispatch_wait: histogram!(DISPATCH_WAIT, labels.iter()),
            callbacks: histogram!(CALLBACK_DURATION, labels.iter()),
            id: NEXT_HISTOGRAMS.fetch_add(1, Ordering::Relaxed),
            buffered: AtomicBool::new(true),
            buffers: Mutex::new(Vec::new()),
        }
    }

    /// Adds a sample to this thread's buffer (recording them all if it is
    /// full), or records it when there is no buffer.
    fn take(&self, sample: Sample) {
        if !self.buffered.load(Ordering::Relaxed) {
            return self.record(&[sample]);
        }
        let kept = BUFFERS.try_with(|buffers| {
            let Ok(mut buffers) = buffers.try_borrow_mut() else {
                return false;
            };
            let at = match buffers.iter().position(|(id, _)| *id == self.id) {
                Some(at) => at,
                None => {
                    // Buffers of histograms that are gone go first.
                    buffers.retain(|(_, b)| !b.closed.load(Ordering::Relaxed));
                    let buffer = Arc::new(Buffer::default());
                    self.buffers.lock().push(buffer.clone());
                    buffers.push((self.id, buffer));
                    buffers.len() - 1
                }
            };
            let mut samples = buffers[at].1.samples.lock();
            samples.push(sample);
            if samples.len() >= BUFFER_CAP {
                let full = std::mem::take(&mut *samples);
                drop(samples);
                self.record(&full);
            }
            true
        });
        if !matches!(kept, Ok(true)) {
            // The thread is exiting (its buffers are gone), or re-entered.
            self.record(&[sample]);
        }
    }

    /// Hands every thread's samples to the recorder; forgets the buffers
    /// of threads that ended.
    fn flush(&self) {
        let buffers: Vec<Arc<Buffer>> = {
            let mut all = self.buffers.lock();
            // Held only here: its thread ended. Flushed a last time below.
            let (ended, live): (Vec<_>, Vec<_>) =
                all.drain(..).partition(|b| Arc::strong_count(b) == 1);
            *all = live;
            all.iter().cloned().chain(ended).collect()
        };
        for buffer in buffers {
            let samples = {
                let mut samples = buffer.samples.lock();
                let capacity = samples.capacity().min(BUFFER_CAP);
                std::mem::replace(&mut *samples, Vec::with_capacity(capacity))
            };
            self.record(&samples);
        }
    }

    fn record(&self, samples: &[Sample]) {
        for sample in samples {
            match *sample {
                Sample::Connection(s) => self.connection.record(s),
                Sample::DispatchWait(s) => self.dispatch_wait.record(s),
                Sample::Callbacks(s) => self.callbacks.record(s),
            }
        }
    }
}

impl Drop for Histograms {
    /// The threads drop their buffers for these histograms.
    fn drop(&mut self) {
        for buffer in self.buffers.get_mut().drain(..) {
            buffer.closed.store(true, Ordering::Relaxed);
            // Nothing left to record: the publisher flushed after
            // detaching the sink. Free the space now, not when the thread
            // next looks.
            *buffer.samples.lock() = Vec::new();
        }
    }
}

/// The sink that takes the histograms' samples from the server's events.
struct Recording(Arc<Histograms>);

impl Sink for Recording {
    fn event(&self, event: &Event<'_>) {
        let sample = match event.kind {
            Kind::Dispatch { wait } => Sample::DispatchWait(wait.as_secs_f64()),
            Kind::Callbacks { duration } => Sample::Callbacks(duration.as_secs_f64()),
            Kind::ConnectionStop { duration, .. } => Sample::Connection(duration.as_secs_f64()),
            _ => return,
        };
        self.0.take(sample);
    }

    /// Only these: the server builds no other event for this sink.
    fn interest(&self) -> Interest {
        Interest::DISPATCH | Interest::CALLBACKS | Interest::CONNECTION_STOP
    }
}

/// Publishes one server's numbers until stopped or dropped (see
/// [`Metrics::publish`]).
///
/// ```
/// # use atoll::{Handler, Server};
/// # struct H;
/// # impl Handler for H {}
/// # let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
/// let publisher = atoll::metrics::Metrics::new().publish(&server)?;
/// drop(publisher); // stops publishing
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping the publisher stops publishing"]
pub struct Publisher {
    gauges: Arc<Numbers>,
    histograms: Arc<Histograms>,
    stats: Box<dyn Fn() -> Option<ServerStats> + Send + Sync>,
    inner: Mutex<Running>,
}

struct Running {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// The server's telemetry (while the server lives) and the sink
    /// attached there.
    sink: Option<(Weak<Telemetry>, SinkId)>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("running", &self.inner.lock().stop.is_some())
            .finish()
    }
}

impl Publisher {
    /// Records the histogram samples the workers hold and copies the
    /// server's stats into the counters and gauges now, as before a
    /// scrape (the counters and gauges not once the server is gone).
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// # let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// let publisher = atoll::metrics::Metrics::new().publish(&server)?;
    /// publisher.update();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update(&self) {
        self.histograms.flush();
        if let Some(now) = (self.stats)() {
            self.gauges.set(&now);
        }
    }

    /// Ends the thread, detaches the sink, then records its last samples
    /// and copies the stats a last time. Dropping the publisher does the
    /// same.
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// # let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// atoll::metrics::Metrics::new().publish(&server)?.stop();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let running = self.inner.get_mut();
        drop(running.stop.take()); // wakes the thread: its channel is closed
        if let Some(thread) = running.thread.take() {
            let _ = thread.join();
        }
        let telemetry = running.sink.take().and_then(|(telemetry, sink)| {
            let telemetry = telemetry.upgrade()?;
            telemetry.sinks.detach(sink);
            Some(telemetry)
        });
        // Detached, the sink takes no more samples: record all it took.
        self.update();
        if let Some(telemetry) = telemetry {
            // The server can be published again.
            telemetry.published.store(false, Ordering::Release);
        }
    }
}
