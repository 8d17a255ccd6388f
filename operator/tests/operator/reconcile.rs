//! The reconciler on the real apiserver: objects, spec changes, the signing
//! key, pausing, and a spec that stalls.

use q8s_testbed::Testbed;

use crate::support::{install, qcluster, spawn_reconciler, text};

/// The reconciler on the real apiserver: a QCluster becomes its objects and a
/// status, a spec change reaches the pods' configuration, the signing key is
/// made once and kept, and a spec the engine refuses stalls with its reason.
#[tokio::test]
async fn a_qcluster_is_reconciled_into_its_objects_and_a_bad_spec_stalls() {
    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
    use kube::Api;
    use q8s_testbed::eventually;

    let Some(bed) = Testbed::connect().await else {
        return;
    };
    install(&bed);
    let namespace = bed.namespace("qcluster-reconcile").await;
    let client = bed.client();
    let operator = spawn_reconciler(
        client.clone(),
        &namespace,
        "q8s-worker:test",
        std::time::Duration::from_secs(5),
    );
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
    // The controller-manager rolls it: a second ReplicaSet of the Deployment.
    let replica_sets = Api::<ReplicaSet>::namespaced(client.clone(), &namespace);
    eventually("a new ReplicaSet", || async {
        let owned = replica_sets
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter(|rs| {
                rs.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|owner| owner.kind == "Deployment" && owner.name == "reports")
            })
            .count();
        (owned >= 2)
            .then_some(())
            .ok_or(format!("{owned} ReplicaSets"))
    })
    .await;
    let kept = secrets.get("reports-signing-key").await.expect("the key");
    assert_eq!(kept.data, key.data, "the signing key is never overwritten");

    // Rotation: a new signing key first, the old one after it to verify what
    // is queued. The pods restart with both (within a reapply: 5 s here).
    let keys_hash = |d: Deployment| {
        d.spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .and_then(|a| a.get(q8s_operator::build::KEYS_HASH).cloned())
    };
    let before_rotation = keys_hash(deployments.get("reports").await.expect("the Deployment"));
    assert!(
        before_rotation.is_some(),
        "the template carries the keys' hash"
    );
    let old_key =
        String::from_utf8(kept.data.clone().unwrap_or_default()["keys"].0.clone()).expect("text");
    let rotated = format!("{}\n{old_key}", "f".repeat(64));
    let patch = serde_json::json!({"stringData": {"keys": rotated}}).to_string();
    let output = bed.kubectl(
        &[
            "patch",
            "secret",
            "reports-signing-key",
            "-n",
            &namespace,
            "--type=merge",
            "-p",
            &patch,
        ],
        None,
    );
    assert!(output.status.success(), "{:?}", text(&output));
    let started = std::time::Instant::now();
    loop {
        let now = keys_hash(deployments.get("reports").await.expect("the Deployment"));
        if now != before_rotation {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the pods never restarted with the rotated keys"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }

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
    // A value of a type the schema cannot check: the engine names the option.
    apply(qcluster(&namespace, "cached", "  cached: soon\n"));
    eventually("Stalled naming cached", || async {
        let qcluster = qclusters.get("cached").await.map_err(|e| e.to_string())?;
        let status = qcluster.status.unwrap_or_default();
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True" && c.message.contains("cached"))
            .then_some(())
            .ok_or(format!("{:?}", status.conditions))
    })
    .await;
    operator.abort();
}
