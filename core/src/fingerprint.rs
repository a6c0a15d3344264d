//! Fingerprints that decide whether two profiles are the same: one of the series (tenant,
//! series labels, profile type), one of the content (duration, period and the samples).
//!
//! The content must not depend on how a request was interned (symbol ids differ between two
//! decodes of the same data), on sample order, or on whether equal (stack, labels) samples
//! were sent apart or summed. So each sample is keyed by its stack as frame names and its
//! labels as text, and the content is the sum of `value * key` over the samples, modulo the
//! prime 2^61 - 1, for two derivations of the key: a sum is blind to order and to how a value
//! is split over samples. Two different contents agree when two distinct samples' 64-bit keys
//! collide (about 2^-64 per pair of samples), or otherwise on both sums with probability
//! about 2^-122. This costs one multiply-add per sample, with no sort and no allocation.
//!
//! Frame names are hashed once per string of a symbol table, stacks once per stack, through
//! [`TableHashes`], which the profiles of one request (one per sample type) share.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use crate::Profile;
use crate::symbols::Symbols;
use foldhash::fast::RandomState;

/// A 128-bit fingerprint.
pub type Fingerprint = u128;

/// The Mersenne prime 2^61 - 1, the modulus of the content sums.
const P: u64 = (1 << 61) - 1;

/// `x mod P` without a division: 2^61 is 1 mod P, so the high bits fold onto the low ones.
#[inline]
fn reduce(x: u64) -> u64 {
    let r = (x & P) + (x >> 61);
    if r >= P { r - P } else { r }
}

#[inline]
fn mul_mod(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    // product < 2^122: its low 61 bits plus the rest fit in 62 bits.
    reduce((product as u64 & P) + (product >> 61) as u64)
}

/// A value as a residue mod P (negative values included), without a division.
#[inline]
fn residue(v: i64) -> u64 {
    let r = reduce(v.unsigned_abs());
    if v >= 0 || r == 0 { r } else { P - r }
}

/// Combines hashes in order (FxHash's step, enough for keys that are already hashes).
#[inline]
fn combine(h: u64, x: u64) -> u64 {
    (h.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95)
}

/// Spreads a 64-bit key over all bits (MurmurHash3's finalizer).
#[inline]
fn finish(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The seeded hashers a fingerprint is made of, chosen once per process.
#[derive(Clone, Default)]
pub struct Hashers {
    a: RandomState,
    b: RandomState,
}

impl Hashers {
    fn both(&self, value: &impl Hash) -> Fingerprint {
        (u128::from(self.a.hash_one(value)) << 64) | u128::from(self.b.hash_one(value))
    }

    /// The series of a profile within its tenant: series labels and profile type.
    pub fn series(&self, tenant: &str, p: &Profile) -> Fingerprint {
        self.both(&(tenant, &p.series, &p.profile_type))
    }

    /// The content: duration, period and the samples (see the module docs).
    pub fn content(&self, p: &Profile, table: &mut TableHashes) -> Fingerprint {
        let (mut sum_a, mut sum_b) = (0u64, 0u64);
        for s in &p.samples {
            let key = combine(table.stack(self, s.stack), table.label_set(self, s.labels));
            let value = residue(s.value);
            // Two derivations of the key, each a residue mod P.
            let (ka, kb) = (reduce(finish(key)), reduce(finish(key ^ 0x9e37_79b9_7f4a_7c15)));
            sum_a = reduce(sum_a + mul_mod(value, ka));
            sum_b = reduce(sum_b + mul_mod(value, kb));
        }
        self.both(&(p.duration_ns, p.period, sum_a, sum_b))
    }
}

/// Per symbol table, the hash of each string, location, stack and label set, computed as first
/// needed (0 means not yet; a hash that comes out 0 is stored as 1). Holds the table's `Arc`,
/// so a table address seen here is never reused meanwhile.
pub struct TableHashes {
    table: Arc<Symbols>,
    strings: Vec<u64>,
    locations: Vec<u64>,
    stacks: Vec<u64>,
    label_sets: Vec<u64>,
}

/// A computed hash as cached: never 0, which marks "not computed".
#[inline]
fn cached(hash: u64) -> u64 {
    hash.max(1)
}

impl TableHashes {
    pub fn new(table: &Arc<Symbols>) -> Self {
        TableHashes {
            table: Arc::clone(table),
            strings: vec![0; table.strings.len()],
            locations: vec![0; table.locations.len()],
            stacks: vec![0; table.stack_count()],
            label_sets: vec![0; table.label_set_count()],
        }
    }

    /// Whether these hashes are of `table`.
    pub fn is_of(&self, table: &Arc<Symbols>) -> bool {
        Arc::ptr_eq(&self.table, table)
    }

    /// A stack by its frames in order. Frames are hashed in four interleaved chains (frame
    /// `i` into chain `i % 4`), combined at the end: the same order sensitivity as one chain,
    /// without every frame waiting on the previous one's multiply.
    fn stack(&mut self, h: &Hashers, stack: u32) -> u64 {
        let known = self.stacks[stack as usize];
        if known != 0 {
            return known;
        }
        let TableHashes {
            table,
            strings,
            locations,
            stacks,
            ..
        } = self;
        let frames = table.stack(stack);
        let mut lanes = [2u64, 3, 5, 7];
        for (i, &l) in frames.iter().enumerate() {
            let lane = &mut lanes[i & 3];
            *lane = combine(*lane, location_hash(h, table, strings, locations, l));
        }
        let hash = lanes.iter().fold(frames.len() as u64, |acc, &lane| combine(acc, lane));
        let hash = cached(hash);
        stacks[stack as usize] = hash;
        hash
    }

    fn label_set(&mut self, h: &Hashers, set: u32) -> u64 {
        if set == 0 {
            return 0;
        }
        let known = self.label_sets[set as usize];
        if known != 0 {
            return known;
        }
        let t = &self.table;
        let mut labels: Vec<(&str, &str, i64, &str)> = t
            .label_set(set)
            .iter()
            .map(|l| (t.str(l.key), t.str(l.str), l.num, t.str(l.num_unit)))
            .collect();
        // A set's order follows its table's string ids, which differ between requests.
        labels.sort_unstable();
        let hash = h.a.hash_one(&labels);
        let hash = cached(hash);
        self.label_sets[set as usize] = hash;
        hash
    }
}

/// A string's hash, cached in `strings`.
#[inline]
fn string_hash(h: &Hashers, table: &Symbols, strings: &mut [u64], id: u32) -> u64 {
    let known = strings[id as usize];
    if known != 0 {
        return known;
    }
    let hash = cached(h.a.hash_one(table.str(id)));
    strings[id as usize] = hash;
    hash
}

/// A location by its frame names: its lines' function names, or its address and mapping file
/// when it has no symbols (how flame graphs and `go tool pprof` name it); cached in
/// `locations`.
#[inline]
fn location_hash(h: &Hashers, table: &Symbols, strings: &mut [u64], locations: &mut [u64], location: u32) -> u64 {
    let known = locations[location as usize];
    if known != 0 {
        return known;
    }
    let loc = &table.locations[location as usize];
    let hash = if loc.lines.is_empty() {
        let file = string_hash(h, table, strings, table.mappings[loc.mapping as usize].filename);
        combine(combine(1, loc.address), file)
    } else {
        loc.lines.iter().fold(0, |acc, line| {
            combine(
                acc,
                string_hash(h, table, strings, table.functions[line.function as usize].name),
            )
        })
    };
    let hash = cached(hash);
    locations[location as usize] = hash;
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modular_arithmetic_is_exact() {
        assert_eq!(mul_mod(P - 1, P - 1), 1);
        // 2^80 = 2^61 * 2^19, and 2^61 is 1 mod P.
        assert_eq!(mul_mod(1 << 40, 1 << 40), 1 << 19);
        assert_eq!(residue(-1), P - 1);
        assert_eq!(residue(i64::MIN), (i64::MIN).rem_euclid(P as i64) as u64);
    }
}
