//! The broker conformance suite: receipts, redelivery, leases, bulk, sizes and
//! tampering, one set of cases on SQLite, PostgreSQL, Redis and SQS.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use q8s::Clock;
use q8s::broker::Broker;
use q8s::package::{DEFAULT_MAX_SIZE, PackageError, Signer};
use q8s::task::Task;
use serde_json::json;

use crate::support::{Backend, backends};

const RETRY: Duration = Duration::from_secs(60);
const MARGIN: Duration = Duration::from_secs(30);

fn signer() -> Signer {
    Signer::new(
        &["a secret key for the tests".into()],
        "default",
        false,
        DEFAULT_MAX_SIZE,
    )
    .expect("a key")
}

fn package(n: i64) -> q8s::Package {
    let mut task = Task::new("q8s.echo");
    task.args = vec![json!(n)];
    signer().pack(&task).expect("packs")
}

async fn broker_on(backend: &Backend, queue: &str, clock: &Clock) -> Arc<dyn Broker> {
    backend.broker(queue, clock).await
}

#[tokio::test]
async fn dequeued_package_is_invisible_until_retry_then_delivered_again() {
    for db in backends().await {
        if !db.follows_clock() {
            continue; // its own clock: sqs_visibility_timeout_is_the_receipt
        }
        let clock = Clock::manual(Utc::now());
        let broker = broker_on(&db, "default", &clock).await;
        broker.enqueue(&package(1), None).await.expect("enqueue");
        let first = broker.dequeue(1).await.expect("dequeue");
        assert_eq!(first.len(), 1, "{}", db.label());
        assert_eq!(first[0].attempt, 1);
        assert!(
            broker.dequeue(1).await.expect("dequeue").is_empty(),
            "{}: receipt is live",
            db.label()
        );
        assert_eq!(
            (
                broker.queue_size().await.expect("size"),
                broker.lock_size().await.expect("locks")
            ),
            (0, 1)
        );

        clock.advance(RETRY - Duration::from_secs(1));
        assert!(
            broker.dequeue(1).await.expect("dequeue").is_empty(),
            "{}: before retry",
            db.label()
        );
        clock.advance(Duration::from_secs(2));
        let again = broker.dequeue(1).await.expect("dequeue");
        assert_eq!(
            again.len(),
            1,
            "{}: delivered again after retry",
            db.label()
        );
        assert_eq!(again[0].attempt, 2);
        assert_eq!(again[0].package, first[0].package);

        broker.acknowledge(&again[0].receipt).await.expect("ack");
        clock.advance(RETRY * 2);
        assert!(
            broker.dequeue(1).await.expect("dequeue").is_empty(),
            "{}: acknowledged is gone",
            db.label()
        );
        assert_eq!(
            broker.queue_size().await.expect("size") + broker.lock_size().await.expect("locks"),
            0
        );
    }
}

#[tokio::test]
async fn receipt_lasts_the_task_timeout_plus_margin_when_longer_than_retry() {
    for db in backends().await {
        if !db.follows_clock() {
            continue; // its own clock: sqs_visibility_timeout_is_the_receipt
        }
        let clock = Clock::manual(Utc::now());
        let broker = broker_on(&db, "default", &clock).await;
        broker
            .enqueue(&package(1), Some(600))
            .await
            .expect("enqueue");
        assert_eq!(broker.dequeue(1).await.expect("dequeue").len(), 1);
        clock.advance(Duration::from_secs(600) + MARGIN - Duration::from_secs(1));
        assert!(
            broker.dequeue(1).await.expect("dequeue").is_empty(),
            "{}: long task not delivered twice",
            db.label()
        );
        clock.advance(Duration::from_secs(2));
        assert_eq!(
            broker.dequeue(1).await.expect("dequeue").len(),
            1,
            "{}",
            db.label()
        );
    }
}

#[tokio::test]
async fn extended_receipt_keeps_a_running_task_from_being_delivered_again() {
    for db in backends().await {
        if !db.follows_clock() {
            continue; // its own clock: sqs_visibility_timeout_is_the_receipt
        }
        let clock = Clock::manual(Utc::now());
        let broker = broker_on(&db, "default", &clock).await;
        broker.enqueue(&package(1), None).await.expect("enqueue");
        let delivery = broker.dequeue(1).await.expect("dequeue").remove(0);
        for _ in 0..5 {
            clock.advance(RETRY - Duration::from_secs(5));
            broker
                .extend(std::slice::from_ref(&delivery.receipt), RETRY)
                .await
                .expect("extend");
            assert!(
                broker.dequeue(1).await.expect("dequeue").is_empty(),
                "{}: still running",
                db.label()
            );
        }
        clock.advance(RETRY + Duration::from_secs(1));
        let again = broker.dequeue(1).await.expect("dequeue").remove(0);
        // The old delivery can no longer extend the receipt the new one holds.
        clock.advance(RETRY - Duration::from_secs(1));
        broker
            .extend(std::slice::from_ref(&delivery.receipt), RETRY * 10)
            .await
            .expect("extend");
        clock.advance(Duration::from_secs(2));
        assert_eq!(
            broker.dequeue(1).await.expect("dequeue").len(),
            1,
            "{}: stale receipt did not extend",
            db.label()
        );
        let _ = again;
    }
}

#[tokio::test]
async fn released_package_comes_back_at_once_without_counting_a_delivery() {
    for db in backends().await {
        let clock = Clock::manual(Utc::now());
        let broker = broker_on(&db, "default", &clock).await;
        broker.enqueue(&package(1), None).await.expect("enqueue");
        let delivery = broker.dequeue(1).await.expect("dequeue").remove(0);
        broker.release(&delivery.receipt).await.expect("release");
        let again = broker.dequeue(1).await.expect("dequeue");
        assert_eq!(again.len(), 1, "{}", db.label());
        assert_eq!(
            again[0].attempt,
            1,
            "{}: a release is not an attempt",
            db.label()
        );
    }
}

#[tokio::test]
async fn requeued_package_comes_back_at_once_with_the_delivery_counted() {
    for db in backends().await {
        let clock = Clock::manual(Utc::now());
        let broker = broker_on(&db, "default", &clock).await;
        broker.enqueue(&package(1), None).await.expect("enqueue");
        let delivery = broker.dequeue(1).await.expect("dequeue").remove(0);
        broker.requeue(&delivery.receipt).await.expect("requeue");
        let again = broker.dequeue(1).await.expect("dequeue");
        assert_eq!(
            again.len(),
            1,
            "{}: back before its receipt ran out",
            db.label()
        );
        assert_eq!(
            again[0].attempt,
            2,
            "{}: the lost delivery counts",
            db.label()
        );
        // A stale receipt cannot hand back the delivery that superseded it.
        broker.requeue(&delivery.receipt).await.expect("requeue");
        if db.delivers_once() {
            assert!(
                broker.dequeue(1).await.expect("dequeue").is_empty(),
                "{}: the second delivery still holds it",
                db.label()
            );
        }
        broker.acknowledge(&again[0].receipt).await.expect("ack");
    }
}

#[tokio::test]
async fn a_package_enqueued_once_is_refused_again_within_its_window_even_after_it_ran() {
    for db in backends().await {
        let clock = Clock::manual(Utc::now());
        let broker = broker_on(&db, "default", &clock).await;
        let window = Duration::from_secs(3600);
        match broker
            .enqueue_once(&package(1), None, "slot-1", window)
            .await
        {
            Ok(enqueued) => assert!(enqueued, "{}: the first time", db.label()),
            Err(error) => {
                // SQS standard queues have no way to refuse a repeat: they say so.
                assert_eq!(db.label(), "sqs", "{error}");
                assert!(error.to_string().contains("cannot refuse"), "{error}");
                continue;
            }
        }
        let again = broker
            .enqueue_once(&package(1), None, "slot-1", window)
            .await;
        assert!(!again.expect("enqueue once"), "{}: a repeat", db.label());
        assert!(
            broker
                .enqueue_once(&package(2), None, "slot-2", window)
                .await
                .expect("enqueue once"),
            "{}: another key",
            db.label()
        );
        assert_eq!(
            broker.queue_size().await.expect("size"),
            2,
            "{}",
            db.label()
        );
        let other = broker_on(&db, "other", &clock).await;
        assert!(
            other
                .enqueue_once(&package(1), None, "slot-1", window)
                .await
                .expect("enqueue once"),
            "{}: each queue has its own keys",
            db.label()
        );
        // Run and acknowledged, the package is still refused a second time.
        for delivery in broker.dequeue(10).await.expect("dequeue") {
            broker.acknowledge(&delivery.receipt).await.expect("ack");
        }
        let after = broker
            .enqueue_once(&package(1), None, "slot-1", window)
            .await;
        assert!(
            !after.expect("enqueue once"),
            "{}: after it ran",
            db.label()
        );
        assert_eq!(
            broker.queue_size().await.expect("size"),
            0,
            "{}",
            db.label()
        );
        if let Backend::Sql(_) = db {
            clock.advance(window + Duration::from_secs(1));
            let later = broker
                .enqueue_once(&package(1), None, "slot-1", window)
                .await;
            assert!(
                later.expect("enqueue once"),
                "{}: the window is over",
                db.label()
            );
        }
    }
}

#[tokio::test]
async fn bulk_dequeue_takes_up_to_bulk_in_order() {
    for db in backends().await {
        let clock = Clock::manual(Utc::now());
        let broker = broker_on(&db, "default", &clock).await;
        let signer = signer();
        for n in 0..7 {
            broker.enqueue(&package(n), None).await.expect("enqueue");
        }
        assert_eq!(broker.queue_size().await.expect("size"), 7);
        let batch = broker.dequeue(5).await.expect("dequeue");
        let numbers: Vec<i64> = batch
            .iter()
            .map(|d| {
                signer.unpack(d.package.as_bytes()).expect("verifies").args[0]
                    .as_i64()
                    .expect("number")
            })
            .collect();
        if db.keeps_order() {
            assert_eq!(numbers, vec![0, 1, 2, 3, 4], "{}", db.label());
        } else {
            assert_eq!(numbers.len(), 5, "{}", db.label());
        }
        assert_eq!(broker.dequeue(5).await.expect("dequeue").len(), 2);
        assert_eq!(
            (
                broker.queue_size().await.expect("size"),
                broker.lock_size().await.expect("locks")
            ),
            (0, 7)
        );
    }
}

#[tokio::test]
async fn queues_are_separate_and_purge_fail_delete_remove_packages() {
    for db in backends().await {
        let clock = Clock::manual(Utc::now());
        let default = broker_on(&db, "default", &clock).await;
        let reports = broker_on(&db, "reports", &clock).await;
        for n in 0..3 {
            default.enqueue(&package(n), None).await.expect("enqueue");
        }
        reports.enqueue(&package(9), None).await.expect("enqueue");
        assert_eq!(
            default.queue_size().await.expect("size"),
            3,
            "{}",
            db.label()
        );
        assert_eq!(
            reports.queue_size().await.expect("size"),
            1,
            "{}",
            db.label()
        );

        let two = default.dequeue(2).await.expect("dequeue");
        default.fail(&two[0].receipt).await.expect("fail");
        default.delete(&two[1].receipt).await.expect("delete");
        // Past their receipts' deadline, so any that came back would be counted.
        clock.advance(RETRY * 2);
        assert_eq!(
            default.queue_size().await.expect("size"),
            1,
            "{}: failed and deleted are gone",
            db.label()
        );
        assert_eq!(default.purge_queue().await.expect("purge"), 1);
        assert_eq!(default.queue_size().await.expect("size"), 0);
        assert_eq!(
            reports.queue_size().await.expect("size"),
            1,
            "{}: other queue untouched",
            db.label()
        );
        reports.delete_queue().await.expect("delete queue");
        assert_eq!(reports.queue_size().await.expect("size"), 0);
        default.ping().await.expect("ping");
        assert!(
            default.info().name.ends_with(db.label()),
            "{}",
            default.info().name
        );
    }
}

#[tokio::test]
async fn package_tampered_with_in_the_broker_never_verifies() {
    for db in backends().await {
        let clock = Clock::manual(Utc::now());
        let broker = broker_on(&db, "default", &clock).await;
        let mut task = Task::new("exec");
        task.args = vec![json!("/bin/true")];
        broker
            .enqueue(&signer().pack(&task).expect("packs"), None)
            .await
            .expect("enqueue");
        // Change the program inside the stored JSON, keeping the length: a forged task.
        db.tamper("default", |payload| {
            String::from_utf8_lossy(&payload)
                .replace("/bin/true", "/bin/rm_x")
                .into_bytes()
        })
        .await;
        let delivery = broker.dequeue(1).await.expect("dequeue").remove(0);
        assert!(
            matches!(
                signer().unpack(delivery.package.as_bytes()),
                Err(PackageError::BadSignature)
            ),
            "{}: tampered package must not verify",
            db.label()
        );
        // Junk that is not a package at all is refused too.
        broker.release(&delivery.receipt).await.expect("release");
        db.tamper("default", |_| {
            br#"{"func": "exec", "args": ["/bin/sh", "-c", "echo forged"]}"#.to_vec()
        })
        .await;
        let junk = broker.dequeue(1).await.expect("dequeue").remove(0);
        assert!(matches!(
            signer().unpack(junk.package.as_bytes()),
            Err(PackageError::UnknownFormat)
        ));
    }
}

/// Two consumers with connections of their own (two processes, as far as the
/// broker can tell) dequeue concurrently; no package is delivered to both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_consumers_never_receive_the_same_package_while_its_receipt_is_live() {
    for db in backends().await {
        let clock = Clock::system();
        let total = 600;
        let producer = broker_on(&db, "shared", &clock).await;
        for n in 0..total {
            producer.enqueue(&package(n), None).await.expect("enqueue");
        }
        let mut consumers = Vec::new();
        for _ in 0..2 {
            let broker = broker_on(&db, "shared", &clock).await;
            for _ in 0..4 {
                let broker = Arc::clone(&broker);
                consumers.push(tokio::spawn(async move {
                    let mut seen = Vec::new();
                    loop {
                        let batch = broker.dequeue(3).await.expect("dequeue");
                        if batch.is_empty() {
                            return seen;
                        }
                        seen.extend(batch.into_iter().map(|d| d.package));
                    }
                }));
            }
        }
        let mut all = Vec::new();
        for consumer in consumers {
            all.extend(consumer.await.expect("consumer"));
        }
        let signer = signer();
        let numbers: HashSet<i64> = all
            .iter()
            .map(|package| {
                signer.unpack(package.as_bytes()).expect("verifies").args[0]
                    .as_i64()
                    .expect("number")
            })
            .collect();
        assert_eq!(
            numbers.len(),
            total as usize,
            "{}: every package delivered",
            db.label()
        );
        if db.delivers_once() {
            assert_eq!(
                all.len(),
                total as usize,
                "{}: no package delivered twice",
                db.label()
            );
            assert_eq!(
                (
                    producer.queue_size().await.expect("size"),
                    producer.lock_size().await.expect("locks")
                ),
                (0, total as u64),
                "{}: none waiting, every one in flight",
                db.label()
            );
        }
    }
}

/// SQS keeps time by the server's clock, so the cases that move a manual clock
/// run here in real seconds: redelivery after `retry` counting the receive, a
/// longer receipt for a task with a timeout, and an extended receipt.
#[cfg(feature = "sqs")]
#[tokio::test]
async fn sqs_visibility_timeout_is_the_receipt() {
    let Some(endpoint) = crate::support::sqs_endpoint() else {
        return;
    };
    let leases = q8s::broker::Leases {
        retry: Duration::from_secs(2),
        margin: Duration::from_secs(2),
    };
    let queue = format!("test-{}", uuid::Uuid::new_v4().simple());
    let broker = crate::support::sqs_broker(&endpoint, &queue, leases).await;
    let signer = signer();
    let number = |delivery: &q8s::broker::Delivery| {
        signer
            .unpack(delivery.package.as_bytes())
            .expect("verifies")
            .args[0]
            .as_i64()
            .expect("number")
    };
    broker.enqueue(&package(1), None).await.expect("enqueue");
    // A 4-second timeout: its receipt lasts 4 + 2 seconds, longer than retry.
    broker.enqueue(&package(2), Some(4)).await.expect("enqueue");
    let start = std::time::Instant::now();
    let first = broker.dequeue(10).await.expect("dequeue");
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|d| d.attempt == 1));
    assert!(
        broker.dequeue(10).await.expect("dequeue").is_empty(),
        "receipts are live"
    );
    assert_eq!(broker.lock_size().await.expect("locks"), 2);

    tokio::time::sleep(Duration::from_secs(3).saturating_sub(start.elapsed())).await;
    let again = broker.dequeue(10).await.expect("dequeue");
    assert_eq!(
        again.len(),
        1,
        "only the package without a timeout is back after retry"
    );
    assert_eq!((number(&again[0]), again[0].attempt), (1, 2));
    assert_eq!(
        broker.deliveries_kept().await,
        2,
        "the expired first delivery of package 1 is forgotten, not kept for release"
    );
    broker
        .extend(
            std::slice::from_ref(&again[0].receipt),
            Duration::from_secs(20),
        )
        .await
        .expect("extend");

    tokio::time::sleep(Duration::from_secs(7).saturating_sub(start.elapsed())).await;
    let later = broker.dequeue(10).await.expect("dequeue");
    assert_eq!(later.len(), 1, "the extended receipt holds its package");
    assert_eq!((number(&later[0]), later[0].attempt), (2, 2));
    broker
        .acknowledge_all(&[again[0].receipt.clone(), later[0].receipt.clone()])
        .await
        .expect("ack");
    assert_eq!(
        broker.queue_size().await.expect("size") + broker.lock_size().await.expect("locks"),
        0
    );
    assert_eq!(broker.deliveries_kept().await, 0);
    broker.delete_queue().await.expect("delete queue");
}

/// SQS's message limit is checked before sending, with a message that says what to do.
#[cfg(feature = "sqs")]
#[tokio::test]
async fn sqs_refuses_a_package_over_its_message_limit_before_sending() {
    let Some(endpoint) = crate::support::sqs_endpoint() else {
        return;
    };
    let queue = format!("test-{}", uuid::Uuid::new_v4().simple());
    let broker = crate::support::sqs_broker(
        &endpoint,
        &queue,
        q8s::broker::Leases {
            retry: RETRY,
            margin: MARGIN,
        },
    )
    .await;
    let big = q8s::Package::from_bytes(vec![b'x'; q8s::broker::sqs::MAX_MESSAGE_SIZE]);
    let error = broker.enqueue(&big, None).await.expect_err("too large");
    assert!(error.is_usage(), "{error}");
    assert!(
        error.to_string().contains("lower max_package_size"),
        "{error}"
    );
    let error = broker
        .enqueue_all(&[(package(1), None), (big, None)])
        .await
        .expect_err("too large");
    assert!(error.to_string().contains("SQS's limit"), "{error}");
    assert_eq!(
        broker.queue_size().await.expect("size"),
        0,
        "a refused batch queues nothing"
    );
    broker.delete_queue().await.expect("delete queue");
}

/// The Redis Stat board is the queue's, as the seed keys it: a reader sees its
/// own queue's clusters only, found through an index (no keyspace scan), and
/// an expired Stat leaves the index.
#[tokio::test]
async fn redis_stat_board_holds_one_queues_clusters_and_forgets_expired_ones() {
    use q8s::stat::StatBoard;
    let Some(url) = crate::support::redis_url() else {
        return;
    };
    let leases = q8s::broker::Leases {
        retry: Duration::from_secs(60),
        margin: Duration::from_secs(30),
    };
    let queue = |name: &str| format!("board-{name}-{}", uuid::Uuid::new_v4().simple());
    let (reports, emails) = (queue("reports"), queue("emails"));
    let board = |queue: String| {
        let url = url.clone();
        async move {
            q8s::broker::RedisBroker::connect(&url, &queue, leases, Clock::system())
                .await
                .expect("redis broker")
        }
    };
    let index_key = format!("q8s:{{{reports}}}:stats");
    let reports = board(reports).await;
    let emails = board(emails).await;
    reports
        .put("host-a/1", "{\"a\":1}", Duration::from_secs(10))
        .await
        .expect("put");
    reports
        .put("host-b/2", "{\"b\":2}", Duration::from_secs(1))
        .await
        .expect("put");
    emails
        .put("host-a/3", "{\"c\":3}", Duration::from_secs(10))
        .await
        .expect("put");
    assert_eq!(
        reports.live().await.expect("live"),
        ["{\"a\":1}", "{\"b\":2}"]
    );
    assert_eq!(emails.live().await.expect("live"), ["{\"c\":3}"]);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(reports.live().await.expect("live"), ["{\"a\":1}"]);
    let client = redis::Client::open(url.as_str()).expect("a Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let index: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&index_key)
        .query_async(&mut connection)
        .await
        .expect("smembers");
    assert_eq!(
        index.len(),
        1,
        "an expired Stat stayed in the index: {index:?}"
    );
}

#[tokio::test]
async fn the_oldest_waiting_packages_age_follows_the_clock_where_the_broker_can_say() {
    for db in backends().await {
        let clock = Clock::manual(Utc::now());
        let broker = broker_on(&db, "age", &clock).await;
        // SQL says the age; Redis hands over the package, whose enqueue time is inside.
        let age = async || {
            let oldest = broker.oldest_waiting().await.expect("the oldest");
            oldest.age(&signer(), clock.now())
        };
        let Some(empty) = age().await else {
            // SQS cannot say: its metric has no series.
            assert_eq!(db.label(), "sqs");
            continue;
        };
        assert_eq!(empty, Duration::ZERO, "{}: nothing waits", db.label());
        let enqueued_now = |n: i64| {
            let mut task = Task::new("q8s.echo");
            task.args = vec![json!(n)];
            task.enqueued = clock.now();
            signer().pack(&task).expect("packs")
        };
        broker
            .enqueue(&enqueued_now(1), None)
            .await
            .expect("enqueue");
        clock.advance(Duration::from_secs(30));
        broker
            .enqueue(&enqueued_now(2), None)
            .await
            .expect("enqueue");
        clock.advance(Duration::from_secs(10));
        assert_eq!(age().await, Some(Duration::from_secs(40)), "{}", db.label());
        // In flight is not waiting: the second is the oldest now.
        let first = broker.dequeue(1).await.expect("dequeue");
        assert_eq!(first.len(), 1);
        assert_eq!(age().await, Some(Duration::from_secs(10)), "{}", db.label());
        // Done with both: nothing waits again.
        let second = broker.dequeue(1).await.expect("dequeue");
        for delivery in first.iter().chain(&second) {
            broker
                .acknowledge(&delivery.receipt)
                .await
                .expect("acknowledge");
        }
        assert_eq!(age().await, Some(Duration::ZERO), "{}", db.label());
    }
}

#[tokio::test]
async fn a_redis_broker_opens_its_waiting_connection_only_when_it_first_waits() {
    let Some(url) = crate::support::redis_url() else {
        return;
    };
    // Database 13 is this test's alone, so CLIENT LIST there shows its connections only.
    let base = match url.rsplit_once('/') {
        Some((base, db)) if !db.is_empty() && db.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => url.as_str(),
    };
    let url = format!("{base}/13");
    let admin = redis::Client::open(format!("{base}/0")).expect("a Redis URL");
    let mut admin = admin
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut connections = async || {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .expect("client list");
        list.lines()
            .filter(|line| line.split_whitespace().any(|field| field == "db=13"))
            .count()
    };
    let leases = q8s::broker::Leases {
        retry: Duration::from_secs(60),
        margin: Duration::from_secs(30),
    };
    let queue = format!("test-{}-waiting", uuid::Uuid::new_v4().simple());
    let broker = q8s::broker::RedisBroker::connect(&url, &queue, leases, Clock::system())
        .await
        .expect("connect");
    broker.enqueue(&package(1), None).await.expect("enqueue");
    // A producer, the operator or the monitor: one connection.
    assert_eq!(connections().await, 1);
    broker.wait_for_work(Duration::from_millis(10)).await;
    assert_eq!(connections().await, 2, "a cluster's wait has its own");
    broker.delete_queue().await.expect("delete the queue");
}
