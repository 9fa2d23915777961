//! Receivers' own titles and texts: Alertmanager's notification templates
//! (Go's `text/template`, through `gtmpl`) over a notification's data, as
//! Alertmanager gives it to them: `.Receiver`, `.Status`, `.GroupKey`,
//! `.GroupLabels`, `.CommonLabels`, `.CommonAnnotations`, `.ExternalURL`,
//! and `.Alerts`, each with `.Status`, `.Labels`, `.Annotations`,
//! `.StartsAt`, `.EndsAt`, `.GeneratorURL` and `.Fingerprint`. The named
//! templates of the configuration's `templates:` files can be called
//! (`{{ template "slack.title" . }}`). `.Alerts` is a list; Alertmanager's
//! `.Alerts.Firing` and `.Alerts.Resolved` methods, which gtmpl has no
//! way to call on a list, are rewritten in actions to fields of the root
//! holding those lists ([`methods`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use gtmpl::{Context, Func, FuncError, Value};

use tidemark_engine::notify::{LabelMap, Notification, Status};

/// A template of a receiver's field, checked when the sink is validated.
#[derive(Clone)]
pub(crate) struct Text {
    text: String,
    /// The `templates:` files' definitions, shared by every field.
    defs: Arc<str>,
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Text({:?})", self.text)
    }
}

impl Text {
    /// `text`, with the named templates of `defs`; an error says why it
    /// does not parse.
    pub(crate) fn new(text: &str, defs: &Arc<str>) -> Result<Text, String> {
        compile(defs, text)?;
        Ok(Text {
            text: text.to_owned(),
            defs: Arc::clone(defs),
        })
    }

    /// The text for a notification; an error says what failed (a missing
    /// template, a function given the wrong arguments).
    pub(crate) fn render(&self, n: &Notification) -> Result<String, String> {
        compile(&self.defs, &self.text)?
            .render(&Context::from(data(n)))
            .map_err(|e| e.to_string())
    }
}

/// The root fields that stand for `.Alerts.Firing` and `.Alerts.Resolved`.
const FIRING: &str = "AlertsFiring";
const RESOLVED: &str = "AlertsResolved";

/// Rewrites `.Alerts.Firing` and `.Alerts.Resolved` inside actions
/// (`{{ ... }}`) to `.AlertsFiring` and `.AlertsResolved`, so that
/// `{{ .Alerts.Firing | len }}` or `{{ range $.Alerts.Resolved }}` work
/// as in Alertmanager.
fn methods(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let action = &rest[open..];
        let end = action.find("}}").map_or(action.len(), |e| e + 2);
        let mut a = &action[..end];
        while let Some(at) = a.find(".Alerts.") {
            out.push_str(&a[..at]);
            let after = &a[at + ".Alerts.".len()..];
            let word = after
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            match &after[..word] {
                "Firing" => out.push_str(&format!(".{FIRING}")),
                "Resolved" => out.push_str(&format!(".{RESOLVED}")),
                other => {
                    out.push_str(".Alerts.");
                    out.push_str(other);
                }
            }
            a = &after[word..];
        }
        out.push_str(a);
        rest = &action[end..];
    }
    out.push_str(rest);
    out
}

fn compile(defs: &str, text: &str) -> Result<gtmpl::Template, String> {
    tidemark_engine::validate::template_actions_closed(defs)?;
    tidemark_engine::validate::template_actions_closed(text)?;
    let (defs, text) = (methods(defs), methods(text));
    let mut t = gtmpl::Template::default();
    t.add_funcs(&[
        ("toUpper", to_upper as Func),
        ("toLower", to_lower as Func),
        ("title", title as Func),
        ("join", join as Func),
        ("safeHtml", safe_html as Func),
    ]);
    t.parse(format!("{defs}{text}"))
        .map_err(|e| e.to_string())?;
    Ok(t)
}

fn map(m: &LabelMap) -> Value {
    Value::Map(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn status(s: Status) -> Value {
    Value::String(match s {
        Status::Firing => "firing".into(),
        Status::Resolved => "resolved".into(),
    })
}

/// RFC 3339 in UTC, as Go prints a `time.Time` in a template; an alert
/// that has not ended shows Go's zero time, as in Alertmanager.
fn time(ms: Option<i64>) -> Value {
    let text = ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "0001-01-01T00:00:00Z".to_owned(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
    Value::String(text)
}

fn data(n: &Notification) -> Value {
    let alerts: Vec<(Status, Value)> = n
        .alerts
        .iter()
        .map(|a| {
            let mut m = HashMap::new();
            m.insert("Status".to_owned(), status(a.status));
            m.insert("Labels".to_owned(), map(&a.labels));
            m.insert("Annotations".to_owned(), map(&a.annotations));
            m.insert("StartsAt".to_owned(), time(Some(a.starts_at)));
            m.insert("EndsAt".to_owned(), time(a.ends_at));
            m.insert(
                "GeneratorURL".to_owned(),
                Value::String(a.generator_url.clone()),
            );
            m.insert(
                "Fingerprint".to_owned(),
                Value::String(a.fingerprint.clone()),
            );
            (a.status, Value::Map(m))
        })
        .collect();
    let only = |status: Status| {
        Value::Array(
            alerts
                .iter()
                .filter(|(s, _)| *s == status)
                .map(|(_, a)| a.clone())
                .collect(),
        )
    };
    let mut root = HashMap::new();
    root.insert(FIRING.to_owned(), only(Status::Firing));
    root.insert(RESOLVED.to_owned(), only(Status::Resolved));
    root.insert("Receiver".to_owned(), Value::String(n.receiver.clone()));
    root.insert("Status".to_owned(), status(n.status));
    root.insert("GroupKey".to_owned(), Value::String(n.group_key.clone()));
    root.insert("GroupLabels".to_owned(), map(&n.group_labels));
    root.insert("CommonLabels".to_owned(), map(&n.common_labels));
    root.insert("CommonAnnotations".to_owned(), map(&n.common_annotations));
    root.insert(
        "ExternalURL".to_owned(),
        Value::String(n.external_url.clone()),
    );
    root.insert(
        "Alerts".to_owned(),
        Value::Array(alerts.into_iter().map(|(_, a)| a).collect()),
    );
    Value::Map(root)
}

fn string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn one<'a>(name: &str, args: &'a [Value]) -> Result<&'a Value, FuncError> {
    match args {
        [v] => Ok(v),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 1)),
    }
}

fn to_upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(string(one("toUpper", args)?).to_uppercase()))
}

fn to_lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(string(one("toLower", args)?).to_lowercase()))
}

fn title(args: &[Value]) -> Result<Value, FuncError> {
    let text = string(one("title", args)?);
    let mut out = String::with_capacity(text.len());
    let mut start = true;
    for c in text.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    Ok(Value::String(out))
}

fn safe_html(args: &[Value]) -> Result<Value, FuncError> {
    Ok(one("safeHtml", args)?.clone())
}

/// `join SEP LIST`, as Alertmanager's (the separator first).
fn join(args: &[Value]) -> Result<Value, FuncError> {
    let [sep, Value::Array(items)] = args else {
        return Err(FuncError::ExactlyXArgs("join".into(), 2));
    };
    let parts: Vec<String> = items.iter().map(string).collect();
    Ok(Value::String(parts.join(&string(sep))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_engine::notify::{NotifiedAlert, labels};

    fn notification() -> Notification {
        let alert = |host: &str, status| NotifiedAlert {
            status,
            labels: labels(&[("alertname", "Down"), ("host", host)]),
            annotations: labels(&[("summary", &format!("{host} is down"))]),
            starts_at: 1_795_590_000_000,
            ends_at: (status == Status::Resolved).then_some(1_795_590_060_000),
            generator_url: "/graph".into(),
            fingerprint: format!("{host:0>16}"),
        };
        Notification {
            version: "4".into(),
            group_key: "{}:{alertname=\"Down\"}".into(),
            truncated_alerts: 0,
            status: Status::Firing,
            receiver: "oncall".into(),
            group_labels: labels(&[("alertname", "Down")]),
            common_labels: labels(&[("alertname", "Down")]),
            common_annotations: LabelMap::new(),
            external_url: "http://tidemark.test".into(),
            alerts: vec![alert("a", Status::Firing), alert("b", Status::Resolved)],
            at: 1_795_590_060_000,
        }
    }

    #[test]
    fn templates_see_alertmanagers_data_and_named_templates() {
        let defs: Arc<str> = Arc::from(
            r#"{{ define "t.title" }}[{{ .Status | toUpper }}] {{ .GroupLabels.alertname }}{{ end }}"#,
        );
        let n = notification();
        let render = |text: &str| Text::new(text, &defs).unwrap().render(&n).unwrap();
        assert_eq!(render(r#"{{ template "t.title" . }}"#), "[FIRING] Down");
        assert_eq!(
            render(
                "{{ range .Alerts }}{{ .Labels.host }}:{{ .Status }}:{{ .Annotations.summary }};{{ end }}"
            ),
            "a:firing:a is down;b:resolved:b is down;"
        );
        assert_eq!(
            render(
                "{{ range .Alerts }}{{ if eq .Status \"firing\" }}{{ .StartsAt }} {{ .EndsAt }}{{ end }}{{ end }}"
            ),
            "2026-11-25T07:00:00.000Z 0001-01-01T00:00:00Z"
        );
        assert_eq!(
            render("{{ .Receiver | title }} {{ .ExternalURL }}"),
            "Oncall http://tidemark.test"
        );
        let none: Arc<str> = Arc::from("");
        assert!(Text::new("{{ .Receiver ", &none).is_err(), "does not parse");
        assert!(
            Text::new("{{ .Alerts | len }} {{ x ", &none).is_err(),
            "unclosed"
        );
        let missing = Text::new(r#"{{ template "nope" . }}"#, &none).unwrap();
        assert!(missing.render(&n).is_err(), "no such template");
    }

    /// `.Alerts.Firing` and `.Alerts.Resolved` as in Alertmanager (in
    /// actions only; text outside them is left alone).
    #[test]
    fn firing_and_resolved_alerts_as_alertmanagers_methods() {
        let defs: Arc<str> =
            Arc::from(r#"{{ define "n" }}{{ len .Alerts.Firing }}/{{ len .Alerts }}{{ end }}"#);
        let n = notification();
        let render = |text: &str| Text::new(text, &defs).unwrap().render(&n).unwrap();
        assert_eq!(
            render("[{{ .Status | toUpper }}:{{ .Alerts.Firing | len }}] .Alerts.Firing"),
            "[FIRING:1] .Alerts.Firing"
        );
        assert_eq!(
            render(
                "{{ range .Alerts.Resolved }}{{ .Labels.host }}{{ end }}|{{ range $.Alerts.Firing }}{{ .Labels.host }}{{ end }}"
            ),
            "b|a"
        );
        assert_eq!(render(r#"{{ template "n" . }}"#), "1/2");
        assert_eq!(
            methods("{{ .Alerts.FiringX }} {{.Alerts.Resolved}}"),
            "{{ .Alerts.FiringX }} {{.AlertsResolved}}"
        );
    }
}
