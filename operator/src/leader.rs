//! Leader election on a `coordination.k8s.io` Lease: of the operator's
//! replicas, one reconciles; the others wait to take over.
//!
//! The habits of client-go's leader election: a replica takes the Lease when
//! it is free or its holder has not renewed it for `duration` (judged by this
//! replica's own clock from when it last saw the Lease change, so clocks need
//! not agree); the holder renews it every `renew_every`; one that cannot renew
//! within `renew_deadline` stops reconciling; a replica that stops gives the
//! Lease up so another takes over at once. Writes carry the resourceVersion
//! they read, so two replicas can never both win the same Lease.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::Mutex;

use crate::metrics::Telemetry;

/// How long a Lease holds without renewal (client-go's default).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);

/// One replica's part in the election for one Lease.
#[derive(Debug)]
pub struct Election {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// How long the Lease holds without renewal.
    pub duration: Duration,
    /// How often the holder renews it.
    pub renew_every: Duration,
    /// How long the holder keeps trying to renew before it stops reconciling.
    pub renew_deadline: Duration,
    /// How often a waiting replica looks again.
    pub retry_every: Duration,
    seen: Mutex<Option<(String, Instant)>>,
}

impl Election {
    /// The election for the Lease `namespace/name`, this replica being `identity`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Election {
        Election::with_duration(client, namespace, name, identity, LEASE_DURATION)
    }

    /// The same with a Lease lasting `duration`: renewals every third of it, a deadline of two thirds.
    pub fn with_duration(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Election {
        Election {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
            renew_every: duration / 3,
            renew_deadline: duration * 2 / 3,
            retry_every: (duration / 7).max(Duration::from_millis(200)),
            seen: Mutex::new(None),
        }
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this replica holds the Lease; `telemetry` learns whether the apiserver answers.
    pub async fn acquire(&self, telemetry: &Telemetry) {
        loop {
            let round = self.try_acquire_or_renew().await;
            telemetry.set_apiserver(round.is_ok());
            match round {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "leading");
                    return;
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(lease = %self.name, "cannot read the Lease: {error}"),
            }
            tokio::time::sleep(self.retry_every).await;
        }
    }

    /// Renews the Lease; returns once this replica has lost it (another took
    /// it, or no renewal succeeded within the deadline).
    pub async fn hold(&self, telemetry: &Telemetry) {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.renew_every).await;
            let round = self.try_acquire_or_renew().await;
            telemetry.set_apiserver(round.is_ok());
            match round {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    tracing::warn!(lease = %self.name, "another replica holds the Lease");
                    return;
                }
                Err(error) => {
                    tracing::warn!(lease = %self.name, "cannot renew the Lease: {error}");
                    if renewed.elapsed() >= self.renew_deadline {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the Lease up, when this replica holds it, so another takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.name, "gave the Lease up"),
            Err(error) => tracing::warn!(lease = %self.name, "cannot give the Lease up: {error}"),
        }
    }

    /// One round: true when this replica holds the Lease afterwards.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.held(0, Some(now()))),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if !mine && holder.is_some() && !self.expired(&lease, &spec).await {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(if mine {
            self.held(transitions, spec.acquire_time.clone())
        } else {
            self.held(transitions + 1, Some(now()))
        });
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            // Someone wrote it since it was read: they win this round.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Whether the holder let the Lease run out, by this replica's clock since
    /// it last saw the Lease change.
    async fn expired(&self, lease: &Lease, spec: &LeaseSpec) -> bool {
        let version = lease.resource_version().unwrap_or_default();
        let mut seen = self.seen.lock().await;
        let since = match &*seen {
            Some((seen_version, at)) if *seen_version == version => *at,
            _ => {
                *seen = Some((version, Instant::now()));
                return false;
            }
        };
        let duration = spec
            .lease_duration_seconds
            .map_or(self.duration, |s| Duration::from_secs(s.max(1) as u64));
        since.elapsed() >= duration
    }

    fn held(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: acquired,
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}
