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

/// The configuration a test's client uses; the same flags as its clusters.
pub fn config(db: &TestDb, extra: &[&str]) -> q8s::Config {
    q8s::Config::load(&q8s::config::Sources {
        file: None,
        env: Vec::new(),
        flags: flags(db, extra),
    })
    .expect("test configuration")
}
