//! What the operator's tests share: the CRD installed, QCluster YAML, and
//! pods played by `q8s cluster` processes.

use std::process::Output;

use q8s_testbed::Testbed;

/// A command's output as text: (stdout, stderr).
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Applies the generated CRDs and waits until the apiserver serves them.
pub fn install(bed: &Testbed) {
    let crds = q8s_operator::crds().expect("the CRDs render");
    let output = bed.kubectl(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&crds),
    );
    assert!(
        output.status.success(),
        "the CRD does not install: {:?}",
        text(&output)
    );
    let output = bed.kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "crd/qclusters.q8s.io",
            "crd/qschedules.q8s.io",
            "--timeout=30s",
        ],
        None,
    );
    assert!(output.status.success(), "{:?}", text(&output));
}

/// A QCluster's YAML, its broker URL in the Secret `redis` under `url`, with `options` (indented spec lines).
pub fn qcluster(namespace: &str, name: &str, options: &str) -> String {
    format!(
        "apiVersion: q8s.io/v1alpha1\nkind: QCluster\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  broker:\n    name: redis\n    key: url\n{options}"
    )
}

/// Runs `kubectl` and fails the test unless it succeeds; returns stdout.
pub fn kubectl(bed: &Testbed, args: &[&str], stdin: Option<&str>) -> String {
    let output = bed.kubectl(args, stdin);
    assert!(
        output.status.success(),
        "kubectl {args:?}: {:?}",
        text(&output)
    );
    text(&output).0
}

/// The names of the events in `namespace` with `reason` (empty when there are none).
pub fn events(bed: &Testbed, namespace: &str, reason: &str) -> String {
    kubectl(
        bed,
        &[
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            &format!("reason={reason}"),
            "-o",
            "name",
        ],
        None,
    )
}

/// An operator replica running in this test process.
pub struct Replica {
    /// Its counters and health.
    pub telemetry: std::sync::Arc<q8s_operator::metrics::Telemetry>,
    /// Its name in the election.
    pub identity: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Replica {
    /// Starts a replica reconciling `namespace`'s QClusters, its Lease there too.
    pub fn start(
        client: kube::Client,
        namespace: &str,
        lease_duration: std::time::Duration,
        http: Option<std::net::SocketAddr>,
    ) -> Replica {
        let mut settings = q8s_operator::run::Settings::new(&client, "q8s-worker:test".into());
        settings.namespaces = vec![namespace.into()];
        settings.lease_namespace = namespace.into();
        settings.lease_duration = lease_duration;
        settings.http = http;
        let identity = settings.identity.clone();
        let telemetry = std::sync::Arc::new(q8s_operator::metrics::Telemetry::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let telemetry = telemetry.clone();
            async move {
                let stopped = async {
                    let _ = stopped.await;
                };
                q8s_operator::run::run(client, settings, telemetry, stopped)
                    .await
                    .expect("the operator runs");
            }
        });
        Replica {
            telemetry,
            identity,
            stop: Some(stop),
            task,
        }
    }

    /// Whether it leads now.
    pub fn leads(&self) -> bool {
        self.telemetry.metrics.leader.get() == 1
    }

    /// Stops it as SIGTERM would, and waits until it has given up its Lease.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Ends it at once, as kill -9 would: the Lease is not given up.
    pub fn kill(self) {
        self.task.abort();
        // A dead replica leads nothing, whatever its last gauge said.
        self.telemetry.metrics.leader.set(0);
    }
}

/// The value of an OpenMetrics sample (its name and labels as written), or 0.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A test service's URL from `variable` (`scripts/test` exports it), or `None`
/// when it is not configured and not required; required, its absence fails.
pub fn service_url(variable: &str, what: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                !q8s_testbed::required(),
                "Q8S_TEST_REQUIRE_SERVICES=1 but {variable} ({what}) is not set: run scripts/test"
            );
            eprintln!("skipping: no {what} ({variable} is not set)");
            None
        }
    }
}

/// The reconciler of `namespace`'s QClusters, running in this test process.
pub fn spawn_reconciler(
    client: kube::Client,
    namespace: &str,
    image: &str,
    reapply: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(q8s_operator::reconciler::run(
        client,
        image.into(),
        Some(namespace.into()),
        reapply,
        Default::default(),
    ))
}

/// Applies the Secret `redis` of `namespace` with the broker URL `url` under `url`.
pub fn broker_secret(bed: &Testbed, namespace: &str, url: &str) {
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: redis\n  namespace: {namespace}\nstringData:\n  url: {url}\n"
    );
    kubectl(bed, &["apply", "-f", "-"], Some(&secret));
}

/// A producer for queue `queue` on `broker`, signing with the keys in `key_file`:
/// what any service enqueueing to a QCluster holds.
pub async fn producer(broker: &str, queue: &str, key_file: &std::path::Path) -> q8s::Producer {
    let table: toml::Table = toml::from_str(&format!(
        "broker = {broker:?}\nname = {queue:?}\nsecret_key_file = {:?}\n",
        key_file.display().to_string()
    ))
    .expect("a producer's configuration");
    let config = q8s::Config::from_table(table, "the test").expect("valid");
    q8s::Producer::connect(config).await.expect("a producer")
}

/// The status of the `K` named `name` in `namespace` once `done` holds for it, within `limit`.
pub async fn status_when<K>(
    bed: &Testbed,
    namespace: &str,
    name: &str,
    what: &str,
    limit: std::time::Duration,
    done: impl Fn(&K::Status) -> bool,
) -> K::Status
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + kube::core::object::HasStatus
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::Status: Clone + Default + std::fmt::Debug,
{
    let api = kube::Api::<K>::namespaced(bed.client(), namespace);
    q8s_testbed::eventually_within(what, limit, || async {
        let object = api.get(name).await.map_err(|e| e.to_string())?;
        let status = object.status().cloned().unwrap_or_default();
        done(&status)
            .then_some(status.clone())
            .ok_or(format!("{status:?}"))
    })
    .await
}

/// The chart's folder, `charts/q8s`.
pub fn chart() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/q8s").to_string()
}

/// Runs the test bed's `helm` (`Q8S_TEST_HELM`) with the admin kubeconfig; its output.
pub fn helm(bed: &Testbed, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let program = std::env::var("Q8S_TEST_HELM").expect(
        "Q8S_TEST_HELM is not set: start the test bed (e2e/start-testbed.sh), or run scripts/test",
    );
    let mut child = std::process::Command::new(program)
        .args(args)
        .env("KUBECONFIG", bed.kubeconfig())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("helm runs");
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .expect("helm's input");
    }
    child.wait_with_output().expect("helm's output")
}

/// `helm template` of the chart as `release` in `namespace`, with `extra` arguments; the YAML.
pub fn render_chart(bed: &Testbed, release: &str, namespace: &str, extra: &[&str]) -> String {
    let kube_version = kube_version();
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        &chart,
        "--namespace",
        namespace,
        "--kube-version",
        &kube_version,
    ];
    args.extend_from_slice(extra);
    let output = helm(bed, &args, None);
    assert!(
        output.status.success(),
        "helm {args:?}: {:?}",
        text(&output)
    );
    text(&output).0
}

/// The Kubernetes release the test bed runs (e2e/kube pins it).
pub fn kube_version() -> String {
    let go_mod = include_str!("../../../e2e/kube/go.mod");
    go_mod
        .lines()
        .find_map(|line| line.trim().strip_prefix("k8s.io/kubernetes "))
        .map(|version| version.trim().to_string())
        .expect("e2e/kube/go.mod pins k8s.io/kubernetes")
}

/// A port on 127.0.0.1 that nothing listens on now, for a server the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
