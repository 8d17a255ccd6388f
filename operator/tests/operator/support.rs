//! What the operator's tests share: the CRD installed, QCluster YAML, and
//! pods played by `q8s cluster` processes.

use std::process::Output;

use q8s_testbed::Testbed;

/// A command's output as text: (stdout, stderr).
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Applies the generated CRDs and waits until the apiserver serves them.
pub fn install(bed: &Testbed) {
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

/// A QCluster's YAML, its broker URL in the Secret `redis` under `url`, with `options` (indented spec lines).
pub fn qcluster(namespace: &str, name: &str, options: &str) -> String {
    format!(
        "apiVersion: q8s.io/v1alpha1\nkind: QCluster\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  broker:\n    name: redis\n    key: url\n{options}"
    )
}

/// Runs `kubectl` and fails the test unless it succeeds; returns stdout.
pub fn kubectl(bed: &Testbed, args: &[&str], stdin: Option<&str>) -> String {
    let output = bed.kubectl(args, stdin);
    assert!(
        output.status.success(),
        "kubectl {args:?}: {:?}",
        text(&output)
    );
    text(&output).0
}
