//! A value as given, before an option's spec reads it.

/// A value as given: typed in a TOML file, or text from the environment or a flag.
#[derive(Debug, Clone)]
pub enum Raw {
    /// From a TOML file or a deserialized table: already typed.
    Toml(toml::Value),
    /// From a `Q8S_*` variable or a `--set` flag: text to be read.
    Text(String),
}

impl Raw {
    /// The value as a person wrote it, for error messages.
    pub fn shown(&self) -> String {
        match self {
            Raw::Toml(toml::Value::String(text)) | Raw::Text(text) => format!("{text:?}"),
            Raw::Toml(value) => value.to_string(),
        }
    }

    /// A string.
    pub fn text(&self) -> Option<String> {
        match self {
            Raw::Text(text) | Raw::Toml(toml::Value::String(text)) => Some(text.clone()),
            Raw::Toml(_) => None,
        }
    }

    /// A whole number.
    pub fn integer(&self) -> Option<i64> {
        match self {
            Raw::Toml(toml::Value::Integer(n)) => Some(*n),
            Raw::Text(text) => text.trim().parse().ok(),
            _ => None,
        }
    }

    /// A number, whole or not.
    pub fn float(&self) -> Option<f64> {
        match self {
            Raw::Toml(toml::Value::Float(f)) => Some(*f),
            Raw::Toml(toml::Value::Integer(n)) => Some(*n as f64),
            Raw::Text(text) => text.trim().parse().ok(),
            _ => None,
        }
    }

    /// true or false; text also takes yes/no, on/off and 1/0.
    pub fn boolean(&self) -> Option<bool> {
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
    pub fn strings(&self) -> Option<Vec<String>> {
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
    pub fn value(&self) -> toml::Value {
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
