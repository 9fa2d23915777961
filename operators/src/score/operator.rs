//! The timely wrapper around [`Model`]: samples go to the worker that owns
//! their series, wait until the frontier passes their event time, and are
//! scored in event-time order per series.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Exchange;

use tidemark_engine::runtime::{Operator, SampleStream, frontier_min};
use tidemark_engine::series::{Label, METRIC_NAME_LABEL};
use tidemark_engine::stats::{ComponentStats, DropReason, add};
use tidemark_engine::time::Time;
use tidemark_engine::{Sample, Series, SeriesId};

use super::{Model, Params, Score};

/// What the operator writes and keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreSpec {
    /// The detector's parameters.
    pub params: Params,
    /// Also write `<metric>:expected`, `:lower` and `:upper`.
    pub explain: bool,
    /// Also write the input sample.
    pub passthrough: bool,
    /// A series with no sample for this long (event time, ms) is forgotten.
    pub idle_ms: i64,
}

/// Suffixes of the output series, in the order [`outputs`] writes them.
const SUFFIXES: [&str; 5] = [
    ":anomaly_score",
    ":anomaly",
    ":expected",
    ":lower",
    ":upper",
];

/// One series' model and its output series.
struct Tracked {
    model: Model,
    outputs: Box<[Series]>,
}

impl Tracked {
    fn new(series: &Series, explain: bool) -> Tracked {
        let n = if explain { 5 } else { 2 };
        let outputs = SUFFIXES[..n]
            .iter()
            .map(|suffix| {
                let name: Arc<str> = Arc::from(format!("{}{suffix}", series.name()));
                let labels: Vec<Label> = series
                    .labels()
                    .iter()
                    .map(|(k, v)| {
                        if k.as_ref() == METRIC_NAME_LABEL {
                            (Arc::clone(k), Arc::clone(&name))
                        } else {
                            (Arc::clone(k), Arc::clone(v))
                        }
                    })
                    .collect();
                Series::from_labels(labels)
            })
            .collect();
        Tracked {
            model: Model::default(),
            outputs,
        }
    }
}

/// Writes the samples of one score.
fn outputs(
    tracked: &Tracked,
    sample: &Sample,
    score: &Score,
    spec: &ScoreSpec,
    out: &mut Vec<Sample>,
) {
    let t = sample.timestamp;
    let o = &tracked.outputs;
    out.push(Sample::new(o[0].clone(), t, score.score));
    out.push(Sample::new(
        o[1].clone(),
        t,
        f64::from(u8::from(score.anomaly)),
    ));
    if spec.explain {
        out.push(Sample::new(o[2].clone(), t, score.expected));
        out.push(Sample::new(o[3].clone(), t, score.lower));
        out.push(Sample::new(o[4].clone(), t, score.upper));
    }
    if spec.passthrough {
        out.push(sample.clone());
    }
}

/// The score state of one worker: the tracked series and the samples
/// waiting for the frontier. Kept apart from timely so that it is tested
/// directly.
pub struct Scorer {
    spec: ScoreSpec,
    series: FxHashMap<SeriesId, Tracked>,
    waiting: BTreeMap<i64, Vec<Sample>>,
    /// Samples dropped because a later sample of their series was scored.
    pub late: u64,
}

impl Scorer {
    /// An empty scorer.
    pub fn new(spec: ScoreSpec) -> Scorer {
        Scorer {
            spec,
            series: FxHashMap::default(),
            waiting: BTreeMap::new(),
            late: 0,
        }
    }

    /// Holds a sample until the frontier passes its event time.
    pub fn insert(&mut self, sample: Sample) {
        self.waiting
            .entry(sample.timestamp)
            .or_default()
            .push(sample);
    }

    /// Scores every waiting sample with an event time before `frontier`
    /// (all of them when it is `None`), in event-time order, handing each
    /// event time's outputs to `emit`; then forgets series idle for
    /// `idle_ms` before the frontier.
    pub fn advance(&mut self, frontier: Option<Time>, emit: &mut impl FnMut(i64, Vec<Sample>)) {
        while let Some(entry) = self.waiting.first_entry() {
            let ts = *entry.key();
            if frontier.is_some_and(|f| ts >= 0 && (ts as u64) >= f) {
                break;
            }
            let batch = entry.remove();
            let mut out = Vec::with_capacity(batch.len() * 2);
            for sample in &batch {
                let explain = self.spec.explain;
                let tracked = self
                    .series
                    .entry(sample.series.id())
                    .or_insert_with(|| Tracked::new(&sample.series, explain));
                if tracked.model.last > sample.timestamp {
                    self.late += 1;
                    continue;
                }
                let score = tracked
                    .model
                    .update(&self.spec.params, sample.timestamp, sample.value);
                outputs(tracked, sample, &score, &self.spec, &mut out);
            }
            if !out.is_empty() {
                emit(ts, out);
            }
        }
        if let Some(f) = frontier {
            let horizon = (f as i64).saturating_sub(self.spec.idle_ms);
            if self.series.len() > 1024 || self.series.values().any(|t| t.model.last < horizon) {
                self.series.retain(|_, t| t.model.last >= horizon);
            }
        }
    }

    /// Series tracked now.
    pub fn tracked(&self) -> usize {
        self.series.len()
    }
}

/// Anomaly scoring on a stream of samples.
pub trait ScoreSamples<'scope> {
    /// Scores each series' samples in event-time order; the samples of a
    /// series meet on one worker.
    fn score(self, name: &str, spec: ScoreSpec, stats: Arc<ComponentStats>)
    -> SampleStream<'scope>;
}

impl<'scope> ScoreSamples<'scope> for SampleStream<'scope> {
    fn score(
        self,
        name: &str,
        spec: ScoreSpec,
        stats: Arc<ComponentStats>,
    ) -> SampleStream<'scope> {
        let route = Exchange::new(|s: &Sample| s.series.id().0);
        self.unary_frontier(route, name, move |capability, _info| {
            let mut held = Some(capability);
            let mut scorer = Scorer::new(spec);
            let mut last_frontier: Option<Option<Time>> = None;
            move |(input, frontier), output| {
                input.for_each(|_cap, data| {
                    add(&stats.received, data.len() as u64);
                    for sample in data.drain(..) {
                        scorer.insert(sample);
                    }
                });
                let f = frontier_min(frontier);
                if last_frontier != Some(f) || f.is_none() {
                    last_frontier = Some(f);
                    if let Some(cap) = held.as_ref() {
                        let mut sent = 0u64;
                        scorer.advance(f, &mut |ts, mut batch| {
                            sent += batch.len() as u64;
                            let at = cap.delayed(&(ts.max(0) as Time).max(*cap.time()));
                            output.session(&at).give_container(&mut batch);
                        });
                        add(&stats.sent, sent);
                    }
                    match f {
                        Some(f) => {
                            if let Some(cap) = held.as_mut()
                                && f > *cap.time()
                            {
                                cap.downgrade(&f);
                            }
                        }
                        None => held = None,
                    }
                }
                let late = std::mem::take(&mut scorer.late);
                stats.dropped(DropReason::Late, late);
            }
        })
        .container::<Vec<Sample>>()
    }
}
