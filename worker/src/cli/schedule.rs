//! `q8s schedule create|list|delete|pause|resume`.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use clap::{Args, Subcommand};
use serde_json::Map;

use super::commands::{parse_argument, parse_object};
use super::{Exit, Failure, say};
use crate::config::Config;
use crate::options::TaskOptions;
use crate::schedule::{Kind, Schedule, record};
use crate::store::{Database, Schedules};

/// Schedule commands.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule; prints its id.
    #[command(allow_negative_numbers = true)]
    Create(Box<CreateArgs>),
    /// List schedules with their next run, last run, last success and repeats left.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a schedule.
    Delete {
        /// Schedule id or name.
        id: String,
    },
    /// Pause a schedule: it does not run until resumed.
    Pause {
        /// Schedule id or name.
        id: String,
    },
    /// Resume a paused schedule.
    Resume {
        /// Schedule id or name.
        id: String,
    },
}

/// Options of `q8s schedule create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Dotted function name.
    func: String,
    /// Arguments: each is JSON if it parses as JSON, else a string.
    args: Vec<String>,
    /// once, minutes, hourly, daily, weekly, monthly, quarterly, yearly, cron (or the seed's letters O I H D W M Q Y, and C).
    #[arg(long = "type", value_name = "TYPE")]
    schedule_type: String,
    /// Minutes between runs, for --type minutes.
    #[arg(long)]
    minutes: Option<u32>,
    /// Cron expression (5 fields, or 6 with seconds first), for --type cron.
    #[arg(long)]
    cron: Option<String>,
    /// IANA time zone the calendar types and cron follow.
    #[arg(long, default_value = "UTC")]
    tz: String,
    /// Runs: -1 forever (and counting down), 0 never, N that many. Once with -1 is deleted after it runs.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    repeats: i64,
    /// First run: RFC 3339, or "YYYY-MM-DD HH:MM[:SS]" in --tz. Default: now (cron: its next match).
    #[arg(long, value_name = "TIME")]
    next_run: Option<String>,
    /// A unique name; its tasks take it as their group.
    #[arg(long)]
    name: Option<String>,
    /// Hook of the tasks it creates.
    #[arg(long)]
    hook: Option<String>,
    /// Seconds each run may take.
    #[arg(long)]
    timeout: Option<u64>,
    /// The seed's q_options for each run, as a JSON object (overrides --timeout).
    #[arg(long, value_name = "JSON")]
    q_options: Option<String>,
    /// Keyword arguments as a JSON object.
    #[arg(long, value_name = "JSON")]
    kwargs: Option<String>,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::new(Exit::Usage, message)
}

/// A time as RFC 3339, or as a wall-clock time in `zone`.
fn parse_time(text: &str, zone: Tz) -> Result<DateTime<Utc>, Failure> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let formats = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ];
    let local = formats
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .ok_or_else(|| {
            usage(format!(
                "--next-run {text:?}: give RFC 3339 (2026-11-22T18:00:00Z) or \"2026-11-22 18:00\" in --tz"
            ))
        })?;
    zone.from_local_datetime(&local)
        .earliest()
        .map(|time| time.with_timezone(&Utc))
        .ok_or_else(|| {
            usage(format!(
                "--next-run {text:?} does not exist in {zone} (a daylight-saving gap)"
            ))
        })
}

async fn schedules(config: &Config) -> Result<Schedules, Failure> {
    Ok(Schedules::new(
        Database::connect(&config.store_url()).await?,
    ))
}

async fn find(schedules: &Schedules, id: &str) -> Result<Schedule, Failure> {
    schedules.get(id).await?.ok_or_else(|| {
        Failure::new(
            Exit::NoResult,
            format!("no schedule with id or name {id}; see q8s schedule list"),
        )
    })
}

pub(super) async fn schedule(config: Config, command: ScheduleCommand) -> Result<Exit, Failure> {
    let schedules = schedules(&config).await?;
    match command {
        ScheduleCommand::Create(args) => {
            let id = create(&schedules, *args).await?;
            say(id)?;
        }
        ScheduleCommand::List { json } => list(&schedules, json).await?,
        ScheduleCommand::Delete { id } => {
            let schedule = find(&schedules, &id).await?;
            schedules.delete(schedule.id).await?;
            say(format_args!("deleted schedule {}", schedule.id))?;
        }
        ScheduleCommand::Pause { id } => {
            let schedule = find(&schedules, &id).await?;
            schedules.set_paused(schedule.id, true).await?;
            say(format_args!("paused schedule {}", schedule.id))?;
        }
        ScheduleCommand::Resume { id } => {
            let schedule = find(&schedules, &id).await?;
            schedules.set_paused(schedule.id, false).await?;
            say(format_args!("resumed schedule {}", schedule.id))?;
        }
    }
    Ok(Exit::Ok)
}

async fn create(schedules: &Schedules, args: CreateArgs) -> Result<i64, Failure> {
    let kind = Kind::from_parts(&args.schedule_type, args.minutes, args.cron.as_deref())
        .map_err(|e| usage(e.to_string()))?;
    let zone: Tz = args.tz.parse().map_err(|_| {
        usage(format!(
            "--tz {:?} is not an IANA time zone such as Europe/Berlin or UTC",
            args.tz
        ))
    })?;
    let now = Utc::now();
    let first = match &args.next_run {
        Some(text) => parse_time(text, zone)?,
        None => now,
    };
    let recurrence =
        record::recurrence(kind.clone(), &args.tz, first).map_err(|e| usage(e.to_string()))?;
    // A cron schedule's first run is its first match, not the moment it was made.
    let next_run = match recurrence.kind {
        Kind::Cron(_) => recurrence
            .next_after(first - chrono::Duration::seconds(1))
            .ok_or_else(|| usage("this cron expression never matches"))?,
        _ => first,
    };
    let kwargs = match &args.kwargs {
        Some(text) => parse_object("--kwargs", text)?,
        None => Map::new(),
    };
    let given = match &args.q_options {
        Some(text) => TaskOptions::from_q_options(&parse_object("--q-options", text)?)
            .map_err(|e| usage(e.to_string()))?,
        None => TaskOptions::default(),
    };
    let options = TaskOptions {
        timeout: args.timeout,
        ..TaskOptions::default()
    }
    .overridden_by(given);
    options.check().map_err(|e| usage(e.to_string()))?;
    let schedule = Schedule {
        id: 0,
        name: args.name,
        func: args.func,
        hook: args.hook,
        args: args.args.iter().map(|a| parse_argument(a)).collect(),
        kwargs,
        kind,
        tz: args.tz,
        repeats: args.repeats,
        anchor: next_run,
        next_run,
        last_run: None,
        task: None,
        options,
        paused: false,
    };
    schedules.create(&schedule).await.map_err(|e| {
        let text = e.to_string();
        if text.to_ascii_lowercase().contains("unique") {
            usage("a schedule with that --name exists; pick another name or delete it first")
        } else {
            Failure::from(e)
        }
    })
}

async fn list(schedules: &Schedules, json: bool) -> Result<(), Failure> {
    let all = schedules.list().await?;
    if json {
        let text = serde_json::to_string_pretty(&all)
            .map_err(|e| Failure::new(Exit::Failed, e.to_string()))?;
        say(text)?;
        return Ok(());
    }
    let time = |t: Option<DateTime<Utc>>| {
        t.map_or("-".to_string(), |t| {
            t.format("%Y-%m-%d %H:%M:%S").to_string()
        })
    };
    say(format_args!(
        "{:>5}  {:<16} {:<20} {:<4} {:<19}  {:<19}  {:<7} {:>7}",
        "Id", "Name", "Func", "Type", "Next run (UTC)", "Last run (UTC)", "Success", "Repeats"
    ))?;
    for status in all {
        let s = &status.schedule;
        let state = if s.paused {
            "paused".to_string()
        } else {
            status.success.map_or("-".into(), |ok| ok.to_string())
        };
        say(format_args!(
            "{:>5}  {:<16} {:<20} {:<4} {:<19}  {:<19}  {:<7} {:>7}",
            s.id,
            s.name.as_deref().unwrap_or("-"),
            s.func,
            s.kind.letter(),
            if s.repeats == 0 {
                "-".to_string()
            } else {
                time(Some(s.next_run))
            },
            time(s.last_run),
            state,
            s.repeats
        ))?;
    }
    Ok(())
}
