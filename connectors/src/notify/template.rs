//! Receivers' own titles and texts: Alertmanager's notification templates
//! (Go's `text/template`, through `gtmpl`) over a notification's data, as
//! Alertmanager gives it to them: `.Receiver`, `.Status`, `.GroupKey`,
//! `.GroupLabels`, `.CommonLabels`, `.CommonAnnotations`, `.ExternalURL`,
//! and `.Alerts`, each with `.Status`, `.Labels`, `.Annotations`,
//! `.StartsAt`, `.EndsAt`, `.GeneratorURL` and `.Fingerprint`. The named
//! templates of the configuration's `templates:` files can be called
//! (`{{ template "slack.title" . }}`), and so can Alertmanager's built-in
//! ones (`__subject`, `slack.default.title`, `email.default.html`...),
//! each rendering what Tidemark sends when the field is left out
//! ([`BUILTIN`]); a `templates:` file may define them anew. Alertmanager's
//! methods, which gtmpl has no way to call, are rewritten in actions to
//! what it can call ([`methods`]): `.Alerts.Firing` and `.Alerts.Resolved`
//! to fields of the root holding those lists, and the label sets'
//! `SortedPairs`, `Names`, `Values` and `Remove` to functions.

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

/// Rewrites Alertmanager's methods inside actions (`{{ ... }}`, outside
/// quoted strings) to what gtmpl can call:
/// - `.Alerts.Firing` and `.Alerts.Resolved` to `.AlertsFiring` and
///   `.AlertsResolved`, so that `{{ .Alerts.Firing | len }}` or
///   `{{ range $.Alerts.Resolved }}` work as in Alertmanager;
/// - `X.SortedPairs`, `X.Names` and `X.Values` (of a label set, or of its
///   sorted pairs) to `(sortedPairs X)`, `(names X)` and `(values X)`;
/// - `X.Remove NAMES` (a method with an argument, so the first word of a
///   command) to `remove X NAMES`.
fn methods(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let action = &rest[open..];
        let end = action.find("}}").map_or(action.len(), |e| e + 2);
        out.push_str(&action_methods(&action[..end]));
        rest = &action[end..];
    }
    out.push_str(rest);
    out
}

fn action_methods(action: &str) -> String {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(action.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut prev = ' ';
    let mut chars = action.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' && q == '"' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            prev = c;
            continue;
        }
        if c == '"' || c == '`' {
            quote = Some(c);
        } else if (c == '.' || c == '$') && !word(prev) && prev != ')' {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if !(word(d) || d == '.' || d == '$') {
                    break;
                }
                end = j + d.len_utf8();
                chars.next();
            }
            out.push_str(&chain(&action[i..end]));
            prev = 'x';
            continue;
        }
        out.push(c);
        prev = c;
    }
    out
}

/// One field chain (`.Alerts.Firing`, `$.GroupLabels.SortedPairs.Values`,
/// `$a.Labels`) with its methods rewritten.
fn chain(text: &str) -> String {
    let (mut expr, fields) = match text.find('.') {
        Some(dot) => (text[..dot].to_owned(), &text[dot + 1..]),
        None => return text.to_owned(),
    };
    let dot = |e: &str| {
        if e.is_empty() {
            ".".to_owned()
        } else {
            e.to_owned()
        }
    };
    let mut last = "";
    for field in fields.split('.') {
        match field {
            "Firing" | "Resolved" if last == "Alerts" => expr.push_str(field),
            "SortedPairs" => expr = format!("(sortedPairs {})", dot(&expr)),
            "Names" => expr = format!("(names {})", dot(&expr)),
            "Values" => expr = format!("(values {})", dot(&expr)),
            "Remove" => expr = format!("remove {}", dot(&expr)),
            _ => {
                expr.push('.');
                expr.push_str(field);
            }
        }
        last = field;
    }
    expr
}

/// Alertmanager's built-in named templates, each rendering what Tidemark
/// sends when the field is left out (the root's hidden `TidemarkDefaults`
/// holds those texts); `__alertmanager` names Tidemark. Like
/// Alertmanager's, they read the notification's data, so call them with
/// it (`{{ template "__subject" . }}`).
const BUILTIN: &[(&str, &str)] = &[
    ("__alertmanager", "Tidemark"),
    ("__alertmanagerURL", "{{ .TidemarkDefaults.Link }}"),
    ("__subject", "{{ .TidemarkDefaults.Subject }}"),
    ("__description", ""),
    (
        "__text_alert_list",
        "{{ range . }}Labels:\n{{ range .Labels.SortedPairs }} - {{ .Name }} = {{ .Value }}\n{{ end }}\
         Annotations:\n{{ range .Annotations.SortedPairs }} - {{ .Name }} = {{ .Value }}\n{{ end }}\
         Source: {{ .GeneratorURL }}\n{{ end }}",
    ),
    ("slack.default.title", "{{ template \"__subject\" . }}"),
    (
        "slack.default.username",
        "{{ template \"__alertmanager\" . }}",
    ),
    (
        "slack.default.fallback",
        "{{ template \"slack.default.title\" . }} | {{ template \"slack.default.titlelink\" . }}",
    ),
    ("slack.default.callbackid", ""),
    ("slack.default.pretext", ""),
    (
        "slack.default.titlelink",
        "{{ template \"__alertmanagerURL\" . }}",
    ),
    ("slack.default.iconemoji", ""),
    ("slack.default.iconurl", ""),
    ("slack.default.text", "{{ .TidemarkDefaults.SlackText }}"),
    ("slack.default.footer", ""),
    (
        "pagerduty.default.description",
        "{{ template \"__subject\" . }}",
    ),
    (
        "pagerduty.default.client",
        "{{ template \"__alertmanager\" . }}",
    ),
    (
        "pagerduty.default.clientURL",
        "{{ template \"__alertmanagerURL\" . }}",
    ),
    (
        "pagerduty.default.instances",
        "{{ template \"__text_alert_list\" . }}",
    ),
    ("email.default.subject", "{{ template \"__subject\" . }}"),
    ("email.default.text", "{{ .TidemarkDefaults.EmailText }}"),
    ("email.default.html", "{{ .TidemarkDefaults.EmailHTML }}"),
];

/// The built-in templates that `defined` (the configuration's files and
/// the field itself) does not define anew: gtmpl refuses a second
/// definition of a name, and Alertmanager lets a file replace its own.
fn builtins(defined: &str) -> String {
    BUILTIN
        .iter()
        .filter(|(name, _)| !defined.contains(&format!("define \"{name}\"")))
        .map(|(name, body)| format!("{{{{ define \"{name}\" }}}}{body}{{{{ end }}}}"))
        .collect()
}

fn compile(defs: &str, text: &str) -> Result<gtmpl::Template, String> {
    tidemark_engine::validate::template_actions_closed(defs)?;
    tidemark_engine::validate::template_actions_closed(text)?;
    let builtin = builtins(&format!("{defs}{text}"));
    let (defs, text) = (methods(&format!("{builtin}{defs}")), methods(text));
    let mut t = gtmpl::Template::default();
    t.add_funcs(&[
        ("toUpper", to_upper as Func),
        ("toLower", to_lower as Func),
        ("title", title as Func),
        ("join", join as Func),
        ("safeHtml", safe_html as Func),
        ("sortedPairs", sorted_pairs as Func),
        ("names", names as Func),
        ("values", values as Func),
        ("remove", remove as Func),
        ("len", len as Func),
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
    let (email_text, email_html) = super::email::bodies(n);
    root.insert(
        "TidemarkDefaults".to_owned(),
        Value::Map(HashMap::from([
            (
                "Subject".to_owned(),
                Value::String(super::receivers::subject(n)),
            ),
            ("Link".to_owned(), Value::String(super::receivers::link(n))),
            (
                "SlackText".to_owned(),
                Value::String(super::receivers::alert_lines(n)),
            ),
            ("EmailText".to_owned(), Value::String(email_text)),
            ("EmailHTML".to_owned(), Value::String(email_html)),
        ])),
    );
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

/// A label set's pairs sorted by name, each with `.Name` and `.Value`
/// (Alertmanager's `SortedPairs`).
fn sorted_pairs(args: &[Value]) -> Result<Value, FuncError> {
    let Value::Map(m) = one("SortedPairs", args)? else {
        return Err(FuncError::Generic(
            "SortedPairs of what is not a label set".into(),
        ));
    };
    let mut pairs: Vec<(&String, &Value)> = m.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    Ok(Value::Array(
        pairs
            .into_iter()
            .map(|(k, v)| {
                Value::Map(HashMap::from([
                    ("Name".to_owned(), Value::String(k.clone())),
                    ("Value".to_owned(), v.clone()),
                ]))
            })
            .collect(),
    ))
}

/// The names, or the values, of a label set (sorted by name) or of a list
/// of pairs (in its order).
fn pair_parts(name: &str, args: &[Value], part: &str) -> Result<Value, FuncError> {
    let pairs = match one(name, args)? {
        m @ Value::Map(_) => sorted_pairs(std::slice::from_ref(m))?,
        other => other.clone(),
    };
    let Value::Array(pairs) = pairs else {
        return Err(FuncError::Generic(format!(
            "{name} of what is not a label set"
        )));
    };
    Ok(Value::Array(
        pairs
            .iter()
            .map(|p| match p {
                Value::Map(p) => p.get(part).cloned().unwrap_or(Value::Nil),
                _ => Value::Nil,
            })
            .collect(),
    ))
}

fn names(args: &[Value]) -> Result<Value, FuncError> {
    pair_parts("Names", args, "Name")
}

fn values(args: &[Value]) -> Result<Value, FuncError> {
    pair_parts("Values", args, "Value")
}

/// Go's `len`, of label sets too (gtmpl's takes strings, lists and
/// objects only).
fn len(args: &[Value]) -> Result<Value, FuncError> {
    let n = match one("len", args)? {
        Value::String(s) => s.len(),
        Value::Array(a) => a.len(),
        Value::Object(m) | Value::Map(m) => m.len(),
        other => return Err(FuncError::Generic(format!("unable to call len on {other}"))),
    };
    Ok(Value::from(n as u64))
}

/// A label set without the labels named (Alertmanager's `Remove`).
fn remove(args: &[Value]) -> Result<Value, FuncError> {
    let [Value::Map(m), Value::Array(gone)] = args else {
        return Err(FuncError::Generic(
            "Remove takes a label set and a list of names".into(),
        ));
    };
    let gone: Vec<String> = gone.iter().map(string).collect();
    Ok(Value::Map(
        m.iter()
            .filter(|(k, _)| !gone.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    ))
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

    /// Label sets' methods, and Alertmanager's own `__subject` written
    /// with them: the same text as Tidemark's default subject.
    #[test]
    fn label_sets_methods_as_alertmanagers() {
        let mut n = notification();
        n.common_labels = labels(&[("alertname", "Down"), ("team", "db"), ("env", "prod")]);
        let none: Arc<str> = Arc::from("");
        let render = |text: &str| Text::new(text, &none).unwrap().render(&n).unwrap();
        assert_eq!(
            render("{{ range .CommonLabels.SortedPairs }}{{ .Name }}={{ .Value }},{{ end }}"),
            "alertname=Down,env=prod,team=db,"
        );
        assert_eq!(
            render(
                r#"{{ .CommonLabels.Names | join "," }}|{{ $.CommonLabels.SortedPairs.Values | join "," }}"#
            ),
            "alertname,env,team|Down,prod,db"
        );
        assert_eq!(
            render(
                r#"{{ with .CommonLabels.Remove .GroupLabels.Names }}{{ .Values | join " " }}{{ end }}"#
            ),
            "prod db"
        );
        // Left alone: text outside actions, quoted strings, other fields.
        assert_eq!(
            render(r#"a.Names {{ ".Names" }} {{ .GroupLabels.alertname }}"#),
            "a.Names .Names Down"
        );
        let subject = r#"[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}] {{ .GroupLabels.SortedPairs.Values | join " " }} {{ if gt (len .CommonLabels) (len .GroupLabels) }}({{ with .CommonLabels.Remove .GroupLabels.Names }}{{ .Values | join " " }}{{ end }}){{ end }}"#;
        assert_eq!(render(subject), super::super::receivers::subject(&n));
    }

    /// Alertmanager's built-in named templates render what Tidemark sends
    /// by default, and a `templates:` file may define them anew.
    #[test]
    fn alertmanagers_built_in_templates() {
        let n = notification();
        let none: Arc<str> = Arc::from("");
        let render = |text: &str| Text::new(text, &none).unwrap().render(&n).unwrap();
        let subject = super::super::receivers::subject(&n);
        let link = super::super::receivers::link(&n);
        assert_eq!(render(r#"{{ template "slack.default.title" . }}"#), subject);
        assert_eq!(
            render(r#"{{ template "email.default.subject" . }}"#),
            subject
        );
        assert_eq!(
            render(r#"{{ template "pagerduty.default.description" . }}"#),
            subject
        );
        assert_eq!(
            render(r#"{{ template "slack.default.fallback" . }}"#),
            format!("{subject} | {link}")
        );
        assert_eq!(
            render(r#"{{ template "slack.default.username" . }}"#),
            "Tidemark"
        );
        assert_eq!(
            render(r#"{{ template "slack.default.text" . }}"#),
            super::super::receivers::alert_lines(&n)
        );
        let (text, html) = super::super::email::bodies(&n);
        assert_eq!(render(r#"{{ template "email.default.text" . }}"#), text);
        assert_eq!(render(r#"{{ template "email.default.html" . }}"#), html);
        assert_eq!(
            render(r#"{{ template "__text_alert_list" .Alerts.Firing }}"#),
            "Labels:\n - alertname = Down\n - host = a\nAnnotations:\n - summary = a is down\nSource: /graph\n"
        );
        let own: Arc<str> = Arc::from(r#"{{ define "__subject" }}mine: {{ .Receiver }}{{ end }}"#);
        let t = Text::new(r#"{{ template "slack.default.title" . }}"#, &own).unwrap();
        assert_eq!(t.render(&n).unwrap(), "mine: oncall");
    }
}
