//! Broker and store URLs: which broker a URL names, the seed's Redis table, passwords hidden.

use std::path::PathBuf;

/// The kinds of broker a URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// The SQL broker on a SQLite file.
    Sqlite,
    /// The SQL broker on PostgreSQL.
    Postgres,
    /// Redis.
    Redis,
    /// Amazon SQS or a compatible server.
    Sqs,
}

/// The kind of broker `url` names, or an error for an unknown scheme.
pub fn broker_kind(url: &str) -> Result<BrokerKind, String> {
    match url.split_once(':').map(|(scheme, _)| scheme) {
        Some("sqlite") => Ok(BrokerKind::Sqlite),
        Some("postgres" | "postgresql") => Ok(BrokerKind::Postgres),
        Some("redis" | "rediss" | "redis+unix" | "unix") => Ok(BrokerKind::Redis),
        Some("sqs" | "https" | "http") => Ok(BrokerKind::Sqs),
        _ => Err(format!("unknown broker URL scheme in {}", redact(url))),
    }
}

/// Whether `url` names a database the store (or the SQL broker) can use.
pub fn is_database(url: &str) -> bool {
    url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A Redis URL from the seed's `redis` table (host, port, db, password, unix_socket_path).
pub fn redis_url(table: &toml::Value) -> String {
    let text = |key: &str| {
        table
            .get(key)
            .and_then(toml::Value::as_str)
            .map(str::to_string)
    };
    let number = |key: &str| table.get(key).and_then(toml::Value::as_integer);
    let password = text("password")
        .map(|p| format!(":{p}@"))
        .unwrap_or_default();
    let db = number("db").unwrap_or(0);
    match text("unix_socket_path") {
        Some(path) => format!("redis+unix://{path}?db={db}"),
        None => {
            let host = text("host").unwrap_or_else(|| "localhost".into());
            let port = number("port").unwrap_or(6379);
            format!("redis://{password}{host}:{port}/{db}")
        }
    }
}

/// The URL with any password replaced by `***`, for messages and `q8s config`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// The path of the SQLite file a `sqlite:` URL names, if it names one.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://q8s:hunter2@db/q8s"),
            "postgres://q8s:***@db/q8s"
        );
        assert_eq!(redact("sqlite://q8s.db"), "sqlite://q8s.db");
    }
}
