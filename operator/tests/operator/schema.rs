//! The generated CRD on the real apiserver: it installs, `kubectl apply`
//! refuses what the engine would refuse naming the field, and what the build
//! step makes passes the apiserver and the restricted Pod Security Standard.

use q8s_testbed::Testbed;

use crate::support::{install, qcluster, text};

#[tokio::test]
async fn apply_refuses_what_the_engine_refuses_naming_the_field() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    install(&bed);
    let namespace = bed.namespace("qcluster-schema").await;
    let dry_run =
        |yaml: String| bed.kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml));

    let good = dry_run(qcluster(
        &namespace,
        "good",
        "  workers: 4\n  timeout: 30\n  maxAttempts: 3\n  hookTimeout: 10\n",
    ));
    assert!(
        good.status.success(),
        "a valid QCluster was refused: {:?}",
        text(&good)
    );

    let (_, stderr) = text(&dry_run(qcluster(
        &namespace,
        "no-workers",
        "  workers: 0\n",
    )));
    assert!(stderr.contains("spec.workers"), "{stderr}");

    let (_, stderr) = text(&dry_run(qcluster(&namespace, "poll", "  poll: 0\n")));
    assert!(stderr.contains("spec.poll"), "{stderr}");

    // The seed's double-run trap: retry shorter than timeout + the receipt margin.
    let (_, stderr) = text(&dry_run(qcluster(
        &namespace,
        "trap",
        "  timeout: 90\n  retry: 60\n",
    )));
    assert!(
        stderr.contains("spec.retry") && stderr.contains("receiptMargin"),
        "{stderr}"
    );
    // `cached` is true or seconds: a choice of types the schema lets through
    // (the reconciler's build judges it; see the reconcile test).
    for good in ["true", "60"] {
        let output = dry_run(qcluster(
            &namespace,
            "cached",
            &format!("  cached: {good}\n"),
        ));
        assert!(
            output.status.success(),
            "cached: {good}: {:?}",
            text(&output)
        );
    }

    // Pinning with given resources: whole CPUs, requests equal to limits.
    let pinned = |name: &str, resources: &str| {
        dry_run(qcluster(
            &namespace,
            name,
            &format!("  workers: 2\n  cpuAffinity: 1\n  resources:\n{resources}"),
        ))
    };
    let guaranteed = pinned(
        "pinned",
        "    limits: {cpu: \"2\", memory: 1Gi}\n    requests: {cpu: 2000m, memory: 1Gi}\n",
    );
    assert!(guaranteed.status.success(), "{:?}", text(&guaranteed));
    for (name, resources) in [
        ("half-cpu", "    limits: {cpu: 1500m, memory: 1Gi}\n"),
        (
            "burstable",
            "    limits: {cpu: \"2\", memory: 1Gi}\n    requests: {cpu: \"1\"}\n",
        ),
        ("no-memory", "    limits: {cpu: \"2\"}\n"),
    ] {
        let (_, stderr) = text(&pinned(name, resources));
        assert!(
            stderr.contains("spec.resources") && stderr.contains("Guaranteed"),
            "{name}: {stderr}"
        );
    }
    let (_, stderr) = text(&dry_run(qcluster(
        &namespace,
        "default-retry",
        "  timeout: 45\n",
    )));
    assert!(
        stderr.contains("spec.retry"),
        "the default retry (60) is short of 45 + 30: {stderr}"
    );
}

/// What the build step makes is accepted by the real apiserver, its pods
/// under the restricted Pod Security Standard.
#[tokio::test]
async fn built_objects_pass_the_apiserver_and_the_restricted_pod_security_standard() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    install(&bed);
    let namespace = bed.namespace("qcluster-build").await;
    let label = bed.kubectl(
        &[
            "label",
            "namespace",
            &namespace,
            "pod-security.kubernetes.io/enforce=restricted",
        ],
        None,
    );
    assert!(label.status.success(), "{:?}", text(&label));
    let yaml = qcluster(
        &namespace,
        "reports",
        "  replicas: 2\n  workers: 2\n  timeout: 30\n  cpuAffinity: 1\n",
    );
    let mut qcluster: q8s_operator::QCluster = serde_yaml_ng::from_str(&yaml).expect("fixture");
    qcluster.metadata.uid = Some("00000000-0000-0000-0000-000000000001".into());
    let desired =
        q8s_operator::build::build(&qcluster, "q8s-worker:test", "0123abcd").expect("builds");
    let template = desired
        .deployment
        .spec
        .as_ref()
        .expect("spec")
        .template
        .clone();
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "reports-pod", "namespace": namespace},
        "spec": template.spec,
    });
    // The namespace really enforces the standard: the same pod without its
    // security context is refused.
    let mut careless = pod.clone();
    careless["metadata"]["name"] = "careless".into();
    careless["spec"]["securityContext"] = serde_json::Value::Null;
    careless["spec"]["containers"][0]["securityContext"] = serde_json::Value::Null;
    let refused = bed.kubectl(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&careless.to_string()),
    );
    let (_, stderr) = text(&refused);
    assert!(
        !refused.status.success() && stderr.contains("PodSecurity"),
        "a pod without a security context passed: {stderr}"
    );
    let mut documents = vec![
        serde_json::to_value(&desired.config_map).expect("json"),
        serde_json::to_value(&desired.deployment).expect("json"),
        serde_json::to_value(&desired.service).expect("json"),
        pod,
    ];
    if let Some(budget) = &desired.disruption_budget {
        documents.push(serde_json::to_value(budget).expect("json"));
    }
    for mut document in documents {
        // The owner does not exist on the server: a dry run checks the object itself.
        if let Some(meta) = document["metadata"].as_object_mut() {
            meta.remove("ownerReferences");
        }
        let output = bed.kubectl(
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&document.to_string()),
        );
        assert!(
            output.status.success(),
            "{} refused: {:?}",
            document["kind"],
            text(&output)
        );
    }
}
