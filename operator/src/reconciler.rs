//! The reconciler: read → build → apply → status, for each QCluster.
//!
//! Building is a plain function ([`crate::build`]); this file is the I/O
//! around it. A spec the engine refuses is a Stalled condition that waits for
//! a change, never a crash or a hot loop; an apiserver that fails is retried
//! after a pause.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::build::{self, BuildError, Desired, KEY_ENTRY};
use crate::qcluster::{QCluster, QClusterStatus};

/// The field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "q8s-operator";
/// The annotation that stops reconciling a QCluster.
pub const PAUSED: &str = "q8s.io/paused";
/// How often a healthy QCluster is looked at again without a change.
pub const RESYNC: Duration = Duration::from_secs(30);
/// The pause before trying again after the apiserver failed.
pub const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

/// Why a reconcile failed: the apiserver, to be retried.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A call to the apiserver failed.
    #[error("apiserver: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be written as JSON.
    #[error("cannot serialize {0}: {1}")]
    Serialize(&'static str, serde_json::Error),
    /// No randomness for a new signing key.
    #[error("no randomness for a signing key: {0}")]
    Random(String),
}

impl ReconcileError {
    /// A stable name for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            ReconcileError::Kube(_) => "apiserver",
            ReconcileError::Serialize(..) => "serialize",
            ReconcileError::Random(_) => "randomness",
        }
    }
}

/// What every reconcile needs.
pub struct Context {
    /// The apiserver.
    pub client: Client,
    /// The worker image when a spec names none.
    pub image: String,
}

/// Reconciles every QCluster (in `namespace`, or everywhere) until the process is told to stop.
pub async fn run(client: Client, image: String, namespace: Option<String>) {
    let (qclusters, deployments) = match &namespace {
        Some(namespace) => (
            Api::<QCluster>::namespaced(client.clone(), namespace),
            Api::<Deployment>::namespaced(client.clone(), namespace),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let context = Arc::new(Context { client, image });
    Controller::new(qclusters, watcher::Config::default())
        .owns(deployments, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|outcome| async move {
            if let Err(error) = outcome {
                tracing::warn!("reconcile: {error}");
            }
        })
        .await;
}

fn error_policy(qcluster: Arc<QCluster>, error: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::error!(
        qcluster = %qcluster.name_any(),
        category = error.category(),
        "reconcile failed, trying again in {RETRY_AFTER_ERROR:?}: {error}"
    );
    Action::requeue(RETRY_AFTER_ERROR)
}

/// One pass over one QCluster.
pub async fn reconcile(
    qcluster: Arc<QCluster>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = qcluster.namespace().unwrap_or_default();
    let name = qcluster.name_any();
    let client = &context.client;
    let generation = qcluster.metadata.generation;
    let old = qcluster.status.clone().unwrap_or_default();
    if qcluster.annotations().get(PAUSED).map(String::as_str) == Some("true") {
        // Ready and Stalled keep what they last said; only Reconciling changes.
        let mut conditions: Vec<Condition> = old
            .conditions
            .iter()
            .filter(|c| c.type_ != "Reconciling")
            .cloned()
            .collect();
        conditions.push(condition(
            &old,
            "Reconciling",
            false,
            "Paused",
            "the q8s.io/paused annotation is set",
            generation,
        ));
        let status = QClusterStatus {
            observed_generation: generation,
            conditions,
            ..old.clone()
        };
        write_status(client, &namespace, &name, &old, status).await?;
        return Ok(Action::await_change());
    }
    let desired = match build::build(&qcluster, &context.image) {
        Ok(desired) => desired,
        Err(error) => {
            // Invalid input waits for a change; it is not retried.
            let status = stalled(&old, &error, generation);
            write_status(client, &namespace, &name, &old, status).await?;
            return Ok(Action::await_change());
        }
    };
    ensure_signing_key(client, &namespace, &desired.signing_key_secret).await?;
    let deployment = apply_all(client, &namespace, desired).await?;
    let wanted = qcluster.spec.replicas;
    let ready = deployment
        .status
        .as_ref()
        .and_then(|status| status.ready_replicas)
        .unwrap_or(0);
    let all_ready = ready >= wanted;
    let (reason, message) = if all_ready {
        (
            "ClustersReady",
            format!("{ready} of {wanted} clusters ready"),
        )
    } else {
        (
            "ClustersStarting",
            format!("{ready} of {wanted} clusters ready"),
        )
    };
    let status = QClusterStatus {
        observed_generation: generation,
        conditions: vec![
            condition(&old, "Ready", all_ready, reason, &message, generation),
            condition(
                &old,
                "Reconciling",
                !all_ready,
                reason,
                &message,
                generation,
            ),
            condition(
                &old,
                "Stalled",
                false,
                "SpecValid",
                "the spec builds",
                generation,
            ),
        ],
        replicas: Some(wanted),
        ready_replicas: Some(ready),
        selector: Some(
            build::selector_labels(&name)
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
    };
    write_status(client, &namespace, &name, &old, status).await?;
    Ok(Action::requeue(RESYNC))
}

fn stalled(old: &QClusterStatus, error: &BuildError, generation: Option<i64>) -> QClusterStatus {
    let message = error.to_string();
    QClusterStatus {
        observed_generation: generation,
        conditions: vec![
            condition(old, "Ready", false, error.reason(), &message, generation),
            condition(
                old,
                "Reconciling",
                false,
                error.reason(),
                &message,
                generation,
            ),
            condition(old, "Stalled", true, error.reason(), &message, generation),
        ],
        ..old.clone()
    }
}

/// A condition, keeping its last transition time when its status did not change.
fn condition(
    old: &QClusterStatus,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let since = old
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Writes the status unless it is what the object already says.
async fn write_status(
    client: &Client,
    namespace: &str,
    name: &str,
    old: &QClusterStatus,
    status: QClusterStatus,
) -> Result<(), ReconcileError> {
    if *old == status {
        return Ok(());
    }
    let api = Api::<QCluster>::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": "q8s.io/v1alpha1",
        "kind": "QCluster",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Creates the signing-key Secret with a random key when it is absent; never overwrites one.
async fn ensure_signing_key(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(), ReconcileError> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    if api.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| ReconcileError::Random(e.to_string()))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let key = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    FIELD_MANAGER.to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        string_data: Some([(KEY_ENTRY.to_string(), format!("{hex}\n"))].into()),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &key).await {
        Ok(_) => Ok(()),
        // Made meanwhile by someone else: theirs stands.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Server-side applies what a QCluster owns; returns the Deployment as the server has it.
async fn apply_all(
    client: &Client,
    namespace: &str,
    desired: Desired,
) -> Result<Deployment, ReconcileError> {
    let Desired {
        config_map,
        deployment,
        service,
        disruption_budget,
        ..
    } = desired;
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), namespace),
        &config_map,
    )
    .await?;
    apply(
        &Api::<Service>::namespaced(client.clone(), namespace),
        &service,
    )
    .await?;
    if let Some(budget) = &disruption_budget {
        apply(
            &Api::<PodDisruptionBudget>::namespaced(client.clone(), namespace),
            budget,
        )
        .await?;
    }
    apply(
        &Api::<Deployment>::namespaced(client.clone(), namespace),
        &deployment,
    )
    .await
}

async fn apply<K>(api: &Api<K>, object: &K) -> Result<K, ReconcileError>
where
    K: kube::Resource + Serialize + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let name = object.meta().name.clone().unwrap_or_default();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await?)
}
