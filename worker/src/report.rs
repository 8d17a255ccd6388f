//! Error reporting, the seed's `error_reporter`: failed tasks and the
//! cluster's own errors go to Sentry when a DSN is configured.
//!
//! ```toml
//! error_reporter = { sentry = { dsn = "https://KEY@o0.ingest.sentry.io/0" } }
//! ```
//!
//! Without it, `SENTRY_DSN` (Sentry's own variable) is used when set. Other
//! reporters of the seed (rollbar, …) are accepted and ignored with a
//! warning: q8s has Sentry only.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::task::TaskRecord;

/// Why the error reporter's settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The Sentry DSN does not parse.
    #[error(
        "error_reporter.sentry.dsn {dsn:?} is not a Sentry DSN ({reason}); it looks like https://KEY@HOST/PROJECT"
    )]
    BadDsn {
        /// The DSN given.
        dsn: String,
        /// What the parser said.
        reason: String,
    },
    /// The `sentry` table has no `dsn`.
    #[error("error_reporter.sentry needs a dsn = \"https://KEY@HOST/PROJECT\"")]
    NoDsn,
}

impl ReportError {
    /// The error's category, for logs and exit codes.
    pub fn category(&self) -> &'static str {
        "configuration"
    }
}

/// Reports to Sentry while it lives; reports nothing when none is configured.
pub struct Reporter {
    #[cfg(feature = "sentry")]
    guard: Option<sentry::ClientInitGuard>,
    cluster: String,
}

/// The Sentry DSN `config` names, else `SENTRY_DSN` (Sentry's own variable, as a
/// pod gets it from a Secret), if any.
fn sentry_dsn(config: &Config) -> Result<Option<String>, ReportError> {
    let from_env = || {
        std::env::var("SENTRY_DSN")
            .ok()
            .filter(|dsn| !dsn.is_empty())
    };
    let Some(table) = config
        .error_reporter
        .as_ref()
        .and_then(|value| value.as_table())
    else {
        return Ok(from_env());
    };
    for name in table.keys().filter(|name| name.as_str() != "sentry") {
        tracing::warn!("error_reporter.{name}: q8s reports to Sentry only; {name} is ignored");
    }
    let Some(sentry) = table.get("sentry") else {
        return Ok(from_env());
    };
    match sentry.get("dsn").and_then(|dsn| dsn.as_str()) {
        Some(dsn) if !dsn.is_empty() => Ok(Some(dsn.to_string())),
        _ => Err(ReportError::NoDsn),
    }
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Reporter")
            .field("enabled", &self.enabled())
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl Reporter {
    /// The reporter `config` asks for; a bad DSN is an error, before anything runs.
    pub fn start(config: &Config) -> Result<Reporter, ReportError> {
        let dsn = sentry_dsn(config)?;
        #[cfg(feature = "sentry")]
        let guard = match dsn {
            Some(dsn) => {
                let parsed: sentry::types::Dsn =
                    dsn.parse().map_err(|error: sentry::types::ParseDsnError| {
                        ReportError::BadDsn {
                            dsn: dsn.clone(),
                            reason: error.to_string(),
                        }
                    })?;
                tracing::info!("reporting errors to Sentry at {}", parsed.host());
                {
                    let mut options = sentry::ClientOptions::default();
                    options.dsn = Some(parsed);
                    options.release = Some(concat!("q8s@", env!("CARGO_PKG_VERSION")).into());
                    options.server_name = Some(crate::stat::host_name().into());
                    // What is still queued is sent when the cluster stops, for at most this long.
                    options.shutdown_timeout = std::time::Duration::from_secs(2);
                    Some(sentry::init(options))
                }
            }
            None => None,
        };
        #[cfg(not(feature = "sentry"))]
        if dsn.is_some() {
            tracing::warn!("error_reporter.sentry: this q8s was built without the sentry feature");
        }
        Ok(Reporter {
            #[cfg(feature = "sentry")]
            guard,
            cluster: config.name.clone(),
        })
    }

    /// Whether anything is reported.
    pub fn enabled(&self) -> bool {
        #[cfg(feature = "sentry")]
        return self.guard.is_some();
        #[cfg(not(feature = "sentry"))]
        false
    }

    /// A failed task: its function, id, name, kind of failure and error text.
    pub fn task_failed(&self, record: &TaskRecord) {
        if record.success || !self.enabled() {
            return;
        }
        let kind = record.error_kind.map_or("failed", |kind| kind.as_str());
        let error = record
            .result
            .as_str()
            .map_or_else(|| record.result.to_string(), str::to_string);
        let tags = BTreeMap::from([
            ("cluster".to_string(), self.cluster.clone()),
            ("func".to_string(), record.func.clone()),
            ("error_kind".to_string(), kind.to_string()),
        ]);
        // No arguments: they may hold what a third party must not see.
        let extra = BTreeMap::from([
            ("task_id".to_string(), record.id.clone().into()),
            ("task_name".to_string(), record.name.clone().into()),
            ("attempts".to_string(), record.attempts.into()),
            ("arguments".to_string(), record.args.len().into()),
            ("group".to_string(), record.group.clone().into()),
        ]);
        // One Sentry issue per function and kind of failure, whatever the text.
        let fingerprint = vec![record.func.clone(), kind.to_string()];
        self.send(
            format!("{} failed ({kind}): {error}", record.func),
            tags,
            extra,
            fingerprint,
        );
    }

    /// An error of the cluster itself (a store it cannot write, a package it rejects).
    pub fn cluster_error(&self, what: &str, message: &str) {
        if !self.enabled() {
            return;
        }
        let tags = BTreeMap::from([
            ("cluster".to_string(), self.cluster.clone()),
            ("error".to_string(), what.to_string()),
        ]);
        self.send(
            message.to_string(),
            tags,
            BTreeMap::new(),
            vec![self.cluster.clone(), what.to_string()],
        );
    }

    fn send(
        &self,
        message: String,
        tags: BTreeMap<String, String>,
        extra: BTreeMap<String, serde_json::Value>,
        fingerprint: Vec<String>,
    ) {
        #[cfg(feature = "sentry")]
        sentry::capture_event(sentry::protocol::Event {
            message: Some(message),
            level: sentry::Level::Error,
            logger: Some("q8s".into()),
            tags,
            extra,
            fingerprint: fingerprint.into_iter().map(Into::into).collect(),
            ..sentry::protocol::Event::default()
        });
        // Without Sentry nothing is enabled, so nothing reaches here.
        #[cfg(not(feature = "sentry"))]
        let _ = (message, tags, extra, fingerprint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(reporter: &str) -> Config {
        let table: toml::Table =
            toml::from_str(&format!("error_reporter = {reporter}\n")).expect("TOML");
        Config::from_table(table, "the test").expect("valid")
    }

    #[test]
    fn a_sentry_dsn_is_read_and_other_reporters_are_ignored() {
        assert_eq!(
            sentry_dsn(&config(r#"{ sentry = { dsn = "https://k@127.0.0.1/1" }, rollbar = { access_token = "x" } }"#))
                .expect("valid"),
            Some("https://k@127.0.0.1/1".into())
        );
        if std::env::var_os("SENTRY_DSN").is_none() {
            assert_eq!(
                sentry_dsn(&config(r#"{ rollbar = { access_token = "x" } }"#)).expect("valid"),
                None
            );
        }
        assert!(matches!(
            sentry_dsn(&config("{ sentry = {} }")),
            Err(ReportError::NoDsn)
        ));
    }

    #[cfg(feature = "sentry")]
    #[test]
    fn a_dsn_that_does_not_parse_is_refused_naming_the_option() {
        let error =
            Reporter::start(&config(r#"{ sentry = { dsn = "not a dsn" } }"#)).expect_err("refused");
        assert!(
            error.to_string().contains("error_reporter.sentry.dsn"),
            "{error}"
        );
    }
}
