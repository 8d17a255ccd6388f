//! A pod played by a `q8s cluster` process, until the test bed has a node.
//!
//! The process gets exactly the environment and files the Deployment's pod
//! template defines, read back from the apiserver: each volume's ConfigMap or
//! Secret written out as files, each variable's value or the Secret key or
//! field it refers to. Two things differ, because many such "pods" share this
//! machine: every mount path lives under a folder of the pod's own (and is
//! rewritten so wherever the template or its files name it), and the HTTP
//! server listens on 127.0.0.1 on a port the test chooses instead of the
//! pod's 9464.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PodTemplateSpec, Secret};
use kube::Api;
use q8s_testbed::eventually;

/// The node name the pods' `spec.nodeName` reads as.
pub const NODE: &str = "testbed-node";

/// A `q8s cluster` process standing in for one pod.
pub struct Pod {
    child: Child,
    log: PathBuf,
    /// The port of its `/healthz`, `/readyz` and `/metrics`.
    pub port: u16,
    root: tempfile::TempDir,
}

/// The `q8s` binary `cargo test --workspace` built next to this test.
pub fn q8s_binary() -> PathBuf {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("q8s")))
        .expect("the test binary has a folder");
    assert!(
        binary.exists(),
        "{} is not built: run cargo build -p q8s (scripts/test does)",
        binary.display()
    );
    binary
}

impl Pod {
    /// `count` pods of QCluster `name`'s Deployment, once the reconciler has
    /// made it and the signing key its pods mount.
    pub async fn start_of(
        client: &kube::Client,
        namespace: &str,
        name: &str,
        count: usize,
    ) -> Vec<Pod> {
        let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
        let config_maps = Api::<ConfigMap>::namespaced(client.clone(), namespace);
        let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
        let deployment = eventually("the Deployment", || deployments.get(name)).await;
        let key = format!("{name}-signing-key");
        eventually("the signing key", || secrets.get(&key)).await;
        let template = deployment.spec.expect("a spec").template;
        let mut pods = Vec::with_capacity(count);
        for _ in 0..count {
            pods.push(Pod::start(&template, &config_maps, &secrets).await);
        }
        pods
    }

    /// Starts a process as the kubelet would start `template`'s first container.
    pub async fn start(
        template: &PodTemplateSpec,
        config_maps: &Api<ConfigMap>,
        secrets: &Api<Secret>,
    ) -> Pod {
        let root = tempfile::tempdir().expect("a folder for the pod");
        let spec = template.spec.as_ref().expect("a pod spec");
        let container = &spec.containers[0];
        let mounts: Vec<(String, PathBuf)> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|mount| {
                let local = root.path().join(mount.mount_path.trim_start_matches('/'));
                (mount.mount_path.clone(), local)
            })
            .collect();
        let local = |text: &str| {
            mounts.iter().fold(text.to_string(), |text, (path, local)| {
                text.replace(path.as_str(), &local.display().to_string())
            })
        };
        for mount in container.volume_mounts.iter().flatten() {
            let volume = spec
                .volumes
                .iter()
                .flatten()
                .find(|volume| volume.name == mount.name)
                .expect("every mount has its volume");
            let folder = PathBuf::from(local(&mount.mount_path));
            std::fs::create_dir_all(&folder).expect("the mount's folder");
            let files: BTreeMap<String, Vec<u8>> = if let Some(source) = &volume.config_map {
                let config_map = config_maps.get(&source.name).await.expect("the ConfigMap");
                config_map
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(key, text)| (key, local(&text).into_bytes()))
                    .collect()
            } else if let Some(source) = &volume.secret {
                let name = source.secret_name.as_deref().expect("a Secret name");
                let secret = secrets.get(name).await.expect("the Secret");
                secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(key, bytes)| (key, bytes.0))
                    .collect()
            } else {
                assert!(volume.empty_dir.is_some(), "an unknown volume {volume:?}");
                BTreeMap::new()
            };
            for (key, bytes) in files {
                std::fs::write(folder.join(key), bytes).expect("a mounted file");
            }
        }
        let mut env = Vec::new();
        for variable in container.env.iter().flatten() {
            let value = if let Some(value) = &variable.value {
                local(value)
            } else {
                let source = variable.value_from.as_ref().expect("a value or a source");
                if let Some(selector) = &source.secret_key_ref {
                    let secret = secrets.get(&selector.name).await.expect("the env's Secret");
                    let bytes = secret
                        .data
                        .unwrap_or_default()
                        .remove(&selector.key)
                        .expect("the env's Secret key");
                    String::from_utf8(bytes.0).expect("text")
                } else {
                    let field = source.field_ref.as_ref().expect("a Secret key or a field");
                    assert_eq!(field.field_path, "spec.nodeName", "an unknown field");
                    NODE.to_string()
                }
            };
            env.push((variable.name.clone(), value));
        }
        let port = crate::support::free_port();
        let log = root.path().join("cluster.log");
        let working_dir = local(container.working_dir.as_deref().unwrap_or("/"));
        let child = Command::new(q8s_binary())
            .args(container.args.iter().flatten())
            .current_dir(working_dir)
            .env_clear()
            .envs(env)
            .env("Q8S_HTTP_HOST", "127.0.0.1")
            .env("Q8S_HTTP_PORT", port.to_string())
            .env("Q8S_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("q8s cluster starts");
        let pod = Pod {
            child,
            log,
            port,
            root,
        };
        pod.wait_until_ready();
        pod
    }

    /// The cluster's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What the kubelet's HTTP probe of `path` would get: the status line.
    pub fn probe(&self, path: &str) -> String {
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        );
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.lines().next().unwrap_or_default().to_string()
    }

    fn wait_until_ready(&self) {
        let started = Instant::now();
        while !self.probe("/readyz").contains(" 200") {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the pod's readiness probe never passed:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The working folder of a mount path, as this pod has it.
    pub fn folder(&self, mount_path: &str) -> PathBuf {
        self.root
            .path()
            .join(Path::new(mount_path.trim_start_matches('/')))
    }
}

impl Drop for Pod {
    /// SIGTERM, as the kubelet stops a pod; the process is waited for.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
