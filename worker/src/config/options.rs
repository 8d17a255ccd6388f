//! Every option, declared once: name, type, default, one-line doc, the seed's spelling and
//! its spec (what it accepts).
//!
//! From this one list come the [`Config`] struct and its default, the parser
//! for TOML, `Q8S_*` and `--set`, `q8s config`, serde, the JSON Schema, and
//! the options table of docs/configuration.md (a test fails when it drifts).
//! A new option is one more entry here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Cached;
use super::raw::Raw;
use super::spec::{
    CacheTime, FilePath, Flag, Globs, Inline, Keys, Maybe, Seconds, Spec, Text, whole,
};
use super::urls::{broker_kind, is_database};

/// One option as the docs and the environment see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionInfo {
    /// The option's name in TOML and `--set`; `Q8S_` + upper case in the environment.
    pub name: &'static str,
    /// What it does, in one line.
    pub doc: &'static str,
    /// Its default, as the docs show it.
    pub default: &'static str,
    /// The seed's spelling (Django Q's `Q_CLUSTER`), or "" for an option of q8s's own.
    pub seed: &'static str,
}

/// An option's value written out: as TOML (none when unset) and as `q8s config` shows it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The option.
    pub name: &'static str,
    /// The value as TOML that loads back to the same value; `None` when unset.
    pub toml: Option<toml::Value>,
    /// The value as shown, secrets hidden.
    pub shown: String,
}

macro_rules! declare_options {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident: $ty:ty = $default:expr,
            default $shown:literal, seed $seed:literal, $spec:expr;
    )*) => {
        /// The whole configuration, with the seed's names.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $name: $ty, )*
            /// Seed options for brokers q8s does not have, as given (refused when the broker is chosen).
            pub foreign_brokers: BTreeMap<String, toml::Value>,
            /// Where each option that is not a default came from.
            pub origins: BTreeMap<String, String>,
        }

        impl Default for Config {
            fn default() -> Config {
                Config {
                    $( $name: $default, )*
                    foreign_brokers: BTreeMap::new(),
                    origins: BTreeMap::new(),
                }
            }
        }

        /// One spec per option, named after it.
        mod specs {
            use super::*;
            $( pub(super) fn $name() -> impl Spec<Value = $ty> { $spec } )*
        }

        /// Every option, in the order docs/configuration.md lists them.
        pub const OPTIONS: &[OptionInfo] = &[
            $( OptionInfo {
                name: stringify!($name),
                doc: concat!($($doc),+),
                default: $shown,
                seed: $seed,
            }, )*
        ];

        impl Config {
            /// Sets `option` from `raw`; `None` when no such option is declared.
            pub(super) fn apply(&mut self, option: &str, raw: &Raw) -> Option<Result<(), String>> {
                match option {
                    $( stringify!($name) => Some(specs::$name().parse(raw).map(|value| self.$name = value)), )*
                    _ => None,
                }
            }

            /// Whether `raw` is a value `option` accepts; `None` when no such option is declared.
            pub(super) fn check(option: &str, raw: &Raw) -> Option<Result<(), String>> {
                match option {
                    $( stringify!($name) => Some(specs::$name().parse(raw).map(|_| ())), )*
                    _ => None,
                }
            }

            /// A value given for `option`, as an error message may show it.
            pub(super) fn shown_given(option: &str, raw: &Raw) -> String {
                match option {
                    $( stringify!($name) => specs::$name().show_given(raw), )*
                    _ => raw.shown(),
                }
            }

            /// Every option's value, as TOML and as shown.
            pub fn entries(&self) -> Vec<Entry> {
                vec![ $( Entry {
                    name: stringify!($name),
                    toml: specs::$name().to_toml(&self.$name),
                    shown: specs::$name().show(&self.$name),
                }, )* ]
            }

            /// Every option's JSON Schema, by name.
            pub(super) fn option_schemas() -> Vec<(&'static str, serde_json::Map<String, serde_json::Value>)> {
                vec![ $( (stringify!($name), specs::$name().schema()), )* ]
            }
        }
    };
}

fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn cluster_name(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn any_text(_: &str) -> bool {
    true
}

fn broker_url(url: &str) -> bool {
    broker_kind(url).is_ok()
}

fn ip_address(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
}

/// No upper bound but the type's.
const UNBOUNDED: i64 = i64::MAX;

declare_options! {
    /// Cluster name: the queue name and the signing salt.
    name: String = "default".into(),
        default "`default`", seed "name",
        Text { expected: "a cluster name: letters, digits, '-', '_' or '.'", check: cluster_name, pattern: Some("^[A-Za-z0-9._-]+$"), url: false };
    /// Worker processes per cluster.
    workers: usize = cpu_count(),
        default "CPU count", seed "workers",
        whole(1, UNBOUNDED, "a whole number of worker processes, 1 or more");
    /// Workers die with their sentinel; always so in q8s, whatever the value.
    daemonize_workers: bool = true,
        default "`true`", seed "daemonize_workers", Flag;
    /// Tasks a worker runs before it is replaced.
    recycle: u64 = 500,
        default "`500`", seed "recycle",
        whole(1, UNBOUNDED, "a whole number of tasks, 1 or more");
    /// KiB of resident memory after which a worker is replaced (checked after each task).
    max_rss: Option<u64> = None,
        default "none", seed "max_rss",
        Maybe(whole(1, UNBOUNDED, "a size in KiB, 1 or more"));
    /// Seconds a task may run before its worker is killed; a task's own `timeout` overrides it.
    timeout: Option<u64> = None,
        default "none", seed "timeout",
        Maybe(whole(1, crate::task::MAX_TIMEOUT as i64, "a whole number of seconds, 1 to 31536000 (a year)"));
    /// Acknowledge failed tasks too (else they are delivered again after `retry`).
    ack_failures: bool = false,
        default "`false`", seed "ack_failures", Flag;
    /// Deliveries of a failing task before giving up; 0 for no limit.
    max_attempts: u32 = 0,
        default "`0`", seed "max_attempts",
        whole(0, u32::MAX as i64, "0 (no limit) or a whole number of attempts");
    /// Seconds before an unacknowledged package is delivered again; at least `timeout` + `receipt_margin`.
    retry: u64 = 60,
        default "`60`", seed "retry",
        whole(1, UNBOUNDED, "a whole number of seconds, 1 or more");
    /// zlib-compress packages.
    compress: bool = false,
        default "`false`", seed "compress", Flag;
    /// Successes kept: 0 all, -1 none, N the newest N; failures are kept by `failure_limit`.
    save_limit: i64 = 250,
        default "`250`", seed "save_limit",
        whole(-1, UNBOUNDED, "0 (keep all), -1 (keep no successes) or N (keep the newest N)");
    /// Failures kept: 0 all, N the newest N.
    failure_limit: i64 = 0,
        default "`0`", seed "",
        whole(0, UNBOUNDED, "0 (keep all failures) or N (keep the newest N)");
    /// Seconds between the seed's sentinel checks; no effect: q8s's sentinel reacts to each event.
    guard_cycle: f64 = 0.5,
        default "`0.5`", seed "guard_cycle",
        Seconds { above: 0.0, below: 60.0, up_to: false, expected: "seconds, more than 0 and less than 60" };
    /// Run every enqueued task synchronously in the enqueuing process.
    sync: bool = false,
        default "`false`", seed "sync", Flag;
    /// Packages a cluster holds in memory, not yet started; raise it (e.g. 200) for many short tasks.
    queue_limit: Option<usize> = None,
        default "workers²", seed "queue_limit",
        Maybe(whole(1, UNBOUNDED, "a whole number of packages, 1 or more"));
    /// Title of the monitor.
    label: String = "q8s".into(),
        default "`q8s`", seed "label",
        Text { expected: "a non-empty label", check: any_text, pattern: None, url: false };
    /// Run every missed schedule slot after downtime (else once, then resume).
    catch_up: bool = true,
        default "`true`", seed "catch_up", Flag;
    /// Run the scheduler in the cluster.
    scheduler: bool = true,
        default "`true`", seed "scheduler", Flag;
    /// Packages fetched from the broker per call; raise it (e.g. 100) for many short tasks.
    bulk: usize = 1,
        default "`1`", seed "bulk",
        whole(1, UNBOUNDED, "a whole number of packages per fetch, 1 or more");
    /// Seconds between polls of an empty queue; on PostgreSQL a notification wakes the cluster sooner.
    poll: f64 = 0.2,
        default "`0.2`", seed "poll",
        Seconds { above: 0.0, below: 60.0, up_to: true, expected: "seconds, more than 0 and at most 60" };
    /// Django's cache name; no effect in q8s (Stat lives in the store or Redis).
    cache: Option<String> = None,
        default "none", seed "cache",
        Maybe(Text { expected: "a cache name", check: any_text, pattern: None, url: false });
    /// Keep results in Redis instead of the store: true, or seconds to keep them.
    cached: Cached = Cached::Off,
        default "`false`", seed "cached", CacheTime;
    /// CPUs per worker, by the seed's rule over this process's CPUs.
    cpu_affinity: Option<usize> = None,
        default "none", seed "cpu_affinity",
        Maybe(whole(1, UNBOUNDED, "a number of CPUs per worker, 1 or more"));
    /// Broker URL: sqlite://FILE, postgres://…, redis://… (rediss://, redis+unix://), sqs://NAME or an SQS queue URL.
    broker: String = super::DEFAULT_DATABASE.into(),
        default "`sqlite://q8s.db`", seed "",
        Text { expected: "a broker URL: sqlite://FILE, postgres://…, redis://… or sqs://…", check: broker_url, pattern: Some("^(sqlite|postgres|postgresql|redis|rediss|redis\\+unix|unix|sqs|https|http):"), url: true };
    /// Result store URL: sqlite://FILE or postgres://….
    store: Option<String> = None,
        default "the SQL broker's database, else `sqlite://q8s.db`", seed "",
        Maybe(Text { expected: "a store URL: sqlite://FILE or postgres://…", check: is_database, pattern: Some("^(sqlite:|postgres://|postgresql://)"), url: true });
    /// Signing keys (16+ characters): the first signs, any verifies.
    secret_key: Vec<String> = Vec::new(),
        default "none", seed "Django's `SECRET_KEY`", Keys;
    /// File with one key per line; `q8s key` and `q8s cluster` create it (mode 0600) when no key is set.
    secret_key_file: Option<PathBuf> = None,
        default "`q8s.key` beside the SQLite store", seed "",
        Maybe(FilePath);
    /// Largest package accepted at enqueue, in bytes.
    max_package_size: usize = crate::package::DEFAULT_MAX_SIZE,
        default "`262144`", seed "",
        whole(1024, 64 * 1024 * 1024, "a size in bytes between 1024 and 67108864");
    /// Globs of programs the `exec` function may run.
    exec_allow: Vec<String> = Vec::new(),
        default "`[]`", seed "", Globs;
    /// Seconds a hook may run; then its program is killed, its request cut off, or it is given up.
    hook_timeout: u64 = 60,
        default "`60`", seed "",
        whole(1, 86_400, "a whole number of seconds, 1 to 86400 (a day)");
    /// Seconds a receipt outlasts the task's own timeout.
    receipt_margin: u64 = 30,
        default "`30`", seed "",
        whole(1, UNBOUNDED, "a whole number of seconds, 1 or more");
    /// Port of /metrics, /healthz and /readyz; 0 turns them off.
    http_port: u16 = 9464,
        default "`9464`", seed "",
        whole(0, 65535, "a TCP port, 0 to 65535");
    /// Address the HTTP endpoints listen on; 0.0.0.0 serves other machines (pods say so).
    http_host: String = "127.0.0.1".into(),
        default "`127.0.0.1`", seed "",
        Text { expected: "an IP address to listen on, e.g. 0.0.0.0 or 127.0.0.1", check: ip_address, pattern: None, url: false };
    /// Redis URL or the seed's connection table (host, port, db, password, unix_socket_path); selects the Redis broker.
    redis: Option<toml::Value> = None,
        default "none", seed "redis",
        Maybe(Inline { keys: &[("host", "string"), ("port", "integer"), ("db", "integer"), ("password", "string"), ("unix_socket_path", "string")] });
    /// The seed's SQS table (aws_region, aws_access_key_id, aws_secret_access_key) plus endpoint_url; selects the SQS broker.
    sqs: Option<toml::Value> = None,
        default "none", seed "sqs",
        Maybe(Inline { keys: &[("aws_region", "string"), ("aws_access_key_id", "string"), ("aws_secret_access_key", "string"), ("endpoint_url", "string")] });
    /// The seed's ORM broker: here, the URL of the SQL broker's database.
    orm: Option<String> = None,
        default "none", seed "orm",
        Maybe(Text { expected: "the URL of the broker's database: sqlite://FILE or postgres://…", check: is_database, pattern: Some("^(sqlite:|postgres://|postgresql://)"), url: true });
    /// Where errors are reported: `{ sentry = { dsn = "https://KEY@HOST/PROJECT" } }` (other reporters are ignored).
    error_reporter: Option<toml::Value> = None,
        default "none", seed "error_reporter",
        Maybe(Inline { keys: &[] });
}

/// Seed options naming brokers q8s does not have: accepted, refused when the broker is chosen.
pub const FOREIGN_BROKER_OPTIONS: &[&str] = &[
    "django_redis",
    "disque_nodes",
    "disque_auth",
    "iron_mq",
    "mongo",
    "mongo_db",
    "broker_class",
];

/// Whether `option` is a declared option or a foreign broker's.
pub fn is_option(option: &str) -> bool {
    OPTIONS.iter().any(|info| info.name == option) || FOREIGN_BROKER_OPTIONS.contains(&option)
}
