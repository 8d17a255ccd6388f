//! The read step's broker side: what a QCluster's live clusters say in their
//! Stat, and what waits in its broker, turned into status entries and totals.
//!
//! Connections are kept between passes (one per broker, store and queue) so a
//! refresh every few seconds costs a few reads, not a new connection; one that
//! fails is dropped and made again on the next pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Secret, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use q8s::config::{BrokerKind, broker_kind, redact};
use q8s::stat::{SqlBoard, StatBoard};
use q8s::store::Database;
use q8s::{Broker, Config, Stat, State};

use crate::qcluster::{ClusterEntry, Totals};

/// How long the broker or store may take to answer one pass.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection no QCluster used for this long is closed.
const IDLE_CONNECTION: Duration = Duration::from_secs(600);

/// Why the operator cannot read a QCluster's broker: the reason and message of
/// its BrokerReachable condition.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BrokerProblem {
    /// The Secret a URL is read from does not exist.
    #[error(
        "Secret {secret} does not exist; create it with the key {key} holding the {what}'s URL"
    )]
    SecretNotFound {
        /// The Secret's name.
        secret: String,
        /// The key it should hold.
        key: String,
        /// `broker` or `store`.
        what: &'static str,
    },
    /// The Secret exists without the key.
    #[error("Secret {secret} has no key {key}; add the {what}'s URL under it, or name another key")]
    KeyMissing {
        /// The Secret's name.
        secret: String,
        /// The missing key.
        key: String,
        /// `broker` or `store`.
        what: &'static str,
    },
    /// The URL is not one q8s has a broker for, or is pod-local.
    #[error("{0}")]
    Unusable(String),
    /// The broker or store did not answer, or refused.
    #[error("{0}")]
    Unreachable(String),
}

impl BrokerProblem {
    /// The condition's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            BrokerProblem::SecretNotFound { .. } => "SecretNotFound",
            BrokerProblem::KeyMissing { .. } => "SecretKeyMissing",
            BrokerProblem::Unusable(_) => "BrokerUnusable",
            BrokerProblem::Unreachable(_) => "BrokerUnreachable",
        }
    }
}

/// The text `secret` holds under the selector's key, trimmed: the URL of the
/// `what` (`broker` or `store`); a missing Secret or key is a problem to report.
pub fn secret_value(
    secret: Option<&Secret>,
    selector: &SecretKeySelector,
    what: &'static str,
) -> Result<String, BrokerProblem> {
    let Some(secret) = secret else {
        return Err(BrokerProblem::SecretNotFound {
            secret: selector.name.clone(),
            key: selector.key.clone(),
            what,
        });
    };
    let Some(bytes) = secret
        .data
        .as_ref()
        .and_then(|data| data.get(&selector.key))
    else {
        return Err(BrokerProblem::KeyMissing {
            secret: selector.name.clone(),
            key: selector.key.clone(),
            what,
        });
    };
    match std::str::from_utf8(&bytes.0) {
        Ok(text) => Ok(text.trim().to_string()),
        Err(_) => Err(BrokerProblem::Unusable(format!(
            "the key {} of Secret {} is not text; it must hold the {what}'s URL",
            selector.key, selector.name
        ))),
    }
}

/// What the broker and the Stat board said in one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Packages waiting in the broker.
    pub queued: u64,
    /// The queue's live clusters.
    pub stats: Vec<Stat>,
    /// Why there are no Stats to read, when the clusters keep them where the operator cannot look.
    pub no_board: Option<String>,
}

/// What one QCluster's passes read from.
#[derive(Clone)]
struct Sources {
    queue: Arc<dyn Broker>,
    board: Option<Arc<dyn StatBoard>>,
    no_board: Option<String>,
}

struct Connection {
    sources: Sources,
    used: Instant,
}

/// The operator's open connections to QClusters' brokers and stores.
#[derive(Default)]
pub struct Connections {
    open: Mutex<HashMap<String, Connection>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.open.lock().map(|open| open.len()).unwrap_or(0);
        write!(f, "Connections({open} open)")
    }
}

impl Connections {
    /// Reads the queue's size and its live clusters' Stats, for the clusters `config` describes.
    pub async fn observe(&self, config: &Config) -> Result<Observation, BrokerProblem> {
        let key = format!("{}\n{}\n{}", config.broker, config.store_url(), config.name);
        let Sources {
            queue,
            board,
            no_board,
        } = match self.cached(&key) {
            Some(sources) => sources,
            None => {
                let sources = within(connect(config)).await?;
                self.keep(key.clone(), sources.clone());
                sources
            }
        };
        let read = async {
            let queued = queue
                .queue_size()
                .await
                .map_err(|e| BrokerProblem::Unreachable(e.to_string()))?;
            let stats = match &board {
                Some(board) => Stat::all(board.as_ref())
                    .await
                    .map_err(|e| BrokerProblem::Unreachable(e.to_string()))?,
                None => Vec::new(),
            };
            Ok(Observation {
                queued,
                stats: stats
                    .into_iter()
                    .filter(|stat| stat.name == config.name)
                    .collect(),
                no_board,
            })
        };
        let observed = within(read).await;
        if observed.is_err() {
            self.forget(&key);
        }
        observed
    }

    fn cached(&self, key: &str) -> Option<Sources> {
        let mut open = self.open.lock().ok()?;
        let connection = open.get_mut(key)?;
        connection.used = Instant::now();
        Some(connection.sources.clone())
    }

    fn keep(&self, key: String, sources: Sources) {
        if let Ok(mut open) = self.open.lock() {
            open.retain(|_, c| c.used.elapsed() < IDLE_CONNECTION);
            let used = Instant::now();
            open.insert(key, Connection { sources, used });
        }
    }

    fn forget(&self, key: &str) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(key);
        }
    }
}

async fn within<T>(
    work: impl Future<Output = Result<T, BrokerProblem>>,
) -> Result<T, BrokerProblem> {
    tokio::time::timeout(BROKER_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(BrokerProblem::Unreachable(format!(
                "no answer within {BROKER_TIMEOUT:?}"
            )))
        })
}

/// The kind of a QCluster's broker, refused when its pods could not share it
/// (a sqlite:// file is in each pod) or the URL names no broker.
pub fn shared_broker_kind(url: &str) -> Result<BrokerKind, BrokerProblem> {
    let kind = broker_kind(url).map_err(|e| {
        BrokerProblem::Unusable(format!(
            "{e}; the broker Secret must hold a redis://, postgres:// or sqs:// URL"
        ))
    })?;
    if kind == BrokerKind::Sqlite {
        return Err(BrokerProblem::Unusable(format!(
            "{} is a file in each pod: the clusters cannot share it; use redis://, postgres:// or sqs://",
            redact(url)
        )));
    }
    Ok(kind)
}

async fn connect(config: &Config) -> Result<Sources, BrokerProblem> {
    shared_broker_kind(&config.broker)?;
    let opened = q8s::broker::connect(config, None)
        .await
        .map_err(|e| BrokerProblem::Unreachable(e.to_string()))?;
    let store = config.store_url();
    let (board, no_board) = match (&opened.board, broker_kind(&store)) {
        (Some(board), _) => (Some(board.clone()), None),
        (None, Ok(BrokerKind::Postgres)) => {
            let database = Database::connect(&store)
                .await
                .map_err(|e| BrokerProblem::Unreachable(format!("the store: {e}")))?;
            (
                Some(Arc::new(SqlBoard(database)) as Arc<dyn StatBoard>),
                None,
            )
        }
        (None, _) => (
            None,
            Some(format!(
                "the clusters keep their Stat in the store {}, which is in each pod; give a postgres:// store to see them",
                redact(&store)
            )),
        ),
    };
    Ok(Sources {
        queue: opened.queue,
        board,
        no_board,
    })
}

/// A count as the status holds it (Kubernetes' integers are int64).
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The status entries of `stats`, by pod, and the fleet's totals with `queued`.
pub fn entries_and_totals(stats: &[Stat], queued: Option<u64>) -> (Vec<ClusterEntry>, Totals) {
    let mut entries: Vec<ClusterEntry> = stats
        .iter()
        .map(|stat| ClusterEntry {
            pod: stat.host.clone(),
            host: stat.node.clone(),
            cluster_id: stat.cluster_id.clone(),
            state: format!("{:?}", stat.state),
            pool: count(stat.workers.len() as u64),
            task_queue: count(stat.task_queue),
            result_queue: count(stat.result_queue),
            reincarnations: count(stat.reincarnations),
            running: count(stat.running),
            successes: count(stat.successes),
            failures: count(stat.failures),
            oom_kills: count(stat.oom_kills),
            started: Time(
                k8s_openapi::jiff::Timestamp::from_microsecond(stat.tob.timestamp_micros())
                    .unwrap_or_default(),
            ),
        })
        .collect();
    entries.sort_by(|a, b| (&a.pod, &a.cluster_id).cmp(&(&b.pod, &b.cluster_id)));
    let totals = Totals {
        clusters: count(entries.len() as u64),
        workers: entries.iter().map(|e| e.pool).sum(),
        queued: queued.map(count),
        held: entries.iter().map(|e| e.task_queue).sum(),
        running: entries.iter().map(|e| e.running).sum(),
        successes: entries.iter().map(|e| e.successes).sum(),
        failures: entries.iter().map(|e| e.failures).sum(),
        reincarnations: entries.iter().map(|e| e.reincarnations).sum(),
        oom_kills: entries.iter().map(|e| e.oom_kills).sum(),
    };
    (entries, totals)
}

/// One word for a fleet whose broker answers: what its clusters are doing.
pub fn fleet_state(stats: &[Stat], replicas: i32) -> &'static str {
    let any = |state: State| stats.iter().any(|stat| stat.state == state);
    if any(State::Working) {
        "Working"
    } else if any(State::Stopping) {
        "Stopping"
    } else if any(State::Starting) || (stats.is_empty() && replicas > 0) {
        "Starting"
    } else if stats.is_empty() || stats.iter().all(|stat| stat.state == State::Stopped) {
        "Stopped"
    } else {
        "Idle"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(host: &str, state: State, workers: usize, tq: u64, rc: u64) -> Stat {
        let tob = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        Stat {
            cluster_id: "7".into(),
            host: host.into(),
            name: "reports".into(),
            state,
            workers: (0..workers as u32).collect(),
            task_queue: tq,
            result_queue: 0,
            reincarnations: rc,
            tob,
            timestamp: tob + chrono::Duration::seconds(75),
            sentinel: 7,
            pusher: 7,
            monitor: 7,
            queue_limit: 16,
            running: tq.min(workers as u64),
            successes: 10,
            failures: 1,
            oom_kills: u64::from(host == "reports-b"),
            node: Some("node-a".into()),
        }
    }

    #[test]
    fn totals_sum_the_live_clusters_and_entries_do_not_change_with_time() {
        let stats = [
            stat("reports-b", State::Working, 4, 6, 1),
            stat("reports-a", State::Idle, 2, 0, 2),
        ];
        let (entries, totals) = entries_and_totals(&stats, Some(40));
        assert_eq!(entries[0].pod, "reports-a", "sorted by pod");
        assert_eq!(
            totals,
            Totals {
                clusters: 2,
                workers: 6,
                queued: Some(40),
                held: 6,
                running: 4,
                successes: 20,
                failures: 2,
                reincarnations: 3,
                oom_kills: 1,
            }
        );
        let mut later = stats.clone();
        later[0].timestamp += chrono::Duration::seconds(3);
        assert_eq!(
            entries_and_totals(&later, Some(40)).0,
            entries,
            "a newer Stat saying the same is the same entry: no status write"
        );
        assert_eq!(
            entries[0].started.0.to_string(),
            "2026-12-01T10:00:00Z",
            "the time of birth"
        );
    }

    #[test]
    fn the_fleet_state_is_its_busiest_cluster() {
        let working = stat("a", State::Working, 1, 1, 0);
        let idle = stat("b", State::Idle, 1, 0, 0);
        let stopping = stat("c", State::Stopping, 1, 0, 0);
        assert_eq!(fleet_state(&[idle.clone(), working], 2), "Working");
        assert_eq!(fleet_state(&[idle.clone(), stopping], 2), "Stopping");
        assert_eq!(fleet_state(std::slice::from_ref(&idle), 1), "Idle");
        assert_eq!(fleet_state(&[], 1), "Starting");
        assert_eq!(fleet_state(&[], 0), "Stopped");
    }
}
