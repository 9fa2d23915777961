//! Prometheus rule files: groups of recording and alerting rules, parsed
//! and checked the way `promtool check rules` does, every error with its
//! place.

use std::collections::BTreeMap;
use std::sync::Arc;

use promql_parser::parser::Expr;
use serde::Deserialize;
use tidemark_engine::component::ConfigError;
use tidemark_engine::yaml;

use super::template::Template;

/// A rule file as Prometheus writes it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleFileConfig {
    /// The rule groups.
    pub groups: Vec<GroupConfig>,
}

/// A group: rules evaluated in order at every step of its interval.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Unique within the file.
    pub name: String,
    /// How often the group is evaluated (event time); the transform's
    /// `interval` when absent.
    #[serde(default)]
    pub interval: Option<String>,
    /// At most this many series per rule (0: no limit); a rule that gives
    /// more fails that step, as in Prometheus.
    #[serde(default)]
    pub limit: Option<u64>,
    /// The rules, evaluated in this order; each sees the results of those
    /// before it at the same step.
    pub rules: Vec<RuleConfig>,
}

/// A recording rule (`record`) or an alerting rule (`alert`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The series a recording rule writes.
    #[serde(default)]
    pub record: Option<String>,
    /// The name of an alerting rule (its `alertname` label).
    #[serde(default)]
    pub alert: Option<String>,
    /// The PromQL expression.
    pub expr: serde_json::Value,
    /// How long an alert's condition must hold before it fires.
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    /// How long an alert keeps firing after its condition stops holding.
    #[serde(default)]
    pub keep_firing_for: Option<String>,
    /// Labels added to (or replacing) the result's; templates for alerts.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// An alert's annotations, in Prometheus's template language.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// What a validated rule does.
#[derive(Clone, Debug)]
pub enum RuleKind {
    /// Writes its result as series named `name`.
    Record,
    /// Keeps alert instances for its result's series.
    Alert {
        /// `for`, in milliseconds.
        hold: i64,
        /// `keep_firing_for`, in milliseconds.
        keep_firing: i64,
        /// Annotation templates, by name.
        annotations: Vec<(String, Template)>,
    },
}

/// A validated rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The recorded series' name or the alert's name.
    pub name: String,
    /// The expression as written.
    pub text: String,
    /// The parsed expression.
    pub expr: Arc<Expr>,
    /// Labels to add (templates for alerts).
    pub labels: Vec<(String, Template)>,
    /// Recording or alerting.
    pub kind: RuleKind,
}

/// A validated group.
#[derive(Clone, Debug)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// The file it came from (`inline` for rules in the pipeline).
    pub file: String,
    /// Evaluation interval in milliseconds.
    pub interval: i64,
    /// Series limit per rule (0: none).
    pub limit: u64,
    /// Its rules, in order.
    pub rules: Vec<Rule>,
}

/// A Prometheus duration (`5m`, `1h30m`, `0s`), in milliseconds.
pub fn duration_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(0);
    }
    promql_parser::util::parse_duration(text)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| format!("invalid duration {text:?}: {e}"))
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a rule file's text; errors name `file`, line and column.
pub fn parse_file(
    file: &str,
    text: &str,
    default_interval: i64,
) -> Result<Vec<Group>, Vec<String>> {
    located(file, text, |json| from_json(json, default_interval, file))
}

/// Parses YAML `text` from `file` and checks it with `check`; every error
/// is given as `FILE:LINE:COLUMN: message`.
pub(crate) fn located<T>(
    file: &str,
    text: &str,
    check: impl FnOnce(&serde_json::Value) -> Result<T, Vec<ConfigError>>,
) -> Result<T, Vec<String>> {
    let root = yaml::parse(text).map_err(|e| {
        vec![format!(
            "{file}:{}:{}: {}",
            e.pos.line, e.pos.column, e.message
        )]
    })?;
    check(&root.to_json()).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| {
                let pos = root.locate(&e.field, false);
                format!("{file}:{}:{}: {}", pos.line, pos.column, e.message)
            })
            .collect()
    })
}

/// Validates the rule-file structure in `json` (from a file or inline in
/// the pipeline); errors are located by their path inside it.
pub fn from_json(
    json: &serde_json::Value,
    default_interval: i64,
    file: &str,
) -> Result<Vec<Group>, Vec<ConfigError>> {
    let config: RuleFileConfig = deserialize(json)?;
    let mut errors = Vec::new();
    let mut groups = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (g, group) in config.groups.iter().enumerate() {
        let at = |rest: &[&str]| -> Vec<String> {
            let mut path = vec!["groups".to_owned(), g.to_string()];
            path.extend(rest.iter().map(|s| s.to_string()));
            path
        };
        if group.name.is_empty() {
            errors.push(ConfigError {
                field: at(&["name"]),
                message: "group name must not be empty".into(),
            });
        } else if !names.insert(group.name.clone()) {
            errors.push(ConfigError {
                field: at(&["name"]),
                message: format!("{:?}: repeated in the same file", group.name),
            });
        }
        let interval = match &group.interval {
            None => default_interval,
            Some(text) => match duration_ms(text) {
                Ok(0) => {
                    errors.push(ConfigError {
                        field: at(&["interval"]),
                        message: "interval must be greater than 0".into(),
                    });
                    default_interval
                }
                Ok(ms) => ms,
                Err(e) => {
                    errors.push(ConfigError {
                        field: at(&["interval"]),
                        message: e,
                    });
                    default_interval
                }
            },
        };
        let mut rules = Vec::new();
        for (r, rule) in group.rules.iter().enumerate() {
            let rule_at = |field: &str| {
                let mut path = at(&["rules", &r.to_string()]);
                if !field.is_empty() {
                    path.push(field.to_owned());
                }
                path
            };
            match validate_rule(rule) {
                Ok(rule) => rules.push(rule),
                Err(problems) => {
                    errors.extend(problems.into_iter().map(|(field, message)| ConfigError {
                        field: rule_at(field),
                        message,
                    }))
                }
            }
        }
        groups.push(Group {
            name: group.name.clone(),
            file: file.to_owned(),
            interval,
            limit: group.limit.unwrap_or(0),
            rules,
        });
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(errors)
    }
}

/// A serde message without the value it quotes (`invalid type: string
/// "...", expected ...`), so that reading a file that is not a rule file
/// repeats none of it.
/// Deserialises `json` into `T`; an error names the path of the field it
/// is about and repeats none of the file's content (a refused secret
/// stays out of logs).
pub(crate) fn deserialize<T: serde::de::DeserializeOwned>(
    json: &serde_json::Value,
) -> Result<T, Vec<ConfigError>> {
    serde_path_to_error::deserialize(json).map_err(|e| {
        let field = e
            .path()
            .iter()
            .map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => index.to_string(),
                serde_path_to_error::Segment::Map { key } => key.clone(),
                serde_path_to_error::Segment::Enum { variant } => variant.clone(),
                serde_path_to_error::Segment::Unknown => "?".into(),
            })
            .collect();
        vec![ConfigError {
            field,
            message: without_content(&e.inner().to_string()),
        }]
    })
}

fn without_content(message: &str) -> String {
    match (message.strip_prefix("invalid "), message.find(", expected")) {
        (Some(rest), Some(at)) => {
            let what = rest.split(':').next().unwrap_or("value");
            format!("invalid {what}{}", &message[at..])
        }
        _ => message.to_owned(),
    }
}

/// Checks one rule; problems are (field, message).
fn validate_rule(rule: &RuleConfig) -> Result<Rule, Vec<(&'static str, String)>> {
    let mut problems: Vec<(&'static str, String)> = Vec::new();
    let name = match (&rule.record, &rule.alert) {
        (Some(_), Some(_)) => {
            problems.push(("", "only one of 'record' and 'alert' may be set".into()));
            String::new()
        }
        (None, None) => {
            problems.push(("", "one of 'record' or 'alert' must be set".into()));
            String::new()
        }
        (Some(record), None) => {
            if !valid_metric_name(record) {
                problems.push(("record", format!("invalid recording rule name: {record}")));
            }
            for (field, set) in [
                ("for", rule.for_.is_some()),
                ("keep_firing_for", rule.keep_firing_for.is_some()),
                ("annotations", !rule.annotations.is_empty()),
            ] {
                if set {
                    problems.push((field, format!("invalid field '{field}' in recording rule")));
                }
            }
            record.clone()
        }
        (None, Some(alert)) => {
            if alert.is_empty() {
                problems.push(("alert", "alert name must not be empty".into()));
            }
            alert.clone()
        }
    };
    let text = match &rule.expr {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => {
            problems.push(("expr", "expr must be a PromQL expression".into()));
            String::new()
        }
    };
    let expr = if text.trim().is_empty() {
        problems.push(("expr", "field 'expr' must be set in rule".into()));
        None
    } else {
        match tidemark_promql::parse(&text) {
            Ok(expr) => Some(expr),
            Err(e) => {
                problems.push(("expr", format!("could not parse expression: {e}")));
                None
            }
        }
    };
    let mut labels = Vec::new();
    for (k, v) in &rule.labels {
        if !valid_label_name(k) || k == "__name__" {
            problems.push(("labels", format!("invalid label name: {k}")));
            continue;
        }
        match Template::parse(k, v) {
            Ok(t) => labels.push((k.clone(), t)),
            Err(e) => problems.push(("labels", e)),
        }
    }
    let hold = rule.for_.as_deref().map(duration_ms).transpose();
    let keep = rule.keep_firing_for.as_deref().map(duration_ms).transpose();
    let (hold, keep_firing) = match (hold, keep) {
        (Ok(h), Ok(k)) => (h.unwrap_or(0), k.unwrap_or(0)),
        (h, k) => {
            if let Err(e) = h {
                problems.push(("for", e));
            }
            if let Err(e) = k {
                problems.push(("keep_firing_for", e));
            }
            (0, 0)
        }
    };
    let mut annotations = Vec::new();
    for (k, v) in &rule.annotations {
        if !valid_label_name(k) {
            problems.push(("annotations", format!("invalid annotation name: {k}")));
            continue;
        }
        match Template::parse(k, v) {
            Ok(t) => annotations.push((k.clone(), t)),
            Err(e) => problems.push(("annotations", e)),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let kind = if rule.record.is_some() {
        RuleKind::Record
    } else {
        RuleKind::Alert {
            hold,
            keep_firing,
            annotations,
        }
    };
    Ok(Rule {
        name,
        text,
        expr: Arc::new(expr.expect("no problems, so the expression parsed")),
        labels,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_rule_files() {
        let text = "groups:\n- name: a\n  interval: 30s\n  rules:\n  - record: job:x:sum\n    expr: sum by (job) (x)\n  - alert: High\n    expr: job:x:sum > 10\n    for: 5m\n    keep_firing_for: 1m\n    labels: {severity: page}\n    annotations: {summary: '{{ $labels.job }} is {{ $value }}'}\n";
        let groups = parse_file("r.yml", text, 60_000).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].interval, 30_000);
        assert_eq!(groups[0].rules.len(), 2);
        let RuleKind::Alert {
            hold,
            keep_firing,
            annotations,
        } = &groups[0].rules[1].kind
        else {
            panic!()
        };
        assert_eq!(
            (*hold, *keep_firing, annotations.len()),
            (300_000, 60_000, 1)
        );
    }

    #[test]
    fn reports_every_error_with_its_place() {
        let text = "groups:\n- name: a\n  rules:\n  - record: 'bad name'\n    expr: sum(\n  - alert: X\n    expr: up\n    for: soon\n- name: a\n  rules:\n  - alert: Y\n    record: y\n    expr: up\n  - alert: Z\n    expr: histogram_count(x)\n    annotations: {a: '{{ .Foo'}\n";
        let errors = parse_file("r.yml", text, 60_000).unwrap_err();
        let all = errors.join("\n");
        for want in [
            "r.yml:4:13: invalid recording rule name: bad name",
            "r.yml:5:11: could not parse expression",
            "r.yml:8:10: invalid duration \"soon\"",
            "r.yml:9:9: \"a\": repeated in the same file",
            "r.yml:11:10: only one of 'record' and 'alert' may be set",
            "r.yml:15:11: could not parse expression: function histogram_count() is not supported",
            "r.yml:16:18:",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        assert_eq!(errors.len(), 7, "{all}");
        let unknown = parse_file(
            "r.yml",
            "groups:\n- name: a\n  rules:\n  - alert: X\n    expr: up\n    fore: 5m\n",
            1,
        )
        .unwrap_err();
        assert!(
            unknown[0].starts_with("r.yml:6:11: unknown field `fore`"),
            "{unknown:?}"
        );
    }
}
