//! `exec`: run a program the cluster allows, JSON in on stdin, JSON out on stdout.
//!
//! The first argument is the program; the remaining arguments and the keyword
//! arguments go to its stdin as `{"args": […], "kwargs": {…}}`. Its stdout,
//! parsed as JSON, is the result (empty stdout is `null`). A non-zero exit
//! fails the task with the end of its stderr. It is killed at the task's timeout.

use std::io::{Read, Write};
use std::path::{Component, Path};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde_json::{Value, json};

use super::{Call, RegistryError};
use crate::task::{ErrorKind, TaskError};

/// How often a running program is checked for exit or timeout.
const WAIT_STEP: Duration = Duration::from_millis(5);
/// How much of stderr a failure message quotes.
const QUOTED_STDERR_BYTES: usize = 2000;

/// Which programs `exec` may run: those matching one of the `exec_allow` globs.
#[derive(Debug, Clone)]
pub struct ExecPolicy {
    allowed: GlobSet,
    globs: Vec<String>,
}

impl ExecPolicy {
    /// A policy from globs; `*` does not cross `/`, `**` does.
    pub fn new(globs: &[String]) -> Result<ExecPolicy, RegistryError> {
        let mut builder = GlobSetBuilder::new();
        for glob in globs {
            let glob = GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
                .map_err(|e| RegistryError::BadGlob(e.to_string()))?;
            builder.add(glob);
        }
        let allowed = builder
            .build()
            .map_err(|e| RegistryError::BadGlob(e.to_string()))?;
        Ok(ExecPolicy {
            allowed,
            globs: globs.to_vec(),
        })
    }

    /// A policy that allows no program.
    pub fn refusing_all() -> ExecPolicy {
        ExecPolicy {
            allowed: GlobSet::empty(),
            globs: Vec::new(),
        }
    }

    /// Whether `program` may run: matched as written, and never through `..`.
    pub fn allows(&self, program: &str) -> bool {
        let climbs = Path::new(program)
            .components()
            .any(|part| matches!(part, Component::ParentDir));
        !climbs && self.allowed.is_match(program)
    }
}

pub(super) fn run(policy: &ExecPolicy, call: &Call) -> Result<Value, TaskError> {
    let program = call.args.first().and_then(Value::as_str).ok_or_else(|| {
        TaskError::bad_arguments("exec: the first argument must be the program to run")
    })?;
    let input = json!({ "args": &call.args[1..], "kwargs": call.kwargs }).to_string();
    // In a worker, the program stays in the worker's process group, which the
    // sentinel kills whole when the task overruns.
    run_program(policy, program, input, call.timeout, false)
}

/// Runs `program` (if `policy` allows it) with `input` on stdin, killed after `timeout`;
/// its stdout, parsed as JSON, is the result. With `own_group`, the program leads a
/// process group of its own, killed whole at the timeout, so nothing it started lives on.
pub(super) fn run_program(
    policy: &ExecPolicy,
    program: &str,
    input: String,
    timeout: Option<Duration>,
    own_group: bool,
) -> Result<Value, TaskError> {
    if !policy.allows(program) {
        return Err(TaskError::failed(format!(
            "exec: {program} is not allowed; add a glob matching it to exec_allow (now {:?})",
            policy.globs
        )));
    }
    let mut command = Command::new(program);
    if own_group {
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| TaskError::failed(format!("exec: cannot start {program}: {e}")))?;

    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        // A program that exits without reading its input is not an error here.
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(input.as_bytes());
        }
    });
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());

    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                if own_group && let Ok(pid) = i32::try_from(child.id()) {
                    let group = nix::unistd::Pid::from_raw(pid);
                    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(TaskError::new(
                    ErrorKind::Timeout,
                    format!(
                        "exec: {program} was killed after its time limit (the task's timeout, or hook_timeout for a hook)"
                    ),
                ));
            }
            Ok(None) => std::thread::sleep(WAIT_STEP),
            Err(e) => {
                return Err(TaskError::failed(format!(
                    "exec: waiting for {program}: {e}"
                )));
            }
        }
    };
    let _ = writer.join();
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let tail = &stderr[stderr.len().saturating_sub(QUOTED_STDERR_BYTES)..];
        return Err(TaskError::failed(format!(
            "exec: {program} exited with {status}: {}",
            String::from_utf8_lossy(tail).trim()
        )));
    }
    let text = String::from_utf8_lossy(&stdout);
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text.trim()).map_err(|e| {
        TaskError::failed(format!(
            "exec: {program} printed something that is not JSON ({e})"
        ))
    })
}

fn read_in_background<R: Read + Send + 'static>(
    pipe: Option<R>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn exec(
        allow: &[&str],
        args: Vec<Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, TaskError> {
        let policy = ExecPolicy::new(&allow.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("globs parse");
        let kwargs = Map::new();
        run(
            &policy,
            &Call {
                func: "exec",
                args: &args,
                kwargs: &kwargs,
                timeout,
            },
        )
    }

    #[test]
    fn program_not_allowed_is_never_started() {
        let error = exec(&["/opt/tasks/*"], vec![json!("/bin/cat")], None).expect_err("refused");
        assert!(error.message.contains("not allowed"), "{}", error.message);
        assert!(
            !ExecPolicy::new(&["/opt/tasks/*".into()])
                .expect("parses")
                .allows("/opt/tasks/../../bin/sh")
        );
        assert!(
            !ExecPolicy::new(&["/opt/tasks/*".into()])
                .expect("parses")
                .allows("/opt/tasks/sub/prog")
        );
    }

    #[test]
    fn program_gets_json_on_stdin_and_its_stdout_is_the_result() {
        let result = exec(
            &["/bin/cat"],
            vec![json!("/bin/cat"), json!(1), json!("two")],
            None,
        )
        .expect("runs");
        assert_eq!(result, json!({"args": [1, "two"], "kwargs": {}}));
    }

    fn script(dir: &tempfile::TempDir, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path.display().to_string()
    }

    #[test]
    fn failing_program_fails_the_task_with_its_stderr() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let program = script(
            &dir,
            "broken",
            "cat >/dev/null; echo 'disk on fire' >&2; exit 3",
        );
        let glob = format!("{}/*", dir.path().display());
        let error = exec(&[&glob], vec![json!(program)], None).expect_err("fails");
        assert_eq!(error.kind, ErrorKind::Failed);
        assert!(error.message.contains("disk on fire"), "{}", error.message);
    }

    #[test]
    fn program_running_past_the_timeout_is_killed() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let program = script(&dir, "slow", "exec sleep 30");
        let glob = format!("{}/*", dir.path().display());
        let started = Instant::now();
        let error = exec(
            &[&glob],
            vec![json!(program)],
            Some(Duration::from_millis(200)),
        )
        .expect_err("times out");
        assert_eq!(error.kind, ErrorKind::Timeout);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
