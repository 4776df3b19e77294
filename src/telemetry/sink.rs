//! [`Sink`]s and the lists they are attached to, sharded so that workers
//! delivering events do not contend; which kinds some sink wants. Never
//! builds an event.

use std::cell::Cell;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::{Event, Interest, NEXT_ID, WANTED, WANTED_BY};

/// Receives events. Closures `Fn(&Event)` are sinks too. Called on the
/// thread where the event happened (an acceptor thread or a worker): keep it
/// quick.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use atoll::telemetry::{Event, Interest, Kind, Sink};
///
/// #[derive(Default)]
/// struct BytesIn(AtomicU64);
///
/// impl Sink for BytesIn {
///     fn event(&self, event: &Event<'_>) {
///         if let Kind::AsyncRecv { data } = event.kind {
///             self.0.fetch_add(data.len() as u64, Ordering::Relaxed);
///         }
///     }
///
///     // Only what `event` looks at: other events are not built for it.
///     fn interest(&self) -> Interest {
///         Interest::ASYNC_RECV
///     }
/// }
///
/// let id = atoll::telemetry::attach(BytesIn::default());
/// # atoll::telemetry::detach(id);
/// ```
pub trait Sink: Send + Sync + 'static {
    /// One event, of a kind in the sink's [`interest`](Sink::interest).
    fn event(&self, event: &Event<'_>);

    /// The kinds of event the sink receives, read once when it is attached.
    /// By default every kind ([`Interest::ALL`]); a sink that names only
    /// what it uses spares the server the work of the others (see
    /// [`Interest`]).
    ///
    /// ```
    /// use atoll::telemetry::{Event, Interest, Sink};
    ///
    /// struct Stops;
    ///
    /// impl Sink for Stops {
    ///     fn event(&self, event: &Event<'_>) {
    ///         println!("{} ended", event.connection.unwrap_or_default());
    ///     }
    ///
    ///     fn interest(&self) -> Interest {
    ///         Interest::CONNECTION_STOP
    ///     }
    /// }
    /// assert_eq!(Stops.interest(), Interest::CONNECTION_STOP);
    /// ```
    fn interest(&self) -> Interest {
        Interest::ALL
    }
}

impl<F: Fn(&Event<'_>) + Send + Sync + 'static> Sink for F {
    fn event(&self, event: &Event<'_>) {
        self(event)
    }
}

/// `sink` with its interest narrowed to `interest`: a closure (whose
/// interest is every kind) made to want only some.
///
/// ```
/// use atoll::telemetry::{only, Event, Interest};
///
/// let id = atoll::telemetry::attach(only(
///     Interest::CONNECTION_START | Interest::CONNECTION_STOP,
///     |event: &Event<'_>| println!("{}", event.name()),
/// ));
/// # atoll::telemetry::detach(id);
/// ```
pub fn only(interest: Interest, sink: impl Sink) -> impl Sink {
    Only { interest, sink }
}

/// What [`only`] returns.
struct Only<S> {
    interest: Interest,
    sink: S,
}

impl<S: Sink> Sink for Only<S> {
    fn event(&self, event: &Event<'_>) {
        self.sink.event(event)
    }

    fn interest(&self) -> Interest {
        Interest(self.interest.0 & self.sink.interest().0)
    }
}

/// The id an attached sink is detached by.
///
/// ```
/// let id: atoll::telemetry::SinkId = atoll::telemetry::attach(|_: &atoll::telemetry::Event<'_>| {});
/// atoll::telemetry::detach(id);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SinkId(u64);

/// One attached sink.
struct Attached {
    id: SinkId,
    interest: Interest,
    sink: Arc<dyn Sink>,
}

/// Copies of the list that [`Sinks`] keeps.
const SHARDS: usize = 8;

/// Which copy of every list this thread reads: threads take them in turn.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's copy of a list.
fn shard() -> usize {
    SHARD
        .try_with(|shard| {
            if shard.get() == usize::MAX {
                shard.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
            }
            shard.get()
        })
        .unwrap_or(0)
}

/// One copy of the list, under a lock of its own, alone on its cache
/// lines.
#[repr(align(128))]
struct Shard(RwLock<Vec<Attached>>);

/// A list of sinks. Every event of a kind one of them wants reads it, and
/// attaching or detaching is rare: so the list is kept in several copies,
/// each read by some of the threads under its own lock, and changed in
/// all. Workers delivering events at once then do not contend on one lock.
pub(crate) struct Sinks {
    shards: [Shard; SHARDS],
    /// Attaches and detaches one at a time.
    changes: Mutex<()>,
    /// What the sinks of the list want together: events of no other kind
    /// skip the list's lock.
    interest: AtomicU32,
}

impl fmt::Debug for Sinks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sinks")
            .field("attached", &self.shards[0].0.read().len())
            .finish()
    }
}

/// Counts `interest` in (`add`) or out of what the process's sinks want.
fn want(interest: Interest, add: bool) {
    let mut by = WANTED_BY.lock();
    let mut wanted = 0;
    for (bit, count) in by.iter_mut().enumerate() {
        if interest.0 & (1 << bit) != 0 {
            *count = if add {
                *count + 1
            } else {
                count.saturating_sub(1)
            };
        }
        if *count > 0 {
            wanted |= 1 << bit;
        }
    }
    WANTED.store(wanted, Ordering::Relaxed);
}

impl Sinks {
    pub(crate) const fn new() -> Sinks {
        Sinks {
            shards: [const { Shard(RwLock::new(Vec::new())) }; SHARDS],
            changes: Mutex::new(()),
            interest: AtomicU32::new(0),
        }
    }

    pub(crate) fn attach(&self, sink: Arc<dyn Sink>) -> SinkId {
        let id = SinkId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let interest = sink.interest();
        let _changing = self.changes.lock();
        for shard in &self.shards {
            shard.0.write().push(Attached {
                id,
                interest,
                sink: sink.clone(),
            });
        }
        self.interest.fetch_or(interest.0, Ordering::Relaxed);
        want(interest, true);
        id
    }

    /// Once this returns, no event reaches the sink: each copy's write
    /// lock waited for the deliveries reading it.
    pub(crate) fn detach(&self, id: SinkId) -> bool {
        let _changing = self.changes.lock();
        let mut gone = None;
        for shard in &self.shards {
            let mut list = shard.0.write();
            if let Some(at) = list.iter().position(|a| a.id == id) {
                gone = Some(list.remove(at).interest);
            }
        }
        let Some(interest) = gone else {
            return false;
        };
        let left = self.shards[0]
            .0
            .read()
            .iter()
            .fold(0, |all, a| all | a.interest.0);
        self.interest.store(left, Ordering::Relaxed);
        want(interest, false);
        true
    }

    /// Delivers `event` to the sinks that want it.
    pub(super) fn deliver(&self, event: &Event<'_>, kind: Interest) {
        if self.interest.load(Ordering::Relaxed) & kind.0 == 0 {
            return;
        }
        let mut panicked = Vec::new();
        for attached in self.shards[shard()].0.read().iter() {
            if !attached.interest.intersects(kind) {
                continue;
            }
            let sink = &attached.sink;
            if panic::catch_unwind(AssertUnwindSafe(|| sink.event(event))).is_err() {
                panicked.push(attached.id);
            }
        }
        for id in panicked {
            if self.detach(id) {
                report!(
                    error,
                    { sink = id.0, event = event.name(), "telemetry sink panicked; detached" },
                    target: "atoll",
                    "telemetry sink {id:?} panicked on {}; detached",
                    event.name()
                );
            }
        }
    }
}

impl Drop for Sinks {
    /// A server's sinks stop counting among what the process wants.
    fn drop(&mut self) {
        for attached in self.shards[0].0.get_mut().drain(..) {
            want(attached.interest, false);
        }
    }
}
