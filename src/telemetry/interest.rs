//! [`Interest`]: the kinds of event a sink wants. Never delivers an event.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

/// Which kinds of event a sink receives: a set of [`Kind`]s, one constant
/// per kind, joined with `|`. A sink declares it with [`Sink::interest`]
/// (or is given it with [`only`]); it is read once, when the sink is
/// attached, and the sink then receives the events of those kinds and no
/// other.
///
/// What nobody wants is not paid for: an event that no sink attached
/// anywhere in the process wants is not built, dated or delivered,
/// `connection.callbacks` is timed only while a sink wants it, and a send
/// copies its slices for `connection.send` only then.
///
/// ```
/// use atoll::telemetry::{Event, Interest, Kind, Sink};
///
/// struct Waits;
///
/// impl Sink for Waits {
///     fn event(&self, event: &Event<'_>) {
///         if let Kind::Dispatch { wait } = event.kind {
///             println!("waited {wait:?}");
///         }
///     }
///
///     fn interest(&self) -> Interest {
///         Interest::DISPATCH
///     }
/// }
///
/// let wanted = Interest::DISPATCH | Interest::CONNECTION_STOP;
/// assert!(wanted.contains(Interest::DISPATCH));
/// assert!(!wanted.contains(Interest::SEND));
/// assert!(Interest::ALL.contains(wanted));
/// let id = atoll::telemetry::attach(Waits);
/// # atoll::telemetry::detach(id);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interest(pub(super) u32);

impl Interest {
    /// No event.
    pub const NONE: Interest = Interest(0);
    /// Every kind, including kinds added in later versions: the default of
    /// [`Sink::interest`].
    pub const ALL: Interest = Interest(u32::MAX);
    /// [`Kind::ListenerStart`]: `listener.start`.
    pub const LISTENER_START: Interest = Interest(1 << 0);
    /// [`Kind::ListenerStop`]: `listener.stop`.
    pub const LISTENER_STOP: Interest = Interest(1 << 1);
    /// [`Kind::AcceptorStart`]: `acceptor.start`.
    pub const ACCEPTOR_START: Interest = Interest(1 << 2);
    /// [`Kind::AcceptorStop`]: `acceptor.stop`.
    pub const ACCEPTOR_STOP: Interest = Interest(1 << 3);
    /// [`Kind::SpawnError`]: `acceptor.spawn_error`.
    pub const SPAWN_ERROR: Interest = Interest(1 << 4);
    /// [`Kind::ConnectionAborted`]: `acceptor.econnaborted`.
    pub const CONNECTION_ABORTED: Interest = Interest(1 << 5);
    /// [`Kind::Emfile`]: `acceptor.emfile`.
    pub const EMFILE: Interest = Interest(1 << 6);
    /// [`Kind::AcceptError`]: `acceptor.accept_error`.
    pub const ACCEPT_ERROR: Interest = Interest(1 << 7);
    /// [`Kind::DatagramDropped`]: `acceptor.datagram_dropped`.
    pub const DATAGRAM_DROPPED: Interest = Interest(1 << 8);
    /// [`Kind::ConnectionStart`]: `connection.start`.
    pub const CONNECTION_START: Interest = Interest(1 << 9);
    /// [`Kind::ConnectionStop`]: `connection.stop`.
    pub const CONNECTION_STOP: Interest = Interest(1 << 10);
    /// [`Kind::Ready`]: `connection.ready`.
    pub const READY: Interest = Interest(1 << 11);
    /// [`Kind::Dispatch`]: `connection.dispatch`.
    pub const DISPATCH: Interest = Interest(1 << 12);
    /// [`Kind::Callbacks`]: `connection.callbacks`.
    pub const CALLBACKS: Interest = Interest(1 << 13);
    /// [`Kind::AsyncRecv`]: `connection.async_recv`.
    pub const ASYNC_RECV: Interest = Interest(1 << 14);
    /// [`Kind::Recv`]: `connection.recv`.
    pub const RECV: Interest = Interest(1 << 15);
    /// [`Kind::RecvError`]: `connection.recv_error`.
    pub const RECV_ERROR: Interest = Interest(1 << 16);
    /// [`Kind::Send`]: `connection.send`.
    pub const SEND: Interest = Interest(1 << 17);
    /// [`Kind::SendError`]: `connection.send_error`.
    pub const SEND_ERROR: Interest = Interest(1 << 18);
    /// [`Kind::Sendfile`]: `connection.sendfile`.
    pub const SENDFILE: Interest = Interest(1 << 19);
    /// [`Kind::SendfileError`]: `connection.sendfile_error`.
    pub const SENDFILE_ERROR: Interest = Interest(1 << 20);
    /// [`Kind::SocketShutdown`]: `connection.socket_shutdown`.
    pub const SOCKET_SHUTDOWN: Interest = Interest(1 << 21);
    /// [`Kind::Custom`]: `connection.custom`.
    pub const CUSTOM: Interest = Interest(1 << 22);

    /// Whether every kind in `other` is in this set.
    ///
    /// ```
    /// use atoll::telemetry::Interest;
    /// assert!((Interest::SEND | Interest::RECV).contains(Interest::SEND));
    /// assert!(!Interest::SEND.contains(Interest::SEND | Interest::RECV));
    /// ```
    pub const fn contains(self, other: Interest) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether this set and `other` have a kind in common.
    ///
    /// ```
    /// use atoll::telemetry::Interest;
    /// assert!(Interest::ALL.intersects(Interest::SEND | Interest::RECV));
    /// assert!(!Interest::SEND.intersects(Interest::RECV));
    /// ```
    pub const fn intersects(self, other: Interest) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether the set is empty.
    ///
    /// ```
    /// use atoll::telemetry::Interest;
    /// assert!(Interest::NONE.is_empty());
    /// assert!(!Interest::READY.is_empty());
    /// ```
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds of both sets (`|` does the same).
    ///
    /// ```
    /// use atoll::telemetry::Interest;
    /// const STOPS: Interest = Interest::LISTENER_STOP.union(Interest::CONNECTION_STOP);
    /// assert_eq!(STOPS, Interest::LISTENER_STOP | Interest::CONNECTION_STOP);
    /// ```
    pub const fn union(self, other: Interest) -> Interest {
        Interest(self.0 | other.0)
    }

    /// The event names of the kinds in the set, in the order of [`Kind`].
    fn names(self) -> impl Iterator<Item = &'static str> {
        const NAMES: [(Interest, &str); 23] = [
            (Interest::LISTENER_START, "listener.start"),
            (Interest::LISTENER_STOP, "listener.stop"),
            (Interest::ACCEPTOR_START, "acceptor.start"),
            (Interest::ACCEPTOR_STOP, "acceptor.stop"),
            (Interest::SPAWN_ERROR, "acceptor.spawn_error"),
            (Interest::CONNECTION_ABORTED, "acceptor.econnaborted"),
            (Interest::EMFILE, "acceptor.emfile"),
            (Interest::ACCEPT_ERROR, "acceptor.accept_error"),
            (Interest::DATAGRAM_DROPPED, "acceptor.datagram_dropped"),
            (Interest::CONNECTION_START, "connection.start"),
            (Interest::CONNECTION_STOP, "connection.stop"),
            (Interest::READY, "connection.ready"),
            (Interest::DISPATCH, "connection.dispatch"),
            (Interest::CALLBACKS, "connection.callbacks"),
            (Interest::ASYNC_RECV, "connection.async_recv"),
            (Interest::RECV, "connection.recv"),
            (Interest::RECV_ERROR, "connection.recv_error"),
            (Interest::SEND, "connection.send"),
            (Interest::SEND_ERROR, "connection.send_error"),
            (Interest::SENDFILE, "connection.sendfile"),
            (Interest::SENDFILE_ERROR, "connection.sendfile_error"),
            (Interest::SOCKET_SHUTDOWN, "connection.socket_shutdown"),
            (Interest::CUSTOM, "connection.custom"),
        ];
        NAMES
            .into_iter()
            .filter(move |(kind, _)| self.contains(*kind))
            .map(|(_, name)| name)
    }
}

impl BitOr for Interest {
    type Output = Interest;

    fn bitor(self, other: Interest) -> Interest {
        self.union(other)
    }
}

impl BitOrAssign for Interest {
    fn bitor_assign(&mut self, other: Interest) {
        *self = self.union(other);
    }
}

impl Default for Interest {
    /// [`Interest::NONE`].
    fn default() -> Interest {
        Interest::NONE
    }
}

impl fmt::Debug for Interest {
    /// `ALL`, `NONE`, or the event names joined by `|`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Interest::ALL => f.write_str("Interest(ALL)"),
            Interest::NONE => f.write_str("Interest(NONE)"),
            _ => {
                f.write_str("Interest(")?;
                for (i, name) in self.names().enumerate() {
                    if i > 0 {
                        f.write_str(" | ")?;
                    }
                    f.write_str(name)?;
                }
                f.write_str(")")
            }
        }
    }
}
