//! Which profile format a body holds, from its first bytes: what `flamepipe upload` and
//! `/ingest` without a `format` use. Content decides, never a file name or a header: files
//! are misnamed (`.pb.gz` files that are not gzipped live in upstream test data).

use std::io::Read;

use crate::body;

/// A profile format flamepipe reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// pprof protobuf, gzipped or raw.
    Pprof,
    /// speedscope JSON.
    Speedscope,
    /// Folded stacks: `frame;frame;frame count` per line.
    Folded,
}

impl Format {
    /// The `format` parameter of Pyroscope's `/ingest` for it.
    pub fn ingest_param(self) -> &'static str {
        match self {
            Format::Pprof => "pprof",
            Format::Speedscope => "speedscope",
            Format::Folded => "folded",
        }
    }
}

/// How much of a gzipped body is inflated to look inside.
const PEEK: u64 = 4096;

/// The format of `bytes`, or `None` when it is none of them. A gzipped body is judged by what
/// it inflates to (pprof is almost always gzipped; the others rarely are).
pub fn detect(bytes: &[u8]) -> Option<Format> {
    if body::is_gzip(bytes) {
        let mut head = Vec::new();
        let inflated = flate2::read::GzDecoder::new(bytes).take(PEEK).read_to_end(&mut head);
        // A gzip stream cut short still says what it starts with.
        if inflated.is_err() && head.is_empty() {
            return None;
        }
        return Some(match detect_plain(&head) {
            Some(Format::Speedscope) => Format::Speedscope,
            Some(Format::Folded) if !looks_like_pprof(&head) => Format::Folded,
            _ => Format::Pprof,
        });
    }
    detect_plain(bytes)
}

fn detect_plain(bytes: &[u8]) -> Option<Format> {
    let text = bytes.trim_ascii_start();
    if text.starts_with(b"{") {
        let head = &text[..text.len().min(PEEK as usize)];
        let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
        return (has(b"speedscope") || (has(b"\"shared\"") && has(b"\"profiles\""))).then_some(Format::Speedscope);
    }
    if looks_like_pprof(bytes) {
        return Some(Format::Pprof);
    }
    looks_like_folded(bytes).then_some(Format::Folded)
}

/// pprof: a protobuf message whose top-level fields are all pprof's (1 to 14) with the wire
/// types pprof gives them, walked to the end of `bytes` (cut short at the end is allowed,
/// for a prefix of an inflated body). Text almost never survives that walk.
fn looks_like_pprof(bytes: &[u8]) -> bool {
    use prost::encoding::{DecodeContext, WireType, decode_key, skip_field};
    let mut buf = bytes;
    let mut fields = 0;
    while !buf.is_empty() {
        let Ok((tag, wire_type)) = decode_key(&mut buf) else {
            return false;
        };
        // Messages, strings and packed columns are length-delimited; scalars are varints.
        let expected = match tag {
            1..=6 | 11 | 13 => WireType::LengthDelimited,
            7..=10 | 12 | 14 => WireType::Varint,
            _ => return false,
        };
        // Repeated scalars may come unpacked (varints) too.
        if wire_type != expected && !(tag == 13 && wire_type == WireType::Varint) {
            return false;
        }
        if skip_field(wire_type, tag, &mut buf, DecodeContext::default()).is_err() {
            return fields > 0 && bytes.len() >= PEEK as usize;
        }
        fields += 1;
    }
    fields > 0
}

/// Folded text: the first non-empty line ends in a count after a space.
fn looks_like_folded(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(PEEK as usize)]);
    let mut lines = text.lines().map(str::trim_end).filter(|l| !l.is_empty());
    lines.next().is_some_and(|line| {
        line.rsplit_once(' ')
            .is_some_and(|(_, count)| !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> Vec<u8> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration/testdata/fixtures");
        std::fs::read(root.join(rel)).unwrap()
    }

    fn files(dir: &str) -> Vec<(String, Vec<u8>)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../integration/testdata/fixtures")
            .join(dir);
        std::fs::read_dir(root)
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                (path.display().to_string(), std::fs::read(&path).unwrap())
            })
            .collect()
    }

    #[test]
    fn every_fixture_is_told_apart() {
        for (path, bytes) in files("pprof") {
            assert_eq!(detect(&bytes), Some(Format::Pprof), "{path}");
        }
        for (path, bytes) in files("speedscope") {
            assert_eq!(detect(&bytes), Some(Format::Speedscope), "{path}");
        }
        assert_eq!(
            detect(&fixture("other/python-pyspy.collapsed.txt")),
            Some(Format::Folded)
        );
        assert_eq!(detect(&fixture("other/go-heap-legacy-text.txt")), None);
    }

    #[test]
    fn gzipped_text_is_judged_by_its_content() {
        use std::io::Write;
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(detect(&gz(b"main;work 3\n")), Some(Format::Folded));
        assert_eq!(
            detect(&gz(
                br#"{"$schema":"https://www.speedscope.app/file-format-schema.json"}"#
            )),
            Some(Format::Speedscope)
        );
        assert_eq!(detect(b""), None);
        assert_eq!(detect(b"hello world"), None);
    }
}
