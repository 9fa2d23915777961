//! The timely wrapper around [`Model`]: samples go to the worker that owns
//! their series, wait until the frontier passes their event time, and are
//! scored in event-time order per series.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Exchange;

use serde::{Deserialize, Serialize};
use tidemark_engine::checkpoint::{
    Cut, Gate, Step, by_key, decode, encode, restore_entries, restore_input,
};
use tidemark_engine::runtime::{Capability, Operator, SampleStream, frontier_min, raise};
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

/// One series' model and its output series (the two always written kept
/// inline: with many series, every pointer followed is a cache miss).
struct Tracked {
    model: Model,
    /// The input series, for checkpoints.
    series: Series,
    score: Series,
    anomaly: Series,
    /// `:expected`, `:lower` and `:upper`, with `explain`.
    band: Option<Box<[Series; 3]>>,
}

impl Tracked {
    fn new(series: &Series, spec: &ScoreSpec) -> Tracked {
        let named = |suffix: &str| series.with_name(&format!("{}{suffix}", series.name()));
        Tracked {
            model: Model::new(&spec.params),
            series: series.clone(),
            score: named(SUFFIXES[0]),
            anomaly: named(SUFFIXES[1]),
            band: spec
                .explain
                .then(|| Box::new([named(SUFFIXES[2]), named(SUFFIXES[3]), named(SUFFIXES[4])])),
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
    // The sample first, then what was said of it (a dashboard charts the
    // first name it sees).
    if spec.passthrough {
        out.push(sample.clone());
    }
    out.push(Sample::new(tracked.score.clone(), t, score.score));
    out.push(Sample::new(
        tracked.anomaly.clone(),
        t,
        f64::from(u8::from(score.anomaly)),
    ));
    if let Some([expected, lower, upper]) = tracked.band.as_deref() {
        out.push(Sample::new(expected.clone(), t, score.expected));
        out.push(Sample::new(lower.clone(), t, score.lower));
        out.push(Sample::new(upper.clone(), t, score.upper));
    }
}

/// The score state of one worker: the tracked series and the samples
/// waiting for the frontier. Kept apart from timely so that it is tested
/// directly.
pub struct Scorer {
    spec: ScoreSpec,
    series: FxHashMap<SeriesId, Tracked>,
    waiting: BTreeMap<i64, Vec<Sample>>,
    /// The frontier at the last sweep of idle series.
    swept: i64,
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
            swept: 0,
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
                let spec = &self.spec;
                let tracked = self
                    .series
                    .entry(sample.series.id())
                    .or_insert_with(|| Tracked::new(&sample.series, spec));
                if tracked.model.last() > sample.timestamp {
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
        // Idle series are swept out every quarter of `idle_ms` of event
        // time (at most every minute), not on every frontier step.
        if let Some(f) = frontier {
            let f = i64::try_from(f).unwrap_or(i64::MAX);
            let every = (self.spec.idle_ms / 4).clamp(1, 60_000);
            if f.saturating_sub(self.swept) >= every {
                self.swept = f;
                let horizon = f.saturating_sub(self.spec.idle_ms);
                self.series.retain(|_, t| t.model.last() >= horizon);
            }
        }
    }

    /// Series tracked now.
    pub fn tracked(&self) -> usize {
        self.series.len()
    }

    /// Every series' model and waiting samples, for a checkpoint: `(series
    /// id, encoded state)`.
    pub fn snapshot(&self) -> Vec<(u64, Vec<u8>)> {
        let mut saved: FxHashMap<SeriesId, Saved> = FxHashMap::default();
        for (id, t) in &self.series {
            let s = Saved {
                series: t.series.clone(),
                model: Some(t.model.clone()),
                waiting: Vec::new(),
            };
            saved.insert(*id, s);
        }
        for (ts, samples) in &self.waiting {
            for s in samples {
                saved
                    .entry(s.series.id())
                    .or_insert_with(|| Saved {
                        series: s.series.clone(),
                        model: None,
                        waiting: Vec::new(),
                    })
                    .waiting
                    .push((*ts, s.value));
            }
        }
        saved
            .into_iter()
            .map(|(id, s)| (id.0, encode(&s)))
            .collect()
    }

    /// Adds one series' state from a checkpoint.
    pub fn restore(&mut self, key: u64, bytes: &[u8]) -> Result<(), String> {
        let saved: Saved = decode(bytes)?;
        if let Some(model) = saved.model {
            let mut tracked = Tracked::new(&saved.series, &self.spec);
            if model.detector() != self.spec.params.detector {
                return Err(format!(
                    "the checkpoint holds a {:?} model, but the detector is {:?}",
                    model.detector(),
                    self.spec.params.detector
                ));
            }
            tracked.model = model;
            self.series.insert(SeriesId(key), tracked);
        }
        for (ts, value) in saved.waiting {
            self.insert(Sample::new(saved.series.clone(), ts, value));
        }
        Ok(())
    }
}

/// One series' state in a checkpoint.
#[derive(Serialize, Deserialize)]
struct Saved {
    series: Series,
    model: Option<Model>,
    /// Samples not scored yet: (timestamp, value).
    waiting: Vec<(i64, f64)>,
}

/// Anomaly scoring on a stream of samples.
pub trait ScoreSamples<'scope> {
    /// Scores each series' samples in event-time order; the samples of a
    /// series meet on one worker. With `checkpoint`, the models are
    /// written at every checkpoint cut and start from the restored ones.
    fn score(
        self,
        name: &str,
        spec: ScoreSpec,
        stats: Arc<ComponentStats>,
        checkpoint: Option<Cut>,
    ) -> SampleStream<'scope>;
}

impl<'scope> ScoreSamples<'scope> for SampleStream<'scope> {
    fn score(
        self,
        name: &str,
        spec: ScoreSpec,
        stats: Arc<ComponentStats>,
        checkpoint: Option<Cut>,
    ) -> SampleStream<'scope> {
        let route = Exchange::new(|s: &Sample| s.series.id().0);
        let restore = restore_input(self.scope(), name, checkpoint.as_ref());
        self.binary_frontier(restore, route, by_key(), name, move |capability, _info| {
            let mut held = Some(capability);
            let mut scorer = Scorer::new(spec);
            let mut last_frontier: Option<Option<Time>> = None;
            let mut gate: Gate<Vec<Sample>> = Gate::new(checkpoint);
            move |(input, frontier), (restored, restored_frontier), output| {
                restored.for_each(|_cap, data| {
                    restore_entries(data, &stats, |key, bytes| scorer.restore(key, bytes));
                });
                if restored_frontier.frontier().is_empty()
                    && let Some(x) = gate.restored()
                    && let Some(cap) = held.as_mut()
                    && x > *cap.time()
                {
                    cap.downgrade(&x);
                }
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    add(&stats.received, data.len() as u64);
                    if !gate.wait(time, data) {
                        for sample in data.drain(..) {
                            scorer.insert(sample);
                        }
                    }
                });
                if gate.restoring() {
                    return;
                }
                let f = frontier_min(frontier);
                if last_frontier != Some(f) || f.is_none() || gate.is_waiting() {
                    last_frontier = Some(f);
                    if let Some(cap) = held.as_mut() {
                        let mut sent = 0u64;
                        let mut emit = |cap: &Capability<Time>, ts: i64, mut batch: Vec<Sample>| {
                            sent += batch.len() as u64;
                            let at = cap.delayed(&(ts.max(0) as Time).max(*cap.time()));
                            output.session(&at).give_container(&mut batch);
                        };
                        gate.advance(f, &mut |step| match step {
                            Step::Apply(_, batch) => {
                                for sample in batch {
                                    scorer.insert(sample);
                                }
                                Vec::new()
                            }
                            Step::Cut(x) => {
                                // Score what the cut passed, then write the
                                // models; later scores are at or after it.
                                scorer.advance(Some(x), &mut |ts, b| emit(cap, ts, b));
                                raise(cap, x);
                                encode(&scorer.snapshot())
                            }
                        });
                        scorer.advance(f, &mut |ts, b| emit(cap, ts, b));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ScoreSpec {
        ScoreSpec {
            params: Params::default(),
            explain: false,
            passthrough: false,
            idle_ms: 10_000,
        }
    }

    fn scored(scorer: &mut Scorer, frontier: Option<Time>) -> Vec<i64> {
        let mut times = Vec::new();
        scorer.advance(frontier, &mut |ts, batch| {
            assert_eq!(batch.len(), 2, "a score and a flag per sample");
            times.push(ts);
        });
        times
    }

    #[test]
    fn samples_wait_for_the_frontier_and_late_ones_are_dropped() {
        let s = Series::new("m", [("a", "1")]);
        let mut scorer = Scorer::new(spec());
        for ts in [3000, 1000, 2000] {
            scorer.insert(Sample::new(s.clone(), ts, 1.0));
        }
        // In event-time order, up to the frontier.
        assert_eq!(scored(&mut scorer, Some(2500)), vec![1000, 2000]);
        // Older than the last scored sample of its series: late.
        scorer.insert(Sample::new(s.clone(), 1500, 1.0));
        assert_eq!(scored(&mut scorer, Some(2600)), Vec::<i64>::new());
        assert_eq!(scorer.late, 1);
        // Newer than the last scored, though behind the frontier: scored.
        scorer.insert(Sample::new(s.clone(), 2400, 1.0));
        assert_eq!(scored(&mut scorer, None), vec![2400, 3000]);
    }

    #[test]
    fn a_snapshot_restores_into_its_detector_only() {
        let mut scorer = Scorer::new(spec());
        for t in 1..50 {
            scorer.insert(Sample::new(
                Series::new("m", [("a", "1")]),
                t * 1000,
                t as f64,
            ));
        }
        scored(&mut scorer, Some(50_000));
        assert_eq!(scorer.tracked(), 1);
        let saved = scorer.snapshot();
        let mut same = Scorer::new(spec());
        for (key, bytes) in &saved {
            same.restore(*key, bytes).unwrap();
        }
        assert_eq!(same.tracked(), 1);
        let mut light = spec();
        light.params.detector = crate::score::Detector::Light;
        let mut other = Scorer::new(light);
        let (key, bytes) = &saved[0];
        let err = other.restore(*key, bytes).unwrap_err();
        assert!(
            err.contains("Novelty model, but the detector is Light"),
            "{err}"
        );
    }

    #[test]
    fn idle_series_are_forgotten() {
        let mut scorer = Scorer::new(spec());
        scorer.insert(Sample::new(Series::new("m", [("a", "1")]), 1000, 1.0));
        scorer.insert(Sample::new(Series::new("m", [("a", "2")]), 9_000, 1.0));
        scored(&mut scorer, Some(9_001));
        assert_eq!(scorer.tracked(), 2);
        scored(&mut scorer, Some(15_000));
        assert_eq!(scorer.tracked(), 1, "idle for more than 10 s");
    }
}
