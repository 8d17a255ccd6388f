//! A real Kubernetes control plane for q8s's tests.
//!
//! `e2e/start-testbed.sh` (which `scripts/test` sources) starts etcd and
//! kube-apiserver, built from Go modules by `e2e/build-testbed.sh`, on
//! 127.0.0.1 and exports where they are. [`Testbed::connect`] reads those
//! variables and hands out clients: the admin's, a user's with no grant at all,
//! a ServiceAccount's, and `kubectl` of the server's own version. Each test
//! works in a namespace of its own from [`Testbed::namespace`], so tests run in
//! parallel against one shared control plane.
//!
//! Without the variables the tests are skipped, unless
//! `Q8S_TEST_REQUIRE_SERVICES=1` (as `scripts/test` and CI set): then they fail.

use std::collections::hash_map::RandomState;
use std::fmt::Debug;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use secrecy::SecretString;

/// The variable naming the admin kubeconfig (user `q8s-admin`, group `system:masters`).
pub const KUBECONFIG_VAR: &str = "Q8S_TEST_KUBECONFIG";
/// The variable naming the `kubectl` binary of the server's version.
pub const KUBECTL_VAR: &str = "Q8S_TEST_KUBECTL";
/// The variable holding the token of a user no RBAC rule names.
pub const USER_TOKEN_VAR: &str = "Q8S_TEST_KUBE_USER_TOKEN";
/// The variable naming that user, when not [`DEFAULT_USER`] (on kind it is a ServiceAccount).
pub const USER_VAR: &str = "Q8S_TEST_KUBE_USER";
/// The user of the test bed's token file that no RBAC rule names.
pub const DEFAULT_USER: &str = "q8s-tester";
/// The variable that, set to `1`, turns a missing control plane into a failure.
pub const REQUIRE_VAR: &str = "Q8S_TEST_REQUIRE_SERVICES";
/// The label every test namespace carries.
pub const NAMESPACE_LABEL: &str = "q8s.test/testbed";
/// How long [`eventually`] retries before the test fails.
pub const EVENTUALLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`eventually`] waits between two attempts.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a ServiceAccount token from [`Testbed::service_account_client`] lasts.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The running control plane, as `e2e/start-testbed.sh` exported it.
pub struct Testbed {
    config: Config,
    client: Client,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    user: String,
    user_token: String,
}

/// Whether CI (or `scripts/test`) says the control plane must be there.
pub fn required() -> bool {
    std::env::var(REQUIRE_VAR).as_deref() == Ok("1")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{KUBECONFIG_VAR} is set but {name} is not: source e2e/start-testbed.sh")
    })
}

impl Testbed {
    /// The control plane of this test run, or `None` when none is configured and none is required.
    ///
    /// Panics when one is required but not configured, or configured but not answering.
    pub async fn connect() -> Option<Testbed> {
        let Ok(kubeconfig) = std::env::var(KUBECONFIG_VAR) else {
            assert!(
                !required(),
                "{REQUIRE_VAR}=1 but {KUBECONFIG_VAR} is not set: run scripts/test, or source e2e/start-testbed.sh and call start_kube_testbed"
            );
            eprintln!(
                "skipping: no Kubernetes test bed ({KUBECONFIG_VAR} is not set; scripts/test sets it)"
            );
            return None;
        };
        let kubeconfig = PathBuf::from(kubeconfig);
        let kubectl = PathBuf::from(env(KUBECTL_VAR));
        let user_token = env(USER_TOKEN_VAR);
        let user = std::env::var(USER_VAR).unwrap_or_else(|_| DEFAULT_USER.to_owned());
        let parsed = Kubeconfig::read_from(&kubeconfig)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", kubeconfig.display()));
        let config = Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("cannot use {}: {e}", kubeconfig.display()));
        let client = Client::try_from(config.clone()).expect("a client for the test bed");
        if let Err(e) = client.apiserver_version().await {
            panic!(
                "the test bed at {} does not answer: {e}",
                config.cluster_url
            );
        }
        Some(Testbed {
            config,
            client,
            kubeconfig,
            kubectl,
            user,
            user_token,
        })
    }

    /// A client with the admin's rights (group `system:masters`).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A client that authenticates with the bearer token `token` instead of the admin's.
    pub fn client_with_token(&self, token: &str) -> Client {
        let mut config = self.config.clone();
        config.auth_info = AuthInfo {
            token: Some(SecretString::from(token.to_owned())),
            ..AuthInfo::default()
        };
        Client::try_from(config).expect("a client for the test bed")
    }

    /// A client for a user that no RBAC rule names ([`DEFAULT_USER`] of the token file).
    pub fn user_client(&self) -> Client {
        self.client_with_token(&self.user_token)
    }

    /// The RBAC user name behind [`Testbed::user_client`].
    pub fn user_name(&self) -> &str {
        &self.user
    }

    /// The API server's URL.
    pub fn url(&self) -> String {
        self.config.cluster_url.to_string()
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A fresh namespace for the test `test`: its name, sanitised, with a random suffix.
    ///
    /// Namespaces are not deleted: without the controller-manager a deleted namespace
    /// never finishes terminating, and the whole etcd goes when the test bed stops.
    pub async fn namespace(&self, test: &str) -> String {
        let name = namespace_name(test, random_suffix());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
        name
    }

    /// A client acting as the ServiceAccount `name` of `namespace`, which it creates,
    /// with a token from the TokenRequest API (as a pod's projected token would be).
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Client {
        let accounts = Api::<ServiceAccount>::namespaced(self.client(), namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        accounts
            .create(&PostParams::default(), &account)
            .await
            .unwrap_or_else(|e| panic!("cannot create ServiceAccount {namespace}/{name}: {e}"));
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(TOKEN_LIFETIME.as_secs() as i64),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let answer: TokenRequest = accounts
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("cannot get a token for {namespace}/{name}: {e}"));
        let token = answer.status.and_then(|s| s.token).unwrap_or_else(|| {
            panic!("no token in the TokenRequest answer for {namespace}/{name}")
        });
        self.client_with_token(&token)
    }

    /// Runs `kubectl` with the admin kubeconfig, `stdin` as its input, and returns its output.
    ///
    /// Blocks the calling thread while kubectl runs (a fraction of a second).
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let cache = self
            .kubeconfig
            .parent()
            .map_or_else(std::env::temp_dir, Path::to_path_buf)
            .join("kubectl-cache");
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(cache)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.kubectl.display()));
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(input.as_bytes())
                .expect("write kubectl's input");
        }
        child.wait_with_output().expect("kubectl's output")
    }
}

/// Retries `attempt` until it succeeds, every [`POLL_INTERVAL`] for at most
/// [`EVENTUALLY_TIMEOUT`]; then the test fails, naming `what` and the last error.
///
/// For what the server does on its own time: a CRD becoming Established, an
/// RBAC grant reaching the authorizer's cache.
pub async fn eventually<T, E: Debug, F: Future<Output = Result<T, E>>>(
    what: &str,
    attempt: impl FnMut() -> F,
) -> T {
    eventually_within(what, EVENTUALLY_TIMEOUT, attempt).await
}

/// [`eventually`] with a limit of its own: for what takes longer, such as
/// pods starting on a node.
pub async fn eventually_within<T, E: Debug, F: Future<Output = Result<T, E>>>(
    what: &str,
    limit: Duration,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not after {limit:?}; last error: {e:?}")
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// A DNS label from a test's name and a suffix: lowercase letters, digits and dashes.
fn namespace_name(test: &str, suffix: u64) -> String {
    let mut stem: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    stem.truncate(40);
    let stem = stem.trim_matches('-');
    let stem = if stem.is_empty() { "test" } else { stem };
    format!("{stem}-{:012x}", suffix & 0xffff_ffff_ffff)
}

/// A random number from the standard library's per-process random hash keys.
fn random_suffix() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_dns_labels() {
        assert_eq!(
            namespace_name("crd_status::Works", 0xab),
            "crd-status--works-0000000000ab"
        );
        assert_eq!(namespace_name("___", 1), "test-000000000001");
        let long = namespace_name(&"x".repeat(100), u64::MAX);
        assert!(long.len() <= 63, "{long}");
        assert!(long.ends_with("-ffffffffffff"));
    }

    #[test]
    fn suffixes_differ() {
        assert_ne!(random_suffix(), random_suffix());
    }
}
