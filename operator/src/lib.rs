//! The q8s operator: QCluster and QSchedule resources, their schemas, their
//! reconciler and scheduler, and the process that runs them.
//!
//! The CRD is generated from the Rust types ([`crds`]); the engine's cluster
//! options reach it from the engine's one declaration ([`options`]).

pub mod build;
pub mod conditions;
pub mod events;
pub mod http;
pub mod leader;
pub mod link;
pub mod metrics;
pub mod observe;
pub mod options;
pub mod qcluster;
pub mod qschedule;
pub mod rbac;
pub mod reconciler;
pub mod run;
pub mod scheduler;

pub use qcluster::{QCluster, QClusterSpec, QClusterStatus};
pub use qschedule::{QSchedule, QScheduleSpec, QScheduleStatus};

use kube::CustomResourceExt;

/// The CRDs this operator serves.
pub fn definitions()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![QCluster::crd(), QSchedule::crd()]
}

/// The CRDs as YAML documents, in the order `crds/` holds them.
pub fn crds() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in definitions() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}

/// Compares a generated file with its committed copy; `Q8S_BLESS=1` rewrites the copy.
#[cfg(test)]
pub(crate) fn assert_generated(path: &str, generated: &str, regenerate: &str) {
    if std::env::var_os("Q8S_BLESS").is_some() {
        std::fs::write(path, generated).expect("write the generated file");
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "{path} drifted from its declaration: run Q8S_BLESS=1 cargo test -p q8s-operator, or {regenerate}"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_crds_are_generated_from_the_types() {
        let generated = super::crds().expect("the CRDs render");
        for (path, regenerate) in [
            (
                concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/q8s.io.yaml"),
                "q8s-operator crds > crds/q8s.io.yaml",
            ),
            // Helm installs a chart's crds/ folder before its templates.
            (
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../charts/q8s/crds/q8s.io.yaml"
                ),
                "q8s-operator crds > charts/q8s/crds/q8s.io.yaml",
            ),
        ] {
            super::assert_generated(path, &generated, regenerate);
        }
    }

    #[test]
    fn the_chart_and_the_dockerfiles_carry_the_workspaces_version() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let version = env!("CARGO_PKG_VERSION");
        let chart =
            std::fs::read_to_string(format!("{root}/charts/q8s/Chart.yaml")).expect("the chart");
        let chart: serde_yaml_ng::Value = serde_yaml_ng::from_str(&chart).expect("YAML");
        for field in ["version", "appVersion"] {
            assert_eq!(
                chart[field].as_str(),
                Some(version),
                "charts/q8s/Chart.yaml {field}: set it to the workspace's version in Cargo.toml"
            );
        }
        // The images' tags come from these defaults, and the chart pulls its appVersion.
        for dockerfile in [
            "Dockerfile.worker",
            "Dockerfile.operator",
            "examples/custom-worker/Dockerfile",
        ] {
            let text = std::fs::read_to_string(format!("{root}/{dockerfile}")).expect("read");
            let defaults: Vec<&str> = text
                .lines()
                .filter_map(|line| line.trim().strip_prefix("ARG VERSION="))
                .collect();
            assert_eq!(
                defaults,
                [version],
                "{dockerfile}: ARG VERSION= must be the workspace's version"
            );
        }
    }

    #[test]
    fn the_crds_use_only_formats_kubernetes_knows() {
        // An unknown format (schemars' uint64) makes kubectl warn on every apply.
        let known = ["int32", "int64", "double", "date-time", "byte"];
        let crds = super::crds().expect("the CRDs render");
        for format in crds
            .lines()
            .filter_map(|l| l.trim().strip_prefix("format: "))
        {
            assert!(known.contains(&format), "format {format} in the CRD");
        }
    }
}
