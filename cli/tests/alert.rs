//! `type: alert` against Prometheus itself: rule files and input series in
//! promtool's test format go through `promtool test rules` and through a
//! Tidemark pipeline (file source, alert transform, file sink) with 1, 2
//! and 4 workers. At every evaluation step, the alert instances (`ALERTS`
//! with their labels and states), their active times (`ALERTS_FOR_STATE`)
//! and every recorded series must agree (values within 1e-9 relative),
//! and at every step where an alert started firing, its annotations must
//! be the ones promtool expects.

use tidemark_testkit as common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use common::promtool::{self, Input, close, evaluate, expand};
use common::{read_rows, run_text, temp_dir};

/// One scenario: rules, the evaluation interval (every group uses it, as
/// promtool evaluates every group at each tick), the input spacing, and
/// the series.
struct Case {
    name: &'static str,
    rules: &'static str,
    interval_s: u64,
    inputs: &'static [(&'static str, &'static str)],
}

const SERVICE: Case = Case {
    name: "service",
    interval_s: 30,
    rules: r#"
groups:
- name: requests
  interval: 30s
  rules:
  - record: job:requests:rate2m
    expr: sum by (job) (rate(http_requests_total[2m]))
  - record: job:errors:ratio
    expr: sum by (job) (rate(http_requests_total{code="500"}[2m])) / job:requests:rate2m
  - alert: HighErrorRatio
    expr: job:errors:ratio > 0.1
    for: 90s
    labels:
      severity: page
      team: '{{ $labels.job }}-oncall'
    annotations:
      summary: 'High error ratio on {{ $labels.job }}'
      description: '{{ $value | humanizePercentage }} of requests fail'
  - alert: NoApiTraffic
    expr: absent(http_requests_total{job="api"})
    annotations:
      summary: 'no api traffic'
- name: hosts
  interval: 30s
  rules:
  - alert: InstanceDown
    expr: up == 0
    for: 1m
    keep_firing_for: 90s
    labels: {severity: ticket}
    annotations:
      summary: '{{ $labels.instance }} of {{ $labels.job }} is down'
  - record: instance:temp:avg1m
    expr: avg_over_time(temp[1m])
  - alert: Hot
    expr: max_over_time(temp[1m]) > 30
    annotations:
      summary: '{{ $labels.instance }} reached {{ $value }} degrees'
  - alert: Warming
    expr: deriv(temp[2m]) > 0.05
    for: 30s
  - alert: Counters
    expr: increase(http_requests_total[1m]) < 5 and on(job, instance) up == 1
"#,
    inputs: &[
        (
            r#"http_requests_total{job="api", instance="a", code="200"}"#,
            "0+30x12 0+30x12 _x6 400+30x10",
        ),
        (
            r#"http_requests_total{job="api", instance="a", code="500"}"#,
            "0+1x8 10+9x12 200+0x20",
        ),
        (
            r#"http_requests_total{job="web", instance="b", code="200"}"#,
            "0+2x40",
        ),
        (
            r#"http_requests_total{job="web", instance="b", code="500"}"#,
            "0+0x20 0+3x20",
        ),
        (
            r#"up{job="api", instance="a"}"#,
            "1+0x10 0 0 0 0 1 0 0 0 0 0 0 1+0x18",
        ),
        (r#"up{job="web", instance="b"}"#, "1+0x15 0+0x8 _x3 1+0x14"),
        (r#"temp{instance="a"}"#, "20+0.5x24 32 33 20+0x14"),
        (r#"temp{instance="b"}"#, "25-0.1x40"),
    ],
};

const FLAPPING: Case = Case {
    name: "flapping",
    interval_s: 15,
    rules: r#"
groups:
- name: flaps
  interval: 15s
  rules:
  - alert: Flapping
    expr: queue_depth > 50
    for: 45s
    keep_firing_for: 30s
    labels:
      queue: '{{ $labels.queue | toUpper }}'
    annotations:
      summary: 'queue {{ $labels.queue }} holds {{ $value | humanize }}'
  - record: queue:depth:changes2m
    expr: changes(queue_depth[2m])
  - alert: QueueWillFill
    expr: predict_linear(queue_depth[2m], 300) > 200
    for: 30s
  - alert: SilentWorker
    expr: absent_over_time(worker_heartbeat{worker="w1"}[1m])
  - alert: SlowRequests
    expr: histogram_quantile(0.9, sum by (le) (rate(latency_bucket[1m]))) > 0.4
  - alert: Renamed
    expr: label_replace(queue_depth, "q", "$1", "queue", "(.*)") > 120
- name: meta
  interval: 15s
  rules:
  - record: alerts:firing:count
    expr: count by (alertname) (ALERTS{alertstate="firing"})
  - alert: ManyAlerts
    expr: sum(alerts:firing:count) >= 3
"#,
    inputs: &[
        (
            r#"queue_depth{queue="a"}"#,
            "10 60 70 40 80 90 95 30 20 60 65 70 75 80 10 10 10 100 110 120 130 140 150 160 10+0x10 55 56 57 58 59 60 61 62",
        ),
        (r#"queue_depth{queue="b"}"#, "0+5x50"),
        (
            r#"worker_heartbeat{worker="w1"}"#,
            "1+1x10 _x8 20+1x10 _x10 40+1x12",
        ),
        (r#"latency_bucket{le="0.1"}"#, "0+10x25 250+1x25"),
        (r#"latency_bucket{le="0.5"}"#, "0+12x25 300+2x25"),
        (r#"latency_bucket{le="+Inf"}"#, "0+13x25 325+10x25"),
    ],
};

/// Reads `series{...}` into a name and labels.
fn parse_series(text: &str) -> (String, BTreeMap<String, String>) {
    let (name, labels) = promtool::series(text);
    (name, labels.into_iter().collect())
}

/// The input series as JSON lines, in time order, and the same lines
/// moved by up to a minute each (a deterministic shuffle), for a source
/// that allows 90 s out of order.
fn input_lines(case: &Case) -> (String, String, i64) {
    let mut rows = Vec::new();
    for (series, values) in case.inputs {
        let (name, labels) = parse_series(series);
        for (i, v) in expand(values).into_iter().enumerate() {
            if let Some(v) = v {
                rows.push((
                    i as i64 * case.interval_s as i64 * 1000,
                    name.clone(),
                    labels.clone(),
                    v,
                ));
            }
        }
    }
    rows.sort_by_key(|r| r.0);
    let last = rows.last().map_or(0, |r| r.0);
    let line = |(t, name, labels, v): &(i64, String, BTreeMap<String, String>, f64)| {
        let labels = serde_json::to_string(labels).unwrap();
        format!(r#"{{"name":"{name}","labels":{labels},"timestamp":{t},"value":{v}}}"#)
    };
    let ordered: String = rows.iter().map(|r| line(r) + "\n").collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut keyed: Vec<(i64, String)> = rows
        .iter()
        .map(|r| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (r.0 + (x % 60_000) as i64, line(r))
        })
        .collect();
    keyed.sort_by_key(|k| k.0);
    let shuffled: String = keyed.into_iter().map(|(_, l)| l + "\n").collect();
    (ordered, shuffled, last)
}

/// Samples by (step, metric name): sorted label sets and values.
type ByStep = BTreeMap<(i64, String), Vec<(Vec<(String, String)>, f64)>>;

fn tidemark_outputs(case: &Case, dir: &Path, workers: usize, shuffled: bool) -> ByStep {
    let rules = dir.join("rules.yml");
    let (input, slack) = if shuffled {
        (dir.join("shuffled.jsonl"), "90s")
    } else {
        (dir.join("input.jsonl"), "0s")
    };
    let out = dir.join(format!("out-{workers}-{shuffled}.jsonl"));
    let pipeline = format!(
        r#"
name: alert-oracle
sources:
  in:
    type: file
    path: {input}
    max_out_of_orderness: {slack}
transforms:
  rules:
    type: alert
    inputs: [in]
    rules: {rules}
sinks:
  out:
    type: file
    inputs: [rules]
    path: {out}
"#,
        input = input.display(),
        rules = rules.display(),
        out = out.display(),
    );
    let report = run_text(&pipeline, workers);
    assert_eq!(
        report.errors,
        0,
        "{case_name}: {report:?}",
        case_name = case.name
    );
    let mut by_step = ByStep::new();
    for row in read_rows(&out) {
        let mut labels: Vec<(String, String)> = row.labels.into_iter().collect();
        labels.push(("__name__".into(), row.name.clone()));
        labels.sort();
        by_step
            .entry((row.timestamp, row.name))
            .or_default()
            .push((labels, row.value));
    }
    for v in by_step.values_mut() {
        v.sort_by(|a, b| a.0.cmp(&b.0));
    }
    by_step
}

/// What promtool gets for `ALERTS`, `ALERTS_FOR_STATE` and each recorded
/// series at every step.
fn promtool_outputs(case: &Case, dir: &Path, last: i64, names: &[String]) -> ByStep {
    let inputs: Vec<Input> = case
        .inputs
        .iter()
        .map(|(series, values)| Input { series, values })
        .collect();
    let step = case.interval_s as i64 * 1000;
    let steps: Vec<i64> = (0..=last / step).map(|k| k * step).collect();
    let queries: Vec<(String, u64)> = steps
        .iter()
        .flat_map(|t| names.iter().map(move |n| (n.clone(), (*t / 1000) as u64)))
        .collect();
    let got = evaluate(
        dir,
        &[&dir.join("rules.yml")],
        case.interval_s,
        &inputs,
        &queries,
    );
    let mut by_step = ByStep::new();
    for ((name, at), result) in queries.iter().zip(got) {
        let result = result.unwrap_or_else(|e| panic!("promtool failed on {name} at {at}s: {e}"));
        if result.is_empty() {
            continue;
        }
        let mut result = result;
        result.sort_by(|a, b| a.0.cmp(&b.0));
        by_step.insert((*at as i64 * 1000, name.clone()), result);
    }
    by_step
}

fn agree(want: &ByStep, got: &ByStep) -> Vec<String> {
    let keys: BTreeSet<_> = want.keys().chain(got.keys()).collect();
    let mut diffs = Vec::new();
    for k in keys {
        let (w, g) = (want.get(k), got.get(k));
        let same = match (w, g) {
            (Some(w), Some(g)) => {
                w.len() == g.len()
                    && w.iter()
                        .zip(g)
                        .all(|(a, b)| a.0 == b.0 && close(a.1, b.1, 1e-9))
            }
            _ => false,
        };
        if !same {
            diffs.push(format!(
                "{}s {}:\n  promtool: {w:?}\n  tidemark: {g:?}",
                k.0 / 1000,
                k.1
            ));
        }
    }
    diffs
}

fn check_case(case: &Case) {
    let dir = temp_dir(&format!("alert-{}", case.name));
    std::fs::write(dir.join("rules.yml"), case.rules).unwrap();
    let (ordered, shuffled, last) = input_lines(case);
    std::fs::write(dir.join("input.jsonl"), ordered).unwrap();
    std::fs::write(dir.join("shuffled.jsonl"), shuffled).unwrap();
    let groups: serde_json::Value = {
        let root = tidemark_engine::yaml::parse(case.rules).unwrap();
        root.to_json()
    };
    let mut names = vec!["ALERTS".to_owned(), "ALERTS_FOR_STATE".to_owned()];
    for g in groups["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            if let Some(name) = r["record"].as_str() {
                names.push(name.to_owned());
            }
        }
    }
    let want = promtool_outputs(case, &dir, last, &names);
    assert!(
        want.keys().any(|k| k.1 == "ALERTS"),
        "{}: promtool fired no alert; the scenario tests nothing",
        case.name
    );
    for (workers, shuffled) in [(1, false), (2, false), (4, false), (2, true)] {
        let got = tidemark_outputs(case, &dir, workers, shuffled);
        let diffs = agree(&want, &got);
        assert!(
            diffs.is_empty(),
            "{} with {workers} workers (input out of order: {shuffled}): {} steps differ from \
             promtool:\n{}",
            case.name,
            diffs.len(),
            diffs.join("\n")
        );
    }
}

#[test]
fn alerts_and_recording_rules_agree_with_promtool() {
    check_case(&SERVICE);
}

#[test]
fn flapping_alerts_and_rules_over_alerts_agree_with_promtool() {
    check_case(&FLAPPING);
}

/// The firing alerts of every alerting rule at every step, with the
/// labels and annotations Tidemark's group evaluation gives them (the
/// operator's own code, over a store holding the whole input), checked by
/// promtool's `alert_rule_test`, which compares them exactly.
#[test]
fn annotations_and_labels_agree_with_promtool() {
    use tidemark_engine::Series;
    use tidemark_operators::alert::group::{GroupState, Output, Settings};
    use tidemark_operators::alert::rules::{RuleKind, parse_file};
    use tidemark_operators::alert::template::Cache;

    let case = &SERVICE;
    let dir = temp_dir("alert-annotations");
    let rules_path = dir.join("rules.yml");
    std::fs::write(&rules_path, case.rules).unwrap();
    let step = case.interval_s as i64 * 1000;
    let groups = parse_file("rules.yml", case.rules, step).unwrap();
    let mut store = tidemark_promql::MemStore::default();
    let mut last = 0;
    for (series, values) in case.inputs {
        let (name, labels) = parse_series(series);
        let s = Series::new(&name, labels);
        for (i, v) in expand(values).into_iter().enumerate() {
            if let Some(v) = v {
                store.insert(&s, i as i64 * step, v);
                last = last.max(i as i64 * step);
            }
        }
    }
    let settings = Settings {
        lookback: tidemark_promql::DEFAULT_LOOKBACK,
        external_labels: Vec::new(),
        external_url: String::new(),
    };
    let mut states: Vec<GroupState> = groups
        .into_iter()
        .map(|g| GroupState::new(std::sync::Arc::new(g)))
        .collect();
    let mut cache = Cache::default();
    let mut tests = Vec::new();
    let mut firing_seen = 0;
    for t in (0..=last).step_by(step as usize) {
        for gs in states.iter_mut() {
            let mut out = Output::default();
            gs.evaluate(&mut store, t, &settings, &mut cache, &mut out);
            assert!(out.failures.is_empty(), "{:?}", out.failures);
            for (rule, instances) in gs.instances() {
                if !matches!(rule.kind, RuleKind::Alert { .. }) {
                    continue;
                }
                let firing: Vec<_> = instances
                    .all()
                    .filter(|a| a.state == tidemark_engine::alert::AlertState::Firing)
                    .map(|a| {
                        let labels = a
                            .labels
                            .labels()
                            .iter()
                            .filter(|(k, _)| k.as_ref() != "alertname")
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect();
                        (labels, a.annotations.to_vec())
                    })
                    .collect();
                firing_seen += firing.len();
                tests.push((rule.name.clone(), (t / 1000) as u64, firing));
            }
        }
    }
    assert!(
        firing_seen > 20,
        "only {firing_seen} firing alerts: the scenario tests too little"
    );
    let inputs: Vec<Input> = case
        .inputs
        .iter()
        .map(|(series, values)| Input { series, values })
        .collect();
    if let Err(report) =
        promtool::check_alerts(&dir, &[&rules_path], case.interval_s, &inputs, &tests)
    {
        panic!("promtool disagrees with Tidemark's alerts:\n{report}");
    }
}

#[test]
fn promtool_check_rules_accepts_what_validate_accepts() {
    // The same rule file passes both checkers; a broken one fails both.
    let dir = temp_dir("alert-check");
    let good = dir.join("good.yml");
    std::fs::write(&good, SERVICE.rules).unwrap();
    let bad = dir.join("bad.yml");
    std::fs::write(
        &bad,
        "groups:\n- name: a\n  rules:\n  - alert: X\n    expr: rate(x[5m]\n",
    )
    .unwrap();
    let promtool_ok = |p: &Path| {
        Command::new(promtool::promtool())
            .args(["check", "rules"])
            .arg(p)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(promtool_ok(&good));
    assert!(!promtool_ok(&bad));
    let pipeline = |rules: &Path| {
        format!(
            "name: v\nsources:\n  in: {{type: generator, series: 1}}\ntransforms:\n  rules:\n    type: alert\n    inputs: [in]\n    rules: {}\nsinks:\n  out: {{type: blackhole, inputs: [rules]}}\n",
            rules.display()
        )
    };
    assert!(tidemark_pipelines::compile("p.yaml", &pipeline(&good)).is_ok());
    let errors = tidemark_pipelines::compile("p.yaml", &pipeline(&bad)).unwrap_err();
    let text = format!("{errors:?}");
    assert!(
        text.contains("bad.yml:5:11: could not parse expression"),
        "{text}"
    );
}

/// `tidemark serve` shows the groups of a running pipeline at
/// `/api/v1/rules` and its active alerts at `/api/v1/alerts`, in
/// Prometheus's shapes, to the callers that may see the pipeline.
#[test]
fn the_server_lists_rules_and_alerts_as_prometheus_does() {
    use common::server::{Server, wait_until};

    let dir = temp_dir("alert-api");
    let tokens = dir.join("tokens");
    let (admin, tenant) = ("admin-token-0123456789", "tenant-token-0123456789");
    std::fs::write(
        &tokens,
        format!("{admin}\n{tenant} role=tenant tenant=blue\n"),
    )
    .unwrap();
    let mut server = Server::start(&["--token-file", tokens.to_str().unwrap()], 0);
    server.token = Some(admin.to_owned());
    let pipeline = r#"
name: rules-api
sources:
  gen: {type: generator, series: 50, interval: 1s, start: 2026-01-01T00:00:00Z, rate: 5000, seed: 1}
transforms:
  rules:
    type: alert
    inputs: [gen]
    rules:
      groups:
      - name: hosts
        interval: 10s
        rules:
        - alert: CpuBusy
          expr: cpu_usage > 0
          for: 30s
          labels: {severity: page}
          annotations: {summary: '{{ $labels.host }} is busy'}
        - record: region:cpu_usage:avg
          expr: avg by (region) (cpu_usage)
sinks:
  out: {type: blackhole, inputs: [rules]}
"#;
    let (status, body) = server
        .request("POST", "/api/v1/pipelines", Some(pipeline))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let firing = |server: &Server| {
        let (_, v) = server.json("GET", "/api/v1/alerts", None);
        v["data"]["alerts"]
            .as_array()
            .map(|a| a.iter().filter(|x| x["state"] == "firing").count())
            .unwrap_or(0)
    };
    wait_until("ten firing alerts", || firing(&server) == 10);
    let (status, alerts) = server.json("GET", "/api/v1/alerts", None);
    assert_eq!(status, 200);
    assert_eq!(alerts["status"], "success");
    let first = &alerts["data"]["alerts"][0];
    assert_eq!(first["labels"]["alertname"], "CpuBusy");
    assert_eq!(first["labels"]["severity"], "page");
    assert!(first["labels"].get("__name__").is_none(), "{first}");
    let host = first["labels"]["host"].as_str().unwrap();
    assert_eq!(first["annotations"]["summary"], format!("{host} is busy"));
    assert!(first["value"].as_str().unwrap().contains("e+"), "{first}");
    assert!(
        first["activeAt"]
            .as_str()
            .unwrap()
            .starts_with("2026-01-01T"),
        "{first}"
    );

    let (status, rules) = server.json("GET", "/api/v1/rules", None);
    assert_eq!(status, 200);
    let group = &rules["data"]["groups"][0];
    assert_eq!(group["name"], "hosts");
    assert_eq!(group["file"], "inline");
    assert_eq!(group["pipeline"], "rules-api");
    assert_eq!(group["interval"], 10.0);
    let alerting = &group["rules"][0];
    assert_eq!(alerting["type"], "alerting");
    assert_eq!(alerting["name"], "CpuBusy");
    assert_eq!(alerting["query"], "cpu_usage > 0");
    assert_eq!(alerting["duration"], 30.0);
    assert_eq!(alerting["health"], "ok");
    assert_eq!(alerting["state"], "firing");
    assert_eq!(
        alerting["annotations"]["summary"],
        "{{ $labels.host }} is busy"
    );
    assert!(alerting["alerts"].as_array().unwrap().len() >= 10);
    let recording = &group["rules"][1];
    assert_eq!(recording["type"], "recording");
    assert_eq!(recording["health"], "ok");
    assert!(
        recording["lastEvaluation"]
            .as_str()
            .unwrap()
            .starts_with("2026-01-01T")
    );

    let (_, only_records) = server.json("GET", "/api/v1/rules?type=record", None);
    let kinds: Vec<&str> = only_records["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["recording"]);
    let (status, bad) = server.json("GET", "/api/v1/rules?type=alerts", None);
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["errorType"], "bad_data");

    // Another tenant sees none of it; a caller without a token is refused.
    server.token = Some(tenant.to_owned());
    let (_, theirs) = server.json("GET", "/api/v1/rules", None);
    assert_eq!(theirs["data"]["groups"], serde_json::json!([]));
    let (_, theirs) = server.json("GET", "/api/v1/alerts", None);
    assert_eq!(theirs["data"]["alerts"], serde_json::json!([]));
    server.token = None;
    assert_eq!(
        server.request("GET", "/api/v1/alerts", None).unwrap().0,
        401
    );

    // Deleting the pipeline withdraws its groups.
    server.token = Some(admin.to_owned());
    let (status, _) = server
        .request("DELETE", "/api/v1/pipelines/rules-api", None)
        .unwrap();
    assert_eq!(status, 204);
    wait_until("the groups to go", || {
        let (_, v) = server.json("GET", "/api/v1/rules", None);
        v["data"]["groups"] == serde_json::json!([])
    });
    server.stop();
}
