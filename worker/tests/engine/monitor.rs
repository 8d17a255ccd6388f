//! `q8s monitor` in a real terminal: tmux runs it, 80 columns wide, beside a
//! live cluster, and the pane is read as a user reads it while the cluster
//! starts, works, recycles its workers and stops; `q` quits. `--once` prints
//! the same table.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use q8s::TaskRequest;

use crate::cluster::{ClusterProcess, q8s_binary};
use crate::support::{client, flags, sqlite};

/// A tmux server of the test's own (its socket named after the process), ended when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        // A server of its own, without the user's ~/.tmux.conf.
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("-f")
            .arg("/dev/null")
            .args(args)
            .output()
            .expect("tmux runs (scripts/test installs it)")
    }

    fn pane(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "monitor"]).stdout)
            .into_owned()
    }

    /// Waits until the pane satisfies `done`; the pane's text.
    fn pane_when(&self, what: &str, within: Duration, done: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let pane = self.pane();
            if done(&pane) {
                return pane;
            }
            assert!(
                started.elapsed() < within,
                "{what}: not within {within:?}; the pane:\n{pane}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "monitor"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The monitor's command line for the clusters of `settings`.
fn monitor_command(settings: &[String], extra: &[&str]) -> Vec<String> {
    let mut command = vec![q8s_binary().display().to_string()];
    for flag in settings {
        command.push("--set".into());
        command.push(flag.clone());
    }
    command.push("monitor".into());
    command.extend(extra.iter().map(|arg| arg.to_string()));
    command
}

/// The line of the pane that shows cluster `id`.
fn row<'a>(pane: &'a str, id: &str) -> Option<&'a str> {
    pane.lines()
        .find(|line| line.split_whitespace().nth(1) == Some(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_follows_a_cluster_live_in_a_real_terminal_and_q_quits() {
    let db = sqlite();
    // Each worker is replaced after every task, so RC climbs as they run.
    let options = ["label=Watched", "workers=2", "recycle=1"];
    let settings = flags(&db, &options);
    let cluster = ClusterProcess::start(&q8s_binary(), &db, &options);
    let id = cluster.pid().to_string();

    let tmux = Tmux {
        socket: format!("q8s-monitor-test-{}", std::process::id()),
    };
    let command = monitor_command(&settings, &[]);
    let mut args = vec!["new-session", "-d", "-s", "monitor", "-x", "80", "-y", "24"];
    args.extend(command.iter().map(String::as_str));
    let started = tmux.run(&args);
    assert!(started.status.success(), "{started:?}");

    // The cluster appears with the seed's columns, idle, with its two workers.
    let pane = tmux.pane_when("the cluster's row", Duration::from_secs(20), |pane| {
        row(pane, &id).is_some_and(|line| line.contains("Idle"))
    });
    let first = pane.lines().next().unwrap_or_default();
    assert!(
        first.contains("Watched") && first.contains("clusters 1"),
        "{pane}"
    );
    assert!(first.contains("workers 2"), "{pane}");
    assert!(
        pane.lines().any(
            |line| ["Host", "Id", "State", "Pool", "TQ", "RQ", "RC", "Up"]
                .iter()
                .all(|name| line.contains(name))
        ),
        "{pane}"
    );
    assert!(pane.contains("q quits"), "{pane}");
    assert!(pane.lines().all(|line| line.chars().count() <= 80));

    // Tasks make it Working, with running counted in the header.
    let producer = client(&db, &["label=Watched"]).await;
    for _ in 0..4 {
        producer
            .enqueue(TaskRequest::new("time.sleep").arg(8))
            .await
            .expect("enqueue");
    }
    tmux.pane_when("the cluster working", Duration::from_secs(20), |pane| {
        row(pane, &id).is_some_and(|line| line.contains("Working"))
            && pane
                .lines()
                .next()
                .is_some_and(|line| line.contains("running 2"))
    });
    // Then idle again, the successes in the footer, and its workers
    // recycled: RC counts them.
    tmux.pane_when(
        "the cluster idle, four successes",
        Duration::from_secs(30),
        |pane| {
            row(pane, &id).is_some_and(|line| line.contains("Idle")) && pane.contains("successes 4")
        },
    );
    tmux.pane_when(
        "the recycled workers in RC",
        Duration::from_secs(10),
        |pane| {
            row(pane, &id)
                .and_then(|line| line.split_whitespace().nth(6)?.parse::<u64>().ok())
                .is_some_and(|reincarnations| reincarnations >= 2)
        },
    );

    // A cluster that stops leaves the table once its Stat expires.
    cluster.stop();
    tmux.pane_when(
        "the stopped cluster gone",
        Duration::from_secs(30),
        |pane| row(pane, &id).is_none() && pane.contains("clusters 0"),
    );

    // q quits, and the terminal is given back.
    let quit = tmux.run(&["send-keys", "-t", "monitor", "q"]);
    assert!(quit.status.success(), "{quit:?}");
    let asked = Instant::now();
    while tmux.alive() {
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "the monitor did not quit on q:\n{}",
            tmux.pane()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The children of process `pid`, as the kernel lists them.
fn children(pid: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .collect()
}

#[test]
fn a_signal_ends_the_monitor_and_leaves_the_terminal_out_of_raw_mode() {
    let db = sqlite();
    let cluster = ClusterProcess::start(&q8s_binary(), &db, &["label=Signalled"]);
    let settings = flags(&db, &["label=Signalled"]);
    let folder = tempfile::tempdir().expect("temporary folder");
    let modes = folder.path().join("stty");
    // A shell runs the monitor, then records the terminal's modes once it has ended.
    let quoted: Vec<String> = monitor_command(&settings, &[])
        .iter()
        .map(|arg| format!("'{arg}'"))
        .collect();
    let script = format!("{}; stty -a > '{}'", quoted.join(" "), modes.display());
    let tmux = Tmux {
        socket: format!("q8s-monitor-signal-test-{}", std::process::id()),
    };
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "monitor",
        "-x",
        "80",
        "-y",
        "24",
        "sh",
        "-c",
        &script,
    ]);
    assert!(started.status.success(), "{started:?}");
    tmux.pane_when("the live table", Duration::from_secs(20), |pane| {
        pane.contains("Signalled") && pane.contains("q quits")
    });
    let shell = tmux.run(&["display-message", "-p", "-t", "monitor", "#{pane_pid}"]);
    let shell: u32 = String::from_utf8_lossy(&shell.stdout)
        .trim()
        .parse()
        .expect("the pane's process id");
    let monitor = *children(shell)
        .first()
        .expect("the monitor runs under the shell");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal the monitor");

    let asked = Instant::now();
    let modes = loop {
        match std::fs::read_to_string(&modes) {
            Ok(text) if !text.is_empty() => break text,
            _ => {}
        }
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "the monitor did not end on SIGTERM:\n{}",
            tmux.pane()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Raw mode turns these off (-icanon -echo); the monitor turned them back on.
    let words: Vec<&str> = modes.split_whitespace().collect();
    for mode in ["icanon", "echo", "isig"] {
        assert!(
            words.contains(&mode),
            "{mode} is off after the monitor:\n{modes}"
        );
    }
    drop(cluster);
}

#[test]
fn monitor_once_prints_the_table_as_text_for_scripts() {
    let db = sqlite();
    let cluster = ClusterProcess::start(&q8s_binary(), &db, &["label=Scripted"]);
    let id = cluster.pid().to_string();
    let settings = flags(&db, &["label=Scripted"]);
    let command = monitor_command(&settings, &["--once"]);
    // The cluster's first Stat may come just after its "running." line.
    let started = std::time::Instant::now();
    let (output, text) = loop {
        let output = Command::new(&command[0])
            .args(&command[1..])
            .output()
            .expect("q8s runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if row(&text, &id).is_some() || started.elapsed() > Duration::from_secs(15) {
            break (output, text);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(output.status.success(), "{output:?}");
    assert!(
        text.lines()
            .next()
            .is_some_and(|line| line.contains("Scripted")),
        "{text}"
    );
    assert!(row(&text, &id).is_some(), "{text}");
    // No escape sequences: it is text for a script or a pipe.
    assert!(!text.contains('\u{1b}'), "{text:?}");
    cluster.stop();
}
