//! `q8s-operator`: `crds` prints the CRD YAML.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
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
        _ => {
            eprintln!(
                "usage: q8s-operator crds    (prints the CRD YAML; the reconciler comes next)"
            );
            ExitCode::from(2)
        }
    }
}
