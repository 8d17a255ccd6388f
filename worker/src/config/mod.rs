//! Configuration: every option of Django Q's `Q_CLUSTER`, plus q8s's own.
//!
//! Sources, weakest first: defaults, the `q8s.toml` file, `Q8S_<OPTION>`
//! environment variables, then `--set option=value` flags. Each option is
//! parsed by one function that knows its accepted values, so an invalid one
//! stops with a message naming the option, where it came from and what it accepts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File read when no `--config` or `Q8S_CONFIG` names one (optional).
pub const DEFAULT_FILE: &str = "q8s.toml";
/// The broker and store when nothing is configured: SQLite in the current folder.
pub const DEFAULT_DATABASE: &str = "sqlite://q8s.db";
/// Name of the generated secret key file.
pub const DEFAULT_KEY_FILE: &str = "q8s.key";

/// Environment variables that start with `Q8S_` but are not options.
const NON_OPTION_VARIABLES: &[&str] = &["Q8S_CONFIG", "Q8S_LOG"];
/// Prefix of environment variables reserved for the test suite.
const TEST_VARIABLE_PREFIX: &str = "Q8S_TEST_";

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

/// How long results are kept in the cache (`cached`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Cached {
    /// Results go to the store.
    Off,
    /// Results go to the cache with no expiry.
    On,
    /// Results go to the cache for this many seconds.
    Seconds(u64),
}

/// The whole configuration, with the seed's names.
#[derive(Debug, Clone)]
pub struct Config {
    /// Cluster name: queue name and signing salt (`default`).
    pub name: String,
    /// Worker processes per cluster (CPU count).
    pub workers: usize,
    /// Workers die with the sentinel (true; kept for the seed, always true in q8s).
    pub daemonize_workers: bool,
    /// Tasks a worker runs before it is replaced (500).
    pub recycle: u64,
    /// Resident memory in KiB after which a worker is replaced (none).
    pub max_rss: Option<u64>,
    /// Seconds a task may run before its worker is killed (none: never).
    pub timeout: Option<u64>,
    /// Acknowledge failed tasks too (false).
    pub ack_failures: bool,
    /// Deliveries of a failing task before giving up; 0 for no limit (0).
    pub max_attempts: u32,
    /// Seconds before an unacknowledged package is delivered again (60).
    pub retry: u64,
    /// Compress packages (false).
    pub compress: bool,
    /// Successes kept: 0 all, -1 none, N the newest N (250).
    pub save_limit: i64,
    /// Failures kept: 0 all, N the newest N (0).
    pub failure_limit: i64,
    /// Seconds between the sentinel's checks (0.5).
    pub guard_cycle: f64,
    /// Run every task synchronously in the enqueuing process (false).
    pub sync: bool,
    /// Packages a cluster holds in memory (workers²).
    pub queue_limit: Option<usize>,
    /// Title of the monitor (`q8s`).
    pub label: String,
    /// Run every missed schedule slot after downtime (true).
    pub catch_up: bool,
    /// Run the scheduler in the cluster (true).
    pub scheduler: bool,
    /// Packages fetched from the broker per call (1).
    pub bulk: usize,
    /// Seconds between polls of a broker without blocking reads (0.2).
    pub poll: f64,
    /// Keep results in Redis instead of the store (off).
    pub cached: Cached,
    /// CPUs per worker, by the seed's rule (none: all).
    pub cpu_affinity: Option<usize>,
    /// Broker URL (`sqlite://q8s.db`).
    pub broker: String,
    /// Result store URL (the SQL broker's database, else `sqlite://q8s.db`).
    pub store: String,
    /// Secret keys given directly; the first signs.
    pub secret_key: Vec<String>,
    /// File with one secret key per line; the first signs.
    pub secret_key_file: Option<PathBuf>,
    /// Largest package accepted at enqueue, in bytes (262144).
    pub max_package_size: usize,
    /// Globs of programs the `exec` function may run (none).
    pub exec_allow: Vec<String>,
    /// Seconds a receipt outlasts the task's own timeout (30).
    pub receipt_margin: u64,
    /// Port of the cluster's HTTP endpoints (9464); 0 turns them off.
    pub http_port: u16,
    /// Address the HTTP endpoints listen on (`127.0.0.1`; `0.0.0.0` in a pod).
    pub http_host: String,
    /// The seed's `redis` option: a URL or connection table for the Redis broker.
    pub redis: Option<toml::Value>,
    /// The seed's `sqs` option: region, keys and endpoint of the SQS broker.
    pub sqs: Option<toml::Value>,
    /// The seed's `orm` option: here, the URL of the SQL broker's database.
    pub orm: Option<String>,
    /// The seed's `error_reporter` table (accepted; reporting is not built yet).
    pub error_reporter: Option<toml::Value>,
    /// Seed options for brokers q8s does not have, as given (refused when the broker is chosen).
    pub foreign_brokers: BTreeMap<String, String>,
    /// Where each option that is not a default came from.
    pub origins: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            name: "default".into(),
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            daemonize_workers: true,
            recycle: 500,
            max_rss: None,
            timeout: None,
            ack_failures: false,
            max_attempts: 0,
            retry: 60,
            compress: false,
            save_limit: 250,
            failure_limit: 0,
            guard_cycle: 0.5,
            sync: false,
            queue_limit: None,
            label: "q8s".into(),
            catch_up: true,
            scheduler: true,
            bulk: 1,
            poll: 0.2,
            cached: Cached::Off,
            cpu_affinity: None,
            broker: DEFAULT_DATABASE.into(),
            store: String::new(),
            secret_key: Vec::new(),
            secret_key_file: None,
            max_package_size: crate::package::DEFAULT_MAX_SIZE,
            exec_allow: Vec::new(),
            receipt_margin: 30,
            http_port: 9464,
            http_host: "127.0.0.1".into(),
            redis: None,
            sqs: None,
            orm: None,
            error_reporter: None,
            foreign_brokers: BTreeMap::new(),
            origins: BTreeMap::new(),
        }
    }
}

/// Every option name, in the order docs/configuration.md lists them.
pub const OPTIONS: &[&str] = &[
    "name",
    "workers",
    "daemonize_workers",
    "recycle",
    "max_rss",
    "timeout",
    "ack_failures",
    "max_attempts",
    "retry",
    "compress",
    "save_limit",
    "failure_limit",
    "guard_cycle",
    "sync",
    "queue_limit",
    "label",
    "catch_up",
    "scheduler",
    "bulk",
    "poll",
    "cache",
    "cached",
    "cpu_affinity",
    "broker",
    "store",
    "secret_key",
    "secret_key_file",
    "max_package_size",
    "exec_allow",
    "receipt_margin",
    "http_port",
    "http_host",
    "redis",
    "django_redis",
    "sqs",
    "orm",
    "disque_nodes",
    "disque_auth",
    "iron_mq",
    "mongo",
    "mongo_db",
    "broker_class",
    "error_reporter",
];

/// Seed options naming brokers q8s does not have.
const FOREIGN_BROKER_OPTIONS: &[&str] = &[
    "django_redis",
    "disque_nodes",
    "disque_auth",
    "iron_mq",
    "mongo",
    "mongo_db",
    "broker_class",
];

/// A value as given: typed in a TOML file, or text from the environment or a flag.
#[derive(Debug, Clone)]
enum Raw {
    Toml(toml::Value),
    Text(String),
}

impl Raw {
    fn shown(&self) -> String {
        match self {
            Raw::Toml(toml::Value::String(text)) | Raw::Text(text) => format!("{text:?}"),
            Raw::Toml(value) => value.to_string(),
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Raw::Text(text) | Raw::Toml(toml::Value::String(text)) => Some(text.clone()),
            Raw::Toml(_) => None,
        }
    }

    fn integer(&self) -> Option<i64> {
        match self {
            Raw::Toml(toml::Value::Integer(n)) => Some(*n),
            Raw::Text(text) => text.trim().parse().ok(),
            _ => None,
        }
    }

    fn float(&self) -> Option<f64> {
        match self {
            Raw::Toml(toml::Value::Float(f)) => Some(*f),
            Raw::Toml(toml::Value::Integer(n)) => Some(*n as f64),
            Raw::Text(text) => text.trim().parse().ok(),
            _ => None,
        }
    }

    fn boolean(&self) -> Option<bool> {
        match self {
            Raw::Toml(toml::Value::Boolean(b)) => Some(*b),
            Raw::Text(text) => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// A list of strings: a TOML array, or text holding a TOML array or a single item.
    fn strings(&self) -> Option<Vec<String>> {
        match self {
            Raw::Toml(toml::Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect(),
            Raw::Toml(toml::Value::String(text)) => Some(vec![text.clone()]),
            Raw::Text(text) if text.trim_start().starts_with('[') => {
                Raw::Toml(parse_inline(text)?).strings()
            }
            Raw::Text(text) => Some(vec![text.clone()]),
            Raw::Toml(_) => None,
        }
    }

    /// A TOML value: as given in a file, or text read as an inline TOML value or a string.
    fn value(&self) -> toml::Value {
        match self {
            Raw::Toml(value) => value.clone(),
            Raw::Text(text) => {
                parse_inline(text).unwrap_or_else(|| toml::Value::String(text.clone()))
            }
        }
    }
}

fn parse_inline(text: &str) -> Option<toml::Value> {
    let table: toml::Table = toml::from_str(&format!("v = {text}")).ok()?;
    table.get("v").cloned()
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

impl Cached {
    /// How long a cached result is kept: `None` for no expiry.
    pub fn ttl(self) -> Option<std::time::Duration> {
        match self {
            Cached::Seconds(seconds) => Some(std::time::Duration::from_secs(seconds)),
            Cached::Off | Cached::On => None,
        }
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
            if NON_OPTION_VARIABLES.contains(&key.as_str()) || key.starts_with(TEST_VARIABLE_PREFIX)
            {
                continue;
            }
            let option = option.to_ascii_lowercase();
            if !OPTIONS.contains(&option.as_str()) {
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
                &format!("from --set {flag}"),
            )?;
        }
        config.finish()
    }

    /// Applies one option; the single place that knows each option's type and range.
    fn set(&mut self, option: &str, raw: Raw, origin: &str) -> Result<(), ConfigError> {
        let invalid = |expected: &str| ConfigError::Invalid {
            option: option.to_string(),
            origin: origin.to_string(),
            value: raw.shown(),
            expected: expected.to_string(),
        };
        let positive = |expected: &str| -> Result<u64, ConfigError> {
            raw.integer()
                .filter(|n| *n >= 1)
                .map(|n| n as u64)
                .ok_or_else(|| invalid(expected))
        };
        let boolean = || raw.boolean().ok_or_else(|| invalid("true or false"));
        let text = |expected: &str| {
            raw.text()
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| invalid(expected))
        };
        match option {
            "name" => {
                let name = text("a cluster name: letters, digits, '-', '_' or '.'")?;
                if !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(invalid("a cluster name: letters, digits, '-', '_' or '.'"));
                }
                self.name = name;
            }
            "workers" => {
                self.workers = positive("a whole number of worker processes, 1 or more")? as usize
            }
            "daemonize_workers" => self.daemonize_workers = boolean()?,
            "recycle" => self.recycle = positive("a whole number of tasks, 1 or more")?,
            "max_rss" => self.max_rss = Some(positive("a size in KiB, 1 or more")?),
            "timeout" => {
                let seconds = positive("a whole number of seconds, 1 to 31536000 (a year)")?;
                if seconds > crate::task::MAX_TIMEOUT {
                    return Err(invalid("a whole number of seconds, 1 to 31536000 (a year)"));
                }
                self.timeout = Some(seconds);
            }
            "ack_failures" => self.ack_failures = boolean()?,
            "max_attempts" => {
                self.max_attempts = raw
                    .integer()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| invalid("0 (no limit) or a whole number of attempts"))?
            }
            "retry" => self.retry = positive("a whole number of seconds, 1 or more")?,
            "compress" => self.compress = boolean()?,
            "save_limit" => {
                self.save_limit = raw.integer().filter(|n| *n >= -1).ok_or_else(|| {
                    invalid("0 (keep all), -1 (keep no successes) or N (keep the newest N)")
                })?
            }
            "failure_limit" => {
                self.failure_limit = raw
                    .integer()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| invalid("0 (keep all failures) or N (keep the newest N)"))?
            }
            "guard_cycle" => {
                self.guard_cycle = raw
                    .float()
                    .filter(|f| *f > 0.0 && *f < 60.0)
                    .ok_or_else(|| invalid("seconds, more than 0 and less than 60"))?
            }
            "sync" => self.sync = boolean()?,
            "queue_limit" => {
                self.queue_limit = Some(positive("a whole number of packages, 1 or more")? as usize)
            }
            "label" => self.label = text("a non-empty label")?,
            "catch_up" => self.catch_up = boolean()?,
            "scheduler" => self.scheduler = boolean()?,
            "bulk" => {
                self.bulk = positive("a whole number of packages per fetch, 1 or more")? as usize
            }
            "poll" => {
                self.poll = raw
                    .float()
                    .filter(|f| *f > 0.0 && *f <= 60.0)
                    .ok_or_else(|| invalid("seconds, more than 0 and at most 60"))?
            }
            "cache" => {
                // Django's cache name; q8s keeps Stat in the store or in Redis, so it has no effect.
                text("a cache name")?;
            }
            "cached" => {
                self.cached = match (raw.boolean(), raw.integer()) {
                    (Some(true), _) => Cached::On,
                    (Some(false), _) => Cached::Off,
                    (None, Some(n)) if n >= 1 => Cached::Seconds(n as u64),
                    _ => {
                        return Err(invalid(
                            "true, false, or a number of seconds to keep results",
                        ));
                    }
                }
            }
            "cpu_affinity" => {
                self.cpu_affinity =
                    Some(positive("a number of CPUs per worker, 1 or more")? as usize)
            }
            "broker" => {
                let url = text("a broker URL: sqlite://FILE, postgres://…, redis://… or sqs://…")?;
                broker_kind(&url).map_err(|_| {
                    invalid("a broker URL: sqlite://FILE, postgres://…, redis://… or sqs://…")
                })?;
                self.broker = url;
            }
            "store" => {
                let url = text("a store URL: sqlite://FILE or postgres://…")?;
                if !(url.starts_with("sqlite:") || is_postgres(&url)) {
                    return Err(invalid("a store URL: sqlite://FILE or postgres://…"));
                }
                self.store = url;
            }
            "secret_key" => {
                let keys = raw
                    .strings()
                    .filter(|keys| !keys.is_empty())
                    .ok_or_else(|| {
                        invalid("a secret key of 16 characters or more, or a list of them")
                    })?;
                if keys.iter().any(|key| key.chars().count() < 16) {
                    return Err(invalid("secret keys of 16 characters or more"));
                }
                self.secret_key = keys;
            }
            "secret_key_file" => self.secret_key_file = Some(PathBuf::from(text("a file path")?)),
            "max_package_size" => {
                let size = positive("a size in bytes between 1024 and 67108864")? as usize;
                if !(1024..=64 * 1024 * 1024).contains(&size) {
                    return Err(invalid("a size in bytes between 1024 and 67108864"));
                }
                self.max_package_size = size;
            }
            "exec_allow" => {
                let globs = raw.strings().ok_or_else(|| {
                    invalid("a list of program path globs, e.g. [\"/opt/tasks/*\"]")
                })?;
                for glob in &globs {
                    globset::Glob::new(glob).map_err(|e| invalid(&format!("valid globs ({e})")))?;
                }
                self.exec_allow = globs;
            }
            "receipt_margin" => {
                self.receipt_margin = positive("a whole number of seconds, 1 or more")?
            }
            "http_port" => {
                self.http_port = raw
                    .integer()
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| invalid("a TCP port, 0 to 65535"))?
            }
            "http_host" => {
                let host = text("an IP address to listen on, e.g. 0.0.0.0 or 127.0.0.1")?;
                if host.parse::<std::net::IpAddr>().is_err() {
                    return Err(invalid(
                        "an IP address to listen on, e.g. 0.0.0.0 or 127.0.0.1",
                    ));
                }
                self.http_host = host;
            }
            "redis" => self.redis = Some(raw.value()),
            "sqs" => self.sqs = Some(raw.value()),
            "orm" => {
                let url = text("the URL of the broker's database: sqlite://FILE or postgres://…")?;
                if !(url.starts_with("sqlite:") || is_postgres(&url)) {
                    return Err(invalid(
                        "the URL of the broker's database: sqlite://FILE or postgres://…",
                    ));
                }
                self.orm = Some(url);
            }
            "error_reporter" => self.error_reporter = Some(raw.value()),
            _ if FOREIGN_BROKER_OPTIONS.contains(&option) => {
                self.foreign_brokers.insert(option.to_string(), raw.shown());
            }
            _ => {
                return Err(ConfigError::Unknown {
                    option: option.to_string(),
                    origin: origin.to_string(),
                    hint: suggestion(option),
                });
            }
        }
        self.origins.insert(option.to_string(), origin.to_string());
        Ok(())
    }

    /// Resolves options that depend on others: the broker from the seed's broker options, the store.
    fn finish(mut self) -> Result<Config, ConfigError> {
        if !self.origins.contains_key("broker") {
            if let Some(url) = &self.orm {
                self.broker = url.clone();
            } else if let Some(redis) = &self.redis {
                self.broker = match redis {
                    toml::Value::String(url) => url.clone(),
                    table => redis_url(table),
                };
            } else if self.sqs.is_some() {
                // The queue is named after the cluster when the broker connects.
                self.broker = "sqs://".into();
            }
        }
        if self.store.is_empty() {
            self.store = match broker_kind(&self.broker) {
                Ok(BrokerKind::Sqlite | BrokerKind::Postgres) => self.broker.clone(),
                _ => DEFAULT_DATABASE.into(),
            };
        }
        Ok(self)
    }

    /// Seconds `task` may run: its own timeout, else the cluster's `timeout`.
    pub fn timeout_for(&self, task: &crate::task::Task) -> Option<u64> {
        task.timeout.or(self.timeout)
    }

    /// Packages a cluster holds in memory: `queue_limit`, else workers².
    pub fn queue_limit(&self) -> usize {
        self.queue_limit.unwrap_or(self.workers * self.workers)
    }

    /// The secret keys, first one signing: from `secret_key`, else `secret_key_file`,
    /// else a key generated once into `q8s.key` beside the SQLite database.
    pub fn secret_keys(&self) -> Result<Vec<String>, ConfigError> {
        if !self.secret_key.is_empty() {
            return Ok(self.secret_key.clone());
        }
        if let Some(path) = &self.secret_key_file {
            return read_key_file(path);
        }
        let path = default_key_path(&self.store);
        if !path.exists() {
            generate_key_file(&path)?;
        }
        read_key_file(&path)
    }

    /// Each option's effective value, for `q8s config`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let optional = |value: Option<u64>| value.map_or("none".to_string(), |v| v.to_string());
        vec![
            ("name", self.name.clone()),
            ("workers", self.workers.to_string()),
            ("daemonize_workers", self.daemonize_workers.to_string()),
            ("recycle", self.recycle.to_string()),
            ("max_rss", optional(self.max_rss)),
            ("timeout", optional(self.timeout)),
            ("ack_failures", self.ack_failures.to_string()),
            ("max_attempts", self.max_attempts.to_string()),
            ("retry", self.retry.to_string()),
            ("compress", self.compress.to_string()),
            ("save_limit", self.save_limit.to_string()),
            ("failure_limit", self.failure_limit.to_string()),
            ("guard_cycle", self.guard_cycle.to_string()),
            ("sync", self.sync.to_string()),
            ("queue_limit", self.queue_limit().to_string()),
            ("label", self.label.clone()),
            ("catch_up", self.catch_up.to_string()),
            ("scheduler", self.scheduler.to_string()),
            ("bulk", self.bulk.to_string()),
            ("poll", self.poll.to_string()),
            (
                "cached",
                match self.cached {
                    Cached::Off => "false".into(),
                    Cached::On => "true".into(),
                    Cached::Seconds(s) => s.to_string(),
                },
            ),
            (
                "cpu_affinity",
                optional(self.cpu_affinity.map(|n| n as u64)),
            ),
            ("broker", redact(&self.broker)),
            ("store", redact(&self.store)),
            (
                "secret_key",
                if self.secret_key.is_empty() {
                    "none (from the key file)".into()
                } else {
                    format!("{} key(s), hidden", self.secret_key.len())
                },
            ),
            (
                "secret_key_file",
                self.secret_key_file
                    .clone()
                    .unwrap_or_else(|| default_key_path(&self.store))
                    .display()
                    .to_string(),
            ),
            ("max_package_size", self.max_package_size.to_string()),
            ("exec_allow", format!("{:?}", self.exec_allow)),
            ("receipt_margin", self.receipt_margin.to_string()),
            ("http_port", self.http_port.to_string()),
            ("http_host", self.http_host.clone()),
        ]
    }
}

/// A Redis URL from the seed's `redis` table (host, port, db, password, unix_socket_path).
fn redis_url(table: &toml::Value) -> String {
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

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
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

fn default_key_path(store: &str) -> PathBuf {
    let folder = sqlite_path(store)
        .and_then(|db| db.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    folder.join(DEFAULT_KEY_FILE)
}

fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: format!("cannot read it ({e})"),
    })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: format!("not valid TOML: {e}"),
    })
}

fn read_key_file(path: &Path) -> Result<Vec<String>, ConfigError> {
    let key_error = |reason: String| ConfigError::Key {
        path: path.to_path_buf(),
        reason,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| key_error(format!("cannot read it ({e})")))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect();
    if keys.is_empty() {
        return Err(key_error("it holds no key; put one key per line".into()));
    }
    if keys.iter().any(|key| key.chars().count() < 16) {
        return Err(key_error("keys must be 16 characters or more".into()));
    }
    Ok(keys)
}

/// Writes 32 random bytes as hex into a new file readable only by its owner.
///
/// The key is written to a temporary file and linked into place, so two
/// processes starting at once agree on one key.
fn generate_key_file(path: &Path) -> Result<(), ConfigError> {
    use std::io::Write;
    let key_error = |reason: String| ConfigError::Key {
        path: path.to_path_buf(),
        reason,
    };
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| key_error(format!("no randomness available ({e})")))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temporary = folder.join(format!(".{DEFAULT_KEY_FILE}.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(format!("{hex}\n").as_bytes())
            .and_then(|()| file.sync_all())
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(key_error(format!("cannot create it ({e})")));
    }
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(key_error(format!("cannot create it ({e})"))),
    }
}

/// ", did you mean `x`?" for the known option closest to `option`, if close enough.
fn suggestion(option: &str) -> String {
    OPTIONS
        .iter()
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
        assert_eq!(config.store, "sqlite://q8s.db");
        assert_eq!(config.save_limit, 250);
        assert_eq!(config.retry, 60);
        assert_eq!(config.queue_limit(), config.workers * config.workers);
    }

    #[test]
    fn flags_beat_environment_which_beats_the_file() {
        let file = "workers = 2\nretry = 10\ntimeout = 5\n";
        let env = [("Q8S_RETRY", "20"), ("Q8S_TIMEOUT", "7")];
        let config = load(Some(file), &env, &["timeout=9"]).expect("loads");
        assert_eq!(config.workers, 2);
        assert_eq!(config.retry, 20);
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
            redis.store, "sqlite://q8s.db",
            "results stay in the SQL store"
        );
        assert_eq!(config.cached, Cached::Seconds(60));
        assert_eq!(config.queue_limit(), 500);
    }

    #[test]
    fn secret_key_is_generated_once_and_only_owner_can_read_it() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = format!("sqlite://{}/q8s.db", dir.path().display());
        let config = load(None, &[], &[&format!("store={store}")]).expect("loads");
        let first = config.secret_keys().expect("generated");
        let second = config.secret_keys().expect("read back");
        assert_eq!(first, second);
        assert_eq!(first[0].len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("q8s.key"))
                .expect("key file exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://q8s:hunter2@db/q8s"),
            "postgres://q8s:***@db/q8s"
        );
        assert_eq!(redact("sqlite://q8s.db"), "sqlite://q8s.db");
    }
}
