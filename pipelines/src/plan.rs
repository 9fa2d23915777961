//! A compiled pipeline: validated components in an order that can be built.

use std::sync::Arc;

use std::collections::HashMap;

use tidemark_engine::checkpoint::{Checkpointed, Member, fingerprint};
use tidemark_engine::spec::{SinkSpec, SourceSpec, TransformSpec};
use tidemark_engine::time::Time;
use tidemark_engine::validate::Limits;

/// What lies downstream of a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Downstream {
    /// The most window lateness on any path to a sink (flow control).
    pub holdback: Time,
    /// How far its records reach in timely time (the largest sum of window
    /// sizes on a path; `None` through a session window). See
    /// `tidemark_engine::component::Reach`.
    pub reach: Option<Time>,
}

impl Default for Downstream {
    /// Nothing: a sink right after the source.
    fn default() -> Self {
        Downstream {
            holdback: 0,
            reach: Some(0),
        }
    }
}

/// A compiled pipeline.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The pipeline's name.
    pub name: String,
    /// Edge limits for its sources.
    pub limits: Limits,
    /// Sources with what lies downstream of each.
    pub sources: Vec<(String, Arc<dyn SourceSpec>, Downstream)>,
    /// Transforms in topological order, with their inputs (`name` or
    /// `name.port`).
    pub transforms: Vec<(String, Arc<dyn TransformSpec>, Vec<String>)>,
    /// Sinks with their inputs.
    pub sinks: Vec<(String, Arc<dyn SinkSpec>, Vec<String>)>,
}

impl Plan {
    /// The sources that only `tidemark serve` can feed.
    pub fn network_sources(&self) -> Vec<&str> {
        self.sources
            .iter()
            .filter(|(_, s, _)| s.needs_ingest())
            .map(|(n, _, _)| n.as_str())
            .collect()
    }

    /// The names of the sinks that serve live subscribers (`websocket`).
    pub fn websocket_sinks(&self) -> Vec<&str> {
        self.sinks
            .iter()
            .filter(|(_, s, _)| s.serves_live())
            .map(|(n, _, _)| n.as_str())
            .collect()
    }

    /// The components whose state checkpoints keep, each with how far its
    /// input is behind the sources (see `tidemark_engine::checkpoint`), or
    /// why the pipeline cannot be checkpointed.
    ///
    /// A window's output is `lateness` behind its input once it has cut
    /// (it holds its capability one step above `frontier - lateness - 1`
    /// after writing its state); a score's is not behind. A kept
    /// component must read inputs that are equally far behind.
    pub fn checkpoint_members(&self) -> Result<Vec<Member>, String> {
        let mut members = Vec::new();
        let mut offsets: HashMap<String, Option<Time>> = HashMap::new();
        for (name, source, _) in &self.sources {
            match source.checkpointed() {
                Checkpointed::Kept => members.push(Member {
                    name: name.clone(),
                    fingerprint: fingerprint(&format!("{source:?}")),
                    identity: fingerprint(&source.identity()),
                    offset: 0,
                }),
                Checkpointed::Stateless => {}
                Checkpointed::NotYet => {
                    return Err(format!("source `{name}` cannot record its position yet"));
                }
            }
            offsets.insert(name.clone(), Some(0));
        }
        for (name, transform, inputs) in &self.transforms {
            let mut seen = inputs.iter().map(|i| offsets.get(i).copied().flatten());
            let first = seen.next().flatten();
            let input = if seen.all(|o| o == first) {
                first
            } else {
                None
            };
            let out = match transform.checkpointed() {
                Checkpointed::NotYet => {
                    return Err(format!(
                        "transform `{name}` keeps state that checkpoints cannot hold yet"
                    ));
                }
                Checkpointed::Stateless => input,
                Checkpointed::Kept => {
                    let Some(offset) = input else {
                        return Err(format!(
                            "transform `{name}` reads inputs that windows hold back by different amounts"
                        ));
                    };
                    let (fp, identity) = (
                        fingerprint(&format!("{transform:?}")),
                        fingerprint(&transform.identity()),
                    );
                    members.push(Member {
                        name: name.clone(),
                        fingerprint: fp,
                        identity,
                        offset,
                    });
                    for (stage, behind) in transform.later_stages() {
                        members.push(Member {
                            name: format!("{name}/{stage}"),
                            fingerprint: fp,
                            identity,
                            offset: offset + behind,
                        });
                    }
                    Some(offset + transform.holdback().saturating_sub(1))
                }
            };
            for port in transform.outputs() {
                let key = if port.name.is_empty() {
                    name.clone()
                } else {
                    format!("{name}.{}", port.name)
                };
                offsets.insert(key, out);
            }
        }
        Ok(members)
    }

    /// Whether every source is finite, so a run ends on its own.
    pub fn is_finite(&self) -> bool {
        self.sources.iter().all(|(_, s, _)| s.is_finite())
    }
}

#[cfg(test)]
mod tests {
    /// Offsets of kept components: a window's and an alert transform's
    /// output is their lateness behind their input, a later stage its own
    /// distance behind its transform's; a reader of inputs held back
    /// differently cannot be checkpointed.
    #[test]
    fn checkpoint_offsets_follow_the_lateness_before_each_component() {
        let text = "name: p\nsources:\n  in: {type: grpc}\ntransforms:\n  \
            w: {type: window, inputs: [in], window: {tumbling: 10s}, lateness: 5s, aggregates: [avg]}\n  \
            rules: {type: alert, inputs: [w], lateness: 2s, rules: {groups: [{name: g, rules: [{record: r, expr: 'x'}]}]}}\n  \
            sc: {type: score, inputs: [rules]}\n  \
            c: {type: correlate, inputs: [rules.alerts], lateness: 3s}\n\
            sinks:\n  out: {type: blackhole, inputs: [sc, c]}\n";
        let plan = crate::compile::compile("p.yaml", text).unwrap();
        let offsets: Vec<(String, u64)> = plan
            .checkpoint_members()
            .unwrap()
            .into_iter()
            .map(|m| (m.name, m.offset))
            .collect();
        // The correlate's keeper cuts its lateness behind its tracker.
        let want = [
            ("in", 0),
            ("w", 0),
            ("rules", 5_000),
            ("c", 7_000),
            ("c/incidents", 10_000),
            ("sc", 7_000),
        ];
        assert_eq!(
            offsets,
            want.map(|(n, o)| (n.to_owned(), o)).to_vec(),
            "{offsets:?}"
        );
        let mixed = text.replace("inputs: [rules]", "inputs: [rules, in]");
        let plan = crate::compile::compile("p.yaml", &mixed).unwrap();
        let why = plan.checkpoint_members().unwrap_err();
        assert!(why.contains("`sc`"), "{why}");
    }

    /// A window's identity leaves out its list of aggregates, not what its
    /// accumulators keep: `avg` added to `[count, sum]` or a second
    /// quantile migrates its state, `stddev` or another size does not.
    #[test]
    fn a_window_keeps_its_identity_when_an_aggregate_its_accumulators_keep_is_added() {
        let member = |window: &str, aggregates: &str| {
            let text = format!(
                "name: p\nsources:\n  in: {{type: grpc}}\ntransforms:\n  \
                 w: {{type: window, inputs: [in], window: {{tumbling: {window}}}, aggregates: [{aggregates}]}}\n\
                 sinks:\n  out: {{type: blackhole, inputs: [w]}}\n"
            );
            let plan = crate::compile::compile("p.yaml", &text).unwrap();
            let members = plan.checkpoint_members().unwrap();
            members.into_iter().find(|m| m.name == "w").unwrap()
        };
        let base = member("1m", "count, sum, p50");
        for (window, aggregates, same) in [
            ("1m", "count, sum, avg, p50", true),
            ("1m", "count, sum, p50, p99, last, min", true),
            ("1m", "count, sum, p50, stddev", false),
            ("1m", "count, sum", false),
            ("5m", "count, sum, p50", false),
        ] {
            let m = member(window, aggregates);
            assert_ne!(
                m.fingerprint, base.fingerprint,
                "{window} {aggregates}: changed"
            );
            assert_eq!(m.identity == base.identity, same, "{window} {aggregates}");
        }
    }
}
