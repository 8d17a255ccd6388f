//! One function per command: call the client, print the answer.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{EnqueueArgs, Exit, Failure, FailuresCommand, GroupCommand, QueueCommand, say};
use crate::client::{Client, ClientError};
use crate::config::Config;
use crate::options::TaskOptions;
use crate::producer::Producer;
use crate::reader::Reader;
use crate::registry::Registry;
use crate::request::TaskRequest;
use crate::task::{Cached, TaskRecord};

/// Largest `--wait` accepted: a day.
const MAX_WAIT_SECONDS: f64 = 86_400.0;

fn print_json(value: &impl serde::Serialize, pretty: bool) -> Result<(), Failure> {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .map_err(|e| {
        Failure::new(
            Exit::Failed,
            format!("cannot print the result as JSON: {e}"),
        )
    })?;
    say(text)?;
    Ok(())
}

/// An argument is JSON if it parses as JSON, else a string.
pub(super) fn parse_argument(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

pub(super) fn parse_object(flag: &str, text: &str) -> Result<Map<String, Value>, Failure> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Failure::new(
            Exit::Usage,
            format!("{flag} must be a JSON object, e.g. {flag} '{{\"x\": 1}}'; got {text}"),
        )),
    }
}

pub(super) async fn enqueue(
    config: Config,
    registry: Registry,
    args: EnqueueArgs,
) -> Result<Exit, Failure> {
    let mut request = TaskRequest::new(args.func);
    request.args = args.args.iter().map(|a| parse_argument(a)).collect();
    if let Some(kwargs) = &args.kwargs {
        request.kwargs = parse_object("--kwargs", kwargs)?;
    }
    request.options = TaskOptions {
        group: args.group,
        hook: args.hook,
        timeout: args.timeout,
        save: match (args.save, args.no_save) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        sync: args.sync.then_some(true),
        ..TaskOptions::default()
    };
    if let Some(options) = &args.q_options {
        request = request
            .q_options(&parse_object("--q-options", options)?)
            .map_err(|e| Failure::new(Exit::Usage, e.to_string()))?;
    }
    // Only a sync task needs the store; a queued one needs nothing but the broker.
    let id = if request.options.sync.unwrap_or(config.sync) {
        let client = Client::connect_with_registry(config, registry).await?;
        client.enqueue(request).await?
    } else {
        Producer::connect(config).await?.enqueue(request).await?
    };
    say(id)?;
    Ok(Exit::Ok)
}

pub(super) async fn result(config: Config, id: &str, wait: Option<f64>) -> Result<Exit, Failure> {
    let reader = Reader::connect(&config).await?;
    let outcome = match wait {
        Some(seconds) if (0.0..=MAX_WAIT_SECONDS).contains(&seconds) => {
            reader
                .wait_result(id, Duration::from_secs_f64(seconds))
                .await?
        }
        Some(seconds) => {
            return Err(Failure::new(
                Exit::Usage,
                format!(
                    "--wait {seconds}: give a number of seconds between 0 and {MAX_WAIT_SECONDS}"
                ),
            ));
        }
        None => reader.result(id).await?,
    };
    match outcome {
        Some(Ok(value)) => {
            print_json(&value, false)?;
            Ok(Exit::Ok)
        }
        Some(Err(error)) => {
            eprintln!(
                "task {id} failed ({}): {}",
                error.kind.as_str(),
                error.message
            );
            Ok(Exit::Failed)
        }
        None => {
            eprintln!(
                "no result for {id} yet: it has not finished, or it was never enqueued, or its success was not saved (save_limit)"
            );
            Ok(Exit::NoResult)
        }
    }
}

pub(super) async fn fetch(config: Config, id: &str) -> Result<Exit, Failure> {
    // With `cached`, as the seed's fetch(cached=True): the cache alone, so a
    // store this machine cannot reach (each pod's SQLite file) is not opened.
    let cache = if config.cached != Cached::Off {
        crate::broker::result_cache(&config)
            .await
            .map_err(ClientError::from)?
    } else {
        None
    };
    let found = match cache {
        Some(cache) => cache
            .cached_result(id)
            .await
            .map_err(ClientError::from)?
            .and_then(|json| serde_json::from_str::<TaskRecord>(&json).ok()),
        None => Reader::connect(&config).await?.fetch(id).await?,
    };
    match found {
        Some(record) => {
            print_json(&record, true)?;
            Ok(Exit::Ok)
        }
        None => {
            eprintln!("no finished task with id or name {id}");
            Ok(Exit::NoResult)
        }
    }
}

pub(super) async fn group(config: Config, command: GroupCommand) -> Result<Exit, Failure> {
    let reader = Reader::connect(&config).await?;
    match command {
        GroupCommand::Result { group, failures } => {
            print_json(&reader.result_group(&group, failures).await?, false)?
        }
        GroupCommand::Fetch { group, no_failures } => {
            print_json(&reader.fetch_group(&group, !no_failures).await?, true)?
        }
        GroupCommand::Count { group, failures } => {
            say(reader.count_group(&group, failures).await?)?
        }
        GroupCommand::Delete { group, tasks } => say(reader.delete_group(&group, tasks).await?)?,
    }
    Ok(Exit::Ok)
}

pub(super) async fn queue(config: Config, command: QueueCommand) -> Result<Exit, Failure> {
    config.validate()?;
    let broker = crate::broker::connect(&config, None)
        .await
        .map_err(ClientError::from)?
        .queue;
    match command {
        QueueCommand::Size { json } => {
            let waiting = broker.queue_size().await.map_err(ClientError::from)?;
            let in_flight = broker
                .lock_size()
                .await
                .map_err(crate::client::ClientError::from)?;
            if json {
                print_json(
                    &serde_json::json!({ "queued": waiting, "in_flight": in_flight }),
                    false,
                )?;
            } else {
                say(format_args!("{waiting} queued, {in_flight} in flight"))?;
            }
        }
        QueueCommand::Purge => {
            let purged = broker
                .purge_queue()
                .await
                .map_err(crate::client::ClientError::from)?;
            say(purged)?;
        }
    }
    Ok(Exit::Ok)
}

pub(super) async fn failures(config: Config, command: FailuresCommand) -> Result<Exit, Failure> {
    let client = Client::connect(config).await?;
    match command {
        FailuresCommand::List { limit, json } => {
            let failures: Vec<TaskRecord> = client
                .store()
                .failures(limit.max(0))
                .await
                .map_err(crate::client::ClientError::from)?;
            if json {
                print_json(&failures, true)?;
            } else {
                for record in failures {
                    let message = record
                        .outcome()
                        .err()
                        .map(|e| e.message)
                        .unwrap_or_default();
                    say(format_args!(
                        "{}  {}  {}  {}  {}",
                        record.id,
                        record.stopped.format("%Y-%m-%d %H:%M:%S"),
                        record.func,
                        record.error_kind.map_or("failed", |k| k.as_str()),
                        message
                    ))?;
                }
            }
        }
        FailuresCommand::Retry { id } => say(client.retry_failure(&id).await?)?,
    }
    Ok(Exit::Ok)
}

pub(super) fn show_config(config: &Config, toml: bool, schema: bool) -> Result<Exit, Failure> {
    if schema {
        print_json(&Config::schema_value(), true)?;
        return Ok(Exit::Ok);
    }
    if toml {
        // What was set, not this machine's defaults (workers = its CPU count).
        let mut table = config.to_table();
        table.retain(|option, _| config.origins.contains_key(option));
        let text = toml::to_string(&table).map_err(|e| {
            Failure::new(
                Exit::Failed,
                format!("cannot write the configuration as TOML: {e}"),
            )
        })?;
        // Nothing set is an empty document, not an empty line.
        if !text.is_empty() {
            say(text.trim_end())?;
        }
        return Ok(Exit::Ok);
    }
    // Valid TOML too: what is set and shown whole is a line, the rest (unset,
    // or hiding a password or a key) a comment, so the listing loads as a file.
    for entry in config.describe() {
        let origin = config
            .origins
            .get(entry.name)
            .map_or("default".to_string(), |o| o.clone());
        let whole = entry.toml.filter(|value| {
            let plain = match value {
                toml::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            plain == entry.shown
        });
        match whole {
            Some(value) => say(format_args!("{} = {value}    # {origin}", entry.name))?,
            None => say(format_args!(
                "# {} = {}    # {origin}",
                entry.name, entry.shown
            ))?,
        }
    }
    Ok(Exit::Ok)
}

pub(super) async fn migrate(config: &Config) -> Result<Exit, Failure> {
    config.validate()?;
    crate::store::Database::migrate_all(config).await?;
    say(format_args!(
        "q8s's tables are up to date in {}",
        crate::config::redact(&config.store_url())
    ))?;
    Ok(Exit::Ok)
}

pub(super) fn key(config: &Config) -> Result<Exit, Failure> {
    match config.ensure_key_file()? {
        Some(path) => say(path.display())?,
        None => eprintln!("secret_key is set in the configuration: no key file is used"),
    }
    Ok(Exit::Ok)
}

pub(super) fn functions(registry: &Registry) -> Result<Exit, Failure> {
    for name in registry.names() {
        say(name)?;
    }
    Ok(Exit::Ok)
}
