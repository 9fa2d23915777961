//! Building a compiled pipeline as a timely dataflow on one worker. Every
//! worker of every process builds the same dataflow, in the same order.

use std::collections::HashMap;
use std::sync::Arc;

use tidemark_engine::Sample;
use tidemark_engine::component::{
    Resume, Shutdown, SinkContext, SourceClock, SourceContext, StdoutWriter,
};
use tidemark_engine::ingest::IngestHub;
use tidemark_engine::live::LiveHub;
use tidemark_engine::runtime::{
    Concatenate, PipelineScope, Probe, ProbeHandle, SampleStream, Worker,
};
use tidemark_engine::stats::{PipelineStats, Role};
use tidemark_engine::time::Time;
use tidemark_operators::filter::Filter;
use tidemark_operators::labels::Labels;
use tidemark_operators::window::Window;

use crate::formats;
use crate::plan::{Plan, SinkPlan, SourcePlan, TransformPlan};

/// What a run gives every worker.
#[derive(Clone)]
pub struct Env {
    /// The pipeline's counters in this process.
    pub stats: Arc<PipelineStats>,
    /// Stop request.
    pub shutdown: Shutdown,
    /// Standard output, shared with the progress display.
    pub stdout: StdoutWriter,
    /// Records each source instance may have in flight.
    pub max_in_flight: u64,
    /// The sources' shared clock in this process.
    pub clock: Arc<SourceClock>,
    /// The process's ingest hub (`tidemark serve` only).
    pub ingest: Option<Arc<IngestHub>>,
    /// Shared by the pipeline's resuming sources and its sinks.
    pub resume: Arc<Resume>,
    /// The process's live subscriptions (`websocket` sinks).
    pub live: Arc<LiveHub>,
}

/// Handles on a built dataflow.
pub struct Built {
    /// Sees the end of the pipeline (all sinks): done when it is empty.
    pub sinks: ProbeHandle<Time>,
    /// Sees the sources: the watermark.
    pub sources: ProbeHandle<Time>,
}

fn merge<'scope>(
    scope: PipelineScope<'scope>,
    streams: &HashMap<String, SampleStream<'scope>>,
    inputs: &[String],
) -> SampleStream<'scope> {
    let mut found: Vec<SampleStream<'scope>> = inputs
        .iter()
        .filter_map(|i| streams.get(i).cloned())
        .collect();
    if found.len() == 1 {
        found.swap_remove(0)
    } else {
        scope.concatenate::<_, Vec<Sample>>(found)
    }
}

/// Builds `plan` on this worker.
pub fn build(worker: &mut Worker, plan: &Plan, env: &Env) -> Built {
    let sinks = ProbeHandle::new();
    let sources = ProbeHandle::new();
    worker.dataflow_named::<Time, _, _>(&plan.name, |scope| {
        let mut streams: HashMap<String, SampleStream<'_>> = HashMap::new();
        for (name, source, downstream) in &plan.sources {
            let ctx = SourceContext {
                name: name.clone(),
                stats: env.stats.component(name, Role::Source),
                probe: sinks.clone(),
                holdback: downstream.holdback,
                max_in_flight: env.max_in_flight,
                shutdown: env.shutdown.clone(),
                limits: plan.limits.clone(),
                clock: Arc::clone(&env.clock),
                pipeline: plan.name.clone(),
                ingest: env.ingest.clone(),
                reach: downstream.reach,
                resume: Arc::clone(&env.resume),
            };
            let stream = match source {
                SourcePlan::Generator(g) => g.build(scope, ctx),
                SourcePlan::File(f) => f.build(scope, ctx),
                SourcePlan::Network(n) => n.build(scope, ctx),
                SourcePlan::Kafka(k) => {
                    k.build(scope, ctx, formats::decoder(k.format(), &plan.limits))
                }
            };
            streams.insert(name.clone(), stream);
        }
        let all: Vec<String> = plan.sources.iter().map(|(n, _, _)| n.clone()).collect();
        merge(scope, &streams, &all).probe_with(&sources);

        for (name, transform, inputs) in &plan.transforms {
            let input = merge(scope, &streams, inputs);
            let stats = env.stats.component(name, Role::Transform);
            let output = match transform {
                TransformPlan::Window(w) => {
                    let mut stream = input;
                    if let Some(selector) = &w.selector {
                        let filter_stats = env
                            .stats
                            .component(&format!("{name}.match"), Role::Transform);
                        stream = stream.filter_series(
                            &format!("{name}.match"),
                            selector.clone(),
                            filter_stats,
                        );
                    }
                    stream.window(name, w.spec.clone(), stats)
                }
                TransformPlan::Filter(selector) => {
                    input.filter_series(name, selector.clone(), stats)
                }
                TransformPlan::Labels(rules) => input.relabel(name, rules.clone(), stats),
            };
            streams.insert(name.clone(), output);
        }

        for (name, sink, inputs) in &plan.sinks {
            let input = merge(scope, &streams, inputs);
            let ctx = SinkContext {
                name: name.clone(),
                pipeline: plan.name.clone(),
                stats: env.stats.component(name, Role::Sink),
                stdout: Arc::clone(&env.stdout),
                resume: Arc::clone(&env.resume),
                live: Arc::clone(&env.live),
            };
            let done = match sink {
                SinkPlan::File(f) => f.build(input, ctx, scope.index()),
                SinkPlan::Console(c) => c.build(input, ctx),
                SinkPlan::Blackhole(b) => b.build(input, ctx),
                SinkPlan::Kafka(k) => k.build(input, ctx, formats::encoder(k.format())),
                SinkPlan::Timescaledb(t) => t.build(input, ctx),
                SinkPlan::Redis(r) => r.build(input, ctx),
                SinkPlan::Parquet(p) => p.build(input, ctx),
                SinkPlan::Websocket(w) => w.build(input, ctx),
            };
            done.probe_with(&sinks);
        }
    });
    Built { sinks, sources }
}
