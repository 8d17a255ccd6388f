//! Task options: the seed's per-task settings, one typed set for every way of giving them.
//!
//! `q8s enqueue`'s flags, the seed's `q_options` dict, a schedule's stored
//! options and, next, a QSchedule's spec all read into [`TaskOptions`] and are
//! checked by the same rules with the same messages.

use serde_json::{Map, Value};

use crate::task::{Cached, MAX_TIMEOUT};

/// The names `q_options` takes, in the order the messages list them.
pub const NAMES: &[&str] = &[
    "hook",
    "group",
    "timeout",
    "save",
    "cached",
    "sync",
    "ack_failure",
];

/// Why task options are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// An option with a value it does not take.
    #[error("task option `{option}` must be {expected}")]
    Invalid {
        /// The option.
        option: &'static str,
        /// What it takes.
        expected: &'static str,
    },
    /// A name that is not a task option.
    #[error("q_options: unknown option `{0}`; the options are {names}", names = NAMES.join(", "))]
    Unknown(String),
}

/// A task's own settings; each one unset follows the cluster's configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskOptions {
    /// Called with the finished task: a function, a URL or `exec:PROGRAM`.
    pub hook: Option<String>,
    /// Group label, for the group functions.
    pub group: Option<String>,
    /// Seconds the task may run; overrides the cluster's `timeout`.
    pub timeout: Option<u64>,
    /// Overrides `save_limit` for this task's success.
    pub save: Option<bool>,
    /// Keep the result in the cache: true, or seconds.
    pub cached: Option<Cached>,
    /// Run now, in the enqueuing process.
    pub sync: Option<bool>,
    /// Overrides `ack_failures` for this task.
    pub ack_failure: Option<bool>,
}

impl TaskOptions {
    /// The seed's `q_options` dict, checked.
    pub fn from_q_options(options: &Map<String, Value>) -> Result<TaskOptions, OptionsError> {
        let mut parsed = TaskOptions::default();
        for (key, value) in options {
            let invalid = |option: &'static str, expected: &'static str| OptionsError::Invalid {
                option,
                expected,
            };
            let flag =
                |option: &'static str| value.as_bool().ok_or(invalid(option, "true or false"));
            match key.as_str() {
                "hook" => {
                    let hook = value
                        .as_str()
                        .ok_or(invalid("hook", "a function name, a URL or exec:PROGRAM"))?;
                    parsed.hook = Some(hook.to_string());
                }
                "group" => {
                    parsed.group = Some(
                        value
                            .as_str()
                            .ok_or(invalid("group", "a string"))?
                            .to_string(),
                    )
                }
                "timeout" => {
                    parsed.timeout = Some(
                        value
                            .as_u64()
                            .filter(|t| *t > 0 && *t <= MAX_TIMEOUT)
                            .ok_or(invalid(
                                "timeout",
                                "a whole number of seconds, at most a year",
                            ))?,
                    )
                }
                "save" => parsed.save = Some(flag("save")?),
                "sync" => parsed.sync = Some(flag("sync")?),
                "ack_failure" => parsed.ack_failure = Some(flag("ack_failure")?),
                "cached" => {
                    parsed.cached = Some(match (value.as_bool(), value.as_u64()) {
                        (Some(true), _) => Cached::On,
                        (Some(false), _) => Cached::Off,
                        (None, Some(seconds)) if seconds > 0 => Cached::Seconds(seconds),
                        _ => return Err(invalid("cached", "true, false or seconds")),
                    })
                }
                other => return Err(OptionsError::Unknown(other.to_string())),
            }
        }
        Ok(parsed)
    }

    /// The options as the seed's `q_options` dict, unset ones left out: what a schedule stores.
    pub fn to_q_options(&self) -> Map<String, Value> {
        let mut map = Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                map.insert(key.to_string(), value);
            }
        };
        put("hook", self.hook.clone().map(Value::from));
        put("group", self.group.clone().map(Value::from));
        put("timeout", self.timeout.map(Value::from));
        put("save", self.save.map(Value::from));
        put(
            "cached",
            self.cached.map(|cached| match cached {
                Cached::Off => Value::from(false),
                Cached::On => Value::from(true),
                Cached::Seconds(seconds) => Value::from(seconds),
            }),
        );
        put("sync", self.sync.map(Value::from));
        put("ack_failure", self.ack_failure.map(Value::from));
        map
    }

    /// These options with every option `over` sets taken from it, as `q_options` overrides the single options.
    pub fn overridden_by(self, over: TaskOptions) -> TaskOptions {
        TaskOptions {
            hook: over.hook.or(self.hook),
            group: over.group.or(self.group),
            timeout: over.timeout.or(self.timeout),
            save: over.save.or(self.save),
            cached: over.cached.or(self.cached),
            sync: over.sync.or(self.sync),
            ack_failure: over.ack_failure.or(self.ack_failure),
        }
    }

    /// Checks what `from_q_options` checks, for options set in code.
    pub fn check(&self) -> Result<(), OptionsError> {
        TaskOptions::from_q_options(&self.to_q_options()).map(|_| ())
    }
}

impl serde::Serialize for TaskOptions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_q_options().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for TaskOptions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<TaskOptions, D::Error> {
        let map = Map::deserialize(deserializer)?;
        TaskOptions::from_q_options(&map).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn q_options_round_trip_and_bad_ones_name_the_option() {
        let given = json!({"hook": "exec:/opt/hook", "timeout": 30, "cached": 60, "save": false});
        let options =
            TaskOptions::from_q_options(given.as_object().expect("object")).expect("valid");
        assert_eq!(options.timeout, Some(30));
        assert_eq!(Value::Object(options.to_q_options()), given);
        let bad = json!({"timeout": 0});
        let error =
            TaskOptions::from_q_options(bad.as_object().expect("object")).expect_err("zero");
        assert!(error.to_string().contains("`timeout`"), "{error}");
        let unknown = json!({"retries": 3});
        let error =
            TaskOptions::from_q_options(unknown.as_object().expect("object")).expect_err("unknown");
        assert_eq!(error, OptionsError::Unknown("retries".into()));
        assert_eq!(
            NAMES.len(),
            TaskOptions::default()
                .overridden_by(options)
                .to_q_options()
                .len()
                + 3
        );
    }
}
