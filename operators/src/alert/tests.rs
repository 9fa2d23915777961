//! The alert state machine against a from-scratch reading of Prometheus's
//! rules, on seeded random conditions.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use tidemark_engine::time::Time;

/// What Prometheus's documentation says, step by step, for one label set:
/// an episode starts at a step where the condition holds and no episode is
/// open; it is pending until `hold` has passed since its start, then
/// firing; it ends at the first step where the condition does not hold,
/// unless it was firing and `keep` has not passed since the condition
/// first stopped holding (then it stays firing).
fn reference(conds: &[bool], step: i64, hold: i64, keep: i64) -> Vec<(Option<AlertState>, i64)> {
    let mut out = Vec::new();
    let mut start: Option<i64> = None;
    let mut firing = false;
    let mut stopped: Option<i64> = None;
    for (k, &c) in conds.iter().enumerate() {
        let ts = k as i64 * step;
        if c {
            stopped = None;
            let s = *start.get_or_insert(ts);
            firing = firing || ts - s >= hold;
        } else if start.is_some() {
            let since = *stopped.get_or_insert(ts);
            if !(firing && keep > 0 && ts - since < keep) {
                start = None;
                firing = false;
                stopped = None;
            }
        }
        let state = start.map(|_| {
            if firing {
                AlertState::Firing
            } else {
                AlertState::Pending
            }
        });
        out.push((state, start.unwrap_or(-1)));
    }
    out
}

#[test]
fn instances_follow_the_reference_on_random_conditions() {
    let mut rng = StdRng::seed_from_u64(16);
    let labels = Series::new("", [("alertname", "A")]);
    for case in 0..500 {
        let step = 15_000;
        let hold = step * rng.random_range(0..5);
        let keep = step * rng.random_range(0..4);
        let p = rng.random_range(0.2..0.9);
        let conds: Vec<bool> = (0..60).map(|_| rng.random_bool(p)).collect();
        let want = reference(&conds, step, hold, keep);
        let mut instances = Instances::default();
        let mut changes = Vec::new();
        for (k, &c) in conds.iter().enumerate() {
            let ts = k as i64 * step;
            let found = if c {
                vec![Found {
                    labels: labels.clone(),
                    value: 1.0,
                    annotations: Arc::from(vec![]),
                }]
            } else {
                vec![]
            };
            let active =
                instances.step(ts, found, hold, keep, &mut |i| changes.push((ts, i.state)));
            let got = active
                .first()
                .map(|a| (Some(a.state), a.active_at))
                .unwrap_or((None, -1));
            assert_eq!(
                got, want[k],
                "case {case} step {k} hold {hold} keep {keep} conds {conds:?}"
            );
        }
        // Every change is one the reference shows between two steps.
        for (ts, state) in changes {
            let k = (ts / step) as usize;
            let before = if k == 0 { None } else { want[k - 1].0 };
            let now = want[k].0;
            let expected = match state {
                AlertState::Pending => now.is_some() && (k == 0 || want[k - 1].1 != want[k].1),
                AlertState::Firing => {
                    now == Some(AlertState::Firing) && before != Some(AlertState::Firing)
                }
                AlertState::Resolved => before == Some(AlertState::Firing) && now.is_none(),
            };
            assert!(expected, "case {case}: change to {state:?} at step {k}");
        }
    }
}

/// The samples and alert changes a unit gives for `inputs` (time-sorted),
/// delivered in an order jittered by up to `slack` ms, with the watermark
/// (`max seen - slack`) as each sample's entry time, in random batches
/// with the frontier advanced after each; with `roundtrip`, the unit is
/// now and then replaced by one restored from its checkpointed state (as
/// a restart after a cut does).
fn through_unit(
    inputs: &[(Series, i64, f64)],
    slack: i64,
    seed: u64,
    roundtrip: bool,
) -> Vec<String> {
    use crate::alert::config::{AlertConfig, RulesField};
    use crate::alert::unit::{UnitState, is_late};
    use tidemark_engine::Sample;

    let config = AlertConfig {
        rules: RulesField::Inline(serde_json::json!({"groups": [
            {"name": "g", "interval": "10s", "rules": [
                {"record": "x:sum", "expr": "sum(x)"},
                {"record": "x:count30s", "expr": "count_over_time(x[30s])"},
                {"alert": "High", "expr": "x > 5", "for": "20s",
                 "annotations": {"summary": "{{ $labels.s }} at {{ $value }}"}},
                {"alert": "Sum", "expr": "x:sum > 12", "keep_firing_for": "10s"},
            ]},
        ]})),
        interval: None,
        lookback: Some("1m".into()),
        lateness: None,
        external_labels: Default::default(),
        external_url: String::new(),
    };
    let spec = config.validate().unwrap().spec().clone();
    assert_eq!(spec.units.len(), 1);
    let mut unit = UnitState::new(&spec, 0);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<(i64, &(Series, i64, f64))> = inputs
        .iter()
        .map(|i| {
            (
                i.1 + if slack > 0 {
                    rng.random_range(0..slack)
                } else {
                    0
                },
                i,
            )
        })
        .collect();
    order.sort_by_key(|o| o.0);
    let mut out = Vec::new();
    let mut emit = |t: i64, o: group::Output| {
        for s in o.samples {
            out.push(format!("{t} {} {}", s.series, s.value));
        }
        for a in o.alerts {
            out.push(format!(
                "{t} {} {:?} {} {:?}",
                a.labels, a.state, a.active_at, a.annotations
            ));
        }
        assert!(o.failures.is_empty(), "{:?}", o.failures);
    };
    let mut max_seen = i64::MIN;
    let mut batch = 0;
    for (_, (series, t, v)) in order {
        max_seen = max_seen.max(*t);
        let watermark = (max_seen - slack).max(0) as Time;
        let sample = Sample::new(series.clone(), *t, *v);
        assert!(!is_late(&sample, watermark, spec.lateness));
        unit.insert(&sample);
        batch += 1;
        if batch >= rng.random_range(1..20) {
            batch = 0;
            unit.advance(Some(watermark), &spec, &mut emit);
            if roundtrip && rng.random_bool(0.3) {
                use tidemark_engine::checkpoint::{decode, encode};
                let bytes = encode(&unit.save());
                unit = UnitState::new(&spec, 0);
                unit.restore(decode(&bytes).unwrap()).unwrap();
            }
        }
    }
    unit.advance(None, &spec, &mut emit);
    out.sort();
    out
}

#[test]
fn steps_do_not_depend_on_delivery_order_or_batching() {
    let mut rng = StdRng::seed_from_u64(7);
    for case in 0..20 {
        let mut inputs = Vec::new();
        for s in 0..3 {
            let series = Series::new("x", [("s", format!("{s}"))]);
            // Series start in different steps, so the first step depends
            // on which sample is the earliest.
            let mut t = 1_000 + s * 11_000 + rng.random_range(0..4_000);
            while t < 400_000 {
                inputs.push((series.clone(), t, rng.random_range(0.0..10.0f64).floor()));
                t += rng.random_range(2_000..9_000);
            }
        }
        inputs.sort_by_key(|i| i.1);
        let want = through_unit(&inputs, 0, case, false);
        assert!(
            want.iter().any(|l| l.contains("Firing")),
            "case {case}: nothing fired"
        );
        for seed in 0..5 {
            let got = through_unit(&inputs, 20_000, 100 * case + seed, false);
            assert_eq!(got, want, "case {case}, seed {seed}");
            // A unit restored from its checkpoints steps as one that ran
            // through: samples, instances (`activeAt`, `for`) and next
            // steps all come back.
            let restored = through_unit(&inputs, 20_000, 100 * case + seed, true);
            assert_eq!(restored, want, "case {case}, seed {seed}, restored");
        }
    }
}

/// The spec of inline `groups`.
fn spec_of(groups: serde_json::Value) -> Arc<operator::AlertSpec> {
    use crate::alert::config::{AlertConfig, RulesField};
    AlertConfig {
        rules: RulesField::Inline(serde_json::json!({ "groups": groups })),
        interval: None,
        lookback: Some("1m".into()),
        lateness: None,
        external_labels: Default::default(),
        external_url: String::new(),
    }
    .validate()
    .unwrap()
    .spec()
    .clone()
}

/// The lines a unit of `first` gives for `inputs` (time-sorted), each
/// sample followed by a step to its time; from `switch` on, a unit of
/// `then` takes over, its state carried from the first one's checkpoint
/// (`UnitState::migrate`, as an update of the pipeline does). Also returns
/// the last step the first unit ran, and the alerts of removed rules the
/// migration resolved.
fn migrated_run(
    inputs: &[(Series, i64, f64)],
    first: &operator::AlertSpec,
    then: &operator::AlertSpec,
    switch: i64,
) -> (Vec<(i64, String)>, i64, Vec<tidemark_engine::alert::Alert>) {
    use crate::alert::unit::UnitState;
    use tidemark_engine::Sample;
    use tidemark_engine::checkpoint::{decode, encode};
    let mut unit = UnitState::new(first, 0);
    let mut spec = first;
    let mut out = Vec::new();
    let mut ran = i64::MIN;
    let mut retired = Vec::new();
    let last = std::cell::Cell::new(i64::MIN);
    let mut emit = |t: i64, o: group::Output| {
        last.set(last.get().max(t));
        for s in o.samples {
            out.push((t, format!("{} {}", s.series, s.value)));
        }
        for a in o.alerts {
            out.push((t, format!("{} {:?} {}", a.labels, a.state, a.active_at)));
        }
    };
    for (series, t, v) in inputs {
        if *t > switch && !std::ptr::eq(spec, then) {
            ran = last.get();
            let bytes = encode(&(unit.save(), unit.names()));
            let (saved, names) = decode(&bytes).unwrap();
            unit = UnitState::new(then, 0);
            assert_eq!(unit.migrate(&saved, &names), 1);
            retired = unit.take_retired(ran, "");
            spec = then;
        }
        unit.insert(&Sample::new(series.clone(), *t, *v));
        unit.advance(Some(*t as Time), spec, &mut emit);
    }
    unit.advance(None, spec, &mut emit);
    // (Alert changes of one step come in the order of a hash map.)
    out.sort();
    (out, ran, retired)
}

/// Rules changed under a running unit (a recording rule added before the
/// others, an alerting rule removed): every rule both versions have gives,
/// from the change on, exactly what an unchanged unit gives (its alert
/// instances with their `activeAt` and `for`, the series it wrote, the
/// group's next step came with it), and the new rule evaluates from the
/// change on, over the samples the unit kept.
#[test]
fn rules_added_and_removed_keep_the_state_of_the_others() {
    let shared = |extra: Option<serde_json::Value>, sum: bool| {
        let mut rules = vec![
            serde_json::json!({"record": "x:sum", "expr": "sum(x)"}),
            serde_json::json!({"alert": "High", "expr": "x > 3", "for": "20s"}),
        ];
        if let Some(e) = extra {
            rules.insert(0, e);
        }
        if sum {
            rules.push(serde_json::json!({"alert": "Sum", "expr": "x:sum > 12"}));
        }
        spec_of(serde_json::json!([{"name": "g", "interval": "10s", "rules": rules}]))
    };
    let before = shared(None, true);
    let after = shared(
        Some(serde_json::json!({"record": "x:max", "expr": "max_over_time(x[30s])"})),
        false,
    );
    let mut rng = StdRng::seed_from_u64(11);
    let (mut spanned, mut resolved) = (0, 0);
    for case in 0..10 {
        let mut inputs = Vec::new();
        for s in 0..3 {
            let series = Series::new("x", [("s", format!("{s}"))]);
            let mut t = 1_000 + s * 7_000;
            while t < 300_000 {
                inputs.push((series.clone(), t, rng.random_range(0.0..10.0f64).floor()));
                t += rng.random_range(2_000..9_000);
            }
        }
        inputs.sort_by_key(|i| i.1);
        let switch = rng.random_range(60_000..240_000);
        let (through, _, _) = migrated_run(&inputs, &before, &before, i64::MAX);
        let (migrated, ran, retired) = migrated_run(&inputs, &before, &after, switch);
        // The removed rule's alerts that were active are resolved, at
        // once: nothing would resolve them later.
        let active_sum = through
            .iter()
            .rfind(|(t, l)| *t <= ran && l.contains("{alertname=\"Sum\"}"))
            .is_some_and(|(_, l)| !l.contains(" Resolved "));
        assert_eq!(
            retired.len(),
            usize::from(active_sum),
            "case {case}: {retired:?}"
        );
        for a in &retired {
            assert_eq!((a.state, a.at), (AlertState::Resolved, ran), "case {case}");
            assert_eq!(a.labels.get("alertname"), Some("Sum"), "case {case}");
        }
        resolved += retired.len();
        let shared_lines = |lines: &[(i64, String)], drop: &str| -> Vec<(i64, String)> {
            lines
                .iter()
                .filter(|(t, l)| *t > ran && !l.contains(drop))
                .cloned()
                .collect()
        };
        assert_eq!(
            shared_lines(&migrated, "x:max"),
            shared_lines(&through, "alertname=\"Sum\""),
            "case {case}: the rules both versions have"
        );
        // The new rule steps from the change on, with the 30 s the unit
        // kept behind it.
        let new: Vec<_> = migrated
            .iter()
            .filter(|(_, l)| l.contains("x:max"))
            .collect();
        assert!(new.iter().all(|(t, _)| *t > ran), "case {case}");
        assert!(new.len() > 10, "case {case}: {new:?}");
        spanned += usize::from(migrated.iter().any(|(t, l)| {
            // (`ALERTS_FOR_STATE`'s value is `activeAt` in seconds.)
            *t > ran
                && l.starts_with("ALERTS_FOR_STATE")
                && l.rsplit(' ')
                    .next()
                    .and_then(|a| a.parse::<i64>().ok())
                    .is_some_and(|a| a * 1000 <= ran)
        }));
    }
    assert!(spanned >= 3, "alerts active across the change: {spanned}");
    assert!(resolved >= 2, "removed rules' alerts resolved: {resolved}");
}
