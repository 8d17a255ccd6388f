//! Leader election on the real apiserver: one replica reconciles at a time;
//! another takes over when the leader dies (its Lease runs out) or stops (it
//! gives the Lease up at once).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use q8s_testbed::{Testbed, eventually};

use crate::support::{Replica, install, kubectl, qcluster, sample};

const LEASE: Duration = Duration::from_secs(3);

async fn leader_of(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(q8s_operator::run::LEASE_NAME)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_reconciles_and_another_takes_over_when_it_dies_or_stops() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    install(&bed);
    let namespace = bed.namespace("operator-leader").await;
    let client = bed.client();
    let leases = Api::<Lease>::namespaced(client.clone(), &namespace);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace);
    let first = Replica::start(client.clone(), &namespace, LEASE, None);
    let second = Replica::start(client.clone(), &namespace, LEASE, None);

    // Never two leaders: watched every few milliseconds for the whole test.
    let both = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let (first, second) = (first.telemetry.clone(), second.telemetry.clone());
        let both = both.clone();
        async move {
            loop {
                if first.metrics.leader.get() == 1 && second.metrics.leader.get() == 1 {
                    both.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let first_leads = eventually("a leader", || async {
        match (first.leads(), second.leads()) {
            (true, false) => Ok(true),
            (false, true) => Ok(false),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let (leading, waiting) = if first_leads {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(
        leader_of(&leases).await.as_deref(),
        Some(leading.identity.as_str())
    );
    kubectl(
        &bed,
        &["apply", "-f", "-"],
        Some(&qcluster(&namespace, "first", "  workers: 1\n")),
    );
    eventually("the leader's Deployment", || deployments.get("first")).await;
    let reconciles = |replica: &Replica| {
        sample(
            &replica.telemetry.render(),
            "q8s_operator_reconciles_total{outcome=\"broker_unreachable\"}",
        )
    };
    // The pass is counted when it ends, a moment after it applied the Deployment.
    eventually("the leader's pass counted", || async {
        (reconciles(&leading) > 0.0).then_some(()).ok_or("not yet")
    })
    .await;
    assert_eq!(reconciles(&waiting), 0.0, "the waiting replica reconciled");

    // The leader dies without giving the Lease up: the other takes over once it runs out.
    let died = Instant::now();
    leading.kill();
    eventually("the other replica leads", || async {
        waiting.leads().then_some(()).ok_or("not yet")
    })
    .await;
    let takeover = died.elapsed();
    // The Lease ran out one duration after its last renewal, at most a third of it before the kill.
    assert!(
        takeover >= LEASE * 2 / 3,
        "took over after {takeover:?}, before the Lease ran out"
    );
    assert_eq!(
        leader_of(&leases).await.as_deref(),
        Some(waiting.identity.as_str())
    );
    kubectl(
        &bed,
        &["apply", "-f", "-"],
        Some(&qcluster(&namespace, "second", "  workers: 1\n")),
    );
    eventually("the new leader's Deployment", || deployments.get("second")).await;

    // A restart: a new replica waits; the leader stops and gives the Lease up,
    // so the new one leads well before the Lease would have run out.
    let third = Replica::start(client.clone(), &namespace, LEASE, None);
    tokio::time::sleep(LEASE / 2).await;
    assert!(!third.leads(), "two leaders");
    let stopped = Instant::now();
    waiting.stop().await;
    eventually("the new replica leads", || async {
        third.leads().then_some(()).ok_or("not yet")
    })
    .await;
    assert!(
        stopped.elapsed() < LEASE,
        "took {:?}: the Lease was not given up",
        stopped.elapsed()
    );
    kubectl(
        &bed,
        &["apply", "-f", "-"],
        Some(&qcluster(&namespace, "third", "  workers: 1\n")),
    );
    eventually("the third leader's Deployment", || deployments.get("third")).await;
    let lease = leases
        .get(q8s_operator::run::LEASE_NAME)
        .await
        .expect("the Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.lease_transitions),
        Some(2),
        "two changes of leader"
    );
    watcher.abort();
    assert!(!both.load(Ordering::SeqCst), "two replicas led at once");
    third.stop().await;
}
