//! The `q8s` binary as a user runs it, in a fresh folder with nothing configured.

use std::path::Path;
use std::process::{Command, Output};

fn q8s(folder: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_q8s"))
        .args(args)
        .current_dir(folder)
        .env_remove("Q8S_CONFIG")
        .output()
        .expect("the q8s binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

/// A folder where `q8s migrate` and `q8s key` have run, as a user's first steps.
fn ready_folder() -> tempfile::TempDir {
    let folder = tempfile::tempdir().expect("temporary folder");
    for step in ["migrate", "key"] {
        let output = q8s(folder.path(), &[step]);
        assert!(output.status.success(), "q8s {step}: {}", stderr(&output));
    }
    folder
}

#[test]
fn a_fresh_folder_says_to_migrate_and_create_a_key_and_reading_writes_nothing() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let output = q8s(folder.path(), &["config"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        !folder.path().join("q8s.key").exists(),
        "reading the configuration writes no key"
    );
    let output = q8s(folder.path(), &["result", "0123"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("run `q8s migrate`"),
        "{}",
        stderr(&output)
    );
    assert!(
        !folder.path().join("q8s.db").exists(),
        "a reader creates no database"
    );
    let migrated = q8s(folder.path(), &["migrate"]);
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let output = q8s(folder.path(), &["enqueue", "q8s.noop"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("run `q8s key`"),
        "{}",
        stderr(&output)
    );
    let key = q8s(folder.path(), &["key"]);
    assert_eq!(stdout(&key), "q8s.key");
    let again = q8s(folder.path(), &["key"]);
    assert_eq!(stdout(&again), "q8s.key", "kept, not replaced");
    assert!(
        q8s(folder.path(), &["enqueue", "q8s.noop"])
            .status
            .success()
    );
}

#[test]
fn config_written_as_toml_loads_back_and_the_schema_prints() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let first = q8s(
        folder.path(),
        &[
            "--set",
            "workers=3",
            "--set",
            "timeout=20",
            "config",
            "--toml",
        ],
    );
    assert!(first.status.success(), "{}", stderr(&first));
    std::fs::write(folder.path().join("q8s.toml"), &first.stdout).expect("write");
    let again = q8s(folder.path(), &["config", "--toml"]);
    assert_eq!(stdout(&again), stdout(&first));
    assert!(stdout(&again).contains("workers = 3"), "{}", stdout(&again));
    // The plain listing is TOML as well: secrets and unset options are comments.
    let listing = q8s(
        folder.path(),
        &["--set", "broker=redis://:pw@127.0.0.1:1/0", "config"],
    );
    let text = stdout(&listing);
    assert!(text.contains("# broker = redis://:***@"), "{text}");
    let table: toml::Table = text.parse().expect("the listing is TOML");
    assert_eq!(table["workers"].as_integer(), Some(3));
    let schema = q8s(folder.path(), &["config", "--schema"]);
    let schema: serde_json::Value = serde_json::from_slice(&schema.stdout).expect("JSON");
    assert_eq!(schema["properties"]["timeout"]["maximum"], 31_536_000);
}

#[test]
fn a_reader_that_went_away_ends_the_output_quietly_and_a_full_disk_fails_it() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let run = |stdout: std::process::Stdio| {
        Command::new(env!("CARGO_BIN_EXE_q8s"))
            .arg("config")
            .current_dir(folder.path())
            .env_remove("Q8S_CONFIG")
            .stdout(stdout)
            .output()
            .expect("the q8s binary runs")
    };
    // `q8s config | head -0`: the pipe's reader is gone before the first line.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let gone = run(writer.into());
    assert!(gone.status.success(), "{gone:?}");
    let said = stderr(&gone);
    assert!(
        !said.contains("panicked") && !said.contains("q8s: "),
        "no panic, no message: {said}"
    );
    let full = std::fs::File::options()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let full = run(full.into());
    assert_eq!(full.status.code(), Some(1), "{full:?}");
    assert!(
        stderr(&full).contains("cannot write the output"),
        "{}",
        stderr(&full)
    );
}

#[test]
fn producer_enqueues_and_stat_reads_on_redis_while_the_store_is_not_there() {
    let Some(redis) = crate::support::redis_url() else {
        return;
    };
    let folder = tempfile::tempdir().expect("temporary folder");
    let queue = format!("nostore-{}", uuid::Uuid::new_v4().simple());
    let settings = [
        "--set",
        &format!("broker={redis}"),
        "--set",
        "store=postgres://q8s:x@127.0.0.1:1/nothing",
        "--set",
        &format!("name={queue}"),
        "--set",
        "secret_key=a secret key for the tests",
    ];
    let mut args = settings.to_vec();
    args.extend(["enqueue", "math.copysign", "2", "-2"]);
    let output = q8s(folder.path(), &args);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).len(), 32);
    let mut args = settings.to_vec();
    args.extend(["queue", "size"]);
    assert_eq!(stdout(&q8s(folder.path(), &args)), "1 queued, 0 in flight");
    // Stat lives in Redis: reading it needs no SQL database either.
    let mut args = settings.to_vec();
    args.extend(["stat", "--json"]);
    let stat = q8s(folder.path(), &args);
    assert!(stat.status.success(), "{}", stderr(&stat));
    let stats: serde_json::Value = serde_json::from_str(&stdout(&stat)).expect("JSON");
    assert!(stats.is_array(), "{stats}");
    let mut args = settings.to_vec();
    args.extend(["queue", "purge"]);
    assert!(q8s(folder.path(), &args).status.success());
}

#[test]
fn sync_enqueue_then_result_prints_the_seed_examples() {
    let folder = ready_folder();
    let cases: [(&[&str], &str); 4] = [
        (&["math.copysign", "2", "-2"], "-2.0"),
        (&["math.modf", "2.5"], "[0.5,2.0]"),
        (&["math.hypot", "3", "4"], "5.0"),
        (&["math.sqrt", "9"], "3.0"),
    ];
    for (args, expected) in cases {
        let mut command = vec!["enqueue", "--sync"];
        command.extend_from_slice(args);
        let enqueued = q8s(folder.path(), &command);
        assert!(enqueued.status.success(), "{}", stderr(&enqueued));
        let id = stdout(&enqueued);
        assert_eq!(id.len(), 32, "the id alone on stdout: {id}");
        let result = q8s(folder.path(), &["result", &id]);
        assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
        assert_eq!(stdout(&result), expected);
    }
    assert!(
        folder.path().join("q8s.db").exists(),
        "embedded database in the current folder"
    );
}

#[test]
fn result_exit_codes_say_success_failure_or_not_yet() {
    let folder = ready_folder();
    let failed = stdout(&q8s(folder.path(), &["enqueue", "--sync", "my.buggy.code"]));
    let output = q8s(folder.path(), &["result", &failed]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no function named my.buggy.code"),
        "{}",
        stderr(&output)
    );

    let queued = stdout(&q8s(
        folder.path(),
        &["enqueue", "math.copysign", "2", "-2"],
    ));
    let output = q8s(folder.path(), &["result", &queued]);
    assert_eq!(
        output.status.code(),
        Some(3),
        "not run yet: {}",
        stderr(&output)
    );
    let output = q8s(folder.path(), &["result", &queued, "--wait", "0.2"]);
    assert_eq!(output.status.code(), Some(3));
    let size = q8s(folder.path(), &["queue", "size", "--json"]);
    assert_eq!(stdout(&size), r#"{"in_flight":0,"queued":1}"#);
}

#[test]
fn fetch_prints_the_whole_task_and_finds_it_by_name() {
    let folder = ready_folder();
    let id = stdout(&q8s(
        folder.path(),
        &[
            "enqueue",
            "--sync",
            "--group",
            "g1",
            "--kwargs",
            r#"{"b": 2}"#,
            "q8s.echo",
            "hello",
        ],
    ));
    let fetched: serde_json::Value =
        serde_json::from_str(&stdout(&q8s(folder.path(), &["fetch", &id]))).expect("JSON");
    assert_eq!(fetched["func"], "q8s.echo");
    assert_eq!(fetched["group"], "g1");
    assert_eq!(fetched["success"], true);
    assert_eq!(
        fetched["result"],
        serde_json::json!({"args": ["hello"], "kwargs": {"b": 2}})
    );
    let name = fetched["name"].as_str().expect("a name");
    let by_name = q8s(folder.path(), &["result", name]);
    assert_eq!(by_name.status.code(), Some(0));
    let count = q8s(folder.path(), &["group", "count", "g1"]);
    assert_eq!(stdout(&count), "1");
}

#[test]
fn failed_task_can_be_retried_as_a_new_task() {
    let folder = ready_folder();
    let failed = stdout(&q8s(
        folder.path(),
        &["enqueue", "--sync", "q8s.fail", "on purpose"],
    ));
    let list = q8s(folder.path(), &["failures", "list"]);
    assert!(stdout(&list).contains(&failed), "{}", stdout(&list));
    let retried = q8s(folder.path(), &["failures", "retry", &failed]);
    assert!(retried.status.success(), "{}", stderr(&retried));
    let new_id = stdout(&retried);
    assert_ne!(new_id, failed);
    assert_eq!(
        q8s(folder.path(), &["result", &failed]).status.code(),
        Some(3),
        "the failure was removed"
    );
    let size = q8s(folder.path(), &["queue", "size", "--json"]);
    assert_eq!(
        stdout(&size),
        r#"{"in_flight":0,"queued":1}"#,
        "the retry is queued"
    );
}

#[test]
fn bad_configuration_names_the_option_and_exits_2() {
    let folder = tempfile::tempdir().expect("temporary folder");
    std::fs::write(folder.path().join("q8s.toml"), "save_limit = \"lots\"\n").expect("write");
    let output = q8s(folder.path(), &["queue", "size"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("`save_limit`") && message.contains("q8s.toml"),
        "{message}"
    );
    assert!(message.contains("-1 (keep no successes)"), "{message}");

    let output = Command::new(env!("CARGO_BIN_EXE_q8s"))
        .args(["queue", "size"])
        .current_dir(tempfile::tempdir().expect("folder").path())
        .env("Q8S_BROKER", "mongodb://x")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("Q8S_BROKER"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn bad_arguments_say_what_to_do() {
    let folder = ready_folder();
    let output = q8s(
        folder.path(),
        &["enqueue", "q8s.echo", "--kwargs", "[1, 2]"],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--kwargs must be a JSON object"),
        "{}",
        stderr(&output)
    );
    let output = q8s(folder.path(), &["enqueue", "--sync", "math.copysign", "2"]);
    let id = stdout(&output);
    let result = q8s(folder.path(), &["result", &id]);
    assert_eq!(result.status.code(), Some(1));
    assert!(
        stderr(&result).contains("takes 2 argument(s) (x, y), got 1"),
        "{}",
        stderr(&result)
    );
}

#[test]
fn oversized_task_is_refused_at_enqueue_and_nothing_is_queued() {
    let folder = ready_folder();
    let big = "x".repeat(3000);
    let output = q8s(
        folder.path(),
        &[
            "--set",
            "max_package_size=2048",
            "enqueue",
            "q8s.echo",
            &big,
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("over the limit of 2048 bytes"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        stdout(&q8s(folder.path(), &["queue", "size", "--json"])),
        r#"{"in_flight":0,"queued":0}"#
    );
}

#[test]
fn unknown_broker_is_refused_with_the_supported_ones() {
    let folder = tempfile::tempdir().expect("temporary folder");
    std::fs::write(
        folder.path().join("q8s.toml"),
        "mongo = { host = \"127.0.0.1\" }\n",
    )
    .expect("write");
    let output = q8s(folder.path(), &["enqueue", "q8s.noop"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("`mongo`"), "{}", stderr(&output));
}
