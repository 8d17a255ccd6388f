//! The result store: save_limit, failure_limit, the group functions, on SQLite and PostgreSQL.

use chrono::{Duration, Utc};
use q8s::store::{Finished, Store};
use q8s::task::{ErrorKind, Task, TaskError, TaskRecord};
use serde_json::{Value, json};

use crate::support::databases;

fn finished(func: &str, group: Option<&str>, outcome: Result<Value, TaskError>) -> Finished {
    let mut task = Task::new(func);
    task.group = group.map(str::to_string);
    let now = Utc::now();
    Finished {
        record: TaskRecord::finished(&task, outcome, now, now + Duration::milliseconds(1), 1),
        save: None,
    }
}

fn success(value: Value) -> Finished {
    finished("q8s.echo", None, Ok(value))
}

fn failure(message: &str) -> Finished {
    finished("q8s.fail", None, Err(TaskError::failed(message)))
}

#[tokio::test]
async fn save_limit_keeps_the_newest_n_successes_and_every_failure() {
    for db in databases().await {
        let store = Store::new(db.connect().await, 3, 0);
        let mut ids = Vec::new();
        for n in 0..5 {
            let item = success(json!(n));
            ids.push(item.record.id.clone());
            store.save(&item).await.expect("save");
        }
        for n in 0..4 {
            store
                .save(&failure(&format!("boom {n}")))
                .await
                .expect("save");
        }
        assert_eq!(
            store.counts().await.expect("counts"),
            (3, 4),
            "{}",
            db.label
        );
        assert!(
            store.fetch(&ids[0]).await.expect("fetch").is_none(),
            "{}: oldest pruned",
            db.label
        );
        assert!(
            store.fetch(&ids[1]).await.expect("fetch").is_none(),
            "{}: second oldest pruned",
            db.label
        );
        assert!(
            store.fetch(&ids[4]).await.expect("fetch").is_some(),
            "{}: newest kept",
            db.label
        );
        assert_eq!(
            store.failures(100).await.expect("failures").len(),
            4,
            "{}",
            db.label
        );
    }
}

#[tokio::test]
async fn save_limit_minus_one_keeps_no_successes_but_every_failure() {
    for db in databases().await {
        let store = Store::new(db.connect().await, -1, 0);
        assert!(!store.save(&success(json!(1))).await.expect("save"));
        assert!(store.save(&failure("kept")).await.expect("save"));
        assert_eq!(
            store.counts().await.expect("counts"),
            (0, 1),
            "{}",
            db.label
        );
    }
}

#[tokio::test]
async fn save_limit_zero_keeps_everything() {
    for db in databases().await {
        let store = Store::new(db.connect().await, 0, 0);
        for n in 0..300 {
            store.save(&success(json!(n))).await.expect("save");
        }
        assert_eq!(
            store.counts().await.expect("counts"),
            (300, 0),
            "{}",
            db.label
        );
    }
}

#[tokio::test]
async fn per_task_save_overrides_save_limit_for_successes_only() {
    for db in databases().await {
        let store = Store::new(db.connect().await, -1, 0);
        let mut forced = success(json!("forced"));
        forced.save = Some(true);
        assert!(store.save(&forced).await.expect("save"), "{}", db.label);

        let store = Store::new(db.connect().await, 0, 0);
        let mut skipped = success(json!("skipped"));
        skipped.save = Some(false);
        assert!(!store.save(&skipped).await.expect("save"), "{}", db.label);
        let mut failed = failure("always kept");
        failed.save = Some(false);
        assert!(store.save(&failed).await.expect("save"), "{}", db.label);
    }
}

#[tokio::test]
async fn failure_limit_keeps_the_newest_n_failures() {
    for db in databases().await {
        let store = Store::new(db.connect().await, 0, 2);
        for n in 0..5 {
            store
                .save(&failure(&format!("boom {n}")))
                .await
                .expect("save");
        }
        let kept: Vec<Value> = store
            .failures(10)
            .await
            .expect("failures")
            .into_iter()
            .map(|r| r.result)
            .collect();
        assert_eq!(kept, vec![json!("boom 4"), json!("boom 3")], "{}", db.label);
    }
}

#[tokio::test]
async fn a_task_saved_twice_keeps_its_last_result() {
    for db in databases().await {
        let store = Store::new(db.connect().await, 0, 0);
        let first = failure("first delivery died");
        let mut second = first.clone();
        second.record.success = true;
        second.record.error_kind = None;
        second.record.result = json!("second delivery worked");
        second.record.attempts = 2;
        store.save(&first).await.expect("save");
        store.save(&second).await.expect("save again");
        let record = store
            .fetch(&first.record.id)
            .await
            .expect("fetch")
            .expect("stored");
        assert_eq!(
            record.outcome(),
            Ok(json!("second delivery worked")),
            "{}",
            db.label
        );
        assert_eq!(record.attempts, 2);
        assert_eq!(
            store.counts().await.expect("counts"),
            (1, 0),
            "{}",
            db.label
        );
    }
}

#[tokio::test]
async fn fetch_finds_a_task_by_id_or_by_name_with_every_field() {
    for db in databases().await {
        let store = Store::new(db.connect().await, 0, 0);
        let mut item = finished("math.modf", Some("g"), Ok(json!([0.5, 2.0])));
        item.record.args = vec![json!(2.5)];
        item.record.kwargs = serde_json::from_value(json!({"k": "v"})).expect("object");
        item.record.hook = Some("hooks.print_result".into());
        store.save(&item).await.expect("save");
        let by_id = store
            .fetch(&item.record.id)
            .await
            .expect("fetch")
            .expect("stored");
        let by_name = store
            .fetch(&item.record.name)
            .await
            .expect("fetch")
            .expect("stored");
        assert_eq!(by_id, by_name);
        assert_eq!(by_id.args, vec![json!(2.5)]);
        assert_eq!(by_id.kwargs.get("k"), Some(&json!("v")));
        assert_eq!(by_id.hook.as_deref(), Some("hooks.print_result"));
        assert_eq!(by_id.group.as_deref(), Some("g"));
        assert_eq!(
            by_id.started.timestamp_micros(),
            item.record.started.timestamp_micros(),
            "{}: microsecond times survive",
            db.label
        );
        let failed = failure("x");
        store.save(&failed).await.expect("save");
        let failed = store
            .fetch(&failed.record.id)
            .await
            .expect("fetch")
            .expect("stored");
        assert_eq!(failed.error_kind, Some(ErrorKind::Failed));
        assert!(!failed.success);
    }
}

#[tokio::test]
async fn group_functions_behave_as_the_seed_documents() {
    for db in databases().await {
        let store = Store::new(db.connect().await, 0, 0);
        for n in 0..4 {
            store
                .save(&finished("math.modf", Some("modf"), Ok(json!(n))))
                .await
                .expect("save");
        }
        store
            .save(&finished(
                "math.modf",
                Some("modf"),
                Err(TaskError::failed("bad")),
            ))
            .await
            .expect("save");
        store
            .save(&finished("q8s.noop", Some("other"), Ok(json!(9))))
            .await
            .expect("save");
        let label = db.label;

        // result_group filters failures by default.
        assert_eq!(
            store.result_group("modf", false).await.expect("results"),
            vec![json!(0), json!(1), json!(2), json!(3)],
            "{label}"
        );
        assert_eq!(
            store
                .result_group("modf", true)
                .await
                .expect("results")
                .len(),
            5,
            "{label}"
        );
        // fetch_group includes failures by default.
        assert_eq!(
            store.fetch_group("modf", true).await.expect("tasks").len(),
            5,
            "{label}"
        );
        assert_eq!(
            store.fetch_group("modf", false).await.expect("tasks").len(),
            4,
            "{label}"
        );
        // count_group counts every task, or only the failures.
        assert_eq!(
            store.count_group("modf", false).await.expect("count"),
            5,
            "{label}"
        );
        assert_eq!(
            store.count_group("modf", true).await.expect("count"),
            1,
            "{label}"
        );
        // delete_group removes the label only, unless asked to delete the tasks.
        assert_eq!(
            store.delete_group("modf", false).await.expect("delete"),
            5,
            "{label}"
        );
        assert_eq!(
            store.count_group("modf", false).await.expect("count"),
            0,
            "{label}"
        );
        assert_eq!(
            store.counts().await.expect("counts"),
            (5, 1),
            "{label}: tasks kept"
        );
        assert_eq!(
            store.delete_group("other", true).await.expect("delete"),
            1,
            "{label}"
        );
        assert_eq!(
            store.counts().await.expect("counts"),
            (4, 1),
            "{label}: task deleted"
        );
    }
}
