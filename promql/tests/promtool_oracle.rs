//! The evaluator against Prometheus itself: every expression below is
//! evaluated by `promtool test rules` (Debian's Prometheus 2.42, installed
//! by deploy/test.sh) and by this crate over the same input series, at
//! several times; labels must agree exactly and values within 1e-9
//! relative.

#[path = "../../testkit/src/promtool.rs"]
#[allow(dead_code, missing_docs)]
mod promtool;

use promtool::{Input, close, evaluate, expand};
use tidemark_engine::Series;
use tidemark_promql::{Evaluator, MemStore, Value, parse};

const INTERVAL_S: u64 = 30;

const INPUTS: &[(&str, &str)] = &[
    // Counters: steady, with a reset, with a gap, and a third job.
    (
        r#"http_requests_total{job="api", instance="a", code="200"}"#,
        "0+10x20 5+10x20",
    ),
    (
        r#"http_requests_total{job="api", instance="b", code="500"}"#,
        "0+1x10 _x5 20+2x24",
    ),
    (
        r#"http_requests_total{job="web", instance="c", code="200"}"#,
        "100+7x40",
    ),
    // Gauges, one with a staleness marker and a gap after it.
    (
        r#"node_temp{instance="a", dc="x"}"#,
        "20 21.5 19 22 30 31 28 27 26 24 23 22 stale _x3 20+0.5x24",
    ),
    (r#"node_temp{instance="b", dc="y"}"#, "10-0.25x40"),
    (
        r#"node_temp{instance="c", dc="y"}"#,
        "15 15 15 15 15 16 17 17 17 17 17 17 17 18 19 20 20 20 20 20 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40",
    ),
    // Information series for joins.
    (r#"owner{instance="a", team="red"}"#, "1+0x40"),
    (r#"owner{instance="b", team="blue"}"#, "1+0x40"),
    (r#"owner{instance="c", team="blue"}"#, "1+0x40"),
    // Classic histograms.
    (r#"latency_seconds_bucket{job="api", le="0.1"}"#, "0+5x40"),
    (r#"latency_seconds_bucket{job="api", le="0.5"}"#, "0+8x40"),
    (r#"latency_seconds_bucket{job="api", le="1"}"#, "0+9x40"),
    (r#"latency_seconds_bucket{job="api", le="+Inf"}"#, "0+10x40"),
    (r#"latency_seconds_bucket{job="web", le="0.25"}"#, "0+1x40"),
    (r#"latency_seconds_bucket{job="web", le="+Inf"}"#, "0+3x40"),
    (r#"signed{a="1"}"#, "-5+0.5x40"),
    (r#"signed{a="2"}"#, "3-0.7x40"),
    (r#"epoch_seconds{a="1"}"#, "1709214300+86400x40"),
];

const EXPRS: &[&str] = &[
    // Selectors, offset, lookback and staleness.
    "http_requests_total",
    r#"http_requests_total{job="api", code!="500"}"#,
    r#"{__name__=~"node_.*", dc="y"}"#,
    "node_temp offset 2m",
    "node_temp offset -1m",
    "http_requests_total offset 3m",
    // Range functions.
    "rate(http_requests_total[5m])",
    "rate(http_requests_total[1m])",
    "increase(http_requests_total[2m])",
    "irate(http_requests_total[5m])",
    "idelta(node_temp[3m])",
    "delta(node_temp[4m])",
    "deriv(node_temp[5m])",
    "predict_linear(node_temp[5m], 3600)",
    "rate(http_requests_total[5m] offset 1m)",
    "avg_over_time(node_temp[3m])",
    "sum_over_time(node_temp[3m])",
    "min_over_time(node_temp[5m])",
    "max_over_time(node_temp[5m])",
    "count_over_time(node_temp[4m])",
    "stddev_over_time(node_temp[5m])",
    "stdvar_over_time(node_temp[5m])",
    "quantile_over_time(0.9, node_temp[5m])",
    "quantile_over_time(0.25, node_temp[2m])",
    "last_over_time(node_temp[2m])",
    "present_over_time(node_temp[1m])",
    "changes(node_temp[5m])",
    "resets(http_requests_total[10m])",
    "absent_over_time(node_temp{instance=\"a\"}[1m])",
    "absent_over_time(nothing{a=\"b\"}[1m])",
    // Instant functions.
    "abs(signed)",
    "ceil(signed)",
    "floor(signed)",
    "round(signed)",
    "round(signed, 0.3)",
    "sgn(signed)",
    "exp(signed)",
    "sqrt(node_temp)",
    "ln(node_temp)",
    "log2(node_temp)",
    "log10(node_temp)",
    "clamp(signed, -1, 2)",
    "clamp_max(signed, 0)",
    "clamp_min(signed, 0)",
    "clamp(signed, 2, 1)",
    "sin(signed)",
    "cos(signed)",
    "tan(signed)",
    "asin(signed / 10)",
    "acos(signed / 10)",
    "atan(signed)",
    "sinh(signed)",
    "cosh(signed)",
    "tanh(signed)",
    "asinh(signed)",
    "acosh(node_temp)",
    "atanh(signed / 10)",
    "deg(signed)",
    "rad(signed)",
    "pi()",
    "time()",
    "timestamp(node_temp)",
    "timestamp(node_temp + 1)",
    "scalar(node_temp{instance=\"b\"})",
    "scalar(node_temp)",
    "vector(time())",
    "vector(1) + 2",
    "day_of_month(epoch_seconds)",
    "day_of_week(epoch_seconds)",
    "day_of_year(epoch_seconds)",
    "days_in_month(epoch_seconds)",
    "hour(epoch_seconds)",
    "minute(epoch_seconds)",
    "month(epoch_seconds)",
    "year(epoch_seconds)",
    "hour()",
    "year()",
    "absent(node_temp)",
    "absent(nothing{a=\"b\", c=~\"d\"})",
    "absent(nothing{a=\"b\", a=\"c\"})",
    "sort(node_temp)",
    "sort_desc(node_temp)",
    r#"label_replace(node_temp, "site", "site-$1", "dc", "(.*)")"#,
    r#"label_replace(node_temp, "dc", "", "instance", "a")"#,
    r#"label_replace(node_temp, "x", "$2", "instance", "(a)|(b)")"#,
    r#"label_join(node_temp, "id", "/", "dc", "instance")"#,
    "histogram_quantile(0.9, rate(latency_seconds_bucket[5m]))",
    "histogram_quantile(0.5, sum by (le) (rate(latency_seconds_bucket[5m])))",
    "histogram_quantile(0.99, latency_seconds_bucket)",
    "histogram_quantile(1.5, latency_seconds_bucket)",
    // Arithmetic, comparison, bool.
    "node_temp * 2 + 1",
    "2 ^ signed",
    "signed % 2",
    "-node_temp",
    "node_temp / 0",
    "signed atan2 2",
    "node_temp > 20",
    "20 < node_temp",
    "node_temp > bool 20",
    "node_temp == 15",
    "node_temp != bool 15",
    "node_temp >= 21",
    "node_temp <= 15",
    "1 + 2 * 3",
    "2 > bool 1",
    "http_requests_total / http_requests_total",
    "rate(http_requests_total[5m]) / ignoring(code) group_left sum without (code) (rate(http_requests_total[5m]))",
    "node_temp * on(instance) group_left(team) owner",
    "owner * on(instance) group_right(dc) node_temp",
    "node_temp > on(instance) owner",
    "node_temp - on(instance) owner",
    "node_temp - ignoring(dc, team) owner",
    "node_temp + on(instance) group_left owner",
    // Set operators.
    "node_temp and on(instance) owner{team=\"blue\"}",
    "node_temp unless on(instance) owner{team=\"blue\"}",
    "node_temp{dc=\"x\"} or node_temp{dc=\"y\"}",
    "node_temp or on(instance) owner",
    "owner and node_temp > 20",
    // Aggregations.
    "sum(node_temp)",
    "sum by (dc) (node_temp)",
    "sum without (instance) (node_temp)",
    "avg(node_temp)",
    "avg by (dc) (node_temp)",
    "min(node_temp)",
    "max by (dc) (node_temp)",
    "count(node_temp)",
    "count by (job) (http_requests_total)",
    "group by (job) (http_requests_total)",
    "stddev(node_temp)",
    "stdvar by (dc) (node_temp)",
    "topk(2, node_temp)",
    "bottomk(1, node_temp)",
    "topk by (dc) (1, node_temp)",
    "topk(0, node_temp)",
    "quantile(0.5, node_temp)",
    "quantile by (dc) (0.1, node_temp)",
    r#"count_values("value", owner)"#,
    r#"count_values by (dc) ("v", round(node_temp))"#,
    "sum by (__name__) ({__name__=~\"node_temp|owner\"})",
    "max(rate(http_requests_total[5m])) by (job)",
    // Evaluation errors Prometheus reports.
    "node_temp + on(dc) owner",
    "owner * on(team) group_left node_temp",
    "http_requests_total - ignoring(code) http_requests_total",
    "sum(rate(http_requests_total[5m])) by (job) / on(job) group_left count by (job) (http_requests_total)",
];

fn store() -> MemStore {
    let mut store = MemStore::default();
    for (series, values) in INPUTS {
        let (name, labels) = promtool::series(series);
        let s = Series::new(&name, labels);
        for (i, v) in expand(values).into_iter().enumerate() {
            if let Some(v) = v {
                store.insert(&s, i as i64 * INTERVAL_S as i64 * 1000, v);
            }
        }
    }
    store
}

#[test]
fn agrees_with_promtool_on_every_supported_function_and_operator() {
    let dir = std::env::temp_dir().join(format!("tidemark-promql-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let times = [0u64, 90, 150, 330, 375, 480, 600, 1200];
    let queries: Vec<(String, u64)> = EXPRS
        .iter()
        .flat_map(|e| times.iter().map(move |t| (e.to_string(), *t)))
        .collect();
    let inputs: Vec<Input> = INPUTS
        .iter()
        .map(|(series, values)| Input { series, values })
        .collect();
    let want = evaluate(&dir, &[], INTERVAL_S, &inputs, &queries);
    let store = store();
    let mut failures = Vec::new();
    for ((expr, at), want) in queries.iter().zip(want) {
        let parsed = parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let result = Evaluator::new(&store).eval(&parsed, *at as i64 * 1000);
        let want = match (want, &result) {
            (Ok(want), _) => want,
            (Err(_), Err(_)) => continue, // both refuse
            (Err(e), Ok(v)) => {
                failures.push(format!("{expr} @ {at}s: promtool: {e}, tidemark: {v:?}"));
                continue;
            }
        };
        let got = match result {
            Ok(Value::Vector(v)) => v
                .into_iter()
                .map(|e| {
                    let labels = e
                        .series
                        .labels()
                        .iter()
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                        .collect::<Vec<_>>();
                    (labels, e.v)
                })
                .collect::<Vec<_>>(),
            Ok(Value::Scalar(v)) => vec![(Vec::new(), v)],
            other => {
                failures.push(format!("{expr} @ {at}s: {other:?}"));
                continue;
            }
        };
        let mut got = got;
        let mut want = want;
        got.sort_by(|a, b| a.0.cmp(&b.0));
        want.sort_by(|a, b| a.0.cmp(&b.0));
        let agree = got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.0 == w.0 && close(g.1, w.1, 1e-9));
        if !agree {
            failures.push(format!(
                "{expr} @ {at}s:\n  promtool: {want:?}\n  tidemark: {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} evaluations differ from Prometheus:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
}
