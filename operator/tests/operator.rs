//! The generated CRD on the test bed's real kube-apiserver: it installs, and
//! `kubectl apply` refuses what the engine would refuse, naming the field.

use std::process::Output;

use q8s_testbed::Testbed;

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn install(bed: &Testbed) {
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
            "--timeout=30s",
        ],
        None,
    );
    assert!(output.status.success(), "{:?}", text(&output));
}

fn qcluster(namespace: &str, name: &str, options: &str) -> String {
    format!(
        "apiVersion: q8s.io/v1alpha1\nkind: QCluster\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  broker:\n    name: redis\n    key: url\n{options}"
    )
}

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
    let desired = q8s_operator::build::build(&qcluster, "q8s-worker:test").expect("builds");
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

/// The reconciler on the real apiserver: a QCluster becomes its objects and a
/// status, a spec change reaches the pods' configuration, the signing key is
/// made once and kept, and a spec the engine refuses stalls with its reason.
#[tokio::test]
async fn a_qcluster_is_reconciled_into_its_objects_and_a_bad_spec_stalls() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
    use kube::Api;
    use q8s_testbed::eventually;

    let Some(bed) = Testbed::connect().await else {
        return;
    };
    install(&bed);
    let namespace = bed.namespace("qcluster-reconcile").await;
    let client = bed.client();
    let operator = tokio::spawn(q8s_operator::reconciler::run(
        client.clone(),
        "q8s-worker:test".into(),
        Some(namespace.clone()),
    ));
    let apply = |yaml: String| {
        let output = bed.kubectl(&["apply", "-f", "-"], Some(&yaml));
        assert!(output.status.success(), "{:?}", text(&output));
    };
    apply(qcluster(
        &namespace,
        "reports",
        "  workers: 2\n  timeout: 20\n",
    ));

    let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace);
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &namespace);
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let services = Api::<Service>::namespaced(client.clone(), &namespace);
    let qclusters = Api::<q8s_operator::QCluster>::namespaced(client.clone(), &namespace);
    let deployment = eventually("the Deployment", || deployments.get("reports")).await;
    let owner = deployment
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    assert_eq!(owner.first().map(|o| o.kind.as_str()), Some("QCluster"));
    let toml = |config_map: &ConfigMap| {
        config_map
            .data
            .as_ref()
            .and_then(|data| data.get("q8s.toml"))
            .cloned()
            .unwrap_or_default()
    };
    let config = eventually("the ConfigMap", || config_maps.get("reports-config")).await;
    assert!(toml(&config).contains("workers = 2"), "{}", toml(&config));
    eventually("the metrics Service", || services.get("reports-metrics")).await;
    let key = eventually("the signing key", || secrets.get("reports-signing-key")).await;
    assert_eq!(
        key.data
            .as_ref()
            .and_then(|d| d.get("keys"))
            .map(|k| k.0.len()),
        Some(65),
        "a 64-digit key and its newline"
    );
    eventually("Reconciling while no pod is ready", || async {
        let qcluster = qclusters.get("reports").await.map_err(|e| e.to_string())?;
        let status = qcluster.status.clone().unwrap_or_default();
        let reconciling = status.conditions.iter().any(|c| {
            c.type_ == "Reconciling" && c.status == "True" && c.reason == "ClustersStarting"
        });
        if reconciling && status.observed_generation == qcluster.metadata.generation {
            Ok(())
        } else {
            Err(format!("{status:?}"))
        }
    })
    .await;

    // A spec change reaches q8s.toml, and the pods' template (so they roll).
    let before = deployment
        .spec
        .clone()
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations);
    apply(qcluster(
        &namespace,
        "reports",
        "  workers: 3\n  timeout: 20\n",
    ));
    eventually("workers = 3 in q8s.toml", || async {
        let config = config_maps
            .get("reports-config")
            .await
            .map_err(|e| e.to_string())?;
        toml(&config)
            .contains("workers = 3")
            .then_some(())
            .ok_or(toml(&config))
    })
    .await;
    eventually("a new pod template", || async {
        let now = deployments
            .get("reports")
            .await
            .map_err(|e| e.to_string())?;
        let annotations = now
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations);
        (annotations != before)
            .then_some(())
            .ok_or_else(|| "the same template".to_string())
    })
    .await;
    let kept = secrets.get("reports-signing-key").await.expect("the key");
    assert_eq!(kept.data, key.data, "the signing key is never overwritten");

    // The paused annotation stops reconciling, and the status says so.
    let paused = bed.kubectl(
        &[
            "annotate",
            "-n",
            &namespace,
            "qcluster/reports",
            "q8s.io/paused=true",
        ],
        None,
    );
    assert!(paused.status.success(), "{:?}", text(&paused));
    eventually("Reconciling=False, Paused", || async {
        let qcluster = qclusters.get("reports").await.map_err(|e| e.to_string())?;
        let status = qcluster.status.unwrap_or_default();
        let paused = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Reconciling" && c.status == "False" && c.reason == "Paused");
        let ready_kept = status.conditions.iter().any(|c| c.type_ == "Ready");
        (paused && ready_kept)
            .then_some(())
            .ok_or(format!("{:?}", status.conditions))
    })
    .await;

    // What the schema cannot know becomes a condition: pinning without a size.
    apply(qcluster(&namespace, "unsized", "  cpuAffinity: 1\n"));
    eventually("Stalled with InvalidSpec", || async {
        let qcluster = qclusters.get("unsized").await.map_err(|e| e.to_string())?;
        let status = qcluster.status.unwrap_or_default();
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "InvalidSpec")
            .then_some(())
            .ok_or(format!("{:?}", status.conditions))
    })
    .await;
    assert!(
        deployments.get_opt("unsized").await.expect("get").is_none(),
        "a stalled QCluster owns nothing"
    );
    operator.abort();
}
