//! The client API: sync runs, hooks, q_options, on SQLite and PostgreSQL.

use std::sync::{Arc, Mutex};

use q8s::config::{Config, Sources};
use q8s::{Call, Client, Registry, TaskOptions, TaskRequest};
use serde_json::{Value, json};

use crate::support::{TestDb, databases};

fn config(db: &TestDb) -> Config {
    let flags = vec![
        format!("broker={}", db.url),
        "secret_key=a secret key for the tests".to_string(),
    ];
    Config::load(&Sources {
        file: None,
        env: Vec::new(),
        flags,
    })
    .expect("configuration")
}

#[tokio::test]
async fn hook_is_called_once_with_the_finished_task_even_when_it_failed() {
    for db in databases().await {
        db.connect().await;
        let calls: Arc<Mutex<Vec<Value>>> = Arc::default();
        let mut registry = Registry::with_builtins(&[]).expect("registry");
        let seen = Arc::clone(&calls);
        registry.register("hooks.record", move |call: &Call| {
            seen.lock().expect("lock").push(call.args[0].clone());
            Ok(Value::Null)
        });
        registry.register("hooks.broken", |_: &Call| {
            panic!("the hook itself is broken")
        });
        let client = Client::connect_with_registry(config(&db), registry)
            .await
            .expect("client");

        let ok = TaskRequest::new("math.copysign").arg(2).arg(-2);
        let ok_id = client
            .enqueue(TaskRequest {
                options: TaskOptions {
                    hook: Some("hooks.record".into()),
                    sync: Some(true),
                    ..TaskOptions::default()
                },
                ..ok
            })
            .await
            .expect("enqueue");
        let failing = TaskRequest::new("q8s.fail").arg("on purpose");
        let failed_id = client
            .enqueue(TaskRequest {
                options: TaskOptions {
                    hook: Some("hooks.record".into()),
                    sync: Some(true),
                    ..TaskOptions::default()
                },
                ..failing
            })
            .await
            .expect("enqueue");
        let calls = calls.lock().expect("lock").clone();
        assert_eq!(calls.len(), 2, "{}", db.label);
        assert_eq!(calls[0]["id"], json!(ok_id));
        assert_eq!(calls[0]["result"], json!(-2.0));
        assert_eq!(calls[1]["id"], json!(failed_id));
        assert_eq!(calls[1]["success"], json!(false));

        // A hook that panics is logged; the task's result stands.
        let id = client
            .enqueue(TaskRequest {
                options: TaskOptions {
                    hook: Some("hooks.broken".into()),
                    sync: Some(true),
                    ..TaskOptions::default()
                },
                ..TaskRequest::new("math.sqrt").arg(9)
            })
            .await
            .expect("enqueue");
        assert_eq!(
            client.reader().result(&id).await.expect("result"),
            Some(Ok(json!(3.0)))
        );
    }
}

#[tokio::test]
async fn q_options_override_the_single_options_and_unknown_ones_are_refused() {
    for db in databases().await {
        db.connect().await;
        let client = Client::connect(config(&db)).await.expect("client");
        let options = json!({"group": "from-options", "sync": true, "timeout": 30});
        let request = TaskRequest::new("q8s.echo")
            .arg(1)
            .group("ignored")
            .q_options(options.as_object().expect("object"))
            .expect("valid options");
        let id = client.enqueue(request).await.expect("enqueue");
        let record = client
            .reader()
            .fetch(&id)
            .await
            .expect("fetch")
            .expect("ran synchronously");
        assert_eq!(
            record.group.as_deref(),
            Some("from-options"),
            "{}",
            db.label
        );
        let error = TaskRequest::new("q8s.echo")
            .q_options(json!({"retries": 3}).as_object().expect("object"))
            .expect_err("unknown option");
        assert!(error.to_string().contains("unknown option `retries`"));
    }
}

#[tokio::test]
async fn enqueued_task_waits_in_the_broker_until_a_cluster_takes_it() {
    for db in databases().await {
        db.connect().await;
        let client = Client::connect(config(&db)).await.expect("client");
        let id = client
            .enqueue(TaskRequest::new("math.copysign").arg(2).arg(-2))
            .await
            .expect("enqueue");
        assert_eq!(client.queue_size().await.expect("size"), 1, "{}", db.label);
        assert_eq!(client.reader().result(&id).await.expect("result"), None);
        let delivery = client.broker().dequeue(1).await.expect("dequeue").remove(0);
        let task = client
            .signer()
            .unpack(delivery.package.as_bytes())
            .expect("verifies");
        assert_eq!(task.id, id);
        assert_eq!(task.args, vec![json!(2), json!(-2)]);
    }
}
