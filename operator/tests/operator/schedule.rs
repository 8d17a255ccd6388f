//! QSchedules on the real kube-apiserver: the operator's scheduler enqueues
//! their slots on a QCluster whose pods (`q8s cluster` processes run as the
//! Deployment's template says) work a real Redis and save to a real
//! PostgreSQL, where each slot's task is looked for.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use q8s::TaskRecord;
use q8s::schedule::{Kind, record::recurrence};
use q8s_operator::scheduler::slot_id;
use q8s_operator::{QSchedule, QScheduleStatus};
use q8s_testbed::{Testbed, eventually, eventually_within};

use crate::pod::Pod;
use crate::support::{
    Replica, broker_secret, events, install, kubectl, qcluster, service_url, spawn_reconciler,
    status_when, text,
};

/// A namespace with the Secrets of a QCluster on the shared Redis (its queue
/// named after the namespace) and PostgreSQL (its store); `None` when the
/// services are not there and none is required.
async fn namespace_with_services(bed: &Testbed, test: &str) -> Option<(String, String, String)> {
    let redis = service_url("Q8S_TEST_REDIS_URL", "Redis")?;
    let postgres = service_url("Q8S_TEST_POSTGRES_URL", "PostgreSQL")?;
    install(bed);
    let namespace = bed.namespace(test).await;
    broker_secret(bed, &namespace, &redis);
    let store = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: store\n  namespace: {namespace}\nstringData:\n  url: {postgres}\n"
    );
    kubectl(bed, &["apply", "-f", "-"], Some(&store));
    Some((namespace, redis, postgres))
}

/// Applies QCluster `name` (one worker, results in the store) in `namespace`.
fn apply_qcluster(bed: &Testbed, namespace: &str, name: &str) {
    let spec = format!(
        "  name: {namespace}\n  store:\n    name: store\n    key: url\n  replicas: 1\n  workers: 2\n  timeout: 20\n"
    );
    kubectl(
        bed,
        &["apply", "-f", "-"],
        Some(&qcluster(namespace, name, &spec)),
    );
}

/// A pod of QCluster `name`, once its Deployment and signing key exist.
async fn start_pod(bed: &Testbed, namespace: &str, name: &str) -> Pod {
    let mut pods = Pod::start_of(&bed.client(), namespace, name, 1).await;
    pods.pop().expect("one pod")
}

/// The scheduler of `namespace`'s QSchedules, running in this test process.
fn spawn_scheduler(bed: &Testbed, namespace: &str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(q8s_operator::scheduler::run(
        bed.client(),
        Some(namespace.into()),
        Default::default(),
    ))
}

/// The operator's reconciler and scheduler for `namespace`, in this test process.
struct Operator {
    reconciler: tokio::task::JoinHandle<()>,
    scheduler: tokio::task::JoinHandle<()>,
}

impl Operator {
    fn start(bed: &Testbed, namespace: &str) -> Operator {
        Operator {
            reconciler: spawn_reconciler(
                bed.client(),
                namespace,
                "q8s-worker:test",
                q8s_operator::reconciler::REAPPLY,
            ),
            scheduler: spawn_scheduler(bed, namespace),
        }
    }

    fn stop(self) {
        self.scheduler.abort();
        self.reconciler.abort();
    }
}

/// A QSchedule `name` for QCluster `reports` with `spec` (indented lines).
fn qschedule(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: q8s.io/v1alpha1\nkind: QSchedule\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  cluster: reports\n{spec}"
    )
}

/// Applies QSchedule `name` for QCluster `reports` with `spec` (indented lines).
fn apply_schedule(bed: &Testbed, namespace: &str, name: &str, spec: &str) {
    kubectl(
        bed,
        &["apply", "-f", "-"],
        Some(&qschedule(namespace, name, spec)),
    );
}

/// Changes QSchedule `name` by the JSON merge patch `patch`.
fn patch_schedule(bed: &Testbed, namespace: &str, name: &str, patch: &str) {
    let args = [
        "patch",
        "qschedule",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        patch,
    ];
    kubectl(bed, &args, None);
}

/// Suspends QSchedule `name`; its status once the scheduler says so.
async fn suspend(bed: &Testbed, namespace: &str, name: &str) -> QScheduleStatus {
    patch_schedule(bed, namespace, name, "{\"spec\":{\"suspend\":true}}");
    status_when::<QSchedule>(
        bed,
        namespace,
        name,
        "suspended",
        Duration::from_secs(30),
        |s| reason(s, "Ready").is_some_and(|(_, r)| r == "Suspended"),
    )
    .await
}

/// The results of group `group` once there are `count` of them or more.
async fn results_at_least(
    (redis, postgres): (&str, &str),
    queue: &str,
    group: &str,
    count: usize,
) -> Vec<TaskRecord> {
    eventually("the runs' results", || async {
        let records = results(redis, postgres, queue, group).await;
        (records.len() >= count)
            .then_some(records.clone())
            .ok_or(format!("{} of {count} results", records.len()))
    })
    .await
}

/// A status time in whole seconds since the epoch (0 when unset).
fn seconds(time: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> i64 {
    time.as_ref().map_or(0, |t| t.0.as_second())
}

/// The QSchedule, once it exists.
async fn get(bed: &Testbed, namespace: &str, name: &str) -> QSchedule {
    let api = Api::<QSchedule>::namespaced(bed.client(), namespace);
    eventually("the QSchedule", || api.get(name)).await
}

fn reason(status: &QScheduleStatus, type_: &str) -> Option<(String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// The saved results of the runs of group `group`, from the store.
async fn results(redis: &str, postgres: &str, queue: &str, group: &str) -> Vec<TaskRecord> {
    let table: toml::Table = toml::from_str(&format!(
        "broker = {redis:?}\nstore = {postgres:?}\nname = {queue:?}\nsecret_key = \"unused by a reader or a size check\"\n"
    ))
    .expect("a reader's configuration");
    let config = q8s::Config::from_table(table, "the test").expect("valid");
    let reader = q8s::Reader::connect(&config).await.expect("the store");
    // Every record of the group, failed ones too.
    reader.fetch_group(group, true).await.expect("the group")
}

/// Waits for the results of the `runs` runs of group `group`, then checks
/// that there is one per run, each its own slot's task run once, the slots
/// `every` seconds apart from `from` on with none missed.
async fn each_slot_ran_once(
    services: (&str, &str),
    queue: &str,
    group: &str,
    runs: i64,
    (uid, every, from): (&str, i64, DateTime<Utc>),
) -> Vec<TaskRecord> {
    let records = results_at_least(services, queue, group, runs as usize).await;
    assert_eq!(records.len() as i64, runs, "a result for each run, no more");
    let mut ids = HashSet::new();
    let mut slots = Vec::new();
    let start = from.timestamp() - from.timestamp().rem_euclid(every);
    for record in &records {
        assert!(
            ids.insert(record.id.clone()),
            "task {} saved twice",
            record.id
        );
        assert_eq!(record.attempts, 1, "run once: {record:?}");
        let slot = (0..400)
            .filter_map(|k| DateTime::from_timestamp(start + k * every, 0))
            .find(|slot| slot_id(uid, *slot) == record.id)
            .unwrap_or_else(|| panic!("{} is no slot's task id", record.id));
        slots.push(slot);
    }
    slots.sort();
    for pair in slots.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            chrono::Duration::seconds(every),
            "every slot once, none missed: {slots:?}"
        );
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_refuses_a_qschedule_that_cannot_work_and_names_the_field() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    install(&bed);
    let namespace = bed.namespace("qschedule-refused").await;
    let refused = |spec: &str| {
        let output = bed.kubectl(
            &["apply", "-f", "-"],
            Some(&qschedule(&namespace, "bad", spec)),
        );
        assert!(!output.status.success(), "{spec} was accepted");
        text(&output).1
    };
    let error = refused("  func: reports.daily\n  scheduleType: Cron\n");
    assert!(
        error.contains("spec.cron") && error.contains("needs cron"),
        "{error}"
    );
    let error = refused("  func: reports.daily\n  scheduleType: Minutes\n");
    assert!(error.contains("spec.minutes"), "{error}");
    let error = refused("  func: reports.daily\n  scheduleType: Daily\n  timeZone: Mars/Olympus\n");
    assert!(
        error.contains("spec.timeZone") && error.contains("Unsupported value"),
        "{error}"
    );
    let error = refused("  func: reports.daily\n  scheduleType: Fortnightly\n");
    assert!(error.contains("spec.scheduleType"), "{error}");

    // What only the engine can tell: a stalled schedule, its reason and message.
    let scheduler = spawn_scheduler(&bed, &namespace);
    apply_schedule(
        &bed,
        &namespace,
        "typo",
        "  func: reports.daily\n  scheduleType: Cron\n  cron: \"61 * * * *\"\n",
    );
    let status = status_when::<QSchedule>(
        &bed,
        &namespace,
        "typo",
        "Stalled",
        Duration::from_secs(30),
        |s| reason(s, "Stalled") == Some(("True".into(), "InvalidSchedule".into())),
    )
    .await;
    let message = &status.conditions[0].message;
    assert!(
        message.contains("61"),
        "the message names the value: {message}"
    );
    assert!(!events(&bed, &namespace, "InvalidSchedule").is_empty());
    // A cron that parses but matches no date (February 30th) never runs.
    apply_schedule(
        &bed,
        &namespace,
        "never",
        "  func: reports.daily\n  scheduleType: Cron\n  cron: \"0 0 30 2 *\"\n",
    );
    let never = status_when::<QSchedule>(
        &bed,
        &namespace,
        "never",
        "Stalled",
        Duration::from_secs(30),
        |s| reason(s, "Stalled") == Some(("True".into(), "InvalidSchedule".into())),
    )
    .await;
    assert_eq!(never.runs, 0, "{never:?}");
    assert!(
        never.conditions[0].message.contains("matches no date"),
        "{never:?}"
    );
    scheduler.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_schedule_type_runs_next_when_the_engine_says() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    install(&bed);
    let namespace = bed.namespace("qschedule-types").await;
    let scheduler = spawn_scheduler(&bed, &namespace);
    // Anchored in the past, suspended: each slot up to now is skipped and
    // counted, and the next run is the engine's next slot after now.
    let anchor = "2026-03-29T01:30:00Z"; // 03:30 in Berlin, the morning clocks went forward
    let types: [(&str, &str, Kind); 9] = [
        ("once", "Once", Kind::Once),
        ("minutes", "Minutes\n  minutes: 7", Kind::Minutes(7)),
        ("hourly", "Hourly", Kind::Hourly),
        ("daily", "Daily", Kind::Daily),
        ("weekly", "Weekly", Kind::Weekly),
        ("monthly", "Monthly", Kind::Monthly),
        ("quarterly", "Quarterly", Kind::Quarterly),
        ("yearly", "Yearly", Kind::Yearly),
        (
            "cron",
            "Cron\n  cron: \"30 2 * * 0\"",
            Kind::from_parts("cron", None, Some("30 2 * * 0")).expect("cron"),
        ),
    ];
    let before = Utc::now();
    for (name, kind, _) in &types {
        let spec = format!(
            "  func: reports.{name}\n  scheduleType: {kind}\n  timeZone: Europe/Berlin\n  nextRun: \"{anchor}\"\n  suspend: true\n"
        );
        apply_schedule(&bed, &namespace, name, &spec);
    }
    // A fraction of a second in nextRun (JavaScript's toISOString writes
    // one) counts from the whole second, as every status time is written.
    let fraction = "  func: reports.fraction\n  scheduleType: Hourly\n  nextRun: \"2026-03-29T01:30:00.500Z\"\n  suspend: true\n";
    apply_schedule(&bed, &namespace, "fraction", fraction);
    let anchor: DateTime<Utc> = anchor.parse().expect("a time");
    let types = types
        .into_iter()
        .map(|(name, _, kind)| (name, kind))
        .chain([("fraction", Kind::Hourly)]);
    for (name, kind) in types {
        let timing = recurrence(kind.clone(), "Europe/Berlin", anchor).expect("valid");
        let status = status_when::<QSchedule>(
            &bed,
            &namespace,
            name,
            "its next run",
            Duration::from_secs(30),
            |s| s.next_run.is_some(),
        )
        .await;
        let after = Utc::now();
        // Each slot from the anchor to now, by the engine's arithmetic.
        let slots_until = |now: DateTime<Utc>| {
            // The first slot: the anchor, or (cron) its first match from the anchor on.
            let mut slot = timing.next_after(anchor - chrono::Duration::seconds(1));
            let mut count = 0;
            while let Some(at) = slot.filter(|at| *at <= now) {
                count += 1;
                slot = timing.next_after(at);
            }
            (count, slot)
        };
        let next = status
            .next_run
            .as_ref()
            .and_then(|t| DateTime::from_timestamp_micros(t.0.as_microsecond()));
        let expected = [slots_until(before), slots_until(after)];
        if kind == Kind::Once {
            assert_eq!(status.skipped, 1, "{name}: {status:?}");
            continue;
        }
        assert!(
            expected
                .iter()
                .any(|(count, slot)| *slot == next && *count == status.skipped),
            "{name}: next {next:?}, skipped {}, the engine says {expected:?}",
            status.skipped
        );
    }
    scheduler.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seconds_cron_runs_each_slot_once_on_a_real_cluster() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let Some((namespace, redis, postgres)) = namespace_with_services(&bed, "qschedule-cron").await
    else {
        return;
    };
    let operator = Operator::start(&bed, &namespace);
    apply_qcluster(&bed, &namespace, "reports");
    let _pod = start_pod(&bed, &namespace, "reports").await;
    let from = Utc::now();
    let spec = format!(
        "  func: q8s.echo\n  args: [\"tick\"]\n  scheduleType: Cron\n  cron: \"*/2 * * * * *\"\n  timeZone: America/New_York\n  group: {namespace}-ticks\n"
    );
    apply_schedule(&bed, &namespace, "ticks", &spec);
    let uid = get(&bed, &namespace, "ticks")
        .await
        .metadata
        .uid
        .expect("a uid");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let status = suspend(&bed, &namespace, "ticks").await;
    assert!(
        (28..=32).contains(&status.runs),
        "a slot every 2 s for a minute: {status:?}"
    );
    let group = format!("{namespace}-ticks");
    let records = each_slot_ran_once(
        (&redis, &postgres),
        &namespace,
        &group,
        status.runs,
        (&uid, 2, from),
    )
    .await;
    let last = status.last_task.expect("the last task");
    assert!(
        records
            .iter()
            .any(|r| r.id == last.id && r.name == last.name)
    );
    // lastTask read back with `q8s fetch`, as a platform engineer would.
    let fetched = std::process::Command::new(crate::pod::q8s_binary())
        .args([
            "--set",
            &format!("broker={redis}"),
            "--set",
            &format!("store={postgres}"),
        ])
        .args(["--set", &format!("name={namespace}"), "fetch", &last.name])
        .output()
        .expect("q8s fetch runs");
    let (out, err) = text(&fetched);
    assert!(fetched.status.success(), "{out}{err}");
    assert!(out.contains(&last.id) && out.contains("\"tick\""), "{out}");
    let status = status_when::<QSchedule>(
        &bed,
        &namespace,
        "ticks",
        "lastSuccess",
        Duration::from_secs(30),
        |s| s.last_success == Some(true),
    )
    .await;
    assert_eq!(status.pending, Vec::new());
    let table = kubectl(&bed, &["get", "qschedules", "-n", &namespace], None);
    for column in [
        "CLUSTER", "FUNC", "TYPE", "NEXT RUN", "LAST RUN", "SUCCESS", "AGE",
    ] {
        assert!(table.contains(column), "{table}");
    }
    assert!(
        table.contains("q8s.echo") && table.contains("Cron") && table.contains("true"),
        "{table}"
    );
    operator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_schedule_skips_its_slots_and_resumes_without_catching_up() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let Some((namespace, _redis, _postgres)) =
        namespace_with_services(&bed, "qschedule-suspend").await
    else {
        return;
    };
    let operator = Operator::start(&bed, &namespace);
    apply_qcluster(&bed, &namespace, "reports");
    let spec = "  func: q8s.noop\n  scheduleType: Cron\n  cron: \"*/2 * * * * *\"\n";
    apply_schedule(&bed, &namespace, "ticks", spec);
    let patch = |suspend: bool| {
        patch_schedule(
            &bed,
            &namespace,
            "ticks",
            &format!("{{\"spec\":{{\"suspend\":{suspend}}}}}"),
        );
    };
    status_when::<QSchedule>(
        &bed,
        &namespace,
        "ticks",
        "two runs",
        Duration::from_secs(30),
        |s| s.runs >= 2,
    )
    .await;
    patch(true);
    let suspended = status_when::<QSchedule>(
        &bed,
        &namespace,
        "ticks",
        "suspended",
        Duration::from_secs(30),
        |s| reason(s, "Ready").is_some_and(|(_, r)| r == "Suspended"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let still = get(&bed, &namespace, "ticks")
        .await
        .status
        .unwrap_or_default();
    assert_eq!(still.runs, suspended.runs, "no run while suspended");
    assert!(
        still.skipped >= suspended.skipped + 2,
        "the slots that passed are skipped: {still:?}"
    );
    patch(false);
    let resumed = status_when::<QSchedule>(
        &bed,
        &namespace,
        "ticks",
        "running again",
        Duration::from_secs(30),
        |s| s.runs > still.runs,
    )
    .await;
    assert!(
        resumed.runs <= still.runs + 2,
        "the suspended slots are not caught up: {resumed:?}"
    );
    operator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_skips_slots_while_the_slow_run_has_no_result() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let Some((namespace, redis, postgres)) =
        namespace_with_services(&bed, "qschedule-forbid").await
    else {
        return;
    };
    let operator = Operator::start(&bed, &namespace);
    apply_qcluster(&bed, &namespace, "reports");
    let _pod = start_pod(&bed, &namespace, "reports").await;
    let spec = format!(
        "  func: time.sleep\n  args: [5]\n  scheduleType: Cron\n  cron: \"*/2 * * * * *\"\n  concurrencyPolicy: Forbid\n  group: {namespace}-slow\n"
    );
    apply_schedule(&bed, &namespace, "slow", &spec);
    let status = status_when::<QSchedule>(
        &bed,
        &namespace,
        "slow",
        "three runs",
        Duration::from_secs(60),
        |s| s.runs >= 3,
    )
    .await;
    assert!(
        status.skipped >= 4,
        "slots skipped while a run had no result: {status:?}"
    );
    patch_schedule(&bed, &namespace, "slow", "{\"spec\":{\"suspend\":true}}");
    let group = format!("{namespace}-slow");
    let mut records = results_at_least((&redis, &postgres), &namespace, &group, 3).await;
    records.sort_by_key(|r| r.started);
    for pair in records.windows(2) {
        assert!(pair[1].started >= pair[0].stopped, "runs overlap: {pair:?}");
    }
    assert!(!events(&bed, &namespace, "SlotsSkipped").is_empty());
    operator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_operator_was_down_catch_up_runs_every_missed_slot_or_only_one() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let Some((namespace, _redis, _postgres)) =
        namespace_with_services(&bed, "qschedule-catch-up").await
    else {
        return;
    };
    let reconciler = spawn_reconciler(
        bed.client(),
        &namespace,
        "q8s-worker:test",
        q8s_operator::reconciler::REAPPLY,
    );
    apply_qcluster(&bed, &namespace, "reports");
    for (name, catch_up) in [("every", true), ("last", false)] {
        let spec = format!(
            "  func: q8s.noop\n  scheduleType: Cron\n  cron: \"*/2 * * * * *\"\n  catchUp: {catch_up}\n"
        );
        apply_schedule(&bed, &namespace, name, &spec);
    }
    let scheduler = spawn_scheduler(&bed, &namespace);
    for name in ["every", "last"] {
        status_when::<QSchedule>(
            &bed,
            &namespace,
            name,
            "a run",
            Duration::from_secs(30),
            |s| s.runs >= 1,
        )
        .await;
    }
    scheduler.abort();
    let _ = scheduler.await;
    let down: Vec<QScheduleStatus> = [
        get(&bed, &namespace, "every").await,
        get(&bed, &namespace, "last").await,
    ]
    .into_iter()
    .map(|qs| qs.status.unwrap_or_default())
    .collect();
    // Down for about five slots.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let restarted = Utc::now().timestamp();
    let scheduler = spawn_scheduler(&bed, &namespace);
    let every = status_when::<QSchedule>(
        &bed,
        &namespace,
        "every",
        "caught up",
        Duration::from_secs(30),
        |s| seconds(&s.last_run) >= restarted - 2,
    )
    .await;
    let slots = (seconds(&every.last_run) - seconds(&down[0].last_run)) / 2;
    assert!(
        slots >= 4,
        "down for about five slots: {every:?} after {:?}",
        down[0]
    );
    assert_eq!(
        every.runs - down[0].runs,
        slots,
        "catchUp: every slot since the last run: {every:?}"
    );
    let last = status_when::<QSchedule>(
        &bed,
        &namespace,
        "last",
        "running again",
        Duration::from_secs(30),
        |s| s.runs > down[1].runs,
    )
    .await;
    assert_eq!(
        last.runs,
        down[1].runs + 1,
        "no catchUp: one run for all the missed slots: {last:?}"
    );
    assert!(
        seconds(&last.next_run) >= restarted,
        "then on time: {last:?}"
    );
    scheduler.abort();
    reconciler.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_right_after_an_enqueue_does_not_run_the_slot_twice() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let Some((namespace, redis, postgres)) = namespace_with_services(&bed, "qschedule-kill").await
    else {
        return;
    };
    let operator = |pause: Option<u64>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_q8s-operator"));
        command
            .args([
                "run",
                "--namespace",
                &namespace,
                "--lease-namespace",
                &namespace,
            ])
            .env(
                "KUBECONFIG",
                std::env::var("Q8S_TEST_KUBECONFIG").expect("the kubeconfig"),
            )
            .env("Q8S_WORKER_IMAGE", "q8s-worker:test")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(pause) = pause {
            command.env("Q8S_TEST_PAUSE_AFTER_ENQUEUE", pause.to_string());
        }
        command.spawn().expect("the operator starts")
    };
    let mut first = operator(Some(600));
    apply_qcluster(&bed, &namespace, "reports");
    let spec = format!(
        "  func: q8s.echo\n  args: [1]\n  scheduleType: Once\n  repeats: 1\n  group: {namespace}-once\n"
    );
    apply_schedule(&bed, &namespace, "once", &spec);
    // Written down, enqueued, not recorded: the point to kill it at.
    let pending = status_when::<QSchedule>(
        &bed,
        &namespace,
        "once",
        "the slot pending",
        Duration::from_secs(60),
        |s| !s.pending.is_empty(),
    )
    .await;
    let table: toml::Table = toml::from_str(&format!(
        "broker = {redis:?}\nname = {namespace:?}\nsecret_key = \"unused by a reader or a size check\"\n"
    ))
    .expect("a configuration");
    let config = q8s::Config::from_table(table, "the test").expect("valid");
    let broker = q8s::broker::connect(&config, None)
        .await
        .expect("the broker")
        .queue;
    eventually("the slot's package in the broker", || async {
        let size = broker.queue_size().await.map_err(|e| e.to_string())?;
        (size == 1).then_some(()).ok_or(format!("{size} packages"))
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    let _ = first.wait();
    // A new operator once the old Lease ran out: it finds the slot pending.
    let mut second = operator(None);
    let done = status_when::<QSchedule>(
        &bed,
        &namespace,
        "once",
        "the slot recorded",
        Duration::from_secs(90),
        |s| s.runs == 1 && s.pending.is_empty(),
    )
    .await;
    assert_eq!(
        broker.queue_size().await.expect("size"),
        1,
        "enqueued again, refused as a repeat"
    );
    assert_eq!(
        done.last_task.as_ref().map(|t| t.id.clone()),
        Some(pending.pending[0].id.clone())
    );
    let _pod = start_pod(&bed, &namespace, "reports").await;
    let records = results_at_least(
        (&redis, &postgres),
        &namespace,
        &format!("{namespace}-once"),
        1,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].attempts, 1);
    assert_eq!(broker.queue_size().await.expect("size"), 0);
    let _ = second.kill();
    let _ = second.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_leader_election_run_no_slot_twice() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let Some((namespace, redis, postgres)) =
        namespace_with_services(&bed, "qschedule-leader").await
    else {
        return;
    };
    let lease = Duration::from_secs(4);
    let mut replicas = vec![
        Replica::start(bed.client(), &namespace, lease, None),
        Replica::start(bed.client(), &namespace, lease, None),
    ];
    apply_qcluster(&bed, &namespace, "reports");
    let _pod = start_pod(&bed, &namespace, "reports").await;
    let from = Utc::now();
    let spec = format!(
        "  func: q8s.noop\n  scheduleType: Cron\n  cron: \"*/2 * * * * *\"\n  group: {namespace}-ticks\n"
    );
    apply_schedule(&bed, &namespace, "ticks", &spec);
    let uid = get(&bed, &namespace, "ticks")
        .await
        .metadata
        .uid
        .expect("a uid");
    status_when::<QSchedule>(
        &bed,
        &namespace,
        "ticks",
        "runs",
        Duration::from_secs(60),
        |s| s.runs >= 3,
    )
    .await;
    // The leader dies without giving up its Lease; the other takes over.
    let leader = replicas.iter().position(|r| r.leads()).expect("a leader");
    replicas.remove(leader).kill();
    let before = get(&bed, &namespace, "ticks")
        .await
        .status
        .unwrap_or_default();
    status_when::<QSchedule>(
        &bed,
        &namespace,
        "ticks",
        "runs after the takeover",
        Duration::from_secs(60),
        |s| s.runs >= before.runs + 5,
    )
    .await;
    let status = suspend(&bed, &namespace, "ticks").await;
    // The new leader caught up the slots that passed during the takeover.
    let group = format!("{namespace}-ticks");
    each_slot_ran_once(
        (&redis, &postgres),
        &namespace,
        &group,
        status.runs,
        (&uid, 2, from),
    )
    .await;
    for replica in replicas {
        replica.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_once_schedule_with_negative_repeats_is_deleted_after_it_runs() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let Some((namespace, redis, postgres)) = namespace_with_services(&bed, "qschedule-once").await
    else {
        return;
    };
    let operator = Operator::start(&bed, &namespace);
    apply_qcluster(&bed, &namespace, "reports");
    let _pod = start_pod(&bed, &namespace, "reports").await;
    let spec = format!(
        "  func: q8s.echo\n  args: [\"once\"]\n  scheduleType: Once\n  group: {namespace}-once\n"
    );
    apply_schedule(&bed, &namespace, "once", &spec);
    let api = Api::<QSchedule>::namespaced(bed.client(), &namespace);
    eventually_within("the QSchedule deleted", Duration::from_secs(60), || async {
        match api.get_opt("once").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(qs) => Err(format!("{:?}", qs.status)),
        }
    })
    .await;
    let records = results_at_least(
        (&redis, &postgres),
        &namespace,
        &format!("{namespace}-once"),
        1,
    )
    .await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].result, serde_json::json!("once"));
    operator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_for_a_missing_qcluster_waits_then_runs_when_it_appears() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let Some((namespace, redis, postgres)) = namespace_with_services(&bed, "qschedule-waits").await
    else {
        return;
    };
    let operator = Operator::start(&bed, &namespace);
    let spec = format!(
        "  func: q8s.echo\n  args: [\"hello\"]\n  scheduleType: Minutes\n  minutes: 60\n  group: {namespace}-hourly\n"
    );
    apply_schedule(&bed, &namespace, "hourly", &spec);
    let waiting = status_when::<QSchedule>(
        &bed,
        &namespace,
        "hourly",
        "waiting for its QCluster",
        Duration::from_secs(30),
        |s| reason(s, "Stalled") == Some(("True".into(), "ClusterNotFound".into())),
    )
    .await;
    assert_eq!(waiting.runs, 0);
    assert!(
        waiting
            .conditions
            .iter()
            .any(|c| c.message.contains("QCluster reports"))
    );
    apply_qcluster(&bed, &namespace, "reports");
    let _pod = start_pod(&bed, &namespace, "reports").await;
    let ran = status_when::<QSchedule>(
        &bed,
        &namespace,
        "hourly",
        "its first run",
        Duration::from_secs(60),
        |s| s.runs == 1 && reason(s, "Ready") == Some(("True".into(), "Scheduled".into())),
    )
    .await;
    assert_eq!(
        seconds(&ran.next_run) - seconds(&ran.last_run),
        3600,
        "the next run an hour after the first: {ran:?}"
    );
    let group = format!("{namespace}-hourly");
    let records = results_at_least((&redis, &postgres), &namespace, &group, 1).await;
    assert_eq!(records[0].result, serde_json::json!("hello"));
    operator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_whose_broker_does_not_answer_waits_then_catches_up() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let Some((namespace, redis, _postgres)) =
        namespace_with_services(&bed, "qschedule-unreachable").await
    else {
        return;
    };
    // A port nothing listens on: the broker does not answer.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    broker_secret(&bed, &namespace, &format!("redis://127.0.0.1:{closed}/0"));
    let operator = Operator::start(&bed, &namespace);
    apply_qcluster(&bed, &namespace, "reports");
    let spec = "  func: q8s.noop\n  scheduleType: Cron\n  cron: \"*/2 * * * * *\"\n";
    apply_schedule(&bed, &namespace, "ticks", spec);
    let waiting = status_when::<QSchedule>(
        &bed,
        &namespace,
        "ticks",
        "waiting for the broker",
        Duration::from_secs(30),
        |s| reason(s, "Stalled") == Some(("True".into(), "BrokerUnreachable".into())),
    )
    .await;
    assert_eq!(waiting.runs, 0);
    tokio::time::sleep(Duration::from_secs(6)).await;
    // The broker answers again: the slots that passed run (catchUp), then on time.
    broker_secret(&bed, &namespace, &redis);
    let caught_up = status_when::<QSchedule>(
        &bed,
        &namespace,
        "ticks",
        "caught up",
        Duration::from_secs(60),
        |s| reason(s, "Ready") == Some(("True".into(), "Scheduled".into())) && s.runs >= 5,
    )
    .await;
    let first = seconds(&waiting.next_run);
    assert_eq!(
        caught_up.runs,
        (seconds(&caught_up.last_run) - first) / 2 + 1,
        "every slot from the first on: {caught_up:?}"
    );
    operator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_without_readable_results_stalls_and_says_why() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let Some((namespace, _redis, _postgres)) =
        namespace_with_services(&bed, "qschedule-forbid-unreadable").await
    else {
        return;
    };
    let operator = Operator::start(&bed, &namespace);
    // Its store keeps no successes: Forbid could never see a run end.
    let spec =
        format!("  name: {namespace}\n  store:\n    name: store\n    key: url\n  saveLimit: -1\n");
    kubectl(
        &bed,
        &["apply", "-f", "-"],
        Some(&qcluster(&namespace, "reports", &spec)),
    );
    let schedule = "  func: q8s.noop\n  scheduleType: Cron\n  cron: \"*/2 * * * * *\"\n  concurrencyPolicy: Forbid\n";
    apply_schedule(&bed, &namespace, "slow", schedule);
    let stalled = status_when::<QSchedule>(
        &bed,
        &namespace,
        "slow",
        "Stalled",
        Duration::from_secs(30),
        |s| reason(s, "Stalled") == Some(("True".into(), "InvalidSchedule".into())),
    )
    .await;
    assert!(
        stalled.conditions[0].message.contains("saveLimit -1"),
        "{stalled:?}"
    );
    assert_eq!(stalled.runs, 0);
    // Saved whatever the QCluster says: it runs.
    patch_schedule(&bed, &namespace, "slow", "{\"spec\":{\"save\":true}}");
    status_when::<QSchedule>(
        &bed,
        &namespace,
        "slow",
        "a run",
        Duration::from_secs(30),
        |s| s.runs >= 1 && reason(s, "Stalled").is_some_and(|(status, _)| status == "False"),
    )
    .await;
    operator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_costs_two_status_writes_its_slot_written_down_then_recorded() {
    use futures_util::{StreamExt, TryStreamExt};
    use kube::api::{WatchEvent, WatchParams};
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let Some((namespace, _, _)) = namespace_with_services(&bed, "qschedule-writes").await else {
        return;
    };
    let operator = Operator::start(&bed, &namespace);
    apply_qcluster(&bed, &namespace, "reports");
    // No pod works the queue: the run has no result, so nothing follows its writes.
    let secrets = Api::<Secret>::namespaced(bed.client(), &namespace);
    eventually("the signing key", || secrets.get("reports-signing-key")).await;
    let api = Api::<QSchedule>::namespaced(bed.client(), &namespace);
    let mut changes = api
        .watch(&WatchParams::default().fields("metadata.name=hourly"), "0")
        .await
        .expect("watch")
        .boxed();
    apply_schedule(
        &bed,
        &namespace,
        "hourly",
        "  func: q8s.echo\n  scheduleType: Hourly\n",
    );
    let mut writes = Vec::new();
    let ran = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(change) = changes.try_next().await.expect("a watch event") {
            if let WatchEvent::Modified(qschedule) = change {
                let status = qschedule.status.unwrap_or_default();
                // Counted from the slot written down: a pass that ran before the
                // scheduler saw the QCluster may have written a wait first.
                if writes.is_empty() && status.pending.is_empty() {
                    continue;
                }
                let ready = reason(&status, "Ready") == Some(("True".into(), "Scheduled".into()));
                writes.push(status);
                if ready {
                    return;
                }
            }
        }
    })
    .await;
    assert!(ran.is_ok(), "no run within 30 s: {writes:#?}");
    // The passes that look for the run's result (every 5 s) write nothing.
    let more = tokio::time::timeout(Duration::from_secs(8), async {
        while let Some(change) = changes.try_next().await.expect("a watch event") {
            if let WatchEvent::Modified(qschedule) = change {
                return qschedule.status;
            }
        }
        None
    })
    .await;
    assert!(more.is_err(), "a third write: {more:?}");
    assert_eq!(writes.len(), 2, "{writes:#?}");
    assert_eq!(
        writes[0].pending.len(),
        1,
        "written down first: {writes:#?}"
    );
    assert_eq!(writes[1].runs, 1, "{writes:#?}");
    assert!(writes[1].pending.is_empty(), "{writes:#?}");
    operator.stop();
}
