//! The reconciler: read → build → apply → status, for each QCluster.
//!
//! Building is a plain function ([`crate::build`]); this file is the I/O
//! around it. A spec the engine refuses is a Stalled condition that waits for
//! a change, never a crash or a hot loop; an apiserver that fails is retried
//! after a pause.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, SecretKeySelector, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::build::{self, BuildError, Desired, KEY_ENTRY, MANAGED_BY};
use crate::conditions::{condition, holds};
use crate::metrics::Telemetry;
use crate::observe::{self, BrokerProblem, Connections, Observation};
use crate::qcluster::{QCluster, QClusterStatus};

/// The field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = build::OPERATOR;
/// The annotation that stops reconciling a QCluster.
pub const PAUSED: &str = "q8s.io/paused";
/// How often a healthy QCluster is looked at again without a change.
pub const RESYNC: Duration = Duration::from_secs(30);
/// How often what a QCluster owns is applied again though nothing changed (others
/// may have edited an object), and its signing keys read again.
pub const REAPPLY: Duration = Duration::from_secs(300);
/// How often the status of a QCluster with live clusters is refreshed from their Stat.
pub const STAT_REFRESH: Duration = Duration::from_secs(2);
/// How long a Secret read is used before it is read again.
pub const SECRET_TTL: Duration = Duration::from_secs(10);
/// How often an unreachable broker (or its missing Secret) is tried again.
pub const BROKER_RETRY: Duration = Duration::from_secs(10);
/// The pause before trying again after the apiserver failed once; it doubles with each failure in a row.
pub const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);
/// The longest pause between two failing passes.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long the operator remembers a QCluster it has not reconciled.
///
/// A deleted one is never reconciled again; forgetting a live one (paused, or
/// stalled on a bad spec) costs no more than one apply when it comes back.
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// How often the memory is looked through for QClusters to forget.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

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

/// What every reconcile needs, and what the operator remembers between passes.
pub struct Context {
    /// The apiserver.
    pub client: Client,
    /// The worker image when a spec names none.
    pub image: String,
    /// How often owned objects are applied again with nothing changed ([`REAPPLY`]).
    pub reapply: Duration,
    /// Open connections to the QClusters' brokers.
    pub connections: Connections,
    /// Where events go.
    pub recorder: Recorder,
    /// The Deployments the operator manages, as its watch last saw them.
    pub deployments: Store<Deployment>,
    /// Metrics and health.
    pub telemetry: Arc<Telemetry>,
    memory: Mutex<Memories>,
    secrets: Mutex<HashMap<String, (Option<Secret>, Instant)>>,
}

/// What the operator remembers of one QCluster.
#[derive(Debug, Default)]
struct Memory {
    /// The fingerprint of what was last applied, and when.
    applied: Option<(String, Instant)>,
    /// The hash of the signing keys, as last read.
    keys: String,
    /// Passes that failed in a row, for the backoff.
    failures: u32,
}

/// What the operator remembers of each QCluster, and when each was last touched.
#[derive(Debug)]
struct Memories {
    entries: HashMap<String, (Memory, Instant)>,
    pruned: Instant,
}

impl Memories {
    fn new(now: Instant) -> Memories {
        Memories {
            entries: HashMap::new(),
            pruned: now,
        }
    }

    /// The memory of QCluster `key`, touched at `now`; first, at most once
    /// every [`PRUNE_EVERY`], those untouched for [`FORGET_AFTER`] are dropped.
    fn touch(&mut self, key: &str, now: Instant) -> &mut Memory {
        if now.saturating_duration_since(self.pruned) >= PRUNE_EVERY {
            self.entries
                .retain(|_, (_, touched)| now.saturating_duration_since(*touched) < FORGET_AFTER);
            self.pruned = now;
        }
        let (memory, touched) = self
            .entries
            .entry(key.to_string())
            .or_insert_with(|| (Memory::default(), now));
        *touched = now;
        memory
    }
}

impl Context {
    /// A context for reconciling through `client`, `image` being the default
    /// worker image, reading Deployments from `deployments`.
    pub fn new(
        client: Client,
        image: String,
        deployments: Store<Deployment>,
        telemetry: Arc<Telemetry>,
    ) -> Context {
        let recorder = Recorder::new(client.clone(), Reporter::from(FIELD_MANAGER));
        Context {
            client,
            image,
            reapply: REAPPLY,
            connections: Connections::default(),
            recorder,
            deployments,
            telemetry,
            memory: Mutex::new(Memories::new(Instant::now())),
            secrets: Mutex::new(HashMap::new()),
        }
    }

    /// A Secret, read again when the last reading is older than [`SECRET_TTL`]
    /// or `fresh` is asked for (after the broker it names failed).
    async fn secret(
        &self,
        namespace: &str,
        name: &str,
        fresh: bool,
    ) -> Result<Option<Secret>, ReconcileError> {
        let key = format!("{namespace}/{name}");
        let lock = || {
            self.secrets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if !fresh
            && let Some((secret, at)) = lock().get(&key)
            && at.elapsed() < SECRET_TTL
        {
            return Ok(secret.clone());
        }
        let secret = Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await?;
        let mut secrets = lock();
        secrets.retain(|_, (_, at)| at.elapsed() < SECRET_TTL);
        secrets.insert(key, (secret.clone(), Instant::now()));
        Ok(secret)
    }

    fn remember<T>(&self, key: &str, change: impl FnOnce(&mut Memory) -> T) -> T {
        let mut memory = self
            .memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(memory.touch(key, Instant::now()))
    }
}

/// Reconciles every QCluster (in `namespace`, or everywhere) until the future
/// is dropped, applying owned objects again every `reapply` with nothing changed.
pub async fn run(
    client: Client,
    image: String,
    namespace: Option<String>,
    reapply: Duration,
    telemetry: Arc<Telemetry>,
) {
    let (qclusters, deployments) = match &namespace {
        Some(namespace) => (
            Api::<QCluster>::namespaced(client.clone(), namespace),
            Api::<Deployment>::namespaced(client.clone(), namespace),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    // Only the Deployments the operator made are watched and kept in memory.
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY}={FIELD_MANAGER}"));
    let (store, writer) = reflector::store();
    let owned = watcher(deployments, managed)
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let mut context = Context::new(client, image, store, telemetry.clone());
    context.reapply = reapply;
    let context = Arc::new(context);
    let controller = Controller::new(qclusters, watcher::Config::default());
    telemetry.watching(controller.store());
    controller
        .owns_stream(owned)
        .run(reconcile, error_policy, context)
        .for_each(|outcome| async move {
            match outcome {
                // error_policy logged it, with its category and backoff.
                Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => tracing::warn!("controller: {error}"),
            }
        })
        .await;
}

/// After a failure: try again, waiting twice as long each time it fails in a row.
fn error_policy(qcluster: Arc<QCluster>, error: &ReconcileError, context: Arc<Context>) -> Action {
    let failures = context.remember(&key_of(&qcluster), |memory| {
        memory.failures = memory.failures.saturating_add(1);
        memory.failures
    });
    let pause = backoff(failures);
    context.telemetry.metrics.failed(error.category());
    if matches!(error, ReconcileError::Kube(_)) {
        context.telemetry.set_apiserver(false);
    }
    tracing::error!(
        qcluster = %key_of(&qcluster),
        category = error.category(),
        "reconcile failed ({failures} in a row), trying again in {pause:?}: {error}"
    );
    Action::requeue(pause)
}

/// The pause after `failures` failed passes in a row: 5 s, doubling, at most [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    RETRY_AFTER_ERROR
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(MAX_BACKOFF)
}

fn key_of(qcluster: &QCluster) -> String {
    format!(
        "{}/{}",
        qcluster.namespace().unwrap_or_default(),
        qcluster.name_any()
    )
}

/// One pass over one QCluster: read → build → apply → observe → status.
pub async fn reconcile(
    qcluster: Arc<QCluster>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let outcome = pass(&qcluster, &context).await;
    let metrics = &context.telemetry.metrics;
    metrics.duration.observe(started.elapsed().as_secs_f64());
    let (action, outcome) = outcome?;
    metrics.reconciled(outcome);
    context.telemetry.set_apiserver(true);
    context.remember(&key_of(&qcluster), |memory| memory.failures = 0);
    Ok(action)
}

/// One pass; the action and the outcome it counts as.
async fn pass(
    qcluster: &QCluster,
    context: &Context,
) -> Result<(Action, &'static str), ReconcileError> {
    let namespace = qcluster.namespace().unwrap_or_default();
    let name = qcluster.name_any();
    let client = &context.client;
    let generation = qcluster.metadata.generation;
    let old = qcluster.status.clone().unwrap_or_default();
    if qcluster.annotations().get(PAUSED).map(String::as_str) == Some("true") {
        write_status(client, &namespace, &name, &old, paused(&old, generation)).await?;
        return Ok((Action::await_change(), "paused"));
    }
    let key = key_of(qcluster);
    // Built with the signing keys as last read; they are read again (and the
    // objects rebuilt when they changed) whenever the objects are applied.
    let keys = context.remember(&key, |memory| memory.keys.clone());
    let mut desired = match build::build(qcluster, &context.image, &keys) {
        Ok(desired) => desired,
        Err(error) => {
            // Invalid input waits for a change; it is not retried.
            let status = stalled(&old, &error, generation);
            if !holds(&old.conditions, "Stalled", "True") {
                publish(
                    context,
                    qcluster,
                    EventType::Warning,
                    "InvalidSpec",
                    &error.to_string(),
                )
                .await;
            }
            write_status(client, &namespace, &name, &old, status).await?;
            return Ok((Action::await_change(), "stalled"));
        }
    };

    let current = context
        .deployments
        .get(&ObjectRef::new(&name).within(&namespace))
        .map(|deployment| deployment.as_ref().clone());
    let fresh = current
        .as_ref()
        .is_some_and(|current| !needs_apply(context, &key, current, &desired));
    let deployment = match current {
        Some(current) if fresh => current,
        current => {
            let keys_now =
                ensure_signing_key(context, &namespace, &desired.signing_key_secret).await?;
            if keys_now != keys {
                context.remember(&key, |memory| memory.keys = keys_now.clone());
                // The same spec built a moment ago: it builds again.
                if let Ok(rebuilt) = build::build(qcluster, &context.image, &keys_now) {
                    desired = rebuilt;
                }
            }
            announce_changes(context, qcluster, current.as_ref(), &desired).await;
            let applied = apply_all(client, &namespace, &desired).await?;
            let fingerprint = desired.fingerprint();
            context.remember(&key, |memory| {
                memory.applied = Some((fingerprint, Instant::now()));
            });
            applied
        }
    };

    let failed_before = holds(&old.conditions, "BrokerReachable", "False");
    let observed = observe(
        context,
        &namespace,
        qcluster,
        &desired.config,
        failed_before,
    )
    .await?;
    let status = fleet_status(&old, qcluster, &deployment, &observed);
    announce_oom_kills(context, qcluster, &old, &status).await;
    match (&observed, failed_before) {
        (Err(problem), false) => {
            publish(
                context,
                qcluster,
                EventType::Warning,
                problem.reason(),
                &problem.to_string(),
            )
            .await;
        }
        (Ok(_), true) => {
            publish(
                context,
                qcluster,
                EventType::Normal,
                "BrokerReachable",
                "the broker answers again",
            )
            .await;
        }
        _ => {}
    }
    // A queue that is worked, or has clusters, is watched every few seconds;
    // one scaled to nothing only on a change or a resync.
    let watched = qcluster.spec.replicas > 0 || !status.clusters.is_empty();
    let outcome = if holds(&status.conditions, "Ready", "True") {
        "ready"
    } else {
        "progressing"
    };
    write_status(client, &namespace, &name, &old, status).await?;
    Ok(match observed {
        Err(_) => (Action::requeue(BROKER_RETRY), "broker_unreachable"),
        Ok(_) if watched => (Action::requeue(STAT_REFRESH), outcome),
        Ok(_) => (Action::requeue(RESYNC), outcome),
    })
}

/// Whether what a QCluster owns must be applied: it changed, the Deployment
/// differs from it, or the last apply is older than `reapply` (others may
/// have edited an object, or rotated the signing keys).
fn needs_apply(context: &Context, key: &str, current: &Deployment, desired: &Desired) -> bool {
    let applied = context.remember(key, |memory| memory.applied.clone());
    let fresh = applied
        .is_some_and(|(last, at)| last == desired.fingerprint() && at.elapsed() < context.reapply);
    !fresh
        || build::template_hash_of(current) != desired.template_hash()
        || replicas(current) != replicas(&desired.deployment)
}

fn replicas(deployment: &Deployment) -> Option<i32> {
    deployment.spec.as_ref().and_then(|spec| spec.replicas)
}

/// Events for what applying `desired` over `current` changes: a scale, a rollout.
async fn announce_changes(
    context: &Context,
    qcluster: &QCluster,
    current: Option<&Deployment>,
    desired: &Desired,
) {
    let Some(current) = current else {
        return;
    };
    if let (Some(from), Some(to)) = (replicas(current), replicas(&desired.deployment))
        && from != to
    {
        publish(
            context,
            qcluster,
            EventType::Normal,
            "Scaled",
            &format!("from {from} to {to} clusters"),
        )
        .await;
    }
    if build::template_hash_of(current).is_some()
        && build::template_hash_of(current) != desired.template_hash()
    {
        publish(
            context,
            qcluster,
            EventType::Normal,
            "RollingOut",
            "the pods' template changed (q8s.toml, image or pod settings): new clusters replace the old one by one",
        )
        .await;
    }
}

/// Reads the broker (and store) URLs from their Secrets and what the broker
/// says; the inner error is a condition, the outer one the apiserver failing.
async fn observe(
    context: &Context,
    namespace: &str,
    qcluster: &QCluster,
    pods: &q8s::Config,
    fresh: bool,
) -> Result<Result<Observation, BrokerProblem>, ReconcileError> {
    let secret_text = |selector, what| secret_text(context, namespace, selector, what, fresh);
    let broker = match secret_text(&qcluster.spec.broker, "broker").await? {
        Ok(url) => url,
        Err(problem) => return Ok(Err(problem)),
    };
    let store = match &qcluster.spec.store {
        Some(selector) => match secret_text(selector, "store").await? {
            Ok(url) => Some(url),
            Err(problem) => return Ok(Err(problem)),
        },
        None => None,
    };
    let config = q8s::Config {
        broker,
        store,
        ..pods.clone()
    };
    Ok(context.connections.observe(&config).await)
}

/// The text a Secret holds under a key, trimmed; a missing Secret or key is a problem to report.
async fn secret_text(
    context: &Context,
    namespace: &str,
    selector: &SecretKeySelector,
    what: &'static str,
    fresh: bool,
) -> Result<Result<String, BrokerProblem>, ReconcileError> {
    let secret = context.secret(namespace, &selector.name, fresh).await?;
    Ok(observe::secret_value(secret.as_ref(), selector, what))
}

/// The status of a QCluster whose spec builds: its Deployment's progress and what its broker says.
pub fn fleet_status(
    old: &QClusterStatus,
    qcluster: &QCluster,
    deployment: &Deployment,
    observed: &Result<Observation, BrokerProblem>,
) -> QClusterStatus {
    let generation = qcluster.metadata.generation;
    let wanted = qcluster.spec.replicas;
    let progress = deployment.status.clone().unwrap_or_default();
    let ready = progress.ready_replicas.unwrap_or(0);
    let updated = progress.updated_replicas.unwrap_or(0);
    let seen = progress.observed_generation >= deployment.metadata.generation;
    let rolled = seen && updated >= wanted && progress.replicas.unwrap_or(0) <= wanted;
    let (pods_ready, reason, message) = if !rolled {
        (
            false,
            "RollingOut",
            format!("{updated} of {wanted} clusters run the current template"),
        )
    } else if ready < wanted {
        (
            false,
            "ClustersStarting",
            format!("{ready} of {wanted} clusters ready"),
        )
    } else {
        (
            true,
            "ClustersReady",
            format!("{ready} of {wanted} clusters ready"),
        )
    };
    let (reachable, entries, totals, state) = match observed {
        Ok(observation) => {
            let (entries, totals) =
                observe::entries_and_totals(&observation.stats, Some(observation.queued));
            let message = observation
                .no_board
                .clone()
                .unwrap_or_else(|| "the broker and the clusters' Stat board answer".into());
            (
                condition(
                    &old.conditions,
                    "BrokerReachable",
                    true,
                    "BrokerAnswers",
                    &message,
                    generation,
                ),
                entries,
                Some(totals),
                observe::fleet_state(&observation.stats, wanted),
            )
        }
        Err(problem) => (
            condition(
                &old.conditions,
                "BrokerReachable",
                false,
                problem.reason(),
                &problem.to_string(),
                generation,
            ),
            Vec::new(),
            None,
            "BrokerUnreachable",
        ),
    };
    let ready_condition = match observed {
        Err(problem) if pods_ready => condition(
            &old.conditions,
            "Ready",
            false,
            problem.reason(),
            &problem.to_string(),
            generation,
        ),
        _ => condition(
            &old.conditions,
            "Ready",
            pods_ready,
            reason,
            &message,
            generation,
        ),
    };
    QClusterStatus {
        observed_generation: generation,
        conditions: vec![
            ready_condition,
            condition(
                &old.conditions,
                "Reconciling",
                !pods_ready,
                reason,
                &message,
                generation,
            ),
            condition(
                &old.conditions,
                "Stalled",
                false,
                "SpecValid",
                "the spec builds",
                generation,
            ),
            reachable,
        ],
        replicas: Some(wanted),
        ready_replicas: Some(ready),
        selector: Some(
            build::selector_labels(&qcluster.name_any())
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        state: Some(state.into()),
        clusters: entries,
        totals,
    }
}

fn paused(old: &QClusterStatus, generation: Option<i64>) -> QClusterStatus {
    // Ready, Stalled and BrokerReachable keep what they last said; only Reconciling changes.
    let mut conditions: Vec<Condition> = old
        .conditions
        .iter()
        .filter(|c| c.type_ != "Reconciling")
        .cloned()
        .collect();
    conditions.push(condition(
        &old.conditions,
        "Reconciling",
        false,
        "Paused",
        "the q8s.io/paused annotation is set",
        generation,
    ));
    QClusterStatus {
        observed_generation: generation,
        conditions,
        state: Some("Paused".into()),
        ..old.clone()
    }
}

fn stalled(old: &QClusterStatus, error: &BuildError, generation: Option<i64>) -> QClusterStatus {
    let message = error.to_string();
    QClusterStatus {
        observed_generation: generation,
        conditions: vec![
            condition(
                &old.conditions,
                "Ready",
                false,
                error.reason(),
                &message,
                generation,
            ),
            condition(
                &old.conditions,
                "Reconciling",
                false,
                error.reason(),
                &message,
                generation,
            ),
            condition(
                &old.conditions,
                "Stalled",
                true,
                error.reason(),
                &message,
                generation,
            ),
        ],
        state: Some("Stalled".into()),
        ..old.clone()
    }
}

/// A warning for each cluster whose workers the kernel killed for the pod's
/// memory limit since the last status: the container lives on (its sentinel
/// replaces the worker), so the pod's own status never says so.
async fn announce_oom_kills(
    context: &Context,
    qcluster: &QCluster,
    old: &QClusterStatus,
    new: &QClusterStatus,
) {
    let limit = qcluster
        .spec
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|limits| limits.get("memory"))
        .map_or_else(String::new, |quantity| format!(" ({})", quantity.0));
    for entry in &new.clusters {
        let before = old
            .clusters
            .iter()
            .find(|o| o.pod == entry.pod && o.cluster_id == entry.cluster_id)
            .map_or(0, |o| o.oom_kills);
        if entry.oom_kills > before {
            let note = format!(
                "pod {}: the kernel killed {} worker(s) for the pod's memory limit{limit}; their tasks go back to the queue. Raise spec.resources.limits.memory, lower workers, or set maxRss below the limit so workers are replaced first",
                entry.pod,
                entry.oom_kills - before
            );
            publish(context, qcluster, EventType::Warning, "OutOfMemory", &note).await;
        }
    }
}

/// Publishes an event about `qcluster`.
async fn publish(
    context: &Context,
    qcluster: &QCluster,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    crate::events::publish(
        &context.recorder,
        qcluster,
        "Reconcile",
        type_,
        reason,
        note,
    )
    .await;
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

/// Creates the signing-key Secret with a random key when it is absent (never
/// overwrites one); returns the [`build::keys_hash`] of the keys it holds.
async fn ensure_signing_key(
    context: &Context,
    namespace: &str,
    name: &str,
) -> Result<String, ReconcileError> {
    let keys_of = |secret: &Secret| {
        let keys = secret.data.as_ref().and_then(|data| data.get(KEY_ENTRY));
        build::keys_hash(keys.map_or(&[][..], |keys| keys.0.as_slice()))
    };
    // Read fresh: this is where a rotation is noticed.
    if let Some(secret) = context.secret(namespace, name, true).await? {
        return Ok(keys_of(&secret));
    }
    let api = Api::<Secret>::namespaced(context.client.clone(), namespace);
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| ReconcileError::Random(e.to_string()))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let key = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some([(MANAGED_BY.to_string(), FIELD_MANAGER.to_string())].into()),
            ..ObjectMeta::default()
        },
        string_data: Some([(KEY_ENTRY.to_string(), format!("{hex}\n"))].into()),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &key).await {
        Ok(created) => Ok(keys_of(&created)),
        // Made meanwhile by someone else: theirs stands.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(keys_of(&api.get(name).await?)),
        Err(error) => Err(error.into()),
    }
}

/// Server-side applies what a QCluster owns; returns the Deployment as the server has it.
async fn apply_all(
    client: &Client,
    namespace: &str,
    desired: &Desired,
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
        config_map,
    )
    .await?;
    apply(
        &Api::<Service>::namespaced(client.clone(), namespace),
        service,
    )
    .await?;
    let budgets = Api::<PodDisruptionBudget>::namespaced(client.clone(), namespace);
    match disruption_budget {
        Some(budget) => {
            apply(&budgets, budget).await?;
        }
        // Scaled down to one cluster: a budget would block draining its node.
        None => match budgets
            .delete(&deployment.name_any(), &Default::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        },
    }
    apply(
        &Api::<Deployment>::namespaced(client.clone(), namespace),
        deployment,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qcluster_untouched_for_forget_after_is_forgotten_and_a_live_one_kept() {
        let start = Instant::now();
        let mut memories = Memories::new(start);
        memories.touch("default/deleted", start).failures = 3;
        memories.touch("default/live", start).failures = 1;
        memories.touch("default/live", start + FORGET_AFTER / 2);
        let after = start + FORGET_AFTER + Duration::from_secs(1);
        assert_eq!(memories.touch("default/live", after).failures, 1);
        assert!(
            !memories.entries.contains_key("default/deleted"),
            "{memories:?}"
        );
        // A QCluster seen again starts afresh.
        assert_eq!(memories.touch("default/deleted", after).failures, 0);
    }
}
