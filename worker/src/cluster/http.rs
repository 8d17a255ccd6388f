//! The cluster's HTTP endpoints, on axum: `/healthz`, `/readyz`, `/metrics`.
//!
//! `/healthz` answers while the sentinel runs and never calls the broker (a
//! liveness probe must not restart pods because Redis is down); `/readyz`
//! answers 200 only when the broker answers and every worker slot has a
//! live process; `/metrics` is the OpenMetrics exposition.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use super::Shared;
use crate::metrics::CONTENT_TYPE;

/// Serves until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(shared);
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!("http: the server stopped: {error}");
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the broker answers and every worker slot has a live process.
async fn readyz(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    let workers = shared.config.workers;
    let live = shared
        .pids
        .lock()
        .map(|pids| pids.iter().filter(|pid| **pid != 0).count())
        .unwrap_or(0);
    if let Err(error) = shared.broker.ping().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("broker unreachable: {error}\n"),
        );
    }
    if live < workers {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{live} of {workers} workers up\n"),
        );
    }
    (
        StatusCode::OK,
        format!("ready: broker reachable, {live} workers up\n"),
    )
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        shared.metrics.render(),
    )
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found: try /healthz, /readyz or /metrics\n",
    )
}
