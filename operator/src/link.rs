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
use crate::observe::{BROKER_TIMEOUT, BrokerProblem, secret_value};
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
    /// Where the runs' results are.
    pub results: Results,
}

/// Where the runs' results can be read.
pub enum Results {
    /// The QCluster's postgres:// store.
    Store(Reader),
    /// The broker's result cache (Redis): only runs with `cached` are there.
    Cache(Arc<dyn ResultCache>, bool),
    /// Nowhere the operator can look, and why.
    Unreadable(String),
}

impl Results {
    /// Why the results of this schedule's runs cannot be read, if they
    /// cannot; `cached` is the spec's (`None`: the QCluster's setting).
    pub fn unreadable(&self, cached: Option<bool>) -> Option<String> {
        match self {
            Results::Store(_) => None,
            Results::Cache(_, cluster_caches) if cached.unwrap_or(*cluster_caches) => None,
            Results::Cache(..) => Some(
                "the QCluster keeps results in each pod's store: set cached on the QSchedule (Redis keeps them), or give the QCluster a postgres:// store".into(),
            ),
            Results::Unreadable(why) => Some(why.clone()),
        }
    }

    /// Whether task `id` succeeded; `None` while it has no result (or none can be read).
    pub async fn success(&self, id: &str) -> Option<bool> {
        let record = match self {
            Results::Store(reader) => reader.fetch(id).await.ok().flatten(),
            Results::Cache(cache, _) => {
                let json = cache.cached_result(id).await.ok().flatten()?;
                serde_json::from_str::<q8s::TaskRecord>(&json).ok()
            }
            Results::Unreadable(_) => None,
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
        let reason = match problem {
            BrokerProblem::Unreachable(_) => "BrokerUnreachable",
            _ => problem.reason(),
        };
        Waiting {
            reason,
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
    let keys: Vec<String> = read(key_secret.clone())
        .await?
        .and_then(|secret| secret.data)
        .and_then(|data| data.get(KEY_ENTRY).cloned())
        .map(|keys| {
            String::from_utf8_lossy(&keys.0)
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_string)
                .collect()
        })
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
    let kind = broker_kind(&config.broker).map_err(|e| BrokerProblem::Unusable(e.to_string()))?;
    match kind {
        BrokerKind::Sqlite => {
            return Err(BrokerProblem::Unusable(
                "a sqlite:// broker is a file in each pod: the operator cannot enqueue on it"
                    .into(),
            )
            .into());
        }
        // Without a way to refuse a repeat, a slot could run twice.
        BrokerKind::Sqs => {
            return Err(BrokerProblem::Unusable(
                    "an SQS queue cannot refuse a package it was given before, so a QSchedule's slots could run twice: schedule on a QCluster with a Redis or PostgreSQL broker".into(),
                )
                .into());
        }
        BrokerKind::Postgres | BrokerKind::Redis => {}
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
    let results = match broker_kind(&config.store_url()) {
        Ok(BrokerKind::Postgres) => match Reader::connect(&config).await {
            Ok(reader) => Results::Store(reader),
            Err(error) => Results::Unreadable(format!("the store: {error}")),
        },
        _ => match q8s::broker::result_cache(&config).await {
            Ok(Some(cache)) => Results::Cache(cache, config.cached != Cached::Off),
            _ => Results::Unreadable(
                "the QCluster keeps results in each pod's store: give it a postgres:// store"
                    .into(),
            ),
        },
    };
    Ok(Link { producer, results })
}
