//! One test per validation error class, each checking the message, the
//! component and the position; and the CLI's report of several at once.

use tidemark_pipelines::compile;
use tidemark_pipelines::config::Section;

const BASE: &str = r#"name: t
sources:
  gen:
    type: generator
    series: 10
transforms:
  w:
    type: window
    inputs: [gen]
    window: {tumbling: 1m}
    aggregates: [avg]
sinks:
  out:
    type: console
    inputs: [w]
"#;

/// (line, column, component, message).
type Located = (usize, usize, Option<(Section, String)>, String);

/// Compiles `text` and returns its errors as (line, column, component, message).
fn errors(text: &str) -> Vec<Located> {
    match compile("p.yaml", text) {
        Ok(_) => vec![],
        Err(es) => es
            .into_iter()
            .map(|e| (e.pos.line, e.pos.column, e.component, e.message))
            .collect(),
    }
}

fn one(text: &str) -> Located {
    let mut e = errors(text);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.remove(0)
}

fn transform(name: &str) -> Option<(Section, String)> {
    Some((Section::Transform, name.to_owned()))
}

#[test]
fn the_base_pipeline_is_valid() {
    let plan = compile("p.yaml", BASE).unwrap();
    assert_eq!(
        (plan.sources.len(), plan.transforms.len(), plan.sinks.len()),
        (1, 1, 1)
    );
    // The window holds back its lateness plus 1 ms, and stamps a sample's
    // result at most its size later; the source knows both.
    assert_eq!(plan.sources[0].2.holdback, 1);
    assert_eq!(plan.sources[0].2.reach, Some(60_000));
}

#[test]
fn reach_adds_up_along_chains_and_sessions_have_none() {
    let w2 = "  w2:\n    type: window\n    inputs: [w]\n    window: {hopping: 5m, every: 1m}\n    aggregates: [max]\n";
    let s = "  s:\n    type: window\n    inputs: [gen]\n    window: {session: 30s}\n    aggregates: [count]\n";
    let chained = BASE.replace("sinks:", &format!("{w2}sinks:"));
    // The sink reads w2, after w: 1m + 5m.
    let to_w2 = chained.replace(
        "    type: console\n    inputs: [w]",
        "    type: console\n    inputs: [w2]",
    );
    let plan = compile("p.yaml", &to_w2).unwrap();
    assert_eq!(plan.sources[0].2.reach, Some(360_000));
    // Through a session window there is no bound.
    let to_s = BASE.replace("sinks:", &format!("{w2}{s}sinks:")).replace(
        "    type: console\n    inputs: [w]",
        "    type: console\n    inputs: [w2, s]",
    );
    let plan = compile("p.yaml", &to_s).unwrap();
    assert_eq!(plan.sources[0].2.reach, None);
}

#[test]
fn unknown_field() {
    let (line, col, comp, msg) = one(&BASE.replace(
        "    aggregates: [avg]",
        "    aggregates: [avg]\n    windw: 5",
    ));
    assert_eq!((line, col, comp), (12, 5, transform("w")));
    assert!(msg.contains("unknown field `windw`"), "{msg}");
}

#[test]
fn unknown_type() {
    let (line, col, comp, msg) = one(&BASE.replace("type: generator", "type: genrator"));
    assert_eq!(
        (line, col, comp),
        (4, 11, Some((Section::Source, "gen".into())))
    );
    assert!(
        msg.contains("unknown type `genrator`") && msg.contains("`generator`"),
        "{msg}"
    );
}

#[test]
fn missing_inputs() {
    let (line, col, comp, msg) = one(&BASE.replace("    inputs: [w]\n", ""));
    assert_eq!(
        (line, col, comp),
        (13, 3, Some((Section::Sink, "out".into())))
    );
    assert_eq!(msg, "sink \"out\" has no inputs");
}

#[test]
fn unknown_input() {
    let (line, col, comp, msg) = one(&BASE.replace("inputs: [gen]", "inputs: [gne]"));
    assert_eq!((line, col, comp), (9, 14, transform("w")));
    assert!(msg.starts_with("unknown input \"gne\""), "{msg}");
}

#[test]
fn cycle() {
    let text = BASE.replace("inputs: [gen]", "inputs: [gen, f]") + "  # (appended)\n";
    let text = text.replace(
        "sinks:",
        "  f:\n    type: filter\n    inputs: [w]\n    match: 'cpu_usage'\nsinks:",
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].3.starts_with("cycle: "), "{}", e[0].3);
    assert!(
        e[0].3.contains("f -> w -> f") || e[0].3.contains("w -> f -> w"),
        "{}",
        e[0].3
    );
}

#[test]
fn bad_duration() {
    let (line, col, comp, msg) =
        one(&BASE.replace("{tumbling: 1m}", "{tumbling: 1 minute please}"));
    assert_eq!((line, col, comp), (10, 24, transform("w")));
    assert!(
        msg.contains("invalid duration \"1 minute please\""),
        "{msg}"
    );
}

#[test]
fn bad_selector() {
    let (line, col, comp, msg) = one(&BASE.replace(
        "    aggregates: [avg]",
        "    aggregates: [avg]\n    match: 'cpu{host=~\"(\"}'",
    ));
    assert_eq!((line, col, comp), (12, 12, transform("w")));
    assert!(msg.contains("invalid series selector"), "{msg}");
}

#[test]
fn quantile_out_of_range() {
    let (line, col, comp, msg) = one(&BASE.replace("[avg]", "[avg, p101]"));
    assert_eq!((line, col, comp), (11, 23, transform("w")));
    assert!(msg.contains("quantile \"p101\" is out of range"), "{msg}");
}

#[test]
fn incompatible_input() {
    // The sink reads r, and r (a rate) reads w's window results.
    let text = BASE.replace("inputs: [w]", "inputs: [r]").replace(
        "sinks:",
        "  r:\n    type: window\n    inputs: [w]\n    window: {tumbling: 5m}\n    aggregates: [rate]\nsinks:",
    );
    let (line, col, comp, msg) = one(&text);
    assert_eq!((line, col, comp), (12, 3, transform("r")));
    assert!(
        msg.contains("rate and increase need raw counters") && msg.contains("\"w\""),
        "{msg}"
    );
}

#[test]
fn a_sink_is_not_an_input() {
    let text = BASE.replace("inputs: [w]", "inputs: [w, out]");
    let (_, _, comp, msg) = one(&text);
    assert_eq!(comp, Some((Section::Sink, "out".into())));
    assert!(msg.contains("is a sink"), "{msg}");
}

#[test]
fn invalid_yaml() {
    let (line, _, comp, msg) = one("name: t\nsources: [\n");
    assert!(
        line >= 2 && comp.is_none() && msg.starts_with("invalid YAML"),
        "{line} {msg}"
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let text = BASE
        .replace("type: generator", "type: generator\n    interval: soon")
        .replace("[avg]", "[avg, p200]")
        .replace("inputs: [w]", "inputs: [nowhere]")
        .replace("type: console", "type: console\n    colour: red");
    let e = errors(&text);
    assert_eq!(e.len(), 4, "{e:#?}");
    let lines: Vec<usize> = e.iter().map(|x| x.0).collect();
    assert_eq!(lines, vec![5, 12, 16, 17]);
}

#[test]
fn cli_prints_every_located_error_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("tidemark-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        BASE.replace("{tumbling: 1m}", "{tumbling: 1x}")
            .replace("[avg]", "[avg, p101]")
            .replace("inputs: [w]", "inputs: [nowhere]")
            .replace("    series: 10", "    series: 10\n    sedd: 1"),
    )
    .unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(&good, BASE).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("validate")
        .arg(&bad)
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let located: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(&*bad.to_string_lossy()))
        .collect();
    assert_eq!(located.len(), 5, "{stderr}"); // four errors and the summary line
    assert!(
        stderr.contains(":6:5: source \"gen\": unknown field `sedd`"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":11:24: transform \"w\": invalid duration \"1x\""),
        "{stderr}"
    );
    assert!(stderr.contains("4 errors"), "{stderr}");
    assert!(stderr.contains("good.yaml: ok"), "{stderr}");
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("validate")
        .arg(&good)
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn examples_validate() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/pipelines");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            n += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = compile(&path.display().to_string(), &text) {
                panic!("{}: {e:?}", path.display());
            }
        }
    }
    assert!(n >= 1);
}

#[test]
fn unused_components_and_repeated_inputs() {
    let text = BASE.replace(
        "sinks:",
        "  spare:\n    type: filter\n    inputs: [gen]\n    match: up\nsinks:",
    );
    let (line, col, comp, msg) = one(&text);
    assert_eq!((line, col, comp), (12, 3, transform("spare")));
    assert_eq!(
        msg,
        "not an input of any transform or sink (read it or remove it)"
    );
    let (_, col, comp, msg) = one(&BASE.replace("inputs: [w]", "inputs: [w, w]"));
    assert_eq!((col, comp), (17, Some((Section::Sink, "out".into()))));
    assert_eq!(msg, "input \"w\" is listed twice");
}

/// Type errors point at the field, name it, and every bad field of a
/// component is reported (before: the component's `type` line, serde's
/// message alone, one error per component).
#[test]
fn type_errors_name_their_field_and_all_are_reported() {
    let text = "name: t\nsources:\n  gen:\n    type: generator\n    series: lots\n    interval: 1s\n\
                transforms:\n  w:\n    type: window\n    inputs: [gen]\n    window: {tumbling: 10s}\n    \
                aggregates: [count]\n    lateness: 3\nsinks:\n  out:\n    type: file\n    inputs: [w]\n    \
                path: 7\n    append: maybe\n";
    let found = errors(text);
    let brief: Vec<(usize, usize, String)> = found
        .iter()
        .map(|(line, column, _, message)| {
            (
                *line,
                *column,
                message.split(':').next().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        brief,
        vec![
            (5, 5, "series".to_owned()),
            (13, 5, "lateness".to_owned()),
            (18, 5, "path".to_owned()),
            (19, 5, "append".to_owned()),
        ],
        "{found:#?}"
    );
    assert!(found[0].3.contains("expected u64"), "{:?}", found[0]);
    assert_eq!(found[3].2, Some((Section::Sink, "out".to_owned())));
    // A required field with a bad value ends the search in its component
    // (its "missing field" would repeat the error).
    let text = BASE.replace("    window: {tumbling: 1m}\n", "    window: 5\n");
    let (line, column, component, message) = one(&text);
    assert_eq!((line, column), (10, 5), "{message}");
    assert_eq!(component, transform("w"));
    assert!(message.starts_with("window: "), "{message}");
}

#[test]
fn score_parameters_are_checked_and_located() {
    let text = BASE.replace(
        "sinks:\n",
        "  s:\n    type: score\n    inputs: [gen]\n    detector: robust\n    threshold: 2\n    window: 3\n    range: {min: 5, max: 1}\nsinks:\n",
    )
    .replace("inputs: [w]", "inputs: [w, s]");
    let found = errors(&text);
    let brief: Vec<(usize, String)> = found
        .iter()
        .map(|(line, _, component, message)| {
            assert_eq!(component, &transform("s"));
            (*line, message.split(' ').next().unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        brief,
        vec![
            (16, "threshold".to_owned()),
            (17, "window".to_owned()),
            (18, "range".to_owned())
        ],
        "{found:#?}"
    );
    // A window is robust's alone.
    let text = BASE
        .replace(
            "sinks:\n",
            "  s:\n    type: score\n    inputs: [gen]\n    detector: light\n    window: 64\nsinks:\n",
        )
        .replace("inputs: [w]", "inputs: [w, s]");
    let (line, _, component, message) = one(&text);
    assert_eq!((line, component), (16, transform("s")));
    assert!(
        message.contains("window applies to detector robust only"),
        "{message}"
    );
}

#[test]
fn correlate_reads_alerts_or_samples_but_not_both() {
    let pipeline = |inputs: &str, sink: &str| {
        format!(
            r#"name: t
sources:
  gen:
    type: generator
    series: 10
transforms:
  rules:
    type: alert
    inputs: [gen]
    rules: {{groups: [{{name: g, rules: [{{alert: A, expr: up == 0}}]}}]}}
  inc:
    type: correlate
    inputs: {inputs}
sinks:
  out:
    type: {sink}
    inputs: [inc.incidents]
"#
        )
    };
    assert_eq!(
        errors(&pipeline("[rules]", "file\n    path: x.jsonl")),
        vec![]
    );
    assert_eq!(
        errors(&pipeline("[rules.alerts]", "file\n    path: x.jsonl")),
        vec![]
    );
    let mixed = errors(&pipeline(
        "[rules, rules.alerts]",
        "file\n    path: x.jsonl",
    ));
    assert_eq!(mixed.len(), 1, "{mixed:?}");
    assert_eq!(mixed[0].2, transform("inc"));
    assert_eq!(
        mixed[0].3,
        "transform \"inc\" reads samples from \"rules\" and alerts from \"rules.alerts\"; its inputs must all carry the same kind"
    );
    let console = errors(&pipeline("[rules]", "console"));
    assert_eq!(console.len(), 1, "{console:?}");
    assert_eq!(
        console[0].3,
        "sink \"out\" takes samples, but input \"inc.incidents\" gives incidents"
    );
}
