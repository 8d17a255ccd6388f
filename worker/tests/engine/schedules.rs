//! Schedules: the scheduler with a moved clock, and real clusters sharing a database.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use q8s::Clock;
use q8s::TaskOptions;
use q8s::cluster::scheduler::{Scheduling, run_due};
use q8s::schedule::{Kind, Schedule};
use q8s::store::Schedules;
use serde_json::{Map, json};

use crate::support::{client, databases, postgres};

fn schedule(name: &str, kind: Kind, first: DateTime<Utc>, repeats: i64) -> Schedule {
    Schedule {
        id: 0,
        name: Some(name.into()),
        func: "math.copysign".into(),
        hook: None,
        args: vec![json!(2), json!(-2)],
        kwargs: Map::new(),
        kind,
        tz: "UTC".into(),
        repeats,
        anchor: first,
        next_run: first,
        last_run: None,
        task: None,
        options: TaskOptions::default(),
        paused: false,
    }
}

#[tokio::test]
async fn catch_up_repeats_and_pause_follow_the_seed_with_a_moved_clock() {
    for db in databases().await {
        for catch_up in [true, false] {
            let flag = format!("catch_up={catch_up}");
            let client = client(&db, &[flag.as_str()]).await;
            let schedules = Schedules::new(client.store().database().clone());
            let clock = Clock::manual(
                DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                    .expect("time")
                    .into(),
            );
            let hourly = format!("hourly-{catch_up}");
            let limited = format!("three-{catch_up}");
            let paused = format!("paused-{catch_up}");
            schedules
                .create(&schedule(&hourly, Kind::Hourly, clock.now(), -1))
                .await
                .expect("create");
            schedules
                .create(&schedule(&limited, Kind::Minutes(1), clock.now(), 3))
                .await
                .expect("create");
            let id = schedules
                .create(&schedule(&paused, Kind::Hourly, clock.now(), -1))
                .await
                .expect("create");
            schedules.set_paused(id, true).await.expect("pause");
            // Options edited by hand into something no task takes: this schedule is
            // paused, unclaimed, and the others still run.
            let broken = schedules
                .create(&schedule(
                    &format!("broken-{catch_up}"),
                    Kind::Hourly,
                    clock.now(),
                    -1,
                ))
                .await
                .expect("create");
            sqlx::query("UPDATE q8s_schedules SET q_options = $1 WHERE id = $2")
                .bind(r#"{"timeout": "soon"}"#)
                .bind(broken)
                .execute(client.store().database().pool())
                .await
                .expect("break its options");
            let scheduling = Scheduling {
                schedules: &schedules,
                producer: client.producer(),
            };
            // The cluster was down for a day.
            clock.advance(Duration::from_secs(24 * 3600 + 1800));
            let enqueued = run_due(scheduling, clock.now()).await.expect("scheduler");
            let expected = if catch_up { 25 + 3 } else { 1 + 1 };
            assert_eq!(enqueued.len(), expected, "{} catch_up={catch_up}", db.label);
            let after = schedules.get(&hourly).await.expect("get").expect("kept");
            assert_eq!(
                after.next_run.to_rfc3339(),
                "2026-01-02T01:00:00+00:00",
                "{}: back on time",
                db.label
            );
            assert_eq!(
                after.repeats,
                if catch_up { -26 } else { -2 },
                "{}: counting down",
                db.label
            );
            assert!(
                after.task.is_some(),
                "{}: the last task is recorded",
                db.label
            );
            let three = schedules.get(&limited).await.expect("get").expect("kept");
            assert_eq!(three.repeats, if catch_up { 0 } else { 2 }, "{}", db.label);
            // Nothing more is due until the next slot, and the paused one never runs.
            assert!(
                run_due(scheduling, clock.now())
                    .await
                    .expect("scheduler")
                    .is_empty(),
                "{}: nothing due until the next slot",
                db.label
            );
            let paused_after = schedules.get(&paused).await.expect("get").expect("kept");
            assert_eq!(paused_after.last_run, None, "{}: paused", db.label);
            let (last_run, paused): (Option<i64>, i64) = sqlx::query_as(
                "SELECT last_run, CASE WHEN paused THEN 1 ELSE 0 END FROM q8s_schedules WHERE id = $1",
            )
                    .bind(broken)
                    .fetch_one(client.store().database().pool())
                    .await
                    .expect("the broken schedule is still there");
            assert_eq!(
                (last_run, paused),
                (None, 1),
                "{}: paused, never claimed",
                db.label
            );
            client.broker().purge_queue().await.expect("purge");
        }
    }
}

#[tokio::test]
async fn once_with_negative_repeats_is_deleted_after_it_runs() {
    for db in databases().await {
        let client = client(&db, &[]).await;
        let schedules = Schedules::new(client.store().database().clone());
        let now = Utc::now();
        schedules
            .create(&schedule("once-gone", Kind::Once, now, -1))
            .await
            .expect("create");
        schedules
            .create(&schedule("once-kept", Kind::Once, now, 1))
            .await
            .expect("create");
        let scheduling = Scheduling {
            schedules: &schedules,
            producer: client.producer(),
        };
        assert_eq!(
            run_due(scheduling, now + chrono::Duration::seconds(5))
                .await
                .expect("run")
                .len(),
            2
        );
        assert!(
            schedules.get("once-gone").await.expect("get").is_none(),
            "{}",
            db.label
        );
        let kept = schedules
            .get("once-kept")
            .await
            .expect("get")
            .expect("kept");
        assert_eq!(kept.repeats, 0, "{}", db.label);
        assert!(
            run_due(scheduling, now + chrono::Duration::days(9))
                .await
                .expect("run")
                .is_empty()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_on_one_postgres_run_each_slot_of_a_missed_day_once() {
    let Some(db) = postgres().await else { return };
    let settings = ["workers=2", "bulk=50", "queue_limit=100", "save_limit=0"];
    let client = client(&db, &settings).await;
    let schedules = Schedules::new(client.store().database().clone());
    let day_ago = Utc::now() - chrono::Duration::days(1);
    schedules
        .create(&schedule("minutely", Kind::Minutes(1), day_ago, -1))
        .await
        .expect("create");
    let first =
        crate::cluster::ClusterProcess::start(&crate::cluster::q8s_binary(), &db, &settings);
    let second =
        crate::cluster::ClusterProcess::start(&crate::cluster::q8s_binary(), &db, &settings);
    let started = Instant::now();
    loop {
        let schedule = schedules.get("minutely").await.expect("get").expect("kept");
        let slots = (schedule.next_run - schedule.anchor).num_minutes() as u64;
        let finished = client
            .reader()
            .count_group("minutely", false)
            .await
            .expect("count");
        if slots >= 1440 && finished == slots && client.queue_size().await.expect("size") == 0 {
            // Let anything enqueued twice show up before counting for good.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let schedule = schedules.get("minutely").await.expect("get").expect("kept");
            let slots = (schedule.next_run - schedule.anchor).num_minutes() as u64;
            assert_eq!(
                client
                    .reader()
                    .count_group("minutely", false)
                    .await
                    .expect("count"),
                slots,
                "each slot ran once"
            );
            assert_eq!(schedule.repeats, -1 - slots as i64);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{finished} of {slots} runs finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for cluster in [first, second] {
        cluster.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_created_from_the_command_line_run_in_a_cluster_and_unknown_functions_fail_without_losing_the_schedule()
 {
    for db in databases().await {
        let settings = ["workers=1", "save_limit=0"];
        let client = client(&db, &settings).await;
        let cli = |args: &[&str]| {
            let mut command = std::process::Command::new(crate::cluster::q8s_binary());
            for flag in crate::support::flags(&db, &settings) {
                command.arg("--set").arg(flag);
            }
            let output = command.args(args).output().expect("q8s runs");
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).trim().to_string()
        };
        let two_minutes_ago = (Utc::now() - chrono::Duration::seconds(150)).to_rfc3339();
        cli(&[
            "schedule",
            "create",
            "math.copysign",
            "2",
            "-2",
            "--type",
            "minutes",
            "--minutes",
            "1",
            "--repeats",
            "2",
            "--next-run",
            &two_minutes_ago,
            "--name",
            "twice",
        ]);
        cli(&[
            "schedule",
            "create",
            "my.missing",
            "--type",
            "hourly",
            "--name",
            "broken",
        ]);
        let cluster =
            crate::cluster::ClusterProcess::start(&crate::cluster::q8s_binary(), &db, &settings);
        let started = Instant::now();
        while client
            .reader()
            .count_group("twice", false)
            .await
            .expect("count")
            < 2
            || client
                .reader()
                .count_group("broken", true)
                .await
                .expect("count")
                < 1
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{}: the schedules did not run",
                db.label
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster.stop();
        assert_eq!(
            client
                .reader()
                .result_group("twice", false)
                .await
                .expect("results"),
            vec![json!(-2.0), json!(-2.0)]
        );
        let listed: serde_json::Value =
            serde_json::from_str(&cli(&["schedule", "list", "--json"])).expect("JSON");
        let broken = listed
            .as_array()
            .expect("array")
            .iter()
            .find(|s| s["name"] == "broken")
            .expect("kept")
            .clone();
        assert_eq!(
            broken["success"],
            json!(false),
            "{}: its failed run is recorded",
            db.label
        );
        assert_eq!(broken["repeats"], json!(-2), "{}", db.label);
        let twice = listed
            .as_array()
            .expect("array")
            .iter()
            .find(|s| s["name"] == "twice")
            .expect("kept")
            .clone();
        assert_eq!(twice["repeats"], json!(0), "{}: no runs left", db.label);
        assert_eq!(
            client
                .reader()
                .count_group("twice", false)
                .await
                .expect("count"),
            2,
            "{}: exactly its repeats",
            db.label
        );
    }
}
