//! PromQL series selectors: `cpu_usage{host=~"web-.*", dc!="eu"}`.
//!
//! Parsing is the `promql-parser` crate's, so matching follows Prometheus
//! exactly: regular expressions are anchored, and a label the series does not
//! have matches as the empty string.

use std::fmt;

use promql_parser::label::Matcher;
use promql_parser::parser::{self, Expr};

use crate::series::{METRIC_NAME_LABEL, Series};

/// A parsed series selector.
#[derive(Clone)]
pub struct Selector {
    text: String,
    name: Option<String>,
    matchers: Vec<Matcher>,
    or_matchers: Vec<Vec<Matcher>>,
}

/// A selector that did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid series selector {text:?}: {message}")]
pub struct SelectorError {
    /// The selector as written.
    pub text: String,
    /// What is wrong with it.
    pub message: String,
}

impl Selector {
    /// Parses a component's optional `match` field; an error is added to
    /// `errors`, located at `match`.
    pub fn parse_match(
        text: Option<&str>,
        errors: &mut Vec<crate::component::ConfigError>,
    ) -> Option<Selector> {
        Selector::parse(text?)
            .map_err(|e| errors.push(crate::component::ConfigError::field("match", e.to_string())))
            .ok()
    }

    /// Parses a series selector.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let fail = |message: String| SelectorError {
            text: text.to_owned(),
            message,
        };
        match parser::parse(text).map_err(|e| fail(e.trim().to_owned()))? {
            Expr::VectorSelector(vs) => {
                if vs.offset.is_some() || vs.at.is_some() {
                    return Err(fail("offset and @ modifiers are not allowed here".into()));
                }
                Ok(Selector {
                    text: text.to_owned(),
                    name: vs.name,
                    matchers: vs.matchers.matchers,
                    or_matchers: vs.matchers.or_matchers,
                })
            }
            _ => Err(fail(
                "expected a series selector such as cpu{host=\"a\"}, not an expression".into(),
            )),
        }
    }

    /// The selector as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the series matches.
    pub fn matches(&self, series: &Series) -> bool {
        if self.name.as_ref().is_some_and(|name| series.name() != name) {
            return false;
        }
        let all = |ms: &[Matcher]| {
            ms.iter().all(|m| {
                let value = if m.name == METRIC_NAME_LABEL {
                    Some(series.name())
                } else {
                    series.get(&m.name)
                };
                m.is_match(value.unwrap_or(""))
            })
        };
        all(&self.matchers)
            && (self.or_matchers.is_empty() || self.or_matchers.iter().any(|ms| all(ms)))
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({:?})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, labels: &[(&str, &str)]) -> Series {
        Series::new(name, labels.iter().copied())
    }

    #[test]
    fn every_operator() {
        let web = s("http_requests_total", &[("host", "web-1"), ("dc", "eu")]);
        let db = s("http_requests_total", &[("host", "db-1")]);
        let sel = |t: &str| Selector::parse(t).unwrap();
        assert!(sel("http_requests_total").matches(&web));
        assert!(!sel("cpu").matches(&web));
        assert!(sel(r#"{__name__="http_requests_total"}"#).matches(&web));
        assert!(sel(r#"{host="web-1"}"#).matches(&web));
        assert!(sel(r#"http_requests_total{host!="web-1"}"#).matches(&db));
        assert!(sel(r#"{host=~"web-.*"}"#).matches(&web));
        assert!(!sel(r#"{host=~"web"}"#).matches(&web), "regex is anchored");
        assert!(sel(r#"{__name__=~"http.+", host!~"web-.*"}"#).matches(&db));
        // A missing label matches as the empty string.
        assert!(sel(r#"http_requests_total{dc=""}"#).matches(&db));
        assert!(!sel(r#"http_requests_total{dc=""}"#).matches(&web));
        assert!(sel(r#"{__name__=~"http_.*", dc!="us"}"#).matches(&db));
    }

    #[test]
    fn rejects_what_is_not_a_selector() {
        // As in Prometheus, a selector needs a matcher that does not match "".
        for bad in [
            r#"{host!="a"}"#,
            "rate(x[5m])",
            "x offset 5m",
            "{host=~\"(\"}",
            "cpu{",
            "1 + 1",
            "",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad} should not parse");
        }
    }
}
