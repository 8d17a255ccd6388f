//! What the operator may touch, declared once: the rules of its ClusterRole
//! (and its Role for the Lease), rendered into `manifests/install.yaml` with
//! its ServiceAccount and bindings. Each rule says why it is there.

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::ObjectMeta;

/// The namespace the plain manifests install the operator into.
pub const NAMESPACE: &str = "q8s-system";
/// The name of the operator's ServiceAccount, roles and bindings.
pub const NAME: &str = "q8s-operator";

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

/// Everything the reconciler and the scheduler touch, in every namespace they watch.
pub fn cluster_rules() -> Vec<PolicyRule> {
    vec![
        // The Controller lists and watches QClusters.
        rule("q8s.io", &["qclusters"], &["list", "watch"]),
        // The status is server-side applied.
        rule("q8s.io", &["qclusters/status"], &["patch"]),
        // Owner references that block the owner's deletion need this (the
        // OwnerReferencesPermissionEnforcement admission plugin).
        rule("q8s.io", &["qclusters/finalizers"], &["update"]),
        // The scheduler reads each QSchedule again before it acts on it,
        // writes its status conditionally (an update carrying the
        // resourceVersion), and deletes a Once schedule that ran.
        rule(
            "q8s.io",
            &["qschedules"],
            &["get", "list", "watch", "delete"],
        ),
        rule("q8s.io", &["qschedules/status"], &["update"]),
        // Owned objects are server-side applied: a patch, which needs create
        // too when the object is new; Deployments are watched to follow rollouts.
        rule(
            "apps",
            &["deployments"],
            &["list", "watch", "create", "patch"],
        ),
        rule("", &["configmaps", "services"], &["create", "patch"]),
        // A budget is deleted when replicas drop to one.
        rule(
            "policy",
            &["poddisruptionbudgets"],
            &["create", "patch", "delete"],
        ),
        // Broker and store URLs are read; a missing signing key is created.
        rule("", &["secrets"], &["get", "create"]),
        // Events are created, and patched when they repeat.
        rule("events.k8s.io", &["events"], &["create", "patch"]),
    ]
}

/// The Lease of leader election, in the operator's own namespace.
pub fn lease_rules() -> Vec<PolicyRule> {
    vec![rule(
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update"],
    )]
}

/// The ServiceAccount `name` in `namespace`, its ClusterRole and Role, and their bindings.
pub fn objects(namespace: &str, name: &str) -> Vec<serde_json::Value> {
    let meta = |namespaced: bool| ObjectMeta {
        name: Some(name.into()),
        namespace: namespaced.then(|| namespace.to_string()),
        labels: Some(
            [(
                crate::build::MANAGED_BY.to_string(),
                crate::build::OPERATOR.to_string(),
            )]
            .into(),
        ),
        ..ObjectMeta::default()
    };
    let subjects = Some(vec![Subject {
        kind: "ServiceAccount".into(),
        name: name.into(),
        namespace: Some(namespace.into()),
        ..Subject::default()
    }]);
    let role_ref = |kind: &str| RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.into(),
    };
    let json = |value: Result<serde_json::Value, serde_json::Error>| value.unwrap_or_default();
    vec![
        json(serde_json::to_value(ServiceAccount {
            metadata: meta(true),
            ..ServiceAccount::default()
        })),
        json(serde_json::to_value(ClusterRole {
            metadata: meta(false),
            rules: Some(cluster_rules()),
            ..ClusterRole::default()
        })),
        json(serde_json::to_value(ClusterRoleBinding {
            metadata: meta(false),
            role_ref: role_ref("ClusterRole"),
            subjects: subjects.clone(),
        })),
        json(serde_json::to_value(Role {
            metadata: meta(true),
            rules: Some(lease_rules()),
        })),
        json(serde_json::to_value(RoleBinding {
            metadata: meta(true),
            role_ref: role_ref("Role"),
            subjects,
        })),
    ]
}

/// `manifests/install.yaml`: the namespace, the CRDs, the ServiceAccount and its RBAC.
pub fn install_yaml() -> Result<String, serde_yaml_ng::Error> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let mut out = String::from(
        "# Generated by `q8s-operator manifests`: the CRDs, and the operator's ServiceAccount\n\
         # with exactly the rights it needs. Apply with kubectl apply --server-side -f.\n",
    );
    out.push_str("---\n");
    out.push_str(&serde_yaml_ng::to_string(&namespace)?);
    out.push_str(&crate::crds()?);
    for object in objects(NAMESPACE, NAME) {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&object)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_manifests_are_generated_from_the_declarations() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/install.yaml");
        let generated = super::install_yaml().expect("the manifests render");
        crate::assert_generated(
            path,
            &generated,
            "q8s-operator manifests > manifests/install.yaml",
        );
    }
}
