//! Databases for tests: a fresh SQLite file and, when available, a fresh PostgreSQL database.

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
        Database::connect(&self.url)
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
    let admin = match std::env::var("Q8S_TEST_POSTGRES_URL") {
        Ok(url) => url,
        Err(_) if std::env::var("Q8S_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!(
                "Q8S_TEST_REQUIRE_SERVICES=1 but Q8S_TEST_POSTGRES_URL is not set: run scripts/test"
            )
        }
        Err(_) => {
            eprintln!(
                "skipping PostgreSQL: Q8S_TEST_POSTGRES_URL is not set (scripts/test sets it)"
            );
            return None;
        }
    };
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
    q8s::Client::connect(config(db, extra))
        .await
        .expect("client")
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

/// A broker backend for the conformance suite: a SQL database, or a Redis server.
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
}

impl Backend {
    /// `sqlite`, `postgres` or `redis`, for assertion messages.
    pub fn label(&self) -> &'static str {
        match self {
            Backend::Sql(db) => db.label,
            Backend::Redis { .. } => "redis",
        }
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
        }
    }
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
        }
    }
}

/// The Redis server of the test run, or `None` when none is configured and none is required.
pub fn redis_url() -> Option<String> {
    match std::env::var("Q8S_TEST_REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("Q8S_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!(
                "Q8S_TEST_REQUIRE_SERVICES=1 but Q8S_TEST_REDIS_URL is not set: run scripts/test"
            )
        }
        Err(_) => {
            eprintln!("skipping Redis: Q8S_TEST_REDIS_URL is not set (scripts/test sets it)");
            None
        }
    }
}

/// Every broker backend available: SQLite, PostgreSQL and Redis.
pub async fn backends() -> Vec<Backend> {
    let mut backends: Vec<Backend> = databases().await.into_iter().map(Backend::Sql).collect();
    if let Some(url) = redis_url() {
        let prefix = format!("test-{}-", uuid::Uuid::new_v4().simple());
        backends.push(Backend::Redis { url, prefix });
    }
    backends
}
