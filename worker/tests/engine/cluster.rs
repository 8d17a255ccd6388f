//! Real clusters as processes, on SQLite and PostgreSQL and, where a case
//! says so, on every broker: tasks flow, faults lose nothing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use q8s::task::ErrorKind;
use q8s::{Client, Stat, TaskRequest};
use serde_json::json;

use crate::support::{OnBroker, TestDb, client, databases, every_broker, flags};

const DEADLINE: Duration = Duration::from_secs(90);

pub fn q8s_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_q8s"))
}

/// The example worker binary with its own functions (`examples/custom-worker`).
fn custom_worker_binary() -> PathBuf {
    let binary = q8s_binary()
        .parent()
        .expect("the binary has a folder")
        .join("custom-worker");
    assert!(
        binary.exists(),
        "build the example first: cargo build -p custom-worker"
    );
    binary
}

/// A cluster process and its log.
pub struct ClusterProcess {
    child: Child,
    log: PathBuf,
    _folder: tempfile::TempDir,
}

impl ClusterProcess {
    pub fn start(program: &Path, db: &TestDb, extra: &[&str]) -> ClusterProcess {
        ClusterProcess::start_with_env(program, db, extra, &[])
    }

    fn start_with_env(
        program: &Path,
        db: &TestDb,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ClusterProcess {
        let folder = tempfile::tempdir().expect("temporary folder");
        let log = folder.path().join("cluster.log");
        let mut command = Command::new(program);
        for flag in flags(db, extra) {
            command.arg("--set").arg(flag);
        }
        command
            .arg("cluster")
            .current_dir(folder.path())
            .env("Q8S_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let cluster = ClusterProcess {
            child: command.spawn().expect("cluster starts"),
            log,
            _folder: folder,
        };
        cluster.wait_for_log("running.", Duration::from_secs(30));
        cluster
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, text: &str, within: Duration) {
        let started = Instant::now();
        while !self.log_text().contains(text) {
            assert!(
                started.elapsed() < within,
                "no {text:?} in the cluster log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Worker pids the log announced, in order.
    fn worker_pids(&self) -> Vec<i32> {
        self.log_text()
            .lines()
            .filter_map(|line| line.split("ready for work at ").nth(1))
            .filter_map(|pid| pid.trim().parse().ok())
            .collect()
    }

    /// SIGTERM, then the exit status (the stop procedure must finish in time).
    pub fn terminate(mut self) -> (ExitStatus, String) {
        kill(self.pid(), Signal::SIGTERM).expect("signal the sentinel");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, self.log_text());
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the cluster did not stop:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; the stop procedure must end with exit 0. Returns the log.
    pub fn stop(self) -> String {
        let (status, log) = self.terminate();
        assert!(status.success(), "the cluster exited with {status}:\n{log}");
        log
    }

    /// kill -9 of the sentinel.
    fn kill9(mut self) -> Vec<i32> {
        let workers = self.worker_pids();
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
        workers
    }
}

impl Drop for ClusterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes: it runs nothing.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

async fn enqueue_many(client: &Client, request: &TaskRequest, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push(client.enqueue(request.clone()).await.expect("enqueue"));
    }
    ids
}

/// Waits until every id has a result; returns how many succeeded.
async fn wait_for_results(client: &Client, ids: &[String]) -> usize {
    let started = Instant::now();
    let mut pending: Vec<&String> = ids.iter().collect();
    let mut successes = 0;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            match client.reader().fetch(id).await.expect("fetch") {
                Some(record) => successes += usize::from(record.success),
                None => still.push(id),
            }
        }
        pending = still;
        if !pending.is_empty() {
            assert!(
                started.elapsed() < DEADLINE,
                "{} tasks never finished",
                pending.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    successes
}

async fn finished_count(client: &Client, ids: &[String]) -> usize {
    let mut count = 0;
    for id in ids {
        count += usize::from(client.reader().fetch(id).await.expect("fetch").is_some());
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_flow_end_to_end_and_sigterm_exits_cleanly() {
    for db in databases().await {
        let settings = ["workers=2", "bulk=10", "save_limit=0"];
        let client = client(&db, &settings).await;
        let ids = enqueue_many(
            &client,
            &TaskRequest::new("math.copysign").arg(2).arg(-2),
            200,
        )
        .await;
        let cluster = ClusterProcess::start(&q8s_binary(), &db, &settings);
        assert_eq!(wait_for_results(&client, &ids).await, 200, "{}", db.label);
        assert_eq!(
            client.reader().result(&ids[0]).await.expect("result"),
            Some(Ok(json!(-2.0)))
        );
        let workers = cluster.worker_pids();
        let (status, log) = cluster.terminate();
        assert!(status.success(), "{}: exit {status}\n{log}", db.label);
        for line in [
            "stopping.",
            "stopped pushing tasks",
            "stopped doing work",
            "stopped monitoring results",
            "has stopped.",
        ] {
            assert!(log.contains(line), "{}: no {line:?} in\n{log}", db.label);
        }
        assert!(
            workers.iter().all(|pid| !alive(*pid)),
            "{}: workers left behind",
            db.label
        );
        let broker = client.broker();
        assert_eq!(
            broker.queue_size().await.expect("size") + broker.lock_size().await.expect("locks"),
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_hands_back_held_tasks_and_loses_nothing() {
    for db in databases().await {
        let settings = [
            "workers=2",
            "bulk=20",
            "queue_limit=40",
            "save_limit=0",
            "retry=300",
        ];
        let client = client(&db, &settings).await;
        let ids = enqueue_many(&client, &TaskRequest::new("time.sleep").arg(0.02), 300).await;
        let cluster = ClusterProcess::start(&q8s_binary(), &db, &settings);
        while finished_count(&client, &ids[..20]).await < 20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let workers = cluster.worker_pids();
        let (status, log) = cluster.terminate();
        assert!(status.success(), "{}: exit {status}\n{log}", db.label);
        assert!(
            workers.iter().all(|pid| !alive(*pid)),
            "{}: a worker outlived the stop",
            db.label
        );
        let broker = client.broker();
        // retry is 300 s: anything not finished must have been handed back at once.
        assert_eq!(
            broker.lock_size().await.expect("locks"),
            0,
            "{}: packages left in flight",
            db.label
        );
        let finished = finished_count(&client, &ids).await;
        let queued = broker.queue_size().await.expect("size") as usize;
        assert_eq!(
            finished + queued,
            300,
            "{}: {finished} finished + {queued} queued",
            db.label
        );
        assert!(
            queued > 0,
            "{}: the stop came too late to test anything",
            db.label
        );
        let cluster = ClusterProcess::start(&q8s_binary(), &db, &settings);
        assert_eq!(wait_for_results(&client, &ids).await, 300, "{}", db.label);
        cluster.stop();
    }
}

/// A worker killed mid-task hands its task back at once (not after `retry`, 60 s here),
/// with the attempt counted, on every broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_worker_mid_task_sends_its_task_back_at_once() {
    for on in every_broker().await {
        let folder = tempfile::tempdir().expect("temporary folder");
        // Writes the pid of the worker running it, then works for two seconds.
        let script = format!(
            "#!/bin/sh\necho $PPID >> {}/running\nsleep 2\necho null\n",
            folder.path().display()
        );
        let task = program(folder.path(), "work", &script);
        let allow = format!("exec_allow={}/*", folder.path().display());
        let settings = on.with(&["workers=2", "retry=60", "save_limit=0", allow.as_str()]);
        let client = on.client(&settings).await;
        let request = TaskRequest::new("exec").arg(task.display().to_string());
        let ids = enqueue_many(&client, &request, 4).await;
        let cluster = on.cluster(&settings);
        let running = folder.path().join("running");
        let started = Instant::now();
        let victim = loop {
            let text = std::fs::read_to_string(&running).unwrap_or_default();
            if let Some(pid) = text
                .lines()
                .next()
                .and_then(|line| line.trim().parse().ok())
            {
                break pid;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{}: no task started",
                on.label
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let killed = Instant::now();
        kill(Pid::from_raw(victim), Signal::SIGKILL).expect("kill -9 a worker");
        assert_eq!(wait_for_results(&client, &ids).await, 4, "{}", on.label);
        let took = killed.elapsed();
        assert!(
            took < Duration::from_secs(15),
            "{}: all done {took:?} after the kill; the receipt (60 s) was waited out",
            on.label
        );
        cluster.wait_for_log("goes back to the broker now", Duration::from_secs(5));
        let log = cluster.stop();
        assert_eq!(
            log.matches("ready for work at").count(),
            3,
            "{}: the dead worker was replaced\n{log}",
            on.label
        );
        let attempts: Vec<u32> = futures_attempts(&client, &ids).await;
        assert!(
            attempts.contains(&2),
            "{}: the lost delivery counted: {attempts:?}",
            on.label
        );
    }
}

async fn futures_attempts(client: &Client, ids: &[String]) -> Vec<u32> {
    let mut attempts = Vec::new();
    for id in ids {
        let record = client
            .reader()
            .fetch(id)
            .await
            .expect("fetch")
            .expect("saved");
        attempts.push(record.attempts);
    }
    attempts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_only_the_task_that_overran() {
    for db in databases().await {
        let settings = ["workers=2", "save_limit=0"];
        let client = client(&db, &settings).await;
        let slow = client
            .enqueue(TaskRequest::new("time.sleep").arg(60).timeout(1))
            .await
            .expect("enqueue");
        let quick = enqueue_many(&client, &TaskRequest::new("time.sleep").arg(0.05), 30).await;
        let started = Instant::now();
        let cluster = ClusterProcess::start(&q8s_binary(), &db, &settings);
        assert_eq!(wait_for_results(&client, &quick).await, 30, "{}", db.label);
        wait_for_results(&client, std::slice::from_ref(&slow)).await;
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}: the slow task held things up",
            db.label
        );
        let error = client
            .reader()
            .result(&slow)
            .await
            .expect("result")
            .expect("finished")
            .expect_err("timed out");
        assert_eq!(error.kind, ErrorKind::Timeout, "{}", db.label);
        let log = cluster.stop();
        assert!(log.contains("timed out running time.sleep"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycle_and_max_rss_replace_workers_and_stat_counts_them_and_the_finished_tasks() {
    for db in databases().await {
        let settings = ["workers=1", "recycle=5", "max_rss=60000", "save_limit=0"];
        let client = client(&db, &settings).await;
        let mut ids = enqueue_many(&client, &TaskRequest::new("q8s.noop"), 20).await;
        ids.push(
            client
                .enqueue(TaskRequest::new("q8s.alloc").arg(100))
                .await
                .expect("enqueue"),
        );
        let cluster = ClusterProcess::start(&q8s_binary(), &db, &settings);
        let sentinel = cluster.pid().to_string();
        assert_eq!(wait_for_results(&client, &ids).await, 21, "{}", db.label);
        let log = cluster.stop();
        assert!(log.contains("(recycle)"), "{}: {log}", db.label);
        assert!(log.contains("over max_rss"), "{}: {log}", db.label);
        let board = q8s::stat::SqlBoard(client.store().database().clone());
        let stat = Stat::find(&board, &sentinel)
            .await
            .expect("stat")
            .expect("the stopped cluster's last Stat");
        assert_eq!(stat.state, q8s::State::Stopped);
        assert!(
            stat.reincarnations >= 4,
            "{}: {} reincarnations",
            db.label,
            stat.reincarnations
        );
        assert_eq!(
            (stat.successes + stat.failures, stat.running),
            (21, 0),
            "{}: every finished task is counted, none runs",
            db.label
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_package_never_runs() {
    for db in databases().await {
        let folder = tempfile::tempdir().expect("temporary folder");
        let script = program(
            folder.path(),
            "touch-marker",
            "#!/bin/sh\nread input\ntouch \"$(echo \"$input\" | sed 's/.*\"args\":\\[\"\\([^\"]*\\)\".*/\\1/')\"\n",
        );
        let allow = format!("exec_allow={}/*", folder.path().display());
        let settings = ["workers=1", "save_limit=0", allow.as_str()];
        let client = client(&db, &settings).await;
        let genuine_marker = folder.path().join("genuine");
        let forged_marker = folder.path().join("forgeds");
        let forged = client
            .enqueue(
                TaskRequest::new("exec")
                    .arg(script.display().to_string())
                    .arg(folder.path().join("forged1").display().to_string()),
            )
            .await
            .expect("enqueue");
        // Tamper inside the database: point the task at another marker, same length.
        let database = client.store().database();
        let (payload,): (Vec<u8>,) = sqlx::query_as("SELECT payload FROM q8s_queue")
            .fetch_one(database.pool())
            .await
            .expect("payload");
        let tampered = String::from_utf8_lossy(&payload)
            .replace("forged1", "forgeds")
            .into_bytes();
        sqlx::query("UPDATE q8s_queue SET payload = $1")
            .bind(tampered)
            .execute(database.pool())
            .await
            .expect("tamper");
        let genuine = client
            .enqueue(
                TaskRequest::new("exec")
                    .arg(script.display().to_string())
                    .arg(genuine_marker.display().to_string()),
            )
            .await
            .expect("enqueue");
        let cluster = ClusterProcess::start(&q8s_binary(), &db, &settings);
        assert_eq!(
            wait_for_results(&client, std::slice::from_ref(&genuine)).await,
            1,
            "{}",
            db.label
        );
        assert!(
            genuine_marker.exists(),
            "{}: the genuine task ran",
            db.label
        );
        cluster.wait_for_log("rejected a package", Duration::from_secs(10));
        let log = cluster.stop();
        assert!(
            !forged_marker.exists(),
            "{}: the tampered task ran",
            db.label
        );
        assert!(!folder.path().join("forged1").exists(), "{}", db.label);
        assert_eq!(
            client.reader().fetch(&forged).await.expect("fetch"),
            None,
            "{}: never executed, never saved",
            db.label
        );
        let broker = client.broker();
        assert_eq!(
            broker.queue_size().await.expect("size") + broker.lock_size().await.expect("locks"),
            0,
            "{}: failed with the broker",
            db.label
        );
        assert!(
            !log.contains("forgeds"),
            "{}: the payload must not be logged",
            db.label
        );
    }
}

/// Accepts HTTP requests on 127.0.0.1 and passes each body on; answers 204.
fn webhook_receiver() -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("address").port();
    let (bodies, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
            if bodies
                .send(String::from_utf8_lossy(&body).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    (port, received)
}

/// Hooks run beside the result path under hook_timeout: a hook that hangs (for an hour,
/// killed at hook_timeout) or crashes holds up none of 1,000 other tasks, and a webhook
/// and an exec hook get the finished task's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_crashing_hook_holds_up_nothing_and_any_service_can_be_a_hook() {
    let db = crate::support::sqlite();
    let folder = tempfile::tempdir().expect("temporary folder");
    let hang = program(folder.path(), "hang", "#!/bin/sh\nsleep 3600\n");
    let crash = program(folder.path(), "crash", "#!/bin/sh\nkill -SEGV $$\n");
    let seen = folder.path().join("seen");
    let record = program(
        folder.path(),
        "record",
        &format!("#!/bin/sh\ncat > {}\n", seen.display()),
    );
    let (port, webhook) = webhook_receiver();
    let allow = format!("exec_allow={}/*", folder.path().display());
    let settings = [
        "workers=2",
        "hook_timeout=8",
        "bulk=100",
        "queue_limit=200",
        "save_limit=0",
        allow.as_str(),
    ];
    let client = client(&db, &settings).await;
    let hooked = |hook: String| TaskRequest::new("q8s.echo").arg("hooked").hook(hook);
    let mut first = Vec::new();
    for hook in [
        format!("exec:{}", hang.display()),
        format!("exec:{}", crash.display()),
        "q8s.fail".to_string(),
        "no.such.hook".to_string(),
    ] {
        first.push(client.enqueue(hooked(hook)).await.expect("enqueue"));
    }
    let webhooked = client
        .enqueue(hooked(format!("http://127.0.0.1:{port}/done")))
        .await
        .expect("enqueue");
    let programmed = client
        .enqueue(hooked(format!("exec:{}", record.display())))
        .await
        .expect("enqueue");
    let others: Vec<TaskRequest> = (0..1000).map(|_| TaskRequest::new("q8s.noop")).collect();
    let mut ids = client.enqueue_all(others).await.expect("enqueue");
    let cluster = ClusterProcess::start(&q8s_binary(), &db, &settings);
    let started = Instant::now();
    ids.extend(first);
    ids.extend([webhooked.clone(), programmed.clone()]);
    assert_eq!(wait_for_results(&client, &ids).await, ids.len());
    let took = started.elapsed();
    assert!(
        !cluster.log_text().contains("killed after"),
        "every result was in before the hung hook's timeout ({took:?})"
    );
    let body = webhook
        .recv_timeout(Duration::from_secs(10))
        .expect("the webhook was called");
    let posted: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(posted["id"], webhooked);
    assert_eq!(posted["result"], json!("hooked"));
    let started = Instant::now();
    while !seen.exists()
        || std::fs::read_to_string(&seen)
            .unwrap_or_default()
            .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "exec hook never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stdin: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&seen).expect("seen")).expect("JSON");
    assert_eq!(stdin["id"], programmed);
    cluster.wait_for_log("killed after", Duration::from_secs(20));
    let log = cluster.stop();
    assert!(log.contains("no function named no.such.hook"), "{log}");
    assert!(
        processes_with(&hang.display().to_string()).is_empty()
            && processes_with("sleep 3600").is_empty(),
        "the hung hook and what it started were killed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_are_called_once_per_finished_task() {
    for db in databases().await {
        let folder = tempfile::tempdir().expect("temporary folder");
        let hook_log = folder.path().join("hooks.log");
        let settings = ["workers=2", "ack_failures=true", "save_limit=0"];
        let client = client(&db, &settings).await;
        let hooked = |request: TaskRequest| request.hook("myapp.record_hook");
        let mut ids = enqueue_many(
            &client,
            &hooked(TaskRequest::new("myapp.greet").arg("you")),
            30,
        )
        .await;
        ids.extend(enqueue_many(&client, &hooked(TaskRequest::new("q8s.fail")), 10).await);
        ids.push(
            client
                .enqueue(hooked(TaskRequest::new("time.sleep").arg(30)).timeout(1))
                .await
                .expect("enqueue"),
        );
        let hook_log_text = hook_log.display().to_string();
        let cluster = ClusterProcess::start_with_env(
            &custom_worker_binary(),
            &db,
            &settings,
            &[("MYAPP_HOOK_LOG", hook_log_text.as_str())],
        );
        assert_eq!(wait_for_results(&client, &ids).await, 30, "{}", db.label);
        assert_eq!(
            client.reader().result(&ids[0]).await.expect("result"),
            Some(Ok(json!("Hello, you!")))
        );
        let log = cluster.stop();
        let lines: Vec<String> = std::fs::read_to_string(&hook_log)
            .expect("hooks wrote")
            .lines()
            .map(str::to_string)
            .collect();
        let hooked_ids: HashSet<&str> = lines
            .iter()
            .filter_map(|line| line.split(' ').next())
            .collect();
        assert_eq!(
            lines.len(),
            41,
            "{}: one call per finished task\n{lines:?}\n{log}",
            db.label
        );
        assert_eq!(hooked_ids.len(), 41, "{}", db.label);
        assert_eq!(
            lines.iter().filter(|line| line.ends_with("false")).count(),
            11,
            "{}: {lines:?}\n{log}",
            db.label
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_worker_does_not_stall_the_others() {
    for db in databases().await {
        let settings = ["workers=2", "timeout=3", "save_limit=0"];
        let client = client(&db, &settings).await;
        let cluster = ClusterProcess::start(&q8s_binary(), &db, &settings);
        let hung = cluster.worker_pids()[0];
        kill(Pid::from_raw(hung), Signal::SIGSTOP).expect("freeze a worker");
        let started = Instant::now();
        let ids = enqueue_many(&client, &TaskRequest::new("q8s.noop"), 50).await;
        let successes = wait_for_results(&client, &ids).await;
        assert!(successes >= 49, "{}: {successes} of 50", db.label);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}: the cluster stalled",
            db.label
        );
        cluster.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_task_is_not_delivered_again_while_it_runs() {
    for db in databases().await {
        // retry is 1 s and the task has no timeout: only extended receipts keep
        // the second worker from getting it while the first runs it.
        let settings = ["workers=2", "retry=1", "save_limit=0"];
        let client = client(&db, &settings).await;
        let id = client
            .enqueue(TaskRequest::new("time.sleep").arg(3.5))
            .await
            .expect("enqueue");
        let cluster = ClusterProcess::start(&q8s_binary(), &db, &settings);
        wait_for_results(&client, std::slice::from_ref(&id)).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let record = client
            .reader()
            .fetch(&id)
            .await
            .expect("fetch")
            .expect("finished");
        assert_eq!(record.attempts, 1, "{}: delivered a second time", db.label);
        let broker = client.broker();
        assert_eq!(
            broker.queue_size().await.expect("size") + broker.lock_size().await.expect("locks"),
            0
        );
        let log = cluster.stop();
        assert_eq!(
            log.matches("ready for work at").count(),
            2,
            "{}: no worker was replaced",
            db.label
        );
    }
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_serves_health_readiness_and_metrics_and_pins_workers() {
    let db = crate::support::sqlite();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let cpus = q8s::cluster::affinity::allowed_cpus().expect("this process's CPUs");
    let http_port = format!("http_port={port}");
    let settings = [
        "workers=2",
        "http_host=127.0.0.1",
        http_port.as_str(),
        "cpu_affinity=1",
    ];
    let client = client(&db, &settings).await;
    let mut ids = enqueue_many(&client, &TaskRequest::new("q8s.fail"), 3).await;
    ids.extend(enqueue_many(&client, &TaskRequest::new("made.up.name"), 2).await);
    // flags() turns HTTP off; the later --set in `settings` wins.
    let cluster = ClusterProcess::start(&q8s_binary(), &db, &settings);
    wait_for_results(&client, &ids).await;
    assert!(http_get(port, "/healthz").starts_with("HTTP/1.1 200"));
    let ready = http_get(port, "/readyz");
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.contains("2 workers up"),
        "{ready}"
    );
    let response = http_get(port, "/metrics");
    assert!(
        response.contains("application/openmetrics-text"),
        "{response}"
    );
    let body = response.split("\r\n\r\n").nth(1).expect("a body");
    if let Some(samples) = crate::support::parse_exposition(body) {
        let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
            samples
                .iter()
                .find(|(sample, have, _)| {
                    sample == name
                        && have.get("cluster").map(String::as_str) == Some("default")
                        && labels
                            .iter()
                            .all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v))
                })
                .map(|(_, _, value)| *value)
        };
        let failed = [("func", "q8s.fail"), ("outcome", "failed")];
        assert_eq!(
            value("q8s_tasks_finished_total", &failed),
            Some(3.0),
            "{body}"
        );
        let unknown = [("func", "unknown"), ("outcome", "unknown_function")];
        assert_eq!(
            value("q8s_tasks_finished_total", &unknown),
            Some(2.0),
            "{body}"
        );
        assert_eq!(value("q8s_workers", &[]), Some(2.0), "{body}");
        let duration = [("func", "q8s.fail")];
        assert_eq!(
            value("q8s_task_duration_seconds_count", &duration),
            Some(3.0),
            "{body}"
        );
        // The wait from enqueue to start, by function too.
        assert_eq!(
            value("q8s_task_wait_seconds_count", &duration),
            Some(3.0),
            "{body}"
        );
        // The SQL broker says how old its oldest waiting package is.
        assert!(
            value("q8s_broker_queue_age_seconds", &[])
                .is_some_and(|age| (0.0..60.0).contains(&age)),
            "{body}"
        );
        assert!(
            !body.contains("made.up.name"),
            "made-up names do not become labels"
        );
    }
    assert!(http_get(port, "/nowhere").starts_with("HTTP/1.1 404"));
    for pid in cluster.worker_pids() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("worker status");
        let allowed = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list")
            .trim()
            .to_string();
        if cpus.len() > 1 {
            assert!(
                allowed.parse::<usize>().is_ok(),
                "worker {pid} pinned to one CPU, got {allowed}"
            );
        }
    }
    cluster.stop();
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
                .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
                .filter(|cmdline| cmdline.contains(needle))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_exec_program_does_not_outlive_its_task() {
    let db = crate::support::sqlite();
    let folder = tempfile::tempdir().expect("temporary folder");
    let script = program(folder.path(), "slow", "#!/bin/sh\nexec sleep 41.75\n");
    let allow = format!("exec_allow={}/*", folder.path().display());
    let settings = ["workers=1", "save_limit=0", allow.as_str()];
    let client = client(&db, &settings).await;
    let id = client
        .enqueue(
            TaskRequest::new("exec")
                .arg(script.display().to_string())
                .timeout(1),
        )
        .await
        .expect("enqueue");
    let cluster = ClusterProcess::start(&q8s_binary(), &db, &settings);
    wait_for_results(&client, std::slice::from_ref(&id)).await;
    let error = client
        .reader()
        .result(&id)
        .await
        .expect("result")
        .expect("finished")
        .expect_err("timed out");
    assert_eq!(error.kind, ErrorKind::Timeout);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        processes_with("sleep 41.75").is_empty(),
        "the program outlived its task"
    );
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_sentinel_is_pid_1_runs_tasks() {
    // A container's entrypoint is PID 1; a fresh PID namespace reproduces that.
    let unshare = ["--pid", "--fork", "--kill-child=SIGTERM", "--mount-proc"];
    let works = Command::new("unshare")
        .args(unshare)
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        eprintln!("skipping: this machine cannot make a PID namespace (unshare needs root)");
        return;
    }
    let db = crate::support::sqlite();
    let settings = ["workers=2", "save_limit=0"];
    let client = client(&db, &settings).await;
    let ids = enqueue_many(&client, &TaskRequest::new("math.sqrt").arg(16), 20).await;
    let mut command = Command::new("unshare");
    command.args(unshare).arg(q8s_binary());
    for flag in flags(&db, &settings) {
        command.arg("--set").arg(flag);
    }
    let folder = tempfile::tempdir().expect("temporary folder");
    let log = folder.path().join("cluster.log");
    let mut child = command
        .arg("cluster")
        .env("Q8S_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("unshare starts");
    assert_eq!(wait_for_results(&client, &ids).await, 20);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("Q Cluster-1 starting."),
        "the sentinel is PID 1:\n{text}"
    );
    // unshare does not pass signals on: stop the sentinel, its child, directly.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
        .expect("unshare's children");
    let sentinel: i32 = children
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .expect("the sentinel");
    kill(Pid::from_raw(sentinel), Signal::SIGTERM).expect("signal the sentinel");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(
            started.elapsed() < DEADLINE,
            "the PID 1 cluster did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("has stopped."), "{text}");
}

/// A redis-server of a test's own, on a port it chose, with an append-only file.
struct PrivateRedis {
    child: Child,
    port: u16,
    folder: tempfile::TempDir,
}

impl PrivateRedis {
    fn start(folder: tempfile::TempDir, port: u16) -> PrivateRedis {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(folder.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateRedis {
            child,
            port,
            folder,
        }
    }

    /// Stops the server (SIGTERM: it writes what it has) and starts it again on the same port and data.
    fn restart(mut self, down_for: Duration) -> PrivateRedis {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("stop redis");
        let _ = self.child.wait();
        std::thread::sleep(down_for);
        let (port, folder) = (
            self.port,
            std::mem::replace(&mut self.folder, tempfile::tempdir().expect("folder")),
        );
        PrivateRedis::start(folder, port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_under_load_loses_nothing() {
    if crate::support::redis_url().is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let redis = PrivateRedis::start(tempfile::tempdir().expect("folder"), port);
    let store = crate::support::sqlite();
    let broker = format!("broker=redis://127.0.0.1:{port}/0");
    let store_url = format!("store={}", store.url);
    let settings = [
        "workers=2",
        "bulk=10",
        "retry=2",
        "save_limit=0",
        broker.as_str(),
        store_url.as_str(),
    ];
    let client = client(&store, &settings).await;
    let ids = enqueue_many(&client, &TaskRequest::new("time.sleep").arg(0.005), 1000).await;
    let cluster = ClusterProcess::start(&q8s_binary(), &store, &settings);
    while finished_count(&client, &ids[..100]).await < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let redis = redis.restart(Duration::from_millis(1500));
    assert!(
        finished_count(&client, &ids).await < 1000,
        "the restart came too late to test anything"
    );
    assert_eq!(
        wait_for_results(&client, &ids).await,
        1000,
        "every accepted task finished"
    );
    cluster.stop();
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_results_live_in_redis_and_are_read_back_from_there() {
    let Some(redis) = crate::support::redis_url() else {
        return;
    };
    let store = crate::support::sqlite();
    let broker = format!("broker={redis}");
    let store_url = format!("store={}", store.url);
    let name = format!("name=test-{}", uuid::Uuid::new_v4().simple());
    let group = format!("cached-{}", uuid::Uuid::new_v4().simple());
    let settings = [
        "workers=1",
        "cached=60",
        "save_limit=0",
        broker.as_str(),
        store_url.as_str(),
        name.as_str(),
    ];
    let client = client(&store, &settings).await;
    let request = TaskRequest::new("math.copysign")
        .arg(2)
        .arg(-2)
        .group(group.clone());
    let mut ids = enqueue_many(&client, &request, 3).await;
    ids.push(
        client
            .enqueue(TaskRequest::new("q8s.fail").group(group.clone()))
            .await
            .expect("enqueue"),
    );
    let cluster = ClusterProcess::start(&q8s_binary(), &store, &settings);
    assert_eq!(wait_for_results(&client, &ids).await, 3);
    cluster.stop();
    assert_eq!(
        client.reader().result(&ids[0]).await.expect("result"),
        Some(Ok(json!(-2.0)))
    );
    assert!(
        client
            .store()
            .fetch(&ids[0])
            .await
            .expect("store")
            .is_none(),
        "not in the SQL store"
    );
    assert_eq!(
        client
            .reader()
            .result_group(&group, false)
            .await
            .expect("group"),
        vec![json!(-2.0); 3]
    );
    assert_eq!(
        client
            .reader()
            .count_group(&group, false)
            .await
            .expect("count"),
        4
    );
    assert_eq!(
        client
            .reader()
            .count_group(&group, true)
            .await
            .expect("count"),
        1
    );
    assert_eq!(
        client
            .reader()
            .fetch_group(&group, true)
            .await
            .expect("fetch")
            .len(),
        4
    );
    // `q8s fetch` with `cached` reads the cache alone: a store it cannot
    // open (each pod's file, on Kubernetes) is not in the way.
    let fetched = std::process::Command::new(q8s_binary())
        .args(["--set", &broker, "--set", &name, "--set", "cached=true"])
        .args([
            "--set",
            "store=sqlite:///nonexistent/folder/q8s.db",
            "fetch",
            &ids[0],
        ])
        .output()
        .expect("q8s fetch runs");
    let out = String::from_utf8_lossy(&fetched.stdout);
    assert!(
        fetched.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    assert!(out.contains(&ids[0]) && out.contains("-2.0"), "{out}");
    // A SQL broker has no cache: asking for one says what to do.
    let sql = crate::support::sqlite();
    let sql_client = crate::support::client(&sql, &[]).await;
    let error = sql_client
        .enqueue(TaskRequest::new("q8s.noop").cached(q8s::config::Cached::On))
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("redis://"), "{error}");
}

/// Settings as the `&[&str]` the helpers take.
fn strs(settings: &[String]) -> Vec<&str> {
    settings.iter().map(String::as_str).collect()
}

impl OnBroker {
    async fn client(&self, settings: &[String]) -> Client {
        client(&self.store, &strs(settings)).await
    }

    fn cluster(&self, settings: &[String]) -> ClusterProcess {
        ClusterProcess::start(&q8s_binary(), &self.store, &strs(settings))
    }
}

/// Nothing is left in the broker: every package was acknowledged.
async fn assert_broker_empty(on: &OnBroker, client: &Client) {
    let broker = client.broker();
    assert_eq!(
        broker.queue_size().await.expect("size") + broker.lock_size().await.expect("locks"),
        0,
        "{}: packages left in the broker",
        on.label
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_whole_cluster_mid_load_loses_nothing() {
    for on in every_broker().await {
        let settings = on.with(&["workers=2", "bulk=10", "retry=2", "save_limit=0"]);
        let client = on.client(&settings).await;
        assert!(client.broker().info().name.ends_with(on.label));
        let ids = enqueue_many(&client, &TaskRequest::new("time.sleep").arg(0.01), 300).await;
        let cluster = on.cluster(&settings);
        while finished_count(&client, &ids[..30]).await < 30 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let workers = cluster.kill9();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            workers.iter().all(|pid| !alive(*pid)),
            "{}: workers outlived their sentinel",
            on.label
        );
        assert!(
            finished_count(&client, &ids).await < 300,
            "{}: the kill came too late to test anything",
            on.label
        );
        let cluster = on.cluster(&settings);
        assert_eq!(
            wait_for_results(&client, &ids).await,
            300,
            "{}: every accepted task finished",
            on.label
        );
        // A task saved but not yet acknowledged at the kill comes back once its
        // receipt (2 s) runs out, and runs again: the broker empties after that.
        let saved = Instant::now();
        loop {
            let broker = client.broker();
            let left =
                broker.queue_size().await.expect("size") + broker.lock_size().await.expect("locks");
            if left == 0 {
                break;
            }
            assert!(
                saved.elapsed() < Duration::from_secs(20),
                "{}: {left} packages left in the broker",
                on.label
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster.stop();
        assert_broker_empty(&on, &client).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_sentinel_takes_the_programs_its_tasks_started() {
    let on = every_broker().await.into_iter().next().expect("SQLite");
    let folder = tempfile::tempdir().expect("temporary folder");
    let running = folder.path().join("running");
    // A program that leaves a child of its own running, then waits for it.
    let script = format!(
        "#!/bin/sh\nsleep 300 &\necho $! > {}\nwait\n",
        running.display()
    );
    let task = program(folder.path(), "linger", &script);
    let allow = format!("exec_allow={}/*", folder.path().display());
    let settings = on.with(&["workers=1", allow.as_str()]);
    let client = on.client(&settings).await;
    client
        .enqueue(TaskRequest::new("exec").arg(task.display().to_string()))
        .await
        .expect("enqueue");
    let cluster = on.cluster(&settings);
    let started = Instant::now();
    let sleeper: i32 = loop {
        let text = std::fs::read_to_string(&running).unwrap_or_default();
        if let Ok(pid) = text.trim().parse() {
            break pid;
        }
        assert!(started.elapsed() < DEADLINE, "the task did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(alive(sleeper));
    cluster.kill9();
    let killed = Instant::now();
    while alive(sleeper) {
        if killed.elapsed() > Duration::from_secs(3) {
            let _ = kill(Pid::from_raw(sleeper), Signal::SIGKILL);
            panic!("the task's program {sleeper} outlived the sentinel's kill -9");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An executable script `name` in `folder`, for `exec` tasks.
fn program(folder: &Path, name: &str, text: &str) -> PathBuf {
    let path = folder.join(name);
    std::fs::write(&path, text).expect("program");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    path
}

/// A program for `exec` that appends its input (the task's arguments) to `runs`.
fn recording_program(folder: &Path) -> PathBuf {
    let runs = folder.join("runs");
    program(
        folder,
        "record",
        &format!(
            "#!/bin/sh\nline=$(cat)\nprintf '%s\\n' \"$line\" >> '{}'\necho null\n",
            runs.display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_on_one_queue_run_each_task_once() {
    for on in every_broker().await {
        let folder = tempfile::tempdir().expect("temporary folder");
        let program = recording_program(folder.path());
        let allow = format!("exec_allow={}/*", folder.path().display());
        let settings = on.with(&["workers=2", "bulk=5", "save_limit=0", allow.as_str()]);
        let client = on.client(&settings).await;
        let first = on.cluster(&settings);
        let second = on.cluster(&settings);
        let total = 200;
        let mut ids = Vec::new();
        for n in 0..total {
            let request = TaskRequest::new("exec")
                .arg(program.display().to_string())
                .arg(n);
            ids.push(client.enqueue(request).await.expect("enqueue"));
        }
        assert_eq!(wait_for_results(&client, &ids).await, total, "{}", on.label);
        first.stop();
        second.stop();
        let runs = std::fs::read_to_string(folder.path().join("runs")).expect("runs");
        let lines: Vec<&str> = runs.lines().collect();
        let unique: HashSet<&str> = lines.iter().copied().collect();
        assert_eq!(unique.len(), total, "{}: every task ran", on.label);
        if on.delivers_once() {
            assert_eq!(lines.len(), total, "{}: no task ran twice", on.label);
        }
        assert_broker_empty(&on, &client).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_gives_up_and_saves_the_task_as_failed() {
    for on in every_broker().await {
        let folder = tempfile::tempdir().expect("temporary folder");
        // Kills its own worker, as a crash would: the task never finishes.
        let crasher = program(
            folder.path(),
            "crash",
            "#!/bin/sh\nkill -9 $PPID\nsleep 5\n",
        );
        let allow = format!("exec_allow={}/*", folder.path().display());
        let settings = on.with(&["workers=1", "retry=1", "max_attempts=2", allow.as_str()]);
        let client = on.client(&settings).await;
        let cluster = on.cluster(&settings);
        let crash = client
            .enqueue(TaskRequest::new("exec").arg(crasher.display().to_string()))
            .await
            .expect("enqueue");
        let fine = client
            .enqueue(TaskRequest::new("math.copysign").arg(2).arg(-2))
            .await
            .expect("enqueue");
        wait_for_results(&client, &[crash.clone(), fine.clone()]).await;
        let record = client
            .reader()
            .fetch(&crash)
            .await
            .expect("fetch")
            .expect("saved");
        assert!(!record.success, "{}", on.label);
        assert_eq!(
            record.error_kind,
            Some(ErrorKind::WorkerLost),
            "{}",
            on.label
        );
        assert_eq!(
            record.attempts, 3,
            "{}: given up on the third delivery",
            on.label
        );
        assert!(
            client
                .reader()
                .fetch(&fine)
                .await
                .expect("fetch")
                .expect("saved")
                .success
        );
        let log = cluster.stop();
        assert!(
            log.contains("gave up after 2 attempts"),
            "{}:\n{log}",
            on.label
        );
        assert_broker_empty(&on, &client).await;
    }
}
