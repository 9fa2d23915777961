//! `tidemark serve` end to end: the control API over HTTP, gRPC and the CLI,
//! two pipelines at once, replace and delete, located errors, metrics
//! scraped by the real Prometheus, health, tokens, TLS, limits, the
//! configuration file, SIGTERM, and a two-process cluster where a pipeline
//! applied to process 1 runs on both.

use tidemark_testkit as common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::server::{Server, free_port, pipeline, wait_until, which};
use common::temp_dir;

#[test]
fn apply_list_get_replace_delete_over_http() {
    let dir = temp_dir("server-http");
    let server = Server::start(&["--workers", "2"], 0);
    let (a, b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));

    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&pipeline("a", 5000, &a)));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "a");
    assert_eq!(body["state"], "running");
    // JSON is YAML too.
    let json_body =
        r#"{"name": "b", "sources": {"gen": {"type": "generator", "series": 10, "rate": 100}},
        "sinks": {"out": {"type": "file", "inputs": ["gen"], "path": "B"}}}"#
            .replace("B", &b.display().to_string());
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&json_body));
    assert_eq!(status, 201, "{body}");

    // Both run side by side.
    wait_until("both pipelines to write", || {
        std::fs::metadata(&a).is_ok_and(|m| m.len() > 0)
            && std::fs::metadata(&b).is_ok_and(|m| m.len() > 0)
    });
    let (status, list) = server.json("GET", "/api/v1/pipelines", None);
    assert_eq!(status, 200);
    let names: Vec<&str> = list["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a", "b"]);
    assert!(list["pipelines"][0]["samples_in"].as_u64().unwrap() > 0);

    let (status, one) = server.json("GET", "/api/v1/pipelines/a", None);
    assert_eq!(status, 200);
    assert!(one["yaml"].as_str().unwrap().contains("name: a"));
    assert!(
        one["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "w" && c["role"] == "transform")
    );

    // Replacing answers 200 and restarts the pipeline with the new definition.
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&pipeline("a", 2000, &a)));
    assert_eq!(status, 200, "{body}");
    let (_, one) = server.json("GET", "/api/v1/pipelines/a", None);
    assert!(one["yaml"].as_str().unwrap().contains("rate: 2000"));

    // An invalid pipeline: 400 with every error, located.
    let bad = pipeline("c", 10, &a)
        .replace("[count, avg]", "[count, p101]")
        .replace("type: generator", "type: generator\n    colour: red");
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&bad));
    assert_eq!(status, 400);
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{body}");
    assert_eq!(errors[0]["line"], 5);
    assert_eq!(errors[0]["component"]["kind"], "source");
    assert!(errors[1]["message"].as_str().unwrap().contains("p101"));
    assert_eq!(server.json("GET", "/api/v1/pipelines/c", None).0, 404);

    // Metrics and health.
    let (status, metrics) = server.request("GET", "/metrics", None).unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("tidemark_samples_in_total{pipeline=\"a\"}"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "tidemark_component_received_total{pipeline=\"b\",component=\"out\",role=\"sink\"}"
    ));
    assert_eq!(server.request("GET", "/healthz", None).unwrap().0, 200);

    // Delete stops one and leaves the other.
    assert_eq!(
        server
            .request("DELETE", "/api/v1/pipelines/b", None)
            .unwrap()
            .0,
        204
    );
    assert_eq!(server.json("GET", "/api/v1/pipelines/b", None).0, 404);
    assert_eq!(
        server
            .request("DELETE", "/api/v1/pipelines/b", None)
            .unwrap()
            .0,
        404
    );
    let (_, list) = server.json("GET", "/api/v1/pipelines", None);
    assert_eq!(list["pipelines"].as_array().unwrap().len(), 1);

    // SIGTERM drains and exits 0; the running window is flushed.
    let before = std::fs::read_to_string(&a)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(server.stop().success());
    let after = std::fs::read_to_string(&a).unwrap().lines().count();
    assert!(after >= before, "{before} -> {after}");
}

#[test]
fn concurrent_applies_of_one_name_all_answer_and_the_last_runs_on_every_worker() {
    let dir = temp_dir("server-concurrent-applies");
    let server = Server::start(&["--workers", "2"], 0);
    // Ten versions of one pipeline, each writing its own file, applied at
    // once: every request gets an answer, and the one the server sequenced
    // last runs on both workers (all 40 series, which the generator splits
    // between them).
    let version = |v: usize| {
        format!(
            "name: p\nsources:\n  gen: {{type: generator, series: 40, interval: 1s, rate: 400, seed: {v}}}\n\
             sinks:\n  out: {{type: file, inputs: [gen], path: {}}}\n",
            dir.join(format!("{v}.jsonl")).display()
        )
    };
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..10)
            .map(|v| {
                let (server, yaml) = (&server, version(v));
                s.spawn(move || {
                    server
                        .request("POST", "/api/v1/pipelines", Some(&yaml))
                        .unwrap()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (status, body) in &answers {
        assert!(*status == 200 || *status == 201, "{status} {body}");
    }
    let (_, p) = server.json("GET", "/api/v1/pipelines/p", None);
    assert_eq!(p["state"], "running", "{p}");
    let yaml = p["yaml"].as_str().unwrap();
    let last = (0..10).find(|v| yaml == version(*v)).unwrap();
    let output = dir.join(format!("{last}.jsonl"));
    wait_until("the last version to write all of its series", || {
        let text = std::fs::read_to_string(&output).unwrap_or_default();
        let series: std::collections::BTreeSet<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| format!("{}{}", v["name"], v["labels"]))
            .collect();
        series.len() == 40
    });
    let (_, list) = server.json("GET", "/api/v1/pipelines", None);
    assert_eq!(list["pipelines"].as_array().unwrap().len(), 1, "{list}");
    assert!(server.stop().success());
}

/// A FIFO named `fifo` in `dir`.
fn mkfifo(dir: &std::path::Path) -> std::path::PathBuf {
    let fifo = dir.join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo {}", fifo.display());
    fifo
}

#[test]
fn a_file_sink_on_a_fifo_nobody_reads_blocks_nothing() {
    let dir = temp_dir("server-fifo");
    let fifo = mkfifo(&dir);
    let server = Server::start(&[], 0);
    let reads_fifo = format!(
        "name: f\nsources:\n  gen: {{type: generator, series: 3, interval: 100ms, rate: 30}}\n\
         sinks:\n  out: {{type: file, inputs: [gen], path: {}}}\n",
        fifo.display()
    );
    // Applied at once, though no process reads the FIFO: opening it
    // blocks nothing.
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&reads_fifo));
    assert_eq!(status, 201, "{body}");
    // Another pipeline on the same worker runs.
    let other = dir.join("other.jsonl");
    let (status, body) = server.json(
        "POST",
        "/api/v1/pipelines",
        Some(&pipeline("other", 1000, &other)),
    );
    assert_eq!(status, 201, "{body}");
    wait_until("the other pipeline to write", || {
        std::fs::metadata(&other).is_ok_and(|m| m.len() > 0)
    });
    // The sink says why it waits, and writes once a reader comes.
    let (_, f) = server.json("GET", "/api/v1/pipelines/f", None);
    let sink = f["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "out")
        .unwrap()
        .clone();
    assert!(
        sink["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("no process reads"),
        "{f}"
    );
    // The reader reads until the sink closes the FIFO (a full pipe would
    // hold the sink, as a slow `| jq` does).
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let file = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        for line in file.lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let sample: Value = serde_json::from_str(&line).unwrap();
    assert!(sample["value"].is_number(), "{line}");
    assert_eq!(
        server
            .request("DELETE", "/api/v1/pipelines/f", None)
            .unwrap()
            .0,
        204
    );
    reader.join().unwrap();
    assert_eq!(server.pipeline_names(), ["other"]);
    assert!(server.stop().success());
}

/// A sink blocked in a write (a FIFO whose reader stopped reading) stalls
/// its worker: `/readyz` says so, and recovers once the reader reads.
#[test]
fn readyz_notices_a_stalled_worker() {
    let dir = temp_dir("server-stalled");
    let fifo = mkfifo(&dir);
    // A reader that opens the FIFO and reads nothing until told to.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let path = fifo.clone();
    let reader = std::thread::spawn(move || {
        let mut file = std::fs::File::open(&path).unwrap();
        wait.recv().unwrap();
        std::io::copy(&mut file, &mut std::io::sink()).unwrap();
    });
    let server = Server::start(&[], 0);
    assert_eq!(server.request("GET", "/readyz", None).unwrap().0, 200);
    let yaml = format!(
        "name: f\nsources:\n  gen: {{type: generator, series: 100, interval: 10ms, rate: 100000}}\n\
         sinks:\n  out: {{type: file, inputs: [gen], path: {}}}\n",
        fifo.display()
    );
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&yaml));
    assert_eq!(status, 201, "{body}");
    let start = Instant::now();
    let text = loop {
        let (status, text) = server.request("GET", "/readyz", None).unwrap();
        if status == 503 {
            break text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "/readyz stayed {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(text.contains("worker 0 for"), "{text}");
    go.send(()).unwrap();
    wait_until("/readyz to recover", || {
        server.request("GET", "/readyz", None).unwrap().0 == 200
    });
    assert_eq!(
        server
            .request("DELETE", "/api/v1/pipelines/f", None)
            .unwrap()
            .0,
        204
    );
    assert!(server.stop().success());
    reader.join().unwrap();
}

/// A thousand idle sockets must not exhaust the server's descriptors: it
/// raises its soft limit on open files to the hard limit at start.
#[test]
fn the_server_raises_its_open_files_limit() {
    let mut child = Command::new("prlimit")
        .arg("--nofile=256:4096")
        .arg(common::tidemark_bin())
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux) runs the server with a low limit");
    let (http, _) = common::server::listening(child.stderr.take().unwrap());
    assert!(http.is_some(), "the server did not start");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, vec!["4096", "4096"], "{line}");
    let _ = child.kill();
    let _ = child.wait();
}

/// A client that never finishes its request head is disconnected after
/// `limits.header_timeout`; past `limits.max_connections`, a connection
/// waits until another closes (idle sockets cannot take every descriptor).
#[test]
fn slow_clients_are_cut_off_and_connections_are_capped() {
    use std::io::{Read, Write};
    let dir = temp_dir("server-connections");
    let config = dir.join("tidemark.yaml");
    std::fs::write(
        &config,
        "limits:\n  max_connections: 5\n  header_timeout: 1s\n",
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()], 0);
    let http = server.url.trim_start_matches("http://").to_owned();

    // A slowloris: half a request head, then nothing.
    let mut slow = std::net::TcpStream::connect(&http).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 256];
    let n = slow.read(&mut buf).unwrap_or(0);
    let waited = start.elapsed();
    assert!(
        n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "cut off after {waited:?}"
    );
    drop(slow);
    std::thread::sleep(Duration::from_millis(200));

    // Five idle connections to the gRPC listener use up the budget
    // (HTTP/2 keeps a silent connection open)...
    let idle: Vec<std::net::TcpStream> = (0..5)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", server.grpc)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // ...so a sixth waits, unanswered...
    let mut waiting = std::net::TcpStream::connect(&http).unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    assert!(
        waiting.read(&mut buf).is_err(),
        "answered past the connection limit"
    );
    // ...until one closes.
    drop(idle);
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = waiting.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(server.stop().success());
}

#[test]
fn the_cli_talks_to_a_server() {
    let dir = temp_dir("server-cli");
    let port = free_port();
    let server = Server::start(&[], port);
    let url = format!("http://127.0.0.1:{port}");
    let file = dir.join("p.yaml");
    std::fs::write(&file, pipeline("cli", 1000, &dir.join("out.jsonl"))).unwrap();
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .arg("pipeline")
            .args(args)
            .args(["--server", &url])
            .output()
            .unwrap()
    };
    let out = cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("pipeline cli created"));
    let out = cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pipeline cli replaced"));
    let out = cli(&["list"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("cli ") && l.contains("running"))
    );
    let out = cli(&["get", "cli"]);
    assert!(out.status.success());
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["name"], "cli");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        pipeline("cli", 1000, &dir.join("out.jsonl"))
            .replace("tumbling: 10s", "tumbling: 10 parsecs"),
    )
    .unwrap();
    let out = cli(&["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:14:", bad.display())) && stderr.contains("invalid duration"),
        "{stderr}"
    );
    assert!(cli(&["delete", "cli"]).status.success());
    assert_eq!(cli(&["get", "cli"]).status.code(), Some(1));
    assert!(server.stop().success());
}

#[test]
fn a_pipeline_applied_to_process_1_runs_on_both_processes() {
    let dir = temp_dir("server-cluster");
    let hosts = dir.join("hosts");
    let (p0, p1) = (free_port(), free_port());
    common::write_host_file(&hosts);
    let h = hosts.to_str().unwrap();
    let spawn = |process: &str, port: u16| {
        Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args([
                "serve",
                "--http",
                &format!("127.0.0.1:{port}"),
                "--workers",
                "2",
                "--hostfile",
                h,
                "--process",
                process,
            ])
            .args(["--grpc", "127.0.0.1:0"])
            .args(common::server::open_access())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (c0, c1) = (spawn("0", p0), spawn("1", p1));
    let s0 = Server {
        child: c0,
        url: format!("http://127.0.0.1:{p0}"),
        grpc: 0,
        token: None,
    };
    let s1 = Server {
        child: c1,
        url: format!("http://127.0.0.1:{p1}"),
        grpc: 0,
        token: None,
    };
    s0.wait_ready();
    s1.wait_ready();
    let output = dir.join("out.jsonl");
    let finite = pipeline("shared", 0, &output).replace("    rate: 0\n", "    samples: 120\n");
    let (status, body) = s1.json("POST", "/api/v1/pipelines", Some(&finite));
    assert_eq!(status, 201, "{body}");
    // Both processes run it: each generates its workers' share of the series.
    for s in [&s0, &s1] {
        wait_until("the pipeline to finish on both processes", || {
            let (_, p) = s.json("GET", "/api/v1/pipelines/shared", None);
            p["state"] == "finished"
        });
        let (_, p) = s.json("GET", "/api/v1/pipelines/shared", None);
        assert!(p["samples_in"].as_u64().unwrap() > 0, "{p}");
    }
    let total: u64 = [&s0, &s1]
        .iter()
        .map(|s| {
            s.json("GET", "/api/v1/pipelines/shared", None).1["samples_in"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 50 * 120);
    // The file sink (on worker 0, in process 0) saw every window: samples at
    // 0 s..119 s fall in 13 windows ((-10 s, 0 s] to (110 s, 120 s]), each
    // with 5 metrics x 3 regions x 2 aggregates.
    let rows = std::fs::read_to_string(&output).unwrap().lines().count();
    assert_eq!(rows, 13 * 5 * 3 * 2);
    // The query API answers on process 0, where memory sinks gather; the
    // others say so rather than answer empty.
    let (status, body) = s1.json("GET", "/api/v1/query?query=up", None);
    assert_eq!(
        (status, &body["errorType"]),
        (503, &Value::from("unavailable")),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("process 0"),
        "{body}"
    );
    assert_eq!(s0.json("GET", "/api/v1/query?query=up", None).0, 200);
    // A timely cluster stops as a whole: SIGTERM to one process drains and
    // stops both.
    assert!(s0.stop().success());
    assert!(s1.wait_exit().success());
}

#[test]
fn requests_without_a_valid_token_are_refused() {
    let dir = temp_dir("server-auth");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "# operators\ns3cret-one\n\ns3cret-two\n").unwrap();
    let port = free_port();
    let server = Server::start(
        &[
            "--token-file",
            tokens.to_str().unwrap(),
            "--protect-metrics",
        ],
        port,
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}");
    let get = |path: &str, token: Option<&str>| {
        let mut r = agent.get(&format!("{url}{path}"));
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.call().unwrap().status().as_u16()
    };
    assert_eq!(get("/api/v1/pipelines", None), 401);
    assert_eq!(get("/api/v1/pipelines", Some("wrong")), 401);
    assert_eq!(get("/api/v1/pipelines", Some("s3cret-tw")), 401);
    assert_eq!(get("/api/v1/pipelines", Some("s3cret-one")), 200);
    assert_eq!(get("/api/v1/pipelines", Some("s3cret-two")), 200);
    assert_eq!(get("/metrics", None), 401);
    assert_eq!(get("/metrics", Some("s3cret-two")), 200);
    assert_eq!(get("/healthz", None), 200, "health checks stay open");
    // A refused apply installs nothing.
    let refused = agent
        .post(&format!("{url}/api/v1/pipelines"))
        .send(pipeline("x", 10, &dir.join("o.jsonl")))
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    // The CLI sends TIDEMARK_TOKEN.
    let cli = |token: &str| {
        Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["pipeline", "list", "--server", &url])
            .env("TIDEMARK_TOKEN", token)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(!cli("nope"));
    assert!(cli("s3cret-one"));
    assert!(server.stop().success());
}

#[test]
fn prometheus_scrapes_metrics() {
    let Some(prometheus) = which("prometheus") else {
        panic!(
            "the prometheus binary is missing: run ./deploy/test.sh, which installs Debian's prometheus package"
        );
    };
    let dir = temp_dir("server-prometheus");
    let port = free_port();
    let server = Server::start(&[], port);
    let (status, body) = server.json(
        "POST",
        "/api/v1/pipelines",
        Some(&pipeline("scraped", 500, &dir.join("out.jsonl"))),
    );
    assert_eq!(status, 201, "{body}");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tidemark\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let web = free_port();
    let mut child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let query = format!(
        "http://127.0.0.1:{web}/api/v1/query?query=tidemark_samples_in_total%7Bpipeline%3D%22scraped%22%7D"
    );
    let start = Instant::now();
    let mut seen = None;
    while start.elapsed() < Duration::from_secs(40) {
        let text = agent
            .get(&query)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok());
        let v: Value = text
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let value = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(0.0);
        if value > 0.0 {
            seen = Some(v);
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = child.kill();
    let _ = child.wait();
    let v = seen.expect("Prometheus never scraped tidemark_samples_in_total");
    assert_eq!(v["data"]["result"][0]["metric"]["job"], "tidemark");
    assert!(server.stop().success());
}

#[test]
fn a_config_file_with_flag_and_environment_overrides() {
    let dir = temp_dir("server-config");
    let (file_port, flag_port) = (free_port(), free_port());
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "from-file\n").unwrap();
    let pipelines = dir.join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(
        pipelines.join("boot.yaml"),
        pipeline("boot", 100, &dir.join("boot.jsonl")),
    )
    .unwrap();
    let config = dir.join("tidemark.yaml");
    std::fs::write(
        &config,
        format!(
            "http: 127.0.0.1:{file_port}\nworkers: 2\nio_threads: 1\npipelines: {}\ntoken_file: {}\nshutdown_timeout: 20s\n",
            pipelines.display(),
            tokens.display()
        ),
    )
    .unwrap();
    // The flag moves the listener; the file still gives tokens and pipelines.
    let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--http",
            &format!("127.0.0.1:{flag_port}"),
        ])
        .args(["--grpc", "127.0.0.1:0"])
        .env("TIDEMARK_WORKERS", "1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{flag_port}"),
        grpc: 0,
        token: None,
    };
    server.wait_ready();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let list = |token: &str| {
        let mut r = agent
            .get(&format!("{}/api/v1/pipelines", server.url))
            .header("authorization", format!("Bearer {token}"))
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    assert_eq!(list("nope").0, 401);
    wait_until("the boot pipeline", || {
        list("from-file").1.contains("\"boot\"")
    });
    assert!(server.stop().success());

    // A bad configuration file is reported with its position, before starting.
    std::fs::write(&config, "http: 127.0.0.1:1\nworkerz: 2\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!(
        "{}:2:1: unknown field `workerz`",
        config.display()
    )));

    // No thread to serve on is refused, not a server that never answers.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["serve", "--io-threads", "0"])
        .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("serve --io-threads 0 started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--io-threads: at least 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn oversized_requests_are_refused() {
    use std::io::{Read, Write};
    let server = Server::start(&[], 0);
    // A body declared larger than 1 MiB is refused before it is sent (a
    // client that writes it whole may instead find the connection closed
    // under it once the server has answered).
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut tcp = std::net::TcpStream::connect(&address).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "POST /api/v1/pipelines HTTP/1.1\r\nHost: {address}\r\n\
         Content-Type: application/yaml\r\nContent-Length: {}\r\n\r\nname: big\n",
        2 << 20
    )
    .unwrap();
    let mut answer = [0u8; 12];
    tcp.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");
    // A body without a length that runs past the limit is refused too.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut chunks = std::io::Cursor::new(format!("name: big\n# {}\n", "x".repeat(1 << 20)));
    match agent
        .post(&format!("{}/api/v1/pipelines", server.url))
        .header("content-type", "application/yaml")
        .send(ureq::SendBody::from_reader(&mut chunks))
    {
        Ok(r) => assert_eq!(r.status().as_u16(), 413),
        // The server answered and closed before the last chunk was sent.
        Err(ureq::Error::Io(e)) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
        Err(e) => panic!("{e}"),
    }
    assert_eq!(
        server.json("GET", "/api/v1/pipelines", None).1["pipelines"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert!(server.stop().success());
}

#[test]
fn the_grpc_control_service() {
    use tidemark_server::grpc::proto::pipeline_service_client::PipelineServiceClient;
    use tidemark_server::grpc::proto::{ApplyRequest, DeleteRequest, GetRequest, ListRequest};

    let dir = temp_dir("server-grpc");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "grpc-token\n").unwrap();
    let server = Server::start(&["--token-file", tokens.to_str().unwrap()], 0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client =
            PipelineServiceClient::connect(format!("http://127.0.0.1:{}", server.grpc))
                .await
                .unwrap();
        fn authed<T>(mut r: tonic::Request<T>) -> tonic::Request<T> {
            r.metadata_mut()
                .insert("authorization", "Bearer grpc-token".parse().unwrap());
            r
        }
        // No token: refused.
        let err = client.list(ListRequest {}).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);

        let definition = pipeline("g", 1000, &dir.join("g.jsonl"));
        let reply = client
            .apply(authed(tonic::Request::new(ApplyRequest {
                definition: definition.clone(),
            })))
            .await
            .unwrap()
            .into_inner();
        assert!(reply.created);
        assert_eq!(reply.status.unwrap().state, "running");
        let reply = client
            .apply(authed(tonic::Request::new(ApplyRequest { definition })))
            .await
            .unwrap()
            .into_inner();
        assert!(!reply.created, "a second apply replaces");

        let list = client
            .list(authed(tonic::Request::new(ListRequest {})))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.pipelines.len(), 1);
        let one = client
            .get(authed(tonic::Request::new(GetRequest { name: "g".into() })))
            .await
            .unwrap()
            .into_inner();
        assert!(one.definition.contains("name: g"));

        let bad = pipeline("h", 10, &dir.join("h.jsonl"))
            .replace("[count, avg]", "[count, p101]")
            .replace("tumbling: 10s", "tumbling: 10x");
        let err = client
            .apply(authed(tonic::Request::new(ApplyRequest {
                definition: bad,
            })))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(err.message().lines().count(), 2, "{}", err.message());
        assert!(
            err.message().contains("request:14:24:") && err.message().contains("p101"),
            "{}",
            err.message()
        );

        client
            .delete(authed(tonic::Request::new(DeleteRequest {
                name: "g".into(),
            })))
            .await
            .unwrap();
        let err = client
            .get(authed(tonic::Request::new(GetRequest { name: "g".into() })))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    });
    assert!(server.stop().success());
}

#[test]
fn tls_on_both_listeners() {
    use tidemark_server::grpc::proto::ListRequest;
    use tidemark_server::grpc::proto::pipeline_service_client::PipelineServiceClient;

    let dir = temp_dir("server-tls");
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (key.cert.pem(), key.signing_key.serialize_pem());
    let (cert, keyfile) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&keyfile, &key_pem).unwrap();
    let (port, grpc) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "serve",
            "--http",
            &format!("127.0.0.1:{port}"),
            "--grpc",
            &format!("127.0.0.1:{grpc}"),
        ])
        .args([
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            keyfile.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        url: format!("https://localhost:{port}"),
        grpc,
        token: None,
    };
    // The CLI trusts the certificate through TIDEMARK_CA_CERT.
    let cli = |ca: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        c.args(["pipeline", "list", "--server", &server.url]);
        if ca {
            c.env("TIDEMARK_CA_CERT", &cert);
        }
        c.output().unwrap().status.success()
    };
    wait_until("the TLS listener", || cli(true));
    assert!(!cli(false), "an unknown certificate must be refused");
    // Plain HTTP to the TLS port gets no answer.
    let plain: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    assert!(
        plain
            .get(&format!("http://127.0.0.1:{port}/healthz"))
            .call()
            .is_err()
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&cert_pem))
            .domain_name("localhost");
        let channel = tonic::transport::Channel::from_shared(format!("https://localhost:{grpc}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = PipelineServiceClient::new(channel);
        assert!(
            client
                .list(ListRequest {})
                .await
                .unwrap()
                .into_inner()
                .pipelines
                .is_empty()
        );
    });
    assert!(server.stop().success());
}

#[test]
fn oversized_grpc_requests_are_refused() {
    use tidemark_server::grpc::proto::ApplyRequest;
    use tidemark_server::grpc::proto::pipeline_service_client::PipelineServiceClient;
    let server = Server::start(&[], 0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client =
            PipelineServiceClient::connect(format!("http://127.0.0.1:{}", server.grpc))
                .await
                .unwrap();
        let definition = format!("name: big\n# {}\n", "x".repeat(2 << 20));
        let err = client.apply(ApplyRequest { definition }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    });
    assert!(server.stop().success());
}

/// A sink whose writes can never succeed (a Parquet directory below a
/// regular file: `NotADirectory`) fails its pipeline: listed as `failed`
/// with the cause, counted in `/metrics`, while another pipeline on the same
/// workers keeps running; `tidemark run` exits non-zero with the cause.
#[test]
fn a_pipeline_whose_sink_can_never_write_fails_with_its_cause() {
    let dir = temp_dir("server-failed");
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let archive = blocker.join("archive");
    let failing = format!(
        r#"name: doomed
sources:
  gen: {{type: generator, series: 10, rate: 1000}}
sinks:
  out: {{type: parquet, inputs: [gen], path: "{}"}}
"#,
        archive.display()
    );
    let server = Server::start(&["--workers", "2"], 0);
    let healthy = dir.join("healthy.jsonl");
    let (status, body) = server.json(
        "POST",
        "/api/v1/pipelines",
        Some(&pipeline("healthy", 5000, &healthy)),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&failing));
    assert_eq!(status, 201, "{body}");
    wait_until("the pipeline to fail", || {
        server.json("GET", "/api/v1/pipelines/doomed", None).1["state"] == "failed"
    });
    let (_, doomed) = server.json("GET", "/api/v1/pipelines/doomed", None);
    let error = doomed["error"].as_str().unwrap_or_default();
    assert!(error.contains("out: cannot create"), "{doomed}");
    assert!(
        error.contains("configuration error, not retried"),
        "{doomed}"
    );
    let (_, metrics) = server.request("GET", "/metrics", None).unwrap();
    assert!(
        metrics.contains("tidemark_pipelines{state=\"failed\"} 1"),
        "{metrics}"
    );
    // The other pipeline is untouched.
    let before = std::fs::metadata(&healthy).map_or(0, |m| m.len());
    wait_until("the healthy pipeline to keep writing", || {
        std::fs::metadata(&healthy).is_ok_and(|m| m.len() > before)
    });
    let (_, list) = server.json("GET", "/api/v1/pipelines", None);
    assert_eq!(list["pipelines"][1]["state"], "running", "{list}");
    // Applied again after the fix, it runs.
    let fixed = failing.replace(
        &archive.display().to_string(),
        &dir.join("archive").display().to_string(),
    );
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&fixed));
    assert!(status == 200 || status == 201, "{body}");
    wait_until("the fixed pipeline to run", || {
        server.json("GET", "/api/v1/pipelines/doomed", None).1["state"] == "running"
    });
    server.stop();

    let yaml = dir.join("doomed.yaml");
    std::fs::write(&yaml, failing.replace("rate: 1000", "samples: 500")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", "--progress", "off", "--http", "127.0.0.1:0"])
        .arg(&yaml)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("pipeline \"doomed\" failed: out: cannot create"),
        "{log}"
    );
}

/// The CLI sends `TIDEMARK_TOKEN` with every command (apply too), says how
/// to give one when refused, and names the URL it could not reach.
#[test]
fn the_cli_explains_refusals_and_unreachable_servers() {
    let dir = temp_dir("server-cli-token");
    let server = Server::start_with_token(&dir, "s3cret");
    let file = dir.join("p.yaml");
    std::fs::write(&file, pipeline("tok", 1000, &dir.join("out.jsonl"))).unwrap();
    let cli = |url: &str, token: Option<&str>, args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        command
            .arg("pipeline")
            .args(args)
            .args(["--server", url])
            .env_remove("TIDEMARK_TOKEN");
        if let Some(t) = token {
            command.env("TIDEMARK_TOKEN", t);
        }
        command.output().unwrap()
    };
    let apply = ["apply", "-f", file.to_str().unwrap()];
    let out = cli(&server.url, None, &apply);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("401") && stderr.contains("TIDEMARK_TOKEN"),
        "{stderr}"
    );
    let out = cli(&server.url, Some("s3cret"), &apply);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cli(&server.url, Some("s3cret"), &["list"]).status.success());
    drop(server);

    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let out = cli(&nowhere, None, &["list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("cannot reach the server at {nowhere}")),
        "{stderr}"
    );
}

/// A sink whose store is away retries, and says why: the status API
/// shows the retries and the last error, and the pipeline stays `running`.
#[test]
fn a_retrying_sink_shows_its_last_error() {
    let server = Server::start(&[], 0);
    let pipeline = r#"name: away
sources:
  gen: {type: generator, series: 5, rate: 500}
sinks:
  pg:
    type: timescaledb
    inputs: [gen]
    url: "postgresql://postgres@127.0.0.1:1/postgres"
"#;
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(pipeline));
    assert_eq!(status, 201, "{body}");
    let sink = || {
        let (_, p) = server.json("GET", "/api/v1/pipelines/away", None);
        p["components"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "pg").cloned())
            .unwrap_or_default()
    };
    wait_until("the sink to retry", || sink()["retries"].as_u64() > Some(0));
    let pg = sink();
    let error = pg["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("onnect"), "{pg}");
    let (_, p) = server.json("GET", "/api/v1/pipelines/away", None);
    assert_eq!(p["state"], "running", "{p}");
    drop(server);
}

/// Starts the server (as its admin) and waits until it lists `n`
/// pipelines, and a little longer for any that should not be there;
/// returns it with the names, sorted.
fn restart(args: &[&str], n: usize) -> (Server, Vec<String>) {
    let mut server = Server::start(args, 0);
    server.token = Some("admin-token-0123456789".into());
    let start = Instant::now();
    while server.pipeline_names().len() < n && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut names = server.pipeline_names();
    names.sort();
    (server, names)
}

/// With `--data-dir`, applied pipelines come back after a `kill -9`, in
/// the order they were first applied and with their owners; a deleted one
/// does not; a store that does not parse stops the server with its path.
#[test]
fn applied_pipelines_survive_a_restart_with_a_data_dir() {
    let dir = temp_dir("server-data-dir");
    let data = dir.join("data");
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        "admin-token-0123456789 role=admin\nacme-token-0123456789 acme\n",
    )
    .unwrap();
    let args = [
        "--token-file",
        tokens.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let yaml = |name: &str, seed: u32| {
        format!(
            "name: {name}\nsources:\n  gen: {{type: generator, series: 4, interval: 1s, rate: 20, seed: {seed}}}\n\
             sinks:\n  out: {{type: blackhole, inputs: [gen]}}\n"
        )
    };
    let mut server = Server::start(&args, 0);
    server.token = Some("admin-token-0123456789".into());
    for (name, seed) in [("zeta", 1), ("alpha", 2), ("doomed", 3)] {
        let (status, body) = server
            .request("POST", "/api/v1/pipelines", Some(&yaml(name, seed)))
            .unwrap();
        assert_eq!(status, 201, "{body}");
    }
    server.token = Some("acme-token-0123456789".into());
    let (status, body) = server
        .request("POST", "/api/v1/pipelines", Some(&yaml("acme-p", 4)))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    // A replaced pipeline keeps its place with its new definition.
    server.token = Some("admin-token-0123456789".into());
    let (status, body) = server
        .request("POST", "/api/v1/pipelines", Some(&yaml("zeta", 5)))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server
            .request("DELETE", "/api/v1/pipelines/doomed", None)
            .unwrap()
            .0,
        204
    );
    // A silence, and one made and expired: both are kept, as they were.
    let silence = |comment: &str| {
        serde_json::json!({
            "matchers": [{"name": "alertname", "value": "Down", "isRegex": false, "isEqual": true}],
            "startsAt": "2026-01-01T00:00:00Z",
            "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "test",
            "comment": comment,
        })
        .to_string()
    };
    let (_, made) = server.json("POST", "/api/v2/silences", Some(&silence("maintenance")));
    let kept = made["silenceID"].as_str().unwrap().to_owned();
    let (_, made) = server.json("POST", "/api/v2/silences", Some(&silence("mistake")));
    let ended = made["silenceID"].as_str().unwrap().to_owned();
    let path = format!("/api/v2/silence/{ended}");
    assert_eq!(server.request("DELETE", &path, None).unwrap().0, 200);
    server.kill_hard();

    let (mut server, names) = restart(&args, 3);
    assert_eq!(names, ["acme-p", "alpha", "zeta"]);
    let (_, zeta) = server.json("GET", "/api/v1/pipelines/zeta", None);
    assert_eq!(zeta["state"], "running", "{zeta}");
    assert!(zeta["yaml"].as_str().unwrap().contains("seed: 5"), "{zeta}");
    // The tenant still owns its pipeline: it sees it, and only it.
    server.token = Some("acme-token-0123456789".into());
    assert_eq!(server.pipeline_names(), ["acme-p"]);
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("pipelines.json")).unwrap())
            .unwrap();
    let order: Vec<&str> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["zeta", "alpha", "acme-p"]);
    server.token = Some("admin-token-0123456789".into());
    let (_, silences) = server.json("GET", "/api/v2/silences", None);
    let state = |id: &str| {
        silences
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| {
                (
                    s["status"]["state"].as_str().unwrap().to_owned(),
                    s["comment"].clone(),
                )
            })
    };
    assert_eq!(
        state(&kept),
        Some(("active".into(), "maintenance".into())),
        "{silences}"
    );
    assert_eq!(
        state(&ended),
        Some(("expired".into(), "mistake".into())),
        "{silences}"
    );
    // A stored pipeline is checked again against today's quotas: with a
    // smaller memory quota, the one holding more is refused (and kept in the
    // store); the others run.
    let yaml_memory = "name: big\nsources:\n  gen: {type: generator, series: 4, interval: 1s, rate: 20}\nsinks:\n  m: {type: memory, inputs: [gen], max_mb: 512}\n";
    let (status, body) = server
        .request("POST", "/api/v1/pipelines", Some(yaml_memory))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    server.kill_hard();
    let config = dir.join("tight.yaml");
    std::fs::write(&config, "quotas:\n  max_memory_mb: 100\n").unwrap();
    let mut tight_args = args.to_vec();
    tight_args.extend(["--config", config.to_str().unwrap()]);
    let (server, names) = restart(&tight_args, 3);
    assert_eq!(names, ["acme-p", "alpha", "zeta"]);
    let stored = std::fs::read_to_string(data.join("pipelines.json")).unwrap();
    assert!(stored.contains("\"big\""), "{stored}");
    drop(server);

    // A store that does not parse: the server refuses to start, naming it.
    std::fs::write(data.join("pipelines.json"), "[{").unwrap();
    let out = Command::new(common::tidemark_bin())
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pipelines.json does not parse"), "{stderr}");
}
