//! The operator's HTTP endpoints, on axum: `/healthz` (the process runs),
//! `/readyz` (the apiserver answered its last call), `/metrics` (OpenMetrics).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::{CONTENT_TYPE, Telemetry};

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(telemetry);
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!("http: the server stopped: {error}");
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(telemetry): State<Arc<Telemetry>>) -> (StatusCode, &'static str) {
    if telemetry.apiserver() {
        (StatusCode::OK, "ready: the apiserver answers\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the apiserver did not answer the last call\n",
        )
    }
}

async fn metrics(State(telemetry): State<Arc<Telemetry>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], telemetry.render())
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found: try /healthz, /readyz or /metrics\n",
    )
}
