//! The flat decoder agrees with prost's on every real pprof, and neither panics on garbage.

use std::path::PathBuf;

use proptest::prelude::*;

use super::flat::{self, FlatProfile};
use super::proto;
use crate::body::maybe_gunzip;

/// Rebuilds prost's structs from the flat columns, to compare whole messages.
fn to_proto(f: &FlatProfile<'_>) -> proto::Profile {
    proto::Profile {
        sample_type: f.sample_types.clone(),
        sample: f
            .samples
            .iter()
            .map(|s| proto::Sample {
                location_id: f.sample_locations(s).to_vec(),
                value: f.sample_values(s).to_vec(),
                label: f.sample_labels(s).to_vec(),
            })
            .collect(),
        mapping: f.mappings.clone(),
        location: f
            .locations
            .iter()
            .map(|l| proto::Location {
                id: l.id,
                mapping_id: l.mapping_id,
                address: l.address,
                line: f.location_lines(l).to_vec(),
                is_folded: false,
            })
            .collect(),
        function: f.functions.clone(),
        string_table: f.strings.iter().map(|s| s.to_string()).collect(),
        time_nanos: f.time_nanos,
        duration_nanos: f.duration_nanos,
        period_type: f.period_type,
        period: f.period,
        ..Default::default()
    }
}

/// prost's decoding of `bytes`, but with string table entries that are not UTF-8 converted
/// as the flat decoder converts them (prost refuses them): the top-level fields are copied
/// and each string table entry re-encoded through `lossy_utf8`.
fn prost_lossy(bytes: &[u8]) -> Result<proto::Profile, prost::DecodeError> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, encode_key, encode_varint, skip_field};
    let rewritten = (|| {
        let mut buf = bytes;
        let mut out = Vec::with_capacity(bytes.len());
        while !buf.is_empty() {
            let field_start = buf;
            let (tag, wire_type) = decode_key(&mut buf).ok()?;
            if tag == 6 && wire_type == WireType::LengthDelimited {
                let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                if len > buf.len() {
                    return None;
                }
                let text = crate::validate::lossy_utf8(&buf[..len]);
                encode_key(6, WireType::LengthDelimited, &mut out);
                encode_varint(text.len() as u64, &mut out);
                out.extend_from_slice(text.as_bytes());
                buf = &buf[len..];
            } else {
                skip_field(wire_type, tag, &mut buf, DecodeContext::default()).ok()?;
                out.extend_from_slice(&field_start[..field_start.len() - buf.len()]);
            }
        }
        Some(out)
    })();
    <proto::Profile as prost::Message>::decode(rewritten.as_deref().unwrap_or(bytes))
}

/// The fields the flat decoder reads (it skips drop/keep frames, comments, defaults, folding).
fn comparable(mut p: proto::Profile) -> proto::Profile {
    p.drop_frames = 0;
    p.keep_frames = 0;
    p.comment.clear();
    p.default_sample_type = 0;
    for l in &mut p.location {
        l.is_folded = false;
    }
    p
}

#[test]
fn flat_decoder_matches_prost_on_every_fixture() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../integration/testdata/fixtures/pprof");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let raw = maybe_gunzip(&bytes, 1 << 30).unwrap();
        let reference = comparable(prost_lossy(&raw).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
        let flat = flat::decode(&raw, usize::MAX).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(to_proto(&flat), reference, "{}", path.display());
        checked += 1;
    }
    assert!(checked >= 50);
}

#[test]
fn unpacked_repeated_fields_decode_like_packed() {
    use prost::Message;
    // Sample { location_id: [1, 2] unpacked (two varint fields), value: [7] unpacked }.
    let unpacked = [0x08, 0x01, 0x08, 0x02, 0x10, 0x07];
    let mut msg = Vec::new();
    prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut msg);
    prost::encoding::encode_varint(unpacked.len() as u64, &mut msg);
    msg.extend_from_slice(&unpacked);
    let reference = proto::Profile::decode(msg.as_slice()).unwrap();
    let flat = flat::decode(&msg, usize::MAX).unwrap();
    assert_eq!(to_proto(&flat).sample, reference.sample);
    assert_eq!(flat.sample_locations, vec![1, 2]);
}

#[test]
fn strings_that_are_not_utf8_are_read_with_replacement_characters() {
    use prost::Message;
    let mut profile = proto::Profile {
        string_table: vec![String::new(), "caf?".into()],
        ..Default::default()
    }
    .encode_to_vec();
    let at = profile.iter().position(|&b| b == b'?').unwrap();
    profile[at] = 0xe9; // Latin-1 e-acute: not UTF-8
    assert!(proto::Profile::decode(profile.as_slice()).is_err(), "prost refuses it");
    let flat = flat::decode(&profile, usize::MAX).unwrap();
    assert_eq!(flat.strings, vec!["", "caf\u{FFFD}"]);
}

proptest! {
    #[test]
    fn flat_and_prost_agree_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let reference = prost_lossy(&bytes);
        let flat = flat::decode(&bytes, usize::MAX);
        // Both accept the same inputs and, where they accept, read the same message.
        prop_assert_eq!(flat.is_ok(), reference.is_ok(), "flat: {:?}, prost: {:?}", flat.as_ref().err(), reference.as_ref().err());
        if let (Ok(flat), Ok(reference)) = (&flat, reference) {
            prop_assert_eq!(to_proto(flat), comparable(reference));
        }
    }
}
