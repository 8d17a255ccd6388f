//! `q8s-operator`: `crds` prints the CRD YAML, `manifests` the install with its RBAC; `run` reconciles QClusters.

use std::process::ExitCode;
use std::sync::Arc;

/// The worker image of QClusters that name none, unless `Q8S_WORKER_IMAGE` says otherwise.
const DEFAULT_IMAGE: &str = "q8s-worker:0.1.0";

const USAGE: &str = "usage: q8s-operator crds                 print the CRD YAML
       q8s-operator manifests            print manifests/install.yaml: the CRDs, the ServiceAccount and its RBAC
       q8s-operator run [--namespace NS] [--lease-namespace NS] [--http ADDR]
           reconcile QClusters (all namespaces, or NS), one replica leading by a Lease
           (in the Lease namespace: default the pod's or kubeconfig's namespace);
           --http ADDR serves /metrics, /healthz, /readyz (e.g. 0.0.0.0:9465)
environment: Q8S_WORKER_IMAGE (default image), Q8S_LOG (filter, default info),
             Q8S_LOG_FORMAT=json (one JSON object per line), POD_NAME (the replica's name)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["crds"] => print(q8s_operator::crds().map_err(|e| e.to_string())),
        ["manifests"] => print(q8s_operator::rbac::install_yaml().map_err(|e| e.to_string())),
        ["run", flags @ ..] => match RunFlags::parse(flags) {
            Ok(flags) => run(flags),
            Err(message) => {
                eprintln!("q8s-operator: {message}\n{USAGE}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn print(yaml: Result<String, String>) -> ExitCode {
    match yaml {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("q8s-operator: cannot render the YAML: {error}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Default)]
struct RunFlags {
    namespace: Option<String>,
    lease_namespace: Option<String>,
    http: Option<std::net::SocketAddr>,
}

impl RunFlags {
    fn parse(mut flags: &[&str]) -> Result<RunFlags, String> {
        let mut parsed = RunFlags::default();
        while let [flag, value, rest @ ..] = flags {
            match *flag {
                "--namespace" => parsed.namespace = Some(value.to_string()),
                "--lease-namespace" => parsed.lease_namespace = Some(value.to_string()),
                "--http" => {
                    parsed.http = Some(value.parse().map_err(|_| {
                        format!("--http {value}: not an address; use HOST:PORT, e.g. 0.0.0.0:9465")
                    })?)
                }
                other => return Err(format!("unknown flag {other}")),
            }
            flags = rest;
        }
        match flags {
            [] => Ok(parsed),
            [flag] => Err(format!("{flag} needs a value")),
            _ => Err("unexpected arguments".into()),
        }
    }
}

fn run(flags: RunFlags) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("Q8S_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("Q8S_LOG_FORMAT").as_deref() == Ok("json") {
        logs.json().try_init()
    } else {
        logs.try_init()
    };
    let image = std::env::var("Q8S_WORKER_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_string());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("q8s-operator: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let client = match kube::Client::try_default().await {
            Ok(client) => client,
            Err(error) => {
                eprintln!(
                    "q8s-operator: cannot reach the Kubernetes API ({error}); run it in a pod, or set KUBECONFIG"
                );
                return ExitCode::from(4);
            }
        };
        let mut settings = q8s_operator::run::Settings::new(&client, image);
        settings.namespace = flags.namespace;
        settings.http = flags.http;
        if let Some(namespace) = flags.lease_namespace {
            settings.lease_namespace = namespace;
        }
        let telemetry = Arc::new(q8s_operator::metrics::Telemetry::default());
        let stop = q8s_operator::run::stop_signal();
        match q8s_operator::run::run(client, settings, telemetry, stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("q8s-operator: {error}");
                ExitCode::FAILURE
            }
        }
    })
}
