//! The QCluster resource: a fleet of q8s clusters working one queue, as Kubernetes sees it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, ResourceRequirements, SecretKeySelector, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::options::{ClusterOptions, cross_option_rules};

/// A fleet of q8s clusters (pods running `q8s cluster`) working one queue.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "q8s.io",
    version = "v1alpha1",
    kind = "QCluster",
    namespaced,
    shortname = "qc",
    status = "QClusterStatus",
    doc = "A fleet of q8s clusters working one queue: Django Q's Q_CLUSTER as a resource",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Queue", type_ = "string", json_path = ".spec.name"),
    printcolumn(
        name = "Clusters",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = spec_rules)]
pub struct QClusterSpec {
    /// The queue name and signing salt; default: the QCluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]+$"), length(min = 1, max = 253))]
    pub name: Option<String>,
    /// Clusters (pods) working the queue.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// The worker image; default: the operator's own q8s worker image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The broker's URL (redis://, postgres://, sqs:// or an SQS queue URL), from a Secret.
    pub broker: SecretKeySelector,
    /// The result store's URL (postgres:// or sqlite://), from a Secret; default: the SQL broker's database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<SecretKeySelector>,
    /// The Secret holding the signing keys, one per line, the first signing; created with a random key when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
    /// The engine's cluster options (workers, timeout, retry, maxAttempts, …), as `q8s.toml` names them, in camelCase.
    #[serde(flatten)]
    pub options: ClusterOptions,
    /// The pods' resources; with cpuAffinity, sized for exclusive cores unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the pods must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Where the pods may be scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// The pods' priority class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// The pods' ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// More environment variables for the workers (your functions' settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// More labels on the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// More annotations on the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
}

fn one() -> i32 {
    1
}

/// The rules that span fields, checked by the apiserver when the object is applied.
fn spec_rules(schema: &mut schemars::Schema) {
    schema.insert(
        "x-kubernetes-validations".into(),
        serde_json::Value::Array(cross_option_rules()),
    );
}

/// What the operator last saw of a QCluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QClusterStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled and BrokerReachable, in kstatus' vocabulary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Clusters (pods) asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Clusters whose pods are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The pods' label selector, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}
