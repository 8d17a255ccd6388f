//! `q8s-operator`: `crds` prints the CRD YAML, `rbac` the rules of its roles; `run` reconciles QClusters and QSchedules.

use std::process::ExitCode;
use std::sync::Arc;

/// The worker image of QClusters that name none, unless `Q8S_WORKER_IMAGE` says otherwise.
const DEFAULT_IMAGE: &str = concat!("q8s-worker:", env!("CARGO_PKG_VERSION"));

const USAGE: &str = "usage: q8s-operator crds                 print the CRD YAML
       q8s-operator rbac                 print the rules of its roles (the chart's files/rbac.yaml)
       q8s-operator run [--namespace NS[,NS...]]... [--lease-namespace NS] [--lease-name NAME] [--http ADDR]
           reconcile QClusters and QSchedules (all namespaces, or each NS), one replica leading by a Lease
           (NAME, default q8s-operator, in the Lease namespace: default the pod's or kubeconfig's);
           --http ADDR serves /metrics, /healthz, /readyz (e.g. 0.0.0.0:9465)
environment: Q8S_WORKER_IMAGE (default image), Q8S_LOG (filter, default info),
             Q8S_LOG_FORMAT=json (one JSON object per line), POD_NAME (the replica's name)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["crds"] => print(q8s_operator::crds().map_err(|e| e.to_string())),
        ["rbac"] => print(q8s_operator::rbac::chart_rules().map_err(|e| e.to_string())),
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
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(yaml.as_bytes())
                .and_then(|()| stdout.flush())
            {
                // A reader that went away (`| head`) has what it wanted.
                Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("q8s-operator: cannot write the YAML: {error}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(error) => {
            eprintln!("q8s-operator: cannot render the YAML: {error}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Default)]
struct RunFlags {
    namespaces: Vec<String>,
    lease_namespace: Option<String>,
    lease_name: Option<String>,
    http: Option<std::net::SocketAddr>,
}

impl RunFlags {
    /// Parses `--flag value` and `--flag=value` alike.
    fn parse(flags: &[&str]) -> Result<RunFlags, String> {
        let mut parsed = RunFlags::default();
        let mut flags = flags.iter();
        while let Some(&given) = flags.next() {
            let (flag, value) = match given.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag, value),
                _ if given.starts_with("--") => (
                    given,
                    *flags
                        .next()
                        .ok_or_else(|| format!("{given} needs a value"))?,
                ),
                _ => return Err(format!("unexpected argument {given}")),
            };
            match flag {
                "--namespace" => {
                    for namespace in value.split(',').map(str::trim) {
                        if namespace.is_empty() {
                            return Err(format!(
                                "--namespace {value:?}: an empty namespace; name one, or leave the flag out to watch all"
                            ));
                        }
                        // One reconciler per namespace, however often it is named.
                        if !parsed.namespaces.iter().any(|known| known == namespace) {
                            parsed.namespaces.push(namespace.to_string());
                        }
                    }
                }
                "--lease-namespace" => parsed.lease_namespace = Some(value.to_string()),
                "--lease-name" => parsed.lease_name = Some(value.to_string()),
                "--http" => {
                    parsed.http = Some(value.parse().map_err(|_| {
                        format!("--http {value}: not an address; use HOST:PORT, e.g. 0.0.0.0:9465")
                    })?)
                }
                other => return Err(format!("unknown flag {other}")),
            }
        }
        Ok(parsed)
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
        settings.namespaces = flags.namespaces;
        settings.http = flags.http;
        if let Some(namespace) = flags.lease_namespace {
            settings.lease_namespace = namespace;
        }
        if let Some(name) = flags.lease_name {
            settings.lease_name = name;
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

#[cfg(test)]
mod tests {
    use super::RunFlags;

    #[test]
    fn flags_take_their_value_after_a_space_or_an_equals_sign() {
        let flags = RunFlags::parse(&[
            "--http=0.0.0.0:9465",
            "--namespace",
            "a,b",
            "--namespace=c,a",
            "--lease-name",
            "q8s",
        ])
        .expect("valid flags");
        assert_eq!(flags.namespaces, ["a", "b", "c"]);
        assert_eq!(flags.http, Some(([0, 0, 0, 0], 9465).into()));
        assert_eq!(flags.lease_name.as_deref(), Some("q8s"));
    }

    #[test]
    fn a_flag_without_its_value_or_an_unknown_one_is_refused_by_name() {
        let error = |flags: &[&str]| RunFlags::parse(flags).err().unwrap_or_default();
        assert_eq!(error(&["--http"]), "--http needs a value");
        assert_eq!(error(&["--color=red"]), "unknown flag --color");
        assert!(error(&["--http=nowhere"]).contains("not an address"));
        assert_eq!(error(&["extra"]), "unexpected argument extra");
        assert!(error(&["--namespace="]).contains("an empty namespace"));
    }
}
