//! Annotation and label templates in Prometheus's template language (Go's
//! `text/template`, through the `gtmpl` crate), with the variables and
//! functions Prometheus gives them: `$labels`, `$value`,
//! `$externalLabels`, `$externalURL`, `humanize` and friends.
//!
//! `$value` is the value formatted as Go formats a float64 (`18`,
//! `1.234567e+06`), so that `{{ $value }}` reads as it does in
//! Prometheus; the comparison functions (`gt`, `eq`, ...) and the
//! `humanize` family read such numbers back.

use std::collections::HashMap;
use std::fmt;

use gtmpl::{Context, Func, FuncError, Value};
use tidemark_promql::gofmt;

/// A parsed template and its text.
#[derive(Clone)]
pub struct Template {
    text: String,
    plain: bool,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.text)
    }
}

/// What Prometheus defines before every template.
const PRELUDE: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";

/// The data a template sees.
pub struct Data<'a> {
    /// The alert's labels (the result's, before the rule's are added).
    pub labels: &'a [(String, String)],
    /// The value of the result.
    pub value: f64,
    /// The server's external labels.
    pub external_labels: &'a [(String, String)],
    /// The server's external URL.
    pub external_url: &'a str,
}

fn functions() -> Vec<(&'static str, Func)> {
    vec![
        ("humanize", humanize as Func),
        ("humanize1024", humanize1024 as Func),
        ("humanizeDuration", humanize_duration as Func),
        ("humanizePercentage", humanize_percentage as Func),
        ("humanizeTimestamp", humanize_timestamp as Func),
        ("toUpper", to_upper as Func),
        ("toLower", to_lower as Func),
        ("title", title as Func),
        ("match", match_ as Func),
        ("reReplaceAll", re_replace_all as Func),
        ("stripPort", strip_port as Func),
        ("safeHtml", identity as Func),
        ("eq", eq as Func),
        ("ne", ne as Func),
        ("lt", lt as Func),
        ("le", le as Func),
        ("gt", gt as Func),
        ("ge", ge as Func),
    ]
}

fn compile(text: &str) -> Result<gtmpl::Template, String> {
    tidemark_engine::validate::template_actions_closed(text)?;
    let mut t = gtmpl::Template::default();
    t.add_funcs(&functions());
    t.parse(format!("{PRELUDE}{text}"))
        .map_err(|e| e.to_string())?;
    Ok(t)
}

impl Template {
    /// Parses a template; `name` says what it is for in errors.
    pub fn parse(name: &str, text: &str) -> Result<Template, String> {
        let plain = !text.contains("{{");
        if !plain {
            compile(text).map_err(|e| format!("template {name:?}: {e}"))?;
        }
        Ok(Template {
            text: text.to_owned(),
            plain,
        })
    }

    /// The text as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Expands the template; an error is written in its place, as
    /// Prometheus does (`<error expanding template: ...>`).
    pub fn expand(&self, data: &Data, cache: &mut Cache) -> String {
        if self.plain {
            return self.text.clone();
        }
        let compiled = cache
            .0
            .entry(self.text.clone())
            .or_insert_with(|| compile(&self.text).ok());
        let Some(t) = compiled else {
            return "<error expanding template: does not parse>".into();
        };
        let map = |pairs: &[(String, String)]| {
            Value::Map(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        };
        let mut root = HashMap::new();
        root.insert("Labels".to_owned(), map(data.labels));
        root.insert("ExternalLabels".to_owned(), map(data.external_labels));
        root.insert(
            "ExternalURL".to_owned(),
            Value::String(data.external_url.to_owned()),
        );
        root.insert("Value".to_owned(), Value::String(gofmt::v(data.value)));
        match t.render(&Context::from(Value::Map(root))) {
            Ok(s) => s,
            Err(e) => format!("<error expanding template: {e}>"),
        }
    }
}

/// Compiled templates of one operator, by text (compiled once).
#[derive(Default)]
pub struct Cache(HashMap<String, Option<gtmpl::Template>>);

fn number(v: &Value) -> Result<f64, FuncError> {
    match v {
        Value::Number(n) => n.as_f64().ok_or(FuncError::UnableToConvertFromValue),
        Value::String(s) => match s.as_str() {
            "+Inf" | "Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            s => s
                .parse()
                .map_err(|_| FuncError::Generic(format!("cannot read {s:?} as a number"))),
        },
        _ => Err(FuncError::UnableToConvertFromValue),
    }
}

fn one<'a>(name: &str, args: &'a [Value]) -> Result<&'a Value, FuncError> {
    match args {
        [v] => Ok(v),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 1)),
    }
}

fn string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn humanize(args: &[Value]) -> Result<Value, FuncError> {
    let mut v = number(one("humanize", args)?)?;
    if v == 0.0 || !v.is_finite() {
        return Ok(Value::String(gofmt::g4(v)));
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    Ok(Value::String(format!("{}{prefix}", gofmt::g4(v))))
}

fn humanize1024(args: &[Value]) -> Result<Value, FuncError> {
    let mut v = number(one("humanize1024", args)?)?;
    if v.abs() <= 1.0 || !v.is_finite() {
        return Ok(Value::String(gofmt::g4(v)));
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    Ok(Value::String(format!("{}{prefix}", gofmt::g4(v))))
}

fn humanize_duration(args: &[Value]) -> Result<Value, FuncError> {
    let mut v = number(one("humanizeDuration", args)?)?;
    if !v.is_finite() {
        return Ok(Value::String(gofmt::g4(v)));
    }
    if v == 0.0 {
        return Ok(Value::String(format!("{}s", gofmt::g4(v))));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let v = v.abs();
        let d = v as i64;
        let (s, m, h, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        let text = if days != 0 {
            format!("{sign}{days}d {h}h {m}m {s}s")
        } else if h != 0 {
            format!("{sign}{h}h {m}m {s}s")
        } else if m != 0 {
            format!("{sign}{m}m {s}s")
        } else {
            format!("{sign}{}s", gofmt::g4(v))
        };
        return Ok(Value::String(text));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    Ok(Value::String(format!("{}{prefix}s", gofmt::g4(v))))
}

fn humanize_percentage(args: &[Value]) -> Result<Value, FuncError> {
    let v = number(one("humanizePercentage", args)?)?;
    Ok(Value::String(format!("{}%", gofmt::g4(v * 100.0))))
}

fn humanize_timestamp(args: &[Value]) -> Result<Value, FuncError> {
    let v = number(one("humanizeTimestamp", args)?)?;
    if !v.is_finite() {
        return Ok(Value::String(gofmt::g4(v)));
    }
    let secs = v.floor() as i64;
    let nanos = ((v - v.floor()) * 1e9).round() as u32;
    let t = chrono::DateTime::from_timestamp(secs, nanos.min(999_999_999))
        .ok_or_else(|| FuncError::Generic(format!("{v} is out of range")))?;
    // Go's time.Time.String(): "2006-01-02 15:04:05.999999999 -0700 MST".
    let mut text = t.format("%Y-%m-%d %H:%M:%S").to_string();
    if nanos > 0 {
        let frac = format!("{:09}", nanos);
        text.push('.');
        text.push_str(frac.trim_end_matches('0'));
    }
    text.push_str(" +0000 UTC");
    Ok(Value::String(text))
}

fn to_upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(string(one("toUpper", args)?).to_uppercase()))
}

fn to_lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(string(one("toLower", args)?).to_lowercase()))
}

fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = string(one("title", args)?);
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric() && c != '\'';
    }
    Ok(Value::String(out))
}

fn regex(pattern: &str) -> Result<regex::Regex, FuncError> {
    regex::Regex::new(pattern).map_err(|e| FuncError::Generic(e.to_string()))
}

fn match_(args: &[Value]) -> Result<Value, FuncError> {
    let [pattern, text] = args else {
        return Err(FuncError::ExactlyXArgs("match".into(), 2));
    };
    Ok(Value::Bool(
        regex(&string(pattern))?.is_match(&string(text)),
    ))
}

fn re_replace_all(args: &[Value]) -> Result<Value, FuncError> {
    let [pattern, replacement, text] = args else {
        return Err(FuncError::ExactlyXArgs("reReplaceAll".into(), 3));
    };
    let re = regex(&string(pattern))?;
    Ok(Value::String(
        re.replace_all(&string(text), string(replacement).as_str())
            .into_owned(),
    ))
}

fn strip_port(args: &[Value]) -> Result<Value, FuncError> {
    let s = string(one("stripPort", args)?);
    let host = match s.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        _ => s,
    };
    Ok(Value::String(host))
}

fn identity(args: &[Value]) -> Result<Value, FuncError> {
    Ok(one("safeHtml", args)?.clone())
}

/// Compares two values: as numbers when both read as numbers (`$value`
/// is text), else as text.
fn compare(name: &str, args: &[Value]) -> Result<std::cmp::Ordering, FuncError> {
    let [a, b] = args else {
        return Err(FuncError::ExactlyXArgs(name.into(), 2));
    };
    match (number(a), number(b)) {
        (Ok(x), Ok(y)) => x
            .partial_cmp(&y)
            .ok_or_else(|| FuncError::Generic(format!("{name}: cannot compare NaN"))),
        _ => Ok(string(a).cmp(&string(b))),
    }
}

fn eq(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Bool(compare("eq", args)?.is_eq()))
}
fn ne(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Bool(compare("ne", args)?.is_ne()))
}
fn lt(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Bool(compare("lt", args)?.is_lt()))
}
fn le(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Bool(compare("le", args)?.is_le()))
}
fn gt(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Bool(compare("gt", args)?.is_gt()))
}
fn ge(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Bool(compare("ge", args)?.is_ge()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(text: &str, value: f64) -> String {
        let labels = vec![("job".to_owned(), "api".to_owned())];
        let data = Data {
            labels: &labels,
            value,
            external_labels: &[],
            external_url: "http://tidemark",
        };
        Template::parse("t", text)
            .unwrap()
            .expand(&data, &mut Cache::default())
    }

    #[test]
    fn expands_as_prometheus_does() {
        assert_eq!(
            expand("{{ $labels.job }} at {{ $value }}", 18.0),
            "api at 18"
        );
        assert_eq!(expand("{{ $value }}", 1234567.0), "1.234567e+06");
        assert_eq!(expand("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(expand("{{ humanize $value }}", 0.0123), "12.3m");
        assert_eq!(expand("{{ $value | humanize1024 }}", 2048.0), "2ki");
        assert_eq!(expand("{{ $value | humanizePercentage }}", 0.256), "25.6%");
        assert_eq!(
            expand("{{ $value | humanizeDuration }}", 3725.0),
            "1h 2m 5s"
        );
        assert_eq!(expand("{{ humanizeDuration 0.5 }}", 0.0), "500ms");
        assert_eq!(
            expand("{{ $value | humanizeTimestamp }}", 10.0),
            "1970-01-01 00:00:10 +0000 UTC"
        );
        assert_eq!(
            expand("{{ if gt $value 10.0 }}high{{ else }}low{{ end }}", 12.0),
            "high"
        );
        assert_eq!(
            expand("{{ .Labels.job | toUpper }} {{ $externalURL }}", 1.0),
            "API http://tidemark"
        );
        assert_eq!(expand("plain", 1.0), "plain");
        assert!(Template::parse("t", "{{ .Foo").is_err());
        // gtmpl 0.7 never returns from parsing this one: refused first.
        assert!(Template::parse("t", "{{ $labels.job ").is_err());
    }
}
