//! Alertmanager's time intervals: the `time_intervals` (and deprecated
//! `mute_time_intervals`) of `alertmanager.yml`, which routes name in
//! their `mute_time_intervals` and `active_time_intervals`. A named
//! interval is a list of periods; a period holds a moment when every one of
//! its fields given holds it (`times`, `weekdays`, `days_of_month`,
//! `months`, `years`, in its `location`), and a field holds it when any of
//! its ranges does. Ranges are inclusive, except `times`, whose end is not
//! in it (`24:00` ends a day). As Alertmanager reads them; a `route`
//! transform evaluates them at a flush's event time.

use chrono::{Datelike, Timelike};
use serde::Deserialize;

use tidemark_engine::component::ConfigError;

/// A named interval as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedConfig {
    /// What routes call it.
    pub name: String,
    /// Its periods (none: it never holds).
    #[serde(default)]
    pub time_intervals: Vec<PeriodConfig>,
}

/// A period as written: ranges as text (`monday:friday`, `1:5`, `-1`),
/// numbers taken as their text.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodConfig {
    /// Times of day.
    #[serde(default)]
    pub times: Option<Vec<TimeRangeConfig>>,
    /// Days of the week (`monday`, `monday:friday`).
    #[serde(default)]
    pub weekdays: Option<Vec<serde_json::Value>>,
    /// Days of the month (`1`, `1:5`; negative from the end: `-1`).
    #[serde(default)]
    pub days_of_month: Option<Vec<serde_json::Value>>,
    /// Months (`1:3`, `may:august`).
    #[serde(default)]
    pub months: Option<Vec<serde_json::Value>>,
    /// Years (`2026`, `2026:2028`).
    #[serde(default)]
    pub years: Option<Vec<serde_json::Value>>,
    /// The time zone the other fields are read in: an IANA name
    /// (`Europe/Berlin`), `UTC` (the default) or `Local`.
    #[serde(default)]
    pub location: Option<String>,
}

/// A time of day range as written (`start_time: "09:00"`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRangeConfig {
    /// `HH:MM`, in it.
    pub start_time: String,
    /// `HH:MM` or `24:00`, not in it.
    pub end_time: String,
}

/// Where a period's fields are read.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Zone {
    Utc,
    Local,
    Named(chrono_tz::Tz),
}

/// A checked period.
#[derive(Clone, Debug, PartialEq)]
pub struct Period {
    /// Minutes of the day, `[start, end)`.
    times: Option<Vec<(u32, u32)>>,
    /// Days of the week, Sunday 0.
    weekdays: Option<Vec<(u32, u32)>>,
    /// Days of the month, negative from its end.
    days_of_month: Option<Vec<(i32, i32)>>,
    months: Option<Vec<(u32, u32)>>,
    years: Option<Vec<(i32, i32)>>,
    zone: Zone,
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

impl Period {
    /// Whether the moment `at` (ms since the epoch) is in the period.
    pub fn contains(&self, at: i64) -> bool {
        let Some(utc) = chrono::DateTime::from_timestamp_millis(at) else {
            return false;
        };
        let t = match self.zone {
            Zone::Utc => utc.naive_utc(),
            Zone::Local => utc.with_timezone(&chrono::Local).naive_local(),
            Zone::Named(tz) => utc.with_timezone(&tz).naive_local(),
        };
        let any = |ranges: &Option<Vec<(u32, u32)>>, v: u32| {
            ranges
                .as_ref()
                .is_none_or(|r| r.iter().any(|&(a, b)| a <= v && v <= b))
        };
        let minute = t.hour() * 60 + t.minute();
        let in_times = self
            .times
            .as_ref()
            .is_none_or(|r| r.iter().any(|&(a, b)| a <= minute && minute < b));
        let days = days_in_month(t.year(), t.month()) as i32;
        let day = t.day() as i32;
        let in_days = self.days_of_month.as_ref().is_none_or(|r| {
            r.iter().any(|&(a, b)| {
                let from_end = |d: i32| if d < 0 { days + d + 1 } else { d };
                let (a, b) = (from_end(a), from_end(b));
                // A range that starts after the month's end holds none of
                // it; one that ends after it, up to its end.
                a <= days && a.max(1) <= day && day <= b.min(days)
            })
        });
        let year = t.year();
        let in_years = self
            .years
            .as_ref()
            .is_none_or(|r| r.iter().any(|&(a, b)| a <= year && year <= b));
        in_times
            && in_days
            && in_years
            && any(&self.weekdays, t.weekday().num_days_from_sunday())
            && any(&self.months, t.month())
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let first = chrono::NaiveDate::from_ymd_opt(year, month, 1);
    let next = if month == 12 {
        chrono::NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        chrono::NaiveDate::from_ymd_opt(year, month + 1, 1)
    };
    match (first, next) {
        (Some(a), Some(b)) => (b - a).num_days() as u32,
        _ => 31,
    }
}

/// Checks named intervals (`field` is where they are in the file, so
/// errors say `time_intervals.0.time_intervals.1.weekdays.0`).
pub fn check(
    named: &[NamedConfig],
    field: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, Vec<Period>)> {
    named
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let path = vec![field.to_owned(), i.to_string()];
            if n.name.is_empty() {
                errors.push(ConfigError {
                    field: [&path[..], &["name".to_owned()]].concat(),
                    message: "missing name in time interval".into(),
                });
            }
            let periods = n
                .time_intervals
                .iter()
                .enumerate()
                .filter_map(|(j, p)| {
                    let mut at = path.clone();
                    at.extend(["time_intervals".to_owned(), j.to_string()]);
                    period(p, &at, errors)
                })
                .collect();
            (n.name.clone(), periods)
        })
        .collect()
}

fn period(config: &PeriodConfig, path: &[String], errors: &mut Vec<ConfigError>) -> Option<Period> {
    let before = errors.len();
    let mut error = |field: &[&str], message: String| {
        let mut f = path.to_vec();
        f.extend(field.iter().map(|s| s.to_string()));
        errors.push(ConfigError { field: f, message });
    };
    let times = config.times.as_ref().map(|list| {
        list.iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let i = i.to_string();
                let start = clock(&r.start_time, false);
                let end = clock(&r.end_time, true);
                match (start, end) {
                    (Ok(s), Ok(e)) if s < e => Some((s, e)),
                    (Ok(_), Ok(_)) => {
                        error(
                            &["times", &i],
                            "start time cannot be equal or greater than end time".into(),
                        );
                        None
                    }
                    (Err(m), _) => {
                        error(&["times", &i, "start_time"], m);
                        None
                    }
                    (_, Err(m)) => {
                        error(&["times", &i, "end_time"], m);
                        None
                    }
                }
            })
            .collect()
    });
    let mut ranges = |name: &str,
                      list: &Option<Vec<serde_json::Value>>,
                      one: &dyn Fn(&str) -> Result<i32, String>,
                      order: &dyn Fn(i32, i32) -> Result<(), String>|
     -> Option<Vec<(i32, i32)>> {
        list.as_ref().map(|list| {
            list.iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let text = match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Number(n) => n.to_string(),
                        other => other.to_string(),
                    };
                    let (a, b) = text.split_once(':').unwrap_or((&text, &text));
                    let parsed = one(a.trim()).and_then(|a| one(b.trim()).map(|b| (a, b)));
                    match parsed.and_then(|(a, b)| order(a, b).map(|()| (a, b))) {
                        Ok(r) => Some(r),
                        Err(m) => {
                            error(&[name, &i.to_string()], m);
                            None
                        }
                    }
                })
                .collect()
        })
    };
    let ascending = |what: &'static str| {
        move |a: i32, b: i32| {
            if a > b {
                Err(format!("start {what} cannot be after end {what}"))
            } else {
                Ok(())
            }
        }
    };
    let named = |names: &'static [&'static str], what: &'static str, first: i32| {
        move |s: &str| {
            let lower = s.to_ascii_lowercase();
            if let Some(i) = names.iter().position(|n| *n == lower) {
                return Ok(i as i32 + first);
            }
            match s.parse::<i32>() {
                Ok(n) if what == "month" && (1..=12).contains(&n) => Ok(n),
                _ => Err(format!("{s:?} is not a valid {what}")),
            }
        }
    };
    let weekdays = ranges(
        "weekdays",
        &config.weekdays,
        &|s| {
            let lower = s.to_ascii_lowercase();
            WEEKDAYS
                .iter()
                .position(|n| *n == lower)
                .map(|i| i as i32)
                .ok_or_else(|| format!("{s:?} is not a valid weekday"))
        },
        &ascending("day"),
    );
    let days_of_month = ranges(
        "days_of_month",
        &config.days_of_month,
        &|s| match s.parse::<i32>() {
            Ok(d) if d != 0 && (-31..=31).contains(&d) => Ok(d),
            _ => Err(format!(
                "{s:?} is not a valid day of the month (1 to 31, or -31 to -1 from its end)"
            )),
        },
        // As Alertmanager orders them: a range from a positive day to a
        // negative one is read in a month of 30 days.
        &|a, b| {
            if a < 0 && b > 0 {
                Err("end day must be negative if start day is negative".into())
            } else if ((a > 0) == (b > 0) && a > b) || (a > 0 && b < 0 && a > 30 + b) {
                Err(format!("end day {b} is always before start day {a}"))
            } else {
                Ok(())
            }
        },
    );
    let months = ranges(
        "months",
        &config.months,
        &named(&MONTHS, "month", 1),
        &ascending("month"),
    );
    let years = ranges(
        "years",
        &config.years,
        &|s| match s.parse::<i32>() {
            Ok(y) if y > 0 => Ok(y),
            _ => Err(format!("{s:?} is not a valid year")),
        },
        &ascending("year"),
    );
    let zone = match config.location.as_deref() {
        None | Some("UTC") | Some("") => Zone::Utc,
        Some("Local") => Zone::Local,
        Some(name) => match name.parse::<chrono_tz::Tz>() {
            Ok(tz) => Zone::Named(tz),
            Err(_) => {
                error(
                    &["location"],
                    format!(
                        "unknown time zone {name:?} (an IANA name such as Europe/Berlin, UTC or Local)"
                    ),
                );
                Zone::Utc
            }
        },
    };
    let unsigned = |r: Option<Vec<(i32, i32)>>| {
        r.map(|r| r.into_iter().map(|(a, b)| (a as u32, b as u32)).collect())
    };
    (errors.len() == before).then(|| Period {
        times,
        weekdays: unsigned(weekdays),
        days_of_month,
        months: unsigned(months),
        years,
        zone,
    })
}

/// Minutes since midnight of `HH:MM` (`24:00` only as an end).
fn clock(text: &str, end: bool) -> Result<u32, String> {
    let bad =
        || format!("{text:?} is not a valid time (HH:MM, 00:00 to 23:59, or 24:00 as an end)");
    if text == "24:00" {
        return if end { Ok(1440) } else { Err(bad()) };
    }
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    match (h.parse::<u32>(), m.parse::<u32>()) {
        (Ok(h), Ok(m)) if h < 24 && m < 60 => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(yaml: serde_json::Value) -> Result<Period, Vec<ConfigError>> {
        let config: PeriodConfig = serde_json::from_value(yaml).unwrap();
        let mut errors = Vec::new();
        let p = period(&config, &["p".to_owned()], &mut errors);
        p.ok_or(errors)
    }

    fn at(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn business_hours_in_a_time_zone() {
        let p = one(serde_json::json!({
            "weekdays": ["monday:friday"],
            "times": [{"start_time": "09:00", "end_time": "17:00"}],
            "location": "Europe/Berlin"
        }))
        .unwrap();
        // 2026-12-07 is a Monday; Berlin is UTC+1 in December.
        assert!(p.contains(at("2026-12-07T08:00:00Z")));
        assert!(!p.contains(at("2026-12-07T07:59:59Z")));
        assert!(p.contains(at("2026-12-07T15:59:59Z")));
        assert!(
            !p.contains(at("2026-12-07T16:00:00Z")),
            "the end is not in it"
        );
        assert!(!p.contains(at("2026-12-06T10:00:00Z")), "Sunday");
        // UTC+2 in summer.
        assert!(p.contains(at("2026-07-06T07:00:00Z")));
        assert!(!p.contains(at("2026-07-06T06:59:00Z")));
    }

    #[test]
    fn days_of_the_month_count_from_its_end_when_negative() {
        let last = one(serde_json::json!({"days_of_month": ["-1"]})).unwrap();
        assert!(last.contains(at("2028-02-29T12:00:00Z")), "leap year");
        assert!(!last.contains(at("2028-02-28T12:00:00Z")));
        assert!(last.contains(at("2027-02-28T12:00:00Z")));
        let ranges = one(serde_json::json!({"days_of_month": [1, "7:9", "25:-1"], "months": ["january:march", "december"], "years": ["2026:2027"]}))
            .unwrap();
        assert!(ranges.contains(at("2026-12-01T00:00:00Z")));
        assert!(ranges.contains(at("2026-12-08T00:00:00Z")));
        assert!(!ranges.contains(at("2026-12-10T00:00:00Z")));
        assert!(ranges.contains(at("2027-02-28T23:59:59Z")));
        assert!(!ranges.contains(at("2026-11-01T00:00:00Z")), "November");
        assert!(!ranges.contains(at("2028-01-01T00:00:00Z")), "2028");
        // A range past a short month's end holds none of it.
        let thirty_first = one(serde_json::json!({"days_of_month": ["31"]})).unwrap();
        assert!(!thirty_first.contains(at("2026-11-30T12:00:00Z")));
        assert!(thirty_first.contains(at("2026-12-31T12:00:00Z")));
        // A whole day through 24:00.
        let evening =
            one(serde_json::json!({"times": [{"start_time": "18:00", "end_time": "24:00"}]}))
                .unwrap();
        assert!(evening.contains(at("2026-12-06T23:59:59Z")));
        assert!(!evening.contains(at("2026-12-07T00:00:00Z")));
    }

    #[test]
    fn bad_periods_are_refused_naming_the_field() {
        for (yaml, field, text) in [
            (
                serde_json::json!({"weekdays": ["friday:monday"]}),
                "p.weekdays.0",
                "cannot be after",
            ),
            (
                serde_json::json!({"weekdays": ["funday"]}),
                "p.weekdays.0",
                "not a valid weekday",
            ),
            (
                serde_json::json!({"days_of_month": ["0"]}),
                "p.days_of_month.0",
                "not a valid day",
            ),
            (
                serde_json::json!({"days_of_month": ["-3:5"]}),
                "p.days_of_month.0",
                "must be negative",
            ),
            (
                serde_json::json!({"days_of_month": ["9:3"]}),
                "p.days_of_month.0",
                "always before",
            ),
            (
                serde_json::json!({"days_of_month": ["30:-1"]}),
                "p.days_of_month.0",
                "always before",
            ),
            (
                serde_json::json!({"months": ["13"]}),
                "p.months.0",
                "not a valid month",
            ),
            (
                serde_json::json!({"years": ["2027:2026"]}),
                "p.years.0",
                "cannot be after",
            ),
            (
                serde_json::json!({"times": [{"start_time": "17:00", "end_time": "09:00"}]}),
                "p.times.0",
                "equal or greater",
            ),
            (
                serde_json::json!({"times": [{"start_time": "24:00", "end_time": "24:00"}]}),
                "p.times.0.start_time",
                "not a valid time",
            ),
            (
                serde_json::json!({"times": [{"start_time": "9:00", "end_time": "10:00"}]}),
                "p.times.0.start_time",
                "not a valid time",
            ),
            (
                serde_json::json!({"location": "Mars/Olympus"}),
                "p.location",
                "unknown time zone",
            ),
        ] {
            let errors = one(yaml.clone()).unwrap_err();
            assert_eq!(errors.len(), 1, "{yaml}: {errors:?}");
            assert_eq!(errors[0].field.join("."), field, "{yaml}");
            assert!(
                errors[0].message.contains(text),
                "{yaml}: {}",
                errors[0].message
            );
        }
    }
}
