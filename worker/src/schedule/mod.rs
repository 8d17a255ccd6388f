//! Next-run arithmetic for schedules: pure functions of time, no I/O.
//!
//! A schedule's runs are counted from its *anchor*, its first run. Calendar
//! kinds keep the anchor's wall-clock time and day in the schedule's time zone:
//! a monthly schedule anchored on the 31st runs on the last day of shorter
//! months and on the 31st again where the month has one (the seed drifted to
//! the 28th for good); one anchored on February 29th runs on the 28th in
//! common years. Minutes and Hourly are fixed intervals of real time.
//!
//! Daylight-saving changes neither skip nor double a run. A wall-clock time
//! that occurs twice (clocks go back) runs at its first occurrence; one that
//! does not exist (clocks go forward) runs at the first instant after the gap.
//! Cron follows Vixie cron: fixed-time expressions (neither minute nor hour
//! begins with `*`) behave as above, while the others, and those with a
//! seconds field, run at every real instant that matches, both passes of a
//! repeated hour included, and skip times that do not exist.

pub mod cron;
pub mod record;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

pub use cron::{Cron, CronError};
pub use record::{Due, Schedule, ScheduleError, plan};

/// Longest gap a daylight-saving change leaves in a day, with room to spare.
const LONGEST_GAP: Duration = Duration::hours(3);
/// How far ahead a cron expression is searched for its next match (leap years included).
const CRON_HORIZON_DAYS: i64 = 8 * 366;

/// How often a schedule runs: the seed's types, plus cron; stored as the seed's
/// letter with `minutes` and `cron` beside it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "KindParts", try_from = "KindParts")]
pub enum Kind {
    /// Once, at the anchor.
    Once,
    /// Every `n` minutes.
    Minutes(u32),
    /// Every hour.
    Hourly,
    /// Every day at the anchor's time.
    Daily,
    /// Every week on the anchor's weekday and time.
    Weekly,
    /// Every month on the anchor's day and time.
    Monthly,
    /// Every three months on the anchor's day and time.
    Quarterly,
    /// Every year on the anchor's day and time.
    Yearly,
    /// Whenever a cron expression matches.
    Cron(Cron),
}

/// A [`Kind`] as stored and as given: the type (letter or name), and its minutes or cron.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KindParts {
    /// The seed's letter (`O`, `I`, `H`, `D`, `W`, `M`, `Q`, `Y`, `C`) or the type's name.
    pub schedule_type: String,
    /// Minutes between runs, for the Minutes type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes: Option<u32>,
    /// The expression, for the Cron type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
}

impl Kind {
    /// A kind from its type (the seed's letter or the name, any case) and its minutes or cron.
    pub fn from_parts(
        schedule_type: &str,
        minutes: Option<u32>,
        cron: Option<&str>,
    ) -> Result<Kind, ScheduleError> {
        Ok(match schedule_type.to_ascii_lowercase().as_str() {
            "o" | "once" => Kind::Once,
            "i" | "minutes" => {
                Kind::Minutes(minutes.filter(|m| *m > 0).ok_or(ScheduleError::NoMinutes)?)
            }
            "h" | "hourly" => Kind::Hourly,
            "d" | "daily" => Kind::Daily,
            "w" | "weekly" => Kind::Weekly,
            "m" | "monthly" => Kind::Monthly,
            "q" | "quarterly" => Kind::Quarterly,
            "y" | "yearly" => Kind::Yearly,
            "c" | "cron" => {
                let expression = cron.ok_or_else(|| {
                    ScheduleError::BadCron("a cron schedule needs --cron EXPRESSION".into())
                })?;
                Kind::Cron(
                    Cron::parse(expression).map_err(|e| ScheduleError::BadCron(e.to_string()))?,
                )
            }
            _ => return Err(ScheduleError::BadType(schedule_type.to_string())),
        })
    }

    /// The seed's letter.
    pub fn letter(&self) -> &'static str {
        match self {
            Kind::Once => "O",
            Kind::Minutes(_) => "I",
            Kind::Hourly => "H",
            Kind::Daily => "D",
            Kind::Weekly => "W",
            Kind::Monthly => "M",
            Kind::Quarterly => "Q",
            Kind::Yearly => "Y",
            Kind::Cron(_) => "C",
        }
    }

    /// Minutes between runs, for the Minutes type.
    pub fn minutes(&self) -> Option<u32> {
        match self {
            Kind::Minutes(n) => Some(*n),
            _ => None,
        }
    }

    /// The expression, for the Cron type.
    pub fn cron(&self) -> Option<&str> {
        match self {
            Kind::Cron(cron) => Some(cron.expression()),
            _ => None,
        }
    }
}

impl From<Kind> for KindParts {
    fn from(kind: Kind) -> KindParts {
        KindParts {
            schedule_type: kind.letter().to_string(),
            minutes: kind.minutes(),
            cron: kind.cron().map(str::to_string),
        }
    }
}

impl TryFrom<KindParts> for Kind {
    type Error = ScheduleError;
    fn try_from(parts: KindParts) -> Result<Kind, ScheduleError> {
        Kind::from_parts(&parts.schedule_type, parts.minutes, parts.cron.as_deref())
    }
}

/// A schedule's timing: its kind, its first run and its time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurrence {
    /// How often.
    pub kind: Kind,
    /// The first run; calendar kinds keep its day and wall-clock time.
    pub anchor: DateTime<Utc>,
    /// The zone whose wall clock calendar kinds and cron follow.
    pub zone: Tz,
}

impl Recurrence {
    /// The first run strictly after `after`; `None` when there is none.
    ///
    /// The anchor itself is a run: before it, the anchor is the next run.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if let Kind::Cron(cron) = &self.kind {
            return next_cron(
                cron,
                self.zone,
                after.max(self.anchor - Duration::seconds(1)),
            );
        }
        if after < self.anchor {
            return Some(self.anchor);
        }
        match &self.kind {
            Kind::Once => None,
            Kind::Minutes(n) => Some(self.every(Duration::minutes(i64::from((*n).max(1))), after)),
            Kind::Hourly => Some(self.every(Duration::hours(1), after)),
            Kind::Daily => self.by_days(1, after),
            Kind::Weekly => self.by_days(7, after),
            Kind::Monthly => self.by_months(1, after),
            Kind::Quarterly => self.by_months(3, after),
            Kind::Yearly => self.by_months(12, after),
            Kind::Cron(_) => None,
        }
    }

    /// Fixed intervals of real time from the anchor.
    fn every(&self, step: Duration, after: DateTime<Utc>) -> DateTime<Utc> {
        let elapsed = (after - self.anchor).num_seconds();
        let steps = elapsed.div_euclid(step.num_seconds()) + 1;
        self.anchor + step * i32::try_from(steps).unwrap_or(i32::MAX)
    }

    fn local_anchor(&self) -> NaiveDateTime {
        self.anchor.with_timezone(&self.zone).naive_local()
    }

    /// The anchor's wall-clock time, `days` days apart, first after `after`.
    fn by_days(&self, days: i64, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let anchor = self.local_anchor();
        let local_after = after.with_timezone(&self.zone).naive_local();
        let estimate = (local_after.date() - anchor.date())
            .num_days()
            .div_euclid(days);
        (estimate - 1..=estimate + 2)
            .filter(|k| *k >= 0)
            .filter_map(|k| resolve(self.zone, anchor + Duration::days(k * days)))
            .find(|run| *run > after)
    }

    /// The anchor's day (clamped to the month's length) and time, `months` months apart.
    fn by_months(&self, months: i64, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let anchor = self.local_anchor();
        let local_after = after.with_timezone(&self.zone).naive_local();
        let month_index = |date: NaiveDate| i64::from(date.year()) * 12 + i64::from(date.month0());
        let estimate =
            (month_index(local_after.date()) - month_index(anchor.date())).div_euclid(months);
        (estimate - 1..=estimate + 2)
            .filter(|k| *k >= 0)
            .filter_map(|k| {
                let index = month_index(anchor.date()) + k * months;
                let year = i32::try_from(index.div_euclid(12)).ok()?;
                let month = u32::try_from(index.rem_euclid(12)).ok()? + 1;
                let day = anchor.day().min(days_in_month(year, month));
                let date = NaiveDate::from_ymd_opt(year, month, day)?;
                resolve(self.zone, date.and_time(anchor.time()))
            })
            .find(|run| *run > after)
    }
}

/// Every IANA time zone name schedules take, for schemas that list them.
pub fn zone_names() -> Vec<&'static str> {
    chrono_tz::TZ_VARIANTS
        .iter()
        .map(|zone| zone.name())
        .collect()
}

/// Days in `month` of `year`.
pub fn days_in_month(year: i32, month: u32) -> u32 {
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(next_year, next_month, 1)
        .and_then(|first| first.pred_opt())
        .map_or(28, |last| last.day())
}

/// The instant a wall-clock time names in `zone`: its first occurrence when it
/// occurs twice, the first instant after the gap when it does not exist.
fn resolve(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(time) => Some(time.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, second) => Some(first.min(second).with_timezone(&Utc)),
        LocalResult::None => gap_end(zone, local),
    }
}

/// The first instant after the daylight-saving gap that swallowed `local`:
/// the first wall-clock minute after it that exists (transitions fall on minutes).
fn gap_end(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let mut probe = local.with_second(0)?;
    while probe - local <= LONGEST_GAP {
        probe += Duration::minutes(1);
        if let Some(time) = zone.from_local_datetime(&probe).earliest() {
            return Some(time.with_timezone(&Utc));
        }
    }
    None
}

/// The first instant after `after` that `cron` matches in `zone`.
fn next_cron(cron: &Cron, zone: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Wall-clock order and real-time order differ inside a repeated hour, so
    // the walk starts a little before `after` and keeps the earliest instant.
    let start = after.with_timezone(&zone).naive_local() - LONGEST_GAP;
    let mut best: Option<DateTime<Utc>> = None;
    let mut date = start.date();
    let last = start.date() + Duration::days(CRON_HORIZON_DAYS);
    while date <= last {
        if let Some(found) = best {
            // Nothing on a later wall-clock day can come before what was found.
            if date.and_hms_opt(0, 0, 0)? > found.with_timezone(&zone).naive_local() + LONGEST_GAP {
                return Some(found);
            }
        }
        if cron.date(date) {
            for instant in day_matches(cron, zone, date) {
                if instant > after && best.is_none_or(|found| instant < found) {
                    best = Some(instant);
                }
            }
        }
        date = date.succ_opt()?;
    }
    best
}

/// The instants on `date` (a wall-clock day in `zone`) that `cron` runs at.
fn day_matches(cron: &Cron, zone: Tz, date: NaiveDate) -> Vec<DateTime<Utc>> {
    let mut instants = Vec::new();
    for hour in (0..24).filter(|h| cron.hour(*h)) {
        for minute in (0..60).filter(|m| cron.minute(*m)) {
            for second in (0..60).filter(|s| cron.second(*s)) {
                let Some(local) = date.and_hms_opt(hour, minute, second) else {
                    continue;
                };
                match zone.from_local_datetime(&local) {
                    LocalResult::Single(time) => instants.push(time.with_timezone(&Utc)),
                    LocalResult::Ambiguous(first, second) if cron.follows_real_time() => {
                        instants.push(first.with_timezone(&Utc));
                        instants.push(second.with_timezone(&Utc));
                    }
                    LocalResult::Ambiguous(first, second) => {
                        instants.push(first.min(second).with_timezone(&Utc));
                    }
                    LocalResult::None if cron.follows_real_time() => {}
                    LocalResult::None => instants.extend(gap_end(zone, local)),
                }
            }
        }
    }
    instants
}

#[cfg(test)]
mod tests;
