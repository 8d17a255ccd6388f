//! A QCluster on the test bed's real node: its pods run the worker image
//! built here, pass their probes, and work the queue of a real Redis on the
//! node's bridge; the status reads them.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use q8s::TaskRequest;
use q8s_operator::QCluster;
use q8s_testbed::{Testbed, eventually_within};

use crate::support::{
    broker_secret, events, install, kubectl, producer, qcluster, service_url, spawn_reconciler,
    status_when,
};

/// The image the node has: e2e/start-node.sh builds and imports it.
const IMAGE: &str = concat!("q8s-worker:", env!("CARGO_PKG_VERSION"));

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
    ready_replicas(&bed, &namespace, "reports", 2).await;
    let wide = kubectl(&bed, &["get", "pods", "-n", &namespace, "-o", "wide"], None);
    assert!(
        wide.contains("10.244.0."),
        "pods have addresses on the node's bridge:\n{wide}"
    );

    // Enqueue as a service would, with the key the operator made.
    let (_keys, producer) = producer_of(&bed, &namespace, "reports", &redis).await;
    for _ in 0..20 {
        producer
            .enqueue(TaskRequest::new("time.sleep").arg(0.1))
            .await
            .expect("enqueue");
    }
    let status = status_when::<QCluster>(
        &bed,
        &namespace,
        "reports",
        "20 successes from the pods",
        PODS_READY,
        |s| s.totals.as_ref().is_some_and(|t| t.successes == 20) && s.clusters.len() == 2,
    )
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
    // The apiserver reaches the kubelet for logs.
    let pod = &status.clusters[0].pod;
    let logs = kubectl(&bed, &["logs", "-n", &namespace, pod], None);
    assert!(logs.contains("running."), "the sentinel's log:\n{logs}");
    delete_qcluster(&bed, &namespace, "reports");
    operator.abort();
}

/// How long a status may take to say what a test waits for.
const STATUS_LIMIT: Duration = Duration::from_secs(90);

/// How long pods may take to start and pass their probes.
const PODS_READY: Duration = Duration::from_secs(120);

/// Waits until Deployment `name` has `count` ready replicas.
async fn ready_replicas(bed: &Testbed, namespace: &str, name: &str, count: i32) {
    let deployments = Api::<Deployment>::namespaced(bed.client(), namespace);
    eventually_within(
        &format!("{count} pods Running and Ready"),
        PODS_READY,
        || async {
            let ready = deployments
                .get(name)
                .await
                .map_err(|e| e.to_string())?
                .status
                .and_then(|s| s.ready_replicas);
            (ready == Some(count))
                .then_some(())
                .ok_or(format!("{ready:?} ready"))
        },
    )
    .await;
}

/// A producer for QCluster `name`'s queue, signing with the key the operator
/// made (kept in the returned folder).
async fn producer_of(
    bed: &Testbed,
    namespace: &str,
    name: &str,
    redis: &str,
) -> (tempfile::TempDir, q8s::Producer) {
    let secrets = Api::<Secret>::namespaced(bed.client(), namespace);
    let keys = secrets
        .get(&format!("{name}-signing-key"))
        .await
        .expect("the key");
    let folder = tempfile::tempdir().expect("a folder");
    let key_file = folder.path().join("keys");
    std::fs::write(&key_file, &keys.data.expect("data")["keys"].0).expect("write the key");
    let producer = producer(redis, namespace, &key_file).await;
    (folder, producer)
}

fn delete_qcluster(bed: &Testbed, namespace: &str, name: &str) {
    kubectl(
        bed,
        &["delete", "qcluster", name, "-n", namespace, "--wait=false"],
        None,
    );
}

/// An HTTP endpoint on the node's bridge that `http.request` tasks call: it
/// notes every run of every task (its number and the pod it came from) as
/// it arrives, so a task run twice is seen even when its result is not.
struct Runs {
    url: String,
    log: Arc<Mutex<Vec<(u64, IpAddr)>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Runs {
    /// Listens on the bridge address of the node's Redis URL.
    async fn start(redis: &str) -> Runs {
        let host = redis
            .rsplit_once('@')
            .and_then(|(_, at)| at.split(':').next())
            .expect("the node's bridge address in its Redis URL");
        let listener = tokio::net::TcpListener::bind((host, 0))
            .await
            .expect("a port on the bridge");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let log: Arc<Mutex<Vec<(u64, IpAddr)>>> = Arc::default();
        let noted = log.clone();
        // The task holds its worker for `hold` milliseconds, as real work would.
        let app =
            axum::Router::new().route(
                "/run/{n}/{hold}",
                axum::routing::get(
                    move |axum::extract::Path((n, hold)): axum::extract::Path<(u64, u64)>,
                          axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<
                        SocketAddr,
                    >| {
                        let noted = noted.clone();
                        async move {
                            noted.lock().expect("the log").push((n, peer.ip()));
                            tokio::time::sleep(Duration::from_millis(hold)).await;
                            "ok"
                        }
                    },
                ),
            );
        let server = tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, service).await.expect("the endpoint");
        });
        Runs { url, log, server }
    }

    /// The `http.request` task that is run number `n` and takes `hold` ms.
    fn task(&self, n: u64, hold: u64) -> TaskRequest {
        TaskRequest::new("http.request").arg(format!("{}/run/{n}/{hold}", self.url))
    }

    /// The pods task `n` ran on, once per run.
    fn of(&self, n: u64) -> Vec<IpAddr> {
        let log = self.log.lock().expect("the log");
        log.iter()
            .filter(|(m, _)| *m == n)
            .map(|(_, ip)| *ip)
            .collect()
    }

    /// How many runs there were, and on how many pods.
    fn count(&self) -> (usize, usize) {
        let log = self.log.lock().expect("the log");
        let pods: HashSet<IpAddr> = log.iter().map(|(_, ip)| *ip).collect();
        (log.len(), pods.len())
    }
}

impl Drop for Runs {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Waits until the broker holds nothing for `producer`'s queue, waiting or in flight.
async fn queue_drained(producer: &q8s::Producer, limit: Duration) {
    eventually_within("the queue empty, nothing in flight", limit, || async {
        let broker = producer.broker();
        let waiting = broker.queue_size().await.map_err(|e| e.to_string())?;
        let held = broker.lock_size().await.map_err(|e| e.to_string())?;
        (waiting == 0 && held == 0)
            .then_some(())
            .ok_or(format!("{waiting} waiting, {held} in flight"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_no_task_and_runs_none_twice() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let spec = "  replicas: 2\n  workers: 2\n  timeout: 30\n  saveLimit: 0\n";
    let Some((namespace, redis, operator)) =
        on_the_node(&bed, "qcluster-rollout", "mailer", spec).await
    else {
        return;
    };
    ready_replicas(&bed, &namespace, "mailer", 2).await;
    let (_keys, producer) = producer_of(&bed, &namespace, "mailer", &redis).await;
    let runs = Runs::start(&redis).await;
    // About 20 s of work for 4 workers: the rollout happens in the middle of it.
    const TASKS: u64 = 320;
    let tasks: Vec<TaskRequest> = (0..TASKS).map(|n| runs.task(n, 250)).collect();
    producer.enqueue_all(tasks).await.expect("enqueue");
    eventually_within("the pods at work", Duration::from_secs(30), || async {
        let (done, _) = runs.count();
        (done >= 20).then_some(()).ok_or(done)
    })
    .await;
    kubectl(
        &bed,
        &["rollout", "restart", "deployment/mailer", "-n", &namespace],
        None,
    );
    kubectl(
        &bed,
        &[
            "rollout",
            "status",
            "deployment/mailer",
            "-n",
            &namespace,
            "--timeout=180s",
        ],
        None,
    );
    queue_drained(&producer, Duration::from_secs(120)).await;
    let (total, pods) = runs.count();
    let twice: Vec<(u64, Vec<IpAddr>)> = (0..TASKS)
        .map(|n| (n, runs.of(n)))
        .filter(|(_, ran)| ran.len() != 1)
        .collect();
    assert!(twice.is_empty(), "tasks not run exactly once: {twice:?}");
    assert_eq!(total as u64, TASKS);
    assert!(
        pods >= 3,
        "the tasks ran on the old pods and the new ones, {pods} in all"
    );
    delete_qcluster(&bed, &namespace, "mailer");
    operator.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_pod_is_deleted_mid_run_runs_again_on_another_pod() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    // A short lease (`retry`) brings the task back soon after its pod is gone.
    let spec = "  replicas: 2\n  workers: 1\n  timeout: 10\n  receiptMargin: 2\n  retry: 12\n  saveLimit: 0\n";
    let Some((namespace, redis, operator)) =
        on_the_node(&bed, "qcluster-delete-pod", "indexer", spec).await
    else {
        return;
    };
    ready_replicas(&bed, &namespace, "indexer", 2).await;
    let (_keys, producer) = producer_of(&bed, &namespace, "indexer", &redis).await;
    let runs = Runs::start(&redis).await;
    producer.enqueue(runs.task(1, 8000)).await.expect("enqueue");
    let first = eventually_within("the task started", Duration::from_secs(30), || async {
        runs.of(1).first().copied().ok_or("not yet")
    })
    .await;
    let pods = Api::<Pod>::namespaced(bed.client(), &namespace);
    let running = pods
        .list(&Default::default())
        .await
        .expect("the pods")
        .items
        .into_iter()
        .find(|pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .is_some_and(|ip| ip == first.to_string())
        })
        .and_then(|pod| pod.metadata.name)
        .expect("the pod running the task");
    // One second of grace (the kubelet gives two at least): the pod is killed
    // long before its 8 s task can finish.
    kubectl(
        &bed,
        &[
            "delete",
            "pod",
            &running,
            "-n",
            &namespace,
            "--grace-period=1",
            "--wait=false",
        ],
        None,
    );
    let again = eventually_within("the task run again", Duration::from_secs(60), || async {
        let ran = runs.of(1);
        (ran.len() >= 2).then_some(ran.clone()).ok_or(ran)
    })
    .await;
    queue_drained(&producer, Duration::from_secs(30)).await;
    assert_eq!(runs.of(1).len(), 2, "run once more, not more: {again:?}");
    assert_ne!(again[1], first, "on another pod than {running}: {again:?}");
    delete_qcluster(&bed, &namespace, "indexer");
    operator.abort();
}

/// The one pod of a QCluster with one replica: its name and its containers' restarts.
async fn only_pod(bed: &Testbed, namespace: &str) -> (String, i32) {
    let pods = Api::<Pod>::namespaced(bed.client(), namespace);
    let list = pods.list(&Default::default()).await.expect("the pods");
    assert_eq!(list.items.len(), 1, "one pod");
    let pod = &list.items[0];
    let restarts = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum();
    (pod.metadata.name.clone().unwrap_or_default(), restarts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_over_max_rss_is_replaced_inside_its_pod() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    // 64 MiB: an idle worker is far below, one holding 128 MiB far above.
    let spec = "  replicas: 1\n  workers: 1\n  maxRss: 65536\n  timeout: 20\n  saveLimit: 0\n";
    let Some((namespace, redis, operator)) =
        on_the_node(&bed, "qcluster-max-rss", "thumbnails", spec).await
    else {
        return;
    };
    ready_replicas(&bed, &namespace, "thumbnails", 1).await;
    let (_keys, producer) = producer_of(&bed, &namespace, "thumbnails", &redis).await;
    producer
        .enqueue(TaskRequest::new("q8s.alloc").arg(128))
        .await
        .expect("enqueue");
    status_when::<QCluster>(
        &bed,
        &namespace,
        "thumbnails",
        "the task done, its worker replaced",
        STATUS_LIMIT,
        |s| {
            s.totals
                .as_ref()
                .is_some_and(|t| t.successes == 1 && t.reincarnations >= 1)
        },
    )
    .await;
    let (pod, restarts) = only_pod(&bed, &namespace).await;
    assert_eq!(restarts, 0, "the container was not restarted");
    let logs = kubectl(&bed, &["logs", "-n", &namespace, &pod], None);
    assert!(logs.contains("over max_rss 65536 KiB"), "{logs}");
    delete_qcluster(&bed, &namespace, "thumbnails");
    operator.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_over_the_pods_memory_limit_are_reported_and_the_pod_works_on() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    // The task wants more than the pod may have; after two tries it is given up.
    let spec = "  replicas: 1\n  workers: 1\n  timeout: 20\n  maxAttempts: 2\n  saveLimit: 0\n  resources:\n    limits: {memory: 160Mi}\n";
    let Some((namespace, redis, operator)) =
        on_the_node(&bed, "qcluster-oom", "exports", spec).await
    else {
        return;
    };
    ready_replicas(&bed, &namespace, "exports", 1).await;
    let (_keys, producer) = producer_of(&bed, &namespace, "exports", &redis).await;
    producer
        .enqueue(TaskRequest::new("q8s.alloc").arg(400))
        .await
        .expect("enqueue");
    status_when::<QCluster>(
        &bed,
        &namespace,
        "exports",
        "the OOM kills in the status",
        STATUS_LIMIT,
        |s| s.totals.as_ref().is_some_and(|t| t.oom_kills >= 1),
    )
    .await;
    eventually_within("the OutOfMemory event", Duration::from_secs(30), || async {
        let names = events(&bed, &namespace, "OutOfMemory");
        (!names.is_empty()).then_some(()).ok_or("none yet")
    })
    .await;
    let described = kubectl(
        &bed,
        &["describe", "qcluster", "exports", "-n", &namespace],
        None,
    );
    assert!(
        described.contains("memory limit (160Mi)"),
        "the event names the limit:\n{described}"
    );
    let (pod, restarts) = only_pod(&bed, &namespace).await;
    assert_eq!(
        restarts, 0,
        "the container lives on: only its worker was killed"
    );
    let logs = kubectl(&bed, &["logs", "-n", &namespace, &pod], None);
    assert!(
        logs.contains("the kernel killed it for the container's memory limit of 160 MiB"),
        "{logs}"
    );
    // The cluster goes on working.
    producer
        .enqueue(TaskRequest::new("time.sleep").arg(0.1))
        .await
        .expect("enqueue");
    status_when::<QCluster>(
        &bed,
        &namespace,
        "exports",
        "the next task done",
        STATUS_LIMIT,
        |s| s.totals.as_ref().is_some_and(|t| t.successes == 1),
    )
    .await;
    delete_qcluster(&bed, &namespace, "exports");
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
    let pod = eventually_within("the pinned pod Running and Ready", PODS_READY, || async {
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
    })
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
    delete_qcluster(&bed, &namespace, "pinned");
    operator.abort();
}
