//! Prometheus's `promtool test rules` as an oracle: test files in its
//! format, its expanding notation for input series, and the results it
//! prints for `promql_expr_test` cases.
//!
//! promtool only says whether an expectation holds, so [`evaluate`] gives
//! every query an expectation that cannot hold (a sample named
//! `__tidemark_nothing__`) and reads what promtool says it got instead:
//! Prometheus's own value for every query, compared with ours within a
//! relative tolerance by the tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A staleness marker in expanded input (Prometheus's `stale`).
pub const STALE: f64 = f64::from_bits(0x7ff0_0000_0000_0002);

/// `promtool`, installed by deploy/test.sh from Debian's `prometheus`.
pub fn promtool() -> PathBuf {
    let path = PathBuf::from("/usr/bin/promtool");
    assert!(
        path.exists(),
        "promtool is missing: run ./deploy/test.sh, which installs Debian's prometheus package"
    );
    path
}

/// Expands promtool's notation for a series' values: numbers, `_`
/// (missing), `stale`, `a+bxn` and `a-bxn` (`n + 1` values from `a` in
/// steps of `b`) and `_xn` (`n` missing values). `None` is a missing
/// sample; [`STALE`] a staleness marker.
pub fn expand(values: &str) -> Vec<Option<f64>> {
    let mut out = Vec::new();
    for token in values.split_whitespace() {
        if token == "_" {
            out.push(None);
        } else if token == "stale" {
            out.push(Some(STALE));
        } else if let Some(n) = token.strip_prefix("_x") {
            out.extend(std::iter::repeat_n(None, n.parse().unwrap()));
        } else if let Some((start_step, n)) = token.split_once('x') {
            let n: usize = n.parse().unwrap();
            let at = start_step[1..]
                .find(['+', '-'])
                .map(|i| i + 1)
                .unwrap_or_else(|| panic!("bad token {token}"));
            let start: f64 = start_step[..at].parse().unwrap();
            let step: f64 = start_step[at..].parse().unwrap();
            // promtool adds the step again and again (not start + i * step).
            let mut v = start;
            for _ in 0..=n {
                out.push(Some(v));
                v += step;
            }
        } else {
            out.push(Some(token.parse().unwrap()));
        }
    }
    out
}

/// One input series: its selector text and values in promtool's notation.
pub struct Input<'a> {
    pub series: &'a str,
    pub values: &'a str,
}

/// A result as promtool prints it: labels (sorted) and value.
pub type Got = Vec<(Vec<(String, String)>, f64)>;

/// Runs promtool over `inputs` (one sample every `interval_s` seconds
/// from time 0) and `rule_files`, evaluating every `(expr, seconds)` query,
/// and returns what Prometheus got for each, in order (or the error it
/// reported).
pub fn evaluate(
    dir: &Path,
    rule_files: &[&Path],
    interval_s: u64,
    inputs: &[Input],
    queries: &[(String, u64)],
) -> Vec<Result<Got, String>> {
    let mut test = header(rule_files, interval_s, inputs);
    test.push_str("  promql_expr_test:\n");
    for (expr, at) in queries {
        test.push_str(&format!(
            "  - expr: {}\n    eval_time: {at}s\n    exp_samples: [{{labels: '__tidemark_nothing__', value: -1}}]\n",
            yaml_string(expr)
        ));
    }
    let (_, text) = test_rules(&dir.join("promtool-test.yml"), &test);
    // Each query prints an `expr:` line, then `got:` (or an `err:` on the
    // same line when the evaluation failed).
    let mut got: Vec<Result<Got, String>> = Vec::new();
    for line in text.lines().map(str::trim_start) {
        if line.starts_with("expr: ") {
            got.push(match line.split_once(", err: ") {
                Some((_, err)) => Err(err.to_owned()),
                None => Ok(Vec::new()),
            });
        } else if let (Some(rest), Some(Ok(last))) = (line.strip_prefix("got: "), got.last_mut()) {
            *last = parse_got(rest);
        }
    }
    assert_eq!(
        got.len(),
        queries.len(),
        "promtool did not evaluate every query:\n{text}\n--- test file:\n{test}"
    );
    got
}

/// An expected alert: labels (without `alertname`) and annotations.
pub type ExpAlert = (Vec<(String, String)>, Vec<(String, String)>);

/// Runs promtool's `alert_rule_test` over `inputs` and `rule_files`: each
/// `(alertname, seconds, alerts)` says which alerts of that name fire at
/// that time, with which labels and annotations. promtool compares them
/// exactly; its report is the error.
pub fn check_alerts(
    dir: &Path,
    rule_files: &[&Path],
    interval_s: u64,
    inputs: &[Input],
    tests: &[(String, u64, Vec<ExpAlert>)],
) -> Result<(), String> {
    let map = |pairs: &[(String, String)]| {
        let items: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}: {}", yaml_string(k), yaml_string(v)))
            .collect();
        format!("{{{}}}", items.join(", "))
    };
    let mut test = header(rule_files, interval_s, inputs);
    test.push_str("  alert_rule_test:\n");
    for (name, at, alerts) in tests {
        let empty = if alerts.is_empty() { " []" } else { "" };
        test.push_str(&format!(
            "  - alertname: {}\n    eval_time: {at}s\n    exp_alerts:{empty}\n",
            yaml_string(name)
        ));
        for (labels, annotations) in alerts {
            test.push_str(&format!(
                "    - exp_labels: {}\n      exp_annotations: {}\n",
                map(labels),
                map(annotations)
            ));
        }
    }
    match test_rules(&dir.join("promtool-alerts.yml"), &test) {
        (true, _) => Ok(()),
        (false, report) => Err(report),
    }
}

/// Writes `test` to `file` and runs `promtool test rules` on it: whether
/// it passed, and what it printed.
fn test_rules(file: &Path, test: &str) -> (bool, String) {
    std::fs::write(file, test).unwrap();
    let out = Command::new(promtool())
        .args(["test", "rules"])
        .arg(file)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// An input series as promtool's tests write it (`name{a="1"}`): its
/// metric name and labels.
pub fn series(text: &str) -> (String, Vec<(String, String)>) {
    let Ok(promql_parser::parser::Expr::VectorSelector(vs)) = promql_parser::parser::parse(text)
    else {
        panic!("not a series: {text}");
    };
    let labels = vs
        .matchers
        .matchers
        .iter()
        .map(|m| (m.name.clone(), m.value.clone()))
        .collect();
    (vs.name.unwrap_or_default(), labels)
}

/// The start of a test file: rule files, intervals, input series.
fn header(rule_files: &[&Path], interval_s: u64, inputs: &[Input]) -> String {
    let mut test = String::from("rule_files:");
    if rule_files.is_empty() {
        test.push_str(" []");
    }
    test.push('\n');
    for f in rule_files {
        test.push_str(&format!("  - {}\n", f.display()));
    }
    // Without `group_eval_order`, promtool evaluates the groups of a step
    // in an order that changes from run to run (they come out of a Go
    // map); Prometheus and Tidemark evaluate them in file order. Name them
    // in file order (the rule files list their groups as `- name: X` at
    // the start of a line).
    let mut order = Vec::new();
    for f in rule_files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("- name:") {
                order.push(yaml_string(name.trim().trim_matches(['"', '\''])));
            }
        }
    }
    if !order.is_empty() {
        test.push_str(&format!("group_eval_order: [{}]\n", order.join(", ")));
    }
    test.push_str(&format!(
        "evaluation_interval: {interval_s}s\ntests:\n- interval: {interval_s}s\n  input_series:\n"
    ));
    for i in inputs {
        test.push_str(&format!(
            "  - series: {}\n    values: {}\n",
            yaml_string(i.series),
            yaml_string(i.values)
        ));
    }
    test
}

/// A YAML double-quoted string.
fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Parses `{a="1", b="x"} 1.5E+01, {} NaN` (or `nil`).
pub fn parse_got(text: &str) -> Got {
    let mut out = Vec::new();
    let mut rest = text.trim();
    if rest == "nil" {
        return out;
    }
    while !rest.is_empty() {
        let (labels, after) = parse_labels(rest);
        let after = after.trim_start();
        let end = after.find(", {").unwrap_or(after.len());
        out.push((labels, parse_value(after[..end].trim())));
        rest = after[end..].trim_start_matches(", ").trim_start();
    }
    out
}

fn parse_value(text: &str) -> f64 {
    match text {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => text
            .parse()
            .unwrap_or_else(|e| panic!("bad value {text:?}: {e}")),
    }
}

/// Parses a `{name="value", ...}` label set with Go-quoted values.
fn parse_labels(text: &str) -> (Vec<(String, String)>, &str) {
    let mut chars = text.char_indices().peekable();
    assert_eq!(chars.next().map(|c| c.1), Some('{'), "{text}");
    let mut labels = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.1 == ' ' || c.1 == ',') {
            chars.next();
        }
        let (i, c) = chars.next().expect("unterminated label set");
        if c == '}' {
            let mut sorted = labels;
            sorted.sort();
            return (sorted, &text[i + 1..]);
        }
        let mut name = String::from(c);
        for (_, c) in chars.by_ref() {
            if c == '=' {
                break;
            }
            name.push(c);
        }
        assert_eq!(chars.next().map(|c| c.1), Some('"'));
        let mut value = String::new();
        while let Some((_, c)) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next().map(|c| c.1) {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(other) => value.push(other),
                    None => break,
                },
                c => value.push(c),
            }
        }
        labels.push((name, value));
    }
}

/// Whether two values agree within `relative` (NaN equals NaN; infinities
/// must be equal).
pub fn close(a: f64, b: f64, relative: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a.is_infinite() || b.is_infinite() {
        return a == b;
    }
    (a - b).abs() <= relative * a.abs().max(b.abs()) || (a - b).abs() < 1e-300
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_and_parses() {
        let bits: Vec<Option<u64>> = expand("1+2x2 _ stale 5 _x2 3-1x1")
            .into_iter()
            .map(|v| v.map(f64::to_bits))
            .collect();
        let want: Vec<Option<u64>> = [
            Some(1.0),
            Some(3.0),
            Some(5.0),
            None,
            Some(STALE),
            Some(5.0),
            None,
            None,
            Some(3.0),
            Some(2.0),
        ]
        .into_iter()
        .map(|v| v.map(f64::to_bits))
        .collect();
        assert_eq!(bits, want);
        let got = parse_got(r#"{__name__="x", i="a, {b}"} 1.5E+01, {} NaN"#);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0[1], ("i".into(), "a, {b}".into()));
        assert_eq!(got[0].1, 15.0);
        assert!(got[1].1.is_nan());
        assert!(parse_got("nil").is_empty());
    }
}
