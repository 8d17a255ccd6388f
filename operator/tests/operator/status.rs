//! The status from real clusters: `q8s cluster` processes run exactly as the
//! Deployment's pod template says, against a real Redis; the operator reads
//! their Stat and the broker into the status and `kubectl get qclusters`.

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use q8s::TaskRequest;
use q8s_operator::QCluster;
use q8s_testbed::{Testbed, eventually};

use crate::pod::{NODE, Pod};
use crate::support::{
    broker_secret, events, install, kubectl, producer, qcluster, service_url, spawn_reconciler,
};

/// The named columns of `kubectl get qcluster NAME` (wide with `-o wide`).
fn columns(bed: &Testbed, namespace: &str, name: &str, wide: bool) -> Vec<(String, String)> {
    let mut args = vec!["get", "qcluster", name, "-n", namespace];
    if wide {
        args.extend(["-o", "wide"]);
    }
    let table = kubectl(bed, &args, None);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    header
        .iter()
        .map(|h| h.to_string())
        .zip(row.iter().map(|r| r.to_string()))
        .collect()
}

fn column<'a>(row: &'a [(String, String)], name: &str) -> &'a str {
    row.iter()
        .find(|(header, _)| header == name)
        .map_or("", |(_, value)| value.as_str())
}

fn number(row: &[(String, String)], name: &str) -> u64 {
    column(row, name).parse().unwrap_or(0)
}

fn reason_of(qcluster: &QCluster, type_: &str) -> Option<(String, String)> {
    qcluster
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_comes_from_the_clusters_the_pod_template_runs_and_follows_scale_and_the_broker_secret()
 {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let Some(redis) = service_url("Q8S_TEST_REDIS_URL", "Redis") else {
        return;
    };
    install(&bed);
    let namespace = bed.namespace("qcluster-status").await;
    let client = bed.client();
    let operator = spawn_reconciler(
        client.clone(),
        &namespace,
        "q8s-worker:test",
        q8s_operator::reconciler::REAPPLY,
    );
    broker_secret(&bed, &namespace, &redis);
    // The test bed's Redis is shared: the queue is named after the namespace.
    let spec = format!(
        "  name: {namespace}\n  replicas: 2\n  workers: 2\n  recycle: 3\n  timeout: 20\n  saveLimit: 0\n"
    );
    kubectl(
        &bed,
        &["apply", "-f", "-"],
        Some(&qcluster(&namespace, "reports", &spec)),
    );

    let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace);
    let qclusters = Api::<QCluster>::namespaced(client.clone(), &namespace);
    let pods = Pod::start_of(&client, &namespace, "reports", 2).await;
    for pod in &pods {
        assert!(pod.probe("/healthz").contains(" 200"), "{}", pod.log());
    }

    // Enqueue as any service would: the queue's broker, signed with its key.
    let keys = pods[0].folder(q8s_operator::build::KEY_DIR).join("keys");
    let producer = producer(&redis, &namespace, &keys).await;
    let tasks = 60;
    for _ in 0..tasks {
        producer
            .enqueue(TaskRequest::new("time.sleep").arg(0.4))
            .await
            .expect("enqueue");
    }

    eventually("Working, 2 clusters, 4 workers, tasks queued", || async {
        let row = columns(&bed, &namespace, "reports", false);
        (column(&row, "STATE") == "Working"
            && number(&row, "CLUSTERS") == 2
            && number(&row, "WORKERS") == 4
            && number(&row, "QUEUED") > 0
            && number(&row, "RUNNING") > 0)
            .then_some(())
            .ok_or(format!("{row:?}"))
    })
    .await;
    let done = eventually("every task done and the workers recycled", || async {
        let row = columns(&bed, &namespace, "reports", true);
        (column(&row, "STATE") == "Idle"
            && number(&row, "QUEUED") == 0
            && number(&row, "SUCCESSES") == tasks
            && number(&row, "RC") >= 2)
            .then_some(row.clone())
            .ok_or(format!("{row:?}"))
    })
    .await;
    assert_eq!(number(&done, "HELD"), 0, "{done:?}");
    let status = qclusters
        .get("reports")
        .await
        .expect("the QCluster")
        .status
        .expect("a status");
    assert_eq!(status.clusters.len(), 2, "{status:?}");
    for entry in &status.clusters {
        assert_eq!(entry.host.as_deref(), Some(NODE), "{entry:?}");
        assert_eq!((entry.pool, entry.state.as_str()), (2, "Idle"), "{entry:?}");
    }
    let totals = status.totals.expect("totals");
    assert_eq!(
        totals.successes + totals.failures,
        tasks as i64,
        "{totals:?}"
    );

    // Nothing changes while the fleet idles: no status write, though it is
    // refreshed every few seconds.
    let version = |q: QCluster| q.metadata.resource_version.unwrap_or_default();
    let idle = version(qclusters.get("reports").await.expect("the QCluster"));
    tokio::time::sleep(q8s_operator::reconciler::STAT_REFRESH * 3).await;
    assert_eq!(
        version(qclusters.get("reports").await.expect("the QCluster")),
        idle,
        "the status was written with nothing changed"
    );

    // kubectl scale drives the Deployment through the scale subresource.
    kubectl(
        &bed,
        &[
            "scale",
            "-n",
            &namespace,
            "qcluster/reports",
            "--replicas=3",
        ],
        None,
    );
    eventually("3 replicas in the Deployment", || async {
        let replicas = deployments
            .get("reports")
            .await
            .map_err(|e| e.to_string())?
            .spec
            .and_then(|spec| spec.replicas);
        (replicas == Some(3))
            .then_some(())
            .ok_or(format!("{replicas:?}"))
    })
    .await;
    let events = |reason: &str| events(&bed, &namespace, reason);
    eventually("a Scaled event", || async {
        let found = events("Scaled");
        (!found.is_empty()).then_some(()).ok_or(found)
    })
    .await;

    // A broken broker Secret is a condition and an event, and mending it heals.
    broker_secret(&bed, &namespace, "redis://127.0.0.1:1/0");
    eventually("BrokerReachable=False", || async {
        let qcluster = qclusters.get("reports").await.map_err(|e| e.to_string())?;
        let row = columns(&bed, &namespace, "reports", false);
        (reason_of(&qcluster, "BrokerReachable")
            == Some(("False".into(), "BrokerUnreachable".into()))
            && column(&row, "STATE") == "BrokerUnreachable")
            .then_some(())
            .ok_or(format!("{:?} {row:?}", qcluster.status))
    })
    .await;
    eventually("a BrokerUnreachable event", || async {
        let found = events("BrokerUnreachable");
        (!found.is_empty()).then_some(()).ok_or(found)
    })
    .await;
    broker_secret(&bed, &namespace, &redis);
    eventually("BrokerReachable=True again", || async {
        let qcluster = qclusters.get("reports").await.map_err(|e| e.to_string())?;
        (reason_of(&qcluster, "BrokerReachable") == Some(("True".into(), "BrokerAnswers".into())))
            .then_some(())
            .ok_or(format!("{:?}", qcluster.status))
    })
    .await;
    drop(pods);
    operator.abort();
}
