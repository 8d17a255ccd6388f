//! `q8s-operator`: `crds` prints the CRD YAML; `run` reconciles QClusters.

use std::process::ExitCode;

/// The worker image of QClusters that name none, unless `Q8S_WORKER_IMAGE` says otherwise.
const DEFAULT_IMAGE: &str = "q8s-worker:0.1.0";

const USAGE: &str = "usage: q8s-operator crds                     print the CRD YAML
       q8s-operator run [--namespace NS]    reconcile QClusters (all namespaces, or NS)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["crds"] => match q8s_operator::crds() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("q8s-operator: cannot render the CRDs: {error}");
                ExitCode::FAILURE
            }
        },
        ["run"] => run(None),
        ["run", "--namespace", namespace] => run(Some(namespace.to_string())),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(namespace: Option<String>) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("Q8S_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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
        q8s_operator::reconciler::run(client, image, namespace).await;
        ExitCode::SUCCESS
    })
}
