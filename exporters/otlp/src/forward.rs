//! The exporter task: encode each batch, send it, retry what can be retried, then answer the
//! batch's senders (done only after the receiving end accepted it).

use std::sync::Arc;
use std::time::Instant;

use flamepipe_core::component::{Batch, BoxFuture, BuildContext, Exporter};
use flamepipe_core::telemetry::Telemetry;
use flamepipe_core::tenant::TENANT_HEADER;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_client::ProfilesServiceClient;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tracing::{debug, warn};

use crate::config::{Compression, Config};
use crate::encode::encode;

pub struct Forwarder {
    config: Config,
    id: Arc<str>,
    telemetry: Arc<Telemetry>,
    client: ProfilesServiceClient<Channel>,
    headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
}

impl Forwarder {
    pub fn new(config: Config, ctx: &BuildContext) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| format!("invalid endpoint {:?}: {e}", config.endpoint))?
            .timeout(config.timeout.0)
            .connect_timeout(config.timeout.0);
        // Connects on first use, and reconnects after failures: the receiving end may start later.
        let mut client = ProfilesServiceClient::new(endpoint.connect_lazy());
        if config.compression == Compression::Gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
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
            id: Arc::clone(&ctx.id),
            telemetry: Arc::clone(&ctx.telemetry),
            client,
            headers,
        })
    }

    async fn run_loop(self, mut input: mpsc::Receiver<Batch>) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.config.max_concurrent_requests));
        let mut sends = JoinSet::new();
        while let Some(batch) = input.recv().await {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let this = Arc::clone(&this);
            sends.spawn(async move {
                this.forward(batch).await;
                drop(permit);
            });
            while sends.try_join_next().is_some() {}
        }
        while sends.join_next().await.is_some() {}
        debug!(component = %this.id, "otlp exporter drained");
    }

    async fn forward(&self, batch: Batch) {
        if batch.profiles.is_empty() {
            return batch.done();
        }
        let request = encode(&batch.profiles);
        match self.send(&batch.tenant, request).await {
            Ok(()) => batch.done(),
            Err(status) => {
                self.telemetry.write_failed(&self.id);
                warn!(component = %self.id, code = ?status.code(), error = %status.message(), "export failed");
                batch.fail(&format!(
                    "forwarding to {} failed: {}: {}",
                    self.config.endpoint,
                    status.code(),
                    status.message()
                ));
            }
        }
    }

    /// Sends with retries on the codes the OTLP spec calls retryable.
    async fn send(&self, tenant: &str, request: ExportProfilesServiceRequest) -> Result<(), Status> {
        let retry = &self.config.retry_on_failure;
        let started = Instant::now();
        let mut wait = retry.initial_interval.0;
        loop {
            let mut call = tonic::Request::new(request.clone());
            let metadata = call.metadata_mut();
            if let Ok(value) = tenant.parse() {
                metadata.insert(TENANT_HEADER, value);
            }
            for (k, v) in &self.headers {
                metadata.insert(k.clone(), v.clone());
            }
            let status = match self.client.clone().export(call).await {
                Ok(response) => {
                    if let Some(partial) = response.into_inner().partial_success
                        && partial.rejected_profiles > 0
                    {
                        warn!(component = %self.id, rejected = partial.rejected_profiles,
                            error = %partial.error_message, "the receiving end rejected some profiles");
                    }
                    return Ok(());
                }
                Err(status) => status,
            };
            let retryable = matches!(
                status.code(),
                Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled
            );
            if !retryable || started.elapsed() + wait > retry.max_elapsed_time.0 {
                return Err(status);
            }
            debug!(component = %self.id, code = ?status.code(), ?wait, "export failed; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(retry.max_interval.0);
        }
    }
}

impl Exporter for Forwarder {
    fn run(self: Box<Self>, input: mpsc::Receiver<Batch>) -> BoxFuture {
        Box::pin(self.run_loop(input))
    }
}
