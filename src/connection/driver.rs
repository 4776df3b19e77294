//! Driving one connection on a worker: its scheduling rounds, its
//! callbacks and the flows they return, and its end. Never touches another
//! connection or the pool's threads.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use super::sched::Work;
use super::{Conn, Setup, State, DETACHED, ENDED};
use crate::error::{panic_message, Error};
use crate::handler::{Flow, Handler};
use crate::proxy::{self, Proxied};
use crate::socket::{Release, Socket};
use crate::stats::Traffic;
use crate::telemetry::{Interest, Kind, SpawnError, Telemetry};
use crate::transport::Handshake;

/// Reads per round before a connection yields to the others.
const READ_BUDGET: usize = 8;
/// Messages per round before a connection yields to the others.
const MESSAGE_BUDGET: usize = 64;
/// Rounds a worker runs one connection for before putting it at the back
/// of the queue, when more work keeps arriving for it.
const MAX_ROUNDS: usize = 2;

/// How a connection ends.
enum End {
    /// The peer closed, or a callback returned `Flow::Close`.
    Close,
    /// The socket was closed inside a callback: no further callback.
    Quiet,
    Timeout,
    Shutdown,
    Error(Error),
    Detach(Box<dyn FnOnce(Socket) + Send>),
}

/// Which callback a flow came from: messages do not restart the idle timer.
#[derive(PartialEq)]
enum Source {
    Connection,
    Data,
    Message,
}

/// Runs a scheduled connection until it has no pending work, it ends, or it
/// has had its share of the worker.
/// `waited` is the time since it became runnable, `at` when the worker
/// took it up.
pub(crate) fn run<H: Handler<M>, M: Send + 'static>(
    conn: &Arc<Conn<H, M>>,
    buf: &mut [u8],
    waited: Duration,
    at: Instant,
) -> Traffic {
    // The handler's own tracing events carry the connection's fields.
    #[cfg(feature = "tracing")]
    let _span = conn.meta.span.enter();
    let mut state = conn.state.lock();
    // Reported in the connection's span, which starts once its handler
    // exists: by `step` for the run that makes the handler.
    let mut waited = Some(waited);
    // The pool's reading dates the dispatch and starts the first round;
    // each round's end (read only for a sink that wants it) starts the next.
    let mut now = Some(at);
    let mut traffic = Traffic::default();
    if let (Some(socket), true) = (state.socket.as_ref(), state.handler.is_some()) {
        if let (Some(span), Some(wait)) = (socket.span(), waited.take()) {
            span.emit_at(at, socket.peer_addr(), || Kind::Dispatch { wait });
        }
    }
    for _ in 0..MAX_ROUNDS {
        let flags = conn.sched.take();
        let start = now.take();
        let started =
            Telemetry::wants(Interest::CALLBACKS).then(|| start.unwrap_or_else(Instant::now));
        let result = step(conn, &mut state, flags, buf, waited.take());
        let has_handler = state.handler.is_some();
        if let Some(socket) = state.socket.as_mut() {
            // A connection without a handler (refused, or its PROXY header
            // still coming) has no span yet: no event may start it.
            if let (Some(started), true, Some(span)) = (started, has_handler, socket.span()) {
                let end = Instant::now();
                span.emit_at(end, socket.peer_addr(), || Kind::Callbacks {
                    duration: end - started,
                });
                now = Some(end);
            }
            traffic += socket.unpublished();
        }
        if let Err(end) = result {
            // Never released: the connection is never scheduled again.
            traffic += finish(conn, state, end);
            return traffic;
        }
        if conn.sched.release() {
            return traffic;
        }
    }
    drop(state);
    conn.service.pool.schedule(conn.clone());
    traffic
}

/// Handles the pending work in `flags`; `Err` when the connection ends.
fn step<H: Handler<M>, M: Send + 'static>(
    conn: &Arc<Conn<H, M>>,
    state: &mut State<H>,
    flags: Work,
    buf: &mut [u8],
    waited: Option<Duration>,
) -> Result<(), End> {
    // A stop that finds the connection accepted but not yet set up sets it
    // up, serves what the client already sent, then shuts it down: the
    // client's first request is not lost to a reset. A connection in a
    // handshake or waiting for its PROXY header ends at once.
    let stopping = flags.has(Work::SHUTDOWN);
    let unserved = state.handler.is_none() && matches!(state.setup, Setup::Accepted(_));
    if stopping && !unserved {
        return Err(if state.handler.is_some() {
            End::Shutdown
        } else {
            End::Quiet
        });
    }
    if state.handler.is_none() {
        // The handler is made once the PROXY header (if any) named the
        // client; a bad header still makes one, for handle_error.
        let refused = match proxy_header(conn, state, flags) {
            Ok(true) => None,
            Ok(false) => return Ok(()),
            Err(e) => Some(e),
        };
        let made = guarded(conn, || (conn.service.factory)(&conn.handle()));
        match made {
            Ok(Ok(handler)) => state.handler = Some(handler),
            Ok(Err(reason)) => return Err(End::Error(Error::Refused(reason))),
            Err(end) => return Err(end),
        }
        // The connection exists for telemetry once it has a handler: a
        // refused one was only ever a spawn error.
        if let Some(socket) = state.socket.as_mut() {
            socket.start_span();
            if let Some(wait) = waited {
                socket.emit(|| Kind::Dispatch { wait });
            }
        }
        if let Some(e) = refused {
            return Err(End::Error(e));
        }
    }
    let State {
        handler: Some(handler),
        socket: Some(socket),
        setup,
    } = state
    else {
        return Err(End::Quiet);
    };
    // Bytes may wait that no new edge will announce: after a handshake that
    // read from the socket, or when the stream keeps its own buffer.
    let mut want_read = flags.has(Work::READABLE);
    // A round that found the handshake waiting used up its `MESSAGE`:
    // messages sent meanwhile are handled once it is done.
    let mut want_messages = flags.has(Work::MESSAGE);
    if !matches!(setup, Setup::Ready) {
        if !handshake(conn, setup, socket, flags)? {
            return if stopping { Err(End::Shutdown) } else { Ok(()) };
        }
        socket.emit(|| Kind::Ready);
        let flow = guarded(conn, || handler.handle_connection(socket));
        after(conn, socket, flow, Source::Connection)?;
        want_read = true;
        want_messages = true;
    }
    if want_messages {
        for _ in 0..MESSAGE_BUDGET {
            let Some(message) = conn.mailbox.lock().pop_front() else {
                break;
            };
            let flow = guarded(conn, || handler.handle_message(message, socket));
            after(conn, socket, flow, Source::Message)?;
        }
        if !conn.mailbox.lock().is_empty() {
            conn.sched.keep(Work::MESSAGE);
        }
    }
    let to_eof = flags.has(Work::HANGUP);
    let mut reads = 0;
    loop {
        if conn.sched.pending(Work::SHUTDOWN) {
            break; // the next round runs handle_shutdown
        }
        // Bytes a synchronous recv read ahead go first, without waiting.
        if let Some(data) = socket.take_unread_vec() {
            socket.emit(|| Kind::AsyncRecv { data: &data });
            let flow = guarded(conn, || handler.handle_data(&data, socket));
            after(conn, socket, flow, Source::Data)?;
            continue;
        }
        if !want_read && !socket.maybe_more() {
            break;
        }
        if reads == READ_BUDGET {
            // More may be waiting: yield to other connections and come back.
            conn.sched.keep(Work::READABLE | flags.only(Work::HANGUP));
            break;
        }
        reads += 1;
        match socket.try_read(buf) {
            Ok(0) => return Err(End::Close),
            Ok(n) => {
                // A short read drained the kernel buffer: new data brings a
                // new edge. After a hang-up there is no new edge, so read on
                // to the end of stream.
                want_read = to_eof;
                socket.emit(|| Kind::AsyncRecv { data: &buf[..n] });
                let flow = guarded(conn, || handler.handle_data(&buf[..n], socket));
                after(conn, socket, flow, Source::Data)?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(End::Error(Error::Io(e))),
        }
    }
    if stopping {
        return Err(End::Shutdown);
    }
    if flags.has(Work::TIMEOUT) && conn.timer_expired() {
        return Err(End::Timeout);
    }
    Ok(())
}

/// Reads the PROXY protocol header, when the server expects one;
/// `Ok(true)` once read (or none is expected). Waits for readability
/// without holding the worker, within the header timeout.
fn proxy_header<H: Handler<M>, M: Send + 'static>(
    conn: &Conn<H, M>,
    state: &mut State<H>,
    flags: Work,
) -> Result<bool, Error> {
    let (Some(options), Some(socket)) = (&conn.service.options.proxy, state.socket.as_mut()) else {
        return Ok(true);
    };
    let io = match std::mem::replace(&mut state.setup, Setup::Ready) {
        Setup::Proxy(io) => io,
        other => {
            state.setup = other;
            return Ok(true);
        }
    };
    if flags.has(Work::CONNECT) {
        conn.arm_timer(Some(Instant::now() + options.header_timeout));
    }
    let read = options
        .check_trusted(&conn.meta.peer)
        .and_then(|()| proxy::read_header(&io, options).map_err(Error::ProxyHeader));
    match read {
        Ok(Some(header)) => {
            let proxied = Arc::new(Proxied {
                header,
                via: conn.meta.peer.clone(),
            });
            conn.meta.set_proxy(proxied.clone());
            socket.set_proxied(proxied);
            state.setup = Setup::Accepted(io);
            Ok(true)
        }
        // After a hang-up no more bytes come.
        Ok(None) if flags.has(Work::HANGUP) => Err(Error::ProxyHeader(proxy::CUT_SHORT.into())),
        Ok(None) if !conn.timer_expired() => {
            state.setup = Setup::Proxy(io);
            Ok(false)
        }
        Ok(None) => Err(Error::Timeout(crate::Timeout::ProxyHeader)),
        // The socket closes with `io` here.
        Err(e) => Err(e),
    }
}

/// Moves the transport's handshake on; `Ok(true)` once the stream is ready.
/// The handshake starts when the handler exists (so a failure reaches
/// `handle_error`) and resumes on readability; while it waits it holds no
/// worker, and the handshake timeout bounds it.
fn handshake<H: Handler<M>, M: Send + 'static>(
    conn: &Conn<H, M>,
    setup: &mut Setup,
    socket: &mut Socket,
    flags: Work,
) -> Result<bool, End> {
    let config = &conn.service.options;
    let state = match std::mem::replace(setup, Setup::Ready) {
        Setup::Accepted(io) => {
            conn.arm_timer(config.handshake_timeout.map(|t| Instant::now() + t));
            let transport = &config.transport;
            guarded(conn, || transport.handshake(io))?
        }
        Setup::Stream(stream) => Handshake::Done(stream),
        Setup::Handshaking(pending) if flags.has(Work::READABLE | Work::HANGUP) => {
            guarded(conn, || pending.resume())?
        }
        waiting => {
            *setup = waiting;
            if flags.has(Work::TIMEOUT) && conn.timer_expired() {
                return Err(handshake_timed_out());
            }
            return Ok(false);
        }
    };
    match state {
        Handshake::Done(stream) => {
            socket.attach(stream);
            Ok(true)
        }
        Handshake::Pending(pending) => {
            // A client that trickles its handshake gets readiness before and
            // after the deadline: the deadline holds whatever woke us.
            if conn.timer_expired() {
                return Err(handshake_timed_out());
            }
            *setup = Setup::Handshaking(pending);
            Ok(false)
        }
        Handshake::Failed(reason) => Err(End::Error(Error::Handshake(reason))),
    }
}

fn handshake_timed_out() -> End {
    End::Error(Error::Timeout(crate::Timeout::Handshake))
}

/// Applies the flow a callback returned; `Err` when the connection ends.
fn after<H: Handler<M>, M: Send + 'static>(
    conn: &Conn<H, M>,
    socket: &mut Socket,
    flow: Result<Flow, End>,
    source: Source,
) -> Result<(), End> {
    let timeout = match flow? {
        Flow::Error(reason) => return Err(End::Error(Error::Handler(reason))),
        // Closed inside the callback: by a send timeout or a failed upgrade
        // (that is the error, unless the callback returned its own), or by the handler
        // itself (no more callbacks).
        _ if socket.is_closed() => return Err(socket.take_fatal().map_or(End::Quiet, End::Error)),
        Flow::Continue if source == Source::Message => return Ok(()),
        Flow::Continue => socket.read_timeout(),
        Flow::ContinueTimeout(timeout) => timeout,
        Flow::ContinuePersistent(timeout) => {
            socket.set_read_timeout(timeout);
            timeout
        }
        Flow::Close => return Err(End::Close),
        Flow::Timeout => return Err(End::Timeout),
        Flow::Detach(f) => return Err(End::Detach(f)),
    };
    conn.arm_timer(timeout.map(|t| Instant::now() + t));
    Ok(())
}

/// Runs a callback, turning a panic into the connection's end.
fn guarded<H, M, R>(conn: &Conn<H, M>, f: impl FnOnce() -> R) -> Result<R, End> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let msg = panic_message(&*payload);
        conn.service.counters.panics.fetch_add(1, Ordering::Relaxed);
        report!(
            error,
            { connection = conn.meta.id, peer = %conn.meta.peer(), panic = %msg, "handler panicked" },
            "atoll: handler of connection {} from {} panicked: {msg}",
            conn.meta.id,
            conn.meta.peer()
        );
        End::Error(Error::Panic(msg))
    })
}

/// Runs the last callback, closes the socket and frees the connection's
/// slot (or, when detached, hands the socket over); returns the traffic of
/// the last callback.
fn finish<H: Handler<M>, M: Send + 'static>(
    conn: &Arc<Conn<H, M>>,
    mut state: MutexGuard<'_, State<H>>,
    end: End,
) -> Traffic {
    let mut handler = state.handler.take();
    let Some(mut socket) = state.socket.take() else {
        drop(state);
        conn.release();
        return Traffic::default();
    };
    drop(state);
    let service = &conn.service;
    let peer = conn.meta.peer();
    let id = conn.meta.id;
    match (end, handler.as_mut()) {
        (End::Detach(give), _) => {
            if let Some(fd) = socket.raw_fd() {
                service.pool.deregister(fd);
            }
            socket.set_release(conn.clone());
            conn.set_phase(DETACHED);
            drop(handler);
            // The socket's drop releases the slot from now on, even if
            // `give` panics and drops it.
            let _ = guarded(conn, move || give(socket));
            return Traffic::default();
        }
        (End::Error(err), handler) => {
            socket.close();
            match &err {
                // Surfaced, as an abnormal exit is in Thousand Island.
                Error::Handler(_) if !service.options.silent_terminate_on_error => {
                    report!(
                        error,
                        { connection = id, peer = %peer, error = %crate::error::Chain(&err), "connection ended" },
                        target: "atoll", "connection {id} from {peer} ended: {}", crate::error::Chain(&err)
                    )
                }
                Error::ProxyHeader(_) | Error::Timeout(crate::Timeout::ProxyHeader) => {
                    service
                        .counters
                        .proxy_errors
                        .fetch_add(1, Ordering::Relaxed);
                }
                Error::Refused(_) => {
                    service.counters.refused.fetch_add(1, Ordering::Relaxed);
                    if let Some(span) = socket.span() {
                        span.emit_acceptor(Kind::SpawnError {
                            peer,
                            reason: SpawnError::Refused(&err),
                        });
                    }
                }
                _ => {}
            }
            if let Some(h) = handler {
                let _ = guarded(conn, || h.handle_error(&err, &mut socket));
            }
            socket.emit_stop(Some(&err));
        }
        (End::Close, Some(h)) => {
            let _ = guarded(conn, || h.handle_close(&mut socket));
        }
        (End::Timeout, Some(h)) => {
            let _ = guarded(conn, || h.handle_timeout(&mut socket));
            socket.emit_stop(Some(&Error::Timeout(crate::Timeout::Idle)));
        }
        (End::Shutdown, Some(h)) => {
            let _ = guarded(conn, || h.handle_shutdown(&mut socket));
        }
        _ => {}
    }
    let traffic = socket.unpublished();
    drop(socket);
    // A handler's own Drop may panic too; it must not take the worker.
    let _ = guarded(conn, move || drop(handler));
    conn.release();
    traffic
}

impl<H: Handler<M>, M: Send + 'static> Release for Conn<H, M> {
    /// Forgets the connection: refuses further messages, frees its slot and
    /// tells a waiting stop.
    fn release(&self) {
        self.set_phase(ENDED);
        self.service.pool.remove(self.token);
        self.limiter.release();
        self.service.connection_ended();
    }
}

/// How long stop waits for workers after forcing connections closed.
pub(crate) const FORCE_GRACE: Duration = Duration::from_secs(1);
