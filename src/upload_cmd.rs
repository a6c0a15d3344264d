//! `flamepipe upload`: sends profile files to a Pyroscope-compatible `/ingest` (flamepipe's or
//! Pyroscope's), as Grafana's `profilecli upload` does for pprof.
//!
//! Each file's format is told from its content ([`flamepipe_core::formats::detect`]): pprof
//! (gzipped or raw), speedscope JSON or folded text, and sent with the matching `format`.
//! pprof files carry their own time; speedscope and folded files do not, and are stamped with
//! the file's modification time as the end of the recording (a speedscope file's longest
//! profile says when it started), so that uploading a file twice stores it once (with the
//! `dedup` processor, as in the shipped pipeline) rather than as two profiles. The
//! series is `service_name` (`--service`, default `flamepipe-upload`, or a `service_name`
//! label) plus `--labels`. Files are sent one after the other; each gets a line on stderr. The
//! command exits 0 when every file was stored, 1 when any was not (the others are still sent).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use flamepipe_core::formats::{self, Format};

/// What `flamepipe upload` was asked.
#[derive(Debug)]
pub struct Upload {
    /// The server, e.g. `http://127.0.0.1:4040`.
    pub url: String,
    pub tenant: Option<String>,
    pub service: String,
    /// Extra series labels.
    pub labels: Vec<(String, String)>,
    pub files: Vec<PathBuf>,
}

/// Some files were not stored: the command exits 1 after naming each.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} files were not uploaded")]
pub struct FailedUploads {
    pub failed: usize,
    pub total: usize,
}

/// Parses `k=v,k2=v2` (and repeated flags) into label pairs.
pub fn parse_labels(values: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut labels = Vec::new();
    for pair in values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("label {pair:?} is not of the form key=value"))?;
        if !flamepipe_core::labels::is_sender_label_name(k.trim()) {
            return Err(format!("invalid label name {:?}", k.trim()));
        }
        labels.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(labels)
}

/// Percent-encodes a query parameter value.
fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Upload {
    /// The `/ingest` `name` parameter: `service{k=v,...}`.
    fn name(&self) -> String {
        let service = self
            .labels
            .iter()
            .find(|(k, _)| k == "service_name")
            .map_or(self.service.as_str(), |(_, v)| v.as_str());
        let tags: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| k != "service_name")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if tags.is_empty() {
            service.to_string()
        } else {
            format!("{service}{{{}}}", tags.join(","))
        }
    }

    fn send(&self, agent: &ureq::Agent, body: &[u8], format: Format, modified_s: Option<u64>) -> Result<(), String> {
        let mut url = format!(
            "{}/ingest?name={}&format={}",
            self.url.trim_end_matches('/'),
            encode(&self.name()),
            format.ingest_param()
        );
        // The file was written when its recording ended: a speedscope file's profiles say
        // how long that was, folded text does not.
        if let (Format::Speedscope | Format::Folded, Some(until)) = (format, modified_s) {
            let duration_s = match format {
                Format::Speedscope => {
                    formats::speedscope::recording_duration_ns(body).map_or(0, |ns| ns / 1_000_000_000)
                }
                _ => 0,
            };
            let from = until.saturating_sub(u64::try_from(duration_s).unwrap_or(0));
            url.push_str(&format!("&from={from}&until={until}"));
        }
        let mut request = agent.post(&url).header("Content-Type", "application/octet-stream");
        if let Some(tenant) = &self.tenant {
            request = request.header("X-Scope-OrgID", tenant);
        }
        let mut response = request
            .send(body)
            .map_err(|e| format!("cannot reach {}: {e}", self.url))?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(());
        }
        let text = response.body_mut().read_to_string().unwrap_or_default();
        Err(format!("the server answered {status}: {}", text.trim()))
    }

    /// Uploads every file, reporting each on `progress`.
    pub fn run(&self, progress: &mut dyn Write) -> anyhow::Result<()> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let total = self.files.len();
        let mut failed = 0;
        for (i, path) in self.files.iter().enumerate() {
            let modified_s = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            let result = std::fs::read(path)
                .map_err(|e| format!("cannot read it: {e}"))
                .and_then(|body| {
                    let format = formats::detect(&body)
                        .ok_or_else(|| "not a pprof, speedscope or folded-text profile".to_string())?;
                    self.send(&agent, &body, format, modified_s)
                        .map(|()| (format, body.len()))
                });
            match result {
                Ok((format, bytes)) => writeln!(
                    progress,
                    "[{}/{total}] {}: uploaded ({}, {bytes} bytes)",
                    i + 1,
                    path.display(),
                    format.ingest_param()
                )?,
                Err(e) => {
                    failed += 1;
                    writeln!(progress, "[{}/{total}] {}: {e}", i + 1, path.display())?;
                }
            }
        }
        if failed > 0 {
            return Err(FailedUploads { failed, total }.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_names_are_built_as_the_ingest_api_reads_them() {
        let labels = parse_labels(&["env=prod, region=eu".into(), "team=a".into()]).unwrap();
        assert_eq!(labels.len(), 3);
        assert!(parse_labels(&["env".into()]).is_err());
        assert!(parse_labels(&["1x=y".into()]).is_err());
        let upload = Upload {
            url: "http://x".into(),
            tenant: None,
            service: "flamepipe-upload".into(),
            labels,
            files: Vec::new(),
        };
        assert_eq!(upload.name(), "flamepipe-upload{env=prod,region=eu,team=a}");
        let own = Upload {
            labels: vec![("service_name".into(), "checkout".into())],
            ..upload
        };
        assert_eq!(own.name(), "checkout");
    }
}
