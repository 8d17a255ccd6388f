//! The operator process: its HTTP endpoints, leader election, and the
//! reconciler and scheduler while this replica leads.
//!
//! A replica that loses the Lease stops reconciling at once and waits to lead
//! again; one told to stop (SIGTERM, SIGINT) stops reconciling, gives the
//! Lease up so another replica takes over without waiting for it to run out,
//! and returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;

use crate::leader::{Election, LEASE_DURATION};
use crate::metrics::Telemetry;
use crate::{reconciler, scheduler};

/// The name of the operator's Lease, unless `--lease-name` says otherwise.
pub const LEASE_NAME: &str = "q8s-operator";

/// How one operator replica runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The worker image of QClusters that name none.
    pub image: String,
    /// The namespaces whose QClusters and QSchedules it reconciles; all when empty.
    pub namespaces: Vec<String>,
    /// Where its Lease is.
    pub lease_namespace: String,
    /// The Lease's name: the Helm chart makes it, so that uninstalling removes it.
    pub lease_name: String,
    /// This replica's name in the election.
    pub identity: String,
    /// How long the Lease holds without renewal.
    pub lease_duration: Duration,
    /// How often owned objects are applied again with nothing changed.
    pub reapply: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` listen; none when `None`.
    pub http: Option<SocketAddr>,
}

impl Settings {
    /// Settings for `client`'s default namespace as the Lease's, and a unique identity.
    pub fn new(client: &Client, image: String) -> Settings {
        Settings {
            image,
            namespaces: Vec::new(),
            lease_namespace: client.default_namespace().to_string(),
            lease_name: LEASE_NAME.to_string(),
            identity: identity(),
            lease_duration: LEASE_DURATION,
            reapply: reconciler::REAPPLY,
            http: None,
        }
    }
}

/// The pod's name (or the host's) and a random suffix, as client-go names candidates.
pub fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(q8s::stat::host_name);
    let mut suffix = [0u8; 4];
    let _ = getrandom::fill(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}_{suffix}")
}

/// Why the operator could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The HTTP address cannot be listened on.
    #[error("cannot listen on {address}: {source}; choose another with --http")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Runs until `stop` resolves: HTTP, then leading and reconciling, or waiting to lead.
pub async fn run(
    client: Client,
    settings: Settings,
    telemetry: Arc<Telemetry>,
    stop: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let server = match settings.http {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| RunError::Listen { address, source })?;
            tracing::info!("metrics, health and readiness on http://{address}");
            Some(tokio::spawn(crate::http::serve(
                listener,
                telemetry.clone(),
            )))
        }
        None => None,
    };
    let election = Election::with_duration(
        client.clone(),
        &settings.lease_namespace,
        &settings.lease_name,
        &settings.identity,
        settings.lease_duration,
    );
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = election.acquire(&telemetry) => {}
            () = &mut stop => break,
        }
        telemetry.metrics.leader.set(1);
        // One reconciler and scheduler per namespace watched: a Role in each
        // grants no cluster-wide list, so one watch of all cannot do.
        let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
            vec![None]
        } else {
            settings.namespaces.iter().cloned().map(Some).collect()
        };
        let reconciling = futures_util::future::join_all(scopes.into_iter().map(|scope| {
            let (client, telemetry) = (client.clone(), telemetry.clone());
            let (image, reapply) = (settings.image.clone(), settings.reapply);
            async move {
                tokio::join!(
                    reconciler::run(
                        client.clone(),
                        image,
                        scope.clone(),
                        reapply,
                        telemetry.clone(),
                    ),
                    scheduler::run(client, scope, telemetry),
                );
            }
        }));
        let lost = tokio::select! {
            _ = reconciling => false,
            () = election.hold(&telemetry) => true,
            () = &mut stop => false,
        };
        telemetry.metrics.leader.set(0);
        telemetry.not_watching();
        if !lost {
            break;
        }
        tracing::warn!("lost the Lease: stopped reconciling, waiting to lead again");
    }
    election.release().await;
    if let Some(server) = server {
        server.abort();
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (never, when they cannot be listened for).
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("told to stop");
}
