//! What an option accepts: one spec per kind of value, read by every view of the options.
//!
//! A spec parses a value as given (with the words that say what it accepts),
//! writes a value back as TOML that it parses again to the same value, shows
//! it for `q8s config`, and describes it as JSON Schema. The parser and the
//! schema read the same bounds, so the command line and the CRD agree.

use std::fmt::Display;
use std::path::PathBuf;

use serde_json::{Map, Value, json};

use super::Cached;
use super::raw::Raw;
use super::urls::redact;

/// How one kind of option value is read, written, shown and described.
pub trait Spec {
    /// The type the option has in [`Config`](super::Config).
    type Value;
    /// Reads a value as given; the error says what the option accepts.
    fn parse(&self, raw: &Raw) -> Result<Self::Value, String>;
    /// The value as TOML that `parse` reads back to the same value; `None` for "not set".
    fn to_toml(&self, value: &Self::Value) -> Option<toml::Value>;
    /// The value as `q8s config` prints it (passwords and keys hidden).
    fn show(&self, value: &Self::Value) -> String;
    /// The JSON Schema of what `parse` accepts from typed input.
    fn schema(&self) -> Map<String, Value>;
    /// A value as given, as an error message may show it (keys hidden, passwords redacted).
    fn show_given(&self, raw: &Raw) -> String {
        raw.shown()
    }
}

fn schema(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// A whole number between `min` and `max`.
#[derive(Debug, Clone, Copy)]
pub struct Whole<T> {
    /// Smallest value accepted.
    pub min: i64,
    /// Largest value accepted.
    pub max: i64,
    /// What the option accepts, in words.
    pub expected: &'static str,
    /// The Rust type the number becomes.
    pub kind: std::marker::PhantomData<T>,
}

/// A whole number from `min` to `max`, described by `expected`.
pub const fn whole<T>(min: i64, max: i64, expected: &'static str) -> Whole<T> {
    Whole {
        min,
        max,
        expected,
        kind: std::marker::PhantomData,
    }
}

impl<T> Spec for Whole<T>
where
    T: TryFrom<i64> + TryInto<i64> + Copy + Display,
{
    type Value = T;
    fn parse(&self, raw: &Raw) -> Result<T, String> {
        raw.integer()
            .filter(|n| (self.min..=self.max).contains(n))
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| self.expected.to_string())
    }
    fn to_toml(&self, value: &T) -> Option<toml::Value> {
        (*value).try_into().ok().map(toml::Value::Integer)
    }
    fn show(&self, value: &T) -> String {
        value.to_string()
    }
    fn schema(&self) -> Map<String, Value> {
        schema(json!({ "type": "integer", "minimum": self.min, "maximum": self.max }))
    }
}

/// A number of seconds, more than `above` and less than (or at most) `below`.
#[derive(Debug, Clone, Copy)]
pub struct Seconds {
    /// Values must be more than this.
    pub above: f64,
    /// Values must be less than this, or at most this when `up_to` is set.
    pub below: f64,
    /// Whether `below` itself is accepted.
    pub up_to: bool,
    /// What the option accepts, in words.
    pub expected: &'static str,
}

impl Spec for Seconds {
    type Value = f64;
    fn parse(&self, raw: &Raw) -> Result<f64, String> {
        raw.float()
            .filter(|f| *f > self.above && (*f < self.below || (self.up_to && *f == self.below)))
            .ok_or_else(|| self.expected.to_string())
    }
    fn to_toml(&self, value: &f64) -> Option<toml::Value> {
        Some(toml::Value::Float(*value))
    }
    fn show(&self, value: &f64) -> String {
        toml::Value::Float(*value).to_string()
    }
    fn schema(&self) -> Map<String, Value> {
        let mut map = schema(json!({ "type": "number", "exclusiveMinimum": self.above }));
        let bound = if self.up_to {
            "maximum"
        } else {
            "exclusiveMaximum"
        };
        map.insert(bound.into(), json!(self.below));
        map
    }
}

/// true or false.
#[derive(Debug, Clone, Copy)]
pub struct Flag;

impl Spec for Flag {
    type Value = bool;
    fn parse(&self, raw: &Raw) -> Result<bool, String> {
        raw.boolean().ok_or_else(|| "true or false".to_string())
    }
    fn to_toml(&self, value: &bool) -> Option<toml::Value> {
        Some(toml::Value::Boolean(*value))
    }
    fn show(&self, value: &bool) -> String {
        value.to_string()
    }
    fn schema(&self) -> Map<String, Value> {
        schema(json!({ "type": "boolean" }))
    }
}

/// Non-empty text that `check` accepts; `secret` hides a URL's password when shown.
#[derive(Debug, Clone, Copy)]
pub struct Text {
    /// What the option accepts, in words.
    pub expected: &'static str,
    /// Whether a value is acceptable.
    pub check: fn(&str) -> bool,
    /// A regular expression the schema gives for the same rule, if it can.
    pub pattern: Option<&'static str>,
    /// A URL whose password `q8s config` hides.
    pub url: bool,
}

impl Spec for Text {
    type Value = String;
    fn parse(&self, raw: &Raw) -> Result<String, String> {
        raw.text()
            .filter(|t| !t.trim().is_empty() && (self.check)(t))
            .ok_or_else(|| self.expected.to_string())
    }
    fn to_toml(&self, value: &String) -> Option<toml::Value> {
        Some(toml::Value::String(value.clone()))
    }
    fn show(&self, value: &String) -> String {
        if self.url {
            redact(value)
        } else {
            value.clone()
        }
    }
    fn show_given(&self, raw: &Raw) -> String {
        match raw.text() {
            Some(text) if self.url => format!("{:?}", redact(&text)),
            _ => raw.shown(),
        }
    }
    fn schema(&self) -> Map<String, Value> {
        let mut map = schema(json!({ "type": "string", "minLength": 1 }));
        if let Some(pattern) = self.pattern {
            map.insert("pattern".into(), json!(pattern));
        }
        map
    }
}

/// An option that may be left unset: `None` until a value is given.
#[derive(Debug, Clone, Copy)]
pub struct Maybe<S>(pub S);

impl<S: Spec> Spec for Maybe<S> {
    type Value = Option<S::Value>;
    fn parse(&self, raw: &Raw) -> Result<Option<S::Value>, String> {
        self.0.parse(raw).map(Some)
    }
    fn to_toml(&self, value: &Option<S::Value>) -> Option<toml::Value> {
        value.as_ref().and_then(|value| self.0.to_toml(value))
    }
    fn show(&self, value: &Option<S::Value>) -> String {
        value
            .as_ref()
            .map_or("none".to_string(), |value| self.0.show(value))
    }
    fn schema(&self) -> Map<String, Value> {
        self.0.schema()
    }
    fn show_given(&self, raw: &Raw) -> String {
        self.0.show_given(raw)
    }
}

/// Secret keys of 16 characters or more: one, or a list whose first signs.
#[derive(Debug, Clone, Copy)]
pub struct Keys;

impl Spec for Keys {
    type Value = Vec<String>;
    fn parse(&self, raw: &Raw) -> Result<Vec<String>, String> {
        let keys = raw
            .strings()
            .filter(|keys| !keys.is_empty())
            .ok_or("a secret key of 16 characters or more, or a list of them")?;
        if keys.iter().any(|key| key.chars().count() < 16) {
            return Err("secret keys of 16 characters or more".into());
        }
        Ok(keys)
    }
    fn to_toml(&self, value: &Vec<String>) -> Option<toml::Value> {
        (!value.is_empty()).then(|| strings(value))
    }
    fn show(&self, value: &Vec<String>) -> String {
        if value.is_empty() {
            "none (from the key file)".into()
        } else {
            format!("{} key(s), hidden", value.len())
        }
    }
    fn show_given(&self, _: &Raw) -> String {
        "(hidden)".into()
    }
    fn schema(&self) -> Map<String, Value> {
        schema(json!({
            "type": "array",
            "minItems": 1,
            "items": { "type": "string", "minLength": 16 }
        }))
    }
}

fn strings(items: &[String]) -> toml::Value {
    toml::Value::Array(items.iter().cloned().map(toml::Value::String).collect())
}

/// Globs of program paths, each one a valid glob.
#[derive(Debug, Clone, Copy)]
pub struct Globs;

impl Spec for Globs {
    type Value = Vec<String>;
    fn parse(&self, raw: &Raw) -> Result<Vec<String>, String> {
        let globs = raw
            .strings()
            .ok_or("a list of program path globs, e.g. [\"/opt/tasks/*\"]")?;
        for glob in &globs {
            globset::Glob::new(glob).map_err(|e| format!("valid globs ({e})"))?;
        }
        Ok(globs)
    }
    fn to_toml(&self, value: &Vec<String>) -> Option<toml::Value> {
        Some(strings(value))
    }
    fn show(&self, value: &Vec<String>) -> String {
        format!("{value:?}")
    }
    fn schema(&self) -> Map<String, Value> {
        schema(json!({ "type": "array", "items": { "type": "string", "minLength": 1 } }))
    }
}

/// A file path.
#[derive(Debug, Clone, Copy)]
pub struct FilePath;

impl Spec for FilePath {
    type Value = PathBuf;
    fn parse(&self, raw: &Raw) -> Result<PathBuf, String> {
        raw.text()
            .filter(|t| !t.trim().is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| "a file path".to_string())
    }
    fn to_toml(&self, value: &PathBuf) -> Option<toml::Value> {
        Some(toml::Value::String(value.display().to_string()))
    }
    fn show(&self, value: &PathBuf) -> String {
        value.display().to_string()
    }
    fn schema(&self) -> Map<String, Value> {
        schema(json!({ "type": "string", "minLength": 1 }))
    }
}

/// The seed's `cached`: true, false, or seconds to keep results.
#[derive(Debug, Clone, Copy)]
pub struct CacheTime;

impl Spec for CacheTime {
    type Value = Cached;
    fn parse(&self, raw: &Raw) -> Result<Cached, String> {
        match (raw.boolean(), raw.integer()) {
            (Some(true), _) => Ok(Cached::On),
            (Some(false), _) => Ok(Cached::Off),
            (None, Some(n)) if n >= 1 => Ok(Cached::Seconds(n as u64)),
            _ => Err("true, false, or a number of seconds to keep results".into()),
        }
    }
    fn to_toml(&self, value: &Cached) -> Option<toml::Value> {
        Some(match value {
            Cached::Off => toml::Value::Boolean(false),
            Cached::On => toml::Value::Boolean(true),
            Cached::Seconds(seconds) => toml::Value::Integer(*seconds as i64),
        })
    }
    fn show(&self, value: &Cached) -> String {
        match value {
            Cached::Off => "false".into(),
            Cached::On => "true".into(),
            Cached::Seconds(seconds) => seconds.to_string(),
        }
    }
    fn schema(&self) -> Map<String, Value> {
        schema(json!({
            "anyOf": [{ "type": "boolean" }, { "type": "integer", "minimum": 1 }]
        }))
    }
}

/// A TOML value passed on as given: a URL or a connection table (it may hold credentials).
#[derive(Debug, Clone, Copy)]
pub struct Inline {
    /// The keys a table may have, for the schema.
    pub keys: &'static [(&'static str, &'static str)],
}

impl Spec for Inline {
    type Value = toml::Value;
    fn parse(&self, raw: &Raw) -> Result<toml::Value, String> {
        match raw.value() {
            value @ (toml::Value::String(_) | toml::Value::Table(_)) => Ok(value),
            _ => Err("a URL or a table of settings".into()),
        }
    }
    fn to_toml(&self, value: &toml::Value) -> Option<toml::Value> {
        Some(value.clone())
    }
    fn show(&self, value: &toml::Value) -> String {
        match value {
            toml::Value::String(url) => redact(url),
            _ => "a table (hidden: it may hold credentials)".into(),
        }
    }
    fn show_given(&self, raw: &Raw) -> String {
        match raw {
            Raw::Toml(toml::Value::Table(_)) => "a table (hidden)".into(),
            _ => match raw.text() {
                Some(text) => format!("{:?}", redact(&text)),
                None => raw.shown(),
            },
        }
    }
    fn schema(&self) -> Map<String, Value> {
        let properties: Map<String, Value> = self
            .keys
            .iter()
            .map(|(key, kind)| (key.to_string(), json!({ "type": kind })))
            .collect();
        schema(json!({
            "anyOf": [
                { "type": "string" },
                { "type": "object", "properties": properties }
            ]
        }))
    }
}
