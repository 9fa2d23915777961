//! The third step: the plan, and what lies downstream of each source: the
//! most holdback on any path to a sink (window lateness, a sink's open
//! epoch: flow control lets the source run that far ahead) and its reach
//! (how far in timely time its records can affect output: the Kafka
//! source commits offsets by it). Both come from the components' required
//! [`TransformSpec`](tidemark_engine::spec::TransformSpec) and
//! [`SinkSpec`](tidemark_engine::spec::SinkSpec) methods.

use std::collections::BTreeMap;

use super::components::{Component, Parsed};
use super::split_port;
use crate::plan::{Downstream, Plan};

/// The plan of a pipeline whose checks all passed; `order` is the
/// transforms' build order.
pub(super) fn plan(mut p: Parsed<'_>, order: &[String]) -> Plan {
    let inputs_of =
        |c: &Component<'_>| -> Vec<String> { c.inputs.iter().map(|(i, _)| i.clone()).collect() };
    let mut plan = Plan {
        name: p.name,
        limits: p.limits,
        sources: Vec::new(),
        transforms: Vec::new(),
        sinks: Vec::new(),
    };
    for c in &p.sources {
        if let Some(spec) = p.source_specs.remove(&c.name) {
            plan.sources
                .push((c.name.clone(), spec, Downstream::default()));
        }
    }
    for name in order {
        let c = p.transforms.iter().find(|c| &c.name == name);
        if let (Some(c), Some(spec)) = (c, p.transform_specs.remove(name)) {
            plan.transforms.push((name.clone(), spec, inputs_of(c)));
        }
    }
    for c in &p.sinks {
        if let Some(spec) = p.sink_specs.remove(&c.name) {
            plan.sinks.push((c.name.clone(), spec, inputs_of(c)));
        }
    }
    let per_source = downstream(&plan);
    for ((_, _, d), value) in plan.sources.iter_mut().zip(per_source) {
        *d = value;
    }
    plan
}

/// What lies downstream of each of `plan`'s sources, in their order.
fn downstream(plan: &Plan) -> Vec<Downstream> {
    let mut below: BTreeMap<String, Downstream> = BTreeMap::new();
    // The most of what lies below the readers of `name`: transforms already
    // in `below` (walked in reverse build order) and sinks, which add
    // their own holdback (parquet's open epoch).
    let readers = |name: &str, below: &BTreeMap<String, Downstream>| -> Downstream {
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
    for (name, spec, _) in plan.transforms.iter().rev() {
        let after = readers(name, &below);
        below.insert(
            name.clone(),
            Downstream {
                holdback: spec.holdback() + after.holdback,
                reach: spec.reach().zip(after.reach).map(|(x, y)| x + y),
            },
        );
    }
    plan.sources
        .iter()
        .map(|(name, _, _)| readers(name, &below))
        .collect()
}
