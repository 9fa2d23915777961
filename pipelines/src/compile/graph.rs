//! The second step: the graph. Inputs name existing outputs, everything
//! is read, transforms form no cycle, every input carries the kind its
//! reader takes; the result is an order to build the transforms in.

use std::collections::{BTreeMap, BTreeSet};

use tidemark_engine::spec::StreamKind;

use super::components::{Component, Parsed};
use super::{Ctx, DiagnosticKind, split_port};
use crate::config::Section;
use crate::yaml::Pos;

/// Checks the graph; returns the transforms in an order that can be built
/// (each after its inputs).
pub(super) fn check(ctx: &mut Ctx<'_>, p: &Parsed<'_>) -> Vec<String> {
    check_inputs(ctx, p);
    // Not reported when inputs are already missing or unknown, where it
    // would only repeat that error.
    if !ctx.has(&[DiagnosticKind::NoInputs, DiagnosticKind::UnknownInput]) {
        check_unread(ctx, p);
    }
    let order = order(ctx, p);
    check_streams(ctx, p, &order);
    order
}

/// Inputs name existing sources or transforms (and their ports), once each.
fn check_inputs(ctx: &mut Ctx<'_>, p: &Parsed<'_>) {
    for (section, list) in [
        (Section::Transform, &p.transforms),
        (Section::Sink, &p.sinks),
    ] {
        for c in list.iter() {
            for (input, pos) in &c.inputs {
                if let Some((kind, message)) = input_error(p, c, input, *pos) {
                    ctx.error(kind, *pos, Some((section, c.name.as_str())), message);
                }
            }
        }
    }
}

/// What is wrong with one input of `c`, if anything.
fn input_error(
    p: &Parsed<'_>,
    c: &Component<'_>,
    input: &str,
    pos: Pos,
) -> Option<(DiagnosticKind, String)> {
    let (component, port) = split_port(input);
    let error = |m: String| Some((DiagnosticKind::Input, m));
    if let Some(port) = port
        && p.sections.contains_key(component)
        && !has_port(p, component, port)
    {
        return error(format!(
            "{component:?} has no output {port:?} (a source has one output, read by its name; a transform's outputs are listed in its docs)"
        ));
    }
    match p.sections.get(component) {
        None => {
            let known: Vec<&str> = p
                .sections
                .iter()
                .filter(|(_, s)| **s != Section::Sink)
                .map(|(n, _)| n.as_str())
                .collect();
            Some((
                DiagnosticKind::UnknownInput,
                format!(
                    "unknown input {component:?} (sources and transforms: {})",
                    known.join(", ")
                ),
            ))
        }
        Some(Section::Sink) => error(format!(
            "input {component:?} is a sink; inputs name sources or transforms"
        )),
        Some(_) if component == c.name && port.is_none() => {
            error("a transform cannot read its own output".into())
        }
        Some(_)
            if c.inputs
                .iter()
                .take_while(|(_, at)| *at != pos)
                .any(|(i, _)| split_port(i) == (component, port)) =>
        {
            error(format!("input {component:?} is listed twice"))
        }
        Some(_) => None,
    }
}

/// Every source and transform feeds something: an unread one would do
/// work for nothing (and a run would not wait for it).
fn check_unread(ctx: &mut Ctx<'_>, p: &Parsed<'_>) {
    let read: BTreeSet<&str> = p
        .transforms
        .iter()
        .chain(p.sinks.iter())
        .flat_map(|c| c.inputs.iter().map(|(i, _)| split_port(i).0))
        .collect();
    for (section, list) in [
        (Section::Source, &p.sources),
        (Section::Transform, &p.transforms),
    ] {
        for c in list.iter().filter(|c| !read.contains(c.name.as_str())) {
            ctx.error(
                DiagnosticKind::Unread,
                c.key,
                Some((section, &c.name)),
                "not an input of any transform or sink (read it or remove it)",
            );
        }
    }
}

/// The transforms in build order, found by depth-first search, which also
/// names the path of every cycle for its message (petgraph's topological
/// sort would only name one node of one cycle).
fn order(ctx: &mut Ctx<'_>, p: &Parsed<'_>) -> Vec<String> {
    let edges: BTreeMap<&str, Vec<&str>> = p
        .transforms
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.inputs
                    .iter()
                    .map(|(i, _)| split_port(i).0)
                    .filter(|i| p.sections.get(*i) == Some(&Section::Transform))
                    .collect(),
            )
        })
        .collect();
    let mut search = Search::default();
    for n in edges.keys() {
        search.visit(n, &edges);
    }
    let mut reported: BTreeSet<Vec<&str>> = BTreeSet::new();
    for cycle in &search.cycles {
        let mut key = cycle[..cycle.len() - 1].to_vec();
        key.sort();
        if reported.insert(key) {
            let first = p.transforms.iter().find(|c| c.name == cycle[0]);
            ctx.error(
                DiagnosticKind::Cycle,
                first.map_or(Pos::default(), |c| c.key),
                Some((Section::Transform, cycle[0])),
                format!("cycle: {}", cycle.join(" -> ")),
            );
        }
    }
    search.order.into_iter().map(str::to_owned).collect()
}

/// A depth-first search over the transforms.
#[derive(Default)]
struct Search<'a> {
    /// 1 while on the stack, 2 when done.
    state: BTreeMap<&'a str, u8>,
    stack: Vec<&'a str>,
    order: Vec<&'a str>,
    cycles: Vec<Vec<&'a str>>,
}

impl<'a> Search<'a> {
    fn visit(&mut self, n: &'a str, edges: &BTreeMap<&'a str, Vec<&'a str>>) {
        match self.state.get(n) {
            Some(2) => return,
            Some(1) => {
                let from = self.stack.iter().position(|s| *s == n).unwrap_or(0);
                let mut cycle: Vec<&str> = self.stack[from..].to_vec();
                cycle.push(n);
                self.cycles.push(cycle);
                return;
            }
            _ => {}
        }
        self.state.insert(n, 1);
        self.stack.push(n);
        for m in edges.get(n).into_iter().flatten() {
            if *m != n {
                self.visit(m, edges);
            }
        }
        self.stack.pop();
        self.state.insert(n, 2);
        self.order.push(n);
    }
}

/// Whether `component` (a transform) has a named output `port`. Sources
/// have only their default output.
fn has_port(p: &Parsed<'_>, component: &str, port: &str) -> bool {
    match p.transform_specs.get(component) {
        Some(spec) => spec
            .outputs()
            .iter()
            .any(|p| !p.name.is_empty() && p.name == port),
        // A transform whose config is wrong: its ports are unknown, and its
        // own errors are already reported.
        None => p.transforms.iter().any(|c| c.name == component),
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
fn check_streams(ctx: &mut Ctx<'_>, p: &Parsed<'_>, order: &[String]) {
    let mut carries: BTreeMap<String, Carries> = p
        .source_specs
        .iter()
        .map(|(name, spec)| {
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
                 takes: &[StreamKind]|
     -> Vec<(String, Carries)> {
        let mut found = Vec::new();
        for (input, _) in &c.inputs {
            let Some(k) = carries.get(input) else {
                continue;
            };
            if !takes.contains(&k.kind) {
                let words: Vec<&str> = takes.iter().map(|t| t.word()).collect();
                ctx.error(
                    DiagnosticKind::Stream,
                    c.key,
                    Some((section, &c.name)),
                    format!(
                        "{} {:?} takes {}, but input {input:?} gives {}",
                        section.word(),
                        c.name,
                        words.join(" or "),
                        k.kind
                    ),
                );
            }
            found.push((input.clone(), *k));
        }
        // A component that takes several kinds still reads one at a time.
        if let Some((first, k0)) = found.first()
            && let Some((other, k)) = found.iter().find(|(_, k)| k.kind != k0.kind)
        {
            ctx.error(
                DiagnosticKind::Stream,
                c.key,
                Some((section, &c.name)),
                format!(
                    "{} {:?} reads {} from {first:?} and {} from {other:?}; its inputs must all carry the same kind",
                    section.word(),
                    c.name,
                    k0.kind,
                    k.kind
                ),
            );
        }
        found
    };
    for name in order {
        let (Some(c), Some(spec)) = (
            p.transforms.iter().find(|c| c.name == *name),
            p.transform_specs.get(name),
        ) else {
            continue;
        };
        let inputs = reads(ctx, &carries, Section::Transform, c, spec.takes());
        if spec.needs_raw_input() {
            for (input, _) in inputs.iter().filter(|(_, k)| !k.raw) {
                ctx.error(
                    DiagnosticKind::Stream,
                    c.key,
                    Some((Section::Transform, name)),
                    format!("rate and increase need raw counters, but input {input:?} carries window results; compute them in the first window"),
                );
            }
        }
        let raw = !spec.derives_values() && inputs.iter().all(|(_, k)| k.raw);
        for port in spec.outputs() {
            let key = if port.name.is_empty() {
                name.clone()
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
    for c in &p.sinks {
        if let Some(spec) = p.sink_specs.get(&c.name) {
            reads(ctx, &carries, Section::Sink, c, spec.takes());
        }
    }
}
