//! Fingerprints that decide whether two profiles are the same: one of the series (tenant,
//! series labels, profile type), one of the content (duration, period and the normalized
//! samples).
//!
//! Samples are normalized so that the same data decoded twice, or sent by another agent in
//! another order, fingerprints the same: each sample is (its stack as frame names, its sample
//! labels as text, its value); equal (stack, labels) are summed, and the list is sorted before
//! it is hashed. Symbol ids never enter a fingerprint, since two requests intern differently.
//! Both fingerprints are 128 bits, two 64-bit hashes with independent seeds, so that two
//! distinct profiles are told apart with certainty for any window size that fits in memory.
//!
//! Frame names are hashed once per location of a symbol table and samples by stack id
//! through [`TableHashes`], which the profiles of one request (one per sample type) share.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use flamepipe_core::Profile;
use flamepipe_core::symbols::{FrameName, Symbols};
use foldhash::fast::RandomState;

/// A 128-bit fingerprint.
pub type Fingerprint = u128;

/// The two seeded hashers a fingerprint is made of, chosen once per process.
#[derive(Clone, Default)]
pub struct Hashers {
    a: RandomState,
    b: RandomState,
}

impl Hashers {
    fn both(&self, value: &impl Hash) -> Fingerprint {
        (u128::from(self.a.hash_one(value)) << 64) | u128::from(self.b.hash_one(value))
    }

    fn one(&self, value: &impl Hash) -> u64 {
        self.a.hash_one(value)
    }

    /// The series of a profile within its tenant: series labels and profile type.
    pub fn series(&self, tenant: &str, p: &Profile) -> Fingerprint {
        self.both(&(tenant, &p.series, &p.profile_type))
    }

    /// The content: duration, period and the normalized samples (see the module docs).
    pub fn content(&self, p: &Profile, table: &mut TableHashes) -> Fingerprint {
        let mut samples: Vec<(u64, u64, i64)> = p
            .samples
            .iter()
            .map(|s| (table.stack(self, s.stack), table.label_set(self, s.labels), s.value))
            .collect();
        samples.sort_unstable();
        // Equal (stack, labels) are one sample with the sum of their values.
        let mut merged: Vec<(u64, u64, i64)> = Vec::with_capacity(samples.len());
        for (stack, labels, value) in samples {
            match merged.last_mut() {
                Some(last) if (last.0, last.1) == (stack, labels) => last.2 = last.2.wrapping_add(value),
                _ => merged.push((stack, labels, value)),
            }
        }
        merged.retain(|s| s.2 != 0);
        self.both(&(p.duration_ns, p.period, merged))
    }
}

/// Per symbol table, the hash of each location's frame names, stack and label set, computed
/// as first needed. Keyed by the table's address; the `Arc` held keeps it from being reused.
pub struct TableHashes {
    table: Arc<Symbols>,
    locations: Vec<Option<u64>>,
    stacks: Vec<Option<u64>>,
    label_sets: Vec<Option<u64>>,
}

impl TableHashes {
    pub fn new(table: &Arc<Symbols>) -> Self {
        TableHashes {
            table: Arc::clone(table),
            locations: vec![None; table.locations.len()],
            stacks: vec![None; table.stack_count()],
            label_sets: vec![None; table.label_set_count()],
        }
    }

    /// Whether these hashes are of `table`.
    pub fn is_of(&self, table: &Arc<Symbols>) -> bool {
        Arc::ptr_eq(&self.table, table)
    }

    fn location(&mut self, h: &Hashers, location: u32) -> u64 {
        if let Some(hash) = self.locations[location as usize] {
            return hash;
        }
        let mut hasher = h.a.build_hasher();
        for frame in self.table.frame_names(location) {
            match frame {
                FrameName::Function(name) => (0u8, name).hash(&mut hasher),
                FrameName::Address { address, mapping_file } => (1u8, address, mapping_file).hash(&mut hasher),
            }
        }
        let hash = hasher.finish();
        self.locations[location as usize] = Some(hash);
        hash
    }

    fn stack(&mut self, h: &Hashers, stack: u32) -> u64 {
        if let Some(hash) = self.stacks[stack as usize] {
            return hash;
        }
        let table = Arc::clone(&self.table);
        let locations: Vec<u64> = table.stack(stack).iter().map(|&l| self.location(h, l)).collect();
        let hash = h.one(&locations);
        self.stacks[stack as usize] = Some(hash);
        hash
    }

    fn label_set(&mut self, h: &Hashers, set: u32) -> u64 {
        if set == 0 {
            return 0;
        }
        if let Some(hash) = self.label_sets[set as usize] {
            return hash;
        }
        let t = &self.table;
        let mut labels: Vec<(&str, &str, i64, &str)> = t
            .label_set(set)
            .iter()
            .map(|l| (t.str(l.key), t.str(l.str), l.num, t.str(l.num_unit)))
            .collect();
        // A set's order follows its table's string ids, which differ between requests.
        labels.sort_unstable();
        let hash = h.one(&labels);
        self.label_sets[set as usize] = Some(hash);
        hash
    }
}
