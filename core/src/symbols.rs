//! Interned symbols: strings, mappings, functions, locations, stacks and sample label sets.
//!
//! Every profile points into a [`Symbols`] table by integer ids, so a stack is one `u32` and a
//! repeated function name costs nothing. Receivers fill a [`SymbolsBuilder`] per request; the
//! block builder imports those tables into one table per block ([`SymbolsBuilder::import`]),
//! which is where most of the storage ratio comes from.
//!
//! Invariants: id 0 of `strings` is `""`, id 0 of `mappings` is "no mapping", id 0 of
//! `label_sets` is the empty set. Stacks list location ids leaf first; a location's lines list
//! the innermost inlined function first (pprof's order).

use std::hash::{BuildHasher, Hash};

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mapping {
    pub memory_start: u64,
    pub memory_limit: u64,
    pub file_offset: u64,
    pub filename: u32,
    pub build_id: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Function {
    pub name: u32,
    pub system_name: u32,
    pub filename: u32,
    pub start_line: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Line {
    pub function: u32,
    pub line: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Location {
    pub mapping: u32,
    pub address: u64,
    pub lines: Vec<Line>,
}

/// A [`Location`] by reference: derives `Hash` over the same fields in the same order, so it
/// hashes exactly as the location it describes (a slice hashes as a `Vec` does).
#[derive(Hash)]
struct LocationKey<'a> {
    mapping: u32,
    address: u64,
    lines: &'a [Line],
}

/// One pprof sample label: a string value (`str != 0`) or a number with an optional unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleLabel {
    pub key: u32,
    pub str: u32,
    pub num: i64,
    pub num_unit: u32,
}

/// A frozen symbol table. Variable-length rows (stacks, label sets) are stored flat with
/// offsets so that a table is a handful of allocations however many rows it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbols {
    pub strings: Vec<String>,
    pub mappings: Vec<Mapping>,
    pub functions: Vec<Function>,
    pub locations: Vec<Location>,
    /// `stack_offsets[i]..stack_offsets[i + 1]` indexes `stack_locations` for stack `i`.
    pub stack_offsets: Vec<u32>,
    pub stack_locations: Vec<u32>,
    /// Same layout as stacks; set 0 is empty.
    pub label_set_offsets: Vec<u32>,
    pub label_set_labels: Vec<SampleLabel>,
}

impl Default for Symbols {
    fn default() -> Self {
        SymbolsBuilder::new().finish()
    }
}

impl Symbols {
    pub fn stack_count(&self) -> usize {
        self.stack_offsets.len() - 1
    }

    /// Location ids of stack `id`, leaf first.
    pub fn stack(&self, id: u32) -> &[u32] {
        let (a, b) = (self.stack_offsets[id as usize], self.stack_offsets[id as usize + 1]);
        &self.stack_locations[a as usize..b as usize]
    }

    pub fn label_set_count(&self) -> usize {
        self.label_set_offsets.len() - 1
    }

    pub fn label_set(&self, id: u32) -> &[SampleLabel] {
        let (a, b) = (
            self.label_set_offsets[id as usize],
            self.label_set_offsets[id as usize + 1],
        );
        &self.label_set_labels[a as usize..b as usize]
    }

    pub fn str(&self, id: u32) -> &str {
        &self.strings[id as usize]
    }

    /// The name a frame shows in a flame graph or `go tool pprof`: the function's name, or the
    /// location's address in hex when the location has no symbol.
    pub fn frame_names(&self, location: u32) -> impl Iterator<Item = FrameName<'_>> {
        let loc = &self.locations[location as usize];
        let unsymbolized = loc.lines.is_empty().then(|| FrameName::Address {
            address: loc.address,
            mapping_file: self.str(self.mappings[loc.mapping as usize].filename),
        });
        loc.lines
            .iter()
            .map(|l| FrameName::Function(self.str(self.functions[l.function as usize].name)))
            .chain(unsymbolized)
    }

    /// Rough heap size, used for segment size limits.
    pub fn approx_bytes(&self) -> usize {
        self.strings.iter().map(|s| s.len() + 24).sum::<usize>()
            + self.mappings.len() * std::mem::size_of::<Mapping>()
            + self.functions.len() * std::mem::size_of::<Function>()
            + self.locations.iter().map(|l| 40 + l.lines.len() * 16).sum::<usize>()
            + (self.stack_offsets.len() + self.stack_locations.len()) * 4
            + self.label_set_offsets.len() * 4
            + self.label_set_labels.len() * std::mem::size_of::<SampleLabel>()
    }
}

/// A frame's display name: see [`Symbols::frame_names`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameName<'a> {
    Function(&'a str),
    /// An unsymbolized frame: its address and the file of its mapping (`""` if none).
    Address {
        address: u64,
        mapping_file: &'a str,
    },
}

impl std::fmt::Display for FrameName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameName::Function(name) => f.write_str(name),
            FrameName::Address { address, .. } => write!(f, "{address:#x}"),
        }
    }
}

/// Interns rows as they arrive; [`SymbolsBuilder::finish`] freezes them into [`Symbols`].
///
/// The hash tables hold only row ids and compare against the rows themselves, so interning a
/// new row stores it once and interning a known one allocates nothing.
#[derive(Clone, Debug)]
pub struct SymbolsBuilder {
    strings: Interner<String>,
    mappings: Interner<Mapping>,
    functions: Interner<Function>,
    locations: Interner<Location>,
    stacks: FlatInterner<u32>,
    label_sets: FlatInterner<SampleLabel>,
}

impl Default for SymbolsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// How ids of an imported table map onto the importing table.
#[derive(Debug, Default)]
pub struct Remap {
    pub stacks: Vec<u32>,
    pub label_sets: Vec<u32>,
}

impl SymbolsBuilder {
    pub fn new() -> Self {
        let mut b = SymbolsBuilder {
            strings: Interner::default(),
            mappings: Interner::default(),
            functions: Interner::default(),
            locations: Interner::default(),
            stacks: FlatInterner::default(),
            label_sets: FlatInterner::default(),
        };
        b.string("");
        b.mapping(Mapping::default());
        b.label_set(&[]);
        b
    }

    pub fn string(&mut self, s: &str) -> u32 {
        self.strings.intern_with(s, str::to_owned)
    }

    pub fn mapping(&mut self, m: Mapping) -> u32 {
        self.mappings.intern(m)
    }

    pub fn function(&mut self, f: Function) -> u32 {
        self.functions.intern(f)
    }

    pub fn location(&mut self, l: Location) -> u32 {
        self.locations.intern(l)
    }

    /// Interns a stack given leaf first.
    pub fn stack(&mut self, locations: &[u32]) -> u32 {
        self.stacks.intern(locations)
    }

    /// Interns a label set; the caller's order is kept, so sort first for set semantics.
    pub fn label_set(&mut self, labels: &[SampleLabel]) -> u32 {
        self.label_sets.intern(labels)
    }

    /// Interns every row of `other` and returns how its stack and label set ids map here.
    pub fn import(&mut self, other: &Symbols) -> Remap {
        let strings: Vec<u32> = other.strings.iter().map(|s| self.string(s)).collect();
        let mappings: Vec<u32> = other
            .mappings
            .iter()
            .map(|m| {
                self.mapping(Mapping {
                    filename: strings[m.filename as usize],
                    build_id: strings[m.build_id as usize],
                    ..m.clone()
                })
            })
            .collect();
        let functions: Vec<u32> = other
            .functions
            .iter()
            .map(|f| {
                self.function(Function {
                    name: strings[f.name as usize],
                    system_name: strings[f.system_name as usize],
                    filename: strings[f.filename as usize],
                    start_line: f.start_line,
                })
            })
            .collect();
        // Remapped lines go to a scratch buffer and the location is hashed by reference, so a
        // location the table already has costs no allocation.
        let mut lines = Vec::new();
        let locations: Vec<u32> = other
            .locations
            .iter()
            .map(|l| {
                lines.clear();
                lines.extend(l.lines.iter().map(|line| Line {
                    function: functions[line.function as usize],
                    line: line.line,
                }));
                let key = LocationKey {
                    mapping: mappings[l.mapping as usize],
                    address: l.address,
                    lines: &lines,
                };
                self.locations.intern_by(
                    &key,
                    |row| row.mapping == key.mapping && row.address == key.address && row.lines == key.lines,
                    || Location {
                        mapping: key.mapping,
                        address: key.address,
                        lines: key.lines.to_vec(),
                    },
                )
            })
            .collect();
        let mut scratch = Vec::new();
        let stacks = (0..other.stack_count() as u32)
            .map(|s| {
                scratch.clear();
                scratch.extend(other.stack(s).iter().map(|&l| locations[l as usize]));
                self.stack(&scratch)
            })
            .collect();
        let mut label_scratch = Vec::new();
        let label_sets = (0..other.label_set_count() as u32)
            .map(|s| {
                label_scratch.clear();
                label_scratch.extend(other.label_set(s).iter().map(|l| SampleLabel {
                    key: strings[l.key as usize],
                    str: strings[l.str as usize],
                    num: l.num,
                    num_unit: strings[l.num_unit as usize],
                }));
                self.label_set(&label_scratch)
            })
            .collect();
        Remap { stacks, label_sets }
    }

    /// The table so far.
    pub fn finish(self) -> Symbols {
        let (stack_offsets, stack_locations) = self.stacks.into_parts();
        let (label_set_offsets, label_set_labels) = self.label_sets.into_parts();
        Symbols {
            strings: self.strings.rows,
            mappings: self.mappings.rows,
            functions: self.functions.rows,
            locations: self.locations.rows,
            stack_offsets,
            stack_locations,
            label_set_offsets,
            label_set_labels,
        }
    }
}

/// Interns rows of one table: the hash table stores row ids only.
#[derive(Clone, Debug)]
struct Interner<T> {
    rows: Vec<T>,
    ids: HashTable<u32>,
    hasher: RandomState,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            rows: Vec::new(),
            ids: HashTable::new(),
            hasher: RandomState::default(),
        }
    }
}

impl<T: Hash + Eq> Interner<T> {
    fn intern(&mut self, row: T) -> u32 {
        let hash = self.hasher.hash_one(&row);
        let Interner { rows, ids, hasher } = self;
        match ids.entry(
            hash,
            |&id| rows[id as usize] == row,
            |&id| hasher.hash_one(&rows[id as usize]),
        ) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let id = rows.len() as u32;
                rows.push(row);
                e.insert(id);
                id
            }
        }
    }

    /// Interns the row that `key` hashes like and `matches` recognises, building it with `make`
    /// only when it is new: `key` must hash exactly as the row it stands for.
    fn intern_by<K: Hash + ?Sized>(&mut self, key: &K, matches: impl Fn(&T) -> bool, make: impl FnOnce() -> T) -> u32 {
        let hash = self.hasher.hash_one(key);
        let Interner { rows, ids, hasher } = self;
        match ids.entry(
            hash,
            |&id| matches(&rows[id as usize]),
            |&id| hasher.hash_one(&rows[id as usize]),
        ) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let id = rows.len() as u32;
                rows.push(make());
                e.insert(id);
                id
            }
        }
    }

    /// Interns by a borrowed key, building the row only when it is new.
    fn intern_with<Q>(&mut self, key: &Q, make: impl FnOnce(&Q) -> T) -> u32
    where
        T: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let Interner { rows, ids, hasher } = self;
        let eq = |&id: &u32| rows[id as usize].borrow() == key;
        match ids.entry(hash, eq, |&id| hasher.hash_one(rows[id as usize].borrow())) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let id = rows.len() as u32;
                rows.push(make(key));
                e.insert(id);
                id
            }
        }
    }
}

/// Interns variable-length rows stored flat (`offsets[i]..offsets[i + 1]` of `items`).
#[derive(Clone, Debug)]
pub struct FlatInterner<T> {
    offsets: Vec<u32>,
    items: Vec<T>,
    ids: HashTable<u32>,
    hasher: RandomState,
}

impl<T> Default for FlatInterner<T> {
    fn default() -> Self {
        FlatInterner {
            offsets: vec![0],
            items: Vec::new(),
            ids: HashTable::new(),
            hasher: RandomState::default(),
        }
    }
}

impl<T: Hash + Eq + Copy> FlatInterner<T> {
    pub fn intern(&mut self, row: &[T]) -> u32 {
        let hash = self.hasher.hash_one(row);
        let FlatInterner {
            offsets,
            items,
            ids,
            hasher,
        } = self;
        let get = |id: u32| &items[offsets[id as usize] as usize..offsets[id as usize + 1] as usize];
        let found = ids.find(hash, |&id| get(id) == row).copied();
        if let Some(id) = found {
            return id;
        }
        let id = (offsets.len() - 1) as u32;
        items.extend_from_slice(row);
        offsets.push(items.len() as u32);
        let (offsets, items) = (&*offsets, &*items);
        ids.insert_unique(hash, id, |&id| {
            hasher.hash_one(&items[offsets[id as usize] as usize..offsets[id as usize + 1] as usize])
        });
        id
    }

    /// (offsets, items): row `i` is `items[offsets[i]..offsets[i + 1]]`.
    pub fn into_parts(self) -> (Vec<u32>, Vec<T>) {
        (self.offsets, self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_dedups_and_import_remaps() {
        let mut a = SymbolsBuilder::new();
        let name = a.string("main");
        let f = a.function(Function {
            name,
            ..Default::default()
        });
        let loc = a.location(Location {
            mapping: 0,
            address: 0x10,
            lines: vec![Line { function: f, line: 3 }],
        });
        assert_eq!(a.string("main"), name);
        let s1 = a.stack(&[loc]);
        assert_eq!(a.stack(&[loc]), s1);
        let a = a.finish();

        let mut b = SymbolsBuilder::new();
        b.string("other");
        let remap = b.import(&a);
        let b = b.finish();
        let loc_b = b.stack(remap.stacks[s1 as usize])[0];
        assert_eq!(
            b.frame_names(loc_b).map(|n| n.to_string()).collect::<Vec<_>>(),
            vec!["main"]
        );
        assert_eq!(remap.label_sets, vec![0]);
    }

    #[test]
    fn importing_a_table_twice_adds_nothing() {
        let mut a = SymbolsBuilder::new();
        let name = a.string("f");
        let function = a.function(Function {
            name,
            ..Default::default()
        });
        let lines = vec![Line { function, line: 1 }, Line { function, line: 2 }];
        let l1 = a.location(Location {
            mapping: 0,
            address: 1,
            lines: lines.clone(),
        });
        let l2 = a.location(Location {
            mapping: 0,
            address: 2,
            lines,
        });
        a.stack(&[l1, l2]);
        let a = a.finish();

        let mut b = SymbolsBuilder::new();
        let first = b.import(&a);
        let once = (b.strings.rows.len(), b.functions.rows.len(), b.locations.rows.len());
        let second = b.import(&a);
        assert_eq!(
            once,
            (b.strings.rows.len(), b.functions.rows.len(), b.locations.rows.len())
        );
        assert_eq!(once.2, 2);
        assert_eq!(first.stacks, second.stacks);
    }
}
