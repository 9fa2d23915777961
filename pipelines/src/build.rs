//! Building a compiled pipeline as a timely dataflow on one worker. Every
//! worker of every process builds the same dataflow, in the same order.

use std::collections::HashMap;
use std::sync::Arc;

use tidemark_engine::Sample;
use tidemark_engine::alert::Alert;
use tidemark_engine::checkpoint::{Checkpoints, Cut};
use tidemark_engine::component::{
    Failure, Resume, Shutdown, SinkContext, SourceClock, SourceContext, StdoutWriter,
};
use tidemark_engine::incident::Incident;
use tidemark_engine::ingest::IngestHub;
use tidemark_engine::live::LiveHub;
use tidemark_engine::notify::Notification;
use tidemark_engine::runtime::{
    Concatenate, PipelineScope, Probe, ProbeHandle, SampleStream, Worker,
};
use tidemark_engine::spec::{AnyStream, StreamKind, TransformContext};
use tidemark_engine::stats::{PipelineStats, Role};
use tidemark_engine::time::Time;

use crate::plan::Plan;

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
    /// The process's rule groups (`alert` transforms).
    pub rules: Arc<tidemark_engine::rules::RulesHub>,
    /// The process's recent notification deliveries (`notify` sinks).
    pub notifications: Arc<tidemark_engine::notify::Recent>,
    /// The process's recent history for the query API (`memory` sinks).
    pub history: Arc<tidemark_engine::history::Histories>,
    /// The process's silences (`route` transforms).
    pub silences: Arc<tidemark_engine::silence::SilenceHub>,
    /// The process's incidents (`correlate` transforms).
    pub incidents: Arc<tidemark_engine::incident::IncidentBoard>,
    /// Set when a component fails for good: the pipeline stops.
    pub failure: Arc<Failure>,
    /// The tenant that owns the pipeline (`tidemark serve`), if one does.
    pub tenant: Option<String>,
    /// The installation's checkpoints, when the pipeline is checkpointed
    /// (`tidemark serve --data-dir`; see [`Plan::checkpoint_members`]).
    pub checkpoints: Option<Arc<Checkpoints>>,
    /// Where the pipeline keeps state of its own on local disk (see
    /// [`SinkContext::state_dir`]).
    pub state_dir: Option<std::path::PathBuf>,
    /// Processes the pipeline runs on (1 in one process).
    pub processes: usize,
}

/// Handles on a built dataflow.
pub struct Built {
    /// Sees the end of the pipeline (all sinks): done when it is empty.
    pub sinks: ProbeHandle<Time>,
    /// Sees the sources: the watermark.
    pub sources: ProbeHandle<Time>,
    /// The pipeline's failure, once it has one.
    pub failure: Arc<Failure>,
    /// The installation's checkpoints, when it is checkpointed.
    pub checkpoints: Option<Arc<Checkpoints>>,
}

impl Built {
    /// Completes the checkpoints whose parts are all written once the
    /// sinks are durable past them. Running sources do it as they go;
    /// this covers the checkpoints under way when the last of them ended
    /// (a file read to its end, a finite generator done).
    pub fn poll_checkpoints(&self) {
        if let Some(c) = &self.checkpoints {
            let durable = self.sinks.with_frontier(|f| f.iter().min().copied());
            c.poll(durable.unwrap_or(Time::MAX));
        }
    }

    /// Whether the worker is done with the dataflow: everything was
    /// written, or the pipeline failed (its dataflow is then dropped with
    /// what it holds, which was not acknowledged).
    pub fn over(&self) -> bool {
        self.sinks.done() || self.failure.get().is_some()
    }
}

/// The streams `inputs` name, as one. The compiler has checked that they
/// all carry the same kind.
fn merge<'scope>(
    scope: PipelineScope<'scope>,
    streams: &HashMap<String, AnyStream<'scope>>,
    inputs: &[String],
) -> AnyStream<'scope> {
    let mut found: Vec<AnyStream<'scope>> = inputs
        .iter()
        .filter_map(|i| streams.get(i).cloned())
        .collect();
    if found.len() == 1 {
        return found.swap_remove(0);
    }
    match found.first().map(AnyStream::kind) {
        Some(StreamKind::Alerts) => {
            let alerts: Vec<_> = found.into_iter().map(AnyStream::into_alerts).collect();
            AnyStream::Alerts(scope.concatenate::<_, Vec<Alert>>(alerts))
        }
        Some(StreamKind::Notifications) => {
            let all: Vec<_> = found
                .into_iter()
                .map(AnyStream::into_notifications)
                .collect();
            AnyStream::Notifications(scope.concatenate::<_, Vec<Notification>>(all))
        }
        Some(StreamKind::Incidents) => {
            let all: Vec<_> = found.into_iter().map(AnyStream::into_incidents).collect();
            AnyStream::Incidents(scope.concatenate::<_, Vec<Incident>>(all))
        }
        Some(StreamKind::Samples) | None => {
            let samples: Vec<SampleStream<'scope>> =
                found.into_iter().map(AnyStream::into_samples).collect();
            AnyStream::Samples(scope.concatenate::<_, Vec<Sample>>(samples))
        }
    }
}

/// Builds `plan` on this worker.
pub fn build(worker: &mut Worker, plan: &Plan, env: &Env) -> Built {
    let sinks = ProbeHandle::new();
    let sources = ProbeHandle::new();
    let index = worker.index();
    let cut = |name: &str| -> Option<Cut> {
        let c = env.checkpoints.as_ref()?;
        Some(c.cut(c.member(name)?, index))
    };
    worker.dataflow_named::<Time, _, _>(&plan.name, |scope| {
        let mut streams: HashMap<String, AnyStream<'_>> = HashMap::new();
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
                tenant: env.tenant.clone(),
                checkpoint: cut(name),
                failure: Arc::clone(&env.failure),
            };
            streams.insert(name.clone(), source.build(scope, ctx));
        }
        let all: Vec<String> = plan.sources.iter().map(|(n, _, _)| n.clone()).collect();
        merge(scope, &streams, &all)
            .into_samples()
            .probe_with(&sources);

        for (name, transform, inputs) in &plan.transforms {
            let input = merge(scope, &streams, inputs);
            let ctx = TransformContext {
                name: name.clone(),
                pipeline: plan.name.clone(),
                rules: Arc::clone(&env.rules),
                silences: Arc::clone(&env.silences),
                incidents: Arc::clone(&env.incidents),
                stats: Arc::clone(&env.stats),
                checkpoint: cut(name),
                later: transform
                    .later_stages()
                    .into_iter()
                    .filter_map(|(stage, _)| cut(&format!("{name}/{stage}")))
                    .collect(),
                processes: env.processes,
            };
            let outputs = transform.outputs();
            for (port, stream) in outputs.iter().zip(transform.build(input, ctx)) {
                let key = if port.name.is_empty() {
                    name.clone()
                } else {
                    format!("{name}.{}", port.name)
                };
                streams.insert(key, stream);
            }
        }

        // The components that started empty, when the pipeline resumed
        // from a checkpoint.
        let restored = env
            .checkpoints
            .as_ref()
            .and_then(|c| c.restored())
            .map(|r| &r.fresh);
        for (name, sink, inputs) in &plan.sinks {
            let input = merge(scope, &streams, inputs);
            let ctx = SinkContext {
                name: name.clone(),
                pipeline: plan.name.clone(),
                inputs: inputs.clone(),
                stats: env.stats.component(name, Role::Sink),
                stdout: Arc::clone(&env.stdout),
                resume: Arc::clone(&env.resume),
                live: Arc::clone(&env.live),
                notifications: Arc::clone(&env.notifications),
                history: Arc::clone(&env.history),
                worker: scope.index(),
                failure: Arc::clone(&env.failure),
                state_dir: env.state_dir.clone(),
                inputs_restored: restored.is_some_and(|fresh: &Vec<String>| {
                    inputs.iter().all(|i| {
                        let component = i.split_once('.').map_or(i.as_str(), |(c, _)| c);
                        !fresh.iter().any(|f| f == component)
                    })
                }),
            };
            sink.build(input, ctx).probe_with(&sinks);
        }
    });
    Built {
        sinks,
        sources,
        failure: Arc::clone(&env.failure),
        checkpoints: env.checkpoints.clone(),
    }
}
