//! The live dashboard in headless Chromium (Debian's package, driven over
//! WebDriver): the page loads from `tidemark serve` and `tidemark run`,
//! subscribes over `/ws`, and draws the points that arrive.

use tidemark_testkit as common;
use tidemark_testkit::browser;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use browser::Browser;
use common::server::Server;
use tidemark_server::ingest::proto::ingest_service_client::IngestServiceClient;
use tidemark_server::ingest::proto::{Label, Point, Series, WriteRequest};

const BASE: i64 = 1_795_564_800_000;

/// gRPC samples straight into a `websocket` sink.
const PIPELINE: &str = "name: live\nsources:\n  in: {type: grpc, idle_timeout: 100ms}\n\
                        sinks:\n  screen: {type: websocket, inputs: [in]}\n";
const WAIT: Duration = Duration::from_secs(30);

fn value(host: usize, i: i64) -> f64 {
    i as f64 * 10.0 + host as f64 + 0.5
}

/// Points `from..to` (one a second) of `cpu{host="h<k>"}` for three hosts.
fn request(from: i64, to: i64) -> WriteRequest {
    WriteRequest {
        series: (0..3)
            .map(|h| Series {
                name: "cpu".into(),
                labels: vec![Label {
                    name: "host".into(),
                    value: format!("h{h}"),
                }],
                points: (from..to)
                    .map(|i| Point {
                        timestamp_ms: BASE + i * 1000,
                        value: value(h, i),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// What the page holds: each series' key and its (time, value) points.
async fn held(browser: &Browser) -> Value {
    browser
        .eval(
            "[...tidemark.view.series.values()].sort((a, b) => a.key.localeCompare(b.key))\
             .map(s => [s.key, s.points.map(p => [p[0], p[1]])])",
        )
        .await
}

fn expected(hosts: &[usize], points: &[i64]) -> Value {
    Value::Array(
        hosts
            .iter()
            .map(|&h| {
                json!([
                    format!("cpu{{host=\"h{h}\"}}"),
                    points
                        .iter()
                        .map(|&i| json!([BASE + i * 1000, value(h, i)]))
                        .collect::<Vec<_>>()
                ])
            })
            .collect(),
    )
}

/// Pixels of the chart's canvas close to the first line's colour
/// (#1f6feb): the lines were drawn, not just the axes.
const LINE_PIXELS: &str = "(() => { const c = document.querySelector('#chart canvas'); \
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; \
    for (let i = 0; i < d.length; i += 4) { if (d[i+3] > 200 && Math.abs(d[i]-31) < 40 \
    && Math.abs(d[i+1]-111) < 40 && Math.abs(d[i+2]-235) < 40) n++; } return n; })()";

#[test]
fn the_dashboard_on_serve_draws_the_snapshot_and_then_every_new_value() {
    let server = Server::start(&[], 0);
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(PIPELINE)).0,
        201
    );
    let grpc = format!("http://127.0.0.1:{}", server.grpc);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = IngestServiceClient::connect(grpc).await.unwrap();
        client.write(request(0, 5)).await.unwrap();

        let browser = Browser::start().await;
        browser
            .client
            .goto(&format!("{}/", server.url))
            .await
            .unwrap();
        // The page finds the only websocket output by itself.
        browser
            .wait_for(
                "document.getElementById('connection').textContent === 'live' \
                 && tidemark.drawnPoints() === 3",
                WAIT,
                "the snapshot drawn",
            )
            .await;
        assert_eq!(held(&browser).await, expected(&[0, 1, 2], &[4]));
        assert_eq!(
            browser
                .eval("document.getElementById('output').value")
                .await,
            "live/screen"
        );

        // New values arrive over the socket and are drawn.
        client.write(request(5, 20)).await.unwrap();
        browser
            .wait_for("tidemark.drawnPoints() === 48", WAIT, "48 points drawn")
            .await;
        let points: Vec<i64> = (4..20).collect();
        assert_eq!(held(&browser).await, expected(&[0, 1, 2], &points));
        let pixels = browser.eval(LINE_PIXELS).await.as_i64().unwrap();
        assert!(
            pixels > 50,
            "only {pixels} pixels of the first line's colour"
        );
        let watermark = browser
            .eval("document.getElementById('watermark').textContent")
            .await;
        assert!(
            watermark.as_str().unwrap().starts_with("2026-11-25 00:00:"),
            "watermark shown: {watermark}"
        );
        assert_eq!(
            browser
                .eval("document.getElementById('series-count').textContent")
                .await,
            "3"
        );

        // A selector typed into the form: only that series, from its
        // latest value on.
        browser
            .eval(
                "(() => { const m = document.getElementById('match'); m.value = '{host=\"h1\"}'; \
                   document.getElementById('controls').requestSubmit(); return true; })()",
            )
            .await;
        browser
            .wait_for(
                "tidemark.view.series.size === 1 && tidemark.drawnPoints() === 1",
                WAIT,
                "the filtered snapshot",
            )
            .await;
        client.write(request(20, 25)).await.unwrap();
        browser
            .wait_for("tidemark.drawnPoints() === 6", WAIT, "6 filtered points")
            .await;
        let points: Vec<i64> = (19..25).collect();
        assert_eq!(held(&browser).await, expected(&[1], &points));
        // The link names what is shown, so it can be shared.
        let url = browser.client.current_url().await.unwrap();
        assert!(
            url.as_str().contains("match=%7Bhost%3D%22h1%22%7D"),
            "{url}"
        );
        browser.close().await;
    });
    assert!(server.stop().success());
}

#[test]
fn the_dashboard_on_run_updates_as_windows_close() {
    let dir = common::temp_dir("dashboard-run");
    let file = dir.join("live.yaml");
    std::fs::write(
        &file,
        "name: hosts\n\
         sources:\n  gen: {type: generator, series: 20, interval: 100ms, rate: 200, seed: 7}\n\
         transforms:\n  per_second:\n    type: window\n    inputs: [gen]\n    \
         window: {tumbling: 1s}\n    by: [region]\n    aggregates: [avg, p99]\n\
         sinks:\n  live: {type: websocket, inputs: [per_second]}\n",
    )
    .unwrap();
    let (mut child, url) = run_with_dashboard(&file);
    // The run made a token for its dashboard: its address carries it, and
    // the live routes refuse a request without it.
    let token = url
        .trim()
        .split("?token=")
        .nth(1)
        .expect("a token in the address");
    assert_eq!(token.len(), 64);
    let base = url.trim().split("/?").next().unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let live = format!("{base}/api/v1/live");
    assert_eq!(agent.get(&live).call().unwrap().status().as_u16(), 401);
    let with = format!("{live}?token={token}");
    assert_eq!(agent.get(&with).call().unwrap().status().as_u16(), 200);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let browser = Browser::start().await;
        browser.client.goto(url.trim()).await.unwrap();
        browser
            .wait_for("tidemark.drawnPoints() >= 2", WAIT, "window results drawn")
            .await;
        let first = browser.eval("tidemark.drawnPoints()").await.as_i64().unwrap();
        // One second later, more windows have closed and been drawn.
        browser
            .wait_for(
                &format!("tidemark.drawnPoints() > {first}"),
                WAIT,
                "more windows drawn",
            )
            .await;
        let names = browser
            .eval("[...tidemark.view.series.values()].every(s => s.name.startsWith('cpu') || s.name.includes(':1s'))")
            .await;
        assert_eq!(names, Value::Bool(true));
        // A quantile is charted, so the note on DDSketch's rounding shows.
        browser
            .wait_for(
                "!document.getElementById('quantile-note').hidden",
                WAIT,
                "the note on quantiles",
            )
            .await;
        browser.close().await;
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    assert!(child.0.wait().unwrap().success());
}

/// Starts `tidemark run` on `file` with its dashboard on a free port; the
/// process and the dashboard's address (its log is copied to the test's).
fn run_with_dashboard(file: &std::path::Path) -> (Running, String) {
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["run", file.to_str().unwrap(), "--progress", "off"])
            .args(["--http", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(child.0.stderr.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .inspect(|l| eprintln!("{l}"))
        .find_map(|l| l.split("Dashboard: ").nth(1).map(str::to_owned))
        .expect("tidemark run did not report its dashboard");
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| eprintln!("{l}")));
    (child, url)
}

/// A `tidemark run` that a failing test does not leave running.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_dashboard_asks_for_a_token_when_the_server_has_tokens() {
    let server = Server::start_with_token(&common::temp_dir("dashboard-tokens"), "s3cret");
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(PIPELINE)).0,
        201
    );
    let grpc = format!("http://127.0.0.1:{}", server.grpc);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = IngestServiceClient::connect(grpc).await.unwrap();
        let mut write = tonic::Request::new(request(0, 3));
        write
            .metadata_mut()
            .insert("authorization", "Bearer s3cret".parse().unwrap());
        client.write(write).await.unwrap();

        let browser = Browser::start().await;
        browser
            .client
            .goto(&format!("{}/", server.url))
            .await
            .unwrap();
        // Without a token the page shows the field and says why.
        browser
            .wait_for(
                "!document.getElementById('token-field').hidden \
                 && document.getElementById('message').textContent.includes('token')",
                WAIT,
                "the token prompt",
            )
            .await;
        assert_eq!(browser.eval("tidemark.drawnPoints()").await, 0);
        browser
            .eval(
                "(() => { document.getElementById('token').value = 's3cret'; \
                 document.getElementById('controls').requestSubmit(); return true; })()",
            )
            .await;
        browser
            .wait_for(
                "tidemark.drawnPoints() === 3",
                WAIT,
                "the snapshot after the token",
            )
            .await;
        assert_eq!(held(&browser).await, expected(&[0, 1, 2], &[2]));
        browser.close().await;
    });
    assert!(server.stop().success());
}

/// A scored series: the band the detector expected is shaded and the
/// flagged points ringed (the `score` transform with `explain` and
/// `passthrough` into a `websocket` sink, generator anomalies injected).
#[test]
fn the_dashboard_draws_the_expected_band_and_marks_anomalies() {
    let dir = common::temp_dir("dashboard-score");
    let file = dir.join("scored.yaml");
    std::fs::write(
        &file,
        "name: scored\n\
         sources:\n  gen:\n    type: generator\n    series: 25\n    interval: 1m\n    rate: 500\n    seed: 3\n    \
         anomalies: {probability: 1, every: 100}\n\
         transforms:\n  s:\n    type: score\n    inputs: [gen]\n    match: cpu_usage\n    warmup: 5\n    \
         explain: true\n    passthrough: true\n\
         sinks:\n  live: {type: websocket, inputs: [s]}\n",
    )
    .unwrap();
    let (mut child, url) = run_with_dashboard(&file);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let browser = Browser::start().await;
        browser.client.goto(url.trim()).await.unwrap();
        browser
            .wait_for(
                "Number(document.getElementById('chart').dataset.bands || 0) >= 1",
                WAIT,
                "the expected band",
            )
            .await;
        browser
            .wait_for(
                "Number(document.getElementById('chart').dataset.anomalies || 0) >= 1",
                WAIT,
                "an anomaly ringed",
            )
            .await;
        // The line drawn is the metric itself, not its scores.
        let names = browser
            .eval("[...tidemark.view.series.values()].filter(s => s.charted).every(s => s.name === 'cpu_usage')")
            .await;
        assert_eq!(names, Value::Bool(true));
        browser.close().await;
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    assert!(child.0.wait().unwrap().success());
}

/// Alerts of an `alert` transform are listed above the chart, and the
/// charted series they involve are shaded from the time they became
/// active; deliveries of a `notify` sink are listed, newest first, with
/// their receiver, status, title and outcome.
#[test]
fn the_dashboard_lists_alerts_and_notifications_and_marks_the_series_involved() {
    let server = Server::start(&[], 0);
    let hook = common::http::Recorder::start(|_, _| (200, vec![], String::new()));
    let dir = common::temp_dir("dashboard-alerts");
    let am_yml = dir.join("alertmanager.yml");
    std::fs::write(
        &am_yml,
        format!(
            "route:\n  receiver: oncall\n  group_by: [alertname]\n  group_wait: 5s\nreceivers:\n  - name: oncall\n    webhook_configs: [{{url: '{}/hook'}}]\n",
            hook.url
        ),
    )
    .unwrap();
    let pipeline = format!(
        r#"
name: alerting
sources:
  gen: {{type: generator, series: 50, interval: 1s, start: 2026-01-01T00:00:00Z, rate: 2000, seed: 1}}
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
          annotations: {{summary: '{{{{ $labels.host }}}} is busy'}}
  page: {{type: route, inputs: [rules.alerts], config: '{config}'}}
sinks:
  live: {{type: websocket, inputs: [gen]}}
  rules_out: {{type: blackhole, inputs: [rules]}}
  out: {{type: notify, inputs: [page], config: '{config}', max_age: 'off'}}
"#,
        config = am_yml.display()
    );
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(&pipeline)).0,
        201
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let browser = Browser::start().await;
        browser
            .client
            .goto(&format!("{}/", server.url))
            .await
            .unwrap();
        browser
            .wait_for(
                "!document.getElementById('alerts').hidden \
                 && document.querySelectorAll('#alert-table tbody tr.firing').length === 10",
                WAIT,
                "ten firing alerts listed",
            )
            .await;
        let summary = browser
            .eval("document.querySelector('#alert-table tbody tr.firing').lastChild.textContent")
            .await;
        assert!(
            summary
                .as_str()
                .is_some_and(|s| s.starts_with("host-") && s.ends_with(" is busy")),
            "{summary}"
        );
        browser
            .wait_for(
                "Number(document.getElementById('chart').dataset.alerts || 0) >= 1",
                WAIT,
                "a charted series marked",
            )
            .await;
        browser
            .wait_for(
                "!document.getElementById('notifications').hidden \
                 && document.querySelectorAll('#notification-table tbody tr.sent').length >= 1",
                WAIT,
                "a sent notification listed",
            )
            .await;
        let row = browser
            .eval("Array.from(document.querySelector('#notification-table tbody tr.sent').cells).map(c => c.textContent)")
            .await;
        assert_eq!(row[1], "oncall/webhook[0]", "{row}");
        assert_eq!(row[2], "firing", "{row}");
        assert!(
            row[3].as_str().is_some_and(|t| t.starts_with("[FIRING:10] CpuBusy")),
            "{row}"
        );
        browser.close().await;
    });
    assert!(!hook.received().is_empty());
    assert!(server.stop().success());
}

/// Serves `page` as HTML to every request on a port of its own: a web page
/// of another origin than the server's.
fn serve_page(page: String) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    port
}

/// The attack of issue 23 in a real browser: a page on another origin
/// POSTs a pipeline as `text/plain` (no CORS preflight) and as YAML, and
/// opens a WebSocket to read an output. On a server without tokens
/// (loopback), none of it may work.
#[test]
fn a_page_of_another_origin_can_neither_apply_nor_subscribe() {
    let server = Server::start(&[], 0);
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(PIPELINE)).0,
        201
    );
    let target = server.url.clone();
    let attack = "name: attack\\nsources:\\n  gen: {type: generator, series: 1}\\nsinks:\\n  out: {type: blackhole, inputs: [gen]}\\n";
    let page = format!(
        r#"<!doctype html><title>evil</title><script>
window.results = {{plain: "pending", yaml: "pending", ws: "pending"}};
fetch("{target}/api/v1/pipelines", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: "{attack}"}})
  .then(() => results.plain = "sent", () => results.plain = "failed");
fetch("{target}/api/v1/pipelines", {{method: "POST", headers: {{"Content-Type": "application/yaml"}}, body: "{attack}".replace("attack", "attack2")}})
  .then(r => results.yaml = "status " + r.status, () => results.yaml = "failed");
const ws = new WebSocket("{ws}/ws?pipeline=live");
ws.onopen = () => results.ws = "open";
ws.onmessage = () => results.ws = "message";
ws.onerror = () => {{ if (results.ws === "pending") results.ws = "error"; }};
</script>"#,
        ws = target.replace("http://", "ws://"),
    );
    let port = serve_page(page);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let results = runtime.block_on(async {
        let browser = Browser::start().await;
        browser
            .client
            .goto(&format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap();
        browser
            .wait_for(
                "window.results && results.plain !== 'pending' && results.yaml !== 'pending' && results.ws !== 'pending'",
                WAIT,
                "the page's attempts",
            )
            .await;
        let results = browser.eval("JSON.stringify(window.results)").await;
        browser.close().await;
        results
    });
    let results: Value = serde_json::from_str(results.as_str().unwrap()).unwrap();
    // The opaque POST was sent (the page cannot tell); the preflighted one
    // and the socket failed.
    assert_eq!(results["yaml"], "failed", "{results}");
    assert_eq!(results["ws"], "error", "{results}");
    assert_eq!(
        server.pipeline_names(),
        ["live"],
        "the page applied a pipeline"
    );
    let (_, metrics) = server.request("GET", "/metrics", None).unwrap();
    let refused: f64 = metrics
        .lines()
        .find(|l| l.starts_with("tidemark_http_refusals_total") && l.contains("reason=\"origin\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(refused >= 3.0, "origin refusals: {refused}\n{metrics}");
    assert!(server.stop().success());
}

/// A `correlate` transform on `tidemark serve`: its incidents in the
/// server's API and on the dashboard, each drawn with its members, the
/// ties between them and when each fired; another one shown when its row
/// is clicked.
#[test]
fn the_dashboard_shows_incidents_with_members_ties_and_timeline() {
    let server = Server::start(&[], 0);
    // Ten hosts' CPU alerts, tied by region (three regions: incidents of
    // 4, 3 and 3 alerts).
    let out = common::temp_dir("dashboard-incidents").join("incidents.jsonl");
    let pipeline = r#"
name: incidents
sources:
  gen: {type: generator, series: 50, interval: 1s, start: 2026-01-01T00:00:00Z, rate: 2000, seed: 1}
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
  inc:
    type: correlate
    inputs: [rules.alerts]
    rules: {labels: {by: [region], weight: 1}}
sinks:
  samples: {type: blackhole, inputs: [rules, inc]}
  incidents: {type: file, inputs: [inc.incidents], path: OUT}
"#
    .replace("OUT", &out.display().to_string());
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&pipeline));
    assert_eq!(status, 201, "{body}");
    let incidents = || {
        server.json("GET", "/api/v1/incidents", None).1["data"]["incidents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    // The alerts of an incident (an alert that fired again is a member
    // once per episode).
    let alerts = |i: &Value| -> std::collections::BTreeSet<String> {
        i["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["labels"].to_string())
            .collect()
    };
    common::server::wait_until("three incidents of all ten alerts", || {
        let all = incidents();
        all.len() == 3 && all.iter().map(|i| alerts(i).len()).sum::<usize>() == 10
    });
    let mut sizes = Vec::new();
    for i in &incidents() {
        assert_eq!(i["pipeline"], "incidents", "{i}");
        assert_eq!(i["transform"], "inc", "{i}");
        assert_ne!(i["status"], "resolved", "{i}");
        let members = i["members"].as_array().unwrap();
        let region = &members[0]["labels"]["region"];
        assert!(
            members.iter().all(|m| &m["labels"]["region"] == region),
            "{i}"
        );
        // Every member but one names the member it is tied to.
        let tied = members.iter().filter(|m| m["tiedTo"].is_u64()).count();
        assert!(tied + 1 >= members.len(), "{i}");
        sizes.push(alerts(i).len());
    }
    sizes.sort();
    assert_eq!(sizes, [3, 3, 4]);
    // What the drawing of incident `id` must hold now: a node per alert (no
    // topology), an edge per distinct tie between two of them, a bar and a
    // line per member.
    let drawn = |id: &str| {
        let all = incidents();
        let i = all.iter().find(|i| i["id"] == id).unwrap();
        let members = i["members"].as_array().unwrap();
        let node = |k: usize| members[k]["labels"].to_string();
        let mut edges = std::collections::BTreeSet::new();
        for (k, m) in members.iter().enumerate() {
            if let Some(t) = m["tiedTo"].as_u64() {
                let (a, b) = (node(k), node(t as usize));
                if a != b {
                    edges.insert(if a < b { (a, b) } else { (b, a) });
                }
            }
        }
        json!({
            "title": true,
            "summary": i["summary"],
            "nodes": alerts(i).len(),
            "edges": edges.len(),
            "bars": members.len(),
            "lines": members.len(),
            // Without topology the probable root is an alert, outlined.
            "root": 1,
        })
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let browser = Browser::start().await;
        browser
            .client
            .goto(&format!("{}/", server.url))
            .await
            .unwrap();
        browser
            .wait_for(
                "!document.getElementById('incidents').hidden \
                 && document.querySelectorAll('#incident-table tbody tr.open').length === 3 \
                 && !document.getElementById('incident-detail').hidden",
                WAIT,
                "three open incidents listed, one drawn",
            )
            .await;
        for row in [0, 2] {
            let id = browser
                .eval(&format!(
                    "(() => {{ const tr = document.querySelectorAll('#incident-table tbody tr')[{row}]; \
                     tr.click(); return tr.dataset.id; }})()"
                ))
                .await;
            let id = id.as_str().unwrap().to_owned();
            // The page redraws every 2 s and an alert may fire again
            // meanwhile: compare until the two agree.
            let page = format!(
                "({{title: document.getElementById('incident-title').textContent.includes('{id}'), \
                  summary: document.getElementById('incident-summary').textContent, \
                  nodes: document.querySelectorAll('#incident-graph circle').length, \
                  edges: document.querySelectorAll('#incident-graph line').length, \
                  bars: document.querySelectorAll('#incident-timeline rect').length, \
                  lines: document.querySelectorAll('#incident-members li').length, \
                  root: document.querySelectorAll('#incident-graph circle.root').length}})"
            );
            let started = std::time::Instant::now();
            loop {
                let (shown, expected) = (browser.eval(&page).await, drawn(&id));
                if shown == expected {
                    break;
                }
                assert!(
                    started.elapsed() < WAIT,
                    "incident {id} drawn as {shown}, expected {expected}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        browser.close().await;
    });
    assert!(server.stop().success());
}
