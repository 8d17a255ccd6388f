//! Hooks: what a task's `hook` names, and calling it with the finished task's record.
//!
//! A hook is a registered function (called with the record as its only
//! argument, as in the seed), a URL (`http://…` or `https://…`: the record is
//! POSTed to it as JSON, a completion webhook), or `exec:PROGRAM` (the program,
//! allowed by `exec_allow`, gets the record as JSON on stdin). So a service in
//! any language can be told when a task finishes. Every hook runs under
//! `hook_timeout`: programs are killed and requests cut off when it runs out.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::registry::{Call, Registry};
use crate::task::{TaskError, TaskRecord};

/// What a task's `hook` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook<'a> {
    /// A function of the registry, called with the record.
    Function(&'a str),
    /// A URL the record is POSTed to.
    Webhook(&'a str),
    /// A program run with the record on stdin.
    Program(&'a str),
}

impl<'a> Hook<'a> {
    /// Reads a task's `hook`.
    pub fn parse(hook: &'a str) -> Hook<'a> {
        if hook.starts_with("http://") || hook.starts_with("https://") {
            Hook::Webhook(hook)
        } else if let Some(program) = hook.strip_prefix("exec:") {
            Hook::Program(program)
        } else {
            Hook::Function(hook)
        }
    }

    /// Calls the hook with `record`, giving it at most `timeout`.
    pub fn call(
        self,
        registry: &Registry,
        record: &TaskRecord,
        timeout: Duration,
    ) -> Result<Value, TaskError> {
        let record = serde_json::to_value(record).unwrap_or(Value::Null);
        match self {
            Hook::Function(func) => registry.call(&Call {
                func,
                args: &[record],
                kwargs: &Map::new(),
                timeout: Some(timeout),
            }),
            Hook::Webhook(url) => {
                let kwargs = json!({ "method": "POST", "json": record });
                let kwargs = kwargs.as_object().cloned().unwrap_or_default();
                registry.call(&Call {
                    func: "http.request",
                    args: &[Value::String(url.to_string())],
                    kwargs: &kwargs,
                    timeout: Some(timeout),
                })
            }
            Hook::Program(program) => {
                registry.run_program(program, record.to_string(), Some(timeout))
            }
        }
    }
}

/// How long past `hook_timeout` a hook is waited for before it is given up:
/// programs and requests stop at the timeout themselves; a Rust function may not.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(1);

/// Calls `record`'s hook on a blocking thread and waits for it at most
/// `timeout` (plus [`GIVE_UP_AFTER`]); a hook that fails or hangs is logged, never fatal.
pub async fn call_and_log(registry: Arc<Registry>, record: TaskRecord, timeout: Duration) {
    let Some(hook) = record.hook.clone() else {
        return;
    };
    let id = record.id.clone();
    let named = hook.clone();
    let call =
        tokio::task::spawn_blocking(move || Hook::parse(&hook).call(&registry, &record, timeout));
    // A Rust function that never returns keeps its thread; nobody waits for it.
    match tokio::time::timeout(timeout + GIVE_UP_AFTER, call).await {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(error))) => tracing::error!(task = %id, "hook {named} failed: {error}"),
        Ok(Err(error)) => tracing::error!(task = %id, "hook {named} failed: {error}"),
        Err(_) => tracing::error!(
            task = %id,
            "hook {named} still running after hook_timeout ({timeout:?}); given up"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_is_a_function_a_url_or_a_program() {
        assert_eq!(Hook::parse("myapp.notify"), Hook::Function("myapp.notify"));
        assert_eq!(
            Hook::parse("https://hooks.example/done"),
            Hook::Webhook("https://hooks.example/done")
        );
        assert_eq!(
            Hook::parse("exec:/opt/hooks/notify"),
            Hook::Program("/opt/hooks/notify")
        );
    }

    #[test]
    fn a_program_hook_gets_the_record_on_stdin_and_is_killed_at_its_timeout() {
        let folder = tempfile::tempdir().expect("temporary folder");
        let program = folder.path().join("hook");
        std::fs::write(&program, "#!/bin/sh\ncat > \"$0.seen\"\nsleep 30\n").expect("write");
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let allow = [format!("{}/*", folder.path().display())];
        let registry = Registry::with_builtins(&allow).expect("registry");
        let task = crate::task::Task::new("q8s.noop");
        let now = chrono::Utc::now();
        let record = TaskRecord::finished(&task, Ok(Value::Null), now, now, 1);
        let hook = format!("exec:{}", program.display());
        let started = std::time::Instant::now();
        let error = Hook::parse(&hook)
            .call(&registry, &record, Duration::from_millis(500))
            .expect_err("killed at its timeout");
        assert!(started.elapsed() < Duration::from_secs(5), "{error}");
        let seen = std::fs::read_to_string(folder.path().join("hook.seen")).expect("stdin");
        let seen: Value = serde_json::from_str(&seen).expect("the record as JSON");
        assert_eq!(seen["id"], task.id);
    }
}
