//! A QCluster on the test bed's real node: its pods run the worker image
//! built here, pass their probes, and work the queue of a real Redis on the
//! node's bridge; the status reads them.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use q8s::TaskRequest;
use q8s_operator::QCluster;
use q8s_testbed::{Testbed, eventually_within};

use crate::support::{
    broker_secret, install, kubectl, producer, qcluster, service_url, spawn_reconciler,
};

/// The image the node has: e2e/start-node.sh builds and imports it.
const IMAGE: &str = "q8s-worker:0.1.0";

/// A QCluster `name` with `spec` (indented lines; tolerating the node's taint
/// is added) in a namespace of its own, on the node's Redis, with its
/// reconciler; `None` when the test bed has no node and none is required.
async fn on_the_node(
    bed: &Testbed,
    test: &str,
    name: &str,
    spec: &str,
) -> Option<(String, String, tokio::task::JoinHandle<()>)> {
    let redis = service_url("Q8S_TEST_NODE_REDIS_URL", "node (e2e/start-node.sh)")?;
    install(bed);
    let namespace = bed.namespace(test).await;
    let reconciler = spawn_reconciler(
        bed.client(),
        &namespace,
        IMAGE,
        q8s_operator::reconciler::REAPPLY,
    );
    broker_secret(bed, &namespace, &redis);
    // The node is tainted: only what tolerates it runs there.
    let spec = format!(
        "  name: {namespace}\n{spec}  tolerations:\n  - {{key: q8s.test/node, operator: Exists, effect: NoSchedule}}\n"
    );
    kubectl(
        bed,
        &["apply", "-f", "-"],
        Some(&qcluster(&namespace, name, &spec)),
    );
    Some((namespace, redis, reconciler))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qclusters_pods_run_on_the_node_and_work_its_queue() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let spec = "  replicas: 2\n  workers: 1\n  timeout: 20\n  saveLimit: 0\n";
    let Some((namespace, redis, operator)) =
        on_the_node(&bed, "qcluster-node", "reports", spec).await
    else {
        return;
    };
    let client = bed.client();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace);
    let qclusters = Api::<QCluster>::namespaced(client.clone(), &namespace);
    let pods_ready = std::time::Duration::from_secs(120);
    eventually_within("two pods Running and Ready", pods_ready, || async {
        let ready = deployments
            .get("reports")
            .await
            .map_err(|e| e.to_string())?
            .status
            .and_then(|s| s.ready_replicas);
        (ready == Some(2))
            .then_some(())
            .ok_or(format!("{ready:?} ready"))
    })
    .await;
    let wide = kubectl(&bed, &["get", "pods", "-n", &namespace, "-o", "wide"], None);
    assert!(
        wide.contains("10.244.0."),
        "pods have addresses on the node's bridge:\n{wide}"
    );

    // Enqueue as a service would, with the key the operator made.
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let keys = secrets.get("reports-signing-key").await.expect("the key");
    let folder = tempfile::tempdir().expect("a folder");
    let key_file = folder.path().join("keys");
    std::fs::write(&key_file, &keys.data.expect("data")["keys"].0).expect("write the key");
    let producer = producer(&redis, &namespace, &key_file).await;
    for _ in 0..20 {
        producer
            .enqueue(TaskRequest::new("time.sleep").arg(0.1))
            .await
            .expect("enqueue");
    }
    let status = eventually_within("20 successes from the pods", pods_ready, || async {
        let status = qclusters
            .get("reports")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        let successes = status.totals.as_ref().map_or(0, |t| t.successes);
        (successes == 20 && status.clusters.len() == 2)
            .then_some(status.clone())
            .ok_or(format!("{status:?}"))
    })
    .await;
    for entry in &status.clusters {
        assert_eq!(entry.host.as_deref(), Some("q8s-node"), "{entry:?}");
        assert!(
            entry.pod.starts_with("reports-"),
            "the pod's name: {entry:?}"
        );
    }
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{:?}",
        status.conditions
    );
    kubectl(
        &bed,
        &[
            "delete",
            "qcluster",
            "reports",
            "-n",
            &namespace,
            "--wait=false",
        ],
        None,
    );
    operator.abort();
}

/// The CPU list a process may run on, from `/proc/PID/status`.
fn cpus_allowed(pid: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .map(|cpus| cpus.trim().to_string())
}

/// Every process in a cgroup folder and the folders below it.
fn processes_under(folder: &std::path::Path) -> Vec<String> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir(folder) else {
        return pids;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            pids.extend(processes_under(&path));
        } else if path.file_name().is_some_and(|name| name == "cgroup.procs") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            pids.extend(text.lines().map(str::to_string));
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_qclusters_pod_is_guaranteed_and_its_processes_sit_on_an_exclusive_core() {
    use k8s_openapi::api::core::v1::Pod;
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    // One worker pinned to one core: the operator asks for 1 CPU, requests equal to limits.
    let spec = "  replicas: 1\n  workers: 1\n  cpuAffinity: 1\n  timeout: 20\n";
    let Some((namespace, _, operator)) = on_the_node(&bed, "qcluster-pinned", "pinned", spec).await
    else {
        return;
    };
    let client = bed.client();
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
    let pod = eventually_within(
        "the pinned pod Running and Ready",
        std::time::Duration::from_secs(120),
        || async {
            let list = pods
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .into_iter()
                .find(|pod| {
                    pod.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .flatten()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await;
    let status = pod.status.clone().unwrap_or_default();
    assert_eq!(
        status.qos_class.as_deref(),
        Some("Guaranteed"),
        "{status:?}"
    );
    // A Guaranteed pod's cgroup sits right under kubepods.
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let folder = std::path::PathBuf::from(format!(
        "/sys/fs/cgroup/cpuset/q8s-testbed/kubepods/pod{uid}"
    ));
    // The sandbox's pause process stays in the shared pool (the CPU manager
    // pins containers); the sentinel and its worker sit on the pod's core.
    let cpus: Vec<(String, Option<String>)> = processes_under(&folder)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| !cmd.starts_with(b"/pause"))
        })
        .map(|pid| {
            let cpus = cpus_allowed(&pid);
            (pid, cpus)
        })
        .collect();
    assert!(cpus.len() >= 2, "the sentinel and its worker: {cpus:?}");
    let exclusive = cpus[0].1.clone().expect("a CPU list");
    assert!(
        cpus.iter()
            .all(|(_, list)| list.as_deref() == Some(exclusive.as_str())),
        "{cpus:?}"
    );
    assert!(
        exclusive.parse::<u32>().is_ok(),
        "one whole core, not a range: {exclusive}"
    );
    assert_ne!(exclusive, "0", "CPU 0 is the node's reserved CPU");
    kubectl(
        &bed,
        &[
            "delete",
            "qcluster",
            "pinned",
            "-n",
            &namespace,
            "--wait=false",
        ],
        None,
    );
    operator.abort();
}
