//! Every worker's slot, in a table read without a lock: whoever looks at
//! the workers (the monitor every tick, a worker counting those between
//! runs, the statistics) walks it while workers start and retire. Under a
//! lock, one reader descheduled on a saturated CPU in the middle of a
//! thousand slots held up every worker being started, for tens of
//! milliseconds each.
//!
//! The table grows by chunks, made the first time a worker needs a slot
//! in them, and never shrinks while the pool lives; a retired worker's
//! slot is kept, counts and all, for the next worker to start.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::Slot;

/// Slots made at once.
const CHUNK: usize = 64;

/// `CHUNK` slots, made together.
type Chunk = Box<[Arc<Slot>]>;

pub(super) struct Slots {
    /// Room for `max` workers, by chunks.
    chunks: Box<[OnceLock<Chunk>]>,
    /// Slots ever handed out: a walk reads these.
    used: AtomicUsize,
    /// The slots of workers that retired (or failed to start), for the
    /// next. Held for a push or a pop alone.
    free: Mutex<Vec<usize>>,
}

impl Slots {
    /// Room for up to `max` workers at once.
    pub(super) fn new(max: usize) -> Slots {
        Slots {
            chunks: (0..max.div_ceil(CHUNK)).map(|_| OnceLock::new()).collect(),
            used: AtomicUsize::new(0),
            free: Mutex::new(Vec::new()),
        }
    }

    /// A slot for a worker about to start, marked live. The caller
    /// counted the worker against `max` first, so at most `max` are held
    /// at once; `None` (were they not) when the table is full.
    pub(super) fn take(&self) -> Option<Arc<Slot>> {
        let popped = self.free.lock().pop();
        let index = popped.unwrap_or_else(|| self.used.fetch_add(1, Ordering::AcqRel));
        let chunk = self.chunks.get(index / CHUNK)?.get_or_init(|| {
            let first = index - index % CHUNK;
            (first..first + CHUNK).map(Slot::new).collect()
        });
        let slot = chunk[index % CHUNK].clone();
        // A slot from the free list may have retired parked.
        slot.parked.store(false, Ordering::Relaxed);
        slot.live.store(true, Ordering::Release);
        Some(slot)
    }

    /// Takes back the slot of a worker that has retired, or failed to
    /// start.
    pub(super) fn give_back(&self, slot: &Slot) {
        slot.live.store(false, Ordering::Release);
        self.free.lock().push(slot.index);
    }

    /// Every slot ever handed out, live or not (the statistics count the
    /// work of retired workers too), but for those whose chunk another
    /// thread is still making.
    pub(super) fn all(&self) -> impl Iterator<Item = &Arc<Slot>> {
        let used = self.used.load(Ordering::Acquire);
        (0..used).filter_map(|index| {
            let chunk = self.chunks.get(index / CHUNK)?.get()?;
            Some(&chunk[index % CHUNK])
        })
    }

    /// The slots of live workers.
    pub(super) fn live(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.all().filter(|slot| slot.live.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn workers_starting_at_once_get_distinct_slots_and_retired_ones_are_reused() {
        let slots = Arc::new(Slots::new(4 * 100));
        let takers: Vec<_> = (0..4)
            .map(|_| {
                let slots = slots.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .map(|_| slots.take().map(|slot| slot.index))
                        .collect::<Option<Vec<_>>>()
                })
            })
            .collect();
        let mut indices = HashSet::new();
        for taker in takers {
            for index in taker.join().unwrap().unwrap() {
                assert!(indices.insert(index), "slot {index} handed out twice");
            }
        }
        assert_eq!(indices.len(), 400);
        assert_eq!(slots.live().count(), 400);

        // A retired worker's slot, counts and all, goes to the next.
        let retired = slots.all().nth(7).unwrap().clone();
        retired.counts.dispatched(5);
        slots.give_back(&retired);
        assert_eq!(slots.live().count(), 399);
        assert_eq!(slots.all().count(), 400);
        let next = slots.take().unwrap();
        assert!(Arc::ptr_eq(&next, &retired));
        let mut counted = super::super::counts::Counted::default();
        for slot in slots.all() {
            slot.counts.add_to(&mut counted);
        }
        assert_eq!((counted.runs, counted.wait_ns), (1, 5));
    }
}
