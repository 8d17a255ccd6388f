//! The dashboards against a real Prometheus: it scrapes two clusters (pods
//! played by `q8s cluster` processes, on PostgreSQL) and the operator while a
//! load runs, and every panel's query, as Grafana's typed model reads it from
//! `dashboards/`, returns series. No query names a metric nobody exports.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use q8s::TaskRequest;
use q8s_testbed::{Testbed, eventually, eventually_within};
use serde_json::Value;

use crate::pod::Pod;
use crate::support::{
    Replica, broker_secret, install, kubectl, producer, qcluster, service_url, text,
};

/// A Prometheus of the test's own, on loopback, scraping every second.
struct Prometheus {
    child: Child,
    port: u16,
    _folder: tempfile::TempDir,
}

/// `text` with everything but unreserved characters percent-encoded.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Starts `binary` with one static job per `(job, address, labels, honor_labels)`.
    fn start(binary: &str, jobs: &[(&str, String, String, bool)]) -> Prometheus {
        let folder = tempfile::tempdir().expect("a folder");
        // The alert rules run too, against the same series.
        let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboards/alerts.yaml");
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{rules}']\nscrape_configs:\n"
        );
        for (job, address, labels, honor) in jobs {
            config.push_str(&format!(
                "- job_name: {job}\n  honor_labels: {honor}\n  static_configs:\n  - targets: ['{address}']\n    labels: {labels}\n"
            ));
        }
        let file = folder.path().join("prometheus.yml");
        std::fs::write(&file, config).expect("the configuration");
        let port = crate::support::free_port();
        let log = std::fs::File::create(folder.path().join("prometheus.log")).expect("a log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                folder.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            port,
            _folder: folder,
        }
    }

    /// A GET of `path`; the body. HTTP/1.0, so the answer is not chunked.
    fn get(&self, path: &str) -> Result<String, String> {
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| e.to_string())?;
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .ok_or(format!("no body in {response:?}"))
    }

    /// The series `expr` returns now.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let body = self.get(&format!("/api/v1/query?query={}", encode(expr)))?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if answer["status"] != "success" {
            return Err(format!("{expr}: {body}"));
        }
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._folder.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every panel query of `dashboards/`, as q8s-dashboards reads them through Grafana's typed model.
fn dashboard_queries(check: &str) -> Vec<Value> {
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboards");
    let mut files: Vec<String> = std::fs::read_dir(folder)
        .expect("dashboards/")
        .filter_map(|entry| Some(entry.ok()?.path().display().to_string()))
        .filter(|path| path.ends_with(".json"))
        .collect();
    files.sort();
    let output = Command::new(check)
        .args(&files)
        .output()
        .expect("q8s-dashboards runs");
    assert!(
        output.status.success(),
        "the dashboards are not Grafana's: {:?}",
        text(&output)
    );
    text(&output)
        .0
        .lines()
        .map(|line| serde_json::from_str(line).expect("a query as JSON"))
        .collect()
}

#[test]
fn the_dashboards_load_into_grafanas_typed_model_and_a_bad_field_is_refused() {
    let Some(check) = service_url("Q8S_TEST_DASHBOARDS_CHECK", "q8s-dashboards") else {
        return;
    };
    let queries = dashboard_queries(&check);
    for dashboard in ["q8s operator", "q8s tasks"] {
        assert!(
            queries.iter().any(|query| query["dashboard"] == dashboard),
            "{dashboard}"
        );
    }
    let folder = tempfile::tempdir().expect("a folder");
    let bad = folder.path().join("bad.json");
    let mut dashboard: Value =
        serde_json::from_str(include_str!("../../../dashboards/q8s-tasks.json")).expect("JSON");
    dashboard["panels"][0]["legendFormat"] = "misplaced".into();
    std::fs::write(&bad, dashboard.to_string()).expect("write");
    let output = Command::new(&check)
        .arg(&bad)
        .output()
        .expect("q8s-dashboards runs");
    assert!(!output.status.success());
    assert!(
        text(&output).1.contains("unexpected field 'legendFormat'"),
        "{:?}",
        text(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_series_from_prometheus_scraping_clusters_and_the_operator() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let (Some(postgres), Some(prometheus), Some(check)) = (
        service_url("Q8S_TEST_POSTGRES_URL", "PostgreSQL"),
        service_url("Q8S_TEST_PROMETHEUS", "Prometheus"),
        service_url("Q8S_TEST_DASHBOARDS_CHECK", "q8s-dashboards"),
    ) else {
        return;
    };
    let queries = dashboard_queries(&check);
    install(&bed);
    let namespace = bed.namespace("dashboards").await;
    let client = bed.client();
    let operator_port = crate::support::free_port();
    let operator = Replica::start(
        client.clone(),
        &namespace,
        Duration::from_secs(15),
        Some(std::net::SocketAddr::from(([127, 0, 0, 1], operator_port))),
    );
    broker_secret(&bed, &namespace, &postgres);
    // PostgreSQL is shared by the test run: the queue is named after the namespace.
    let spec = format!("  name: {namespace}\n  replicas: 2\n  workers: 2\n  timeout: 20\n");
    kubectl(
        &bed,
        &["apply", "-f", "-"],
        Some(&qcluster(&namespace, "reports", &spec)),
    );
    let pods = Pod::start_of(&client, &namespace, "reports", 2).await;

    let labels = |pod: &str| format!("{{namespace: {namespace}, pod: {pod}}}");
    let server = Prometheus::start(
        &prometheus,
        &[
            (
                "q8s-workers-0",
                format!("127.0.0.1:{}", pods[0].port),
                labels("reports-0"),
                false,
            ),
            (
                "q8s-workers-1",
                format!("127.0.0.1:{}", pods[1].port),
                labels("reports-1"),
                false,
            ),
            // The operator's per-QCluster series carry their own namespace.
            (
                "q8s-operator",
                format!("127.0.0.1:{operator_port}"),
                "{namespace: q8s-system}".into(),
                true,
            ),
        ],
    );
    eventually("Prometheus ready", || async { server.get("/-/ready") }).await;

    // A load with every outcome: successes, failures, timeouts, and a
    // package signed with another key, which is rejected and never runs.
    let keys = pods[0].folder(q8s_operator::build::KEY_DIR).join("keys");
    let queue = producer(&postgres, &namespace, &keys).await;
    let folder = tempfile::tempdir().expect("a folder");
    let stranger = folder.path().join("other-keys");
    std::fs::write(&stranger, "not the cluster's key\n").expect("write");
    let intruder = producer(&postgres, &namespace, &stranger).await;
    intruder
        .enqueue(TaskRequest::new("q8s.echo").arg("forged"))
        .await
        .expect("enqueue");
    for round in 0..4 {
        for n in 0..10 {
            queue
                .enqueue(TaskRequest::new("q8s.echo").arg(n))
                .await
                .expect("enqueue");
        }
        queue
            .enqueue(TaskRequest::new("q8s.fail").arg("on purpose"))
            .await
            .expect("enqueue");
        queue
            .enqueue(TaskRequest::new("time.sleep").arg(3).timeout(1))
            .await
            .expect("enqueue");
        if round < 3 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    // Every query of every panel returns series, its variables set to this
    // namespace and queue (the queue is named after the namespace), so a
    // label a query filters on that the series do not carry fails it.
    for query in &queries {
        let expr = query["expr"]
            .as_str()
            .unwrap_or_default()
            .replace("$namespace", &namespace)
            .replace("$cluster", &namespace);
        eventually_within(
            &format!("{} / {}: {expr}", query["dashboard"], query["panel"]),
            Duration::from_secs(60),
            || async {
                let series = server.query(&expr)?;
                (!series.is_empty()).then_some(()).ok_or(format!(
                    "no series; Prometheus:\n{}",
                    server
                        .log()
                        .lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .join("\n")
                ))
            },
        )
        .await;
    }
    // Every alert rule evaluates without error on them.
    eventually("every rule evaluated", || async {
        let body = server.get("/api/v1/rules")?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let rules: Vec<&Value> = answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().into_iter().flatten())
            .collect();
        let unwell: Vec<String> = rules
            .iter()
            .filter(|rule| rule["health"] != "ok")
            .map(|rule| format!("{}: {} {}", rule["name"], rule["health"], rule["lastError"]))
            .collect();
        (rules.len() >= 8 && unwell.is_empty())
            .then_some(())
            .ok_or(format!("{} rules, unwell: {unwell:?}", rules.len()))
    })
    .await;
    // And the queries ask for what the clusters and the operator export:
    // each metric a query names is one Prometheus scraped.
    let names = server
        .get("/api/v1/label/__name__/values")
        .expect("the metric names");
    for query in &queries {
        let expr = query["expr"].as_str().unwrap_or_default();
        for word in expr.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if word.starts_with("q8s_") {
                assert!(
                    names.contains(&format!("\"{word}\"")),
                    "{word} in {expr}: nobody exports it"
                );
            }
        }
    }
    drop(server);
    drop(pods);
    operator.stop().await;
}
