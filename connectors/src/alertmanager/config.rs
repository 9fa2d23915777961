//! Configuration of the `alertmanager` sink.

use std::time::Duration;

use serde::Deserialize;

use tidemark_engine::component::ConfigError;
use tidemark_engine::time::parse_duration;

/// The `alertmanager` sink: alerts to Alertmanager's API v2.
///
/// ```yaml
/// type: alertmanager
/// inputs: [rules.alerts]
/// url: [http://am-0:9093, http://am-1:9093]
/// resend_delay: 1m
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerSinkConfig {
    /// One Alertmanager's base URL (`http://host:9093`), or a list: each
    /// is sent every alert (as Prometheus does with a cluster).
    pub url: Urls,
    /// How often firing alerts are sent again (Prometheus's
    /// `--rules.alert.resend-delay`). Default `1m`.
    #[serde(default = "default_resend")]
    pub resend_delay: String,
    /// Time limit of one request. Default `10s`.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// How long a request that fails in a way a retry can mend is retried
    /// before it is given up (counted, logged). Default `10m`.
    #[serde(default = "default_retry_for")]
    pub retry_for: String,
    /// State changes whose event time is further than this behind the
    /// wall clock are not sent (counted as `too_old`): a replay or
    /// backfill of old data pages nobody. `off` sends everything. Default
    /// `1h`.
    #[serde(default = "default_max_age")]
    pub max_age: String,
}

/// `url:` as written.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Urls {
    /// One Alertmanager.
    One(String),
    /// Several.
    Many(Vec<String>),
}

fn default_resend() -> String {
    "1m".into()
}
fn default_timeout() -> String {
    "10s".into()
}
fn default_retry_for() -> String {
    "10m".into()
}
fn default_max_age() -> String {
    "1h".into()
}

/// A validated `alertmanager` sink.
#[derive(Clone, Debug)]
pub struct AlertmanagerSink {
    pub(crate) urls: Vec<String>,
    pub(crate) resend_delay: Duration,
    pub(crate) timeout: Duration,
    pub(crate) retry_for: Duration,
    pub(crate) max_age: Option<Duration>,
}

/// Parses a duration field that must be positive (or `off` where
/// `off_allowed`).
pub(crate) fn positive(
    field: &str,
    text: &str,
    off_allowed: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<Duration> {
    if off_allowed && text == "off" {
        return None;
    }
    match parse_duration(text) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            errors.push(ConfigError::field(
                field,
                format!("{field} must be longer than 0"),
            ));
            None
        }
        Err(e) => {
            errors.push(ConfigError::field(field, e.to_string()));
            None
        }
    }
}

/// Checks that `url` is an http(s) URL; the message never repeats it (it
/// may hold a secret).
pub(crate) fn check_url(field: &str, url: &str, errors: &mut Vec<ConfigError>) {
    let ok = ["http://", "https://"]
        .iter()
        .any(|s| url.strip_prefix(s).is_some_and(|rest| !rest.is_empty()));
    if !ok {
        errors.push(ConfigError::field(field, "not an http:// or https:// URL"));
    }
}

impl AlertmanagerSinkConfig {
    /// Checks the fields without connecting.
    pub fn validate(&self) -> Result<AlertmanagerSink, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let urls = match &self.url {
            Urls::One(u) => vec![u.clone()],
            Urls::Many(us) => us.clone(),
        };
        if urls.is_empty() {
            errors.push(ConfigError::field("url", "no Alertmanager URL"));
        }
        for u in &urls {
            check_url("url", u, &mut errors);
        }
        let resend_delay = positive("resend_delay", &self.resend_delay, false, &mut errors);
        let timeout = positive("timeout", &self.timeout, false, &mut errors);
        let retry_for = positive("retry_for", &self.retry_for, false, &mut errors);
        let max_age = positive("max_age", &self.max_age, true, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let fallback = Duration::from_secs(60);
        Ok(AlertmanagerSink {
            urls: urls
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
            resend_delay: resend_delay.unwrap_or(fallback),
            timeout: timeout.unwrap_or(fallback),
            retry_for: retry_for.unwrap_or(fallback),
            max_age,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_parses_and_bad_fields_are_named() {
        let c: AlertmanagerSinkConfig = serde_json::from_value(serde_json::json!({
            "url": ["http://am-0:9093/", "http://am-1:9093"],
            "resend_delay": "1m"
        }))
        .unwrap();
        let s = c.validate().unwrap();
        assert_eq!(s.urls, ["http://am-0:9093", "http://am-1:9093"]);
        assert_eq!(s.max_age, Some(Duration::from_secs(3600)));
        let bad: AlertmanagerSinkConfig = serde_json::from_value(serde_json::json!({
            "url": "am:9093", "resend_delay": "0s", "max_age": "off"
        }))
        .unwrap();
        let errors = bad.validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field[0].as_str()).collect();
        assert_eq!(fields, ["url", "resend_delay"]);
    }
}
