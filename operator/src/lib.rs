//! The q8s operator: QCluster resources, their schema and, next, their reconciler.
//!
//! The CRD is generated from the Rust types ([`crds`]); the engine's cluster
//! options reach it from the engine's one declaration ([`options`]).

pub mod build;
pub mod observe;
pub mod options;
pub mod qcluster;
pub mod reconciler;

pub use qcluster::{QCluster, QClusterSpec, QClusterStatus};

use kube::CustomResourceExt;

/// The CRDs this operator serves (QSchedule joins QCluster next).
pub fn definitions()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![QCluster::crd()]
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_crds_are_generated_from_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/q8s.io.yaml");
        let generated = super::crds().expect("the CRDs render");
        if std::env::var_os("Q8S_BLESS").is_some() {
            std::fs::write(path, &generated).expect("write crds/");
            return;
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "crds/q8s.io.yaml drifted from the Rust types: run Q8S_BLESS=1 cargo test -p q8s-operator, or q8s-operator crds > crds/q8s.io.yaml"
        );
    }
}
