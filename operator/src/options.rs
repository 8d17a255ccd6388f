//! The engine's cluster options as a QCluster spec carries them: camelCase, from the one declaration.
//!
//! Every option `q8s` declares reaches the CRD, under its camelCase name with
//! the declaration's type, bounds, default and doc, unless the operator owns
//! it (connections, keys, HTTP: see [`OWNED_BY_THE_OPERATOR`]). A spec's
//! options are read back into a [`q8s::Config`] by the same parser and rules
//! as `q8s.toml`, so the CRD and the command line agree on what is valid.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

/// Options the operator sets itself, so a spec never carries them: connection
/// details come from Secrets, the queue name from `spec.name`, HTTP from the pod.
pub const OWNED_BY_THE_OPERATOR: &[(&str, &str)] = &[
    ("name", "spec.name, else metadata.name"),
    ("broker", "spec.broker, from a Secret"),
    ("store", "spec.store, from a Secret"),
    ("secret_key", "spec.signingKey, a Secret"),
    ("secret_key_file", "spec.signingKey, a Secret"),
    ("redis", "spec.broker, from a Secret"),
    ("sqs", "spec.broker, from a Secret"),
    ("orm", "spec.broker, from a Secret"),
    ("http_host", "0.0.0.0 in the pod"),
    ("http_port", "the pod's metrics port"),
    (
        "sync",
        "a cluster never runs tasks in the enqueuing process",
    ),
    ("cache", "Django's cache name; no effect in q8s"),
    (
        "error_reporter",
        "a Sentry DSN is a secret: give it to the pods with spec.env (SENTRY_DSN)",
    ),
];

/// An option's camelCase name, as the spec spells it.
pub fn camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn in_the_spec(name: &str) -> bool {
    !OWNED_BY_THE_OPERATOR
        .iter()
        .any(|(owned, _)| *owned == name)
}

/// The schema of each option the spec carries, by camelCase name, in the
/// dialect of Kubernetes' structural schemas (boolean `exclusiveMinimum`).
pub fn option_schemas() -> Map<String, Value> {
    let declared = q8s::Config::schema_value();
    let mut properties = Map::new();
    if let Some(all) = declared["properties"].as_object() {
        for (name, schema) in all {
            if in_the_spec(name) {
                properties.insert(camel_case(name), structural(schema.clone()));
            }
        }
    }
    properties
}

/// JSON Schema's numeric `exclusiveMinimum`/`exclusiveMaximum` as OpenAPI v3's
/// booleans; a choice of types (`cached`: true or seconds), which a structural
/// schema cannot state, as any value.
fn structural(mut schema: Value) -> Value {
    if let Some(object) = schema.as_object_mut()
        && object.remove("anyOf").is_some()
    {
        // CEL cannot see an untyped field: the engine's parser judges it when
        // the reconciler builds, and a bad value stalls the QCluster naming it.
        object.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
        return schema;
    }
    if let Some(object) = schema.as_object_mut() {
        for (exclusive, bound) in [
            ("exclusiveMinimum", "minimum"),
            ("exclusiveMaximum", "maximum"),
        ] {
            if let Some(limit) = object.remove(exclusive) {
                object.insert(bound.into(), limit);
                object.insert(exclusive.into(), Value::Bool(true));
            }
        }
        // u64 bounds beyond what an apiserver's int64 takes say nothing useful.
        if object.get("maximum").and_then(Value::as_i64) == Some(i64::MAX) {
            object.remove("maximum");
        }
    }
    schema
}

/// The CEL rules that span options, with the declaration's defaults for unset ones.
pub fn cross_option_rules() -> Vec<Value> {
    let defaults = q8s::Config::default();
    vec![json!({
        "rule": format!(
            "!has(self.timeout) || (has(self.retry) ? self.retry : {}) >= self.timeout + (has(self.receiptMargin) ? self.receiptMargin : {})",
            defaults.retry, defaults.receipt_margin
        ),
        "message": "retry must be at least timeout + receiptMargin: a cluster cut off from its broker would see a running task delivered again",
        "fieldPath": ".retry",
        "reason": "FieldValueInvalid"
    })]
}

/// The options of a spec, as given (camelCase keys).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ClusterOptions(pub Map<String, Value>);

impl JsonSchema for ClusterOptions {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ClusterOptions".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        Schema::try_from(json!({
            "type": "object",
            "properties": option_schemas(),
        }))
        .unwrap_or_default()
    }
}

impl ClusterOptions {
    /// The engine's configuration these options make, checked by the engine's
    /// own rules; `origin` says where they came from in error messages.
    pub fn config(&self, origin: &str) -> Result<q8s::Config, q8s::ConfigError> {
        q8s::Config::from_table(self.table(origin)?, origin)
    }

    /// The options as `q8s.toml` names them (snake_case), not yet checked.
    pub fn table(&self, origin: &str) -> Result<toml::Table, q8s::ConfigError> {
        let names: Vec<(String, &'static str)> = q8s::config::OPTIONS
            .iter()
            .map(|option| (camel_case(option.name), option.name))
            .collect();
        let mut table = toml::Table::new();
        for (key, value) in &self.0 {
            let name = names
                .iter()
                .find(|(camel, _)| camel == key)
                .map_or(key.clone(), |(_, name)| name.to_string());
            let value = toml::Value::try_from(value).map_err(|e| q8s::ConfigError::Invalid {
                option: key.clone(),
                origin: origin.to_string(),
                value: value.to_string(),
                expected: format!("a value TOML can hold ({e})"),
            })?;
            table.insert(name, value);
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_option_is_in_the_spec_or_owned_by_the_operator() {
        let schemas = option_schemas();
        for option in q8s::config::OPTIONS {
            let camel = camel_case(option.name);
            assert!(
                schemas.contains_key(&camel) == in_the_spec(option.name),
                "{} is neither in the spec nor owned by the operator",
                option.name
            );
        }
        for (owned, _) in OWNED_BY_THE_OPERATOR {
            assert!(
                q8s::config::OPTIONS
                    .iter()
                    .any(|option| option.name == *owned),
                "{owned} is owned by the operator but not a declared option"
            );
        }
        assert_eq!(camel_case("max_attempts"), "maxAttempts");
        assert!(schemas.contains_key("hookTimeout"));
        assert_eq!(schemas["workers"]["minimum"], 1);
        assert_eq!(schemas["poll"]["exclusiveMinimum"], true);
    }

    #[test]
    fn spec_options_are_read_by_the_engine_rules() {
        let given = json!({"workers": 3, "maxAttempts": 2, "timeout": 20});
        let options: ClusterOptions = serde_json::from_value(given).expect("options");
        let config = options.config("in QCluster demo").expect("valid");
        assert_eq!((config.workers, config.max_attempts), (3, 2));
        let bad: ClusterOptions =
            serde_json::from_value(json!({"timeout": 90, "retry": 60})).expect("options");
        let error = bad.config("in QCluster demo").expect_err("retry too short");
        assert!(error.to_string().contains("set retry to 120"), "{error}");
    }
}
