//! Request bodies: gzip detection and bounded inflation.
//!
//! Receivers sniff the gzip magic instead of trusting headers or file names (senders label
//! pprof bodies every way there is), and never inflate more than a configured limit, so a
//! decompression bomb costs at most `max_decompressed_bytes` of memory.

use std::borrow::Cow;
use std::io::Read;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("body is empty")]
    Empty,
    #[error("decompressed body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("invalid gzip data: {0}")]
    Gzip(String),
}

impl BodyError {
    /// A short stable name for metrics (`reason` label).
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::Empty => "empty_body",
            BodyError::TooLarge { .. } => "too_large",
            BodyError::Gzip(_) => "bad_gzip",
        }
    }
}

pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Inflates `bytes` if they start with the gzip magic; returns them as they are otherwise.
pub fn maybe_gunzip(bytes: &[u8], max_decompressed: usize) -> Result<Cow<'_, [u8]>, BodyError> {
    if bytes.is_empty() {
        return Err(BodyError::Empty);
    }
    if is_gzip(bytes) {
        gunzip(bytes, max_decompressed).map(Cow::Owned)
    } else {
        Ok(Cow::Borrowed(bytes))
    }
}

/// Inflates a gzip stream (all members), failing as soon as the output passes `max`.
pub fn gunzip(bytes: &[u8], max: usize) -> Result<Vec<u8>, BodyError> {
    // Go's gzip writer and most SDKs compress 3-10x; start there to avoid regrowth.
    let mut out = Vec::with_capacity((bytes.len() * 4).min(max));
    let decoder = flate2::read::MultiGzDecoder::new(bytes);
    decoder
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Gzip(e.to_string()))?;
    if out.len() > max {
        return Err(BodyError::TooLarge { limit: max });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn passes_raw_bytes_through() {
        assert_eq!(maybe_gunzip(b"\x0a\x02", 10).unwrap().as_ref(), b"\x0a\x02");
        assert_eq!(maybe_gunzip(b"", 10), Err(BodyError::Empty));
    }

    #[test]
    fn stops_a_bomb_at_the_limit() {
        let bomb = gz(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 64 << 10);
        assert_eq!(gunzip(&bomb, 1 << 20), Err(BodyError::TooLarge { limit: 1 << 20 }));
        assert_eq!(gunzip(&bomb, 10 << 20).unwrap().len(), 10 << 20);
    }

    #[test]
    fn reports_truncated_gzip() {
        let data = gz(&(0..50_000u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<_>>());
        assert!(matches!(
            gunzip(&data[..data.len() / 2], 1 << 20),
            Err(BodyError::Gzip(_))
        ));
    }
}
