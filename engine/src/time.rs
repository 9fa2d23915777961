//! Event time: milliseconds since the Unix epoch, and the durations users
//! write in pipelines.

use std::time::Duration;

/// Event time in milliseconds since the Unix epoch.
pub type Millis = i64;

/// The timely timestamp: a watermark in milliseconds since the epoch.
pub type Time = u64;

/// A duration that did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {message} (examples: 500ms, 10s, 1m, 1h30m)")]
pub struct DurationError {
    /// The text as written.
    pub text: String,
    /// What is wrong with it.
    pub message: String,
}

/// Parses a duration such as `500ms`, `10s`, `1m`, `1h30m` or `2d`.
/// A bare number is an error: the unit is always written.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let fail = |message: &str| DurationError {
        text: text.to_owned(),
        message: message.to_owned(),
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(fail("empty"));
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail("missing unit"));
    }
    humantime::parse_duration(trimmed).map_err(|e| fail(&e.to_string().to_lowercase()))
}

/// A duration in whole milliseconds, saturating.
pub fn millis(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The timely time for an event time: negative times clamp to zero.
#[inline]
pub fn to_time(ms: Millis) -> Time {
    ms.max(0) as Time
}

/// An event time as RFC 3339 in UTC with milliseconds.
pub fn format_millis(ms: Millis) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ms.to_string(),
    }
}

/// Parses an RFC 3339 timestamp into milliseconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Result<Millis, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            format!(
                "invalid timestamp {text:?}: {e} (expected RFC 3339, such as 2026-01-01T00:00:00Z)"
            )
        })
}

/// Wall-clock now in milliseconds since the epoch.
pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("ten seconds").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn timestamps() {
        assert_eq!(format_millis(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123Z").unwrap(),
            1_700_000_000_123
        );
        assert!(parse_rfc3339("yesterday").is_err());
        assert_eq!(to_time(-5), 0);
    }
}
