//! Compiling a pipeline: YAML text to a validated [`Plan`], without I/O.
//!
//! Every error is collected, each with its file, line, column and component,
//! so `tidemark validate` reports them all at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use std::sync::Arc;

use tidemark_engine::component::ConfigError;
use tidemark_engine::spec::{SinkSpec, StreamKind, TransformSpec};
use tidemark_engine::validate::Limits;

use crate::config::{Section, SinkConfig, SourceConfig, TransformConfig};
use crate::plan::{Downstream, Plan};
use crate::yaml::{self, Node, Pos};

/// One located error.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// The file (or `-`).
    pub file: String,
    /// Where in it.
    pub pos: Pos,
    /// The component, if the error belongs to one.
    pub component: Option<(Section, String)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.pos.line, self.pos.column)?;
        if let Some((section, name)) = &self.component {
            write!(f, "{} {name:?}: ", section.word())?;
        }
        f.write_str(&self.message)
    }
}

struct Ctx<'a> {
    file: &'a str,
    errors: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn error(&mut self, pos: Pos, component: Option<(Section, &str)>, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            file: self.file.to_owned(),
            pos,
            component: component.map(|(s, n)| (s, n.to_owned())),
            message: message.into(),
        });
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Deserialises a component, placing serde's error at the field it names.
pub(crate) fn typed<T: serde::de::DeserializeOwned>(
    node: &Node,
    value: serde_json::Value,
) -> Result<T, (Pos, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path: Vec<String> = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let message = e.inner().to_string();
        // serde names unknown or missing fields in backticks; point at the key.
        let mut pos = node.locate(&path, true);
        if let Some(field) = message.split('`').nth(1)
            && message.starts_with("unknown field")
        {
            let mut with = path.clone();
            if with.last().is_none_or(|last| last != field) {
                with.push(field.to_owned());
            }
            pos = node.locate(&with, true);
        }
        if message.starts_with("unknown variant") {
            pos = node.locate(&["type".to_owned()], false);
        }
        (
            pos,
            message
                .replace("unknown variant", "unknown type")
                .replace("variant identifier", "type"),
        )
    })
}

fn config_errors(
    ctx: &mut Ctx<'_>,
    node: &Node,
    component: (Section, &str),
    errors: Vec<ConfigError>,
) {
    for e in errors {
        let pos = node.locate(&e.field, false);
        ctx.error(pos, Some(component), e.message);
    }
}

struct Component<'a> {
    name: String,
    key: Pos,
    node: &'a Node,
    inputs: Vec<(String, Pos)>,
}

fn components<'a>(ctx: &mut Ctx<'_>, root: &'a Node, section: Section) -> Vec<Component<'a>> {
    let mut out = Vec::new();
    let Some((key_pos, node)) = root.entry(section.key()) else {
        if section != Section::Transform {
            ctx.error(
                Pos { line: 1, column: 1 },
                None,
                format!(
                    "the pipeline has no {} (add a `{}:` map)",
                    section.key(),
                    section.key()
                ),
            );
        }
        return out;
    };
    let Node::Map(entries, _) = node else {
        if !matches!(node, Node::Scalar(s, false, _) if s.is_empty() || s == "~" || s == "null")
            || section != Section::Transform
        {
            ctx.error(
                node.pos(),
                None,
                format!("`{}` must be a map of named components", section.key()),
            );
        }
        return out;
    };
    if entries.is_empty() && section != Section::Transform {
        ctx.error(
            key_pos,
            None,
            format!("the pipeline has no {}", section.key()),
        );
    }
    for (name, pos, body) in entries {
        let me = (section, name.as_str());
        if !valid_name(name) {
            ctx.error(
                *pos,
                Some(me),
                "names may use letters, digits, `_` and `-` only",
            );
        }
        if !matches!(body, Node::Map(..)) {
            ctx.error(
                body.pos(),
                Some(me),
                "a component must be a map with a `type`",
            );
            continue;
        }
        let mut inputs = Vec::new();
        match (section, body.entry("inputs")) {
            (Section::Source, Some((p, _))) => ctx.error(p, Some(me), "sources take no inputs"),
            (Section::Source, None) => {}
            (_, None) => ctx.error(
                *pos,
                Some(me),
                format!("{} {name:?} has no inputs", section.word()),
            ),
            (_, Some((p, Node::Seq(items, _)))) => {
                if items.is_empty() {
                    ctx.error(
                        p,
                        Some(me),
                        format!("{} {name:?} has no inputs", section.word()),
                    );
                }
                for item in items {
                    match item {
                        Node::Scalar(s, _, ip) => inputs.push((s.clone(), *ip)),
                        other => ctx.error(other.pos(), Some(me), "inputs must be component names"),
                    }
                }
            }
            (_, Some((_, Node::Scalar(s, _, ip)))) => inputs.push((s.clone(), *ip)),
            (_, Some((p, _))) => ctx.error(p, Some(me), "inputs must be a list of component names"),
        }
        out.push(Component {
            name: name.clone(),
            key: *pos,
            node: body,
            inputs,
        });
    }
    out
}

fn without_inputs(node: &Node) -> serde_json::Value {
    let mut v = node.to_json();
    if let Some(map) = v.as_object_mut() {
        map.remove("inputs");
    }
    v
}

/// Compiles a pipeline. `file` names the source in messages.
pub fn compile(file: &str, text: &str) -> Result<Plan, Vec<Diagnostic>> {
    let mut ctx = Ctx {
        file,
        errors: Vec::new(),
    };
    let root = match yaml::parse(text) {
        Ok(r) => r,
        Err(e) => {
            ctx.error(e.pos, None, format!("invalid YAML: {}", e.message));
            return Err(ctx.errors);
        }
    };
    let Node::Map(top, _) = &root else {
        ctx.error(
            root.pos(),
            None,
            "a pipeline is a map with name, sources, transforms and sinks",
        );
        return Err(ctx.errors);
    };
    for (key, pos, _) in top {
        if ![
            "name",
            "description",
            "limits",
            "sources",
            "transforms",
            "sinks",
        ]
        .contains(&key.as_str())
        {
            ctx.error(*pos, None, format!("unknown field `{key}`, expected one of `name`, `description`, `limits`, `sources`, `transforms`, `sinks`"));
        }
    }
    let name = match root.get("name") {
        Some(Node::Scalar(n, _, p)) => {
            if !valid_name(n) {
                ctx.error(
                    *p,
                    None,
                    "the pipeline name may use letters, digits, `_` and `-` only",
                );
            }
            n.clone()
        }
        Some(other) => {
            ctx.error(other.pos(), None, "name must be a string");
            String::new()
        }
        None => {
            ctx.error(
                Pos { line: 1, column: 1 },
                None,
                "the pipeline has no name (add `name: my-pipeline`)",
            );
            String::new()
        }
    };
    let limits = match root.get("limits") {
        Some(node) => match typed::<Limits>(node, node.to_json()) {
            Ok(l) => l,
            Err((pos, message)) => {
                ctx.error(pos, None, format!("limits: {message}"));
                Limits::default()
            }
        },
        None => Limits::default(),
    };

    let sources = components(&mut ctx, &root, Section::Source);
    let transforms = components(&mut ctx, &root, Section::Transform);
    let sinks = components(&mut ctx, &root, Section::Sink);

    // Names are unique across sections, so inputs are unambiguous.
    let mut sections: BTreeMap<String, Section> = BTreeMap::new();
    for (section, list) in [
        (Section::Source, &sources),
        (Section::Transform, &transforms),
        (Section::Sink, &sinks),
    ] {
        for c in list.iter() {
            if let Some(prev) = sections.insert(c.name.clone(), section) {
                ctx.error(
                    c.key,
                    Some((section, &c.name)),
                    format!("the name is already used by a {}", prev.word()),
                );
            }
        }
    }

    let mut plan = Plan {
        name,
        limits,
        sources: Vec::new(),
        transforms: Vec::new(),
        sinks: Vec::new(),
    };
    for c in &sources {
        let me = (Section::Source, c.name.as_str());
        match typed::<SourceConfig>(c.node, without_inputs(c.node)).map(|s| s.validate()) {
            Ok(Ok(spec)) => plan
                .sources
                .push((c.name.clone(), spec, Downstream::default())),
            Ok(Err(e)) => config_errors(&mut ctx, c.node, me, e),
            Err((pos, message)) => ctx.error(pos, Some(me), message),
        }
    }
    let mut transform_plans: BTreeMap<String, Arc<dyn TransformSpec>> = BTreeMap::new();
    for c in &transforms {
        let me = (Section::Transform, c.name.as_str());
        match typed::<TransformConfig>(c.node, without_inputs(c.node)).map(|t| t.validate()) {
            Ok(Ok(spec)) => {
                transform_plans.insert(c.name.clone(), spec);
            }
            Ok(Err(e)) => config_errors(&mut ctx, c.node, me, e),
            Err((pos, message)) => ctx.error(pos, Some(me), message),
        }
    }
    let mut sink_plans: BTreeMap<String, Arc<dyn SinkSpec>> = BTreeMap::new();
    for c in &sinks {
        let me = (Section::Sink, c.name.as_str());
        match typed::<SinkConfig>(c.node, without_inputs(c.node)).map(|s| s.validate()) {
            Ok(Ok(spec)) => {
                sink_plans.insert(c.name.clone(), spec);
            }
            Ok(Err(e)) => config_errors(&mut ctx, c.node, me, e),
            Err((pos, message)) => ctx.error(pos, Some(me), message),
        }
    }

    // Inputs name existing sources or transforms.
    for (section, list) in [(Section::Transform, &transforms), (Section::Sink, &sinks)] {
        for c in list.iter() {
            for (input, pos) in &c.inputs {
                let me = Some((section, c.name.as_str()));
                let (component, port) = split_port(input);
                if let Some(port) = port
                    && sections.contains_key(component)
                    && !has_port(&transform_plans, &transforms, component, port)
                {
                    ctx.error(
                        *pos,
                        me,
                        format!("{component:?} has no output {port:?} (a source has one output, read by its name; a transform's outputs are listed in its docs)"),
                    );
                    continue;
                }
                let input = &component.to_owned();
                match sections.get(input) {
                    None => {
                        let known: Vec<&str> = sections
                            .iter()
                            .filter(|(_, s)| **s != Section::Sink)
                            .map(|(n, _)| n.as_str())
                            .collect();
                        ctx.error(
                            *pos,
                            me,
                            format!(
                                "unknown input {input:?} (sources and transforms: {})",
                                known.join(", ")
                            ),
                        );
                    }
                    Some(Section::Sink) => ctx.error(
                        *pos,
                        me,
                        format!("input {input:?} is a sink; inputs name sources or transforms"),
                    ),
                    Some(_) if input == &c.name && port.is_none() => {
                        ctx.error(*pos, me, "a transform cannot read its own output")
                    }
                    Some(_)
                        if c.inputs
                            .iter()
                            .take_while(|(_, p)| p != pos)
                            .any(|(i, _)| split_port(i) == (input.as_str(), port)) =>
                    {
                        ctx.error(*pos, me, format!("input {input:?} is listed twice"))
                    }
                    Some(_) => {}
                }
            }
        }
    }

    // Every source and transform feeds something: an unread one would do
    // work for nothing (and a run would not wait for it). Not reported when
    // inputs are already wrong, where it would only repeat that error.
    let inputs_ok = !ctx
        .errors
        .iter()
        .any(|e| e.message.starts_with("unknown input") || e.message.ends_with("has no inputs"));
    let read: BTreeSet<&str> = transforms
        .iter()
        .chain(sinks.iter())
        .flat_map(|c| c.inputs.iter().map(|(i, _)| split_port(i).0))
        .collect();
    for (section, list) in [
        (Section::Source, &sources),
        (Section::Transform, &transforms),
    ] {
        for c in list
            .iter()
            .filter(|c| inputs_ok && !read.contains(c.name.as_str()))
        {
            ctx.error(
                c.key,
                Some((section, &c.name)),
                "not an input of any transform or sink (read it or remove it)",
            );
        }
    }

    // Cycles among transforms, found by depth-first search.
    let edges: BTreeMap<&str, Vec<&str>> = transforms
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.inputs
                    .iter()
                    .map(|(i, _)| split_port(i).0)
                    .filter(|i| sections.get(*i) == Some(&Section::Transform))
                    .collect(),
            )
        })
        .collect();
    let mut order: Vec<&str> = Vec::new();
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    let mut reported: BTreeSet<Vec<&str>> = BTreeSet::new();
    fn visit<'a>(
        n: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
        order: &mut Vec<&'a str>,
        cycles: &mut Vec<Vec<&'a str>>,
    ) {
        match state.get(n) {
            Some(2) => return,
            Some(1) => {
                let from = stack.iter().position(|s| *s == n).unwrap_or(0);
                let mut cycle: Vec<&str> = stack[from..].to_vec();
                cycle.push(n);
                cycles.push(cycle);
                return;
            }
            _ => {}
        }
        state.insert(n, 1);
        stack.push(n);
        for m in edges.get(n).into_iter().flatten() {
            if *m != n {
                visit(m, edges, state, stack, order, cycles);
            }
        }
        stack.pop();
        state.insert(n, 2);
        order.push(n);
    }
    let mut cycles = Vec::new();
    for n in edges.keys() {
        visit(
            n,
            &edges,
            &mut state,
            &mut Vec::new(),
            &mut order,
            &mut cycles,
        );
    }
    for cycle in cycles {
        let mut key = cycle[..cycle.len() - 1].to_vec();
        key.sort();
        if reported.insert(key) {
            let first = transforms.iter().find(|c| c.name == cycle[0]);
            let pos = first.map_or(Pos::default(), |c| c.key);
            ctx.error(
                pos,
                Some((Section::Transform, cycle[0])),
                format!("cycle: {}", cycle.join(" -> ")),
            );
        }
    }

    check_streams(
        &mut ctx,
        &transforms,
        &sinks,
        &order,
        &plan,
        &transform_plans,
        &sink_plans,
    );

    if !ctx.errors.is_empty() {
        ctx.errors.sort();
        ctx.errors.dedup();
        return Err(ctx.errors);
    }

    let inputs_of = |list: &[Component<'_>], name: &str| -> Vec<String> {
        list.iter()
            .find(|c| c.name == name)
            .map(|c| c.inputs.iter().map(|(i, _)| i.clone()).collect())
            .unwrap_or_default()
    };
    for name in order {
        if let Some(p) = transform_plans.remove(name) {
            plan.transforms
                .push((name.to_owned(), p, inputs_of(&transforms, name)));
        }
    }
    for c in &sinks {
        if let Some(p) = sink_plans.remove(&c.name) {
            plan.sinks
                .push((c.name.clone(), p, inputs_of(&sinks, &c.name)));
        }
    }
    // What lies downstream of each source: the most window lateness on any
    // path to a sink (holdback), and the largest sum of window sizes (reach).
    let mut below: BTreeMap<String, Downstream> = BTreeMap::new();
    // Sinks that hold output back (parquet) add their own holdback.
    let downstream = |name: &str, below: &BTreeMap<String, Downstream>| -> Downstream {
        let sinks = plan
            .sinks
            .iter()
            .filter(|(_, _, ins)| ins.iter().any(|i| split_port(i).0 == name))
            .map(|(_, s, _)| Downstream {
                holdback: s.holdback(),
                reach: Some(0),
            });
        plan.transforms
            .iter()
            .filter(|(_, _, ins)| ins.iter().any(|i| split_port(i).0 == name))
            .map(|(n, _, _)| below.get(n).copied().unwrap_or_default())
            .chain(sinks)
            .fold(Downstream::default(), |a, b| Downstream {
                holdback: a.holdback.max(b.holdback),
                reach: a.reach.zip(b.reach).map(|(x, y)| x.max(y)),
            })
    };
    for (name, p, _) in plan.transforms.iter().rev() {
        let (holdback, reach) = (p.holdback(), p.reach());
        let after = downstream(name, &below);
        below.insert(
            name.clone(),
            Downstream {
                holdback: holdback + after.holdback,
                reach: reach.zip(after.reach).map(|(x, y)| x + y),
            },
        );
    }
    let per_source: Vec<Downstream> = plan
        .sources
        .iter()
        .map(|(name, _, _)| downstream(name, &below))
        .collect();
    for ((_, _, d), value) in plan.sources.iter_mut().zip(per_source) {
        *d = value;
    }
    Ok(plan)
}

/// Splits an input into its component and port: `rules.alerts` is the
/// `alerts` output of `rules`; `rules` its default output.
pub(crate) fn split_port(input: &str) -> (&str, Option<&str>) {
    match input.split_once('.') {
        Some((component, port)) => (component, Some(port)),
        None => (input, None),
    }
}

/// Whether `component` (a transform) has a named output `port`. Sources
/// have only their default output.
fn has_port(
    specs: &BTreeMap<String, Arc<dyn TransformSpec>>,
    transforms: &[Component<'_>],
    component: &str,
    port: &str,
) -> bool {
    match specs.get(component) {
        Some(spec) => spec
            .outputs()
            .iter()
            .any(|p| !p.name.is_empty() && p.name == port),
        // A transform whose config is wrong: its ports are unknown, and its
        // own errors are already reported.
        None => transforms.iter().any(|c| c.name == component),
    }
}

/// What a stream carries: its kind, and whether its values are still the
/// samples as they came in (counters) or derived (window results).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Carries {
    kind: StreamKind,
    raw: bool,
}

/// Checks that every input gives the kind its reader takes, and that
/// transforms that need raw counters (`rate`, `increase`) get them.
#[allow(clippy::too_many_arguments)]
fn check_streams(
    ctx: &mut Ctx<'_>,
    transforms: &[Component<'_>],
    sinks: &[Component<'_>],
    order: &[&str],
    plan: &Plan,
    transform_specs: &BTreeMap<String, Arc<dyn TransformSpec>>,
    sink_specs: &BTreeMap<String, Arc<dyn SinkSpec>>,
) {
    let mut carries: BTreeMap<String, Carries> = plan
        .sources
        .iter()
        .map(|(name, spec, _)| {
            let carries = Carries {
                kind: spec.emits(),
                raw: true,
            };
            (name.clone(), carries)
        })
        .collect();
    let reads = |ctx: &mut Ctx<'_>,
                 carries: &BTreeMap<String, Carries>,
                 section: Section,
                 c: &Component<'_>,
                 takes: StreamKind|
     -> Vec<(String, Carries)> {
        let mut found = Vec::new();
        for (input, _) in &c.inputs {
            let Some(k) = carries.get(input) else {
                continue;
            };
            if k.kind != takes {
                ctx.error(
                    c.key,
                    Some((section, &c.name)),
                    format!(
                        "{} {:?} takes {takes}, but input {input:?} gives {}",
                        section.word(),
                        c.name,
                        k.kind
                    ),
                );
            }
            found.push((input.clone(), *k));
        }
        found
    };
    for name in order {
        let (Some(c), Some(spec)) = (
            transforms.iter().find(|c| c.name == *name),
            transform_specs.get(*name),
        ) else {
            continue;
        };
        let inputs = reads(ctx, &carries, Section::Transform, c, spec.takes());
        if spec.needs_raw_input() {
            for (input, _) in inputs.iter().filter(|(_, k)| !k.raw) {
                ctx.error(
                    c.key,
                    Some((Section::Transform, name)),
                    format!("rate and increase need raw counters, but input {input:?} carries window results; compute them in the first window"),
                );
            }
        }
        let raw = !spec.derives_values() && inputs.iter().all(|(_, k)| k.raw);
        for port in spec.outputs() {
            let key = if port.name.is_empty() {
                (*name).to_owned()
            } else {
                format!("{name}.{}", port.name)
            };
            carries.insert(
                key,
                Carries {
                    kind: port.kind,
                    raw,
                },
            );
        }
    }
    for c in sinks {
        if let Some(spec) = sink_specs.get(&c.name) {
            reads(ctx, &carries, Section::Sink, c, spec.takes());
        }
    }
}
