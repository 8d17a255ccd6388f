//! The SQL database behind the store and the SQL broker: SQLite or PostgreSQL.
//!
//! One connection pool through sqlx's `Any` driver, so every query is written
//! once; where the two dialects differ, the `Dialect` says which to use.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Executor, SqlSafeStr};

/// Connections per pool on SQLite: one writer at a time anyway.
const SQLITE_POOL_SIZE: u32 = 4;
/// Connections per pool on PostgreSQL.
const POSTGRES_POOL_SIZE: u32 = 10;
/// How long a SQLite statement waits for another process's write lock.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 30_000;
/// How long to wait for a connection from the pool or the server.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The URL is not a SQLite or PostgreSQL URL.
    #[error(
        "{0} is not a database URL; use sqlite://FILE or postgres://USER:PASSWORD@HOST:PORT/DB"
    )]
    BadUrl(String),
    /// The server could not be reached or refused the connection.
    #[error(
        "cannot connect to {url}: {source}; check that the database server runs and the URL is right"
    )]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("cannot create or update q8s's tables in {url}: {source}")]
    Migrate {
        /// The URL, password hidden.
        url: String,
        /// The migrator's error.
        source: sqlx::migrate::MigrateError,
    },
    /// The schema is missing or older than this q8s: nobody ran the migrations yet.
    #[error(
        "{url} has {found} of q8s's {latest} schema migrations: run `q8s migrate` \
         (a cluster migrates when it starts)"
    )]
    NotMigrated {
        /// The URL, password hidden.
        url: String,
        /// Migrations applied.
        found: i64,
        /// Migrations this q8s has.
        latest: i64,
    },
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
}

impl DatabaseError {
    /// Whether the user must change something (the URL, run `q8s migrate`) rather than wait for the server.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            DatabaseError::BadUrl(_) | DatabaseError::NotMigrated { .. }
        )
    }
}

/// Which SQL dialect a database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite, embedded.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A database whose schema is up to date: its pool and dialect.
#[derive(Clone)]
pub struct Database {
    pool: AnyPool,
    dialect: Dialect,
    url: String,
    connect_url: String,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the connect URL: it holds the password.
        f.debug_struct("Database")
            .field("dialect", &self.dialect)
            .field("url", &self.url)
            .finish()
    }
}

impl Database {
    /// Connects to `url`, whose schema must be up to date (`q8s migrate`); changes nothing.
    pub async fn connect(url: &str) -> Result<Database, DatabaseError> {
        if let Some(path) = crate::config::sqlite_path(url).filter(|path| !path.exists()) {
            // Nothing to read, and a reader creates no file.
            tracing::debug!("{} does not exist", path.display());
            return Err(DatabaseError::NotMigrated {
                url: crate::config::redact(url),
                found: 0,
                latest: latest_migration(Dialect::Sqlite),
            });
        }
        let database = Database::open(url, false).await?;
        database.check_schema().await?;
        Ok(database)
    }

    /// Connects to `url` (creating a SQLite file if missing) and applies the migrations:
    /// what `q8s migrate` and a starting cluster do.
    pub async fn migrated(url: &str) -> Result<Database, DatabaseError> {
        let database = Database::open(url, true).await?;
        database.migrate().await?;
        Ok(database)
    }

    /// Migrates every database `config` names: the store, and the SQL broker's
    /// database when it is another; returns the store's.
    pub async fn migrate_all(config: &crate::config::Config) -> Result<Database, DatabaseError> {
        let store = config.store_url();
        let database = Database::migrated(&store).await?;
        let on_its_own = crate::config::broker_kind(&config.broker).is_ok_and(|kind| {
            matches!(
                kind,
                crate::config::BrokerKind::Sqlite | crate::config::BrokerKind::Postgres
            )
        });
        if on_its_own && config.broker != store {
            Database::migrated(&config.broker).await?;
        }
        Ok(database)
    }

    /// A pool on `url`; `create` makes a missing SQLite file and sets it to WAL (once, it stays).
    async fn open(url: &str, create: bool) -> Result<Database, DatabaseError> {
        sqlx::any::install_default_drivers();
        let shown = crate::config::redact(url);
        let (dialect, connect_url) = if url.starts_with("sqlite:") {
            (Dialect::Sqlite, sqlite_url(url, create))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Dialect::Postgres, url.to_string())
        } else {
            return Err(DatabaseError::BadUrl(shown));
        };
        let options = AnyPoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
        let options = match dialect {
            Dialect::Sqlite => options
                .max_connections(SQLITE_POOL_SIZE)
                .after_connect(|connection, _| {
                    Box::pin(async move {
                        let pragmas = format!(
                            "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA synchronous = NORMAL;"
                        );
                        connection.execute(sqlx::AssertSqlSafe(pragmas)).await?;
                        Ok(())
                    })
                }),
            Dialect::Postgres => options.max_connections(POSTGRES_POOL_SIZE),
        };
        let pool =
            options
                .connect(&connect_url)
                .await
                .map_err(|source| DatabaseError::Connect {
                    url: shown.clone(),
                    source,
                })?;
        if dialect == Dialect::Sqlite && create {
            // WAL lets readers (q8s result, the monitor) run while a cluster writes.
            pool.execute("PRAGMA journal_mode = WAL")
                .await
                .map_err(|source| DatabaseError::Connect {
                    url: shown.clone(),
                    source,
                })?;
        }
        Ok(Database {
            pool,
            dialect,
            url: shown,
            connect_url,
        })
    }

    /// Refuses a database whose schema is missing or behind this q8s's migrations.
    async fn check_schema(&self) -> Result<(), DatabaseError> {
        let latest = latest_migration(self.dialect);
        let counted =
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await;
        let found = match counted {
            Ok(found) => found,
            // No migrations table: nothing was ever migrated. Any other error is the server's.
            Err(sqlx::Error::Database(error))
                if error.code().as_deref() == Some("42P01")
                    || error.message().contains("no such table") =>
            {
                0
            }
            Err(error) => return Err(DatabaseError::Query(error)),
        };
        if found < latest {
            return Err(DatabaseError::NotMigrated {
                url: self.url.clone(),
                found,
                latest,
            });
        }
        Ok(())
    }

    /// The connection pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The SQL dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// `count` placeholders for bound values numbered from `first` (1-based), comma-separated.
    ///
    /// SQLite gets anonymous `?`: sqlx looks each `$N` up by name, and SQLite's
    /// lookup walks a list, which made statements with thousands of values quadratic.
    pub fn placeholders(&self, first: usize, count: usize) -> String {
        let one = |n: usize| match self.dialect {
            Dialect::Sqlite => "?".to_string(),
            Dialect::Postgres => format!("${n}"),
        };
        (first..first + count)
            .map(one)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The URL to connect with, password included: for connections outside the pool.
    pub fn connect_url(&self) -> &str {
        &self.connect_url
    }

    /// The URL with its password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn migrate(&self) -> Result<(), DatabaseError> {
        let migrator = migrator(self.dialect);
        let first = migrator.run(&self.pool).await;
        // Two processes creating a new SQLite file at once: the loser sees the
        // winner's tables half-way; once the winner is done a second run is a no-op.
        let result = match first {
            Err(_) if self.dialect == Dialect::Sqlite => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                migrator.run(&self.pool).await
            }
            other => other,
        };
        result.map_err(|source| DatabaseError::Migrate {
            url: self.url.clone(),
            source,
        })
    }
}

/// The version of the last embedded migration for `dialect`.
fn latest_migration(dialect: Dialect) -> i64 {
    migrator(dialect)
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0)
}

/// The embedded migrations for `dialect`, in order.
fn migrator(dialect: Dialect) -> Migrator {
    let files: [(i64, &'static str, &'static str); 6] = match dialect {
        Dialect::Sqlite => [
            (
                1,
                "init",
                include_str!("../../migrations/sqlite/0001_init.sql"),
            ),
            (
                2,
                "stat",
                include_str!("../../migrations/sqlite/0002_stat.sql"),
            ),
            (
                3,
                "queue order",
                include_str!("../../migrations/sqlite/0003_queue_order.sql"),
            ),
            (
                4,
                "schedules",
                include_str!("../../migrations/sqlite/0004_schedules.sql"),
            ),
            (
                5,
                "once",
                include_str!("../../migrations/sqlite/0005_once.sql"),
            ),
            (
                6,
                "once expiry",
                include_str!("../../migrations/sqlite/0006_once_expiry.sql"),
            ),
        ],
        Dialect::Postgres => [
            (
                1,
                "init",
                include_str!("../../migrations/postgres/0001_init.sql"),
            ),
            (
                2,
                "stat",
                include_str!("../../migrations/postgres/0002_stat.sql"),
            ),
            (
                3,
                "queue order",
                include_str!("../../migrations/postgres/0003_queue_order.sql"),
            ),
            (
                4,
                "schedules",
                include_str!("../../migrations/postgres/0004_schedules.sql"),
            ),
            (
                5,
                "once",
                include_str!("../../migrations/postgres/0005_once.sql"),
            ),
            (
                6,
                "once expiry",
                include_str!("../../migrations/postgres/0006_once_expiry.sql"),
            ),
        ],
    };
    let migrations = files
        .into_iter()
        .map(|(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// A `sqlite:` URL that creates the file if it is missing (`create`), or only opens it.
fn sqlite_url(url: &str, create: bool) -> String {
    let mode = if create { "rwc" } else { "rw" };
    if url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode={mode}")
    } else {
        format!("{url}?mode={mode}")
    }
}
