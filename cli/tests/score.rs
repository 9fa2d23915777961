//! The `score` transform end to end: the operator with 1, 2 and 4 workers
//! and each detector,
//! fed out of order within the source's `max_out_of_orderness`, writes
//! exactly what a direct loop over each series' samples in event-time order
//! computes with the state machine.

use tidemark_testkit as common;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use common::{read_rows, run_text, temp_dir};
use tidemark_operators::score::{Detector, Model, Params};

/// (series index, timestamp, value) for 12 series of 400 samples, one a
/// second with unique times, spikes and a level shift, and each line moved
/// up to 3 s from its place (a deterministic shuffle).
fn input(seed: u64) -> Vec<(usize, i64, f64)> {
    let mut x = seed | 1;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut rows = Vec::new();
    for s in 0..12usize {
        for i in 0..400i64 {
            let mut v = 100.0 + s as f64 + (next(1000) as f64) / 100.0;
            if i == 250 + s as i64 {
                v += 80.0;
            }
            if s % 3 == 0 && i > 320 {
                v += 30.0;
            }
            rows.push((s, 1_000_000 + i * 1000 + s as i64, v));
        }
    }
    rows.sort_by_key(|r| r.1);
    // Out of order by up to 3 s: sort by a jittered key.
    let mut keyed: Vec<(i64, (usize, i64, f64))> = rows
        .into_iter()
        .map(|r| (r.1 + next(3000) as i64, r))
        .collect();
    keyed.sort_by_key(|k| k.0);
    keyed.into_iter().map(|(_, r)| r).collect()
}

#[test]
fn the_operator_with_1_2_and_4_workers_matches_a_direct_loop() {
    let rows = input(11);
    let dir = temp_dir("score-reference");
    let path = dir.join("in.jsonl");
    let mut text = String::new();
    for (s, ts, v) in &rows {
        let _ = writeln!(
            text,
            r#"{{"name":"m","labels":{{"s":"{s}"}},"timestamp":{ts},"value":{v}}}"#
        );
    }
    std::fs::write(&path, text).unwrap();

    for (name, detector) in [
        ("novelty", Detector::Novelty),
        ("light", Detector::Light),
        ("robust", Detector::Robust),
    ] {
        // The direct loop: each series in event-time order.
        let p = Params {
            detector,
            warmup: 32,
            ..Params::default()
        };
        let mut per_series: BTreeMap<usize, Vec<(i64, f64)>> = BTreeMap::new();
        for (s, ts, v) in &rows {
            per_series.entry(*s).or_default().push((*ts, *v));
        }
        let mut want: BTreeMap<(String, String, i64), f64> = BTreeMap::new();
        let mut flagged = 0;
        for (s, mut samples) in per_series {
            samples.sort_by_key(|x| x.0);
            let mut m = Model::new(&p);
            for (ts, v) in samples {
                let score = m.update(&p, ts, v);
                flagged += usize::from(score.anomaly);
                want.insert(("m:anomaly_score".into(), s.to_string(), ts), score.score);
                want.insert(
                    ("m:anomaly".into(), s.to_string(), ts),
                    f64::from(u8::from(score.anomaly)),
                );
            }
        }
        assert!(flagged >= 12, "{name}: the spikes are flagged: {flagged}");

        for workers in [1, 2, 4] {
            let out = dir.join(format!("out-{name}-{workers}.jsonl"));
            let pipeline = format!(
                "name: scored\nsources:\n  in: {{type: file, path: {}, max_out_of_orderness: 3s}}\n\
                 transforms:\n  s: {{type: score, inputs: [in], detector: {name}, warmup: 32}}\n\
                 sinks:\n  out: {{type: file, inputs: [s], path: {}}}\n",
                path.display(),
                out.display()
            );
            let report = run_text(&pipeline, workers);
            assert_eq!(report.totals.late, 0, "{name}, {workers} workers");
            let got: BTreeMap<(String, String, i64), f64> = read_rows(&out)
                .into_iter()
                .map(|r| ((r.name, r.labels["s"].clone(), r.timestamp), r.value))
                .collect();
            assert_eq!(got.len(), want.len(), "{name}, {workers} workers");
            let differ: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(*v))
                .take(5)
                .collect();
            assert!(differ.is_empty(), "{name}, {workers} workers: {differ:?}");
        }
    }
}

#[test]
fn explain_and_passthrough_write_the_band_and_the_input() {
    let dir = temp_dir("score-explain");
    let path = dir.join("in.jsonl");
    let mut text = String::new();
    for i in 0..50 {
        let _ = writeln!(
            text,
            r#"{{"name":"cpu","labels":{{"host":"a"}},"timestamp":{},"value":{}}}"#,
            1000 * (i + 1),
            40 + i % 7
        );
    }
    std::fs::write(&path, text).unwrap();
    let out = dir.join("out.jsonl");
    let pipeline = format!(
        "name: explained\nsources:\n  in: {{type: file, path: {}}}\n\
         transforms:\n  s: {{type: score, inputs: [in], passthrough: true, explain: true, range: {{min: 0, max: 100}}}}\n\
         sinks:\n  out: {{type: file, inputs: [s], path: {}}}\n",
        path.display(),
        out.display()
    );
    run_text(&pipeline, 2);
    let rows = read_rows(&out);
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        *names.entry(r.name.as_str()).or_default() += 1;
        assert_eq!(r.labels["host"], "a");
    }
    let want: BTreeMap<&str, usize> = [
        "cpu",
        "cpu:anomaly",
        "cpu:anomaly_score",
        "cpu:expected",
        "cpu:lower",
        "cpu:upper",
    ]
    .into_iter()
    .map(|n| (n, 50))
    .collect();
    assert_eq!(names, want);
    let last = |name: &str| rows.iter().rfind(|r| r.name == name).unwrap().value;
    assert!(last("cpu:lower") < last("cpu:expected") && last("cpu:expected") < last("cpu:upper"));
    assert!((40.0..47.0).contains(&last("cpu:expected")));
}

/// The generator's injected anomalies are marked, and the detector finds
/// spikes and level shifts among them (recall per kind printed; precision
/// over all flags).
#[test]
fn injected_anomalies_are_marked_and_spikes_and_shifts_are_found() {
    let dir = temp_dir("score-injected");
    let (scores, markers) = (dir.join("scores.jsonl"), dir.join("markers.jsonl"));
    let pipeline = format!(
        "name: injected\nsources:\n  gen:\n    type: generator\n    series: 20\n    interval: 1m\n    \
         start: 2026-01-01T00:00:00Z\n    samples: 3000\n    seed: 5\n    anomalies: {{probability: 0.5, every: 500}}\n\
         transforms:\n  s:\n    type: score\n    inputs: [gen]\n    match: '{{__name__=~\".+\", __name__!=\"tidemark_injected_anomaly\"}}'\n  \
         m: {{type: filter, inputs: [gen], match: tidemark_injected_anomaly}}\n\
         sinks:\n  scores: {{type: file, inputs: [s], path: {}}}\n  markers: {{type: file, inputs: [m], path: {}}}\n",
        scores.display(),
        markers.display()
    );
    run_text(&pipeline, 2);
    let markers = read_rows(&markers);
    assert!(markers.len() >= 20, "{} episodes", markers.len());
    let flags: std::collections::BTreeSet<(String, String, i64)> = read_rows(&scores)
        .into_iter()
        .filter(|r| r.name.ends_with(":anomaly") && r.value == 1.0)
        .map(|r| {
            (
                r.name.trim_end_matches(":anomaly").to_owned(),
                r.labels["host"].clone(),
                r.timestamp,
            )
        })
        .collect();
    // Detected: a flag of the series from the episode's start to 10
    // minutes after the longest episode (125 samples) ends.
    let mut per_kind: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut true_flags = std::collections::BTreeSet::new();
    for m in &markers {
        let (metric, host) = (m.labels["metric"].clone(), m.labels["host"].clone());
        let until = m.timestamp + 135 * 60_000;
        let hit: Vec<_> = flags
            .range((metric.clone(), host.clone(), m.timestamp)..=(metric, host, until))
            .cloned()
            .collect();
        let entry = per_kind.entry(m.labels["kind"].clone()).or_default();
        entry.0 += 1;
        if !hit.is_empty() {
            entry.1 += 1;
        }
        true_flags.extend(hit);
    }
    for (kind, (n, found)) in &per_kind {
        eprintln!("{kind}: {found} of {n} found");
    }
    eprintln!("precision: {} of {} flags", true_flags.len(), flags.len());
    let recall = |kind: &str| {
        let (n, found) = per_kind.get(kind).copied().unwrap_or((0, 0));
        found as f64 / n.max(1) as f64
    };
    assert!(recall("spike") >= 0.8, "{per_kind:?}");
    assert!(recall("level_shift") >= 0.5, "{per_kind:?}");
    assert!(per_kind.len() == 5, "{per_kind:?}");
}
