//! The Prometheus query API and remote read against Prometheus itself.
//!
//! The same series go into a real Prometheus (remote write) and into a
//! `tidemark serve` pipeline (a file source into a `memory` sink). The same
//! instant and range queries, at the same times, must give the same
//! results from both (values within 1e-9 relative), and the same malformed
//! requests the same error types and status codes. `promtool query` (a real
//! client) reads Tidemark's answers; a second Prometheus with Tidemark as
//! its `remote_read` source answers its queries from Tidemark's data as the
//! first answers from its own.

use tidemark_testkit as common;

use std::process::Command;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use common::prometheus::{Prometheus, get_json};
use common::server::Server;
use common::temp_dir;

const STEP: i64 = 15_000;

/// One series: name, labels, points.
struct Input {
    name: &'static str,
    labels: Vec<(&'static str, String)>,
    points: Vec<(i64, f64)>,
}

/// Counters (one with a reset), gauges, a series that stops, one with an
/// irregular interval, over 45 minutes that end a minute ago.
fn inputs(end: i64) -> Vec<Input> {
    let mut rng = StdRng::seed_from_u64(7);
    let start = end - 45 * 60_000;
    let times =
        |every: i64, until: i64| -> Vec<i64> { (start..=until).step_by(every as usize).collect() };
    let mut out = Vec::new();
    for job in ["api", "web"] {
        for instance in ["a", "b", "c"] {
            for code in ["200", "500"] {
                let mut v = 0.0;
                let reset_at = rng.random_range(20..150);
                let points = times(STEP, end)
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| {
                        v += f64::from(rng.random_range(0..10u32));
                        if i == reset_at && instance == "b" {
                            v = 1.0;
                        }
                        (t, v)
                    })
                    .collect();
                out.push(Input {
                    name: "http_requests_total",
                    labels: vec![
                        ("job", job.into()),
                        ("instance", instance.into()),
                        ("code", code.into()),
                    ],
                    points,
                });
            }
        }
    }
    for room in 1..=4 {
        let mut v: f64 = 18.0 + f64::from(room);
        let points = times(STEP, end)
            .into_iter()
            .map(|t| {
                v += rng.random_range(-0.5..0.5);
                (t, (v * 1000.0).round() / 1000.0)
            })
            .collect();
        out.push(Input {
            name: "temperature",
            labels: vec![("room", format!("r{room}"))],
            points,
        });
    }
    out.push(Input {
        name: "queue_depth",
        labels: vec![("job", "api".into())],
        points: times(STEP, start + 20 * 60_000)
            .into_iter()
            .map(|t| (t, f64::from(rng.random_range(0..100u32))))
            .collect(),
    });
    out.push(Input {
        name: "irregular",
        labels: vec![("job", "batch".into())],
        points: times(37_000, end)
            .into_iter()
            .map(|t| (t, f64::from(rng.random_range(0..1000u32)) / 7.0))
            .collect(),
    });
    out
}

/// Expressions both must agree on: selectors, rates over a reset, the
/// aggregations, binary operators with matching, functions, scalars, a
/// series that went stale, and an instant query of a range selector.
const QUERIES: &[&str] = &[
    "http_requests_total",
    r#"http_requests_total{code="500",instance=~"a|b"}"#,
    "rate(http_requests_total[5m])",
    "irate(http_requests_total[1m])",
    "increase(http_requests_total[10m])",
    "sum by (job) (rate(http_requests_total[5m]))",
    r#"sum by (job) (rate(http_requests_total{code="500"}[5m])) / sum by (job) (rate(http_requests_total[5m]))"#,
    r#"rate(http_requests_total[5m]) * on(job, instance) group_left rate(http_requests_total{code="500"}[5m])"#,
    "avg_over_time(temperature[10m])",
    "max(temperature) - min(temperature)",
    "quantile(0.9, temperature)",
    "temperature > 20",
    "deriv(temperature[5m])",
    r#"label_replace(temperature, "r", "$1", "room", "r(.*)")"#,
    "count(queue_depth)",
    "queue_depth offset 10m",
    "sum_over_time(irregular[3m])",
    "sort_desc(sum by (instance) (http_requests_total))",
    "count_values(\"v\", round(temperature))",
    "absent(nonexistent)",
    "time() - 60",
    "temperature[2m]",
];

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// A counter selector with random matchers.
fn counter(rng: &mut StdRng) -> String {
    match rng.random_range(0..4) {
        0 => "http_requests_total".into(),
        1 => format!(
            r#"http_requests_total{{code="{}"}}"#,
            pick(rng, &["200", "500"])
        ),
        2 => format!(
            r#"http_requests_total{{instance=~"{}"}}"#,
            pick(rng, &["a|b", "c", ".+", "b.*"])
        ),
        _ => format!(
            r#"http_requests_total{{job!="{}",code!~"{}"}}"#,
            pick(rng, &["api", "web"]),
            pick(rng, &["2..", "5.."])
        ),
    }
}

/// An instant vector built from the data's series: range functions,
/// aggregations with grouping, arithmetic and comparisons with scalars
/// and between vectors, and math functions, nested up to `depth`.
fn random_vector(rng: &mut StdRng, depth: u32) -> String {
    let window = pick(rng, &["1m", "2m", "5m", "10m"]);
    let leaf = |rng: &mut StdRng| -> String {
        match rng.random_range(0..6) {
            0 => format!(
                "{}({}[{window}])",
                pick(rng, &["rate", "irate", "increase", "resets"]),
                counter(rng)
            ),
            1 => format!(
                "{}({}[{window}])",
                pick(
                    rng,
                    &[
                        "delta",
                        "deriv",
                        "avg_over_time",
                        "max_over_time",
                        "min_over_time",
                        "sum_over_time",
                        "count_over_time",
                        "stddev_over_time",
                        "changes",
                        "last_over_time",
                    ]
                ),
                pick(
                    rng,
                    &["temperature", r#"temperature{room!="r2"}"#, "irregular"]
                )
            ),
            2 => counter(rng),
            3 => pick(rng, &["temperature", "irregular", "queue_depth"]).into(),
            4 => format!(
                "quantile_over_time({}, temperature[{window}])",
                pick(rng, &["0", "0.5", "0.9", "1"])
            ),
            _ => format!(
                "predict_linear(temperature[{window}], {})",
                pick(rng, &["60", "600"])
            ),
        }
    };
    if depth == 0 {
        return leaf(rng);
    }
    let inner = random_vector(rng, depth - 1);
    match rng.random_range(0..7) {
        0 => leaf(rng),
        1 => format!(
            "{} {}({inner})",
            pick(
                rng,
                &[
                    "sum", "avg", "min", "max", "count", "stddev", "stdvar", "group"
                ]
            ),
            pick(
                rng,
                &[
                    "",
                    "by (job) ",
                    "by (job, instance) ",
                    "without (code) ",
                    "by (room) "
                ]
            )
        ),
        2 => format!(
            "{inner} {} {}",
            pick(
                rng,
                &[
                    "+", "-", "*", "/", "%", "^", ">", "<", ">=", "== bool", "!= bool"
                ]
            ),
            pick(rng, &["0", "1", "2.5", "100", "-3"])
        ),
        3 => format!(
            "{}({inner})",
            pick(
                rng,
                &[
                    "abs",
                    "ceil",
                    "floor",
                    "sqrt",
                    "ln",
                    "exp",
                    "sgn",
                    "round",
                    "timestamp"
                ]
            )
        ),
        4 => format!(
            "sum by (job) ({inner}) {} on (job) sum by (job) ({})",
            pick(rng, &["+", "/", ">", "and", "or", "unless"]),
            random_vector(rng, 0)
        ),
        5 => format!(
            "clamp({inner}, {}, {})",
            pick(rng, &["-1", "0", "5"]),
            pick(rng, &["10", "50", "1000"])
        ),
        _ => format!(
            "quantile({}, {inner})",
            pick(rng, &["0", "0.25", "0.9", "1"])
        ),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn number(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| match s {
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            _ => s.parse().ok(),
        })
        .unwrap_or_else(|| panic!("not a sample value: {v}"))
}

/// A result as (metric, [(time, value)]) sorted by metric, unless the
/// expression sorts.
/// Each series' labels (as JSON text) and its (time, value) points.
type Points = Vec<(String, Vec<(f64, f64)>)>;

fn normalise(data: &Value, sorted: bool) -> (String, Points) {
    let kind = data["resultType"].as_str().unwrap().to_owned();
    let pair = |p: &Value| (p[0].as_f64().unwrap(), number(&p[1]));
    let mut out: Points = match kind.as_str() {
        "scalar" => vec![(String::new(), vec![pair(&data["result"])])],
        _ => data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let points = match e.get("value") {
                    Some(v) => vec![pair(v)],
                    None => e["values"].as_array().unwrap().iter().map(pair).collect(),
                };
                (e["metric"].to_string(), points)
            })
            .collect(),
    };
    if !sorted {
        out.sort_by(|a, b| a.0.cmp(&b.0));
    }
    (kind, out)
}

fn agree(what: &str, want: &Value, got: &Value, sorted: bool) -> Result<(), String> {
    if want["status"] != "success" || got["status"] != "success" {
        return Err(format!("{what}: prometheus {want}\ntidemark {got}"));
    }
    let (wk, w) = normalise(&want["data"], sorted);
    let (gk, g) = normalise(&got["data"], sorted);
    if wk != gk {
        return Err(format!("{what}: result types {wk} and {gk}"));
    }
    let labels =
        |r: &[(String, Vec<(f64, f64)>)]| r.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    if labels(&w) != labels(&g) {
        return Err(format!(
            "{what}: series differ\nprometheus {:?}\ntidemark   {:?}",
            labels(&w),
            labels(&g)
        ));
    }
    for ((m, wp), (_, gp)) in w.iter().zip(&g) {
        let same = wp.len() == gp.len()
            && wp
                .iter()
                .zip(gp)
                .all(|(a, b)| (a.0 - b.0).abs() < 1e-6 && close(a.1, b.1));
        if !same {
            return Err(format!(
                "{what}: {m} differs\nprometheus {wp:?}\ntidemark   {gp:?}"
            ));
        }
    }
    Ok(())
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// Writes the inputs as JSON lines, in time order.
fn write_jsonl(path: &std::path::Path, inputs: &[Input]) {
    let mut lines: Vec<(i64, String)> = Vec::new();
    for i in inputs {
        let labels: serde_json::Map<String, Value> = i
            .labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String(v.clone())))
            .collect();
        for &(t, v) in &i.points {
            lines.push((
                t,
                serde_json::json!({"name": i.name, "labels": labels, "timestamp": t, "value": v})
                    .to_string(),
            ));
        }
    }
    lines.sort_by_key(|l| l.0);
    let text: String = lines.into_iter().map(|(_, l)| l + "\n").collect();
    std::fs::write(path, text).unwrap();
}

fn remote_write(prom: &Prometheus, inputs: &[Input]) {
    for i in inputs {
        let mut labels: Vec<(&str, &str)> = vec![("__name__", i.name)];
        labels.extend(i.labels.iter().map(|(k, v)| (*k, v.as_str())));
        prom.remote_write(common::remote_write_body(&[(&labels, &i.points)]));
    }
}

fn pipeline(input: &std::path::Path) -> String {
    format!(
        r#"
name: history
sources:
  input:
    type: file
    path: {}
sinks:
  recent:
    type: memory
    inputs: [input]
    retention: 3h
"#,
        input.display()
    )
}

/// Waits until the server's `memory` sink holds every point.
fn wait_for_points(server: &Server, want: usize) {
    let start = Instant::now();
    loop {
        let (_, metrics) = server.request("GET", "/metrics", None).unwrap();
        let held = metrics
            .lines()
            .find(|l| l.starts_with("tidemark_memory_points{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<usize>().ok());
        if held == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the memory sink holds {held:?} points, not {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Compares Tidemark with Prometheus on the fixed expressions at every
/// time of `times` and on `random` seeded random ones at the first three,
/// as instant queries, and as range queries over `(start, end)`; fails
/// with every expression that disagreed.
fn compare_queries(
    prom: &Prometheus,
    server: &Server,
    times: &[i64],
    random: usize,
    (start, end): (i64, i64),
) {
    let mut failures = Vec::new();
    let mut compared = 0;
    let mut answered = 0;
    // The fixed expressions, then the random ones (seeded; a failure
    // prints each expression that disagreed).
    let mut generator = StdRng::seed_from_u64(2026);
    let random: Vec<String> = (0..random)
        .map(|_| random_vector(&mut generator, 2))
        .collect();
    let all: Vec<&str> = QUERIES
        .iter()
        .copied()
        .chain(random.iter().map(String::as_str))
        .collect();
    for (i, q) in all.iter().enumerate() {
        let sorted = q.starts_with("sort");
        // Random expressions at three of the times, to keep the test short.
        let times = if i < QUERIES.len() {
            times
        } else {
            &times[..3]
        };
        for &t in times {
            let path = format!("/api/v1/query?query={}&time={}", encode(q), seconds(t));
            let (_, want) = get_json(&format!("{}{path}", prom.url));
            let (_, got) = get_json(&format!("{}{path}", server.url));
            compared += 1;
            if got["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                answered += 1;
            }
            if let Err(e) = agree(&format!("{q} at {t}"), &want, &got, sorted) {
                failures.push(e);
            }
        }
        if q.ends_with("[2m]") {
            continue;
        }
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=60",
            encode(q),
            seconds(start - 30_000),
            seconds(end + 90_000)
        );
        let (_, want) = get_json(&format!("{}{path}", prom.url));
        let (_, got) = get_json(&format!("{}{path}", server.url));
        compared += 1;
        if let Err(e) = agree(&format!("range {q}"), &want, &got, false) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {compared} comparisons failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    // Most instant queries have something to compare.
    let instants = QUERIES.len() * times.len() + random.len() * 3;
    assert!(
        answered * 10 >= instants * 7,
        "only {answered} of {instants} instant queries had a result"
    );
}

#[test]
fn queries_agree_with_prometheus_and_promtool_and_remote_read_work() {
    let dir = temp_dir("query-oracle");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let end = now / STEP * STEP - 60_000;
    let data = inputs(end);
    let points: usize = data.iter().map(|i| i.points.len()).sum();

    let prom = Prometheus::start(&dir.join("prometheus"), "global: {}\n");
    remote_write(&prom, &data);

    let input = dir.join("input.jsonl");
    write_jsonl(&input, &data);
    let server = Server::start(&[], 0);
    let (status, body) = server
        .request("POST", "/api/v1/pipelines", Some(&pipeline(&input)))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    wait_for_points(&server, points);

    // Instant queries at times across the range, and range queries over it.
    let mut rng = StdRng::seed_from_u64(11);
    let start = end - 45 * 60_000;
    let times: Vec<i64> = (0..5)
        .map(|_| rng.random_range(start..end + 120_000))
        .chain([end, start + 25 * 60_000])
        .collect();
    compare_queries(&prom, &server, &times, 120, (start, end));

    // Series, labels and label values.
    for path in [
        "/api/v1/series?match[]=http_requests_total%7Bcode%3D%22500%22%7D&match[]=temperature"
            .to_owned(),
        "/api/v1/labels".to_owned(),
        format!(
            "/api/v1/labels?match[]=temperature&start={}",
            seconds(start)
        ),
        "/api/v1/label/instance/values".to_owned(),
        "/api/v1/label/__name__/values".to_owned(),
    ] {
        let (_, mut want) = get_json(&format!("{}{path}", prom.url));
        let (_, mut got) = get_json(&format!("{}{path}", server.url));
        for v in [&mut want, &mut got] {
            if let Some(list) = v["data"].as_array_mut() {
                list.sort_by_key(|x| x.to_string());
            }
        }
        assert_eq!(want["data"], got["data"], "{path}");
    }

    // The same malformed requests get the same errors.
    let bad = [
        "/api/v1/query?query=sum(",
        "/api/v1/query?query=up&time=yesterday",
        "/api/v1/query?query=up&timeout=soon",
        "/api/v1/query?query=http_requests_total%20/%20on(job)%20http_requests_total",
        "/api/v1/query_range?query=up&start=100&end=50&step=10",
        "/api/v1/query_range?query=up&start=0&end=100&step=0",
        "/api/v1/query_range?query=up&start=0&end=1000000&step=1",
        "/api/v1/query_range?query=up%5B5m%5D&start=0&end=100&step=10",
        "/api/v1/query_range?query=up&start=0&end=100",
        "/api/v1/series",
        "/api/v1/series?match[]=rate(up%5B5m%5D)",
        "/api/v1/label/a-b/values",
    ];
    for path in bad {
        let (ws, want) = get_json(&format!("{}{path}", prom.url));
        let (gs, got) = get_json(&format!("{}{path}", server.url));
        assert_eq!(
            (ws, &want["status"], &want["errorType"]),
            (gs, &got["status"], &got["errorType"]),
            "{path}\nprometheus {want}\ntidemark   {got}"
        );
    }

    // promtool, a real client, reads Tidemark's answers.
    let q = "sum by (job) (rate(http_requests_total[5m]))";
    let promtool = |args: &[&str]| -> Value {
        let out = Command::new(common::promtool::promtool())
            .args(["query"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "promtool {args:?} printed {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    };
    let at = seconds(end);
    let instant = promtool(&["instant", "-o", "json", "--time", &at, &server.url, q]);
    let (_, direct) = get_json(&format!(
        "{}/api/v1/query?query={}&time={at}",
        server.url,
        encode(q)
    ));
    assert_eq!(instant, direct["data"]["result"], "promtool query instant");
    assert_eq!(instant.as_array().map(Vec::len), Some(2));
    let (from, to) = (seconds(start), seconds(end));
    let range = promtool(&[
        "range",
        "-o",
        "json",
        "--start",
        &from,
        "--end",
        &to,
        "--step",
        "1m",
        &server.url,
        q,
    ]);
    let (_, direct) = get_json(&format!(
        "{}/api/v1/query_range?query={}&start={from}&end={to}&step=60",
        server.url,
        encode(q)
    ));
    assert_eq!(range, direct["data"]["result"], "promtool query range");
    assert_eq!(range.as_array().map(Vec::len), Some(2), "{range}");
    // The first step has one sample in its 5 minutes: no rate.
    assert_eq!(range[0]["values"].as_array().map(Vec::len), Some(45));
    let series = promtool(&[
        "series",
        "-o",
        "json",
        "--match",
        "temperature",
        &server.url,
    ]);
    assert_eq!(series.as_array().map(Vec::len), Some(4), "{series}");
    let labels = promtool(&["labels", "-o", "json", &server.url, "room"]);
    assert_eq!(labels, serde_json::json!(["r1", "r2", "r3", "r4"]));

    // A Prometheus with nothing of its own reads Tidemark remotely and
    // answers as the first does from its own storage.
    let reader = Prometheus::start(
        &dir.join("reader"),
        &format!(
            "global: {{}}\nremote_read:\n  - url: {}/api/v1/read\n    read_recent: true\n",
            server.url
        ),
    );
    let mut failures = Vec::new();
    for q in QUERIES.iter().filter(|q| !q.starts_with("absent")) {
        for &t in &times[..3] {
            let path = format!("/api/v1/query?query={}&time={}", encode(q), seconds(t));
            let (_, want) = get_json(&format!("{}{path}", prom.url));
            let (_, got) = get_json(&format!("{}{path}", reader.url));
            if let Err(e) = agree(
                &format!("remote read {q} at {t}"),
                &want,
                &got,
                q.starts_with("sort"),
            ) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let (_, up) = get_json(&format!(
        "{}/api/v1/query?query=count(http_requests_total)&time={at}",
        reader.url
    ));
    assert_eq!(up["data"]["result"][0]["value"][1], "12", "{up}");
    drop(server);
}

/// Past what the memory sink holds, queries read the pipeline's Parquet
/// archive; a damaged file makes it unreadable.
#[test]
fn queries_reach_past_memory_into_the_parquet_archive() {
    let dir = temp_dir("query-archive");
    let archive = dir.join("archive");
    let sink = format!(
        "type: parquet\n    path: {}\n    roll_interval: 5m",
        archive.display()
    );
    let damage = || {
        let mut damaged = 0;
        for entry in walk(&archive) {
            if entry.extension().is_some_and(|e| e == "parquet") {
                std::fs::write(&entry, b"not a parquet file").unwrap();
                damaged += 1;
            }
        }
        assert!(damaged > 0, "no parquet file under {}", archive.display());
    };
    tiered(&dir, &sink, damage, "pipeline=tiered/output=archive");
}

/// Past what the memory sink holds, queries read the pipeline's
/// TimescaleDB tables; a dropped table makes them unreadable.
#[test]
fn queries_reach_past_memory_into_timescaledb() {
    let dir = temp_dir("query-timescaledb");
    let url = common::pg::timescaledb();
    let (table, series) = common::pg::fresh_table(&url, "query_tiered");
    let sink = format!(
        "type: timescaledb\n    url: \"{url}\"\n    table: {table}\n    series_table: {series}\n    method: insert"
    );
    let damage = || {
        common::pg::query(&url, &format!("DROP TABLE {table} CASCADE"));
    };
    tiered(&dir, &sink, damage, &format!("public.{table}"));
}

/// With 10 minutes in memory over 45 minutes of data and the rest in the
/// archive that `sink` writes, every query (at times in the archive,
/// across the seam, in memory) agrees with Prometheus, which holds it all;
/// a listing with `start` and remote read see the archived series; and
/// once `damage` has made the archive unreadable, a query gives a warning
/// that names it (`named`) with the rest of the answer, not an error.
fn tiered(dir: &std::path::Path, sink: &str, damage: impl FnOnce(), named: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let end = now / STEP * STEP - 60_000;
    let start = end - 45 * 60_000;
    let data = inputs(end);
    let points: usize = data.iter().map(|i| i.points.len()).sum();
    let prom = Prometheus::start(&dir.join("prometheus"), "global: {}\n");
    remote_write(&prom, &data);

    let input = dir.join("input.jsonl");
    write_jsonl(&input, &data);
    let yaml = format!(
        r#"
name: tiered
sources:
  input:
    type: file
    path: {}
sinks:
  recent:
    type: memory
    inputs: [input]
    retention: 10m
  archive:
    inputs: [input]
    {sink}
"#,
        input.display(),
    );
    let server = Server::start(&[], 0);
    let (status, body) = server
        .request("POST", "/api/v1/pipelines", Some(&yaml))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let waited = Instant::now();
    loop {
        let (_, status) = server.json("GET", "/api/v1/pipelines/tiered", None);
        if status["state"] == "finished" {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the pipeline did not finish: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, metrics) = server.request("GET", "/metrics", None).unwrap();
    let held: usize = metrics
        .lines()
        .find(|l| l.starts_with("tidemark_memory_points{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tidemark_memory_points in {metrics}"));
    assert!(
        held * 3 < points,
        "memory holds {held} of {points} points: the archive would not be needed"
    );

    // In the archive only, around the seam (memory holds the last 10
    // minutes; an instant selector looks 5 minutes back), in memory.
    let times = [
        start + 2 * 60_000,
        start + 17 * 60_000 + 7_000,
        end - 11 * 60_000,
        end - 8 * 60_000 + 3_000,
        end - 30 * 60_000,
        end,
    ];
    compare_queries(&prom, &server, &times, 30, (start, end));

    // A listing with `start` reaches the archive: queue_depth stopped 25
    // minutes before the end.
    for path in [
        format!(
            "/api/v1/series?match[]=queue_depth&start={}",
            seconds(start)
        ),
        format!(
            "/api/v1/label/job/values?start={}&end={}",
            seconds(start),
            seconds(start + 60_000)
        ),
    ] {
        let (_, want) = get_json(&format!("{}{path}", prom.url));
        let (_, got) = get_json(&format!("{}{path}", server.url));
        assert_eq!(want["data"], got["data"], "{path}");
        assert!(
            got["data"].as_array().is_some_and(|a| !a.is_empty()),
            "{path}: {got}"
        );
    }

    // A Prometheus reading Tidemark remotely sees the archived samples.
    let reader = Prometheus::start(
        &dir.join("reader"),
        &format!(
            "global: {{}}\nremote_read:\n  - url: {}/api/v1/read\n    read_recent: true\n",
            server.url
        ),
    );
    for q in ["queue_depth", "sum(rate(http_requests_total[5m]))"] {
        let path = format!(
            "/api/v1/query?query={}&time={}",
            encode(q),
            seconds(start + 10 * 60_000)
        );
        let (_, want) = get_json(&format!("{}{path}", prom.url));
        let (_, got) = get_json(&format!("{}{path}", reader.url));
        agree(&format!("remote read {q}"), &want, &got, false).unwrap();
        assert!(
            got["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        );
    }

    // An unreadable archive: the answer says so in a warning and holds
    // what memory holds; a query memory covers alone does not read the
    // archive.
    damage();
    let ask = |t: i64| {
        let (status, body) = server
            .request(
                "GET",
                &format!("/api/v1/query?query=count(temperature)&time={}", seconds(t)),
                None,
            )
            .unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let early = ask(start + 10 * 60_000);
    assert_eq!(early["status"], "success", "{early}");
    assert_eq!(early["data"]["result"], serde_json::json!([]), "{early}");
    let warning = early["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("cannot be read") && warning.contains(named),
        "{early}"
    );
    let late = ask(end);
    assert_eq!(late["data"]["result"][0]["value"][1], "4", "{late}");
    assert!(late.get("warnings").is_none(), "{late}");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A tenant reads only the histories of its own pipelines; limits and
/// memory are in `/metrics`.
#[test]
fn tenants_read_only_their_own_history() {
    let dir = temp_dir("query-tenants");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "acme-token-0123456789 acme\nglobex-token-0123456789 globex\nadmin-token-0123456789 role=admin\n").unwrap();
    let mut server = Server::start(&["--token-file", tokens.to_str().unwrap()], 0);
    let mut points = 0;
    for (tenant, series) in [("acme", 3usize), ("globex", 5)] {
        let input = dir.join(format!("{tenant}.jsonl"));
        let text: String = (0..series)
            .map(|i| {
                format!(
                    "{{\"name\":\"up\",\"labels\":{{\"instance\":\"{tenant}-{i}\"}},\"timestamp\":{},\"value\":1}}\n",
                    1_700_000_000_000i64 + i as i64
                )
            })
            .collect();
        points += series;
        std::fs::write(&input, text).unwrap();
        server.token = Some(format!("{tenant}-token-0123456789"));
        let yaml = pipeline(&input).replace("name: history", &format!("name: {tenant}-history"));
        let (status, body) = server
            .request("POST", "/api/v1/pipelines", Some(&yaml))
            .unwrap();
        assert_eq!(status, 201, "{body}");
    }
    // A memory sink larger than the server's quota is refused, located.
    server.token = Some("acme-token-0123456789".into());
    let greedy = pipeline(&dir.join("acme.jsonl"))
        .replace("name: history", "name: greedy")
        .replace("retention: 3h", "retention: 3h\n    max_mb: 4096");
    let (status, body) = server
        .request("POST", "/api/v1/pipelines", Some(&greedy))
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("4096 MiB of memory is over the server's quota (quotas.max_memory_mb: 1024)")
            && body.contains("\"line\":12"),
        "{body}"
    );
    server.token = Some("admin-token-0123456789".into());
    let start = Instant::now();
    loop {
        let (_, m) = server.request("GET", "/metrics", None).unwrap();
        let held: usize = m
            .lines()
            .filter(|l| l.starts_with("tidemark_memory_points{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
            .sum();
        if held == points {
            assert!(
                m.contains("tidemark_memory_series{pipeline=\"acme-history\",sink=\"recent\"} 3"),
                "{m}"
            );
            assert!(
                m.contains("tidemark_memory_bytes{pipeline=\"globex-history\",sink=\"recent\"}"),
                "{m}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "held {held} of {points}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut count = |token: &str| -> String {
        server.token = Some(token.into());
        let (status, body) = server
            .request("GET", "/api/v1/query?query=count(up)&time=1700000001", None)
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap_or("none")
            .to_owned()
    };
    assert_eq!(count("acme-token-0123456789"), "3");
    assert_eq!(count("globex-token-0123456789"), "5");
    assert_eq!(count("admin-token-0123456789"), "8");
}

/// Every query of the provisioned Grafana dashboard (`deploy/grafana/`)
/// answers: the output panels and the metric variable from Tidemark's
/// query API, the engine panels from a real Prometheus scraping
/// Tidemark's `/metrics` as `deploy/grafana/prometheus.yml` says (with a
/// token), and every `tidemark_*` metric they name is one `/metrics` has.
#[test]
fn the_grafana_dashboard_queries_answer() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("dashboards/tidemark.json")).unwrap(),
    )
    .unwrap();
    let sources =
        std::fs::read_to_string(root.join("provisioning/datasources/tidemark.yaml")).unwrap();
    assert!(sources.contains("url: http://tidemark:8080") && sources.contains("uid: tidemark\n"));
    assert!(
        sources.contains("url: http://prometheus:9090")
            && sources.contains("uid: tidemark-engine\n")
    );

    let dir = temp_dir("query-grafana");
    let token = "grafana-token-0123456789";
    let server = Server::start_with_token(&dir, token);
    let input = dir.join("input.jsonl");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let text: String = (0..20)
        .flat_map(|i| {
            ["api", "web"].map(|job| {
                format!(
                    "{{\"name\":\"requests\",\"labels\":{{\"job\":\"{job}\"}},\"timestamp\":{},\"value\":{i}}}\n",
                    now - 600_000 + i * 15_000
                )
            })
        })
        .collect();
    std::fs::write(&input, text).unwrap();
    let (status, body) = server
        .request("POST", "/api/v1/pipelines", Some(&pipeline(&input)))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    wait_for_points(&server, 40);

    // Prometheus scrapes the server as the provisioned config does.
    std::fs::write(dir.join("token"), token).unwrap();
    let scrape = std::fs::read_to_string(root.join("prometheus.yml"))
        .unwrap()
        .replace(
            "/run/secrets/tokens",
            &dir.join("token").display().to_string(),
        )
        .replace("tidemark:8080", server.url.trim_start_matches("http://"))
        .replace("scrape_interval: 15s", "scrape_interval: 1s");
    let prom = Prometheus::start(&dir.join("prometheus"), &scrape);
    let start = Instant::now();
    loop {
        let (_, v) = get_json(&format!(
            "{}/api/v1/query?query=tidemark_samples_in_total",
            prom.url
        ));
        if v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "Prometheus did not scrape Tidemark: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let (_, metrics) = server.request("GET", "/metrics", None).unwrap();
    let fill = |expr: &str| {
        expr.replace("$__rate_interval", "1m")
            .replace("$pipeline", ".*")
            .replace("{$filter}", "")
            .replace("$metric", "requests")
    };
    let bearer = |url: &str| -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .get(url)
            .header("authorization", format!("Bearer {token}"))
            .call()
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap(),
        )
    };
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = fill(target["expr"].as_str().unwrap());
            for name in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if name.starts_with("tidemark_") {
                    assert!(
                        metrics.contains(&format!("# TYPE {name} ")),
                        "{name} is not in /metrics"
                    );
                }
            }
            let (status, answer) = match panel["datasource"]["uid"].as_str().unwrap() {
                "tidemark" => bearer(&format!(
                    "{}/api/v1/query?query={}",
                    server.url,
                    encode(&expr)
                )),
                "tidemark-engine" => get_json(&format!(
                    "{}/api/v1/query?query={}",
                    prom.url,
                    encode(&expr)
                )),
                other => panic!("unknown data source {other}"),
            };
            assert_eq!(
                (status, &answer["status"]),
                (200, &Value::from("success")),
                "{expr}: {answer}"
            );
            asked += 1;
        }
    }
    assert!(asked >= 15, "{asked} queries");
    // The variables: output metric names from Tidemark, pipelines from
    // Prometheus.
    let (_, names) = bearer(&format!("{}/api/v1/label/__name__/values", server.url));
    assert_eq!(names["data"], serde_json::json!(["requests"]));
    let (_, pipelines) = get_json(&format!(
        "{}/api/v1/label/pipeline/values?match[]=tidemark_samples_in_total",
        prom.url
    ));
    assert_eq!(pipelines["data"], serde_json::json!(["history"]));
}
