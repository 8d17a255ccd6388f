//! Configuration: every option of Django Q's `Q_CLUSTER`, plus q8s's own.
//!
//! Sources, weakest first: defaults, the `q8s.toml` file, `Q8S_<OPTION>`
//! environment variables, then `--set option=value` flags. Every option is
//! declared once in [`options`]; each source, serde and the JSON Schema read
//! that declaration, and [`Config::validate`] checks what spans options.

mod keys;
pub mod options;
pub mod raw;
pub mod spec;
mod urls;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use crate::task::Cached;
pub use keys::{DEFAULT_KEY_FILE, key_lines};
pub use options::{Config, Entry, FOREIGN_BROKER_OPTIONS, OPTIONS, OptionInfo};
use raw::Raw;
pub use urls::{BrokerKind, broker_kind, redact, sqlite_path};

/// File read when no `--config` or `Q8S_CONFIG` names one (optional).
pub const DEFAULT_FILE: &str = "q8s.toml";
/// The broker and store when nothing is configured: SQLite in the current folder.
pub const DEFAULT_DATABASE: &str = "sqlite://q8s.db";

/// Environment variables that start with `Q8S_` but are not options: q8s's own,
/// the operator's and the repository's scripts' (a test finds any missing).
const NON_OPTION_VARIABLES: &[&str] = &[
    "Q8S_CONFIG",
    "Q8S_LOG",
    "Q8S_LOG_FORMAT",
    // The operator sets it in every pod it makes, for the Stat's node.
    crate::stat::NODE_VAR,
    "Q8S_WORKER_IMAGE",
    "Q8S_BLESS",
    "Q8S_CACHE_DIR",
    "Q8S_IMAGE_CACHE",
    "Q8S_SERVICES_DIR",
    "Q8S_GO_JOBS",
    "Q8S_REDIS_PROFILE",
    "Q8S_PG_PROFILE",
    "Q8S_KIND_IMAGE",
    "Q8S_KIND_CLUSTER",
];
/// Prefixes of environment variables reserved for the test suite and its test bed.
const TEST_VARIABLE_PREFIXES: &[&str] = &["Q8S_TEST_", "Q8S_TESTBED_"];

/// Whether a `Q8S_*` variable is one of q8s's own that are not options
/// (`Q8S_CONFIG`, `Q8S_LOG`, the test suite's and its test bed's).
fn not_an_option(variable: &str) -> bool {
    NON_OPTION_VARIABLES.contains(&variable)
        || TEST_VARIABLE_PREFIXES
            .iter()
            .any(|prefix| variable.starts_with(prefix))
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An option has a value it does not accept.
    #[error("option `{option}` ({origin}) is {value}; expected {expected}")]
    Invalid {
        /// The option's name.
        option: String,
        /// Where the value came from.
        origin: String,
        /// The value as given.
        value: String,
        /// What the option accepts.
        expected: String,
    },
    /// An option name that does not exist.
    #[error(
        "unknown option `{option}` ({origin}){hint}; the options are listed in docs/configuration.md"
    )]
    Unknown {
        /// The name as given.
        option: String,
        /// Where it came from.
        origin: String,
        /// A suggestion, if a known option is close.
        hint: String,
    },
    /// Options whose values are each valid but do not work together.
    #[error("{0}")]
    Inconsistent(String),
    /// A `--set` flag without `=`.
    #[error("--set {0}: expected option=value, e.g. --set workers=4")]
    BadFlag(String),
    /// The configuration file could not be read or parsed.
    #[error("configuration file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The secret key could not be read or created.
    #[error("secret key file {path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl ConfigError {
    /// A stable name for the kind of error, for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            ConfigError::Invalid { .. } => "invalid_value",
            ConfigError::Unknown { .. } => "unknown_option",
            ConfigError::Inconsistent(_) => "inconsistent",
            ConfigError::BadFlag(_) => "bad_flag",
            ConfigError::File { .. } => "file",
            ConfigError::Key { .. } => "key",
        }
    }
}

/// Where configuration is read from, besides the defaults.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// An explicit configuration file; it must exist. Else `q8s.toml` if present.
    pub file: Option<PathBuf>,
    /// Environment variables (all of them; only `Q8S_*` are read).
    pub env: Vec<(String, String)>,
    /// `--set option=value` flags, in order.
    pub flags: Vec<String>,
}

impl Sources {
    /// The process's environment, with `Q8S_CONFIG` as the file if set.
    pub fn from_process(file: Option<PathBuf>, flags: Vec<String>) -> Sources {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let file = file.or_else(|| {
            env.iter()
                .find(|(key, _)| key == "Q8S_CONFIG")
                .map(|(_, value)| PathBuf::from(value))
        });
        Sources { file, env, flags }
    }
}

impl Config {
    /// Loads defaults, then the file, the environment and the flags, and validates the result.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        let (path, required) = match &sources.file {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_FILE), false),
        };
        if required || path.exists() {
            let origin = format!("in {}", path.display());
            for (option, value) in read_file(&path)? {
                config.set(&option, Raw::Toml(value), &origin)?;
            }
        }
        for (key, value) in &sources.env {
            let Some(option) = key.strip_prefix("Q8S_") else {
                continue;
            };
            if not_an_option(key) {
                continue;
            }
            let option = option.to_ascii_lowercase();
            if !options::is_option(&option) {
                // Kubernetes injects variables such as Q8S_SERVICE_HOST for a Service named q8s.
                tracing::warn!("ignoring environment variable {key}: q8s has no option `{option}`");
                continue;
            }
            config.set(&option, Raw::Text(value.clone()), &format!("from {key}"))?;
        }
        for flag in &sources.flags {
            let (option, value) = flag
                .split_once('=')
                .ok_or_else(|| ConfigError::BadFlag(flag.clone()))?;
            let option = option.trim().replace('-', "_");
            config.set(
                &option,
                Raw::Text(value.to_string()),
                &format!("from --set {option}"),
            )?;
        }
        config.finish()
    }

    /// A configuration from a table of options (TOML, or JSON deserialized into TOML values),
    /// over the defaults, with the same rules and messages as a file.
    pub fn from_table(table: toml::Table, origin: &str) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for (option, value) in table {
            config.set(&option, Raw::Toml(value), origin)?;
        }
        config.finish()
    }

    /// Applies one option through its declared spec.
    fn set(&mut self, option: &str, raw: Raw, origin: &str) -> Result<(), ConfigError> {
        if FOREIGN_BROKER_OPTIONS.contains(&option) {
            self.foreign_brokers.insert(option.to_string(), raw.value());
        } else {
            match self.apply(option, &raw) {
                Some(Ok(())) => {}
                Some(Err(expected)) => {
                    return Err(ConfigError::Invalid {
                        option: option.to_string(),
                        origin: origin.to_string(),
                        value: Config::shown_given(option, &raw),
                        expected,
                    });
                }
                None => {
                    return Err(ConfigError::Unknown {
                        option: option.to_string(),
                        origin: origin.to_string(),
                        hint: suggestion(option),
                    });
                }
            }
        }
        self.origins.insert(option.to_string(), origin.to_string());
        Ok(())
    }

    /// Resolves the broker from the seed's broker options, then validates.
    fn finish(mut self) -> Result<Config, ConfigError> {
        if !self.origins.contains_key("broker") {
            if let Some(url) = &self.orm {
                self.broker = url.clone();
            } else if let Some(redis) = &self.redis {
                self.broker = match redis {
                    toml::Value::String(url) => url.clone(),
                    table => urls::redis_url(table),
                };
            } else if self.sqs.is_some() {
                // The queue is named after the cluster when the broker connects.
                self.broker = "sqs://".into();
            }
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks every option against its spec and the rules that span options.
    ///
    /// Every source goes through it: the file, the environment and flags,
    /// deserialization, and a `Config` built in code before it connects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for entry in self.entries() {
            let Some(value) = entry.toml else { continue };
            let raw = Raw::Toml(value);
            if let Some(Err(expected)) = Config::check(entry.name, &raw) {
                return Err(ConfigError::Invalid {
                    option: entry.name.to_string(),
                    origin: self
                        .origins
                        .get(entry.name)
                        .cloned()
                        .unwrap_or_else(|| "as set in code".into()),
                    value: Config::shown_given(entry.name, &raw),
                    expected,
                });
            }
        }
        if let Some(timeout) = self.timeout {
            let needed = timeout.saturating_add(self.receipt_margin);
            if self.retry < needed {
                return Err(ConfigError::Inconsistent(format!(
                    "retry ({} s) is shorter than timeout ({timeout} s) plus receipt_margin ({} s): \
                     a cluster that cannot reach the broker to extend a receipt would see the task \
                     delivered again while it still runs; set retry to {needed} or more, or lower timeout",
                    self.retry, self.receipt_margin
                )));
            }
        }
        Ok(())
    }

    /// The result store's URL: `store`, else the SQL broker's database, else SQLite `q8s.db`.
    pub fn store_url(&self) -> String {
        if let Some(store) = &self.store {
            return store.clone();
        }
        match broker_kind(&self.broker) {
            Ok(BrokerKind::Sqlite | BrokerKind::Postgres) => self.broker.clone(),
            _ => DEFAULT_DATABASE.into(),
        }
    }

    /// Seconds `task` may run: its own timeout, else the cluster's `timeout`.
    pub fn timeout_for(&self, task: &crate::task::Task) -> Option<u64> {
        task.timeout.or(self.timeout)
    }

    /// Packages a cluster holds in memory: `queue_limit`, else workers².
    pub fn queue_limit(&self) -> usize {
        self.queue_limit.unwrap_or(self.workers * self.workers)
    }

    /// Each option's effective value, for `q8s config`: derived defaults resolved, secrets hidden.
    pub fn describe(&self) -> Vec<Entry> {
        self.entries()
            .into_iter()
            .map(|mut entry| {
                match entry.name {
                    "queue_limit" => entry.shown = self.queue_limit().to_string(),
                    "store" => entry.shown = redact(&self.store_url()),
                    "secret_key_file" => entry.shown = self.key_file().display().to_string(),
                    _ => {}
                }
                entry
            })
            .collect()
    }

    /// The options as a TOML table that [`Config::from_table`] loads back to this configuration.
    pub fn to_table(&self) -> toml::Table {
        let mut table: toml::Table = self
            .entries()
            .into_iter()
            .filter_map(|entry| Some((entry.name.to_string(), entry.toml?)))
            .collect();
        for (option, value) in &self.foreign_brokers {
            table.insert(option.clone(), value.clone());
        }
        table
    }

    /// The options table of docs/configuration.md, from the declaration.
    pub fn docs_table() -> String {
        let mut table = String::from("| option | default | meaning | seed |\n|---|---|---|---|\n");
        for option in OPTIONS {
            let seed = if option.seed.is_empty() {
                "— (q8s)".to_string()
            } else if option.seed == option.name {
                format!("`{}`", option.seed)
            } else {
                option.seed.to_string()
            };
            table.push_str(&format!(
                "| `{}` | {} | {} | {seed} |\n",
                option.name,
                option.default,
                option.doc.trim()
            ));
        }
        let foreign: Vec<String> = FOREIGN_BROKER_OPTIONS
            .iter()
            .map(|name| format!("`{name}`"))
            .collect();
        table.push_str(&format!(
            "| {} | none | seed brokers q8s does not have; accepted, refused with a clear error when used | the same |\n",
            foreign.join(", ")
        ));
        table
    }

    /// The JSON Schema of a configuration: every option with its type, bounds, default and doc.
    pub fn schema_value() -> serde_json::Value {
        let defaults: BTreeMap<&str, toml::Value> = Config::default()
            .entries()
            .into_iter()
            .filter(|entry| entry.name != "workers")
            .filter_map(|entry| Some((entry.name, entry.toml?)))
            .collect();
        let mut properties = serde_json::Map::new();
        for (name, mut schema) in Config::option_schemas() {
            if let Some(info) = OPTIONS.iter().find(|info| info.name == name) {
                schema.insert("description".into(), info.doc.trim().into());
            }
            if let Some(default) = defaults
                .get(name)
                .and_then(|v| serde_json::to_value(v).ok())
            {
                schema.insert("default".into(), default);
            }
            properties.insert(name.to_string(), serde_json::Value::Object(schema));
        }
        serde_json::json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Config",
            "description": "q8s cluster options (Django Q's Q_CLUSTER, plus q8s's own)",
            "type": "object",
            "properties": properties,
            "additionalProperties": false
        })
    }
}

impl serde::Serialize for Config {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_table().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Config {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Config, D::Error> {
        let table = toml::Table::deserialize(deserializer)?;
        Config::from_table(table, "deserialized").map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Config {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Config".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut value = Config::schema_value();
        if let Some(object) = value.as_object_mut() {
            object.remove("$schema");
        }
        schemars::Schema::try_from(value).unwrap_or_default()
    }
}

fn read_file(path: &std::path::Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: format!("cannot read it ({e})"),
    })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: format!("not valid TOML: {e}"),
    })
}

/// ", did you mean `x`?" for the known option closest to `option`, if close enough.
fn suggestion(option: &str) -> String {
    OPTIONS
        .iter()
        .map(|info| info.name)
        .chain(FOREIGN_BROKER_OPTIONS.iter().copied())
        .map(|known| (edit_distance(option, known), known))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, known)| format!(", did you mean `{known}`?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn load(
        file: Option<&str>,
        env: &[(&str, &str)],
        flags: &[&str],
    ) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("temporary folder");
        let file = file.map(|text| {
            let path = dir.path().join("q8s.toml");
            std::fs::write(&path, text).expect("write config");
            path
        });
        Config::load(&Sources {
            file,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
        })
    }

    #[test]
    fn nothing_configured_means_sqlite_in_the_current_folder() {
        let config = load(None, &[], &[]).expect("defaults load");
        assert_eq!(config.broker, "sqlite://q8s.db");
        assert_eq!(config.store_url(), "sqlite://q8s.db");
        assert_eq!(config.save_limit, 250);
        assert_eq!(config.retry, 60);
        assert_eq!(config.queue_limit(), config.workers * config.workers);
    }

    #[test]
    fn flags_beat_environment_which_beats_the_file() {
        let file = "workers = 2\nretry = 100\ntimeout = 5\n";
        let env = [("Q8S_RETRY", "200"), ("Q8S_TIMEOUT", "7")];
        let config = load(Some(file), &env, &["timeout=9"]).expect("loads");
        assert_eq!(config.workers, 2);
        assert_eq!(config.retry, 200);
        assert_eq!(config.timeout, Some(9));
    }

    #[test]
    fn invalid_value_names_the_option_its_origin_and_accepted_values() {
        let error = load(None, &[("Q8S_WORKERS", "many")], &[]).expect_err("invalid");
        let message = error.to_string();
        assert!(message.contains("`workers`"), "{message}");
        assert!(message.contains("Q8S_WORKERS"), "{message}");
        assert!(message.contains("1 or more"), "{message}");
        let error = load(Some("save_limit = -5\n"), &[], &[]).expect_err("invalid");
        assert!(
            error.to_string().contains("-1 (keep no successes)"),
            "{error}"
        );
    }

    #[test]
    fn unknown_option_in_the_file_is_an_error_with_a_suggestion() {
        let error = load(Some("wokers = 2\n"), &[], &[]).expect_err("unknown");
        assert!(
            error.to_string().contains("did you mean `workers`"),
            "{error}"
        );
    }

    #[test]
    fn the_suites_and_test_beds_variables_are_not_taken_for_options() {
        for variable in [
            "Q8S_CONFIG",
            "Q8S_TEST_REDIS_URL",
            "Q8S_TESTBED_CONTROLLERS",
        ] {
            assert!(not_an_option(variable), "{variable}");
        }
        assert!(!not_an_option("Q8S_WORKERS"));
        assert!(
            !not_an_option("Q8S_SERVICE_HOST"),
            "warned about, not silently skipped"
        );
    }

    #[test]
    fn every_q8s_variable_the_repository_uses_is_an_option_or_known_to_be_none() {
        fn words(path: &std::path::Path, found: &mut std::collections::BTreeSet<String>) {
            if path.is_dir() {
                for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                    words(&entry.path(), found);
                }
                return;
            }
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for (at, _) in text.match_indices("Q8S_") {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                found.insert(name);
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = std::collections::BTreeSet::new();
        for folder in [
            "scripts",
            "e2e",
            ".ci",
            "operator/src",
            "worker/src",
            "charts",
        ] {
            words(&root.join(folder), &mut found);
        }
        assert!(
            found.contains("Q8S_NODE_NAME"),
            "the scan reads the sources"
        );
        let unknown: Vec<&String> = found
            .iter()
            // A prefix (`Q8S_TEST_`) or a Kubernetes Service variable, warned about by design.
            .filter(|name| !name.ends_with('_') && !name.starts_with("Q8S_SERVICE_"))
            .filter(|name| !not_an_option(name))
            .filter(|name| !options::is_option(&name["Q8S_".len()..].to_ascii_lowercase()))
            .collect();
        assert!(
            unknown.is_empty(),
            "{unknown:?} are neither options nor in NON_OPTION_VARIABLES: q8s would warn about them"
        );
    }

    #[test]
    fn unknown_environment_variables_are_ignored() {
        let config = load(
            None,
            &[
                ("Q8S_SERVICE_HOST", "10.0.0.1"),
                ("Q8S_TEST_POSTGRES_URL", "x"),
            ],
            &[],
        );
        assert!(config.is_ok());
    }

    #[test]
    fn every_seed_option_is_accepted() {
        let file = r#"
name = "myproject"
workers = 8
daemonize_workers = true
recycle = 500
max_rss = 100000
timeout = 60
ack_failures = true
max_attempts = 3
retry = 90
compress = true
save_limit = 250
guard_cycle = 0.5
sync = false
queue_limit = 500
label = "Django Q"
catch_up = false
scheduler = true
bulk = 10
poll = 0.2
cache = "default"
cached = 60
cpu_affinity = 1
error_reporter = { rollbar = { access_token = "x" } }
redis = { host = "127.0.0.1", port = 6379, db = 0 }
django_redis = "default"
disque_nodes = ["127.0.0.1:7711"]
disque_auth = "x"
iron_mq = { host = "x" }
sqs = { aws_region = "us-east-1" }
orm = "sqlite://other.db"
mongo = { host = "127.0.0.1" }
mongo_db = "q"
broker_class = "myapp.CustomBroker"
"#;
        let config = load(Some(file), &[], &[]).expect("every seed option loads");
        assert_eq!(config.broker, "sqlite://other.db");
        let redis = load(
            Some("redis = { host = \"10.0.0.5\", port = 6380, db = 2, password = \"pw\" }\n"),
            &[],
            &[],
        )
        .expect("the seed's redis table");
        assert_eq!(redis.broker, "redis://:pw@10.0.0.5:6380/2");
        assert_eq!(
            redis.store_url(),
            "sqlite://q8s.db",
            "results stay in the SQL store"
        );
        assert_eq!(config.cached, Cached::Seconds(60));
        assert_eq!(config.queue_limit(), 500);
    }

    #[test]
    fn every_declared_option_refuses_a_bad_value_naming_the_option_and_what_it_accepts() {
        for option in OPTIONS {
            let file = format!("{} = [[1]]\n", option.name);
            let error = load(Some(&file), &[], &[]).expect_err(option.name);
            let message = error.to_string();
            assert!(
                matches!(error, ConfigError::Invalid { .. }),
                "{}: {message}",
                option.name
            );
            assert!(
                message.contains(&format!("`{}`", option.name)) && message.contains("expected"),
                "{message}"
            );
        }
    }

    #[test]
    fn errors_never_show_a_secret_key_or_a_password() {
        let error = load(None, &[("Q8S_SECRET_KEY", "too short")], &[]).expect_err("short key");
        assert!(!error.to_string().contains("too short"), "{error}");
        let error = load(None, &[], &["store=mysql://me:hunter2@db/q8s"]).expect_err("not a store");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn retry_shorter_than_timeout_plus_margin_is_refused_with_the_reason() {
        let error = load(None, &[], &["timeout=60", "retry=60"]).expect_err("inconsistent");
        let message = error.to_string();
        assert!(matches!(error, ConfigError::Inconsistent(_)), "{message}");
        assert!(message.contains("set retry to 90 or more"), "{message}");
        assert!(load(None, &[], &["timeout=30", "retry=60"]).is_ok());
        let built = Config {
            workers: 0,
            ..Config::default()
        };
        let error = built.validate().expect_err("checked in code too");
        assert!(error.to_string().contains("as set in code"), "{error}");
    }

    #[test]
    fn options_table_in_the_docs_is_generated_from_the_declaration() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let docs = std::fs::read_to_string(path).expect("docs/configuration.md");
        let (begin, end) = ("<!-- options:begin -->\n", "<!-- options:end -->");
        let start = docs.find(begin).expect("begin marker") + begin.len();
        let stop = docs.find(end).expect("end marker");
        let table = Config::docs_table();
        if docs[start..stop] != table && std::env::var_os("Q8S_BLESS").is_some() {
            let written = format!("{}{table}{}", &docs[..start], &docs[stop..]);
            std::fs::write(path, written).expect("rewrite the docs");
            return;
        }
        assert_eq!(
            docs[start..stop],
            table,
            "docs/configuration.md drifted from the options: run Q8S_BLESS=1 cargo test -p q8s --lib options_table"
        );
    }

    #[test]
    fn json_schema_bounds_come_from_the_declaration() {
        let schema = Config::schema_value();
        let workers = &schema["properties"]["workers"];
        assert_eq!(workers["type"], "integer");
        assert_eq!(workers["minimum"], 1);
        assert_eq!(schema["properties"]["save_limit"]["minimum"], -1);
        assert_eq!(schema["properties"]["retry"]["default"], 60);
        assert_eq!(schema["properties"]["poll"]["maximum"], 60.0);
        assert_eq!(
            schema["properties"].as_object().map(|p| p.len()),
            Some(OPTIONS.len())
        );
    }

    fn configs() -> impl Strategy<Value = Config> {
        let counts = (
            1usize..64,
            1u64..100_000,
            proptest::option::of(1u64..10_000_000),
            proptest::option::of(1u64..3_600),
            0u32..10,
            -1i64..1000,
            0i64..1000,
            proptest::option::of(1usize..10_000),
            1usize..1000,
            proptest::option::of(1usize..8),
            1024usize..1_000_000,
            0u16..=65535,
        );
        let flags = proptest::collection::vec(any::<bool>(), 6);
        let others = (
            "[a-z0-9_.-]{1,12}",
            1u64..120,
            0.001f64..59.0,
            0.001f64..60.0,
            prop_oneof![
                Just(Cached::Off),
                Just(Cached::On),
                (1u64..100_000).prop_map(Cached::Seconds)
            ],
            prop_oneof![
                Just("sqlite://q8s.db".to_string()),
                Just("redis://:pw@127.0.0.1:6379/0".to_string()),
                Just("sqs://reports".to_string()),
                Just("postgres://q8s:pw@db/q8s".to_string())
            ],
            proptest::option::of(Just("postgres://q8s:pw@db/results".to_string())),
            proptest::collection::vec("[a-zA-Z0-9 ]{16,24}", 0..3),
            proptest::collection::vec("/opt/[a-z]{1,6}/\\*", 0..3),
            proptest::option::of(Just(toml::Value::Table(toml::Table::from_iter([(
                "aws_region".to_string(),
                toml::Value::String("eu-west-1".into()),
            )])))),
            "[A-Za-z][A-Za-z ]{0,11}",
        );
        (counts, flags, others).prop_map(|(c, f, o)| {
            let mut config = Config {
                workers: c.0,
                recycle: c.1,
                max_rss: c.2,
                timeout: c.3,
                max_attempts: c.4,
                save_limit: c.5,
                failure_limit: c.6,
                queue_limit: c.7,
                bulk: c.8,
                cpu_affinity: c.9,
                max_package_size: c.10,
                http_port: c.11,
                daemonize_workers: f[0],
                ack_failures: f[1],
                compress: f[2],
                sync: f[3],
                catch_up: f[4],
                scheduler: f[5],
                name: o.0,
                receipt_margin: o.1,
                guard_cycle: o.2,
                poll: o.3,
                cached: o.4,
                broker: o.5,
                store: o.6,
                secret_key: o.7,
                exec_allow: o.8,
                sqs: o.9,
                label: o.10,
                ..Config::default()
            };
            // Valid configurations only: retry covers the timeout and its margin.
            config.retry = config.timeout.unwrap_or(0) + config.receipt_margin + c.1 % 100;
            config
        })
    }

    proptest! {
        #[test]
        fn a_config_written_as_toml_loads_back_to_the_same_config(config in configs()) {
            let text = toml::to_string(&config).expect("serializes");
            let mut loaded = load(Some(&text), &[], &[]).expect("loads back");
            loaded.origins.clear();
            prop_assert_eq!(&loaded, &config, "{}", text);
            let json = serde_json::to_string(&config).expect("as JSON");
            let mut from_json: Config = serde_json::from_str(&json).expect("deserializes");
            from_json.origins.clear();
            prop_assert_eq!(from_json, config);
        }
    }
}
