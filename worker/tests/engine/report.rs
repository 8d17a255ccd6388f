//! Error reporting to Sentry: a cluster with a DSN sends each failed task and
//! each package it rejects to Sentry's ingest endpoint, here one on loopback;
//! what arrives is decoded with Sentry's own envelope types.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use q8s::TaskRequest;

use crate::cluster::{ClusterProcess, q8s_binary};
use crate::support::{client, sqlite};

/// A Sentry ingest endpoint on 127.0.0.1: its port, and each envelope POSTed to
/// it with the path it came to, decoded by `sentry::Envelope::from_slice`.
fn sentry_endpoint() -> (u16, mpsc::Receiver<(String, sentry::Envelope)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("an address").port();
    let (sender, envelopes) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let sender = sender.clone();
            // A connection of its own: Sentry's client keeps it alive and sends
            // the next envelope on it, as it does to Sentry itself.
            std::thread::spawn(move || serve_envelopes(stream, &sender));
        }
    });
    (port, envelopes)
}

/// Answers each envelope POSTed on `stream`, one after another until the client
/// closes it, and sends it on decoded with the path it came to.
fn serve_envelopes(
    mut stream: std::net::TcpStream,
    sender: &mpsc::Sender<(String, sentry::Envelope)>,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("a stream"));
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let path = request
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let (mut length, mut gzip) = (0usize, false);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
            gzip |= lower.starts_with("content-encoding:") && lower.contains("gzip");
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if gzip {
            let mut plain = Vec::new();
            let _ = flate2::read::GzDecoder::new(body.as_slice()).read_to_end(&mut plain);
            body = plain;
        }
        let answered = stream.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        );
        if let Ok(envelope) = sentry::Envelope::from_slice(&body) {
            let _ = sender.send((path, envelope));
        }
        if answered.is_err() {
            return;
        }
    }
}

/// The events that arrive within `within`, with the paths they came to.
fn events_within(
    envelopes: &mpsc::Receiver<(String, sentry::Envelope)>,
    wanted: usize,
    within: Duration,
) -> Vec<(String, sentry::protocol::Event<'static>)> {
    let deadline = std::time::Instant::now() + within;
    let mut events = Vec::new();
    while events.len() < wanted {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok((path, envelope)) = envelopes.recv_timeout(left) else {
            break;
        };
        if let Some(event) = envelope.event() {
            events.push((path, event.clone()));
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tasks_and_rejected_packages_reach_sentry_as_its_own_envelopes() {
    let (port, envelopes) = sentry_endpoint();
    let dsn = format!("http://public@127.0.0.1:{port}/42");
    let reporter = format!("error_reporter={{ sentry = {{ dsn = \"{dsn}\" }} }}");
    let db = sqlite();
    let cluster = ClusterProcess::start(&q8s_binary(), &db, &[reporter.as_str(), "label=Reported"]);
    let producer = client(&db, &[]).await;
    producer
        .enqueue(TaskRequest::new("q8s.fail").arg("the printer is on fire"))
        .await
        .expect("enqueue");
    producer
        .enqueue(TaskRequest::new("q8s.echo").arg("fine"))
        .await
        .expect("enqueue");
    // Signed with another key: the cluster rejects it and never runs it.
    let stranger = client(&db, &["secret_key=not the cluster's key"]).await;
    stranger
        .enqueue(TaskRequest::new("q8s.echo").arg("forged"))
        .await
        .expect("enqueue");

    let events = events_within(&envelopes, 2, Duration::from_secs(30));
    let failure = events
        .iter()
        .find(|(_, event)| event.tags.get("func").map(String::as_str) == Some("q8s.fail"))
        .unwrap_or_else(|| panic!("no failure reported: {events:?}"));
    let (path, event) = failure;
    assert_eq!(path, "/api/42/envelope/", "the DSN's project");
    let message = event.message.clone().unwrap_or_default();
    assert!(
        message.contains("q8s.fail failed (failed): the printer is on fire"),
        "{message}"
    );
    assert_eq!(event.level, sentry::Level::Error);
    assert_eq!(
        event.tags.get("error_kind").map(String::as_str),
        Some("failed")
    );
    assert_eq!(
        event.tags.get("cluster").map(String::as_str),
        Some("default")
    );
    assert!(event.extra.contains_key("task_id"));
    assert!(
        event
            .release
            .as_deref()
            .is_some_and(|release| release.starts_with("q8s@"))
    );
    let rejected = events
        .iter()
        .find(|(_, event)| event.tags.get("error").map(String::as_str) == Some("rejected_package"))
        .unwrap_or_else(|| panic!("no rejected package reported: {events:?}"));
    assert!(
        rejected
            .1
            .message
            .as_deref()
            .is_some_and(|m| m.contains("bad_signature")),
        "{:?}",
        rejected.1
    );
    assert_eq!(
        event
            .fingerprint
            .iter()
            .map(|part| part.to_string())
            .collect::<Vec<_>>(),
        ["q8s.fail", "failed"],
        "one Sentry issue per function and kind"
    );
    assert!(
        !event.extra.contains_key("args"),
        "arguments stay out of Sentry"
    );
    // Nothing else arrives: the success was not reported.
    let more = events_within(&envelopes, 1, Duration::from_secs(2));
    assert!(more.is_empty(), "{more:?}");
    cluster.stop();
}

#[test]
fn a_dsn_that_is_no_dsn_stops_the_cluster_before_it_touches_the_store_naming_the_option() {
    let db = sqlite();
    let output = std::process::Command::new(q8s_binary())
        .args(
            crate::support::flags(&db, &[])
                .iter()
                .flat_map(|flag| ["--set".to_string(), flag.clone()]),
        )
        .args([
            "--set",
            "error_reporter={ sentry = { dsn = \"nowhere\" } }",
            "cluster",
        ])
        .output()
        .expect("q8s runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error_reporter.sentry.dsn"), "{stderr}");
    // Refused before the migrations: the database was never created.
    let file = db.url.trim_start_matches("sqlite://");
    assert!(!std::path::Path::new(file).exists(), "{file} was created");
}
