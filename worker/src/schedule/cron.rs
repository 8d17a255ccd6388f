//! Cron expressions: five fields, or six with seconds first.
//!
//! ```text
//! [second] minute hour day-of-month month day-of-week
//! ```
//!
//! Each field takes `*`, numbers, ranges `a-b`, lists `a,b`, steps `*/n` and
//! `a-b/n`; months and weekdays also take names (`JAN`, `MON`); day-of-week 0
//! and 7 are Sunday. As in Vixie cron, when both day fields are restricted a
//! day matching either runs.

use std::fmt;

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Day-of-month was `*`: only day-of-week restricts days.
    any_day: bool,
    /// Day-of-week was `*`: only day-of-month restricts days.
    any_weekday: bool,
    /// The hour field is `*`: the schedule runs every hour.
    every_hour: bool,
    source: String,
}

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
    /// Parses five fields (minute first) or six (second first).
    pub fn parse(expression: &str) -> Result<Cron, CronError> {
        let error = |reason: String| CronError {
            expression: expression.to_string(),
            reason,
        };
        let fields: Vec<&str> = expression.split_whitespace().collect();
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
        let days = parse_field(rest[2], &DAY).map_err(error)?;
        let months = parse_field(rest[3], &MONTH).map_err(error)?;
        let mut weekdays = parse_field(rest[4], &WEEKDAY).map_err(error)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Cron {
            seconds,
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: (weekdays & 0x7f) as u8,
            any_day: rest[2] == "*" || rest[2] == "?",
            any_weekday: rest[4] == "*" || rest[4] == "?",
            every_hour: rest[1] == "*",
            source: expression.trim().to_string(),
        })
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.source
    }

    /// Whether the hour field is `*`: such a schedule runs at every real
    /// instant, both passes of a repeated hour included.
    pub fn every_hour(&self) -> bool {
        self.every_hour
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

    /// Whether a date matches: month, then the day fields by Vixie cron's rule.
    pub fn date(&self, month: u32, day: u32, weekday_from_sunday: u32) -> bool {
        if self.months & (1 << month) == 0 {
            return false;
        }
        let by_day = self.days & (1 << day) != 0;
        let by_weekday = self.weekdays & (1 << weekday_from_sunday) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => by_weekday,
            (false, true) => by_day,
            (false, false) => by_day || by_weekday,
        }
    }
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

    #[test]
    fn parses_the_usual_forms() {
        let cron = Cron::parse("*/15 9-17 * JAN-MAR MON-FRI").expect("parses");
        assert!(cron.minute(0) && cron.minute(45) && !cron.minute(10));
        assert!(cron.hour(9) && cron.hour(17) && !cron.hour(18));
        assert!(cron.date(2, 10, 1) && !cron.date(4, 10, 1) && !cron.date(2, 10, 0));
        assert!(cron.second(0) && !cron.second(1));
        let seconds = Cron::parse("*/10 * * * * *").expect("six fields");
        assert!(seconds.second(20) && !seconds.second(25));
        assert!(Cron::parse("0 0 * * 7").expect("sunday as 7").date(1, 1, 0));
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        let cron = Cron::parse("0 0 13 * FRI").expect("parses");
        assert!(cron.date(5, 13, 3), "the 13th, a Wednesday");
        assert!(cron.date(5, 8, 5), "a Friday, the 8th");
        assert!(!cron.date(5, 8, 3));
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
    }
}
