//! Cron against an independent implementation: cronsim (PyPI), which follows Debian's (Vixie) cron.
//!
//! Thousands of random expressions, in zones with and without daylight saving,
//! from start times around DST changes and month ends: the next runs must be
//! the same instants. docs/schedules.md lists where the two differ on purpose
//! and why those cases are not generated here.

use std::io::Write;

use chrono::{DateTime, Duration, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use q8s::schedule::{Cron, Kind, Recurrence};

/// Cases per run; each compares the next `RUNS` runs.
const CASES: usize = 3000;
const RUNS: usize = 5;
/// How far q8s looks ahead for a cron match, in days.
const HORIZON_DAYS: i64 = 8 * 366;

/// Zones with daylight saving in either hemisphere, and without. Left out:
/// 30-minute DST shifts (Australia/Lord_Howe) and changes at midnight
/// (America/Havana, Asia/Beirut, America/Santiago), where cronsim errs (docs/schedules.md).
const ZONES: [&str; 10] = [
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "America/Sao_Paulo",
];

/// A small deterministic generator, so a failure can be run again as it was.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn range(&mut self, low: u32, high: u32) -> u32 {
        low + self.below(u64::from(high - low + 1)) as u32
    }
}

/// A field of plain values: `*`, `*/k`, a value, `a-b`, `a-b/k` (a < b), or a list.
fn plain(rng: &mut Rng, low: u32, high: u32, likely: &[u32]) -> String {
    let value = |rng: &mut Rng| {
        if !likely.is_empty() && rng.below(2) == 0 {
            *rng.pick(likely)
        } else {
            rng.range(low, high)
        }
    };
    match rng.below(7) {
        0 => "*".into(),
        1 => format!("*/{}", rng.range(2, (high - low).clamp(2, 12))),
        2 | 3 => value(rng).to_string(),
        4 => {
            let a = rng.range(low, high - 1);
            format!("{a}-{}", rng.range(a + 1, high))
        }
        5 => {
            // cronsim reads a-a/k as a-max/k: only a < b is generated.
            let a = rng.range(low, high - 1);
            format!("{a}-{}/{}", rng.range(a + 1, high), rng.range(2, 5))
        }
        _ => {
            let (a, b) = (value(rng), value(rng));
            format!("{},{}", a.min(b), a.max(b))
        }
    }
}

fn expression(rng: &mut Rng) -> String {
    if rng.below(25) == 0 {
        return rng
            .pick(&[
                "@yearly",
                "@annually",
                "@monthly",
                "@weekly",
                "@daily",
                "@midnight",
                "@hourly",
            ])
            .to_string();
    }
    let minute = plain(rng, 0, 59, &[0, 15, 30, 45]);
    // The hours daylight saving moves, often.
    let hour = plain(rng, 0, 23, &[0, 1, 2, 3, 4]);
    // Days to 28 only (and L): rarer days need a horizon longer than q8s's.
    let day = match rng.below(8) {
        0 => "L".to_string(),
        1 => "LW".to_string(),
        2 => format!("{},L", rng.range(1, 28)),
        _ => plain(rng, 1, 28, &[1, 15]),
    };
    let month = match rng.below(4) {
        0 => plain(rng, 1, 12, &[2, 3, 10, 11]),
        _ => "*".to_string(),
    };
    let weekday = match rng.below(8) {
        0 => format!("{}L", rng.range(0, 6)),
        1 => format!("{}#{}", rng.range(0, 6), rng.range(1, 5)),
        2 => "MON-FRI".to_string(),
        _ => plain(rng, 0, 7, &[0, 1, 5]),
    };
    let fields = format!("{minute} {hour} {day} {month} {weekday}");
    if rng.below(10) == 0 {
        format!("{} {fields}", rng.pick(&["0", "30", "*/20", "0-30/15"]))
    } else {
        fields
    }
}

/// Instants where `zone`'s offset changes, 2025 to 2028.
fn transitions(zone: Tz) -> Vec<DateTime<Utc>> {
    let offset = |at: DateTime<Utc>| zone.offset_from_utc_datetime(&at.naive_utc()).fix();
    let mut found = Vec::new();
    let mut at = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("time");
    let end = Utc
        .with_ymd_and_hms(2028, 1, 1, 0, 0, 0)
        .single()
        .expect("time");
    while at < end {
        let next = at + Duration::hours(1);
        if offset(at) != offset(next) {
            let mut moment = at;
            while offset(moment) == offset(at) {
                moment += Duration::minutes(1);
            }
            found.push(moment);
        }
        at = next;
    }
    found
}

/// A start: any time, a little before a DST change (never inside a repeated
/// hour, where cronsim errs), or on a month's last day.
fn start(rng: &mut Rng, changes: &[DateTime<Utc>]) -> DateTime<Utc> {
    let any = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("time")
        + Duration::seconds(rng.below(3 * 365 * 86_400) as i64);
    match rng.below(3) {
        0 if !changes.is_empty() => {
            *rng.pick(changes) - Duration::hours(2) - Duration::seconds(rng.below(5 * 3600) as i64)
        }
        1 => {
            let month = rng.range(1, 12);
            let year = 2025 + rng.range(0, 2) as i32;
            let last = q8s::schedule::days_in_month(year, month);
            Utc.with_ymd_and_hms(year, month, last, rng.range(0, 23), rng.range(0, 59), 0)
                .single()
                .expect("time")
        }
        _ => any,
    }
}

fn ours(expression: &str, zone: Tz, start: DateTime<Utc>) -> Vec<i64> {
    let cron = Cron::parse(expression).unwrap_or_else(|e| panic!("{expression}: {e}"));
    let recurrence = Recurrence {
        kind: Kind::Cron(cron),
        anchor: Utc
            .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
            .single()
            .expect("time"),
        zone,
    };
    let mut at = start;
    let mut runs = Vec::new();
    while runs.len() < RUNS {
        let Some(next) = recurrence.next_after(at) else {
            break;
        };
        runs.push(next.timestamp());
        at = next;
    }
    runs
}

/// The oracle's next runs for each case: one JSON line in, one out.
const DRIVER: &str = r#"
import json, sys
from datetime import datetime, timezone
from zoneinfo import ZoneInfo
from cronsim import CronSim, CronSimError
MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
          "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
          "@hourly": "0 * * * *"}
for line in sys.stdin:
    case = json.loads(line)
    expr = MACROS.get(case["expr"], case["expr"])
    zone = timezone.utc if case["tz"] == "UTC" else ZoneInfo(case["tz"])
    runs = []
    try:
        it = CronSim(expr, datetime.fromtimestamp(case["start"], zone))
        for _ in range(case["n"]):
            runs.append(int(next(it).timestamp()))
    except (StopIteration, CronSimError):
        pass
    print(json.dumps(runs))
"#;

fn theirs(python: &str, cases: &[(String, &str, i64)]) -> Vec<Vec<i64>> {
    let mut child = std::process::Command::new(python)
        .args(["-c", DRIVER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cronsim runs");
    let mut input = String::new();
    for (expr, tz, start) in cases {
        let line = serde_json::json!({ "expr": expr, "tz": tz, "start": start, "n": RUNS });
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("cronsim answers");
    writer.join().expect("writer").expect("cases written");
    assert!(output.status.success(), "the cronsim driver failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON list of runs"))
        .collect()
}

fn shown(runs: &[i64], zone: Tz) -> Vec<String> {
    runs.iter()
        .filter_map(|s| DateTime::from_timestamp(*s, 0))
        .map(|t| {
            t.with_timezone(&zone)
                .format("%Y-%m-%d %H:%M:%S %Z")
                .to_string()
        })
        .collect()
}

#[test]
fn cron_next_runs_agree_with_cronsim_on_thousands_of_random_cases() {
    let Some(python) = crate::support::cron_oracle() else {
        return;
    };
    let seed = std::env::var("Q8S_TEST_CRON_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x5eed_c0de_2026_u64);
    let mut rng = Rng(seed);
    let changes: Vec<(&str, Vec<DateTime<Utc>>)> = ZONES
        .iter()
        .map(|name| (*name, transitions(name.parse().expect("a zone"))))
        .collect();
    let mut cases = Vec::with_capacity(CASES);
    for _ in 0..CASES {
        let (zone, zone_changes) = rng.pick(&changes);
        let at = start(&mut rng, zone_changes);
        cases.push((expression(&mut rng), *zone, at.timestamp()));
    }
    let expected = theirs(&python, &cases);
    assert_eq!(expected.len(), cases.len(), "one answer per case");
    let mut disagreements = Vec::new();
    for ((expr, tz, start), theirs) in cases.iter().zip(&expected) {
        let zone: Tz = tz.parse().expect("a zone");
        let start_time = DateTime::from_timestamp(*start, 0).expect("time");
        let ours = ours(expr, zone, start_time);
        let common = ours.len().min(theirs.len());
        let mut agree = ours[..common] == theirs[..common];
        if agree && ours.len() < theirs.len() {
            // q8s stops looking HORIZON_DAYS ahead; cronsim goes on for 50 years.
            let previous = ours.last().copied().unwrap_or(*start);
            agree = theirs[ours.len()] - previous > HORIZON_DAYS * 86_400;
        }
        if agree && ours.len() > theirs.len() {
            agree = false;
        }
        if !agree {
            disagreements.push(format!(
                "{expr:?} in {tz} after {}:\n  q8s     {:?}\n  cronsim {:?}",
                shown(&[*start], zone).join(""),
                shown(&ours, zone),
                shown(theirs, zone)
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {CASES} cases disagree (seed {seed:#x}); the first:\n{}",
        disagreements.len(),
        disagreements
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
