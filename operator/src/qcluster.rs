//! The QCluster resource: a fleet of q8s clusters working one queue, as Kubernetes sees it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, ResourceRequirements, SecretKeySelector, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::options::{ClusterOptions, cross_option_rules};

/// A fleet of q8s clusters (pods running `q8s cluster`) working one queue.
// Each printcolumn repeats `type_ = "integer"`: clippy reads that as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
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
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(
        name = "Clusters",
        type_ = "integer",
        json_path = ".status.totals.clusters"
    ),
    printcolumn(
        name = "Workers",
        type_ = "integer",
        json_path = ".status.totals.workers"
    ),
    printcolumn(
        name = "Queued",
        type_ = "integer",
        json_path = ".status.totals.queued"
    ),
    printcolumn(
        name = "Running",
        type_ = "integer",
        json_path = ".status.totals.running"
    ),
    printcolumn(
        name = "RC",
        type_ = "integer",
        json_path = ".status.totals.reincarnations"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Queue",
        type_ = "string",
        json_path = ".spec.name",
        priority = 1
    ),
    printcolumn(
        name = "Held",
        type_ = "integer",
        json_path = ".status.totals.held",
        priority = 1
    ),
    printcolumn(
        name = "Successes",
        type_ = "integer",
        json_path = ".status.totals.successes",
        priority = 1
    ),
    printcolumn(
        name = "Failures",
        type_ = "integer",
        json_path = ".status.totals.failures",
        priority = 1
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
    let mut rules = cross_option_rules();
    rules.push(pinning_rule());
    schema.insert(
        "x-kubernetes-validations".into(),
        serde_json::Value::Array(rules),
    );
}

/// Pinning with given resources: only a Guaranteed pod with whole CPUs gets
/// exclusive cores from the kubelet's static CPU manager. (Without resources
/// the operator sizes the pod so.)
fn pinning_rule() -> serde_json::Value {
    let quantity = |path: &str| format!("quantity(string(self.resources.{path}))");
    let equal_when_given = |what: &str| {
        format!(
            "(!('{what}' in self.resources.requests) || {}.compareTo({}) == 0)",
            quantity(&format!("requests['{what}']")),
            quantity(&format!("limits['{what}']"))
        )
    };
    let rule = format!(
        "!has(self.cpuAffinity) || !has(self.resources) || \
         (has(self.resources.limits) && 'cpu' in self.resources.limits && 'memory' in self.resources.limits \
         && {}.isInteger() \
         && (!has(self.resources.requests) || ({} && {})))",
        quantity("limits['cpu']"),
        equal_when_given("cpu"),
        equal_when_given("memory"),
    );
    serde_json::json!({
        "rule": rule,
        "message": "with cpuAffinity, resources.limits must give a whole number of CPUs and the memory, and requests (when given) must equal them: only a Guaranteed pod gets exclusive cores from the kubelet's static CPU manager",
        "fieldPath": ".resources",
        "reason": "FieldValueInvalid",
    })
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
    /// One word for the fleet: Working, Idle, Starting, Stopping, Stopped, BrokerUnreachable, Stalled or Paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// One entry per live cluster, from its Stat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterEntry>,
    /// The fleet's sums, and what waits in the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<Totals>,
}

/// One live cluster (pod), as its Stat says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterEntry {
    /// The pod (the cluster's host name).
    pub pod: String,
    /// The node it runs on, when the pod says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The cluster id: the sentinel's process id.
    pub cluster_id: String,
    /// Starting, Idle, Working, Stopping or Stopped.
    pub state: String,
    /// Worker processes (Pool).
    pub pool: i64,
    /// Packages held in memory, not yet started (TQ).
    pub task_queue: i64,
    /// Finished tasks not yet saved (RQ).
    pub result_queue: i64,
    /// Workers replaced (RC).
    pub reincarnations: i64,
    /// Tasks running now.
    pub running: i64,
    /// Tasks finished with success since it started.
    pub successes: i64,
    /// Tasks finished without success since it started.
    pub failures: i64,
    /// Workers the kernel killed for the pod's memory limit since it started.
    #[serde(default)]
    pub oom_kills: i64,
    /// When it started: its uptime is now minus this, so the entry changes only when the cluster does.
    pub started: Time,
}

/// The fleet's sums over its live clusters, and the broker's queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Live clusters (Stats not expired).
    pub clusters: i64,
    /// Worker processes.
    pub workers: i64,
    /// Packages waiting in the broker, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<i64>,
    /// Packages held in the clusters' memory, not yet started.
    pub held: i64,
    /// Tasks running.
    pub running: i64,
    /// Tasks finished with success (by the live clusters, since each started).
    pub successes: i64,
    /// Tasks finished without success (likewise).
    pub failures: i64,
    /// Workers replaced.
    pub reincarnations: i64,
    /// Workers the kernel killed for the pods' memory limit.
    #[serde(default)]
    pub oom_kills: i64,
}
