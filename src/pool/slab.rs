//! The pool's slab: every live task by token, a token carrying a
//! generation so a stale one finds nothing. Never touches a thread.

use std::sync::Arc;

use mio::Token;

struct Entry<T> {
    generation: u32,
    conn: Option<Arc<T>>,
}

/// The live connections. A token is the slot index in its low 32 bits and
/// the slot's generation in the high ones, so an event or timer for a
/// closed connection never reaches the one that reused its slot.
pub(crate) struct Slab<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
}

impl<T> Slab<T> {
    pub(super) fn new() -> Slab<T> {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }

    pub(crate) fn get(&self, token: Token) -> Option<&Arc<T>> {
        let entry = self.entries.get(token.0 & 0xffff_ffff)?;
        if entry.generation as usize != token.0 >> 32 {
            return None;
        }
        entry.conn.as_ref()
    }

    pub(crate) fn vacant_token(&mut self) -> Token {
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.entries.push(Entry {
                    generation: 0,
                    conn: None,
                });
                self.entries.len() - 1
            }
        };
        Token(index | (self.entries[index].generation as usize) << 32)
    }

    pub(crate) fn fill(&mut self, token: Token, conn: Arc<T>) {
        self.entries[token.0 & 0xffff_ffff].conn = Some(conn);
    }

    /// Frees a slot (filled or not) and retires its token.
    pub(crate) fn remove(&mut self, token: Token) {
        let index = token.0 & 0xffff_ffff;
        if let Some(entry) = self.entries.get_mut(index) {
            if entry.generation as usize == token.0 >> 32 {
                // Stays clear of the reserved token at the top of the range.
                entry.generation = (entry.generation + 1) % 0x7fff_ffff;
                entry.conn = None;
                self.free.push(index as u32);
            }
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<T>> {
        self.entries.iter().filter_map(|e| e.conn.as_ref())
    }

    /// Forgets every task.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.free.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{Dispatch, Task, WAKER};
    use std::time::Duration;

    struct Nothing;
    impl Task for Nothing {
        fn token(&self) -> Token {
            Token(0)
        }
        fn dispatch(&self) -> &Dispatch {
            unreachable!("never run")
        }
        fn ready(&self, _hangup: bool) -> bool {
            false
        }
        fn run(
            self: &Arc<Self>,
            _buf: &mut [u8],
            _waited: Duration,
            _at: std::time::Instant,
        ) -> crate::stats::Traffic {
            unreachable!("never run")
        }
        fn fd(&self) -> Option<std::os::fd::RawFd> {
            None
        }
        fn is_open(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_reused_slot_gets_a_new_token_and_the_old_token_finds_nothing() {
        let mut slab: Slab<Nothing> = Slab::new();
        let first = slab.vacant_token();
        slab.remove(first);
        let second = slab.vacant_token();
        assert_eq!(
            first.0 & 0xffff_ffff,
            second.0 & 0xffff_ffff,
            "the slot is reused"
        );
        assert_ne!(first, second, "with another generation");
        assert!(slab.get(first).is_none());
        slab.remove(first);
        assert!(slab.free.is_empty(), "a stale token frees nothing");
        slab.remove(second);
        assert_eq!(slab.free.len(), 1);
        assert_ne!(slab.vacant_token(), WAKER);
    }
}
