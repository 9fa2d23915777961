//! The alert state machine against a from-scratch reading of Prometheus's
//! rules, on seeded random conditions.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

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
