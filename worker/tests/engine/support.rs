//! Databases for tests: a fresh SQLite file and, when available, a fresh PostgreSQL database.

use std::collections::BTreeMap;

use q8s::store::Database;

/// One test database; the SQLite file lives as long as this value.
pub struct TestDb {
    /// `sqlite` or `postgres`, for assertion messages.
    pub label: &'static str,
    /// The URL to connect to.
    pub url: String,
    _folder: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A migrated connection to this database.
    pub async fn connect(&self) -> Database {
        Database::migrated(&self.url)
            .await
            .unwrap_or_else(|e| panic!("{}: cannot connect: {e}", self.label))
    }
}

/// A fresh SQLite database in a temporary folder.
pub fn sqlite() -> TestDb {
    let folder = tempfile::tempdir().expect("temporary folder");
    TestDb {
        label: "sqlite",
        url: format!("sqlite://{}/q8s.db", folder.path().display()),
        _folder: Some(folder),
    }
}

/// A fresh PostgreSQL database, or `None` when no server is configured and none is required.
pub async fn postgres() -> Option<TestDb> {
    let admin = service("Q8S_TEST_POSTGRES_URL", "PostgreSQL")?;
    sqlx::any::install_default_drivers();
    let name = format!("q8s_test_{}", uuid::Uuid::new_v4().simple());
    let mut connection = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin}: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut connection)
        .await
        .expect("create a test database");
    let (base, _) = admin
        .rsplit_once('/')
        .expect("the admin URL ends with a database name");
    Some(TestDb {
        label: "postgres",
        url: format!("{base}/{name}"),
        _folder: None,
    })
}

/// SQLite, and PostgreSQL when available: the databases every store and broker test runs on.
pub async fn databases() -> Vec<TestDb> {
    let mut databases = vec![sqlite()];
    databases.extend(postgres().await);
    databases
}

/// The secret key every test process shares.
pub const TEST_KEY: &str = "a secret key for the tests";

/// Configuration flags for a test on `db`, plus `extra` (`option=value`).
pub fn flags(db: &TestDb, extra: &[&str]) -> Vec<String> {
    let mut flags = vec![
        format!("broker={}", db.url),
        format!("secret_key={TEST_KEY}"),
        "http_port=0".to_string(),
    ];
    flags.extend(extra.iter().map(|flag| flag.to_string()));
    flags
}

/// A client on `db` configured with `extra`, as the test's clusters are.
pub async fn client(db: &TestDb, extra: &[&str]) -> q8s::Client {
    let config = config(db, extra);
    Database::migrate_all(&config)
        .await
        .expect("migrated store");
    q8s::Client::connect(config).await.expect("client")
}

/// The configuration a test's client uses; the same flags as its clusters.
pub fn config(db: &TestDb, extra: &[&str]) -> q8s::Config {
    q8s::Config::load(&q8s::config::Sources {
        file: None,
        env: Vec::new(),
        flags: flags(db, extra),
    })
    .expect("test configuration")
}

/// A broker backend for the conformance suite: a SQL database, a Redis server or an SQS server.
pub enum Backend {
    /// The SQL broker on SQLite or PostgreSQL.
    Sql(TestDb),
    /// The Redis broker; `prefix` keeps each test's queues apart on the shared server.
    Redis {
        /// The server.
        url: String,
        /// Prepended to queue names.
        prefix: String,
    },
    /// The SQS broker on an SQS-compatible server; `prefix` keeps each test's queues apart.
    #[cfg(feature = "sqs")]
    Sqs {
        /// The server's URL.
        endpoint: String,
        /// Prepended to queue names.
        prefix: String,
    },
}

impl Backend {
    /// `sqlite`, `postgres` or `redis`, for assertion messages.
    pub fn label(&self) -> &'static str {
        match self {
            Backend::Sql(db) => db.label,
            Backend::Redis { .. } => "redis",
            #[cfg(feature = "sqs")]
            Backend::Sqs { .. } => "sqs",
        }
    }

    /// Whether the broker keeps time by the test's manual clock; SQS keeps the server's.
    pub fn follows_clock(&self) -> bool {
        #[cfg(feature = "sqs")]
        if let Backend::Sqs { .. } = self {
            return false;
        }
        true
    }

    /// Whether the broker hands packages out in the order they were queued.
    pub fn keeps_order(&self) -> bool {
        self.follows_clock()
    }

    /// Whether a package is never delivered twice while its receipt is live:
    /// SQS standard queues deliver at least once, and now and then twice.
    pub fn delivers_once(&self) -> bool {
        self.follows_clock()
    }

    /// A broker for `queue` on this backend, reading time from `clock`.
    pub async fn broker(&self, queue: &str, clock: &q8s::Clock) -> std::sync::Arc<dyn q8s::Broker> {
        let leases = q8s::broker::Leases {
            retry: std::time::Duration::from_secs(60),
            margin: std::time::Duration::from_secs(30),
        };
        match self {
            Backend::Sql(db) => std::sync::Arc::new(q8s::broker::SqlBroker::with_clock(
                db.connect().await,
                queue,
                leases,
                clock.clone(),
            )),
            Backend::Redis { url, prefix } => std::sync::Arc::new(
                q8s::broker::RedisBroker::connect(
                    url,
                    &format!("{prefix}{queue}"),
                    leases,
                    clock.clone(),
                )
                .await
                .expect("redis broker"),
            ),
            #[cfg(feature = "sqs")]
            Backend::Sqs { endpoint, prefix } => {
                std::sync::Arc::new(sqs_broker(endpoint, &format!("{prefix}{queue}"), leases).await)
            }
        }
    }
}

#[cfg(feature = "sqs")]
/// An SQS broker for `queue` on the test server, with `leases`.
pub async fn sqs_broker(
    endpoint: &str,
    queue: &str,
    leases: q8s::broker::Leases,
) -> q8s::broker::SqsBroker {
    q8s::broker::SqsBroker::connect(
        &sqs_settings(endpoint, queue),
        "default",
        leases,
        std::time::Duration::from_secs(1),
    )
    .await
    .expect("sqs broker")
}

#[cfg(feature = "sqs")]
/// Settings for `queue` on the test server: any keys do for it.
pub fn sqs_settings(endpoint: &str, queue: &str) -> q8s::broker::sqs::SqsSettings {
    q8s::broker::sqs::SqsSettings {
        queue: q8s::broker::sqs::QueueRef::Name(queue.to_string()),
        region: Some("us-east-1".into()),
        credentials: Some(("testing".into(), "testing".into())),
        endpoint: Some(endpoint.to_string()),
    }
}

#[cfg(feature = "sqs")]
/// The configuration flags that put a test's cluster and client on SQS queue `queue`.
pub fn sqs_flags(endpoint: &str, queue: &str) -> Vec<String> {
    vec![
        format!("broker=sqs://{queue}"),
        format!(
            "sqs={{ aws_region = \"us-east-1\", aws_access_key_id = \"testing\", \
             aws_secret_access_key = \"testing\", endpoint_url = \"{endpoint}\" }}"
        ),
    ]
}

impl Backend {
    /// Rewrites every stored package of `queue` with `change`: tampering inside the broker.
    pub async fn tamper(&self, queue: &str, change: impl Fn(Vec<u8>) -> Vec<u8>) {
        match self {
            Backend::Sql(db) => {
                let database = db.connect().await;
                let rows: Vec<(i64, Vec<u8>)> =
                    sqlx::query_as("SELECT id, payload FROM q8s_queue WHERE queue = $1")
                        .bind(queue)
                        .fetch_all(database.pool())
                        .await
                        .expect("read payloads");
                for (id, payload) in rows {
                    sqlx::query("UPDATE q8s_queue SET payload = $1 WHERE id = $2")
                        .bind(change(payload))
                        .bind(id)
                        .execute(database.pool())
                        .await
                        .expect("tamper");
                }
            }
            Backend::Redis { url, prefix } => {
                let client = redis::Client::open(url.as_str()).expect("redis url");
                let mut connection = client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("redis");
                let key = format!("q8s:{{{prefix}{queue}}}:packages");
                let packages: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
                    .expect("read packages");
                for (id, payload) in packages {
                    let () = redis::cmd("HSET")
                        .arg(&key)
                        .arg(id)
                        .arg(change(payload))
                        .query_async(&mut connection)
                        .await
                        .expect("tamper");
                }
            }
            #[cfg(feature = "sqs")]
            Backend::Sqs { endpoint, prefix } => {
                // SQS cannot change a message in place: swap each for a changed copy.
                let broker = sqs_broker(
                    endpoint,
                    &format!("{prefix}{queue}"),
                    q8s::broker::Leases {
                        retry: std::time::Duration::from_secs(60),
                        margin: std::time::Duration::from_secs(0),
                    },
                )
                .await;
                let url = broker.queue_url().to_string();
                let sdk = broker.client();
                let received = sdk
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .message_attribute_names("All")
                    .send()
                    .await
                    .expect("receive to tamper");
                for message in received.messages() {
                    let mut attributes = message.message_attributes().cloned().unwrap_or_default();
                    let package = attributes
                        .get("q8s-package")
                        .and_then(|value| value.binary_value())
                        .map(|blob| blob.as_ref().to_vec())
                        .expect("a q8s message");
                    attributes.insert(
                        "q8s-package".into(),
                        q8s::broker::sqs::aws_sdk_sqs::types::MessageAttributeValue::builder()
                            .data_type("Binary")
                            .binary_value(q8s::broker::sqs::aws_sdk_sqs::primitives::Blob::new(
                                change(package),
                            ))
                            .build()
                            .expect("attribute"),
                    );
                    sdk.send_message()
                        .queue_url(&url)
                        .message_body(message.body().unwrap_or("q8s"))
                        .set_message_attributes(Some(attributes))
                        .send()
                        .await
                        .expect("send the tampered copy");
                    sdk.delete_message()
                        .queue_url(&url)
                        .receipt_handle(message.receipt_handle().expect("handle"))
                        .send()
                        .await
                        .expect("delete the original");
                }
            }
        }
    }
}

/// A cluster's broker for the tests that run on every broker: its settings and the store beside it.
pub struct OnBroker {
    /// `sqlite`, `postgres`, `redis` or `sqs`, for assertion messages.
    pub label: &'static str,
    /// Where results are saved: the broker's own database, else a SQLite file.
    pub store: TestDb,
    /// `option=value` settings that select the broker, a queue of the test's own, and the store.
    pub settings: Vec<String>,
}

impl OnBroker {
    /// Whether a package is never delivered twice while its receipt is live (not SQS standard queues).
    pub fn delivers_once(&self) -> bool {
        self.label != "sqs"
    }

    /// This broker's settings followed by `extra`.
    pub fn with(&self, extra: &[&str]) -> Vec<String> {
        let mut settings = self.settings.clone();
        settings.extend(extra.iter().map(|s| s.to_string()));
        settings
    }
}

/// SQLite, PostgreSQL, Redis and SQS, each with a queue of the test's own.
pub async fn every_broker() -> Vec<OnBroker> {
    let mut brokers: Vec<OnBroker> = databases()
        .await
        .into_iter()
        .map(|db| OnBroker {
            label: db.label,
            settings: Vec::new(),
            store: db,
        })
        .collect();
    let name = || format!("test-{}", uuid::Uuid::new_v4().simple());
    if let Some(url) = redis_url() {
        let store = sqlite();
        brokers.push(OnBroker {
            label: "redis",
            settings: vec![
                format!("broker={url}"),
                format!("store={}", store.url),
                format!("name={}", name()),
            ],
            store,
        });
    }
    #[cfg(feature = "sqs")]
    if let Some(endpoint) = sqs_endpoint() {
        let store = sqlite();
        let mut settings = sqs_flags(&endpoint, &name());
        settings.push(format!("store={}", store.url));
        brokers.push(OnBroker {
            label: "sqs",
            settings,
            store,
        });
    }
    brokers
}

/// Where a test service is, from `variable` (scripts/test sets it), or `None`
/// when it is not set: the tests that need it then skip, unless
/// `Q8S_TEST_REQUIRE_SERVICES=1` says every service must be there.
fn service(variable: &str, name: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) => Some(url),
        Err(_) if std::env::var("Q8S_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("Q8S_TEST_REQUIRE_SERVICES=1 but {variable} is not set: run scripts/test")
        }
        Err(_) => {
            eprintln!("skipping {name}: {variable} is not set (scripts/test sets it)");
            None
        }
    }
}

/// One sample of an exposition: its name, labels and value.
pub type Sample = (String, BTreeMap<String, String>, f64);

/// The samples of an exposition as the Prometheus client library's own parser reads them:
/// (name, labels, value); `None` when no parser is configured and none is required.
pub fn parse_exposition(text: &str) -> Option<Vec<Sample>> {
    use std::io::Write;
    let python = service("Q8S_TEST_PROMETHEUS_PYTHON", "the Prometheus parser")?;
    let script = "import sys, json\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        out = [[s.name, s.labels, s.value] for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]\n\
        print(json.dumps(out))\n";
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the parser runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("exposition written");
    let output = child.wait_with_output().expect("the parser finishes");
    assert!(
        output.status.success(),
        "the Prometheus parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).expect("the parser's JSON"))
}

/// The python that has cronsim, the cron oracle, or `None` when none is configured and none is required.
pub fn cron_oracle() -> Option<String> {
    service("Q8S_TEST_CRONSIM_PYTHON", "the cron oracle (cronsim)")
}

/// The Redis server of the test run, or `None` when none is configured and none is required.
pub fn redis_url() -> Option<String> {
    service("Q8S_TEST_REDIS_URL", "Redis")
}

#[cfg(feature = "sqs")]
/// The SQS-compatible server of the test run, or `None` when none is configured and none is required.
pub fn sqs_endpoint() -> Option<String> {
    service("Q8S_TEST_SQS_ENDPOINT", "SQS")
}

/// Every broker backend available: SQLite, PostgreSQL, Redis and SQS.
pub async fn backends() -> Vec<Backend> {
    let mut backends: Vec<Backend> = databases().await.into_iter().map(Backend::Sql).collect();
    if let Some(url) = redis_url() {
        let prefix = format!("test-{}-", uuid::Uuid::new_v4().simple());
        backends.push(Backend::Redis { url, prefix });
    }
    #[cfg(feature = "sqs")]
    if let Some(endpoint) = sqs_endpoint() {
        let prefix = format!("test-{}-", uuid::Uuid::new_v4().simple());
        backends.push(Backend::Sqs { endpoint, prefix });
    }
    backends
}
