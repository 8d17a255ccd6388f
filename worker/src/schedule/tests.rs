//! The schedule arithmetic against hand-written tables and brute force.

use super::*;
use proptest::prelude::*;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

fn runs(kind: Kind, anchor: &str, zone: Tz, count: usize) -> Vec<String> {
    let recurrence = Recurrence {
        kind,
        anchor: utc(anchor),
        zone,
    };
    let mut at = recurrence.anchor - Duration::seconds(1);
    (0..count)
        .map_while(|_| {
            at = recurrence.next_after(at)?;
            Some(
                at.with_timezone(&zone)
                    .format("%Y-%m-%d %H:%M:%S %Z")
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn once_runs_at_its_anchor_only() {
    assert_eq!(
        runs(Kind::Once, "2026-03-01T10:00:00Z", Tz::UTC, 3),
        vec!["2026-03-01 10:00:00 UTC"]
    );
}

#[test]
fn minutes_and_hourly_are_fixed_intervals_of_real_time() {
    assert_eq!(
        runs(Kind::Minutes(5), "2026-03-01T18:00:00Z", Tz::UTC, 3),
        vec![
            "2026-03-01 18:00:00 UTC",
            "2026-03-01 18:05:00 UTC",
            "2026-03-01 18:10:00 UTC"
        ]
    );
    // Across the spring-forward change in Berlin: still one run per real hour.
    assert_eq!(
        runs(Kind::Hourly, "2026-03-29T00:00:00Z", Tz::Europe__Berlin, 3),
        vec![
            "2026-03-29 01:00:00 CET",
            "2026-03-29 03:00:00 CEST",
            "2026-03-29 04:00:00 CEST"
        ]
    );
}

#[test]
fn daily_weekly_keep_the_wall_clock_time() {
    assert_eq!(
        runs(Kind::Daily, "2026-03-27T08:30:00Z", Tz::Europe__Berlin, 4),
        vec![
            "2026-03-27 09:30:00 CET",
            "2026-03-28 09:30:00 CET",
            "2026-03-29 09:30:00 CEST",
            "2026-03-30 09:30:00 CEST"
        ]
    );
    assert_eq!(
        runs(Kind::Weekly, "2026-01-05T07:00:00Z", Tz::UTC, 3),
        vec![
            "2026-01-05 07:00:00 UTC",
            "2026-01-12 07:00:00 UTC",
            "2026-01-19 07:00:00 UTC"
        ]
    );
}

#[test]
fn daily_run_in_a_skipped_hour_runs_after_the_gap_and_in_a_repeated_hour_once() {
    // 02:30 does not exist on 2026-03-29 in Berlin; it occurs twice on 2026-10-25.
    assert_eq!(
        runs(Kind::Daily, "2026-03-28T01:30:00Z", Tz::Europe__Berlin, 3),
        vec![
            "2026-03-28 02:30:00 CET",
            "2026-03-29 03:00:00 CEST",
            "2026-03-30 02:30:00 CEST"
        ]
    );
    assert_eq!(
        runs(Kind::Daily, "2026-10-24T00:30:00Z", Tz::Europe__Berlin, 3),
        vec![
            "2026-10-24 02:30:00 CEST",
            "2026-10-25 02:30:00 CEST",
            "2026-10-26 02:30:00 CET"
        ]
    );
}

#[test]
fn the_31st_runs_on_the_last_day_of_short_months_and_comes_back() {
    assert_eq!(
        runs(Kind::Monthly, "2026-01-31T12:00:00Z", Tz::UTC, 5),
        vec![
            "2026-01-31 12:00:00 UTC",
            "2026-02-28 12:00:00 UTC",
            "2026-03-31 12:00:00 UTC",
            "2026-04-30 12:00:00 UTC",
            "2026-05-31 12:00:00 UTC"
        ]
    );
    assert_eq!(
        runs(Kind::Quarterly, "2025-11-30T00:00:00Z", Tz::UTC, 3),
        vec![
            "2025-11-30 00:00:00 UTC",
            "2026-02-28 00:00:00 UTC",
            "2026-05-30 00:00:00 UTC"
        ]
    );
}

#[test]
fn february_29th_runs_on_the_28th_in_common_years() {
    assert_eq!(
        runs(Kind::Yearly, "2028-02-29T06:00:00Z", Tz::UTC, 5),
        vec![
            "2028-02-29 06:00:00 UTC",
            "2029-02-28 06:00:00 UTC",
            "2030-02-28 06:00:00 UTC",
            "2031-02-28 06:00:00 UTC",
            "2032-02-29 06:00:00 UTC"
        ]
    );
}

fn cron(expression: &str) -> Kind {
    Kind::Cron(Cron::parse(expression).expect("valid cron"))
}

#[test]
fn cron_follows_its_fields_in_its_zone() {
    assert_eq!(
        runs(
            cron("30 9 * * MON-FRI"),
            "2026-11-20T00:00:00Z",
            Tz::America__New_York,
            3
        ),
        vec![
            "2026-11-20 09:30:00 EST",
            "2026-11-23 09:30:00 EST",
            "2026-11-24 09:30:00 EST"
        ]
    );
    assert_eq!(
        runs(cron("*/20 * * * * *"), "2026-01-01T00:00:00Z", Tz::UTC, 4),
        vec![
            "2026-01-01 00:00:00 UTC",
            "2026-01-01 00:00:20 UTC",
            "2026-01-01 00:00:40 UTC",
            "2026-01-01 00:01:00 UTC"
        ]
    );
    assert_eq!(
        runs(cron("0 0 30 2 *"), "2026-01-01T00:00:00Z", Tz::UTC, 1),
        Vec::<String>::new()
    );
}

#[test]
fn cron_with_a_fixed_hour_neither_skips_nor_doubles_across_dst() {
    assert_eq!(
        runs(
            cron("30 2 * * *"),
            "2026-03-28T00:00:00Z",
            Tz::Europe__Berlin,
            3
        ),
        vec![
            "2026-03-28 02:30:00 CET",
            "2026-03-29 03:00:00 CEST",
            "2026-03-30 02:30:00 CEST"
        ]
    );
    assert_eq!(
        runs(
            cron("30 2 * * *"),
            "2026-10-24T00:00:00Z",
            Tz::Europe__Berlin,
            3
        ),
        vec![
            "2026-10-24 02:30:00 CEST",
            "2026-10-25 02:30:00 CEST",
            "2026-10-26 02:30:00 CET"
        ]
    );
}

#[test]
fn cron_every_hour_runs_at_each_real_instant_across_dst() {
    assert_eq!(
        runs(
            cron("0 * * * *"),
            "2026-10-24T23:30:00Z",
            Tz::Europe__Berlin,
            4
        ),
        vec![
            "2026-10-25 02:00:00 CEST",
            "2026-10-25 02:00:00 CET",
            "2026-10-25 03:00:00 CET",
            "2026-10-25 04:00:00 CET"
        ]
    );
    assert_eq!(
        runs(
            cron("0 * * * *"),
            "2026-03-28T23:30:00Z",
            Tz::Europe__Berlin,
            3
        ),
        vec![
            "2026-03-29 01:00:00 CET",
            "2026-03-29 03:00:00 CEST",
            "2026-03-29 04:00:00 CEST"
        ]
    );
}

fn kinds() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (1u32..200).prop_map(Kind::Minutes),
        Just(Kind::Hourly),
        Just(Kind::Daily),
        Just(Kind::Weekly),
        Just(Kind::Monthly),
        Just(Kind::Quarterly),
        Just(Kind::Yearly),
    ]
}

fn zones() -> impl Strategy<Value = Tz> {
    prop_oneof![
        Just(Tz::UTC),
        Just(Tz::Europe__Berlin),
        Just(Tz::America__New_York),
        Just(Tz::Australia__Lord_Howe),
        Just(Tz::Asia__Kolkata),
    ]
}

/// Seconds from 2020 to 2040.
fn instants() -> impl Strategy<Value = DateTime<Utc>> {
    (1_577_836_800i64..2_208_988_800)
        .prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default())
}

/// A cron field: `*`, a value, a list, a range, or a step.
fn field(max: u32, min: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        (min..=max).prop_map(|v| v.to_string()),
        (min..=max, min..=max).prop_map(|(a, b)| format!("{},{}", a.min(b), a.max(b))),
        (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (1..=max.max(1)).prop_map(|step| format!("*/{step}")),
    ]
}

fn matches_at(expression: &Cron, time: DateTime<Utc>) -> bool {
    expression.second(time.second())
        && expression.minute(time.minute())
        && expression.hour(time.hour())
        && expression.date(time.date_naive())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn next_run_is_always_after_the_previous(kind in kinds(), zone in zones(), anchor in instants(), gap in 0i64..400_000_000) {
        let recurrence = Recurrence { kind, anchor, zone };
        let after = anchor + Duration::seconds(gap);
        let next = recurrence.next_after(after).expect("recurring kinds always run again");
        prop_assert!(next > after);
        let again = recurrence.next_after(next).expect("and again");
        prop_assert!(again > next);
    }

    #[test]
    fn monthly_runs_never_skip_a_month(zone in zones(), anchor in instants()) {
        let recurrence = Recurrence { kind: Kind::Monthly, anchor, zone };
        let anchor_day = anchor.with_timezone(&zone).day();
        let mut at = anchor;
        for _ in 0..30 {
            let next = recurrence.next_after(at).expect("monthly");
            let (before, after) = (at.with_timezone(&zone), next.with_timezone(&zone));
            let months = (after.year() - before.year()) * 12 + after.month() as i32 - before.month() as i32;
            prop_assert_eq!(months, 1, "{} then {}", before, after);
            let expected_day = anchor_day.min(days_in_month(after.year(), after.month()));
            prop_assert!(after.day() == expected_day || after.day() == expected_day + 1,
                "{} in a month of {} days, anchored on the {}", after, days_in_month(after.year(), after.month()), anchor_day);
            at = next;
        }
    }

    #[test]
    fn cron_agrees_with_a_brute_force_minute_scan(
        minute in field(59, 0), hour in field(23, 0), day in field(31, 1),
        weekday in field(6, 0), start in instants(),
    ) {
        let expression = format!("{minute} {hour} {day} * {weekday}");
        let parsed = Cron::parse(&expression).expect("generated expressions parse");
        let recurrence = Recurrence { kind: Kind::Cron(parsed.clone()), anchor: start, zone: Tz::UTC };
        let first_minute = start + Duration::seconds(60 - i64::from(start.second()));
        let expected = (0..60 * 24 * 62)
            .map(|n| first_minute + Duration::minutes(n))
            .find(|time| matches_at(&parsed, *time));
        let next = recurrence.next_after(start);
        match expected {
            Some(expected) => prop_assert_eq!(next, Some(expected), "{}", expression),
            None => prop_assert!(next.is_none_or(|n| n > first_minute + Duration::days(62)), "{}", expression),
        }
    }
}
