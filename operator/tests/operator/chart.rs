//! The Helm chart as a platform engineer meets it: `helm lint`, values the
//! schema refuses by name, every rendered object through the apiserver's
//! dry run under the restricted Pod Security level, the plain manifests
//! rendered from it, and a real install on the node: the operator from its
//! image under its own ServiceAccount, the example QCluster Ready on its own
//! Redis, tasks from outside and their results, an upgrade, an uninstall.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::ListParams;
use q8s_testbed::{Testbed, eventually, eventually_within};
use serde_json::{Value, json};

use crate::support::{
    chart, helm, install, kube_version, kubectl, producer, render_chart, service_url, text,
};

/// The toleration of the node's taint, for every pod the chart makes.
const TOLERATE_THE_NODE: &str = "[{key: q8s.test/node, operator: Exists, effect: NoSchedule}]";

/// A namespace where the restricted Pod Security level is enforced.
async fn restricted_namespace(bed: &Testbed, test: &str) -> String {
    let namespace = bed.namespace(test).await;
    kubectl(
        bed,
        &[
            "label",
            "namespace",
            &namespace,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        ],
        None,
    );
    namespace
}

/// Installs the Prometheus Operator's ServiceMonitor and PrometheusRule CRDs
/// (from its Go module, by e2e/build-testbed.sh) and waits until they are served.
fn install_monitoring_crds(bed: &Testbed) {
    let folder = std::env::var("Q8S_TEST_MONITORING_CRDS")
        .expect("Q8S_TEST_MONITORING_CRDS: the Prometheus Operator's CRDs");
    kubectl(
        bed,
        &["apply", "--server-side", "--force-conflicts", "-f", &folder],
        None,
    );
    kubectl(
        bed,
        &[
            "wait",
            "--for=condition=Established",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
            "--timeout=30s",
        ],
        None,
    );
}

/// The objects of a rendered chart.
fn objects(rendered: &str) -> Vec<Value> {
    rendered
        .split("\n---")
        .filter_map(|document| serde_yaml_ng::from_str::<Value>(document).ok())
        .filter(|object| object.is_object())
        .collect()
}

/// The objects of `kind` in a rendered chart.
fn of_kind(rendered: &str, kind: &str) -> Vec<Value> {
    objects(rendered)
        .into_iter()
        .filter(|object| object["kind"] == kind)
        .collect()
}

/// Writes `yaml` to a values file in `folder`; its path.
fn values_file(folder: &tempfile::TempDir, name: &str, yaml: &str) -> String {
    let path = folder.path().join(name);
    std::fs::write(&path, yaml).expect("write the values");
    path.display().to_string()
}

#[tokio::test]
async fn the_committed_install_manifests_are_the_rendered_chart() {
    let Some(_bed) = Testbed::connect().await else {
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/render-manifests");
    let output = std::process::Command::new(script)
        .output()
        .expect("scripts/render-manifests runs");
    assert!(output.status.success(), "{:?}", text(&output));
    let rendered = text(&output).0;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/install.yaml");
    if std::env::var_os("Q8S_BLESS").is_some() {
        std::fs::write(path, &rendered).expect("write manifests/install.yaml");
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == rendered,
        "manifests/install.yaml drifted from charts/q8s: run scripts/render-manifests > manifests/install.yaml"
    );
}

#[tokio::test]
async fn helm_lint_is_clean_and_bad_values_are_refused_naming_the_key() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let version = kube_version();
    let lint = helm(
        &bed,
        &["lint", "--strict", &chart(), "--kube-version", &version],
        None,
    );
    assert!(lint.status.success(), "{:?}", text(&lint));
    assert!(
        text(&lint).0.contains("0 chart(s) failed"),
        "{:?}",
        text(&lint)
    );

    let namespace = bed.namespace("chart-values").await;
    let folder = tempfile::tempdir().expect("a folder");
    for (name, yaml, expected) in [
        (
            "typo.yaml",
            "replica: 2\n",
            "additional properties 'replica' not allowed",
        ),
        (
            "nested-typo.yaml",
            "metrics:\n  prot: 9000\n",
            "additional properties 'prot' not allowed",
        ),
        ("bad-type.yaml", "replicas: two\n", "/replicas"),
        (
            "bad-namespace.yaml",
            "watchNamespaces: [Jobs]\n",
            "/watchNamespaces/0",
        ),
    ] {
        let file = values_file(&folder, name, yaml);
        let refused = helm(
            &bed,
            &["install", "q8s", &chart(), "-n", &namespace, "-f", &file],
            None,
        );
        let (_, stderr) = text(&refused);
        assert!(!refused.status.success(), "{name} was accepted");
        assert!(
            stderr.contains("values don't meet the specifications of the schema")
                && stderr.contains(expected),
            "{name}: {stderr}"
        );
    }
    // The example goes into the release's namespace, which must be watched.
    let file = values_file(
        &folder,
        "unwatched-example.yaml",
        "examples: {enabled: true}\nwatchNamespaces: [elsewhere]\n",
    );
    let refused = helm(
        &bed,
        &["install", "q8s", &chart(), "-n", &namespace, "-f", &file],
        None,
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused)
            .1
            .contains("which watchNamespaces leaves out"),
        "{:?}",
        text(&refused)
    );
    // Nothing was installed by the refused attempts.
    let releases = helm(&bed, &["list", "-n", &namespace, "-q"], None);
    assert_eq!(text(&releases).0.trim(), "", "{:?}", text(&releases));
}

/// Each Deployment's pod template of `rendered`, as a Pod of its own.
fn pods_of(rendered: &str) -> Vec<Value> {
    of_kind(rendered, "Deployment")
        .into_iter()
        .map(|deployment| {
            let name = deployment["metadata"]["name"].as_str().unwrap_or("pod");
            let mut spec = deployment["spec"]["template"]["spec"].clone();
            // A dry run creates no ServiceAccount, and a pod's must exist.
            if let Some(spec) = spec.as_object_mut() {
                spec.remove("serviceAccountName");
            }
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": format!("{name}-template")},
                "spec": spec,
            })
        })
        .collect()
}

#[tokio::test]
async fn every_rendered_object_passes_the_apiservers_dry_run_under_restricted_pod_security() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    install(&bed);
    let namespace = restricted_namespace(&bed, "chart-dry-run").await;
    let scoped = format!("watchNamespaces={{{namespace}}}");
    for extra in [
        vec!["--set", "examples.enabled=true", "--set", "replicas=2"],
        vec!["--set", scoped.as_str()],
    ] {
        let rendered = render_chart(&bed, &format!("r-{namespace}"), &namespace, &extra);
        let applied = bed.kubectl(
            &["apply", "--dry-run=server", "-n", &namespace, "-f", "-"],
            Some(&rendered),
        );
        let (stdout, stderr) = text(&applied);
        assert!(applied.status.success(), "{extra:?}: {stderr}");
        assert!(
            !stderr.contains("violate PodSecurity"),
            "{extra:?}: {stderr}"
        );
        assert!(stdout.contains("(server dry run)"), "{stdout}");
        // The level is enforced on pods: each template as a Pod passes it too.
        for pod in pods_of(&rendered) {
            let output = bed.kubectl(
                &["apply", "--dry-run=server", "-n", &namespace, "-f", "-"],
                Some(&pod.to_string()),
            );
            assert!(output.status.success(), "{pod}: {:?}", text(&output));
        }
    }
    // The example resources of manifests/examples, with their Secrets.
    for example in ["redis", "postgres", "sqs"] {
        let path = format!(
            "{}/../manifests/examples/{example}.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let output = bed.kubectl(
            &["apply", "--dry-run=server", "-n", &namespace, "-f", &path],
            None,
        );
        assert!(output.status.success(), "{example}: {:?}", text(&output));
    }
}

#[tokio::test]
async fn the_chart_makes_monitors_alert_rules_and_dashboards_where_they_have_a_home() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let namespace = restricted_namespace(&bed, "chart-monitoring").await;
    let release = format!("r-{namespace}");
    let monitoring = [
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
    ];

    // Without the Prometheus Operator's CRDs: no objects of theirs, and the
    // dashboards, which need nothing but a ConfigMap.
    let plain = render_chart(&bed, &release, &namespace, &[]);
    assert!(of_kind(&plain, "ServiceMonitor").is_empty());
    assert!(of_kind(&plain, "PrometheusRule").is_empty());
    let dashboards: Vec<Value> = of_kind(&plain, "ConfigMap")
        .into_iter()
        .filter(|map| map["metadata"]["labels"]["grafana_dashboard"] == "1")
        .collect();
    let committed: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboards"))
            .expect("dashboards/")
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".json"))
            .collect();
    assert_eq!(dashboards.len(), committed.len(), "{dashboards:?}");
    for map in &dashboards {
        let (file, text) = map["data"]
            .as_object()
            .and_then(|data| data.iter().next())
            .expect("one dashboard per ConfigMap");
        let dashboard: Value =
            serde_json::from_str(text.as_str().unwrap_or_default()).expect("dashboard JSON");
        assert!(committed.contains(file), "{file}");
        assert!(dashboard["title"].is_string() && dashboard["panels"].is_array());
    }

    // With them: a ServiceMonitor for the operator and one for every
    // QCluster's pods, and the alert rules of dashboards/alerts.yaml.
    let full = render_chart(&bed, &release, &namespace, &monitoring);
    let monitors = of_kind(&full, "ServiceMonitor");
    assert_eq!(monitors.len(), 2, "{monitors:?}");
    assert!(monitors.iter().any(|monitor| {
        monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/managed-by"] == "q8s-operator"
            && monitor["spec"]["endpoints"][0]["port"] == "http"
    }));
    let rules = of_kind(&full, "PrometheusRule");
    let alerts: Value = serde_yaml_ng::from_str(include_str!("../../../dashboards/alerts.yaml"))
        .expect("dashboards/alerts.yaml");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["spec"]["groups"], alerts["groups"]);
    // Each of them as the real CRDs' schemas take it.
    install(&bed);
    install_monitoring_crds(&bed);
    let applied = bed.kubectl(
        &["apply", "--dry-run=server", "-n", &namespace, "-f", "-"],
        Some(&full),
    );
    assert!(applied.status.success(), "{:?}", text(&applied));
    assert!(
        text(&applied)
            .0
            .contains("prometheusrule.monitoring.coreos.com/"),
        "{:?}",
        text(&applied)
    );

    // Each can be turned off.
    let off = render_chart(
        &bed,
        &release,
        &namespace,
        &[
            &monitoring[..],
            &[
                "--set",
                "metrics.serviceMonitor.enabled=false",
                "--set",
                "prometheusRule.enabled=false",
                "--set",
                "dashboards.enabled=false",
            ],
        ]
        .concat(),
    );
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert!(of_kind(&off, kind).is_empty(), "{kind}");
    }
    assert!(
        !off.contains("grafana_dashboard"),
        "a dashboard is still there"
    );
}

#[test]
fn the_alert_rules_pass_promtool_and_each_fires_only_when_it_should() {
    let Some(promtool) = service_url("Q8S_TEST_PROMTOOL", "promtool") else {
        return;
    };
    let dashboards = concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboards");
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ] {
        let output = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(dashboards)
            .output()
            .expect("promtool runs");
        assert!(
            output.status.success(),
            "promtool {args:?}: {:?}",
            text(&output)
        );
    }
}

/// The IP of the one pod in `namespace` matching `selector`, once it runs.
async fn pod_ip(bed: &Testbed, namespace: &str, selector: &str) -> String {
    let pods = Api::<Pod>::namespaced(bed.client(), namespace);
    eventually("the pod's address", || async {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .iter()
            .find_map(|pod| pod.status.as_ref()?.pod_ip.clone())
            .ok_or(format!("no running pod for {selector}"))
    })
    .await
}

/// A Secret's entry as text.
async fn secret_entry(bed: &Testbed, namespace: &str, name: &str, key: &str) -> String {
    let secret = Api::<Secret>::namespaced(bed.client(), namespace)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("the Secret {name}: {e}"));
    let data = secret.data.unwrap_or_default();
    String::from_utf8_lossy(&data[key].0).into_owned()
}

/// Enqueues `q8s.echo` of each of `values` on the example's queue, from
/// outside the cluster, its results kept in the Redis (cached), and reads
/// each back from there.
async fn echo_from_outside(broker: &str, keys: &std::path::Path, values: &[i64]) {
    let producer = producer(broker, "example", keys).await;
    let cached = q8s::task::Cached::Seconds(600);
    let mut ids = Vec::new();
    for value in values {
        ids.push(
            producer
                .enqueue(q8s::TaskRequest::new("q8s.echo").arg(*value).cached(cached))
                .await
                .expect("enqueue"),
        );
    }
    let table: toml::Table = toml::from_str(&format!(
        "broker = {broker:?}\nname = \"example\"\ncached = true\n"
    ))
    .expect("a reader's configuration");
    let config = q8s::Config::from_table(table, "the test").expect("valid");
    let cache = q8s::broker::result_cache(&config)
        .await
        .expect("the Redis")
        .expect("Redis keeps a result cache");
    for (id, value) in ids.iter().zip(values) {
        let record = eventually_within("the result", Duration::from_secs(60), || async {
            cache
                .cached_result(id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or(format!("no result for {id} yet"))
        })
        .await;
        let record: Value = serde_json::from_str(&record).expect("a task record");
        assert_eq!(record["result"], json!(value), "{record}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_upgrades_and_uninstalls_the_operator_with_the_example_running_tasks() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let Some(redis_image) = service_url("Q8S_TEST_NODE_REDIS_IMAGE", "the node's Redis image")
    else {
        return;
    };
    install(&bed);
    // The install finds the Prometheus Operator's CRDs, as a cluster with it has them.
    install_monitoring_crds(&bed);
    let namespace = restricted_namespace(&bed, "chart-install").await;
    // The release is named after the namespace: its ClusterRole is its own.
    let release = namespace.clone();
    let operator = format!("{release}-operator");
    let folder = tempfile::tempdir().expect("a folder");
    let values = values_file(
        &folder,
        "values.yaml",
        &format!(
            "image: {{pullPolicy: Never}}\ntolerations: {TOLERATE_THE_NODE}\nexamples:\n  enabled: true\n  redis: {{image: {redis_image}, pullPolicy: Never}}\n  qcluster: {{tolerations: {TOLERATE_THE_NODE}}}\n"
        ),
    );
    let installed = helm(
        &bed,
        &[
            "install",
            &release,
            &chart(),
            "-n",
            &namespace,
            "-f",
            &values,
            "--wait",
            "--timeout",
            "180s",
        ],
        None,
    );
    let (notes, stderr) = text(&installed);
    assert!(installed.status.success(), "helm install: {stderr}");
    assert!(
        notes.contains(&format!(
            "kubectl -n {namespace} wait --for=condition=Ready qcluster/example"
        )),
        "{notes}"
    );
    assert!(
        notes.contains("helm uninstall removes the operator and everything this chart made"),
        "the notes do not say what an uninstall keeps: {notes}"
    );

    // The operator runs from its image, as its own ServiceAccount, not as root.
    let selector =
        format!("app.kubernetes.io/name=q8s-operator,app.kubernetes.io/instance={release}");
    let pods = Api::<Pod>::namespaced(bed.client(), &namespace);
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("the operator's pods");
    let [pod] = listed.items.as_slice() else {
        panic!("{} operator pods", listed.items.len());
    };
    let spec = pod.spec.clone().unwrap_or_default();
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some(operator.as_str())
    );
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some(concat!("q8s-operator:", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(
        spec.security_context.and_then(|s| s.run_as_user),
        Some(65532)
    );
    let first_pod = pod.metadata.name.clone().unwrap_or_default();
    let monitors = kubectl(
        &bed,
        &[
            "get",
            "servicemonitors,prometheusrules",
            "-n",
            &namespace,
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(monitors.lines().count(), 3, "{monitors}");

    kubectl(
        &bed,
        &[
            "wait",
            "-n",
            &namespace,
            "--for=condition=Ready",
            "qcluster/example",
            "--timeout=180s",
        ],
        None,
    );
    // From outside: the Redis's pod address, its password and the signing key
    // from their Secrets, as a service enqueueing to this QCluster has them.
    let redis_ip = pod_ip(&bed, &namespace, "app.kubernetes.io/name=example-redis").await;
    let password = secret_entry(&bed, &namespace, "example-redis", "password").await;
    let broker = format!("redis://:{password}@{redis_ip}:6379/0");
    let keys = secret_entry(&bed, &namespace, "example-signing-key", "keys").await;
    let key_file = folder.path().join("keys");
    std::fs::write(&key_file, &keys).expect("write the keys");
    echo_from_outside(&broker, &key_file, &[1, 2, 3, 4, 5]).await;

    // An upgrade to a changed value rolls the operator; the QCluster keeps its
    // workers, its key and its broker's password, and goes on working.
    let workers = Api::<Deployment>::namespaced(bed.client(), &namespace);
    let worker_uid = workers
        .get("example")
        .await
        .expect("the workers")
        .metadata
        .uid;
    let upgraded = helm(
        &bed,
        &[
            "upgrade",
            &release,
            &chart(),
            "-n",
            &namespace,
            "-f",
            &values,
            "--set",
            "logLevel=debug",
            "--wait",
            "--timeout",
            "180s",
        ],
        None,
    );
    assert!(
        upgraded.status.success(),
        "helm upgrade: {:?}",
        text(&upgraded)
    );
    eventually("a new operator pod, the old one gone", || async {
        let names: Vec<String> = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter_map(|pod| pod.metadata.name)
            .collect();
        (names.len() == 1 && names[0] != first_pod)
            .then_some(())
            .ok_or(format!("{names:?}"))
    })
    .await;
    let after = workers.get("example").await.expect("the workers");
    assert_eq!(after.metadata.uid, worker_uid, "the workers were made anew");
    assert_eq!(
        secret_entry(&bed, &namespace, "example-signing-key", "keys").await,
        keys
    );
    assert_eq!(
        secret_entry(&bed, &namespace, "example-redis", "password").await,
        password
    );
    let redis_ip = pod_ip(&bed, &namespace, "app.kubernetes.io/name=example-redis").await;
    let broker = format!("redis://:{password}@{redis_ip}:6379/0");
    echo_from_outside(&broker, &key_file, &[6, 7, 8]).await;

    // Uninstalled: nothing of the chart's or the operator's is left, but the CRDs.
    let uninstalled = helm(
        &bed,
        &[
            "uninstall",
            &release,
            "-n",
            &namespace,
            "--wait",
            "--timeout",
            "120s",
        ],
        None,
    );
    assert!(
        uninstalled.status.success(),
        "helm uninstall: {:?}",
        text(&uninstalled)
    );
    let kinds = "deployments,replicasets,pods,services,configmaps,secrets,serviceaccounts,roles,rolebindings,leases,poddisruptionbudgets,servicemonitors,prometheusrules,qclusters,qschedules";
    eventually_within("nothing left behind", Duration::from_secs(90), || async {
        let mut left = Vec::new();
        for selector in [
            format!("app.kubernetes.io/instance={release}"),
            "app.kubernetes.io/managed-by=q8s-operator".to_string(),
            "app.kubernetes.io/instance=example".to_string(),
        ] {
            let output = bed.kubectl(
                &[
                    "get", kinds, "-n", &namespace, "-l", &selector, "-o", "name",
                ],
                None,
            );
            left.extend(text(&output).0.lines().map(String::from));
        }
        let cluster_wide = bed.kubectl(
            &["get", "clusterroles,clusterrolebindings", "-o", "name"],
            None,
        );
        left.extend(
            text(&cluster_wide)
                .0
                .lines()
                .filter(|name| name.ends_with(&format!("/{operator}")))
                .map(String::from),
        );
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    })
    .await;
    let crds = kubectl(
        &bed,
        &[
            "get",
            "crd",
            "qclusters.q8s.io",
            "qschedules.q8s.io",
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(crds.lines().count(), 2, "{crds}");
}
