//! The operator as its own ServiceAccount, with exactly the RBAC the Helm
//! chart grants (a namespace-scoped install), on the RBAC-enabled test bed: it reconciles a
//! QCluster through every kind of object it touches, and nothing it does is
//! refused; what it has no business doing is.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use q8s_operator::QCluster;
use q8s_testbed::{Testbed, eventually};

use crate::support::{
    Replica, broker_secret, events, install, kubectl, qcluster, render_chart, sample, service_url,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_as_its_service_account_with_exactly_its_rbac() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let Some(redis) = service_url("Q8S_TEST_REDIS_URL", "Redis") else {
        return;
    };
    install(&bed);
    let namespace = bed.namespace("operator-rbac").await;
    // Named after the namespace: cluster-wide objects of one test run stay apart.
    let name = format!("q8s-operator-{namespace}");
    let operator = bed.service_account_client(&namespace, &name).await;
    // The chart's roles for a namespace-scoped install (the ServiceAccount
    // is the test bed's, to get a token for it).
    let rendered = render_chart(
        &bed,
        &namespace,
        &namespace,
        &[
            "--show-only",
            "templates/rbac.yaml",
            "--set",
            &format!("watchNamespaces={{{namespace}}}"),
            "--set",
            &format!("fullnameOverride={name}"),
        ],
    );
    kubectl(
        &bed,
        &["apply", "--server-side", "-n", &namespace, "-f", "-"],
        Some(&rendered),
    );
    broker_secret(&bed, &namespace, &redis);
    let port = crate::support::free_port();
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let replica = Replica::start(operator, &namespace, Duration::from_secs(15), Some(address));

    // Two replicas (a budget), then one (the budget deleted): every verb it has.
    let admin = bed.client();
    let qclusters = Api::<QCluster>::namespaced(admin.clone(), &namespace);
    kubectl(
        &bed,
        &["apply", "-f", "-"],
        Some(&qcluster(
            &namespace,
            "reports",
            &format!("  name: {namespace}\n  replicas: 2\n  workers: 1\n"),
        )),
    );
    let budgets = Api::<PodDisruptionBudget>::namespaced(admin.clone(), &namespace);
    eventually("the budget", || budgets.get("reports")).await;
    let config_maps = Api::<ConfigMap>::namespaced(admin.clone(), &namespace);
    let services = Api::<Service>::namespaced(admin.clone(), &namespace);
    let secrets = Api::<Secret>::namespaced(admin.clone(), &namespace);
    eventually("the ConfigMap", || config_maps.get("reports-config")).await;
    eventually("the Service", || services.get("reports-metrics")).await;
    eventually("the signing key", || secrets.get("reports-signing-key")).await;
    kubectl(
        &bed,
        &[
            "scale",
            "-n",
            &namespace,
            "qcluster/reports",
            "--replicas=1",
        ],
        None,
    );
    let deployments = Api::<Deployment>::namespaced(admin.clone(), &namespace);
    eventually("one replica and no budget", || async {
        let replicas = deployments
            .get("reports")
            .await
            .map_err(|e| e.to_string())?
            .spec
            .and_then(|s| s.replicas);
        let budget = budgets
            .get_opt("reports")
            .await
            .map_err(|e| e.to_string())?;
        (replicas == Some(1) && budget.is_none())
            .then_some(())
            .ok_or(format!("{replicas:?} {budget:?}"))
    })
    .await;
    eventually("a status and a Scaled event", || async {
        let status = qclusters
            .get("reports")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        let events = events(&bed, &namespace, "Scaled");
        (status.replicas == Some(1) && !events.is_empty())
            .then_some(())
            .ok_or(format!("{status:?} {events}"))
    })
    .await;

    // A Once schedule: read again, its status updated, deleted once it ran.
    let once = format!(
        "apiVersion: q8s.io/v1alpha1\nkind: QSchedule\nmetadata:\n  name: once\n  namespace: {namespace}\nspec:\n  cluster: reports\n  func: q8s.noop\n  scheduleType: Once\n"
    );
    kubectl(&bed, &["apply", "-f", "-"], Some(&once));
    let schedules = Api::<q8s_operator::QSchedule>::namespaced(admin.clone(), &namespace);
    eventually("the Once schedule run and deleted", || async {
        match schedules.get_opt("once").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(left) => Err(format!("{:?}", left.status)),
        }
    })
    .await;

    // Nothing it did was refused, and it serves its endpoints.
    let http = |path: &str| {
        let mut stream = std::net::TcpStream::connect(address).expect("the operator's HTTP");
        use std::io::{Read, Write};
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        response
    };
    assert!(http("/healthz").starts_with("HTTP/1.1 200"));
    assert!(
        http("/readyz").starts_with("HTTP/1.1 200"),
        "{}",
        http("/readyz")
    );
    let metrics = http("/metrics");
    assert!(
        metrics.contains("application/openmetrics-text"),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "q8s_operator_leader"), 1.0, "{metrics}");
    assert!(
        sample(
            &metrics,
            "q8s_operator_reconciles_total{outcome=\"progressing\"}"
        ) > 0.0,
        "{metrics}"
    );
    // Every category has its series from the start, and each is still 0.
    for category in q8s_operator::metrics::ERROR_CATEGORIES {
        let series = format!("q8s_operator_reconcile_errors_total{{category=\"{category}\"}}");
        assert!(
            metrics.contains(&format!("{series} 0")),
            "a reconcile failed ({category}):\n{metrics}"
        );
    }
    let series = format!("q8s_operator_workers{{namespace=\"{namespace}\",qcluster=\"reports\"}}");
    assert!(
        metrics.contains(&series),
        "no per-QCluster series:\n{metrics}"
    );

    // What it has no business doing is refused.
    let account = format!("system:serviceaccount:{namespace}:{name}");
    for (verb, resource) in [
        ("list", "secrets"),
        ("delete", "secrets"),
        ("get", "pods"),
        ("delete", "deployments"),
        ("update", "qclusters.q8s.io"),
        ("update", "qschedules.q8s.io"),
        ("delete", "namespaces"),
    ] {
        let answer = bed.kubectl(
            &[
                "auth", "can-i", verb, resource, "-n", &namespace, "--as", &account,
            ],
            None,
        );
        assert!(!answer.status.success(), "{account} may {verb} {resource}");
    }
    replica.stop().await;
}
