//! The compiler's own checks, with a stand-in transform that emits alerts
//! (the alert stream's first real producer comes with the alert-rules
//! work): kinds and ports are checked through the specs' required methods.

use std::sync::Arc;

use tidemark_engine::spec::{AnyStream, Port, StreamKind, TransformContext, TransformSpec};
use tidemark_engine::time::Time;

use super::*;

/// Takes samples; its default output is samples, `.alerts` gives alerts,
/// and it holds output back for `delay` (an alert's `for:`).
#[derive(Debug)]
struct Rules {
    delay: Time,
}

impl TransformSpec for Rules {
    fn takes(&self) -> &'static [StreamKind] {
        &[StreamKind::Samples]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![
            Port::default_output(StreamKind::Samples),
            Port::named("alerts", StreamKind::Alerts),
        ]
    }
    fn holdback(&self) -> Time {
        self.delay
    }
    fn reach(&self) -> tidemark_engine::component::Reach {
        Some(self.delay)
    }
    fn needs_raw_input(&self) -> bool {
        false
    }
    fn derives_values(&self) -> bool {
        true
    }
    fn touches(&self) -> Vec<tidemark_engine::spec::Resource> {
        Vec::new() // nothing outside the process
    }
    fn checkpointed(&self) -> tidemark_engine::checkpoint::Checkpointed {
        tidemark_engine::checkpoint::Checkpointed::NotYet
    }
    fn build<'s>(&self, _: AnyStream<'s>, _: TransformContext) -> Vec<AnyStream<'s>> {
        unreachable!("the compiler never builds")
    }
}

/// Compiles `text` with transform `rules` (declared as a `filter`) replaced
/// by the stand-in.
fn compile_with_rules(text: &str) -> Result<Plan, Vec<Diagnostic>> {
    let mut ctx = Ctx {
        file: "test.yaml",
        errors: Vec::new(),
    };
    let root = yaml::parse(text).unwrap();
    let mut parsed = components::parse(&mut ctx, &root).unwrap();
    parsed.transform_specs.insert(
        "rules".into(),
        Arc::new(Rules { delay: 300_000 }) as Arc<dyn TransformSpec>,
    );
    let order = graph::check(&mut ctx, &parsed);
    if ctx.errors.is_empty() {
        Ok(downstream::plan(parsed, &order))
    } else {
        Err(ctx.errors)
    }
}

const PIPELINE: &str = r#"
name: kinds
sources:
  gen: {type: generator, series: 10}
transforms:
  rules: {type: filter, inputs: [gen], match: '{__name__="cpu_usage"}'}
  cpu_1m:
    type: window
    inputs: [INPUT]
    window: {tumbling: 1m}
    aggregates: [avg]
sinks:
  out: {type: blackhole, inputs: [cpu_1m]}
  pg: {type: blackhole, inputs: [SINK_INPUT]}
"#;

fn pipeline(input: &str, sink_input: &str) -> String {
    PIPELINE
        .replace("SINK_INPUT", sink_input)
        .replace("INPUT", input)
}

#[test]
fn a_reader_of_the_wrong_kind_is_a_located_stream_error() {
    let errors = compile_with_rules(&pipeline("rules", "rules.alerts")).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = &errors[0];
    assert_eq!(e.kind, DiagnosticKind::Stream);
    assert_eq!(
        e.to_string(),
        "test.yaml:14:3: sink \"pg\": sink \"pg\" takes samples, but input \"rules.alerts\" gives alerts"
    );
}

#[test]
fn ports_are_checked_against_the_spec() {
    let errors = compile_with_rules(&pipeline("rules.nope", "rules")).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].kind, DiagnosticKind::Input);
    assert!(
        errors[0].message.contains("has no output \"nope\""),
        "{errors:#?}"
    );
    // A window's only output is its default one.
    let errors = compile_with_rules(&pipeline("rules", "cpu_1m.alerts")).unwrap_err();
    assert_eq!(errors[0].kind, DiagnosticKind::Input, "{errors:#?}");
}

#[test]
fn a_delaying_transform_moves_holdback_and_reach_downstream() {
    let plan = compile_with_rules(&pipeline("rules", "rules")).unwrap();
    let (_, _, below) = &plan.sources[0];
    // rules (5 minutes) then a 1-minute window with no lateness.
    assert_eq!(below.reach, Some(300_000 + 60_000));
    assert!(below.holdback >= 300_000, "{below:?}");
}

#[test]
fn diagnostics_have_kinds_and_unread_is_not_reported_over_unknown_inputs() {
    let text = r#"
name: p
sources:
  a: {type: generator}
  b: {type: generator}
transforms:
  t: {type: filter, inputs: [u], match: 'x'}
  u: {type: filter, inputs: [t], match: 'x'}
sinks:
  s: {type: blackhole, inputs: [missing]}
"#;
    let kinds: Vec<DiagnosticKind> = compile("p.yaml", text)
        .unwrap_err()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&DiagnosticKind::UnknownInput), "{kinds:?}");
    assert!(kinds.contains(&DiagnosticKind::Cycle), "{kinds:?}");
    assert!(!kinds.contains(&DiagnosticKind::Unread), "{kinds:?}");
    let text = text.replace("[missing]", "[t]");
    let errors = compile("p.yaml", &text).unwrap_err();
    let unread: Vec<&str> = errors
        .iter()
        .filter(|e| e.kind == DiagnosticKind::Unread)
        .map(|e| e.component.as_ref().unwrap().1.as_str())
        .collect();
    assert_eq!(unread, ["a", "b"], "{errors:#?}");
}

#[test]
fn names_have_a_length_limit() {
    let long = "p".repeat(components::MAX_NAME + 1);
    let text = format!(
        "name: {long}\nsources:\n  {long}: {{type: generator}}\nsinks:\n  out: {{type: blackhole, inputs: [{long}]}}\n"
    );
    let errors = compile("p.yaml", &text).unwrap_err();
    let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "the pipeline name may be at most 128 characters long (this one has 129)",
            "names may be at most 128 characters long (this one has 129)"
        ],
        "{errors:#?}"
    );
    let ok = text.replace(&long, &"p".repeat(components::MAX_NAME));
    assert!(compile("p.yaml", &ok).is_ok());
}
