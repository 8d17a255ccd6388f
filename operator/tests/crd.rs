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
