//! Worker processes: the loop a worker runs, and the sentinel's handle on one.
//!
//! A worker is this same binary started with the internal `worker-process`
//! subcommand. It runs one task at a time: read a [`Job`], call the function,
//! write a [`Done`]. It dies with the sentinel (parent-death signal) and lives
//! in a process group of its own, so a Ctrl-C at the terminal reaches only the
//! sentinel, which then stops the workers in order.

use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use tokio::io::BufReader as AsyncBufReader;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::pipe::{self, Done, Job};
use crate::registry::Registry;

/// How long a retiring worker may take to exit before it is killed.
const RETIRE_GRACE: Duration = Duration::from_secs(5);

/// How to start a worker process: the program and the arguments that carry the configuration.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// This binary.
    pub program: PathBuf,
    /// Global arguments (`--config`, `--set`) so the worker loads the same configuration.
    pub config_args: Vec<String>,
}

/// Why a worker could not run a task.
#[derive(Debug, thiserror::Error)]
pub enum WorkerLost {
    /// The pipe broke: the process died.
    #[error("worker process {pid} died: {source}")]
    Died {
        /// The worker's pid.
        pid: u32,
        /// The pipe's error.
        source: std::io::Error,
    },
}

/// The sentinel's handle on one running worker process.
#[derive(Debug)]
pub struct WorkerProcess {
    /// The process id.
    pub pid: u32,
    /// Tasks this process has run.
    pub tasks_done: u64,
    /// When it was started.
    pub started: std::time::Instant,
    child: Child,
    stdin: ChildStdin,
    stdout: AsyncBufReader<ChildStdout>,
}

impl WorkerProcess {
    /// Starts a worker for `slot`, pinned to `cpus` when given.
    pub fn spawn(
        spec: &WorkerSpec,
        slot: usize,
        cpus: Option<&[usize]>,
    ) -> std::io::Result<WorkerProcess> {
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.config_args)
            .arg("worker-process")
            .arg("--slot")
            .arg(slot.to_string());
        if let Some(cpus) = cpus {
            let list: Vec<String> = cpus.iter().map(usize::to_string).collect();
            command.arg("--cpus").arg(list.join(","));
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or_default();
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("worker has no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("worker has no stdout"))?;
        Ok(WorkerProcess {
            pid,
            tasks_done: 0,
            started: std::time::Instant::now(),
            child,
            stdin,
            stdout: AsyncBufReader::new(stdout),
        })
    }

    /// Sends `job` and waits for its answer; cancel-safe only in that a cancelled run leaves the worker unusable.
    pub async fn run(&mut self, job: &Job) -> Result<Done, WorkerLost> {
        let pid = self.pid;
        pipe::send(&mut self.stdin, job)
            .await
            .map_err(|source| WorkerLost::Died { pid, source })?;
        let done = pipe::receive(&mut self.stdout)
            .await
            .map_err(|source| WorkerLost::Died { pid, source })?;
        self.tasks_done += 1;
        Ok(done)
    }

    /// Waits until the process exits by itself (used to notice an idle worker's death).
    pub async fn exited(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// Kills the process and everything it started (its process group) at once:
    /// a timed-out `exec` program must not outlive its task.
    pub async fn kill(mut self) {
        kill_group(self.pid);
        let _ = self.child.kill().await;
    }

    /// Asks the process to exit after its current task by closing its input; kills it after a grace period.
    pub async fn retire(self) {
        let WorkerProcess {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        if tokio::time::timeout(RETIRE_GRACE, child.wait())
            .await
            .is_err()
        {
            kill_group(child.id().unwrap_or_default());
            let _ = child.kill().await;
        }
    }
}

/// SIGKILL to the process group a worker leads (it was started with `process_group(0)`).
fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 0
    {
        let group = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
}

/// SIGKILL to this worker's process group when it leads one (the sentinel
/// starts it so); else, started some other way, to this process alone, so a
/// caller's group is never touched.
fn end_group() {
    if nix::unistd::getpgrp() == nix::unistd::getpid() {
        kill_group(std::process::id());
    }
    // Not the group's leader, or the kill failed.
    std::process::exit(1);
}

/// Resident memory of process `pid` (or `self`) in KiB.
pub fn rss_kib_of(pid: &str) -> u64 {
    proc_kib(pid, "status", "VmRSS:")
}

/// A `NAME:  N kB` line of `/proc/PID/FILE`, in KiB; 0 where there is no such line or no /proc.
pub fn proc_kib(pid: &str, file: &str, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Why a worker process could not start its loop.
#[derive(Debug, thiserror::Error)]
pub enum WorkerSetupError {
    /// A system call failed.
    #[error("worker setup: {0}")]
    System(#[from] nix::Error),
    /// Reading or writing the pipes failed.
    #[error("worker pipes: {0}")]
    Io(#[from] std::io::Error),
}

/// The worker process's main loop: run jobs from stdin until it closes.
pub fn run_worker_process(
    registry: &Registry,
    cpus: Option<&[usize]>,
) -> Result<(), WorkerSetupError> {
    use nix::sys::signal::Signal;
    // The sentinel may be PID 1 (a container's entrypoint): compare with the
    // parent seen before arming the signal, not with 1.
    let sentinel = nix::unistd::getppid();
    // The sentinel's death, even by kill -9, ends the worker's whole process
    // group: the programs its tasks started (`exec`) go with it, where the
    // kernel's SIGKILL would have ended the worker alone and left them running.
    let mut orphaned = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR2])?;
    std::thread::Builder::new()
        .name("orphaned".into())
        .spawn(move || {
            if orphaned.forever().next().is_some() {
                end_group();
            }
        })?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGUSR2)?;
    if nix::unistd::getppid() != sentinel {
        // The sentinel died before the parent-death signal was armed.
        return Ok(());
    }
    if let Some(cpus) = cpus {
        super::affinity::pin_current_process(cpus)?;
    }
    // Only the sentinel decides when a worker stops (by closing its input), so a
    // SIGTERM or SIGINT sent to every process of the group (systemd, a terminal)
    // never cuts a task short. The flag is not read: the handler only replaces the default.
    let ignored = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, std::sync::Arc::clone(&ignored))?;
    }
    // Keep the real stdout for answers; what functions print goes to stderr.
    // The copy is close-on-exec, so programs `exec` starts never hold the pipe open.
    let answers =
        std::fs::File::from(std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned()?);
    nix::unistd::dup2_stdout(std::io::stderr())?;
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut output = BufWriter::new(answers);
    while let Some(job) = pipe::read_frame::<Job>(&mut input)? {
        let started = Utc::now();
        let timeout = job.timeout_ms.map(Duration::from_millis);
        let outcome = registry.run(&job.task, timeout);
        let stopped = Utc::now();
        let done = Done {
            id: job.task.id,
            outcome,
            started,
            stopped,
        };
        pipe::write_frame(&mut output, &done)?;
    }
    Ok(())
}
