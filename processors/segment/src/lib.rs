//! The `segment` processor: gathers profiles per tenant into segments and hands each segment
//! on as one batch, so the exporter after it writes one object per tenant per interval.
//!
//! Sits last in a pipeline's processor chain, before the `blocks` exporter. A segment is
//! flushed `flush_interval` after its first profile arrived, or at once when it reaches
//! `max_bytes`; on shutdown every open segment is flushed. Requests are acknowledged by the
//! exporter once the segment holding them is durably written, so with `ack: durable` on the
//! receiver a request waits about `flush_interval` plus the write (longer when the exporter
//! retries, or is busy with earlier segments).

mod config;
mod segmenter;
#[cfg(test)]
mod tests;

pub use config::Config;
pub use segmenter::Segmenter;
