//! Descriptors the pool watches that are not a task's (a UDP socket): the
//! poller that sees one ready calls it, and it returns the tasks it made
//! runnable. Never touches a task's own descriptor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::{io, os::fd::RawFd};

use mio::{Events, Token};

use super::{Pool, Task};

/// A watched descriptor that is not a task's (a UDP socket).
pub(crate) trait Source<T>: Send + Sync {
    /// Its descriptor is readable (or has readiness left from the last
    /// call): handle a bounded batch, pushing the tasks it made runnable
    /// (each one whose [`Task::ready`]-like mark found it idle) to
    /// `runnable`. Returns `true` when more may be waiting: it is called
    /// again after the next poll, which then does not sleep.
    fn ready(&self, runnable: &mut Vec<Arc<T>>) -> bool;
}

/// A source and whether it asked for another turn.
pub(super) struct Watched<T> {
    token: Token,
    source: Arc<dyn Source<T>>,
    again: AtomicBool,
}

impl<T: Task> Pool<T> {
    /// Watches a descriptor that is not a task's, edge-triggered, until
    /// [`unwatch`](Pool::unwatch); returns its token.
    pub(crate) fn watch(&self, fd: RawFd, source: Arc<dyn Source<T>>) -> io::Result<Token> {
        let token = Token(self.next_source.fetch_add(1, Ordering::Relaxed));
        // Listed before it is registered: its first readiness finds it.
        {
            let mut sources = self.sources.write();
            let mut list = Vec::clone(&sources);
            list.push(Arc::new(Watched {
                token,
                source,
                again: AtomicBool::new(false),
            }));
            *sources = Arc::new(list);
        }
        if let Err(e) = self.register(fd, token) {
            self.forget_source(token);
            return Err(e);
        }
        Ok(token)
    }

    /// Stops watching a source's descriptor; a poller calling it meanwhile
    /// finishes that call.
    pub(crate) fn unwatch(&self, token: Token, fd: RawFd) {
        self.deregister(fd);
        self.forget_source(token);
    }

    fn forget_source(&self, token: Token) {
        let mut sources = self.sources.write();
        if let Some(i) = sources.iter().position(|w| w.token == token) {
            let mut list = Vec::clone(&sources);
            let gone = list.swap_remove(i);
            *sources = Arc::new(list);
            if gone.again.swap(false, Ordering::Relaxed) {
                self.sources_again.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Calls the sources that are ready (in `events`) or asked for another
    /// turn. On a snapshot of the list: a source locks its acceptor, which
    /// may be changing the list.
    pub(super) fn serve_sources(&self, events: &Events, batch: &mut Vec<Arc<T>>) {
        let sources = Arc::clone(&self.sources.read());
        for watched in sources.iter() {
            let again = watched.again.swap(false, Ordering::Relaxed);
            if again {
                self.sources_again.fetch_sub(1, Ordering::Relaxed);
            }
            if !again && !events.iter().any(|e| e.token() == watched.token) {
                continue;
            }
            if watched.source.ready(batch) && !watched.again.swap(true, Ordering::Relaxed) {
                self.sources_again.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
