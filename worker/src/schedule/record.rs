//! The Schedule record (the seed's model) and what running it when due means.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Kind, Recurrence};
use crate::options::TaskOptions;
use crate::request::TaskRequest;

/// Runs the scheduler starts for one schedule in one check, at most, when catching up.
pub const MAX_RUNS_PER_CHECK: usize = 1000;

/// Why a schedule is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not a schedule type.
    #[error(
        "schedule type {0:?} is not one of once (O), minutes (I), hourly (H), daily (D), weekly (W), monthly (M), quarterly (Q), yearly (Y), cron (C)"
    )]
    BadType(String),
    /// Minutes without a positive `minutes`.
    #[error("a minutes schedule needs --minutes N, 1 or more")]
    NoMinutes,
    /// Cron without an expression, or a bad one.
    #[error("{0}")]
    BadCron(String),
    /// Not an IANA time zone.
    #[error("time zone {0:?} is not an IANA name such as Europe/Berlin or UTC")]
    BadZone(String),
}

/// A schedule: the seed's fields, plus cron, a time zone and pausing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Primary key.
    pub id: i64,
    /// Optional unique name; tasks take it (or the id) as their group.
    pub name: Option<String>,
    /// The function to run.
    pub func: String,
    /// Hook of the tasks it creates.
    pub hook: Option<String>,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// How often it runs.
    #[serde(flatten)]
    pub kind: Kind,
    /// IANA time zone the calendar types and cron follow.
    pub tz: String,
    /// Runs left: -1 (or less) forever and still counting down, 0 never, N that many.
    pub repeats: i64,
    /// The first run; calendar types keep its day and time.
    pub anchor: DateTime<Utc>,
    /// When it runs next.
    pub next_run: DateTime<Utc>,
    /// When it last ran.
    pub last_run: Option<DateTime<Utc>>,
    /// Id of the last task it created.
    pub task: Option<String>,
    /// Options of the tasks it creates (timeout, save, ack_failure…), stored as the seed's `q_options`.
    #[serde(rename = "q_options")]
    pub options: TaskOptions,
    /// Paused schedules do not run until resumed.
    pub paused: bool,
}

impl Schedule {
    /// The group its tasks take: its name, else its id.
    pub fn group(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.id.to_string())
    }

    /// Its timing, checked.
    pub fn recurrence(&self) -> Result<Recurrence, ScheduleError> {
        recurrence(self.kind.clone(), &self.tz, self.anchor)
    }

    /// The request each of its runs enqueues: its function and arguments, its
    /// hook, its name (else id) as the group, then its own task options over them.
    pub fn request(&self) -> TaskRequest {
        let base = TaskOptions {
            hook: self.hook.clone(),
            group: Some(self.group()),
            ..TaskOptions::default()
        };
        TaskRequest {
            func: self.func.clone(),
            args: self.args.clone(),
            kwargs: self.kwargs.clone(),
            options: base.overridden_by(self.options.clone()),
        }
    }
}

/// The timing of a schedule of `kind` in the IANA zone `tz`, first running at `anchor`.
pub fn recurrence(
    kind: Kind,
    tz: &str,
    anchor: DateTime<Utc>,
) -> Result<Recurrence, ScheduleError> {
    let zone: Tz = tz
        .parse()
        .map_err(|_| ScheduleError::BadZone(tz.to_string()))?;
    Ok(Recurrence { kind, anchor, zone })
}

/// What the scheduler does with a due schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The slots to run now, oldest first.
    pub runs: Vec<DateTime<Utc>>,
    /// The schedule's next run afterwards.
    pub next_run: DateTime<Utc>,
    /// Its repeats afterwards.
    pub repeats: i64,
    /// Delete it afterwards (a Once schedule with negative repeats).
    pub delete: bool,
}

/// The runs a due schedule makes at `now`, by the seed's rules.
///
/// With `catch_up`, every missed slot runs (up to `MAX_RUNS_PER_CHECK` at a
/// time; the rest at the next check); without, one run and the next slot after
/// `now`. Repeats count down by the runs made, and keep counting down when
/// negative; a schedule never runs more times than its positive repeats.
pub fn plan(
    schedule: &Schedule,
    recurrence: &Recurrence,
    now: DateTime<Utc>,
    catch_up: bool,
) -> Due {
    let first = schedule.next_run;
    if recurrence.kind == Kind::Once {
        return Due {
            runs: vec![first],
            next_run: first,
            repeats: schedule.repeats - 1,
            delete: schedule.repeats < 0,
        };
    }
    let allowed = if schedule.repeats > 0 {
        usize::try_from(schedule.repeats)
            .unwrap_or(usize::MAX)
            .min(MAX_RUNS_PER_CHECK)
    } else {
        MAX_RUNS_PER_CHECK
    };
    let mut runs = vec![first];
    let mut next = recurrence.next_after(first);
    if catch_up {
        while let Some(slot) = next.filter(|slot| *slot <= now && runs.len() < allowed) {
            runs.push(slot);
            next = recurrence.next_after(slot);
        }
    } else {
        next = recurrence.next_after(now.max(first));
    }
    let repeats = schedule.repeats - runs.len() as i64;
    // A schedule with no slot left (a cron that never matches again) stops.
    let (next_run, repeats) = match next {
        Some(next) => (next, repeats),
        None => (first, 0),
    };
    Due {
        runs,
        next_run,
        repeats,
        delete: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn schedule(kind: Kind, next_run: &str, repeats: i64) -> (Schedule, Recurrence) {
        let schedule = Schedule {
            id: 7,
            name: None,
            func: "math.copysign".into(),
            hook: None,
            args: Vec::new(),
            kwargs: Map::new(),
            kind,
            tz: "UTC".into(),
            repeats,
            anchor: at("2026-01-01T00:00:00Z"),
            next_run: at(next_run),
            last_run: None,
            task: None,
            options: TaskOptions::default(),
            paused: false,
        };
        let recurrence = schedule.recurrence().expect("valid");
        (schedule, recurrence)
    }

    #[test]
    fn catch_up_runs_every_missed_slot_then_resumes_on_time() {
        let (s, r) = schedule(Kind::Hourly, "2026-01-01T00:00:00Z", -1);
        let due = plan(&s, &r, at("2026-01-02T00:30:00Z"), true);
        assert_eq!(
            due.runs.len(),
            25,
            "00:00 on day one through 00:00 on day two"
        );
        assert_eq!(due.next_run, at("2026-01-02T01:00:00Z"));
        assert_eq!(due.repeats, -26, "negative repeats keep counting down");
    }

    #[test]
    fn without_catch_up_it_runs_once_and_resumes_after_now() {
        let (s, r) = schedule(Kind::Hourly, "2026-01-01T00:00:00Z", -1);
        let due = plan(&s, &r, at("2026-01-02T00:30:00Z"), false);
        assert_eq!(due.runs, vec![at("2026-01-01T00:00:00Z")]);
        assert_eq!(due.next_run, at("2026-01-02T01:00:00Z"));
    }

    #[test]
    fn positive_repeats_limit_the_runs_even_when_catching_up() {
        let (s, r) = schedule(Kind::Minutes(15), "2026-01-01T00:00:00Z", 3);
        let due = plan(&s, &r, at("2026-01-01T05:00:00Z"), true);
        assert_eq!(due.runs.len(), 3);
        assert_eq!(due.repeats, 0, "no runs left: it stops");
        assert_eq!(due.runs[2] - due.runs[0], Duration::minutes(30));
    }

    #[test]
    fn once_with_negative_repeats_is_deleted_and_positive_is_kept() {
        let (s, r) = schedule(Kind::Once, "2026-01-01T00:00:00Z", -1);
        let due = plan(&s, &r, at("2026-01-03T00:00:00Z"), true);
        assert_eq!((due.runs.len(), due.delete), (1, true));
        let (s, r) = schedule(Kind::Once, "2026-01-01T00:00:00Z", 1);
        let due = plan(&s, &r, at("2026-01-03T00:00:00Z"), true);
        assert_eq!((due.runs.len(), due.delete, due.repeats), (1, false, 0));
    }

    #[test]
    fn kinds_parse_from_letters_and_names_and_say_what_is_missing() {
        assert_eq!(Kind::from_parts("D", None, None), Ok(Kind::Daily));
        assert_eq!(
            Kind::from_parts("minutes", Some(5), None),
            Ok(Kind::Minutes(5))
        );
        assert_eq!(
            Kind::from_parts("I", None, None),
            Err(ScheduleError::NoMinutes)
        );
        assert!(matches!(
            Kind::from_parts("fortnightly", None, None),
            Err(ScheduleError::BadType(_))
        ));
        assert!(matches!(
            Kind::from_parts("cron", None, None),
            Err(ScheduleError::BadCron(_))
        ));
        let cron = Kind::from_parts("C", None, Some("0 9 * * 1")).expect("cron");
        assert_eq!((cron.letter(), cron.cron()), ("C", Some("0 9 * * 1")));
        assert!(recurrence(Kind::Daily, "Mars/Olympus", at("2026-01-01T00:00:00Z")).is_err());
    }

    #[test]
    fn a_run_takes_the_schedule_hook_and_group_then_its_own_options() {
        let (mut s, _) = schedule(Kind::Hourly, "2026-01-01T00:00:00Z", -1);
        s.hook = Some("myapp.done".into());
        s.options.timeout = Some(30);
        s.options.group = Some("reports".into());
        let request = s.request();
        assert_eq!(request.options.hook.as_deref(), Some("myapp.done"));
        assert_eq!(request.options.group.as_deref(), Some("reports"));
        assert_eq!(request.options.timeout, Some(30));
    }
}
