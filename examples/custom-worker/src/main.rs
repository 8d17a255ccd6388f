//! A worker binary of your own: the whole `q8s` command line, plus your functions.
//!
//! Build it, and run `custom-worker cluster` instead of `q8s cluster`: its
//! workers (and the hooks, which run in the sentinel) know `myapp.*`.
//!
//! ```sh
//! cargo build --release -p custom-worker
//! target/release/custom-worker enqueue --sync myapp.greet World
//! ```
//!
//! Its image (`examples/custom-worker/Dockerfile`) is the worker image with
//! this binary in place of `q8s`: a QCluster runs it with `spec.image`.

use std::io::Write;
use std::process::ExitCode;

use q8s::{Call, Registry, TaskError};
use serde_json::{Value, json};

fn main() -> ExitCode {
    q8s::cli::main_with(&|config: &q8s::Config| {
        let mut registry = Registry::with_builtins(&config.exec_allow)?;
        registry.register("myapp.greet", greet);
        registry.register("myapp.record_hook", record_hook);
        Ok(registry)
    })
}

/// Returns a greeting for its first argument.
fn greet(call: &Call) -> Result<Value, TaskError> {
    let name = call
        .arg(0, "name")
        .and_then(Value::as_str)
        .ok_or_else(|| TaskError::bad_arguments("myapp.greet takes a name"))?;
    Ok(json!(format!("Hello, {name}!")))
}

/// A hook: appends the finished task's id and success to the file named by `MYAPP_HOOK_LOG`.
fn record_hook(call: &Call) -> Result<Value, TaskError> {
    let task = call
        .arg(0, "task")
        .ok_or_else(|| TaskError::bad_arguments("a hook gets the finished task"))?;
    let path = std::env::var("MYAPP_HOOK_LOG")
        .map_err(|_| TaskError::failed("set MYAPP_HOOK_LOG to the file hooks append to"))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| TaskError::failed(format!("cannot open {path}: {e}")))?;
    // Hooks run side by side: one write per line keeps lines whole in the file.
    let line = format!(
        "{} {}\n",
        task["id"].as_str().unwrap_or("?"),
        task["success"]
    );
    file.write_all(line.as_bytes())
        .map_err(|e| TaskError::failed(format!("cannot write {path}: {e}")))?;
    Ok(Value::Null)
}
