//! Cron expressions: five fields, or six with seconds first, or a macro.
//!
//! ```text
//! [second] minute hour day-of-month month day-of-week
//! ```
//!
//! Each field takes `*`, numbers, ranges `a-b`, lists `a,b`, steps `*/n` and
//! `a-b/n`; months and weekdays also take names (`JAN`, `MON`); day-of-week 0
//! and 7 are Sunday. Day-of-month also takes `L` (the last day), `LW` (the
//! last weekday) and `15W` (the weekday nearest the 15th, in the month);
//! day-of-week takes `5L` (the month's last Friday) and `5#3` (its third
//! Friday). `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily`
//! (`@midnight`) and `@hourly` stand for their usual expressions.
//!
//! As in Vixie cron, a day field that begins with `*` (`*/2` included) does
//! not restrict the other: the day must match both fields. Only when both
//! are restricted does a day matching either run.

use std::fmt;

use chrono::{Datelike, NaiveDate, Weekday};

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u32,
    days: u32,
    /// `L` in day-of-month: the month's last day.
    last_day: bool,
    /// `LW` in day-of-month: the month's last weekday.
    last_weekday: bool,
    /// `nW` in day-of-month, as bits of n: the weekday nearest the nth.
    nearest_weekday: u32,
    months: u16,
    weekdays: u8,
    /// `dL` in day-of-week, as bits of d: the month's last such day.
    last_of_month: u8,
    /// `d#n` in day-of-week: the nth such day of the month.
    nth_of_month: Vec<(u32, u32)>,
    /// A day field begins with `*` (or `?`): the day must match both fields.
    day_and: bool,
    /// Minute or hour begins with `*`, or there is a seconds field: the
    /// expression follows real time, not the wall clock, across daylight saving.
    real_time: bool,
    source: String,
}

/// The macros and what they stand for.
const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// Why an expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cron expression {expression:?}: {reason}")]
pub struct CronError {
    /// The expression as given.
    pub expression: String,
    /// What is wrong with it.
    pub reason: String,
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field's allowed range and names.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value of the first name (1 for months, 0 for weekdays).
    names_from: u32,
}

const SECOND: FieldSpec = FieldSpec {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
    names_from: 0,
};
const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    names_from: 0,
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    names_from: 0,
};
const DAY: FieldSpec = FieldSpec {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
    names_from: 0,
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTH_NAMES,
    names_from: 1,
};
const WEEKDAY: FieldSpec = FieldSpec {
    name: "day of week",
    min: 0,
    max: 7,
    names: &WEEKDAY_NAMES,
    names_from: 0,
};

impl Cron {
    /// Parses five fields (minute first), six (second first), or a macro.
    pub fn parse(expression: &str) -> Result<Cron, CronError> {
        let error = |reason: String| CronError {
            expression: expression.to_string(),
            reason,
        };
        let trimmed = expression.trim();
        let fields_text = if trimmed.starts_with('@') {
            MACROS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(trimmed))
                .map(|(_, fields)| *fields)
                .ok_or_else(|| {
                    error(
                        "is not a macro; the macros are @yearly, @annually, @monthly, @weekly, \
                         @daily, @midnight and @hourly"
                            .into(),
                    )
                })?
        } else {
            trimmed
        };
        let fields: Vec<&str> = fields_text.split_whitespace().collect();
        let (second, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(error(format!(
                    "has {n} fields; give 5 (minute hour day month weekday) or 6 (second first)"
                )));
            }
        };
        let seconds = parse_field(second, &SECOND).map_err(error)?;
        let minutes = parse_field(rest[0], &MINUTE).map_err(error)?;
        let hours = parse_field(rest[1], &HOUR).map_err(error)?;
        let day_field = parse_days(rest[2]).map_err(error)?;
        let months = parse_field(rest[3], &MONTH).map_err(error)?;
        let weekday_field = parse_weekdays(rest[4]).map_err(error)?;
        let starred = |field: &str| field.starts_with('*') || field.starts_with('?');
        Ok(Cron {
            seconds,
            minutes,
            hours: hours as u32,
            days: day_field.days,
            last_day: day_field.last_day,
            last_weekday: day_field.last_weekday,
            nearest_weekday: day_field.nearest,
            months: months as u16,
            weekdays: weekday_field.weekdays,
            last_of_month: weekday_field.last_of_month,
            nth_of_month: weekday_field.nth,
            day_and: starred(rest[2]) || starred(rest[4]),
            real_time: fields.len() == 6 || starred(rest[0]) || starred(rest[1]),
            source: trimmed.to_string(),
        })
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.source
    }

    /// Whether the expression follows real time across daylight saving (its
    /// minute or hour begins with `*`, or it has seconds): it runs at every
    /// real instant that matches, both passes of a repeated hour included,
    /// and skips wall-clock times that do not exist. Otherwise it is a
    /// fixed-time job: one run per wall-clock time, a skipped one just after the gap.
    pub fn follows_real_time(&self) -> bool {
        self.real_time
    }

    /// Whether second `s` matches.
    pub fn second(&self, s: u32) -> bool {
        self.seconds & (1 << s) != 0
    }

    /// Whether minute `m` matches.
    pub fn minute(&self, m: u32) -> bool {
        self.minutes & (1 << m) != 0
    }

    /// Whether hour `h` matches.
    pub fn hour(&self, h: u32) -> bool {
        self.hours & (1 << h) != 0
    }

    /// Whether a date matches: its month, then the day fields by Vixie cron's rule.
    pub fn date(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let (year, month, day) = (date.year(), date.month(), date.day());
        let length = super::days_in_month(year, month);
        let by_day = self.days & (1 << day) != 0
            || (self.last_day && day == length)
            || (self.last_weekday && day == last_weekday(year, month))
            || (self.nearest_weekday != 0
                && (1..=31)
                    .filter(|n| self.nearest_weekday & (1 << n) != 0)
                    .any(|n| nearest_weekday(year, month, n) == Some(day)));
        let weekday = date.weekday().num_days_from_sunday();
        let by_weekday = self.weekdays & (1 << weekday) != 0
            || (self.last_of_month & (1 << weekday) != 0 && day + 7 > length)
            || self.nth_of_month.contains(&(weekday, day.div_ceil(7)));
        if self.day_and {
            by_day && by_weekday
        } else {
            by_day || by_weekday
        }
    }
}

/// The last Monday-to-Friday day of a month.
fn last_weekday(year: i32, month: u32) -> u32 {
    let length = super::days_in_month(year, month);
    (length - 2..=length)
        .rev()
        .find(|day| is_weekday(year, month, *day))
        .unwrap_or(length)
}

fn is_weekday(year: i32, month: u32, day: u32) -> bool {
    NaiveDate::from_ymd_opt(year, month, day)
        .is_some_and(|date| !matches!(date.weekday(), Weekday::Sat | Weekday::Sun))
}

/// The Monday-to-Friday day nearest the `n`th, within the month (`nW`); none
/// when the month has no `n`th.
fn nearest_weekday(year: i32, month: u32, n: u32) -> Option<u32> {
    let length = super::days_in_month(year, month);
    if n > length {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year, month, n)?;
    Some(match date.weekday() {
        Weekday::Sat if n == 1 => 3,
        Weekday::Sat => n - 1,
        Weekday::Sun if n == length => n - 2,
        Weekday::Sun => n + 1,
        _ => n,
    })
}

/// A day-of-month field: its plain days and its `L`, `LW` and `nW` items.
struct DayField {
    days: u32,
    last_day: bool,
    last_weekday: bool,
    nearest: u32,
}

fn parse_days(text: &str) -> Result<DayField, String> {
    let mut field = DayField {
        days: 0,
        last_day: false,
        last_weekday: false,
        nearest: 0,
    };
    for item in text.split(',') {
        let upper = item.to_ascii_uppercase();
        if upper == "L" {
            field.last_day = true;
        } else if upper == "LW" {
            field.last_weekday = true;
        } else if let Some(n) = upper.strip_suffix('W') {
            let n = parse_value(n, &DAY)
                .map_err(|e| format!("{e} (in {item:?}: nW is the weekday nearest the nth)"))?;
            field.nearest |= 1 << n;
        } else {
            field.days |= parse_field(item, &DAY)? as u32;
        }
    }
    Ok(field)
}

/// A day-of-week field: its plain weekdays and its `dL` and `d#n` items.
struct WeekdayField {
    weekdays: u8,
    last_of_month: u8,
    nth: Vec<(u32, u32)>,
}

fn parse_weekdays(text: &str) -> Result<WeekdayField, String> {
    let mut field = WeekdayField {
        weekdays: 0,
        last_of_month: 0,
        nth: Vec::new(),
    };
    let weekday = |text: &str| parse_value(text, &WEEKDAY).map(|d| d % 7);
    for item in text.split(',') {
        let upper = item.to_ascii_uppercase();
        if upper == "L" {
            return Err(
                "day of week field: L needs a day before it: 5L is the month's last Friday".into(),
            );
        } else if let Some(day) = upper.strip_suffix('L') {
            field.last_of_month |= 1 << weekday(day)?;
        } else if let Some((day, n)) = upper.split_once('#') {
            let n: u32 = n
                .parse()
                .ok()
                .filter(|n| (1..=5).contains(n))
                .ok_or_else(|| {
                    format!("day of week field: {item:?}: the number after # is 1 to 5")
                })?;
            field.nth.push((weekday(day)?, n));
        } else {
            let mut bits = parse_field(item, &WEEKDAY)?;
            if bits & (1 << 7) != 0 {
                bits |= 1;
            }
            field.weekdays |= (bits & 0x7f) as u8;
        }
    }
    Ok(field)
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    let upper = text.to_ascii_uppercase();
    if let Some(index) = spec.names.iter().position(|name| *name == upper) {
        return Ok(index as u32 + spec.names_from);
    }
    let value: u32 = text
        .parse()
        .map_err(|_| format!("{} field: {text:?} is not a number", spec.name))?;
    if value < spec.min || value > spec.max {
        return Err(format!(
            "{} field: {value} is outside {}-{}",
            spec.name, spec.min, spec.max
        ));
    }
    Ok(value)
}

/// The field as a bit set of allowed values.
fn parse_field(text: &str, spec: &FieldSpec) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("{} field: step {step:?} must be 1 or more", spec.name)
                })?;
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range == "*" || range == "?" {
            (spec.min, spec.max)
        } else if let Some((low, high)) = range.split_once('-') {
            (parse_value(low, spec)?, parse_value(high, spec)?)
        } else {
            let value = parse_value(range, spec)?;
            // `5/15` means from 5 to the end, every 15.
            (value, if part.contains('/') { spec.max } else { value })
        };
        if low > high {
            return Err(format!(
                "{} field: range {low}-{high} runs backwards",
                spec.name
            ));
        }
        for value in (low..=high).step_by(step as usize) {
            bits |= 1 << value;
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(year: i32, month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, month, day).expect("a date")
    }

    #[test]
    fn parses_the_usual_forms() {
        let cron = Cron::parse("*/15 9-17 * JAN-MAR MON-FRI").expect("parses");
        assert!(cron.minute(0) && cron.minute(45) && !cron.minute(10));
        assert!(cron.hour(9) && cron.hour(17) && !cron.hour(18));
        // 2026-02-10 is a Tuesday, 2026-04-14 a Tuesday, 2026-02-08 a Sunday.
        assert!(cron.date(on(2026, 2, 10)) && !cron.date(on(2026, 4, 14)));
        assert!(!cron.date(on(2026, 2, 8)));
        assert!(cron.second(0) && !cron.second(1));
        let seconds = Cron::parse("*/10 * * * * *").expect("six fields");
        assert!(seconds.second(20) && !seconds.second(25));
        assert!(
            Cron::parse("0 0 * * 7")
                .expect("sunday as 7")
                .date(on(2026, 2, 8))
        );
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        let cron = Cron::parse("0 0 13 * FRI").expect("parses");
        assert!(cron.date(on(2026, 5, 13)), "the 13th, a Wednesday");
        assert!(cron.date(on(2026, 5, 8)), "a Friday, the 8th");
        assert!(!cron.date(on(2026, 5, 6)));
    }

    #[test]
    fn a_day_field_that_begins_with_a_star_restricts_nothing_so_both_must_match() {
        // Vixie cron: */2 in day-of-month is "starred", so day AND weekday.
        let cron = Cron::parse("0 0 */2 * 1").expect("parses");
        assert!(cron.date(on(2026, 6, 1)), "the 1st, a Monday");
        assert!(!cron.date(on(2026, 6, 8)), "a Monday, but the 8th");
        assert!(!cron.date(on(2026, 6, 3)), "the 3rd, but a Wednesday");
        let cron = Cron::parse("0 0 1,15 * */2").expect("parses");
        assert!(cron.date(on(2026, 11, 1)), "the 1st, a Sunday (weekday 0)");
        assert!(
            cron.date(on(2026, 9, 15)),
            "the 15th, a Tuesday (weekday 2)"
        );
        assert!(!cron.date(on(2026, 6, 1)), "the 1st, but a Monday");
        assert!(!cron.date(on(2026, 6, 2)), "a Tuesday, but the 2nd");
    }

    #[test]
    fn last_nearest_and_nth_days() {
        let last = Cron::parse("0 9 L * *").expect("L");
        assert!(last.date(on(2026, 2, 28)) && last.date(on(2028, 2, 29)));
        assert!(!last.date(on(2028, 2, 28)));
        // 2026-05-31 is a Sunday: the last weekday of May is Friday the 29th.
        let last_weekday = Cron::parse("0 9 LW * *").expect("LW");
        assert!(last_weekday.date(on(2026, 5, 29)) && !last_weekday.date(on(2026, 5, 31)));
        // 2026-08-15 is a Saturday: 15W is Friday the 14th; 2026-08-01 is a Saturday: 1W is Monday the 3rd.
        let nearest = Cron::parse("0 9 15W,1W * *").expect("W");
        assert!(nearest.date(on(2026, 8, 14)) && !nearest.date(on(2026, 8, 15)));
        assert!(nearest.date(on(2026, 8, 3)) && !nearest.date(on(2026, 8, 1)));
        // 2026-05: Fridays are 1, 8, 15, 22, 29.
        let third = Cron::parse("0 9 * * 5#3").expect("#");
        assert!(third.date(on(2026, 5, 15)) && !third.date(on(2026, 5, 22)));
        let last_friday = Cron::parse("0 9 * * FRIL").expect("dL");
        assert!(last_friday.date(on(2026, 5, 29)) && !last_friday.date(on(2026, 5, 22)));
    }

    #[test]
    fn macros_stand_for_their_expressions() {
        for (name, fields) in MACROS {
            let from_macro = Cron::parse(name).expect("a macro");
            let expanded = Cron::parse(fields).expect("its expression");
            assert_eq!(from_macro.minutes, expanded.minutes, "{name}");
            assert_eq!(
                from_macro.date(on(2026, 1, 1)),
                expanded.date(on(2026, 1, 1))
            );
            assert_eq!(from_macro.expression(), name);
        }
        assert!(Cron::parse("@hourly").expect("hourly").follows_real_time());
        assert!(!Cron::parse("@daily").expect("daily").follows_real_time());
        let error = Cron::parse("@fortnightly").expect_err("no such macro");
        assert!(error.reason.contains("@midnight"), "{error}");
    }

    #[test]
    fn fixed_time_means_neither_minute_nor_hour_begins_with_a_star() {
        assert!(
            !Cron::parse("30 2 * * *")
                .expect("fixed")
                .follows_real_time()
        );
        assert!(
            !Cron::parse("0,30 1-3 * * *")
                .expect("fixed")
                .follows_real_time()
        );
        assert!(
            Cron::parse("*/15 2 * * *")
                .expect("starred minute")
                .follows_real_time()
        );
        assert!(
            Cron::parse("0 */2 * * *")
                .expect("starred hour")
                .follows_real_time()
        );
        assert!(
            Cron::parse("0 30 2 * * *")
                .expect("seconds")
                .follows_real_time()
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let error = Cron::parse("* * *").expect_err("three fields");
        assert!(error.reason.contains("give 5"), "{error}");
        let error = Cron::parse("61 * * * *").expect_err("minute 61");
        assert!(error.reason.contains("outside 0-59"), "{error}");
        assert!(Cron::parse("*/0 * * * *").is_err());
        assert!(Cron::parse("5-1 * * * *").is_err());
        assert!(Cron::parse("* * * FOO *").is_err());
        let error = Cron::parse("0 0 * * L").expect_err("L alone");
        assert!(error.reason.contains("5L"), "{error}");
        assert!(Cron::parse("0 0 * * 5#6").is_err());
        assert!(Cron::parse("0 0 32W * *").is_err());
    }
}
