//! Sections <-> bytes, and the symbol table <-> its columnar message.
//!
//! Decoding checks the columns' shape here and every id against the table it points into with
//! [`check_symbols`], the check ingest applies to the tables it accepts, so a reader never
//! indexes out of bounds on a corrupt (or hostile) block.

use prost::Message;

use super::format::{SectionRef, SymbolTable};
use super::{BlockError, Result};
use crate::symbols::{Function, Line, Location, Mapping, SampleLabel, Symbols};
use crate::validate::check_symbols;

/// Compresses `msg` and appends it to `out`, returning where it landed.
pub(crate) fn write_section(out: &mut Vec<u8>, msg: &impl Message, level: i32) -> Result<SectionRef> {
    let raw = msg.encode_to_vec();
    let compressed = zstd::bulk::compress(&raw, level).map_err(|e| BlockError::Encode(e.to_string()))?;
    let section = SectionRef {
        offset: out.len() as u64,
        length: compressed.len() as u64,
        uncompressed_length: raw.len() as u64,
        crc32: crc32fast::hash(&compressed),
    };
    out.extend_from_slice(&compressed);
    Ok(section)
}

/// Checks and decodes a section's bytes (exactly `section.length` of them).
pub(crate) fn read_section<M: Message + Default>(
    block: &str,
    what: &'static str,
    section: &SectionRef,
    bytes: &[u8],
) -> Result<M> {
    if bytes.len() as u64 != section.length {
        return Err(BlockError::corrupt(block, what, "section is truncated"));
    }
    if crc32fast::hash(bytes) != section.crc32 {
        return Err(BlockError::Checksum {
            block: block.to_string(),
            what,
        });
    }
    // Stream, stopping one byte past the recorded length, so a corrupt footer can neither
    // make us allocate its claim up front nor inflate past it.
    let mut raw = Vec::with_capacity(usize::try_from(section.uncompressed_length).unwrap_or(0).min(64 << 20));
    let decoder = zstd::stream::read::Decoder::with_buffer(bytes).map_err(|e| BlockError::corrupt(block, what, e))?;
    std::io::Read::read_to_end(
        &mut std::io::Read::take(decoder, section.uncompressed_length.saturating_add(1)),
        &mut raw,
    )
    .map_err(|e| BlockError::corrupt(block, what, e))?;
    if raw.len() as u64 != section.uncompressed_length {
        return Err(BlockError::corrupt(
            block,
            what,
            "uncompressed length differs from the footer",
        ));
    }
    M::decode(raw.as_slice()).map_err(|e| BlockError::corrupt(block, what, e))
}

/// Moves a symbol table into its columnar message (the strings move, nothing is copied).
pub(crate) fn encode_symbols(mut s: Symbols) -> SymbolTable {
    let mut t = SymbolTable {
        strings: std::mem::take(&mut s.strings),
        ..Default::default()
    };
    for m in &s.mappings {
        t.mapping_memory_start.push(m.memory_start);
        t.mapping_memory_limit.push(m.memory_limit);
        t.mapping_file_offset.push(m.file_offset);
        t.mapping_filename.push(m.filename);
        t.mapping_build_id.push(m.build_id);
    }
    for f in &s.functions {
        t.function_name.push(f.name);
        t.function_system_name.push(f.system_name);
        t.function_filename.push(f.filename);
        t.function_start_line.push(f.start_line);
    }
    for l in &s.locations {
        t.location_mapping.push(l.mapping);
        t.location_address.push(l.address);
        t.location_line_count.push(l.lines.len() as u32);
        for line in &l.lines {
            t.line_function.push(line.function);
            t.line_number.push(line.line);
        }
    }
    t.stack_length = s.stack_offsets.windows(2).map(|w| w[1] - w[0]).collect();
    t.stack_location = s.stack_locations;
    t.label_set_length = s.label_set_offsets.windows(2).map(|w| w[1] - w[0]).collect();
    for l in &s.label_set_labels {
        t.label_key.push(l.key);
        t.label_str.push(l.str);
        t.label_num.push(l.num);
        t.label_num_unit.push(l.num_unit);
    }
    t
}

fn same_len(block: &str, what: &'static str, lens: &[usize]) -> Result<()> {
    if lens.windows(2).all(|w| w[0] == w[1]) {
        Ok(())
    } else {
        Err(BlockError::corrupt(
            block,
            what,
            format!("columns of different lengths {lens:?}"),
        ))
    }
}

fn offsets(block: &str, what: &'static str, lengths: &[u32], total: usize) -> Result<Vec<u32>> {
    let mut offsets = Vec::with_capacity(lengths.len() + 1);
    let mut at: u64 = 0;
    offsets.push(0);
    for &len in lengths {
        at += u64::from(len);
        if at > total as u64 {
            return Err(BlockError::corrupt(
                block,
                what,
                "row lengths exceed the flattened column",
            ));
        }
        offsets.push(at as u32);
    }
    if at != total as u64 {
        return Err(BlockError::corrupt(
            block,
            what,
            "row lengths do not cover the flattened column",
        ));
    }
    Ok(offsets)
}

pub(crate) fn decode_symbols(block: &str, t: SymbolTable) -> Result<Symbols> {
    const WHAT: &str = "symbols";
    same_len(
        block,
        WHAT,
        &[
            t.mapping_memory_start.len(),
            t.mapping_memory_limit.len(),
            t.mapping_file_offset.len(),
            t.mapping_filename.len(),
            t.mapping_build_id.len(),
        ],
    )?;
    same_len(
        block,
        WHAT,
        &[
            t.function_name.len(),
            t.function_system_name.len(),
            t.function_filename.len(),
            t.function_start_line.len(),
        ],
    )?;
    same_len(
        block,
        WHAT,
        &[
            t.location_mapping.len(),
            t.location_address.len(),
            t.location_line_count.len(),
        ],
    )?;
    same_len(block, WHAT, &[t.line_function.len(), t.line_number.len()])?;
    same_len(
        block,
        WHAT,
        &[
            t.label_key.len(),
            t.label_str.len(),
            t.label_num.len(),
            t.label_num_unit.len(),
        ],
    )?;
    let mappings = (0..t.mapping_filename.len())
        .map(|i| Mapping {
            memory_start: t.mapping_memory_start[i],
            memory_limit: t.mapping_memory_limit[i],
            file_offset: t.mapping_file_offset[i],
            filename: t.mapping_filename[i],
            build_id: t.mapping_build_id[i],
        })
        .collect();
    let functions = (0..t.function_name.len())
        .map(|i| Function {
            name: t.function_name[i],
            system_name: t.function_system_name[i],
            filename: t.function_filename[i],
            start_line: t.function_start_line[i],
        })
        .collect();
    let line_offsets = offsets(block, WHAT, &t.location_line_count, t.line_function.len())?;
    let locations = (0..t.location_mapping.len())
        .map(|i| Location {
            mapping: t.location_mapping[i],
            address: t.location_address[i],
            lines: (line_offsets[i] as usize..line_offsets[i + 1] as usize)
                .map(|j| Line {
                    function: t.line_function[j],
                    line: t.line_number[j],
                })
                .collect(),
        })
        .collect();
    let stack_offsets = offsets(block, WHAT, &t.stack_length, t.stack_location.len())?;
    let label_set_offsets = offsets(block, WHAT, &t.label_set_length, t.label_key.len())?;
    let label_set_labels = (0..t.label_key.len())
        .map(|i| SampleLabel {
            key: t.label_key[i],
            str: t.label_str[i],
            num: t.label_num[i],
            num_unit: t.label_num_unit[i],
        })
        .collect();
    let symbols = Symbols {
        strings: t.strings,
        mappings,
        functions,
        locations,
        stack_offsets,
        stack_locations: t.stack_location,
        label_set_offsets,
        label_set_labels,
    };
    check_symbols(&symbols).map_err(|e| BlockError::corrupt(block, WHAT, e))?;
    Ok(symbols)
}
