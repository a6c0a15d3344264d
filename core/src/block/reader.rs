//! Reads blocks: the footer with one ranged read, then only the sections asked for.

use std::ops::Range;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use prost::Message;

use super::codec::{decode_symbols, read_section};
use super::format::{self, BlockMeta, Dataset, SampleColumns, SectionRef, SeriesIndex};
use super::{BlockError, Result};
use crate::labels::Labels;
use crate::model::{Profile, Sample};
use crate::profile_type::ProfileType;
use crate::symbols::Symbols;
use crate::validate;

/// How much of a block's tail the first read fetches: most footers fit, saving a round trip.
const TAIL_READ: u64 = 64 << 10;
const MIN_SIZE: usize = format::HEADER_MAGIC.len() + format::TRAILER_LEN;

/// An open block in an object store.
pub struct BlockReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    name: String,
    meta: Arc<BlockMeta>,
}

impl BlockReader {
    pub async fn open(store: Arc<dyn ObjectStore>, path: Path) -> Result<Self> {
        let name = path.to_string();
        let store_err = |source| BlockError::Store {
            block: name.clone(),
            source,
        };
        let size = store.head(&path).await.map_err(store_err)?.size;
        if size < MIN_SIZE as u64 {
            return Err(BlockError::corrupt(&name, "block", format!("only {size} bytes")));
        }
        let start = size.saturating_sub(TAIL_READ);
        let mut tail = store.get_range(&path, start..size).await.map_err(store_err)?.to_vec();
        let footer_len = parse_trailer(&name, &tail)? as u64;
        let needed = footer_len + format::TRAILER_LEN as u64;
        if needed > size - format::HEADER_MAGIC.len() as u64 {
            return Err(BlockError::corrupt(&name, "footer", "footer length exceeds the block"));
        }
        if needed > tail.len() as u64 {
            tail = store
                .get_range(&path, size - needed..size)
                .await
                .map_err(store_err)?
                .to_vec();
        }
        let meta = parse_footer(&name, &tail, size)?;
        Ok(BlockReader {
            store,
            path,
            name,
            meta: Arc::new(meta),
        })
    }

    /// A reader for a block whose footer was read before (blocks never change).
    pub fn with_meta(store: Arc<dyn ObjectStore>, path: Path, meta: Arc<BlockMeta>) -> Self {
        BlockReader {
            name: path.to_string(),
            store,
            path,
            meta,
        }
    }

    pub fn meta(&self) -> &Arc<BlockMeta> {
        &self.meta
    }

    /// The block's object key, as errors name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Fetches one section's bytes (checked and decoded later, possibly on another thread).
    pub async fn raw_section(&self, ds: &Dataset, kind: SectionKind) -> Result<RawSection> {
        let (section, what) = match kind {
            SectionKind::Index => (&ds.index, "index"),
            SectionKind::Symbols => (&ds.symbols, "symbols"),
            SectionKind::Samples => (&ds.samples, "samples"),
        };
        let section = section.ok_or_else(|| BlockError::corrupt(&self.name, what, "missing section"))?;
        let range: Range<u64> = section.offset..section.offset.saturating_add(section.length);
        let bytes = self
            .store
            .get_range(&self.path, range)
            .await
            .map_err(|source| BlockError::Store {
                block: self.name.clone(),
                source,
            })?;
        Ok(RawSection {
            block: self.name.clone(),
            what,
            section,
            bytes,
        })
    }

    pub async fn index(&self, ds: &Dataset) -> Result<SeriesIndex> {
        self.raw_section(ds, SectionKind::Index).await?.decode()
    }

    /// A dataset's index, checked ([`DatasetIndex`]).
    pub async fn dataset_index(&self, ds: &Dataset) -> Result<DatasetIndex> {
        DatasetIndex::new(&self.name, self.index(ds).await?)
    }

    pub async fn symbols(&self, ds: &Dataset) -> Result<Symbols> {
        self.raw_section(ds, SectionKind::Symbols).await?.decode_symbols()
    }

    pub async fn samples(&self, ds: &Dataset) -> Result<SampleColumns> {
        self.raw_section(ds, SectionKind::Samples).await?.decode()
    }

    /// Every profile of a dataset, rebuilt in full.
    pub async fn profiles(&self, ds: &Dataset) -> Result<Vec<Profile>> {
        Ok(self.indexed_profiles(ds).await?.1)
    }

    /// A dataset's checked index and its profiles, rebuilt in full in index order.
    pub async fn indexed_profiles(&self, ds: &Dataset) -> Result<(DatasetIndex, Vec<Profile>)> {
        let index = self.dataset_index(ds).await?;
        let symbols = self.symbols(ds).await?;
        let samples = self.samples(ds).await?;
        let profiles = rebuild_profiles(&self.name, &index, Arc::new(symbols), samples)?;
        Ok((index, profiles))
    }
}

/// The sections of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    Index,
    Symbols,
    Samples,
}

/// A section's compressed bytes as fetched, not yet checked.
pub struct RawSection {
    block: String,
    what: &'static str,
    section: SectionRef,
    bytes: bytes::Bytes,
}

impl RawSection {
    /// Compressed bytes fetched.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Checks the checksum and length, decompresses and decodes.
    pub fn decode<M: Message + Default>(&self) -> Result<M> {
        read_section(&self.block, self.what, &self.section, &self.bytes)
    }

    pub fn decode_symbols(&self) -> Result<Symbols> {
        decode_symbols(&self.block, self.decode()?)
    }
}

/// Decodes the footer's length from the trailer at the end of `tail`.
fn parse_trailer(name: &str, tail: &[u8]) -> Result<u32> {
    let Some(trailer) = tail.len().checked_sub(format::TRAILER_LEN).map(|at| &tail[at..]) else {
        return Err(BlockError::corrupt(name, "trailer", "too short"));
    };
    if &trailer[12..16] != format::TRAILER_MAGIC {
        return Err(BlockError::BadMagic {
            block: name.to_string(),
        });
    }
    let version = u32::from_le_bytes([trailer[8], trailer[9], trailer[10], trailer[11]]);
    if !format::SUPPORTED_VERSIONS.contains(&version) {
        return Err(BlockError::UnsupportedVersion {
            block: name.to_string(),
            version,
            supported: format::SUPPORTED_VERSIONS,
        });
    }
    Ok(u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]))
}

/// Decodes the footer from a tail of the block that holds it and the trailer.
fn parse_footer(name: &str, tail: &[u8], size: u64) -> Result<BlockMeta> {
    let footer_len = parse_trailer(name, tail)? as usize;
    let trailer_at = tail.len() - format::TRAILER_LEN;
    let Some(footer_at) = trailer_at.checked_sub(footer_len) else {
        return Err(BlockError::corrupt(name, "footer", "footer length exceeds the block"));
    };
    let footer = &tail[footer_at..trailer_at];
    let t = &tail[trailer_at..];
    let crc = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
    if crc32fast::hash(footer) != crc {
        return Err(BlockError::Checksum {
            block: name.to_string(),
            what: "footer",
        });
    }
    let meta = BlockMeta::decode(footer).map_err(|e| BlockError::corrupt(name, "footer", e))?;
    let data_end = size - (footer_len + format::TRAILER_LEN) as u64;
    for ds in &meta.datasets {
        for s in [&ds.index, &ds.symbols, &ds.samples].into_iter().flatten() {
            let end = s.offset.checked_add(s.length);
            if s.offset < format::HEADER_MAGIC.len() as u64 || end.is_none_or(|end| end > data_end) {
                return Err(BlockError::corrupt(name, "footer", "section outside the block"));
            }
        }
    }
    Ok(meta)
}

/// Decodes a whole block held in memory: its meta and every dataset's profiles.
pub fn decode_block(name: &str, bytes: &[u8]) -> Result<(BlockMeta, Vec<Vec<Profile>>)> {
    if bytes.len() < MIN_SIZE || &bytes[..format::HEADER_MAGIC.len()] != format::HEADER_MAGIC {
        return Err(BlockError::BadMagic {
            block: name.to_string(),
        });
    }
    let meta = parse_footer(name, bytes, bytes.len() as u64)?;
    let slice = |s: &Option<SectionRef>, what| -> Result<(SectionRef, &[u8])> {
        let s = s.ok_or_else(|| BlockError::corrupt(name, what, "missing section"))?;
        Ok((s, &bytes[s.offset as usize..(s.offset + s.length) as usize]))
    };
    let mut datasets = Vec::with_capacity(meta.datasets.len());
    for ds in &meta.datasets {
        let (s, b) = slice(&ds.index, "index")?;
        let index: SeriesIndex = read_section(name, "index", &s, b)?;
        let (s, b) = slice(&ds.symbols, "symbols")?;
        let symbols = decode_symbols(name, read_section(name, "symbols", &s, b)?)?;
        let (s, b) = slice(&ds.samples, "samples")?;
        let samples: SampleColumns = read_section(name, "samples", &s, b)?;
        let index = DatasetIndex::new(name, index)?;
        datasets.push(rebuild_profiles(name, &index, Arc::new(symbols), samples)?);
    }
    Ok((meta, datasets))
}

fn rebuild_profiles(
    name: &str,
    index: &DatasetIndex,
    symbols: Arc<Symbols>,
    cols: SampleColumns,
) -> Result<Vec<Profile>> {
    index.check_samples(name, &cols)?;
    let mut profiles = Vec::with_capacity(index.profile_count());
    for i in 0..index.profile_count() {
        let (labels, profile_type) = index.series_of(i);
        let mut samples = Vec::with_capacity(index.sample_range(i).len());
        for sample in index.samples(name, &cols, &symbols, i) {
            samples.push(sample?);
        }
        profiles.push(Profile {
            series: labels.clone(),
            profile_type: profile_type.clone(),
            timestamp_ns: index.columns.profile_timestamp_ns[i],
            duration_ns: index.columns.profile_duration_ns[i],
            period: index.columns.profile_period[i],
            samples,
            symbols: Arc::clone(&symbols),
        });
    }
    Ok(profiles)
}

/// A dataset's series index, checked: its profile columns have one length, its series labels,
/// profile types and profile times pass the checks ingest applies ([`validate`]), and every
/// profile points at a series. Queries select profiles with it before (and often
/// instead of) reading samples.
#[derive(Clone, Debug)]
pub struct DatasetIndex {
    pub series: Vec<(Labels, ProfileType)>,
    /// The raw columns (`profile_*`), all of [`DatasetIndex::profile_count`] length.
    pub columns: SeriesIndex,
    /// Where each profile's samples start in the sample columns, plus the end.
    sample_starts: Vec<usize>,
}

impl DatasetIndex {
    pub fn new(name: &str, columns: SeriesIndex) -> Result<Self> {
        let corrupt = |detail: &str| BlockError::corrupt(name, "index", detail);
        let n = columns.profile_series.len();
        let lengths = [
            columns.profile_timestamp_ns.len(),
            columns.profile_duration_ns.len(),
            columns.profile_period.len(),
            columns.profile_sample_count.len(),
        ];
        if lengths
            .iter()
            .chain([&columns.profile_total.len()])
            .any(|&len| len != n)
        {
            return Err(corrupt("profile columns of different lengths"));
        }
        let series = columns
            .series
            .iter()
            .map(|s| {
                if s.label_names.len() != s.label_values.len() {
                    return Err(corrupt("series label columns of different lengths"));
                }
                let pairs = || {
                    s.label_names
                        .iter()
                        .map(String::as_str)
                        .zip(s.label_values.iter().map(String::as_str))
                };
                validate::check_labels(pairs()).map_err(|e| corrupt(&e.to_string()))?;
                let labels = pairs().collect();
                let profile_type = ProfileType::parse(&s.profile_type).map_err(|e| corrupt(&e.to_string()))?;
                Ok((labels, profile_type))
            })
            .collect::<Result<Vec<_>>>()?;
        if columns.profile_series.iter().any(|&s| s as usize >= series.len()) {
            return Err(corrupt("series id out of range"));
        }
        for (&timestamp, &duration) in columns.profile_timestamp_ns.iter().zip(&columns.profile_duration_ns) {
            validate::check_time(timestamp, duration).map_err(|e| corrupt(&e.to_string()))?;
        }
        let mut sample_starts = Vec::with_capacity(n + 1);
        let mut at = 0usize;
        sample_starts.push(at);
        for &count in &columns.profile_sample_count {
            at = at.saturating_add(count as usize);
            sample_starts.push(at);
        }
        Ok(DatasetIndex {
            series,
            columns,
            sample_starts,
        })
    }

    pub fn profile_count(&self) -> usize {
        self.columns.profile_series.len()
    }

    pub fn series_of(&self, profile: usize) -> &(Labels, ProfileType) {
        &self.series[self.columns.profile_series[profile] as usize]
    }

    /// The positions of a profile's samples in the dataset's sample columns.
    pub fn sample_range(&self, profile: usize) -> Range<usize> {
        self.sample_starts[profile]..self.sample_starts[profile + 1]
    }

    /// Checks that `cols` hold exactly the samples this index counts.
    pub fn check_samples(&self, name: &str, cols: &SampleColumns) -> Result<()> {
        if cols.value.len() != cols.stack_delta.len() || cols.label_set.len() != cols.stack_delta.len() {
            return Err(BlockError::corrupt(name, "samples", "columns of different lengths"));
        }
        if self.sample_starts.last() != Some(&cols.value.len()) {
            return Err(BlockError::corrupt(
                name,
                "index",
                "sample counts do not match the sample columns",
            ));
        }
        Ok(())
    }

    /// A profile's samples with their stack ids decoded and checked against `symbols`
    /// (`cols` must have passed [`DatasetIndex::check_samples`]).
    pub fn samples<'a>(
        &self,
        name: &'a str,
        cols: &'a SampleColumns,
        symbols: &Symbols,
        profile: usize,
    ) -> impl Iterator<Item = Result<Sample>> + 'a {
        let (stacks, label_sets) = (symbols.stack_count(), symbols.label_set_count());
        let start = self.sample_range(profile).start;
        let mut stack: u64 = 0;
        self.sample_range(profile).map(move |j| {
            stack += u64::from(cols.stack_delta[j]);
            let sample = Sample {
                stack: u32::try_from(stack).unwrap_or(u32::MAX),
                value: cols.value[j],
                labels: cols.label_set[j],
            };
            validate::check_sample_refs(j - start, &sample, stacks, label_sets)
                .map_err(|e| BlockError::corrupt(name, "samples", e))?;
            Ok(sample)
        })
    }
}
