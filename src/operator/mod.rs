//! `hapair operator`: the process around the [`controller`](crate::controller): settings, the
//! HTTP endpoints (metrics and probes), and leader election when several replicas run.

pub mod config;
pub mod leader;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use kube::Client;
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::health::Health;
use crate::metrics::Metrics;

pub use config::{identity, Config, ConfigError, OperatorArgs};
pub use leader::LeaderError;

/// Why the operator stopped (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(
        "cannot listen on {addr} for /metrics, /healthz and /readyz: {source}; choose another \
         --metrics-addr"
    )]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot configure the Kubernetes client: {0}; in a pod check the service account, \
         outside one set KUBECONFIG"
    )]
    Kube(#[source] kube::Error),
    #[error(transparent)]
    Leader(#[from] LeaderError),
}

/// Runs until SIGTERM/SIGINT, or until leadership is lost.
pub async fn run(config: Config) -> Result<(), OperatorError> {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    serve(config.metrics_addr, &metrics, &health).await?;
    let client = Client::try_default().await.map_err(OperatorError::Kube)?;
    let controller = crate::controller::run(
        client.clone(),
        config.namespace,
        config.agent_image,
        Arc::clone(&metrics),
        Arc::clone(&health),
    );
    let Some(election) = config.election else {
        metrics.set_leader(true);
        health.set_ready();
        controller.await;
        return Ok(());
    };
    leader::lead(client, &election, &metrics, &health, controller).await?;
    Ok(())
}

/// Binds first, so that a taken address fails the start; then serves in the background.
async fn serve(
    addr: SocketAddr,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
) -> Result<(), OperatorError> {
    let listen = |source| OperatorError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(listen)?;
    let bound = listener.local_addr().map_err(listen)?;
    info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    let (metrics, health) = (Arc::clone(metrics), Arc::clone(health));
    tokio::spawn(async move {
        if let Err(e) = server::serve(listener, metrics, health).await {
            error!("the metrics server stopped: {e}");
        }
    });
    Ok(())
}
