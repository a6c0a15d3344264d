//! flamepipe's HTTP servers: one per listen address, shared by every component mounted there,
//! plus the telemetry server (`/metrics`, `/ready`, `/live`).
//!
//! Listeners are all bound before anything is served, so a taken port fails the start
//! before any data is accepted. Serving stops gracefully: the listener closes and in-flight
//! requests finish (they may be waiting for their data to be durably written, which needs the
//! pipelines still running: the topology stops those only after the servers are done).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use flamepipe_core::component::HttpMount;
use flamepipe_core::telemetry::Telemetry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The content type of `/metrics`, as the OpenMetrics spec names it.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {address} (for {owners}): {source}")]
    Bind {
        address: SocketAddr,
        owners: String,
        source: std::io::Error,
    },
    #[error("route {path:?} on {address} is mounted by both {first} and {second}")]
    Conflict {
        address: SocketAddr,
        path: String,
        first: String,
        second: String,
    },
}

/// A bound listener and the routes it will serve.
pub struct Bound {
    /// The address actually bound (the configured one, with a port 0 resolved).
    pub address: SocketAddr,
    /// The components served here, for logs and errors.
    pub owners: Vec<String>,
    listener: TcpListener,
    router: Router,
}

impl Bound {
    /// Serves until `shutdown` is cancelled and every open request has been answered.
    pub async fn serve(self, shutdown: CancellationToken) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

/// Groups mounts by address (in first-seen order), merges their routers and binds one
/// listener per address.
pub async fn bind(mounts: Vec<(String, HttpMount)>) -> Result<Vec<Bound>, ServerError> {
    let mut groups: Vec<Group> = Vec::new();
    for (owner, mount) in mounts {
        let index = match groups.iter().position(|g| g.address == mount.address) {
            Some(i) => i,
            None => {
                groups.push(Group {
                    address: mount.address,
                    owners: Vec::new(),
                    paths: Vec::new(),
                    router: Router::new(),
                });
                groups.len() - 1
            }
        };
        let group = &mut groups[index];
        for path in &mount.paths {
            if let Some((_, first)) = group.paths.iter().find(|(p, _)| p == path) {
                return Err(ServerError::Conflict {
                    address: mount.address,
                    path: path.clone(),
                    first: first.clone(),
                    second: owner.clone(),
                });
            }
        }
        group
            .paths
            .extend(mount.paths.iter().map(|p| (p.clone(), owner.clone())));
        if !group.owners.contains(&owner) {
            group.owners.push(owner);
        }
        // Paths were checked just above, so merging cannot hit axum's overlap panic.
        group.router = std::mem::take(&mut group.router).merge(mount.router);
    }
    let mut bound = Vec::with_capacity(groups.len());
    for Group {
        address,
        owners,
        router,
        ..
    } in groups
    {
        let bind_error = |source| ServerError::Bind {
            address,
            owners: owners.join(", "),
            source,
        };
        let listener = TcpListener::bind(address).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        bound.push(Bound {
            address: local,
            owners,
            listener,
            router,
        });
    }
    Ok(bound)
}

/// The mounts on one address.
struct Group {
    address: SocketAddr,
    owners: Vec<String>,
    /// Each path with the component that mounted it.
    paths: Vec<(String, String)>,
    router: Router,
}

/// The telemetry server's routes: metrics, readiness (all servers listening and not
/// shutting down) and liveness.
pub fn telemetry_router(telemetry: Arc<Telemetry>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let telemetry = Arc::clone(&telemetry);
                async move { ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], telemetry.encode()) }
            }),
        )
        .route(
            "/ready",
            get(move || {
                let ready = ready.load(Ordering::Acquire);
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                    .into_response()
                }
            }),
        )
        .route("/live", get(|| async { "live\n" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(address: SocketAddr, path: &str) -> HttpMount {
        HttpMount {
            address,
            paths: vec![path.to_string()],
            router: Router::new().route(path, get(|| async { "x" })),
        }
    }

    #[tokio::test]
    async fn mounts_on_one_address_share_a_listener() {
        let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let bound = bind(vec![("r1".into(), mount(a, "/one")), ("r2".into(), mount(a, "/two"))])
            .await
            .unwrap();
        assert_eq!(bound.len(), 1);
        assert_eq!(bound[0].owners, ["r1", "r2"]);
        assert_ne!(bound[0].address.port(), 0);
    }

    #[tokio::test]
    async fn a_path_mounted_twice_is_refused() {
        let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let Err(e) = bind(vec![("r1".into(), mount(a, "/x")), ("r2".into(), mount(a, "/x"))]).await else {
            panic!()
        };
        assert_eq!(
            e.to_string(),
            "route \"/x\" on 127.0.0.1:0 is mounted by both r1 and r2"
        );
    }

    #[tokio::test]
    async fn a_taken_port_names_the_address_and_owner() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = taken.local_addr().unwrap();
        let Err(e) = bind(vec![("pyroscope".into(), mount(a, "/x"))]).await else {
            panic!()
        };
        assert!(
            e.to_string()
                .starts_with(&format!("cannot listen on {a} (for pyroscope): ")),
            "{e}"
        );
    }
}
