//! The correlation model, and the operator held to a from-scratch
//! computation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use timely::dataflow::InputHandleVec;
use timely::dataflow::operators::{Input, Inspect, Probe};

use tidemark_engine::incident::{Incident, IncidentStatus};
use tidemark_engine::stats::ComponentStats;
use tidemark_engine::{Sample, Series};

use super::episodes::alert_labels;
use super::model::{EpKey, Keys, LabelSet, Link, Model, Rules, Topology, Why, reference_partition};
use super::operator::{Settings, correlate};

fn set(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn svc(name: &str) -> LabelSet {
    set(&[("service", name)])
}

fn rules() -> Rules {
    Rules {
        window: 600_000,
        hops: 2,
        topology_weight: 1.0,
        decay: 0.5,
        max_delay: 180_000,
        lead: 60_000,
        by: Vec::new(),
        labels_weight: 0.0,
        within: 60_000,
        time_weight: 0.5,
        together: None,
        threshold: 1.0,
        link: Link::Strongest,
    }
}

/// checkout -> payments -> db; cart -> payments; checkout -> search;
/// payments and search run on node-1.
fn shop() -> Vec<(LabelSet, LabelSet)> {
    vec![
        (svc("checkout"), svc("payments")),
        (svc("cart"), svc("payments")),
        (svc("payments"), svc("db")),
        (svc("checkout"), svc("search")),
        (svc("payments"), set(&[("host", "node-1")])),
        (svc("search"), set(&[("host", "node-1")])),
    ]
}

fn alert(name: &str, service: &str) -> Series {
    Series::new("", [("alertname", name), ("service", service)])
}

#[test]
fn ties_follow_common_causes_not_common_dependents() {
    let model = Model {
        topology: Topology::new(&shop(), 2),
        rules: rules(),
    };
    let keys = |s: &str| model.keys(&alert("A", s));
    let at = |t: u64| (t, 1u64);
    let later = |t: u64| (t, 2u64);
    let d = |a: &str, b: &str| {
        model
            .why(&at(0), &keys(a), &later(0), &keys(b))
            .topology
            .map(|t| t.0)
    };
    assert_eq!(d("payments", "payments"), Some(0));
    assert_eq!(d("checkout", "payments"), Some(1));
    assert_eq!(d("checkout", "db"), Some(2));
    // Both depend on payments.
    assert_eq!(d("checkout", "cart"), Some(2));
    // search and payments share node-1.
    assert_eq!(d("search", "payments"), Some(2));
    // payments and search are both called by checkout: no common cause.
    assert_eq!(d("cart", "search"), None);
    // cart -> payments -> db: two hops.
    assert_eq!(d("cart", "db"), Some(2));
    assert_eq!(d("checkout", "node-x"), None);
    // An alert on the host itself.
    let host = model.keys(&Series::new(
        "",
        [("alertname", "Down"), ("host", "node-1")],
    ));
    assert_eq!(
        model
            .why(&at(0), &keys("search"), &later(0), &host)
            .topology
            .map(|t| t.0),
        Some(1)
    );
    // A fault spreads from the cause: payments' alert may come up to
    // 3m a hop after db's, and at most `within` (1m) before it.
    let tied = |a: &str, ta: u64, b: &str, tb: u64| {
        let why = model.why(&at(ta), &keys(a), &later(tb), &keys(b));
        model.rules.ties(&why, ta.abs_diff(tb))
    };
    assert!(tied("db", 0, "payments", 180_000));
    assert!(!tied("db", 0, "payments", 180_001));
    assert!(tied("db", 60_000, "payments", 0));
    assert!(!tied("db", 60_001, "payments", 0));
    // Two hops: 6m, but two hops alone weigh 0.5: only close in time.
    assert!(tied("db", 0, "checkout", 60_000));
    assert!(!tied("db", 0, "checkout", 60_001));
    // Siblings through a common cause: either order.
    assert!(tied("checkout", 30_000, "cart", 0));
    assert!(tied("checkout", 0, "cart", 30_000));
    // Out of the window nothing ties.
    let mut wide = model.rules.clone();
    wide.max_delay = 3_600_000;
    let why = Why {
        topology: Some((1, 0)),
        ..Why::default()
    };
    assert!(wide.ties(&why, 600_000));
    assert!(!wide.ties(&why, 600_001));
}

#[test]
fn labels_rule_needs_every_label() {
    let mut r = rules();
    r.by = vec!["cluster".into(), "namespace".into()];
    r.labels_weight = 1.0;
    let a = Series::new("", [("cluster", "c1"), ("namespace", "n")]);
    let b = Series::new("", [("cluster", "c1"), ("namespace", "n"), ("x", "1")]);
    let c = Series::new("", [("cluster", "c1")]);
    assert_eq!(r.by_key(&a), r.by_key(&b));
    assert!(r.by_key(&a).is_some());
    assert_eq!(r.by_key(&c), None);
}

/// One generated alert episode: its labels, and its firing samples.
#[derive(Clone, Debug)]
struct Generated {
    labels: Series,
    times: Vec<i64>,
}

const STEP: i64 = 15_000;

/// Random episodes over the shop topology and a few hosts: bursts that
/// start at one service and spread, plus noise.
fn scenario(rng: &mut StdRng, n: usize) -> Vec<Generated> {
    let services = [
        "checkout", "cart", "payments", "db", "search", "auth", "mail",
    ];
    let names = ["HighLatency", "Errors", "Saturation"];
    let mut out = Vec::new();
    let mut count: HashMap<String, i64> = HashMap::new();
    for _ in 0..n {
        let service = services[rng.random_range(0..services.len())];
        let name = names[rng.random_range(0..names.len())];
        // Firing samples every STEP, on a grid, for 1 to 12 steps.
        let start = rng.random_range(0..240i64) * STEP;
        let len = rng.random_range(1..12i64);
        let key = format!("{name}/{service}");
        let k = count.entry(key).or_default();
        *k += 1;
        let labels = Series::new(
            "",
            [
                ("alertname", name),
                ("service", service),
                ("instance", &format!("i{k}")),
            ],
        );
        out.push(Generated {
            labels,
            times: (0..len).map(|i| start + i * STEP).collect(),
        });
    }
    out
}

fn samples_of(episodes: &[Generated]) -> Vec<Sample> {
    let mut all = Vec::new();
    for e in episodes {
        let series = Series::new("ALERTS", e.labels.tags().chain([("alertstate", "firing")]));
        for &t in &e.times {
            all.push(Sample::new(series.clone(), t, 1.0));
        }
    }
    all.sort_by_key(|s| (s.timestamp, s.series.id()));
    all
}

/// Runs the operator on `workers` workers; worker 0 feeds `samples` in
/// the order given, its watermark trailing the latest time by `slack`.
fn run(
    samples: Vec<Sample>,
    settings: Settings,
    workers: usize,
    slack: i64,
) -> (Vec<Sample>, Vec<Incident>) {
    let timed = samples.into_iter().map(|s| (s.timestamp, s)).collect();
    run_with(timed, settings, workers, slack, |s| s)
}

/// [`run`] for any input: each record with its time, turned into samples
/// by `to_samples` inside the dataflow.
fn run_with<T: timely::ExchangeData + Clone + Sync>(
    input: Vec<(i64, T)>,
    settings: Settings,
    workers: usize,
    slack: i64,
    to_samples: for<'s> fn(
        timely::dataflow::StreamVec<'s, u64, T>,
    ) -> tidemark_engine::runtime::SampleStream<'s>,
) -> (Vec<Sample>, Vec<Incident>) {
    let out: Arc<Mutex<(Vec<Sample>, Vec<Incident>)>> = Arc::default();
    let sink = Arc::clone(&out);
    let samples = Arc::new(input);
    timely::execute(timely::Config::process(workers), move |worker| {
        let sink = Arc::clone(&sink);
        let settings = settings.clone();
        let mut input: InputHandleVec<u64, T> = InputHandleVec::new();
        let probe = worker.dataflow::<u64, _, _>(|scope| {
            let stream = to_samples(scope.input_from(&mut input));
            let (labelled, incidents) =
                correlate(stream, "c", settings, Arc::new(ComponentStats::default()));
            let s1 = Arc::clone(&sink);
            let s2 = Arc::clone(&sink);
            labelled.inspect(move |s| s1.lock().unwrap().0.push(s.clone()));
            incidents
                .inspect(move |i| s2.lock().unwrap().1.push(i.clone()))
                .probe()
                .0
        });
        if worker.index() == 0 {
            let mut latest = 0i64;
            for (t, s) in samples.iter() {
                latest = latest.max(*t);
                let w = (latest - slack).max(0) as u64;
                if w > *input.time() {
                    input.advance_to(w);
                }
                input.send(s.clone());
                worker.step();
            }
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap()
    .join();
    let mut got = std::mem::take(&mut *out.lock().unwrap());
    got.0.sort_by_key(|s| (s.timestamp, s.series.id()));
    got.1.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    got
}

fn settings(model: Arc<Model>, lateness: u64) -> Settings {
    Settings {
        model,
        lateness,
        gap: 60_000,
        horizon: 300_000,
        edge_metric: None,
    }
}

/// For every step, the reference partition of the episodes alive then,
/// as the sets of alerts that fire at that step and share an incident.
fn expected(
    model: &Model,
    episodes: &[Generated],
    gap: i64,
    horizon: i64,
) -> BTreeMap<i64, BTreeSet<BTreeSet<u64>>> {
    expected_for(model, episodes, gap, horizon, |e, t| e.times.contains(&t))
}

/// [`expected`] for the alerts `shown` at each step.
fn expected_for(
    model: &Model,
    episodes: &[Generated],
    gap: i64,
    horizon: i64,
    shown: fn(&Generated, i64) -> bool,
) -> BTreeMap<i64, BTreeSet<BTreeSet<u64>>> {
    let times: BTreeSet<i64> = episodes.iter().flat_map(|e| e.times.clone()).collect();
    let mut out = BTreeMap::new();
    for &t in &times {
        // Alive: started, and not retired (last + gap + horizon > t).
        let alive: Vec<(EpKey, Arc<Keys>)> = episodes
            .iter()
            .filter(|e| e.times[0] <= t && e.times.last().unwrap() + gap + horizon > t)
            .map(|e| {
                (
                    (e.times[0] as u64, series_of(e).id().0),
                    Arc::new(model.keys(&e.labels)),
                )
            })
            .collect();
        let partition = reference_partition(model, &alive);
        let groups = shown_groups(partition, episodes, |e| shown(e, t));
        if !groups.is_empty() {
            out.insert(t, groups);
        }
    }
    out
}

/// The incidents of a partition as the sets of the alerts `shown` (their
/// series ids), leaving out incidents with none.
fn shown_groups(
    partition: Vec<Vec<EpKey>>,
    episodes: &[Generated],
    shown: impl Fn(&Generated) -> bool,
) -> BTreeSet<BTreeSet<u64>> {
    let firing: BTreeSet<u64> = episodes
        .iter()
        .filter(|e| shown(e))
        .map(|e| series_of(e).id().0)
        .collect();
    partition
        .into_iter()
        .map(|g| {
            g.into_iter()
                .map(|k| k.1)
                .filter(|id| firing.contains(id))
                .collect::<BTreeSet<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

fn series_of(e: &Generated) -> Series {
    Series::new("ALERTS", e.labels.tags().chain([("alertstate", "firing")]))
}

/// Asserts that the operator's incidents equal the reference's at every
/// step the reference has.
fn assert_steps(labelled: &[Sample], want: &BTreeMap<i64, BTreeSet<BTreeSet<u64>>>, run: &str) {
    let got = observed(labelled);
    for (t, groups) in want {
        assert_eq!(got.get(t), Some(groups), "{run}: incidents at {t}");
    }
}

fn observed(labelled: &[Sample]) -> BTreeMap<i64, BTreeSet<BTreeSet<u64>>> {
    let mut by_time: BTreeMap<i64, BTreeMap<String, BTreeSet<u64>>> = BTreeMap::new();
    for s in labelled {
        let id = s.series.get("incident").expect("incident label").to_owned();
        let alerts = Series::new(
            "ALERTS",
            s.series
                .tags()
                .filter(|(n, _)| *n != "incident")
                .chain([("alertstate", "firing")]),
        );
        by_time
            .entry(s.timestamp)
            .or_default()
            .entry(id)
            .or_default()
            .insert(alerts.id().0);
    }
    by_time
        .into_iter()
        .map(|(t, groups)| (t, groups.into_values().collect()))
        .collect()
}

/// Episodes never overlap per series in the generator (instances are
/// unique), and no two of one series are within the gap.
#[test]
fn incidents_equal_a_from_scratch_computation_at_every_step() {
    for (link, seed) in [Link::Strongest, Link::All]
        .into_iter()
        .flat_map(|link| (0..4u64).map(move |seed| (link, seed)))
    {
        let model = Arc::new(Model {
            topology: Topology::new(&shop(), 2),
            rules: Rules { link, ..rules() },
        });
        let mut rng = StdRng::seed_from_u64(seed);
        let episodes = scenario(&mut rng, 60);
        let want = expected(&model, &episodes, 60_000, 300_000);
        for (workers, slack) in [(1, 0), (2, 0), (4, 0), (2, 45_000)] {
            let mut samples = samples_of(&episodes);
            if slack > 0 {
                // Shuffle within the slack: sort by a jittered time.
                let mut keyed: Vec<(i64, Sample)> = samples
                    .into_iter()
                    .map(|s| (s.timestamp + rng.random_range(0..slack), s))
                    .collect();
                keyed.sort_by_key(|(k, s)| (*k, s.series.id()));
                samples = keyed.into_iter().map(|(_, s)| s).collect();
            }
            let (labelled, _) = run(
                samples.clone(),
                settings(Arc::clone(&model), slack as u64),
                workers,
                slack,
            );
            assert_eq!(
                labelled.len(),
                samples.len(),
                "seed {seed}, {workers} workers: one ALERTS_INCIDENT per firing sample"
            );
            assert_steps(
                &labelled,
                &want,
                &format!("{link:?}, seed {seed}, {workers} workers, slack {slack}"),
            );
        }
    }
}

#[test]
fn merges_keep_the_older_id_and_splits_take_a_new_one() {
    let model = Arc::new(Model {
        topology: Topology::new(&shop(), 2),
        rules: Rules {
            link: Link::All,
            ..rules()
        },
    });
    // Errors on payments at 0 and on search at 75s: they share node-1
    // (2 hops, 0.5) but start more than 1m apart: two incidents. Latency
    // on payments at 90s ties to both (same entity; node-1 within 1m):
    // with every tie linking, one incident.
    let eps = bridged();
    let s = Settings {
        model,
        lateness: 0,
        gap: 30_000,
        horizon: 60_000,
        edge_metric: None,
    };
    let (labelled, incidents) = run(samples_of(&eps), s, 1, 0);
    let id_at = |t: i64, service: &str| -> String {
        labelled
            .iter()
            .find(|s| s.timestamp == t && s.series.get("service") == Some(service))
            .and_then(|s| s.series.get("incident"))
            .unwrap()
            .to_owned()
    };
    let cart = id_at(0, "payments");
    let search = id_at(75_000, "search");
    assert_ne!(cart, search);
    // Merged: the older (payments') id for all three.
    assert_eq!(id_at(90_000, "search"), cart);
    assert_eq!(id_at(90_000, "payments"), cart);
    let merged: Vec<&Incident> = incidents
        .iter()
        .filter(|i| i.status == IncidentStatus::Merged)
        .collect();
    assert_eq!(merged.len(), 1, "{incidents:#?}");
    assert_eq!(merged[0].id, search);
    assert_eq!(merged[0].merged_into.as_deref(), Some(cart.as_str()));
    assert_eq!(merged[0].at, 90_000);
    // Latency's last sample at 105s, ended at 135s, retired after 195s:
    // payments and search split; payments keeps its id, search gets a new
    // one.
    let after = 300_000;
    assert_eq!(id_at(after, "payments"), cart);
    let split = id_at(after, "search");
    assert_ne!(split, cart);
    assert_ne!(split, search, "a split takes a new id");
    let opened = incidents
        .iter()
        .find(|i| i.id == split)
        .expect("the split is opened");
    assert_eq!(opened.status, IncidentStatus::Opened);
    assert_eq!(opened.split_from.as_deref(), Some(cart.as_str()));
    // The merged incident's explanation.
    let update = incidents
        .iter()
        .rfind(|i| i.id == cart && i.at == 90_000)
        .expect("an update at the merge");
    assert_eq!(update.members.len(), 3);
    assert_eq!(update.root, "service=payments");
    let search_member = update
        .members
        .iter()
        .find(|m| m.labels.get("service").map(String::as_str) == Some("search"))
        .unwrap();
    assert_eq!(
        search_member.tied_by,
        "tied to Latency{service=\"payments\"}: common cause host=node-1 (2 hops); started 15s before (score 1.00)"
    );
    assert_eq!(
        update.root_reason,
        "2 of 3 alerts are on it or depend on it"
    );
    assert_eq!(
        alert_labels(&samples_of(&eps)[0].series).get("alertstate"),
        None
    );
}

/// [`Rules::strongest`]: the highest score first, then the fewest hops to
/// the common cause, then the earliest alert.
#[test]
fn the_strongest_tie_upstream_is_the_highest_score_then_the_nearest_then_the_first() {
    let rules = Rules {
        labels_weight: 0.5,
        ..rules()
    };
    let down: EpKey = (300_000, 9);
    let hops = |d: u8, labels: bool| Why {
        topology: Some((d, 1)),
        labels,
        ..Why::default()
    };
    let pick = |ups: &[(EpKey, Why)]| rules.strongest(&down, ups.iter().copied()).unwrap().0;
    // 1 hop 200s before (1.0) against 1 hop 20s before (1.0 and the time
    // bonus): the later one, for its score.
    assert_eq!(
        pick(&[
            ((100_000, 1), hops(1, false)),
            ((280_000, 2), hops(1, false))
        ]),
        (280_000, 2)
    );
    // Equal scores (2 hops and equal labels; 1 hop): the nearer cause,
    // though it started later.
    assert_eq!(
        pick(&[((50_000, 3), hops(2, true)), ((100_000, 1), hops(1, false))]),
        (100_000, 1)
    );
    // Equal scores and hops: the first.
    assert_eq!(
        pick(&[
            ((100_000, 1), hops(1, false)),
            ((50_000, 4), hops(1, false))
        ]),
        (50_000, 4)
    );
    assert_eq!(rules.strongest(&down, []), None);
}

/// With the default `link: strongest`, the alert that ties two incidents
/// joins the one its strongest tie upstream is in (here: the same entity
/// beats a common cause two hops away at equal scores), and they stay
/// apart.
#[test]
fn an_alert_two_incidents_explain_joins_one_of_them() {
    let model = Arc::new(Model {
        topology: Topology::new(&shop(), 2),
        rules: rules(),
    });
    let eps = bridged();
    let (labelled, incidents) = run(samples_of(&eps), settings(model, 0), 2, 0);
    let id_at = |t: i64, name: &str, service: &str| -> String {
        labelled
            .iter()
            .find(|s| {
                s.timestamp == t
                    && s.series.get("service") == Some(service)
                    && s.series.get("alertname") == Some(name)
            })
            .and_then(|s| s.series.get("incident"))
            .unwrap()
            .to_owned()
    };
    let payments = id_at(0, "Errors", "payments");
    let search = id_at(75_000, "Errors", "search");
    assert_ne!(payments, search);
    assert_eq!(id_at(90_000, "Latency", "payments"), payments);
    assert_eq!(id_at(90_000, "Errors", "search"), search);
    assert!(
        incidents.iter().all(|i| i.status != IncidentStatus::Merged),
        "{incidents:#?}"
    );
    let update = incidents
        .iter()
        .rfind(|i| i.id == payments && i.at == 90_000)
        .expect("an update when Latency joins");
    assert_eq!(update.members.len(), 2);
    assert_eq!(
        update.members[1].tied_by,
        "tied to Errors{service=\"payments\"}: same entity service=payments; started 1m30s after (score 1.00)"
    );
}

/// Errors on payments from 0 and on search from 75s, Latency on payments
/// at 90s and 105s: the last is tied to both others.
fn bridged() -> Vec<Generated> {
    vec![
        Generated {
            labels: alert("Errors", "payments"),
            times: (0..40).map(|i| i * STEP).collect(),
        },
        Generated {
            labels: alert("Errors", "search"),
            times: (5..40).map(|i| i * STEP).collect(),
        },
        Generated {
            labels: alert("Latency", "payments"),
            times: (6..8).map(|i| i * STEP).collect(),
        },
    ]
}

#[test]
fn config_errors_name_the_field_and_the_line() {
    use super::CorrelateConfig;
    let dir = std::env::temp_dir().join(format!("tidemark-correlate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("topology.jsonl");
    std::fs::write(
        &file,
        "{\"from\": {\"service\": \"a\"}, \"to\": {\"service\": \"b\"}}\n\n# a comment\n{\"from\": {\"service\": \"a\"}}\n{\"from\": {}, \"to\": {\"host\": \"h\"}}\n",
    )
    .unwrap();
    let config: CorrelateConfig = serde_json::from_value(serde_json::json!({
        "topology": {"path": file.display().to_string()},
        "window": "0s",
        "threshold": -1,
        "rules": {"topology": {"hops": 9}, "labels": {"by": []}},
    }))
    .unwrap();
    let errors = config.validate().unwrap_err();
    assert_eq!(errors.len(), 6, "{errors:#?}");
    let text: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field.join("."), e.message))
        .collect();
    let path = file.display().to_string();
    for want in [
        "window: invalid duration \"0s\": duration must be greater than 0".to_owned(),
        "rules.topology.hops: must be at most 8".to_owned(),
        "threshold: must be greater than 0 (every alert would be tied to every other)".to_owned(),
        "rules.labels.by: must name at least one label".to_owned(),
        format!(
            "topology.path: {path}:4: not an edge (missing field `to`); write {{\"from\": {{...}}, \"to\": {{...}}}}"
        ),
        format!("topology.path: {path}:5: an edge's `from` and `to` need at least one label"),
    ] {
        assert!(text.contains(&want), "{want:?} not in {text:#?}");
    }
    let link = serde_json::from_value::<CorrelateConfig>(serde_json::json!({"link": "nearest"}))
        .unwrap_err()
        .to_string();
    assert!(
        link.contains("unknown variant `nearest`, expected `strongest` or `all`"),
        "{link}"
    );
    let both: CorrelateConfig = serde_json::from_value(serde_json::json!({
        "topology": {"path": "x", "edges": []},
    }))
    .unwrap();
    let errors = both.validate().unwrap_err();
    assert_eq!(errors[0].message, "give either `path` or `edges`");
    let empty: CorrelateConfig =
        serde_json::from_value(serde_json::json!({"topology": {}})).unwrap();
    let errors = empty.validate().unwrap_err();
    assert_eq!(
        errors[0].message,
        "give `path`, `edges` or `metric` (edges from the input)"
    );
    let metric: CorrelateConfig =
        serde_json::from_value(serde_json::json!({"topology": {"metric": "edge-of"}})).unwrap();
    let errors = metric.validate().unwrap_err();
    assert_eq!(
        (errors[0].field.join("."), errors[0].message.as_str()),
        (
            "topology.metric".to_owned(),
            "\"edge-of\" is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
        )
    );
    let co: CorrelateConfig = serde_json::from_value(serde_json::json!({
        "window": "5m",
        "rules": {"cooccurrence": {"within": "10m", "min_count": 1, "history": "1m", "weight": -1}},
    }))
    .unwrap();
    let errors = co.validate().unwrap_err();
    let text: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field.join("."), e.message))
        .collect();
    assert_eq!(
        text,
        [
            "rules.cooccurrence.weight: must be a number of at least 0",
            "rules.cooccurrence.min_count: must be at least 2 (once is not a pattern)",
            "rules.cooccurrence.within: must be greater than 0 and at most `window`",
            "rules.cooccurrence.history: must be at least `window`",
        ]
    );
    let stream_only: CorrelateConfig =
        serde_json::from_value(serde_json::json!({"topology": {"metric": "topology_edge"}}))
            .unwrap();
    let t = stream_only.validate().unwrap();
    assert_eq!(t.settings().edge_metric.as_deref(), Some("topology_edge"));
    assert!(t.settings().model.topology.is_empty());
    let unknown = serde_json::from_value::<CorrelateConfig>(serde_json::json!({"hops": 2}));
    assert!(unknown.is_err());
    let good: CorrelateConfig = serde_json::from_value(serde_json::json!({
        "topology": {"path": file.display().to_string().replace("topology", "missing")},
    }))
    .unwrap();
    let errors = good.validate().unwrap_err();
    assert!(errors[0].message.starts_with("cannot read"), "{errors:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A day of alerts: incidents retire behind the horizon, so what is held
/// at the end is what started within the last horizon, not the day.
#[test]
fn retired_incidents_leave_state_bounded() {
    let model = Arc::new(Model {
        topology: Topology::new(&shop(), 2),
        rules: rules(),
    });
    let mut rng = StdRng::seed_from_u64(7);
    let day = 24 * 3600 * 1000i64;
    let services = [
        "checkout", "cart", "payments", "db", "search", "auth", "mail",
    ];
    let mut episodes = Vec::new();
    for i in 0..2_000i64 {
        let start = (i * day / 2_000) / STEP * STEP;
        let service = services[rng.random_range(0..services.len())];
        episodes.push(Generated {
            labels: Series::new(
                "",
                [
                    ("alertname", "Errors"),
                    ("service", service),
                    ("n", &i.to_string()),
                ],
            ),
            times: (0..rng.random_range(1..6i64))
                .map(|k| start + k * STEP)
                .collect(),
        });
    }
    let s = settings(Arc::clone(&model), 0);
    let keep_for = (s.gap + s.horizon) as i64;
    let (_, incidents) = run(samples_of(&episodes), s, 2, 0);
    let mut open: BTreeSet<String> = BTreeSet::new();
    for i in &incidents {
        match i.status {
            IncidentStatus::Merged | IncidentStatus::Retired => {
                open.remove(&i.id);
            }
            _ => {
                open.insert(i.id.clone());
            }
        }
    }
    let last = episodes
        .iter()
        .map(|e| *e.times.last().unwrap())
        .max()
        .unwrap();
    let recent = episodes
        .iter()
        .filter(|e| e.times.last().unwrap() + keep_for >= last)
        .count();
    let retired = incidents
        .iter()
        .filter(|i| i.status == IncidentStatus::Retired)
        .count();
    assert!(retired > 100, "only {retired} incidents retired");
    assert!(
        open.len() <= recent,
        "{} incidents held at the end, but only {recent} alerts are within the horizon",
        open.len()
    );
}

/// An alert stream (state changes) instead of `ALERTS` samples: each
/// alert's firing change gets its incident, and episodes end when their
/// alert resolves.
#[test]
fn an_alert_stream_gives_the_same_incidents() {
    use tidemark_engine::alert::{Alert, AlertState};
    let model = Arc::new(Model {
        topology: Topology::new(&shop(), 2),
        rules: rules(),
    });
    let mut rng = StdRng::seed_from_u64(3);
    let episodes = scenario(&mut rng, 60);
    let mut changes: Vec<(i64, Alert)> = Vec::new();
    for e in &episodes {
        let alert = |state, at: i64| Alert {
            labels: e.labels.clone(),
            annotations: Arc::from(vec![]),
            state,
            active_at: e.times[0],
            starts_at: e.times[0],
            ends_at: None,
            value: 1.0,
            at,
            generator_url: String::new(),
        };
        changes.push((
            e.times[0] - STEP,
            alert(AlertState::Pending, e.times[0] - STEP),
        ));
        changes.push((e.times[0], alert(AlertState::Firing, e.times[0])));
        let end = e.times.last().unwrap() + STEP;
        changes.push((end, alert(AlertState::Resolved, end)));
    }
    changes.sort_by_key(|(t, a)| (*t, a.labels.id()));
    let s = Settings {
        gap: super::operator::NO_GAP,
        ..settings(Arc::clone(&model), 0)
    };
    // Alive until the resolution plus the horizon: the samples' rule with
    // a gap of one step.
    let want = expected_for(&model, &episodes, STEP, 300_000, |e, t| e.times[0] == t);
    for workers in [1, 2] {
        let (labelled, _) = run_with(
            changes.clone(),
            s.clone(),
            workers,
            0,
            super::operator::alerts_as_samples,
        );
        assert_eq!(
            labelled.len(),
            episodes.len(),
            "one ALERTS_INCIDENT per firing change"
        );
        assert_eq!(observed(&labelled), want, "{workers} workers");
    }
}

/// An edge that the edge stream turns on and off, from a series of its
/// own (`src` tells two series that name one edge apart).
#[derive(Clone, Debug)]
struct Toggle {
    from: LabelSet,
    to: LabelSet,
    src: &'static str,
    /// (time, present).
    changes: Vec<(i64, bool)>,
}

impl Toggle {
    fn series(&self) -> Series {
        let from = self.from.iter().map(|(n, v)| (format!("from_{n}"), v));
        let to = self.to.iter().map(|(n, v)| (format!("to_{n}"), v));
        let labels: Vec<(String, &String)> = from.chain(to).collect();
        let src = ("src".to_owned(), self.src.to_owned());
        Series::new(
            "topology_edge",
            labels
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .chain([(src.0.as_str(), src.1.as_str())]),
        )
    }

    fn samples(&self) -> Vec<Sample> {
        self.changes
            .iter()
            .map(|&(t, on)| Sample::new(self.series(), t, if on { 1.0 } else { 0.0 }))
            .collect()
    }

    fn present_at(&self, t: i64) -> bool {
        self.changes
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .is_some_and(|(_, on)| *on)
    }
}

/// Edges that come and go over the scenario: the shop's own (the stream
/// adds one the file also has: it stays when the stream takes it back),
/// new services and a host, twice for one edge.
fn toggles(rng: &mut StdRng) -> Vec<Toggle> {
    let node = set(&[("host", "node-1")]);
    let edges = [
        (svc("payments"), svc("db"), "a"),
        (svc("payments"), svc("db"), "b"),
        (svc("checkout"), svc("payments"), "a"),
        (svc("auth"), svc("db"), "a"),
        (svc("mail"), svc("auth"), "a"),
        (svc("search"), svc("db"), "a"),
        (svc("auth"), node.clone(), "a"),
        (svc("mail"), node, "a"),
    ];
    edges
        .into_iter()
        .map(|(from, to, src)| {
            let mut changes: Vec<(i64, bool)> = (0..rng.random_range(1..6))
                .map(|_| (rng.random_range(0..250i64) * STEP, rng.random_bool(0.6)))
                .collect();
            changes.sort_by_key(|&(t, _)| t);
            changes.dedup_by_key(|&mut (t, _)| t);
            Toggle {
                from,
                to,
                src,
                changes,
            }
        })
        .collect()
}

/// The topology changes while alerts fire (edges added and taken back by
/// edge samples on the input, a new entity shape among them): at every
/// step the incidents equal a from-scratch computation over the alerts
/// alive then in the topology as it is then, at 1, 2 and 4 workers and
/// with arrival shuffled within the lateness.
#[test]
fn incidents_follow_a_topology_that_changes_mid_stream() {
    let initial = vec![
        (svc("checkout"), svc("payments")),
        (svc("cart"), svc("payments")),
        (svc("checkout"), svc("search")),
    ];
    let model = Arc::new(Model {
        topology: Topology::new(&initial, 2),
        rules: rules(),
    });
    let mut changed = 0;
    for seed in 0..4u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut episodes = scenario(&mut rng, 60);
        // Alerts on the host itself.
        for i in 0..6 {
            let start = rng.random_range(0..240i64) * STEP;
            episodes.push(Generated {
                labels: Series::new(
                    "",
                    [
                        ("alertname", "NodeDown"),
                        ("host", "node-1"),
                        ("instance", &format!("n{i}")),
                    ],
                ),
                times: (0..rng.random_range(1..8i64))
                    .map(|k| start + k * STEP)
                    .collect(),
            });
        }
        let toggles = toggles(&mut rng);
        // The reference: each step in the topology of that step.
        let times: BTreeSet<i64> = episodes.iter().flat_map(|e| e.times.clone()).collect();
        let mut want = BTreeMap::new();
        let still = expected(&model, &episodes, 60_000, 300_000);
        for &t in &times {
            let mut edges = initial.clone();
            for tg in &toggles {
                if tg.present_at(t) {
                    edges.push((tg.from.clone(), tg.to.clone()));
                }
            }
            let at_t = Model {
                topology: Topology::new(&edges, 2),
                rules: rules(),
            };
            let one = expected_for(&at_t, &episodes, 60_000, 300_000, |e, x| {
                e.times.contains(&x)
            });
            if let Some(groups) = one.get(&t) {
                if still.get(&t) != Some(groups) {
                    changed += 1;
                }
                want.insert(t, groups.clone());
            }
        }
        let alerts = samples_of(&episodes);
        let mut all: Vec<Sample> = alerts.clone();
        all.extend(toggles.iter().flat_map(Toggle::samples));
        all.sort_by_key(|s| (s.timestamp, s.series.id()));
        for (workers, slack) in [(1, 0), (2, 0), (4, 0), (2, 45_000)] {
            let mut samples = all.clone();
            if slack > 0 {
                let mut keyed: Vec<(i64, Sample)> = samples
                    .into_iter()
                    .map(|s| (s.timestamp + rng.random_range(0..slack), s))
                    .collect();
                keyed.sort_by_key(|(k, s)| (*k, s.series.id()));
                samples = keyed.into_iter().map(|(_, s)| s).collect();
            }
            let s = Settings {
                edge_metric: Some("topology_edge".into()),
                ..settings(Arc::clone(&model), slack as u64)
            };
            let (labelled, _) = run(samples, s, workers, slack);
            assert_eq!(
                labelled.len(),
                alerts.len(),
                "seed {seed}: edges give no output"
            );
            assert_steps(
                &labelled,
                &want,
                &format!("seed {seed}, {workers} workers, slack {slack}"),
            );
        }
    }
    // The changes mattered: a static topology gives other incidents.
    assert!(
        changed > 20,
        "only {changed} steps differ from the initial topology"
    );
}

#[test]
fn edge_samples_name_their_edge_by_prefix() {
    use super::model::edge_of;
    let s = Series::new(
        "topology_edge",
        [
            ("from_service", "checkout"),
            ("to_service", "payments"),
            ("job", "cmdb"),
        ],
    );
    assert_eq!(edge_of(&s), Some((svc("checkout"), svc("payments"))));
    let one_side = Series::new("topology_edge", [("from_service", "checkout")]);
    assert_eq!(edge_of(&one_side), None);
    let unnamed = Series::new("topology_edge", [("from_", "x"), ("to_service", "db")]);
    assert_eq!(edge_of(&unnamed), None);
}

/// Co-occurrence learned from history: alerts of identities (alertname
/// and service) that keep starting together are tied even where the
/// topology does not tie them, and forgotten after the history. At every
/// step the incidents equal a from-scratch computation that counts the
/// co-starts remembered then, at 1, 2 and 4 workers.
#[test]
fn cooccurrence_ties_alerts_that_keep_firing_together() {
    use super::model::{Together, reference_partition_with};
    let history = 1_800_000;
    let within = 45_000;
    let rules = Rules {
        together: Some(Together {
            within,
            min_count: 2,
            history,
            weight: 1.0,
            identity: vec!["alertname".into(), "service".into()],
        }),
        ..rules()
    };
    // Only part of the shop: co-occurrence has to find the rest.
    let model = Arc::new(Model {
        topology: Topology::new(&[(svc("cart"), svc("payments"))], 2),
        rules,
    });
    let (gap, horizon) = (60_000i64, 300_000i64);
    let mut learned_ties = 0;
    for seed in 0..4u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let episodes = scenario(&mut rng, 80);
        let keys: Vec<(EpKey, Arc<Keys>)> = episodes
            .iter()
            .map(|e| {
                (
                    (e.times[0] as u64, series_of(e).id().0),
                    Arc::new(model.keys(&e.labels)),
                )
            })
            .collect();
        let times: BTreeSet<i64> = episodes.iter().flat_map(|e| e.times.clone()).collect();
        let mut want = BTreeMap::new();
        for &t in &times {
            let t64 = t as u64;
            // Remembered at t: started at or before t, less than the
            // history ago.
            let remembered: Vec<&(EpKey, Arc<Keys>)> = keys
                .iter()
                .filter(|(k, _)| k.0 <= t64 && t64 < k.0 + history)
                .collect();
            let mut counts: HashMap<(u64, u64), u32> = HashMap::new();
            for (i, a) in remembered.iter().enumerate() {
                for b in &remembered[i + 1..] {
                    let (ia, ib) = (a.1.identity, b.1.identity);
                    if ia != ib && a.0.0.abs_diff(b.0.0) <= within {
                        *counts.entry((ia.min(ib), ia.max(ib))).or_default() += 1;
                    }
                }
            }
            let together = |a: u64, b: u64| counts.get(&(a.min(b), a.max(b))).copied().unwrap_or(0);
            let alive: Vec<(EpKey, Arc<Keys>)> = episodes
                .iter()
                .zip(&keys)
                .filter(|(e, _)| e.times[0] <= t && e.times.last().unwrap() + gap + horizon > t)
                .map(|(_, k)| k.clone())
                .collect();
            let with = reference_partition_with(&model, &alive, &together);
            if with != reference_partition(&model, &alive) {
                learned_ties += 1;
            }
            let groups = shown_groups(with, &episodes, |e| e.times.contains(&t));
            if !groups.is_empty() {
                want.insert(t, groups);
            }
        }
        let samples = samples_of(&episodes);
        for workers in [1, 2, 4] {
            let (labelled, _) = run(samples.clone(), settings(Arc::clone(&model), 0), workers, 0);
            assert_steps(&labelled, &want, &format!("seed {seed}, {workers} workers"));
        }
    }
    assert!(
        learned_ties > 20,
        "co-occurrence changed only {learned_ties} steps"
    );
}

/// An edge sample that names no edge is dropped and counted as
/// `bad_edge`; samples of other metrics as `not_an_alert`; the alerts
/// around them are labelled as usual.
#[test]
fn samples_that_name_no_edge_are_counted() {
    use tidemark_engine::stats::DropReason;
    let stats = Arc::new(ComponentStats::default());
    let counted = Arc::clone(&stats);
    let model = Arc::new(Model {
        topology: Topology::new(&[], 2),
        rules: rules(),
    });
    let settings = Settings {
        edge_metric: Some("topology_edge".into()),
        ..settings(model, 0)
    };
    let labelled: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let sink = Arc::clone(&labelled);
    timely::execute(timely::Config::process(2), move |worker| {
        let sink = Arc::clone(&sink);
        let mut input: InputHandleVec<u64, Sample> = InputHandleVec::new();
        let probe = worker.dataflow::<u64, _, _>(|scope| {
            let (out, _) = correlate(
                scope.input_from(&mut input),
                "c",
                settings.clone(),
                Arc::clone(&counted),
            );
            out.inspect(move |s| sink.lock().unwrap().push(s.clone()))
                .probe()
                .0
        });
        if worker.index() == 0 {
            let edge = |labels: &[(&str, &str)]| {
                Sample::new(Series::new("topology_edge", labels.iter().copied()), 0, 1.0)
            };
            input.send(edge(&[("from_service", "a"), ("to_service", "b")]));
            input.send(edge(&[("from_service", "a")]));
            input.send(edge(&[("to_service", "b"), ("job", "cmdb")]));
            input.send(Sample::new(Series::new("up", [("job", "x")]), 0, 1.0));
            let alert = Series::new(
                "ALERTS",
                alert("Down", "a").tags().chain([("alertstate", "firing")]),
            );
            input.send(Sample::new(alert, 0, 1.0));
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap()
    .join();
    assert_eq!(stats.drops(DropReason::BadEdge), 2);
    assert_eq!(stats.drops(DropReason::NotAnAlert), 1);
    assert_eq!(labelled.lock().unwrap().len(), 1);
}

/// Asserts that two lists are equal, showing where they first differ.
fn same<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T], what: &str) {
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        panic!(
            "{what}: {} and {} items, first different at {i}: got {:#?}, want {:#?}",
            got.len(),
            want.len(),
            &got[i..got.len().min(i + 3)],
            &want[i..want.len().min(i + 3)]
        );
    }
}

/// An epoch time (ms) the scenarios of the checkpoint test start at.
const BASE: i64 = 1_700_000_000_000;

/// Records as the harness sends them: each sample with the input time it
/// is sent at (the watermark, trailing the latest time by `slack`).
fn timed(samples: Vec<Sample>, slack: i64) -> Vec<(u64, Sample)> {
    let mut latest = 0i64;
    samples
        .into_iter()
        .map(|s| {
            latest = latest.max(s.timestamp);
            ((latest - slack).max(0) as u64, s)
        })
        .collect()
}

/// What a run with checkpoints gave: the `ALERTS_INCIDENT` samples and
/// the incident records, each with its output time.
type Outputs = (Vec<(u64, Sample)>, Vec<(u64, Incident)>);

/// Runs the operator with checkpoints `c` on `workers` workers: worker 0
/// sends the records of `input` sent at or after `from` (the restored
/// cut), completing checkpoints as the output passes them. With `stop`,
/// the run is cut off there, as by `kill -9`: the input is not closed and
/// nothing more is made durable.
fn run_checkpointed(
    input: &[(u64, Sample)],
    settings: &Settings,
    workers: usize,
    c: &Arc<tidemark_engine::checkpoint::Checkpoints>,
    from: u64,
    stop: Option<u64>,
) -> Outputs {
    use super::operator::{Cuts, correlate_shown};
    let input: Arc<Vec<(u64, Sample)>> = Arc::new(
        input
            .iter()
            .filter(|(t, _)| *t >= from && stop.is_none_or(|s| *t < s))
            .cloned()
            .collect(),
    );
    let outside = Arc::clone(c);
    let (settings, c) = (settings.clone(), Arc::clone(c));
    let out: Arc<Mutex<Outputs>> = Arc::default();
    let sink = Arc::clone(&out);
    let stats = Arc::new(ComponentStats::default());
    let counted = Arc::clone(&stats);
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let stats = Arc::clone(&counted);
        let mut handle: InputHandleVec<u64, Sample> = InputHandleVec::new();
        let (s1, s2) = (Arc::clone(&sink), Arc::clone(&sink));
        let probe = worker.dataflow::<u64, _, _>(|scope| {
            let cuts = Cuts {
                episodes: Some(c.cut(0, index)),
                incidents: Some(c.cut(1, index)),
            };
            let (labelled, incidents) = correlate_shown(
                scope.input_from(&mut handle),
                "c",
                settings.clone(),
                stats,
                None,
                cuts,
            );
            labelled.inspect_core(move |event| {
                if let Ok((t, data)) = event {
                    let mut o = s1.lock().unwrap();
                    let t = *t.least().unwrap();
                    o.0.extend(data.iter().map(|s| (t, s.clone())));
                }
            });
            incidents
                .inspect_core(move |event| {
                    if let Ok((t, data)) = event {
                        let mut o = s2.lock().unwrap();
                        let t = *t.least().unwrap();
                        o.1.extend(data.iter().map(|i| (t, i.clone())));
                    }
                })
                .probe()
                .0
        });
        if from > 0 {
            handle.advance_to(from);
        }
        let durable = |c: &tidemark_engine::checkpoint::Checkpoints| {
            let f = probe.with_frontier(|f| f.first().copied().unwrap_or(u64::MAX));
            c.poll(f);
        };
        if index == 0 {
            for (t, s) in input.iter() {
                if *t > *handle.time() {
                    handle.advance_to(*t);
                }
                handle.send(s.clone());
                worker.step();
                durable(&c);
                if stop.is_some() {
                    // Time for the writer: checkpoints complete as the
                    // run goes, as they would at a real pace.
                    std::thread::sleep(std::time::Duration::from_micros(500));
                }
            }
        }
        match stop {
            Some(stop) => {
                handle.advance_to(stop);
                while probe.less_than(&stop.saturating_sub(settings.lateness)) {
                    worker.step();
                    durable(&c);
                }
                // What was written by then completes.
                let until = std::time::Instant::now() + std::time::Duration::from_millis(100);
                while std::time::Instant::now() < until {
                    worker.step();
                    durable(&c);
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            None => {
                handle.close();
                while !probe.done() {
                    worker.step();
                }
            }
        }
    })
    .unwrap();
    guards.join();

    if stop.is_some() {
        // Cut off: nothing queued is written any more.
        outside.close();
    }
    let mut out = std::mem::take(&mut *out.lock().unwrap());
    out.0.sort_by_key(|(t, s)| (*t, s.timestamp, s.series.id()));
    out.1.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
    out
}

/// A correlate restored from a checkpoint continues as a run that never
/// stopped: cut off at several points (the topology changing from edge
/// samples, the co-occurrence rule on, arrival shuffled within the
/// lateness) and restored on 1, 2 or 4 workers, it gives, from the
/// keeper's cut on, exactly the `ALERTS_INCIDENT` samples and incident
/// records (ids included) of the uninterrupted run, and nothing before it.
#[test]
fn a_restored_correlate_continues_as_a_run_that_never_stopped() {
    use super::model::Together;
    let rich = Arc::new(Model {
        topology: Topology::new(&[(svc("checkout"), svc("payments"))], 2),
        rules: Rules {
            together: Some(Together {
                within: 45_000,
                min_count: 2,
                history: 1_800_000,
                weight: 1.0,
                identity: vec!["alertname".into(), "service".into()],
            }),
            ..rules()
        },
    });
    let plain = Arc::new(Model {
        topology: Topology::new(&shop(), 2),
        rules: rules(),
    });
    restores_continue(settings(plain, 0), false, 0);
    let rich = Settings {
        edge_metric: Some("topology_edge".into()),
        ..settings(rich, 45_000)
    };
    restores_continue(rich, true, 45_000);
}

/// Cuts off runs of `settings` at several points and compares the
/// restored run with one that never stopped.
fn restores_continue(settings: Settings, edges: bool, slack: i64) {
    use tidemark_engine::checkpoint::{CheckpointOptions, Checkpoints, Member, Store};
    let members = vec![
        Member {
            name: "c".into(),
            fingerprint: 1,
            identity: 1,
            offset: 0,
        },
        Member {
            name: "c/incidents".into(),
            fingerprint: 1,
            identity: 1,
            offset: settings.lateness,
        },
    ];
    let options = CheckpointOptions {
        interval: std::time::Duration::ZERO,
        keep: 2,
    };
    let mut spanned = 0;
    for seed in 0..3u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let episodes = scenario(&mut rng, 60);
        let mut all = samples_of(&episodes);
        if edges {
            all.extend(toggles(&mut rng).iter().flat_map(Toggle::samples));
        }
        all.sort_by_key(|s| (s.timestamp, s.series.id()));
        let mut keyed: Vec<(i64, Sample)> = all
            .into_iter()
            .map(|s| (s.timestamp + rng.random_range(0..slack.max(1)), s))
            .collect();
        keyed.sort_by_key(|(k, s)| (*k, s.series.id()));
        // Times as they are in production (a cut is never at or before a
        // component's offset).
        let input = timed(
            keyed
                .into_iter()
                .map(|(_, s)| Sample::new(s.series, s.timestamp + BASE, s.value))
                .collect(),
            slack,
        );
        let dir = std::env::temp_dir().join(format!(
            "tidemark-correlate-restore-{}-{seed}-{edges}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::dir(&dir);
        let open =
            |workers| Checkpoints::open(&store, "p", workers, members.clone(), options).unwrap();
        let through = run_checkpointed(&input, &settings, 2, &open(2), 0, None);
        let _ = std::fs::remove_dir_all(&dir);
        for (stop, workers) in [(40, 2), (90, 1), (150, 4), (210, 2)] {
            let stop = (BASE + stop * STEP) as u64;
            let c = open(2);
            run_checkpointed(&input, &settings, 2, &c, 0, Some(stop));
            drop(c);
            let c = open(workers);
            let at = c.restored().map(|r| r.at).expect("a checkpoint");
            let cut = at.saturating_sub(settings.lateness);
            let again = run_checkpointed(&input, &settings, workers, &c, at, None);
            let run = format!(
                "edges {edges}, slack {slack}, seed {seed}, cut off at {stop}, restored at {at} on {workers}"
            );
            let after = |o: &Outputs| -> Outputs {
                (
                    o.0.iter().filter(|(t, _)| *t >= cut).cloned().collect(),
                    o.1.iter().filter(|(t, _)| *t >= cut).cloned().collect(),
                )
            };
            let (want, got) = (after(&through), after(&again));
            assert_eq!(got.0.len(), again.0.len(), "{run}: samples before the cut");
            assert_eq!(
                got.1.len(),
                again.1.len(),
                "{run}: incidents before the cut"
            );
            same(&got.0, &want.0, &format!("{run}: ALERTS_INCIDENT samples"));
            same(&got.1, &want.1, &format!("{run}: incident records"));
            // An incident open at the cut went on after it.
            let open_then: BTreeSet<&str> = through
                .1
                .iter()
                .filter(|(t, i)| *t < cut && i.status == IncidentStatus::Opened)
                .map(|(_, i)| i.id.as_str())
                .collect();
            if want
                .1
                .iter()
                .any(|(_, i)| open_then.contains(i.id.as_str()))
            {
                spanned += 1;
            }
            drop(c);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    assert!(
        spanned >= 6,
        "only {spanned} restores had an incident across the cut"
    );
}
