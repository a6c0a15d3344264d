//! The window of recently passed profiles: where each one sits (series, timestamp), what it
//! holds (content fingerprint), and how its write went (its outcome).
//!
//! Bounded in time (`window`, by arrival) and in size (`max_entries`, the oldest forgotten
//! first). One entry costs about 253 bytes at most: the map slot (key, content, outcome handle,
//! sequence number), its place in the arrival queue, the hash table's spare capacity and, when
//! each request carries one profile, its own outcome cell (`cargo bench --bench dedup`
//! measures it).

use std::collections::VecDeque;
use std::time::Duration;

use foldhash::fast::RandomState;
use hashbrown::HashMap;
use tokio::time::Instant;

pub use crate::outcome::Outcome;
use flamepipe_core::fingerprint::Fingerprint;

/// Timestamps probed for a free slot at most, before a profile passes unshifted: a bound on
/// the work a flood of distinct profiles of one series and timestamp can cause.
pub const MAX_PROBES: i64 = 1024;

/// Where a profile goes.
#[derive(Debug)]
pub enum Placement {
    /// It repeats the profile whose write is `Outcome`.
    Duplicate(Outcome),
    /// It is new, at this timestamp (its own, or moved to the first free slot).
    New { timestamp_ns: i64 },
    /// Its series has [`MAX_PROBES`] distinct profiles from its timestamp on: it passes as is.
    Crowded,
}

struct Entry {
    content: Fingerprint,
    outcome: Outcome,
    /// The timestamp the profile arrived with; differs from its slot when it was moved.
    origin: i64,
    seq: u64,
}

/// What [`Window::place`] forgot to make room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Older than the window.
    pub expired: u64,
    /// Forgotten early because the window was full.
    pub evicted: u64,
}

type Key = (Fingerprint, i64);

pub struct Window {
    /// Every remembered profile by (series, slot): the timestamp it was passed on with.
    entries: HashMap<Key, Entry, RandomState>,
    /// For each (series, arrival timestamp) whose profiles were moved, the slots they sit in:
    /// a retry is looked for there, whatever was forgotten between. Rare, so small.
    moved: HashMap<Key, Vec<i64>, RandomState>,
    /// Arrival order: key, sequence number, arrival time.
    order: VecDeque<(Key, u64, Instant)>,
    next_seq: u64,
    ttl: Duration,
    max_entries: usize,
}

impl Window {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Window {
            entries: HashMap::with_hasher(RandomState::default()),
            moved: HashMap::with_hasher(RandomState::default()),
            order: VecDeque::new(),
            next_seq: 0,
            ttl,
            max_entries,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets what arrived more than the window ago.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let mut expired = 0;
        while let Some(&(key, seq, at)) = self.order.front() {
            if now.duration_since(at) < self.ttl {
                break;
            }
            self.order.pop_front();
            expired += self.remove(key, seq);
        }
        expired
    }

    /// Finds where a profile of `series` at `timestamp_ns` with `content` goes, remembering it
    /// (with `outcome`) unless it is a duplicate.
    ///
    /// A duplicate is a remembered profile that arrived with the same timestamp and content,
    /// at its own slot or at any slot it was moved to. Otherwise the profile takes the first
    /// free slot of `timestamp_ns`, `timestamp_ns + step`, ...; a slot whose profile's write
    /// failed is free (that profile was not stored, and its sender was told to retry).
    pub fn place(
        &mut self,
        series: Fingerprint,
        timestamp_ns: i64,
        content: Fingerprint,
        step_ns: i64,
        outcome: &Outcome,
        now: Instant,
    ) -> (Placement, Forgotten) {
        let mut forgotten = Forgotten {
            expired: self.expire(now),
            evicted: 0,
        };
        if let Some(original) = self.find(series, timestamp_ns, content) {
            return (Placement::Duplicate(original), forgotten);
        }
        let mut slot = timestamp_ns;
        for _ in 0..MAX_PROBES {
            let taken = match self.entries.get(&(series, slot)) {
                Some(e) if e.outcome.is_failed() => {
                    let seq = e.seq;
                    self.remove((series, slot), seq);
                    false
                }
                Some(_) => true,
                None => false,
            };
            if taken {
                slot = slot.saturating_add(step_ns);
                continue;
            }
            forgotten.evicted = self.insert((series, slot), timestamp_ns, content, outcome, now);
            return (Placement::New { timestamp_ns: slot }, forgotten);
        }
        (Placement::Crowded, forgotten)
    }

    /// The outcome of a remembered profile of `series` that arrived at `timestamp_ns` with
    /// `content` and whose write has not failed.
    fn find(&self, series: Fingerprint, timestamp_ns: i64, content: Fingerprint) -> Option<Outcome> {
        let same = |slot: i64| {
            self.entries
                .get(&(series, slot))
                .filter(|e| e.origin == timestamp_ns && e.content == content && !e.outcome.is_failed())
                .map(|e| e.outcome.clone())
        };
        same(timestamp_ns).or_else(|| {
            self.moved
                .get(&(series, timestamp_ns))
                .and_then(|slots| slots.iter().find_map(|&slot| same(slot)))
        })
    }

    /// Remembers a new entry, forgetting the oldest while the window is full; returns how
    /// many were forgotten.
    fn insert(&mut self, key: Key, origin: i64, content: Fingerprint, outcome: &Outcome, now: Instant) -> u64 {
        let mut evicted = 0;
        while self.entries.len() >= self.max_entries {
            let Some((old, seq, _)) = self.order.pop_front() else {
                break;
            };
            evicted += self.remove(old, seq);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            key,
            Entry {
                content,
                outcome: outcome.clone(),
                origin,
                seq,
            },
        );
        if key.1 != origin {
            self.moved.entry((key.0, origin)).or_default().push(key.1);
        }
        self.order.push_back((key, seq, now));
        evicted
    }

    /// Removes `key` if it is still the entry `seq` put there.
    fn remove(&mut self, key: Key, seq: u64) -> u64 {
        let origin = match self.entries.get(&key) {
            Some(e) if e.seq == seq => e.origin,
            _ => return 0,
        };
        self.entries.remove(&key);
        if origin != key.1
            && let Some(slots) = self.moved.get_mut(&(key.0, origin))
        {
            slots.retain(|&slot| slot != key.1);
            if slots.is_empty() {
                self.moved.remove(&(key.0, origin));
            }
        }
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERIES: Fingerprint = 7;

    fn window() -> Window {
        Window::new(Duration::from_secs(600), 100)
    }

    fn new_at(w: &mut Window, timestamp_ns: i64, content: Fingerprint, outcome: &Outcome) -> i64 {
        match w.place(SERIES, timestamp_ns, content, 1, outcome, Instant::now()).0 {
            Placement::New { timestamp_ns } => timestamp_ns,
            other => panic!("expected a new profile, got {other:?}"),
        }
    }

    fn is_duplicate(w: &mut Window, timestamp_ns: i64, content: Fingerprint) -> bool {
        matches!(
            w.place(SERIES, timestamp_ns, content, 1, &Outcome::new(), Instant::now())
                .0,
            Placement::Duplicate(_)
        )
    }

    #[test]
    fn a_moved_profile_is_found_after_the_slot_before_it_frees() {
        let mut w = window();
        let (a, b) = (Outcome::new(), Outcome::new());
        assert_eq!(new_at(&mut w, 100, 1, &a), 100);
        assert_eq!(new_at(&mut w, 100, 2, &b), 101);
        b.settle(Ok(()));
        // The first profile's write fails: its slot is free, but the second one stays where
        // it was stored, so a retry of it is a duplicate, not a third copy at 100.
        a.settle(Err("disk full".into()));
        assert!(is_duplicate(&mut w, 100, 2));
        // The failed one's retry is new and takes the freed slot.
        assert_eq!(new_at(&mut w, 100, 1, &Outcome::new()), 100);
        assert!(is_duplicate(&mut w, 100, 1));
    }

    #[test]
    fn a_profile_that_arrived_at_a_moved_profiles_slot_is_not_its_duplicate() {
        let mut w = window();
        let o = Outcome::new();
        assert_eq!(new_at(&mut w, 100, 1, &o), 100);
        assert_eq!(new_at(&mut w, 100, 2, &o), 101);
        // Same content as the moved one, but it arrived at 101: another time range.
        assert_eq!(new_at(&mut w, 101, 2, &o), 102);
        assert!(is_duplicate(&mut w, 101, 2));
        assert!(is_duplicate(&mut w, 100, 2));
    }

    #[test]
    fn forgetting_a_moved_profile_forgets_where_it_went() {
        let mut w = Window::new(Duration::from_secs(600), 2);
        let o = Outcome::new();
        new_at(&mut w, 100, 1, &o);
        new_at(&mut w, 100, 2, &o);
        assert_eq!(w.moved.len(), 1);
        // Two more evict both.
        new_at(&mut w, 200, 3, &o);
        new_at(&mut w, 300, 4, &o);
        assert!(w.moved.is_empty());
        assert_eq!(w.len(), 2);
    }
}
