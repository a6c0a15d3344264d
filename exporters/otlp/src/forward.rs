//! The exporter: encodes each batch and sends it; the sending queue, retries and timeout are
//! the shared exporter helper's, and the batch's senders are answered only after the
//! receiving end accepted it.

use flamepipe_core::component::{Batch, BoxFuture, BuildContext, Exporter};
use flamepipe_core::exporter_helper::{self, Deliver, Delivered, ExportError};
use flamepipe_core::metric::MetricsBatch;
use flamepipe_core::tenant::TENANT_HEADER;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_client::ProfilesServiceClient;
use tokio::sync::mpsc;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::config::{Compression, Config};
use crate::encode::encode;
use crate::metrics::ExportMetrics;

/// The exporter of one signal: profiles (`ProfilesService/Export`) or metrics
/// (`MetricsService/Export`), on one lazily connected channel.
pub struct Forwarder {
    config: Config,
    ctx: BuildContext,
    channel: Channel,
    headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
}

impl Forwarder {
    pub fn new(config: Config, ctx: &BuildContext) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| format!("invalid endpoint {:?}: {e}", config.endpoint))?
            .timeout(config.timeout.0)
            .connect_timeout(config.timeout.0);
        // Connects on first use, and reconnects after failures: the receiving end may start later.
        let channel = endpoint.connect_lazy();
        let headers = config
            .headers
            .iter()
            .map(|(k, v)| {
                let key = AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                    .map_err(|e| format!("header {k:?}: {e}"))?;
                let value = v.parse().map_err(|e| format!("header {k:?}: {e}"))?;
                Ok((key, value))
            })
            .collect::<Result<_, String>>()?;
        Ok(Forwarder {
            config,
            ctx: ctx.clone(),
            channel,
            headers,
        })
    }
}

/// One attempt at the `Export` call.
struct Export {
    endpoint: String,
    client: ProfilesServiceClient<Channel>,
    headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
}

impl Deliver<Batch> for Export {
    async fn deliver(&self, batch: &Batch) -> Result<Delivered, ExportError> {
        if batch.profiles.is_empty() {
            return Ok(Delivered::default());
        }
        let call = request(encode(&batch.profiles), &batch.tenant, &self.headers);
        match self.client.clone().export(call).await {
            Ok(response) => Ok(match response.into_inner().partial_success {
                Some(partial) if partial.rejected_profiles > 0 => Delivered {
                    refused: usize::try_from(partial.rejected_profiles).unwrap_or(usize::MAX),
                    reason: partial.error_message,
                },
                _ => Delivered::default(),
            }),
            Err(status) => Err(classify(&self.endpoint, &status)),
        }
    }
}

/// A call carrying `message`, the batch's tenant as `X-Scope-OrgID` and the configured
/// headers (which win over the tenant).
pub(crate) fn request<T>(
    message: T,
    tenant: &str,
    headers: &[(AsciiMetadataKey, AsciiMetadataValue)],
) -> tonic::Request<T> {
    let mut call = tonic::Request::new(message);
    let metadata = call.metadata_mut();
    if let Ok(value) = tenant.parse() {
        metadata.insert(TENANT_HEADER, value);
    }
    for (k, v) in headers {
        metadata.insert(k.clone(), v.clone());
    }
    call
}

/// The codes the OTLP specification calls retryable are retried; the others are final.
pub(crate) fn classify(endpoint: &str, status: &Status) -> ExportError {
    let message = format!(
        "forwarding to {endpoint} failed: {}: {}",
        status.code(),
        status.message()
    );
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled => {
            ExportError::retryable(message)
        }
        _ => ExportError::Permanent(message),
    }
}

impl Exporter for Forwarder {
    fn run(self: Box<Self>, input: mpsc::Receiver<Batch>) -> BoxFuture {
        Box::pin(async move {
            let settings = self.config.helper_settings();
            let mut client = ProfilesServiceClient::new(self.channel);
            if self.config.compression == Compression::Gzip {
                client = client.send_compressed(CompressionEncoding::Gzip);
            }
            let export = Export {
                endpoint: self.config.endpoint.clone(),
                client,
                headers: self.headers,
            };
            exporter_helper::run(&self.ctx, settings, export, input, std::convert::identity).await;
        })
    }
}

impl Exporter<MetricsBatch> for Forwarder {
    fn run(self: Box<Self>, input: mpsc::Receiver<MetricsBatch>) -> BoxFuture {
        Box::pin(async move {
            let settings = self.config.helper_settings();
            let mut client = MetricsServiceClient::new(self.channel);
            if self.config.compression == Compression::Gzip {
                client = client.send_compressed(CompressionEncoding::Gzip);
            }
            let export = ExportMetrics {
                endpoint: self.config.endpoint.clone(),
                client,
                headers: self.headers,
            };
            exporter_helper::run(&self.ctx, settings, export, input, std::convert::identity).await;
        })
    }
}
