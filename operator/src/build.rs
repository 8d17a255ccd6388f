//! The build step of reconciling: a QCluster in, the objects it should own out. No I/O.
//!
//! A Deployment whose pods run `q8s cluster` with the rendered configuration
//! (a ConfigMap holding `q8s.toml`), the broker and store URLs from their
//! Secrets as environment, the signing keys from their Secret as a file; the
//! restricted Pod Security Standard; probes on the cluster's HTTP port; a
//! grace period that lets the stop procedure finish the longest task; CPU
//! pinning by resources; a Service for metrics; a PodDisruptionBudget when
//! there is more than one cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::qcluster::QCluster;

/// The operator's name: its field manager, and the value of [`MANAGED_BY`] on what it makes.
pub const OPERATOR: &str = "q8s-operator";
/// The label naming who made an object.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The port of the cluster's `/metrics`, `/healthz` and `/readyz` in the pod.
pub const HTTP_PORT: u16 = 9464;
/// Where the pod finds `q8s.toml`.
pub const CONFIG_DIR: &str = "/etc/q8s";
/// Where the pod finds the signing keys.
pub const KEY_DIR: &str = "/var/run/q8s/signing";
/// The pod's writable working folder (the root filesystem is read-only): where
/// the engine's default SQLite store lands when the spec gives no `store`.
pub const WORK_DIR: &str = "/var/lib/q8s";
/// The pod-template annotation holding a hash of `q8s.toml`.
pub const CONFIG_HASH: &str = "q8s.io/config-hash";
/// The pod-template annotation holding a hash of the signing keys: pods restart
/// with the keys when a key is added (rotation) or removed.
pub const KEYS_HASH: &str = "q8s.io/signing-keys-hash";
/// The Deployment annotation holding a hash of its pod template: a change is a rollout.
pub const TEMPLATE_HASH: &str = "q8s.io/template-hash";
/// The key of the signing-key Secret that holds the keys, one per line.
pub const KEY_ENTRY: &str = "keys";
/// The user the worker image runs as.
pub const RUN_AS_USER: i64 = 65_532;
/// MiB of memory asked for per worker process when the operator sizes the pod for pinning.
pub const MEMORY_PER_WORKER_MIB: usize = 256;
/// The grace period when no `timeout` bounds a task: the stop procedure's time to finish.
pub const GRACE_WITHOUT_TIMEOUT: i64 = 600;

/// Why a QCluster cannot be built into objects: its spec, to be fixed by whoever wrote it.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The engine refuses the options.
    #[error("{0}")]
    Options(#[from] q8s::ConfigError),
    /// Pinning asked for without what sizes the pod.
    #[error(
        "cpuAffinity without resources needs workers, so the pod's exclusive cores can be sized"
    )]
    PinningUnsized,
    /// The object has no name or namespace (never so on an apiserver).
    #[error("the QCluster has no {0}")]
    Incomplete(&'static str),
    /// The checked configuration does not write back as TOML.
    #[error("cannot render q8s.toml: {0}")]
    Render(#[from] toml::ser::Error),
}

impl BuildError {
    /// The reason of the Stalled condition this error sets.
    pub fn reason(&self) -> &'static str {
        match self {
            BuildError::Options(_) | BuildError::PinningUnsized => "InvalidSpec",
            BuildError::Incomplete(_) | BuildError::Render(_) => "InvalidObject",
        }
    }
}

/// What a QCluster owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// `q8s.toml`.
    pub config_map: ConfigMap,
    /// The pods running `q8s cluster`.
    pub deployment: Deployment,
    /// The metrics port.
    pub service: Service,
    /// When replicas > 1.
    pub disruption_budget: Option<PodDisruptionBudget>,
    /// The Secret the pods read their signing keys from (made when absent).
    pub signing_key_secret: String,
    /// The pods' checked configuration, without the URLs their Secrets hold.
    pub config: q8s::Config,
}

impl Desired {
    /// A hash of every object: equal when applying again would change nothing.
    pub fn fingerprint(&self) -> String {
        let objects = serde_json::json!([
            self.config_map,
            self.deployment,
            self.service,
            self.disruption_budget,
        ]);
        short_hash(&objects.to_string())
    }

    /// The pod template's hash, as the Deployment's [`TEMPLATE_HASH`] annotation holds it.
    pub fn template_hash(&self) -> Option<&str> {
        template_hash_of(&self.deployment)
    }
}

/// The [`TEMPLATE_HASH`] annotation of a Deployment.
pub fn template_hash_of(deployment: &Deployment) -> Option<&str> {
    deployment
        .metadata
        .annotations
        .as_ref()?
        .get(TEMPLATE_HASH)
        .map(String::as_str)
}

/// The labels that select a QCluster's pods.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "q8s".into()),
        ("app.kubernetes.io/instance".into(), name.into()),
    ])
}

/// The name of the Secret holding `qcluster`'s signing keys.
pub fn signing_key_secret(qcluster: &QCluster) -> String {
    qcluster
        .spec
        .signing_key
        .clone()
        .unwrap_or_else(|| format!("{}-signing-key", qcluster.name_any()))
}

/// The hash of signing keys (the Secret's `keys` entry) that [`KEYS_HASH`] holds.
pub fn keys_hash(keys: &[u8]) -> String {
    short_hash(&String::from_utf8_lossy(keys))
}

/// A QCluster's name and namespace, which an object read from the apiserver always has.
fn identity(qcluster: &QCluster) -> Result<(String, String), BuildError> {
    let name = qcluster.metadata.name.clone();
    let name = name.ok_or(BuildError::Incomplete("name"))?;
    let namespace = qcluster
        .namespace()
        .ok_or(BuildError::Incomplete("namespace"))?;
    Ok((name, namespace))
}

/// The pods' `q8s.toml` and the configuration it reads as: the spec's own
/// options (the engine's defaults for the rest), the queue name, HTTP for the
/// probes and the key file, parsed here by the rules the pods will apply.
pub fn pods_config(qcluster: &QCluster) -> Result<(toml::Table, q8s::Config), BuildError> {
    let (name, namespace) = identity(qcluster)?;
    let spec = &qcluster.spec;
    let origin = format!("in QCluster {namespace}/{name}");
    let queue = spec.name.clone().unwrap_or(name);
    let mut table = spec.options.table(&origin)?;
    table.insert("name".into(), queue.into());
    table.insert("http_host".into(), "0.0.0.0".into());
    table.insert("http_port".into(), i64::from(HTTP_PORT).into());
    table.insert(
        "secret_key_file".into(),
        format!("{KEY_DIR}/{KEY_ENTRY}").into(),
    );
    let config = q8s::Config::from_table(table.clone(), &origin)?;
    Ok((table, config))
}

/// The objects `qcluster` should own, run from `image` unless its spec names
/// one, its pods marked with `keys`, the [`keys_hash`] of its signing keys.
pub fn build(qcluster: &QCluster, image: &str, keys: &str) -> Result<Desired, BuildError> {
    let (name, namespace) = identity(qcluster)?;
    let spec = &qcluster.spec;
    let (table, config) = pods_config(qcluster)?;
    let rendered = toml::to_string(&table)?;

    let mut labels = selector_labels(&name);
    labels.insert(MANAGED_BY.into(), OPERATOR.into());
    let meta = |suffix: &str| ObjectMeta {
        name: Some(format!("{name}{suffix}")),
        namespace: Some(namespace.clone()),
        labels: Some(labels.clone()),
        owner_references: qcluster.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    };

    let config_map = ConfigMap {
        metadata: meta("-config"),
        data: Some(BTreeMap::from([("q8s.toml".to_string(), rendered.clone())])),
        ..ConfigMap::default()
    };

    let resources = match (&spec.resources, config.cpu_affinity) {
        (Some(resources), _) => Some(resources.clone()),
        // Without a given `workers` the engine would count the operator's CPUs.
        (None, Some(_)) if !config.origins.contains_key("workers") => {
            return Err(BuildError::PinningUnsized);
        }
        (None, Some(per_worker)) => Some(pinned(config.workers * per_worker, config.workers)),
        (None, None) => None,
    };
    let grace = config.timeout.map_or(GRACE_WITHOUT_TIMEOUT, |t| {
        (t + config.receipt_margin) as i64
    });

    let mut env = vec![
        EnvVar {
            name: "Q8S_CONFIG".into(),
            value: Some(format!("{CONFIG_DIR}/q8s.toml")),
            ..EnvVar::default()
        },
        secret_env("Q8S_BROKER", &spec.broker),
        // The Stat names the node, so the status can say where each cluster runs.
        EnvVar {
            name: q8s::stat::NODE_VAR.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "spec.nodeName".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
    ];
    if let Some(store) = &spec.store {
        env.push(secret_env("Q8S_STORE", store));
    }
    env.extend(spec.env.clone().unwrap_or_default());
    let signing_key_secret = signing_key_secret(qcluster);

    let probe = |path: &str, failure_threshold: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    };
    let container = Container {
        name: "q8s".into(),
        image: Some(spec.image.clone().unwrap_or_else(|| image.to_string())),
        args: Some(vec!["cluster".into()]),
        working_dir: Some(WORK_DIR.into()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(HTTP_PORT),
            ..ContainerPort::default()
        }]),
        startup_probe: Some(probe("/healthz", 30)),
        // Liveness never asks the broker: a broker outage must not restart pods.
        liveness_probe: Some(probe("/healthz", 3)),
        readiness_probe: Some(probe("/readyz", 2)),
        resources,
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "signing-key".into(),
                mount_path: KEY_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "work".into(),
                mount_path: WORK_DIR.into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let mut pod_labels = labels.clone();
    pod_labels.extend(spec.pod_labels.clone().unwrap_or_default());
    // Pods restart when q8s.toml changes: a hash of it, stable across operator
    // versions, is part of their template.
    let mut pod_annotations = spec.pod_annotations.clone().unwrap_or_default();
    pod_annotations.insert(CONFIG_HASH.into(), short_hash(&rendered));
    pod_annotations.insert(KEYS_HASH.into(), keys.into());
    let pod = PodSpec {
        containers: vec![container],
        termination_grace_period_seconds: Some(grace),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        volumes: Some(vec![
            Volume {
                name: "config".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: format!("{name}-config"),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "signing-key".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(signing_key_secret.clone()),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "work".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
        ]),
        node_selector: spec.node_selector.clone(),
        tolerations: spec.tolerations.clone(),
        affinity: spec.affinity.clone(),
        priority_class_name: spec.priority_class_name.clone(),
        service_account_name: spec.service_account_name.clone(),
        ..PodSpec::default()
    };
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(pod_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(pod),
    };
    let mut deployment_meta = meta("");
    deployment_meta.annotations = Some(BTreeMap::from([(
        TEMPLATE_HASH.to_string(),
        short_hash(&serde_json::to_string(&template).unwrap_or_default()),
    )]));
    let deployment = Deployment {
        metadata: deployment_meta,
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            },
            // Never more clusters than asked plus one; never fewer than asked.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template,
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let service = Service {
        metadata: meta("-metrics"),
        spec: Some(ServiceSpec {
            // Headless: Prometheus scrapes each pod, and a fleet of QClusters
            // takes no cluster IPs.
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(&name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: i32::from(HTTP_PORT),
                target_port: Some(IntOrString::String("http".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let disruption_budget = (spec.replicas > 1).then(|| PodDisruptionBudget {
        metadata: meta(""),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    });
    Ok(Desired {
        config_map,
        deployment,
        service,
        disruption_budget,
        signing_key_secret,
        config,
    })
}

/// The first 16 hex digits of the SHA-256 of `text`.
fn short_hash(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Resources for exclusive cores: an integer CPU request equal to its limit, and
/// memory likewise, so the pod is Guaranteed and the static CPU manager pins it.
fn pinned(cpus: usize, workers: usize) -> ResourceRequirements {
    let memory_mib = workers * MEMORY_PER_WORKER_MIB;
    let amounts = BTreeMap::from([
        ("cpu".to_string(), Quantity(cpus.to_string())),
        ("memory".to_string(), Quantity(format!("{memory_mib}Mi"))),
    ]);
    ResourceRequirements {
        requests: Some(amounts.clone()),
        limits: Some(amounts),
        ..ResourceRequirements::default()
    }
}

fn secret_env(name: &str, selector: &k8s_openapi::api::core::v1::SecretKeySelector) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(selector.clone()),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(yaml: &str) -> QCluster {
        let mut qcluster: QCluster = serde_yaml_ng::from_str(yaml).expect("a QCluster fixture");
        qcluster.metadata.uid = Some("0b9f3a1c-uid".into());
        qcluster
    }

    const REPORTS: &str = r#"
apiVersion: q8s.io/v1alpha1
kind: QCluster
metadata: {name: reports, namespace: jobs}
spec:
  replicas: 3
  broker: {name: reports-broker, key: url}
  store: {name: reports-store, key: url}
  workers: 2
  timeout: 300
  retry: 400
  cpuAffinity: 1
"#;

    #[test]
    fn a_qcluster_builds_a_restricted_deployment_with_its_config_and_secrets() {
        let desired = build(&fixture(REPORTS), "q8s-worker:test", "0123abcd").expect("builds");
        let toml = &desired.config_map.data.as_ref().expect("data")["q8s.toml"];
        let config = q8s::Config::from_table(toml.parse().expect("TOML"), "test").expect("valid");
        assert_eq!(
            (config.workers, config.timeout, config.retry),
            (2, Some(300), 400)
        );
        assert_eq!(config.name, "reports");
        assert_eq!(config.http_host, "0.0.0.0");
        let deployment = desired.deployment.spec.expect("spec");
        assert_eq!(deployment.replicas, Some(3));
        let pod = deployment.template.spec.expect("pod");
        assert_eq!(
            pod.termination_grace_period_seconds,
            Some(330),
            "timeout + receipt margin"
        );
        let container = &pod.containers[0];
        let env: Vec<&str> = container
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            env,
            ["Q8S_CONFIG", "Q8S_BROKER", "Q8S_NODE_NAME", "Q8S_STORE"]
        );
        assert!(
            container
                .env
                .iter()
                .flatten()
                .all(|e| e.name == "Q8S_CONFIG" || e.value.is_none()),
            "secrets come from Secrets, never inline"
        );
        let security = container.security_context.as_ref().expect("security");
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            pod.security_context
                .as_ref()
                .and_then(|s| s.run_as_non_root),
            Some(true)
        );
        let resources = container.resources.as_ref().expect("pinned");
        assert_eq!(resources.requests, resources.limits, "Guaranteed QoS");
        assert_eq!(
            resources.requests.as_ref().expect("requests")["cpu"],
            Quantity("2".into())
        );
        assert!(desired.disruption_budget.is_some(), "more than one cluster");
        let owner = desired.deployment.metadata.owner_references.expect("owned");
        assert_eq!(owner[0].kind, "QCluster");
        assert_eq!(owner[0].controller, Some(true));
    }

    #[test]
    fn a_spec_the_engine_refuses_builds_nothing_and_says_why() {
        let qcluster = fixture(&REPORTS.replace("retry: 400", "retry: 100"));
        let error = build(&qcluster, "q8s-worker:test", "").expect_err("retry too short");
        assert_eq!(error.reason(), "InvalidSpec");
        assert!(error.to_string().contains("set retry to 330"), "{error}");
        let no_workers = fixture(&REPORTS.replace("  workers: 2\n", ""));
        assert!(matches!(
            build(&no_workers, "x", ""),
            Err(BuildError::PinningUnsized)
        ));
    }
}
