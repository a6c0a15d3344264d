//! The window of recently passed profiles: where each one sits (series, timestamp), what it
//! holds (content fingerprint), and how its write went (its outcome).
//!
//! Bounded in time (`window`, by arrival) and in size (`max_entries`, the oldest forgotten
//! first). One entry costs about 250 bytes at most: the map slot (key, content, outcome handle,
//! sequence number), its place in the arrival queue, the hash table's spare capacity and, when
//! each request carries one profile, its own outcome cell (`cargo bench --bench dedup`
//! measures it).

use std::collections::VecDeque;
use std::time::Duration;

use foldhash::fast::RandomState;
use hashbrown::HashMap;
use tokio::time::Instant;

use crate::fingerprint::Fingerprint;
pub use crate::outcome::Outcome;

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

pub struct Window {
    entries: HashMap<(Fingerprint, i64), Entry, RandomState>,
    /// Arrival order: key, sequence number, arrival time.
    order: VecDeque<((Fingerprint, i64), u64, Instant)>,
    next_seq: u64,
    ttl: Duration,
    max_entries: usize,
}

impl Window {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Window {
            entries: HashMap::with_hasher(RandomState::default()),
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
    /// (with `outcome`) unless it is a duplicate. Probing walks `timestamp_ns`,
    /// `timestamp_ns + step`, ...: a slot holding the same content makes a duplicate, the
    /// first free slot takes the profile.
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
        let mut slot = timestamp_ns;
        for _ in 0..MAX_PROBES {
            match self.entries.get(&(series, slot)) {
                // A profile whose write failed was not stored: its slot is free again, and a
                // retry of it is new (its sender was told to retry).
                Some(e) if e.outcome.is_failed() => {
                    let seq = e.seq;
                    self.remove((series, slot), seq);
                }
                Some(e) if e.content == content => return (Placement::Duplicate(e.outcome.clone()), forgotten),
                Some(_) => {
                    slot = slot.saturating_add(step_ns);
                    continue;
                }
                None => {}
            }
            forgotten.evicted = self.insert((series, slot), content, outcome, now);
            return (Placement::New { timestamp_ns: slot }, forgotten);
        }
        (Placement::Crowded, forgotten)
    }

    /// Remembers a new entry, forgetting the oldest while the window is full; returns how
    /// many were forgotten.
    fn insert(&mut self, key: (Fingerprint, i64), content: Fingerprint, outcome: &Outcome, now: Instant) -> u64 {
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
                seq,
            },
        );
        self.order.push_back((key, seq, now));
        evicted
    }

    /// Removes `key` if it is still the entry `seq` put there.
    fn remove(&mut self, key: (Fingerprint, i64), seq: u64) -> u64 {
        match self.entries.get(&key) {
            Some(e) if e.seq == seq => {
                self.entries.remove(&key);
                1
            }
            _ => 0,
        }
    }
}
