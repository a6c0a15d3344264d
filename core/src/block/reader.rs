//! Reads blocks: the footer with one ranged read, then only the sections asked for.

use std::ops::Range;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use prost::Message;

use super::codec::{decode_symbols, read_section};
use super::format::{self, BlockMeta, Dataset, SampleColumns, SectionRef, SeriesIndex, SymbolTable};
use super::{BlockError, Result};
use crate::labels::Labels;
use crate::model::{Profile, Sample};
use crate::profile_type::ProfileType;
use crate::symbols::Symbols;

/// How much of a block's tail the first read fetches: most footers fit, saving a round trip.
const TAIL_READ: u64 = 64 << 10;
const MIN_SIZE: usize = format::HEADER_MAGIC.len() + format::TRAILER_LEN;

/// An open block in an object store.
pub struct BlockReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    name: String,
    meta: BlockMeta,
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
            meta,
        })
    }

    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    async fn section(&self, section: &Option<SectionRef>, what: &'static str) -> Result<(SectionRef, bytes::Bytes)> {
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
        Ok((section, bytes))
    }

    pub async fn index(&self, ds: &Dataset) -> Result<SeriesIndex> {
        let (section, bytes) = self.section(&ds.index, "index").await?;
        read_section(&self.name, "index", &section, &bytes)
    }

    pub async fn symbols(&self, ds: &Dataset) -> Result<Symbols> {
        let (section, bytes) = self.section(&ds.symbols, "symbols").await?;
        let table: SymbolTable = read_section(&self.name, "symbols", &section, &bytes)?;
        decode_symbols(&self.name, table)
    }

    pub async fn samples(&self, ds: &Dataset) -> Result<SampleColumns> {
        let (section, bytes) = self.section(&ds.samples, "samples").await?;
        read_section(&self.name, "samples", &section, &bytes)
    }

    /// Every profile of a dataset, rebuilt in full.
    pub async fn profiles(&self, ds: &Dataset) -> Result<Vec<Profile>> {
        let index = self.index(ds).await?;
        let symbols = self.symbols(ds).await?;
        let samples = self.samples(ds).await?;
        rebuild_profiles(&self.name, index, Arc::new(symbols), samples)
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
        datasets.push(rebuild_profiles(name, index, Arc::new(symbols), samples)?);
    }
    Ok((meta, datasets))
}

fn rebuild_profiles(
    name: &str,
    index: SeriesIndex,
    symbols: Arc<Symbols>,
    cols: SampleColumns,
) -> Result<Vec<Profile>> {
    let corrupt = |detail: &str| BlockError::corrupt(name, "index", detail);
    let n = index.profile_series.len();
    if [
        index.profile_timestamp_ns.len(),
        index.profile_duration_ns.len(),
        index.profile_period.len(),
        index.profile_sample_count.len(),
    ]
    .iter()
    .any(|&len| len != n)
    {
        return Err(corrupt("profile columns of different lengths"));
    }
    if cols.value.len() != cols.stack_delta.len() || cols.label_set.len() != cols.stack_delta.len() {
        return Err(BlockError::corrupt(name, "samples", "columns of different lengths"));
    }
    let total: u64 = index.profile_sample_count.iter().map(|&c| u64::from(c)).sum();
    if total != cols.value.len() as u64 {
        return Err(corrupt("sample counts do not match the sample columns"));
    }
    let series: Vec<(Labels, ProfileType)> = index
        .series
        .iter()
        .map(|s| {
            if s.label_names.len() != s.label_values.len() {
                return Err(corrupt("series label columns of different lengths"));
            }
            let labels = s
                .label_names
                .iter()
                .cloned()
                .zip(s.label_values.iter().cloned())
                .collect();
            let profile_type = ProfileType::parse(&s.profile_type).map_err(|e| corrupt(&e.to_string()))?;
            Ok((labels, profile_type))
        })
        .collect::<Result<_>>()?;
    let (stacks, label_sets) = (symbols.stack_count() as u64, symbols.label_set_count() as u32);
    let mut profiles = Vec::with_capacity(n);
    let mut at = 0usize;
    for i in 0..n {
        let (labels, profile_type) = series
            .get(index.profile_series[i] as usize)
            .ok_or_else(|| corrupt("series id out of range"))?;
        let count = index.profile_sample_count[i] as usize;
        let mut samples = Vec::with_capacity(count);
        let mut stack: u64 = 0;
        for j in at..at + count {
            stack += u64::from(cols.stack_delta[j]);
            let labels = cols.label_set[j];
            if stack >= stacks || labels >= label_sets {
                return Err(BlockError::corrupt(
                    name,
                    "samples",
                    "stack or label set id out of range",
                ));
            }
            samples.push(Sample {
                stack: stack as u32,
                value: cols.value[j],
                labels,
            });
        }
        at += count;
        profiles.push(Profile {
            series: labels.clone(),
            profile_type: profile_type.clone(),
            timestamp_ns: index.profile_timestamp_ns[i],
            duration_ns: index.profile_duration_ns[i],
            period: index.profile_period[i],
            samples,
            symbols: Arc::clone(&symbols),
        });
    }
    Ok(profiles)
}
