//! Builds one block from profiles of one tenant.
//!
//! Profiles are grouped into datasets by `service_name`; each dataset imports the symbol
//! tables of its profiles into one interned table (a table shared by several profiles, as the
//! N sample types of one pprof share one, is imported once) and records samples with stack
//! ids remapped into it. A profile whose samples carry sample labels is stored as one profile
//! per series those labels make ([`crate::split`]): the split happens here, as the block is
//! written, so everything before (pipelines, processors, the OTLP exporter) carries one
//! profile per sample type.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;

use prost::Message;
use ulid::Ulid;

use super::Result;
use super::codec::{encode_symbols, write_section};
use super::format::{self, BlockMeta, Dataset, SampleColumns, Series, SeriesIndex};
use foldhash::fast::RandomState;
use hashbrown::HashTable;

use crate::labels::{Labels, SERVICE_NAME, UNKNOWN_SERVICE};
use crate::model::Profile;
use crate::profile_type::ProfileType;
use crate::split;
use crate::symbols::{Remap, Symbols, SymbolsBuilder};

/// Zstd level for sections. Level 1: segments are written on the ingest path, where speed
/// matters most; compaction, which rewrites them, may spend more.
const ZSTD_LEVEL: i32 = 1;

pub struct BlockBuilder {
    tenant: String,
    level: u32,
    datasets: BTreeMap<String, DatasetBuilder>,
}

/// An encoded block, ready to `put`.
pub struct EncodedBlock {
    pub meta: BlockMeta,
    pub bytes: Vec<u8>,
}

#[derive(Default)]
struct DatasetBuilder {
    symbols: SymbolsBuilder,
    /// Per imported table: the remap of its ids, and the series labels each of its label sets
    /// adds. Keyed by the table's address; the Arc held beside it keeps the address from
    /// being reused.
    remaps: HashMap<usize, (Arc<Symbols>, Remap, Vec<Labels>)>,
    series: SeriesTable,
    profiles: Vec<PendingProfile>,
}

/// Series ids by (labels, profile type), looked up without building a key: a segment holds
/// many profiles of few series.
#[derive(Default)]
struct SeriesTable {
    ids: HashTable<u32>,
    keys: Vec<(Labels, ProfileType)>,
    hasher: RandomState,
}

struct PendingProfile {
    series: u32,
    timestamp_ns: i64,
    duration_ns: i64,
    period: i64,
    /// Sorted by stack and label set.
    samples: Vec<StoredSample>,
}

/// (stack, value, label set) in the dataset's symbol table.
type StoredSample = (u32, i64, u32);

impl SeriesTable {
    /// The id of a series, added if new.
    fn id(&mut self, labels: &Labels, profile_type: &ProfileType) -> u32 {
        let key = (labels, profile_type);
        let hash = self.hasher.hash_one(key);
        let SeriesTable { ids, keys, hasher } = self;
        if let Some(&id) = ids.find(hash, |&id| {
            let (l, t) = &keys[id as usize];
            (l, t) == key
        }) {
            return id;
        }
        let id = keys.len() as u32;
        keys.push((labels.clone(), profile_type.clone()));
        ids.insert_unique(hash, id, |&id| {
            let (l, t) = &keys[id as usize];
            hasher.hash_one((l, t))
        });
        id
    }
}

impl BlockBuilder {
    pub fn new(tenant: impl Into<String>, level: u32) -> Self {
        BlockBuilder {
            tenant: tenant.into(),
            level,
            datasets: BTreeMap::new(),
        }
    }

    /// Adds a profile. Its samples are split by the series labels their sample labels make
    /// ([`crate::split`]): each part is stored as a profile of its own series.
    pub fn add(&mut self, profile: &Profile) {
        let service = profile.series.get(SERVICE_NAME).unwrap_or(UNKNOWN_SERVICE);
        if !self.datasets.contains_key(service) {
            self.datasets.insert(service.to_string(), DatasetBuilder::default());
        }
        let ds = self.datasets.get_mut(service).expect("inserted above");
        let key = Arc::as_ptr(&profile.symbols) as usize;
        let DatasetBuilder {
            symbols,
            remaps,
            series: series_table,
            profiles,
        } = ds;
        let (_, remap, added) = remaps.entry(key).or_insert_with(|| {
            let added = (0..profile.symbols.label_set_count() as u32)
                .map(|set| split::series_labels_of(&profile.symbols, set))
                .collect();
            (Arc::clone(&profile.symbols), symbols.import(&profile.symbols), added)
        });
        let base = series_table.id(&profile.series, &profile.profile_type);
        // The part (series and its samples) of each label set of the profile's table, found
        // once per set: most samples carry no labels, and few sets repeat many times.
        let mut part_of_set: Vec<Option<usize>> = vec![None; added.len()];
        let mut parts: Vec<(u32, Vec<StoredSample>)> = Vec::new();
        for s in &profile.samples {
            let part = *part_of_set[s.labels as usize].get_or_insert_with(|| {
                let added = &added[s.labels as usize];
                let series = if added.is_empty() {
                    base
                } else {
                    let mut labels = profile.series.clone();
                    for (name, value) in added.shared() {
                        if labels.get(name).is_none() {
                            labels.set(Arc::clone(name), Arc::clone(value));
                        }
                    }
                    series_table.id(&labels, &profile.profile_type)
                };
                parts.iter().position(|(id, _)| *id == series).unwrap_or_else(|| {
                    parts.push((series, Vec::new()));
                    parts.len() - 1
                })
            });
            parts[part].1.push((
                remap.stacks[s.stack as usize],
                s.value,
                remap.label_sets[s.labels as usize],
            ));
        }
        if parts.is_empty() {
            // A profile without samples is stored as sent.
            parts.push((base, Vec::new()));
        }
        for (series, mut samples) in parts {
            samples.sort_unstable_by_key(|&(stack, _, labels)| (stack, labels));
            profiles.push(PendingProfile {
                series,
                timestamp_ns: profile.timestamp_ns,
                duration_ns: profile.duration_ns,
                period: profile.period,
                samples,
            });
        }
    }

    pub fn finish(self, id: Ulid) -> Result<EncodedBlock> {
        let mut bytes = Vec::with_capacity(64 << 10);
        bytes.extend_from_slice(format::HEADER_MAGIC);
        let mut meta = BlockMeta {
            id: id.to_string(),
            tenant: self.tenant,
            level: self.level,
            min_time_ns: i64::MAX,
            max_time_ns: i64::MIN,
            created_by: concat!("flamepipe ", env!("CARGO_PKG_VERSION")).to_string(),
            ..Default::default()
        };
        for (service_name, mut ds) in self.datasets {
            ds.profiles.sort_by_key(|p| (p.timestamp_ns, p.series));
            let mut index = SeriesIndex {
                series: ds
                    .series
                    .keys
                    .iter()
                    .map(|(labels, t)| {
                        let (label_names, label_values) =
                            labels.iter().map(|(n, v)| (n.to_string(), v.to_string())).unzip();
                        Series {
                            label_names,
                            label_values,
                            profile_type: t.id(),
                        }
                    })
                    .collect(),
                ..Default::default()
            };
            let sample_count: usize = ds.profiles.iter().map(|p| p.samples.len()).sum();
            let mut columns = SampleColumns {
                stack_delta: Vec::with_capacity(sample_count),
                value: Vec::with_capacity(sample_count),
                label_set: Vec::with_capacity(sample_count),
            };
            let (mut min_t, mut max_t) = (i64::MAX, i64::MIN);
            let mut types: Vec<String> = Vec::new();
            for p in &ds.profiles {
                min_t = min_t.min(p.timestamp_ns);
                max_t = max_t.max(p.timestamp_ns.saturating_add(p.duration_ns));
                index.profile_series.push(p.series);
                index.profile_timestamp_ns.push(p.timestamp_ns);
                index.profile_duration_ns.push(p.duration_ns);
                index.profile_period.push(p.period);
                index.profile_sample_count.push(p.samples.len() as u32);
                index
                    .profile_total
                    .push(p.samples.iter().fold(0i64, |sum, s| sum.saturating_add(s.1)));
                let mut prev = 0;
                for &(stack, value, labels) in &p.samples {
                    columns.stack_delta.push(stack - prev);
                    columns.value.push(value);
                    columns.label_set.push(labels);
                    prev = stack;
                }
            }
            for s in &index.series {
                if !types.contains(&s.profile_type) {
                    types.push(s.profile_type.clone());
                }
            }
            types.sort();
            let symbols = encode_symbols(ds.symbols.finish());
            let dataset = Dataset {
                service_name,
                min_time_ns: min_t,
                max_time_ns: max_t,
                profile_types: types,
                index: Some(write_section(&mut bytes, &index, ZSTD_LEVEL)?),
                symbols: Some(write_section(&mut bytes, &symbols, ZSTD_LEVEL)?),
                samples: Some(write_section(&mut bytes, &columns, ZSTD_LEVEL)?),
                profile_count: ds.profiles.len() as u64,
                sample_count: sample_count as u64,
            };
            meta.min_time_ns = meta.min_time_ns.min(min_t);
            meta.max_time_ns = meta.max_time_ns.max(max_t);
            meta.profile_count += dataset.profile_count;
            meta.sample_count += dataset.sample_count;
            meta.datasets.push(dataset);
        }
        if meta.datasets.is_empty() {
            (meta.min_time_ns, meta.max_time_ns) = (0, 0);
        }
        let footer = meta.encode_to_vec();
        bytes.extend_from_slice(&footer);
        bytes.extend_from_slice(&(footer.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&footer).to_le_bytes());
        bytes.extend_from_slice(&format::FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(format::TRAILER_MAGIC);
        Ok(EncodedBlock { meta, bytes })
    }
}
