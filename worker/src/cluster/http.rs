//! The cluster's HTTP endpoints: `/healthz`, `/readyz`, `/metrics`.
//!
//! Three read-only GET endpoints need no framework: a request line is read,
//! one response is written, and the connection is closed.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Shared;

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, workers: usize) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, Arc::clone(&shared), workers));
            }
            Err(error) => {
                tracing::warn!("http: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, shared: Arc<Shared>, workers: usize) {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
            let n = stream.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..n]);
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return;
    }
    let head = String::from_utf8_lossy(&head);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/healthz") => (200, "text/plain", "ok\n".to_string()),
        ("GET", "/readyz") => readiness(&shared, workers).await,
        ("GET", "/metrics") => (200, "text/plain; version=0.0.4", shared.metrics.render()),
        ("GET", _) => (
            404,
            "text/plain",
            "not found: try /healthz, /readyz or /metrics\n".into(),
        ),
        _ => (405, "text/plain", "only GET is served\n".into()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Ready when the broker answers and every worker slot has a live process.
async fn readiness(shared: &Shared, workers: usize) -> (u16, &'static str, String) {
    let live = shared
        .pids
        .lock()
        .map(|pids| pids.iter().filter(|pid| **pid != 0).count())
        .unwrap_or(0);
    if let Err(error) = shared.broker.ping().await {
        return (503, "text/plain", format!("broker unreachable: {error}\n"));
    }
    if live < workers {
        return (
            503,
            "text/plain",
            format!("{live} of {workers} workers up\n"),
        );
    }
    (
        200,
        "text/plain",
        format!("ready: broker reachable, {live} workers up\n"),
    )
}
