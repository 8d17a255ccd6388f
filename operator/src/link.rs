//! A QSchedule's way to its QCluster's queue: a producer signing with the
//! QCluster's key on its broker, and where the runs' results can be read.
//!
//! Made from the QCluster's spec and Secrets as its pods see them, kept for
//! [`LINK_TTL`] (a changed QCluster makes a new one at once), so a schedule
//! that runs every second reads no Secret on each run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use q8s::broker::ResultCache;
use q8s::config::{BrokerKind, broker_kind};
use q8s::task::Cached;
use q8s::{Producer, Reader};

use crate::build::{self, KEY_ENTRY};
use crate::observe::{BROKER_TIMEOUT, BrokerProblem, secret_value, shared_broker_kind};
use crate::qcluster::QCluster;

/// How long a QCluster's producer is kept before its Secrets are read again.
pub const LINK_TTL: Duration = Duration::from_secs(60);

/// The links made, by QCluster and generation.
#[derive(Default)]
pub struct Links {
    links: Mutex<HashMap<String, (Arc<Link>, Instant)>>,
}

/// What a QSchedule's runs go through: its QCluster's producer, and where
/// their results can be read, when the operator can read them.
pub struct Link {
    /// Signs and enqueues the runs.
    pub producer: Producer,
    /// The QCluster's store, when it is a postgres:// one the operator reaches.
    store: Result<Reader, String>,
    /// The broker's result cache (Redis), when it has one.
    cache: Option<Arc<dyn ResultCache>>,
    /// Whether the QCluster caches results unless a task says otherwise.
    cluster_caches: bool,
    /// Whether the QCluster's store keeps successes (`saveLimit` is not -1).
    saves_successes: bool,
}

/// Where one QSchedule's run results go, as its own `cached` and `save` say.
pub enum Results<'a> {
    /// The QCluster's store.
    Store(&'a Reader),
    /// The broker's result cache.
    Cache(&'a Arc<dyn ResultCache>),
}

impl Link {
    /// Where the results of runs with the QSchedule's `cached` and `save`
    /// (`None`: the QCluster's settings) go, or why the operator cannot read them.
    pub fn results(&self, cached: Option<bool>, save: Option<bool>) -> Result<Results<'_>, String> {
        if cached.unwrap_or(self.cluster_caches) {
            return self.cache.as_ref().map(Results::Cache).ok_or_else(|| {
                "results are cached, but the broker keeps no cache (only Redis does)".to_string()
            });
        }
        let store = self.store.as_ref().map_err(Clone::clone)?;
        if !save.unwrap_or(self.saves_successes) {
            return Err(
                "the QCluster saves no successes (saveLimit -1): set save: true or cached on the QSchedule".into(),
            );
        }
        Ok(Results::Store(store))
    }
}

impl Results<'_> {
    /// Whether task `id` succeeded; `None` while it has no result.
    pub async fn success(&self, id: &str) -> Option<bool> {
        let record = match self {
            Results::Store(reader) => reader.store().fetch(id).await.ok().flatten(),
            Results::Cache(cache) => {
                let json = cache.cached_result(id).await.ok().flatten()?;
                serde_json::from_str::<q8s::TaskRecord>(&json).ok()
            }
        };
        record.map(|record| record.success)
    }
}

/// Why a schedule waits: its Stalled condition's reason and message.
pub struct Waiting {
    /// The reason.
    pub reason: &'static str,
    /// The message.
    pub message: String,
}

impl From<BrokerProblem> for Waiting {
    fn from(problem: BrokerProblem) -> Waiting {
        Waiting {
            reason: problem.reason(),
            message: format!("the QCluster's broker: {problem}"),
        }
    }
}

impl Links {
    /// The producer (and results) of `qcluster`'s queue, kept for [`LINK_TTL`].
    pub async fn get(&self, client: &Client, qcluster: &QCluster) -> Result<Arc<Link>, Waiting> {
        let key = format!(
            "{}/{}/{}",
            qcluster.namespace().unwrap_or_default(),
            qcluster.name_any(),
            qcluster.metadata.generation.unwrap_or_default()
        );
        {
            let mut links = self
                .links
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            links.retain(|_, (_, made)| made.elapsed() < LINK_TTL);
            if let Some((link, _)) = links.get(&key) {
                return Ok(link.clone());
            }
        }
        let link = Arc::new(connect(client, qcluster).await?);
        self.links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, (link.clone(), Instant::now()));
        Ok(link)
    }
}

/// Reads `qcluster`'s Secrets and connects to its broker (and store).
async fn connect(client: &Client, qcluster: &QCluster) -> Result<Link, Waiting> {
    let namespace = qcluster.namespace().unwrap_or_default();
    let (_, pods) = build::pods_config(qcluster).map_err(|error| Waiting {
        reason: "ClusterInvalid",
        message: format!("the QCluster's spec does not build: {error}"),
    })?;
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let read = |name: String| {
        let secrets = secrets.clone();
        async move {
            secrets.get_opt(&name).await.map_err(|error| Waiting {
                reason: "BrokerUnreachable",
                message: format!("cannot read Secret {name}: {error}"),
            })
        }
    };
    let spec = &qcluster.spec;
    let broker = secret_value(
        read(spec.broker.name.clone()).await?.as_ref(),
        &spec.broker,
        "broker",
    )?;
    let store = match &spec.store {
        Some(selector) => Some(secret_value(
            read(selector.name.clone()).await?.as_ref(),
            selector,
            "store",
        )?),
        None => None,
    };
    let key_secret = build::signing_key_secret(qcluster);
    let keys = read(key_secret.clone())
        .await?
        .and_then(|secret| secret.data)
        .and_then(|data| data.get(KEY_ENTRY).cloned())
        .map(|keys| q8s::config::key_lines(&String::from_utf8_lossy(&keys.0)))
        .unwrap_or_default();
    if keys.is_empty() {
        return Err(Waiting {
            reason: "SigningKeyMissing",
            message: format!(
                "Secret {key_secret} holds no signing key yet (the operator makes it with the QCluster)"
            ),
        });
    }
    let config = q8s::Config {
        broker,
        store,
        secret_key: keys,
        secret_key_file: None,
        ..pods
    };
    // Without a way to refuse a repeat, a slot could run twice.
    if shared_broker_kind(&config.broker)? == BrokerKind::Sqs {
        return Err(BrokerProblem::Unusable(
            "an SQS queue cannot refuse a package it was given before, so a QSchedule's slots could run twice: schedule on a QCluster with a Redis or PostgreSQL broker".into(),
        )
        .into());
    }
    let connected = tokio::time::timeout(BROKER_TIMEOUT, Producer::connect(config.clone()))
        .await
        .map_err(|_| BrokerProblem::Unreachable(format!("no answer within {BROKER_TIMEOUT:?}")))?;
    let producer = connected.map_err(|error| match &error {
        q8s::ClientError::Broker(broker) if broker.is_usage() => {
            BrokerProblem::Unusable(error.to_string())
        }
        _ => BrokerProblem::Unreachable(error.to_string()),
    })?;
    let store = match broker_kind(&config.store_url()) {
        Ok(BrokerKind::Postgres) => Reader::connect(&config)
            .await
            .map_err(|error| format!("the QCluster's store: {error}")),
        _ => Err("the QCluster keeps results in each pod's store: give it a postgres:// store, or set cached on the QSchedule (with a Redis broker)".into()),
    };
    let cache = q8s::broker::result_cache(&config).await.ok().flatten();
    Ok(Link {
        producer,
        store,
        cache,
        cluster_caches: config.cached != Cached::Off,
        saves_successes: config.save_limit >= 0,
    })
}
