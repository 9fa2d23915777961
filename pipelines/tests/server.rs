//! `tidemark serve` end to end: the control API over HTTP and the CLI, two
//! pipelines at once, replace and delete, located errors as JSON, metrics,
//! health, SIGTERM, and a two-process cluster where a pipeline applied to
//! process 1 runs on both.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::temp_dir;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    url: String,
    grpc: u16,
}

impl Server {
    fn start(args: &[&str], port: u16) -> Server {
        let grpc = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .arg("serve")
            .args(["--http", &format!("127.0.0.1:{port}")])
            .args(["--grpc", &format!("127.0.0.1:{grpc}")])
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            grpc,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok((200, _)) = self.request("GET", "/readyz", None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server at {} did not become ready", self.url);
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), ureq::Error> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}{path}", self.url);
        let mut response = match (method, body) {
            ("POST", Some(b)) => agent
                .post(&url)
                .header("content-type", "application/yaml")
                .send(b)?,
            ("DELETE", _) => agent.delete(&url).call()?,
            _ => agent.get(&url).call()?,
        };
        let status = response.status().as_u16();
        Ok((status, response.body_mut().read_to_string()?))
    }

    fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (status, text) = self.request(method, path, body).unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn stop(self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.wait_exit()
    }

    fn wait_exit(mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn pipeline(name: &str, rate: u32, output: &Path) -> String {
    format!(
        r#"name: {name}
sources:
  gen:
    type: generator
    series: 50
    interval: 1s
    start: 2026-01-01T00:00:00Z
    rate: {rate}
    seed: 1
transforms:
  w:
    type: window
    inputs: [gen]
    window: {{tumbling: 10s}}
    by: [region]
    aggregates: [count, avg]
sinks:
  out:
    type: file
    inputs: [w]
    path: {}
"#,
        output.display()
    )
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn apply_list_get_replace_delete_over_http() {
    let dir = temp_dir("server-http");
    let server = Server::start(&["--workers", "2"], free_port());
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
    let timely = free_port();
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{timely}\n127.0.0.1:{}\n", timely + 1),
    )
    .unwrap();
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
            .args(["--grpc", &format!("127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (c0, c1) = (spawn("0", p0), spawn("1", p1));
    let s0 = Server {
        child: c0,
        url: format!("http://127.0.0.1:{p0}"),
        grpc: 0,
    };
    let s1 = Server {
        child: c1,
        url: format!("http://127.0.0.1:{p1}"),
        grpc: 0,
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
    let Ok(prometheus) = which("prometheus") else {
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

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
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
            "http: 127.0.0.1:{file_port}\nworkers: 2\npipelines: {}\ntoken_file: {}\nshutdown_timeout: 20s\n",
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
        .args(["--grpc", &format!("127.0.0.1:{}", free_port())])
        .env("TIDEMARK_WORKERS", "1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{flag_port}"),
        grpc: 0,
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
}

#[test]
fn oversized_requests_are_refused() {
    let server = Server::start(&[], free_port());
    let huge = format!("name: big\n# {}\n", "x".repeat(2 << 20));
    let (status, _) = server
        .request("POST", "/api/v1/pipelines", Some(&huge))
        .unwrap();
    assert_eq!(status, 413);
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
    use tidemark_pipelines::server::grpc::proto::pipeline_service_client::PipelineServiceClient;
    use tidemark_pipelines::server::grpc::proto::{
        ApplyRequest, DeleteRequest, GetRequest, ListRequest,
    };

    let dir = temp_dir("server-grpc");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "grpc-token\n").unwrap();
    let server = Server::start(&["--token-file", tokens.to_str().unwrap()], free_port());
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
    use tidemark_pipelines::server::grpc::proto::ListRequest;
    use tidemark_pipelines::server::grpc::proto::pipeline_service_client::PipelineServiceClient;

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
    use tidemark_pipelines::server::grpc::proto::ApplyRequest;
    use tidemark_pipelines::server::grpc::proto::pipeline_service_client::PipelineServiceClient;
    let server = Server::start(&[], free_port());
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

#[test]
fn the_grpc_ingest_service_feeds_grpc_sources() {
    use tidemark_pipelines::server::ingest::proto::ingest_service_client::IngestServiceClient;
    use tidemark_pipelines::server::ingest::proto::{Label, Point, Series, WriteRequest};

    let dir = temp_dir("server-ingest");
    let server = Server::start(&["--workers", "2"], free_port());
    let output = dir.join("out.jsonl");
    let series = |name: &str, host: &str, points: &[(i64, f64)]| Series {
        name: name.into(),
        labels: vec![Label {
            name: "host".into(),
            value: host.into(),
        }],
        points: points
            .iter()
            .map(|&(timestamp_ms, value)| Point {
                timestamp_ms,
                value,
            })
            .collect(),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut client = runtime
        .block_on(IngestServiceClient::connect(format!(
            "http://127.0.0.1:{}",
            server.grpc
        )))
        .unwrap();

    // Nobody reads gRPC input yet: the sender is told, nothing is acknowledged.
    let err = runtime
        .block_on(client.write(WriteRequest {
            series: vec![series("cpu", "a", &[(1_000, 1.0)])],
        }))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");

    let pipeline = format!(
        r#"name: pushed
sources:
  in:
    type: grpc
    match: cpu
    max_out_of_orderness: 5s
    idle_timeout: 200ms
transforms:
  w:
    type: window
    inputs: [in]
    window: {{tumbling: 10s}}
    by: [host]
    aggregates: [count, sum]
sinks:
  out:
    type: file
    inputs: [w]
    path: {}
"#,
        output.display()
    );
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(&pipeline)).0,
        201
    );

    // Bad samples are rejected alone, by reason; the rest is accepted.
    let request = WriteRequest {
        series: vec![
            series("cpu", "a", &[(1_000, 1.0), (2_000, 2.0), (11_000, 5.0)]),
            series("cpu", "b", &[(3_000, 10.0)]),
            series("9cpu", "a", &[(1_000, 1.0)]),
            Series {
                name: "cpu".into(),
                labels: vec![Label {
                    name: "bad-name".into(),
                    value: "x".into(),
                }],
                points: vec![Point {
                    timestamp_ms: 1,
                    value: 1.0,
                }],
            },
            series("cpu", "c", &[(-5, 1.0)]),
            series("mem", "a", &[(1_000, 7.0)]),
        ],
    };
    let reply = runtime
        .block_on(client.write(request))
        .unwrap()
        .into_inner();
    assert_eq!(reply.accepted, 5);
    assert_eq!(reply.rejected, 3);
    assert_eq!(reply.rejected_by_reason["invalid_metric_name"], 1);
    assert_eq!(reply.rejected_by_reason["invalid_label_name"], 1);
    assert_eq!(reply.rejected_by_reason["timestamp_out_of_range"], 1);
    assert_eq!(reply.examples.len(), 3);
    assert_eq!(reply.examples[0].series_index, 2);

    // A client stream, with a sample that moves the watermark past the first window.
    let stream = tokio_stream_of(vec![
        WriteRequest {
            series: vec![series("cpu", "a", &[(12_000, 6.0)])],
        },
        WriteRequest {
            series: vec![series("cpu", "b", &[(25_000, 1.0)])],
        },
    ]);
    let reply = runtime
        .block_on(client.write_stream(stream))
        .unwrap()
        .into_inner();
    assert_eq!(reply.accepted, 2);

    // The first window (0 s, 10 s] closed: host a 1+2, host b 10.
    wait_until("the first window", || {
        std::fs::read_to_string(&output)
            .unwrap_or_default()
            .lines()
            .count()
            >= 4
    });
    let rows = std::fs::read_to_string(&output).unwrap();
    assert!(
        rows.contains(
            r#"{"name":"cpu:10s_by_host_sum","labels":{"host":"a"},"timestamp":10000,"value":3.0}"#
        ),
        "{rows}"
    );
    assert!(
        rows.contains(
            r#"{"name":"cpu:10s_by_host_sum","labels":{"host":"b"},"timestamp":10000,"value":10.0}"#
        ),
        "{rows}"
    );
    let (_, status) = server.json("GET", "/api/v1/pipelines/pushed", None);
    assert_eq!(status["samples_in"], 6, "mem was not matched: {status}");
    assert!(server.stop().success());
}

fn tokio_stream_of<T: Send + 'static>(
    items: Vec<T>,
) -> impl tokio_stream::Stream<Item = T> + Send + 'static {
    tokio_stream::iter(items)
}

/// Labels and (timestamp, value) points of one remote-write series.
type RwSeries<'a> = (&'a [(&'a str, &'a str)], &'a [(i64, f64)]);

fn remote_write_body(series: &[RwSeries<'_>]) -> Vec<u8> {
    use prost::Message;
    use tidemark_pipelines::server::remote_write::proto::{
        Label, Sample, TimeSeries, WriteRequest,
    };
    let request = WriteRequest {
        timeseries: series
            .iter()
            .map(|(labels, samples)| TimeSeries {
                labels: labels
                    .iter()
                    .map(|(n, v)| Label {
                        name: (*n).into(),
                        value: (*v).into(),
                    })
                    .collect(),
                samples: samples
                    .iter()
                    .map(|&(timestamp, value)| Sample { value, timestamp })
                    .collect(),
            })
            .collect(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap()
}

#[test]
fn remote_write_answers_so_that_prometheus_does_the_right_thing() {
    let dir = temp_dir("server-remote-write");
    let server = Server::start(&[], free_port());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |body: &[u8], encoding: &str| {
        let mut r = agent
            .post(&format!("{}/api/v1/write", server.url))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", encoding)
            .send(body)
            .unwrap();
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    let good = remote_write_body(&[(
        &[("__name__", "up"), ("job", "a")],
        &[(1_000, 1.0), (2_000, 1.0)],
    )]);
    // No pipeline reads remote-write yet: 503, so Prometheus keeps the data.
    assert_eq!(post(&good, "snappy").0, 503);
    let output = dir.join("out.jsonl");
    let pipeline = format!(
        "name: rw\nsources:\n  in: {{type: remote_write, idle_timeout: 200ms}}\nsinks:\n  out: {{type: file, inputs: [in], path: {}}}\n",
        output.display()
    );
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(&pipeline)).0,
        201
    );
    assert_eq!(post(&good, "snappy").0, 204);
    // Malformed input: 400, not retried.
    assert_eq!(post(&good, "gzip").0, 400);
    assert_eq!(post(b"not snappy at all", "snappy").0, 400);
    let not_protobuf = snap::raw::Encoder::new().compress_vec(&[0xff; 32]).unwrap();
    let (status, text) = post(&not_protobuf, "snappy");
    assert_eq!(status, 400);
    assert!(text.contains("invalid protobuf"), "{text}");
    // Bad series are rejected alone; the rest is accepted.
    let mixed = remote_write_body(&[
        (&[("__name__", "up"), ("job", "b")], &[(3_000, 1.0)]),
        (
            &[("__name__", "up"), ("bad-label", "x")],
            &[(3_000, 1.0), (4_000, 1.0)],
        ),
        (&[("job", "c")], &[(3_000, 1.0)]),
    ]);
    let (status, text) = post(&mixed, "snappy");
    assert_eq!(status, 400);
    assert!(
        text.contains("accepted 1 samples")
            && text.contains("2 invalid_label_name")
            && text.contains("1 missing_metric_name"),
        "{text}"
    );
    assert!(server.stop().success());
    let rows = std::fs::read_to_string(&output).unwrap();
    assert_eq!(rows.lines().count(), 3, "{rows}");
}

#[test]
fn prometheus_remote_writes_node_exporter_metrics_into_a_pipeline() {
    let (Ok(prometheus), Ok(node_exporter)) =
        (which("prometheus"), which("prometheus-node-exporter"))
    else {
        panic!(
            "prometheus or prometheus-node-exporter is missing: run ./deploy/test.sh, which installs Debian's packages"
        );
    };
    let dir = temp_dir("server-prometheus-rw");
    let port = free_port();
    let server = Server::start(&[], port);
    let exporter_port = free_port();
    let mut exporter = Command::new(node_exporter)
        .arg(format!("--web.listen-address=127.0.0.1:{exporter_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let output = dir.join("out.jsonl");
    let pipeline = format!(
        r#"name: from-prometheus
sources:
  prom:
    type: remote_write
    match: '{{__name__=~"node_load1|node_memory_MemAvailable_bytes|tidemark_up"}}'
    max_out_of_orderness: 2s
    idle_timeout: 1s
transforms:
  w:
    type: window
    inputs: [prom]
    window: {{tumbling: 2s}}
    aggregates: [count, last]
sinks:
  out:
    type: file
    inputs: [w]
    path: {}
"#,
        output.display()
    );
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(&pipeline)).0,
        201
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 500ms\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n  - job_name: tidemark\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\nremote_write:\n  - url: http://127.0.0.1:{port}/api/v1/write\n    queue_config:\n      batch_send_deadline: 500ms\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut found = String::new();
    while start.elapsed() < Duration::from_secs(60) {
        found = std::fs::read_to_string(&output).unwrap_or_default();
        if found.contains("\"name\":\"node_load1:2s_last\"")
            && found.contains("\"name\":\"tidemark_up:2s_last\"")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = exporter.kill();
    let _ = exporter.wait();
    assert!(
        found.contains("\"name\":\"node_load1:2s_last\""),
        "no node-exporter series in the window output: {found}"
    );
    assert!(found.contains("\"job\":\"node\""), "{found}");
    assert!(
        found.contains("\"name\":\"node_memory_MemAvailable_bytes:2s_count\""),
        "{found}"
    );
    let (_, metrics) = server.request("GET", "/metrics", None).unwrap();
    assert!(
        metrics.contains("tidemark_ingest_accepted_total{listener=\"remote_write\"}"),
        "{metrics}"
    );
    assert!(server.stop().success());
}

#[test]
fn otlp_metrics_map_to_prometheus_series() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, InstrumentationScope, KeyValue, any_value,
    };
    use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
        metric, number_data_point,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let t = 1_767_225_600_000_000_000u64; // 2026-01-01T00:00:00Z in ns
    let number = |v: f64| NumberDataPoint {
        attributes: vec![kv("http.route", "/api")],
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    let metric = |name: &str, data: metric::Data| Metric {
        name: name.into(),
        data: Some(data),
        ..Default::default()
    };
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "checkout"),
                    kv("service.instance.id", "pod-1"),
                    kv("host.name", "h1"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "shop".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                metrics: vec![
                    metric(
                        "queue.depth",
                        metric::Data::Gauge(Gauge {
                            data_points: vec![number(7.0)],
                        }),
                    ),
                    metric(
                        "requests",
                        metric::Data::Sum(Sum {
                            data_points: vec![number(42.0)],
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        }),
                    ),
                    metric(
                        "latency",
                        metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                time_unix_nano: t,
                                count: 6,
                                sum: Some(1.5),
                                bucket_counts: vec![1, 2, 3],
                                explicit_bounds: vec![0.1, 0.5],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        }),
                    ),
                    metric(
                        "rpc",
                        metric::Data::Summary(Summary {
                            data_points: vec![SummaryDataPoint {
                                time_unix_nano: t,
                                count: 10,
                                sum: 2.0,
                                quantile_values: vec![ValueAtQuantile {
                                    quantile: 0.99,
                                    value: 0.3,
                                }],
                                ..Default::default()
                            }],
                        }),
                    ),
                    metric(
                        "deltas",
                        metric::Data::Sum(Sum {
                            data_points: vec![number(1.0)],
                            aggregation_temporality: 1,
                            is_monotonic: true,
                        }),
                    ),
                    metric(
                        "exp",
                        metric::Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![ExponentialHistogramDataPoint::default()],
                            aggregation_temporality: 2,
                        }),
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };

    let dir = temp_dir("server-otlp");
    let server = Server::start(&[], free_port());
    let output = dir.join("out.jsonl");
    let pipeline = format!(
        "name: otel\nsources:\n  in: {{type: otlp, idle_timeout: 100ms}}\nsinks:\n  out: {{type: file, inputs: [in], path: {}}}\n",
        output.display()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut client = runtime
        .block_on(MetricsServiceClient::connect(format!(
            "http://127.0.0.1:{}",
            server.grpc
        )))
        .unwrap();
    let err = runtime
        .block_on(client.export(request.clone()))
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unavailable,
        "nobody reads OTLP yet: retry later"
    );
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(&pipeline)).0,
        201
    );
    let reply = runtime
        .block_on(client.export(request.clone()))
        .unwrap()
        .into_inner();
    let partial = reply.partial_success.unwrap();
    assert_eq!(partial.rejected_data_points, 2, "{}", partial.error_message);
    assert!(partial.error_message.contains("unsupported_metric"));
    // The same over OTLP/HTTP.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let body = prost::Message::encode_to_vec(&request);
    let r = agent
        .post(&format!("{}/v1/metrics", server.url))
        .header("content-type", "application/x-protobuf")
        .send(&body[..])
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(server.stop().success());

    let rows = common::read_rows(&output);
    let find = |name: &str, extra: Option<(&str, &str)>| {
        rows.iter()
            .filter(|r| {
                r.name == name && extra.is_none_or(|(k, v)| r.labels.get(k).is_some_and(|x| x == v))
            })
            .map(|r| r.value)
            .collect::<Vec<_>>()
    };
    let gauge = rows
        .iter()
        .find(|r| r.name == "queue_depth")
        .expect("gauge");
    assert_eq!(gauge.timestamp, 1_767_225_600_000);
    for (k, v) in [
        ("job", "checkout"),
        ("instance", "pod-1"),
        ("host_name", "h1"),
        ("http_route", "/api"),
        ("otel_scope_name", "shop"),
        ("otel_scope_version", "1.2"),
    ] {
        assert_eq!(
            gauge.labels.get(k).map(String::as_str),
            Some(v),
            "{k} in {:?}",
            gauge.labels
        );
    }
    assert_eq!(find("requests_total", None), vec![42.0, 42.0]);
    assert_eq!(find("latency_bucket", Some(("le", "0.1"))), vec![1.0, 1.0]);
    assert_eq!(find("latency_bucket", Some(("le", "0.5"))), vec![3.0, 3.0]);
    assert_eq!(find("latency_bucket", Some(("le", "+Inf"))), vec![6.0, 6.0]);
    assert_eq!(find("latency_sum", None), vec![1.5, 1.5]);
    assert_eq!(find("latency_count", None), vec![6.0, 6.0]);
    assert_eq!(find("rpc", Some(("quantile", "0.99"))), vec![0.3, 0.3]);
    assert_eq!(find("rpc_count", None), vec![10.0, 10.0]);
    assert!(find("deltas_total", None).is_empty() && find("deltas", None).is_empty());
}

#[test]
fn the_opentelemetry_python_sdk_exports_into_a_pipeline() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deploy-cache/venv/bin/python");
    assert!(
        python.exists(),
        "the OpenTelemetry Python SDK is missing: run ./deploy/test.sh, which installs it into .deploy-cache/venv"
    );
    let dir = temp_dir("server-otel-python");
    let server = Server::start(&[], free_port());
    let output = dir.join("out.jsonl");
    let pipeline = format!(
        "name: py\nsources:\n  in: {{type: otlp, idle_timeout: 100ms}}\nsinks:\n  out: {{type: file, inputs: [in], path: {}}}\n",
        output.display()
    );
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(&pipeline)).0,
        201
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otel/export.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(format!("localhost:{}", server.grpc))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.stop().success());
    let rows = common::read_rows(&output);
    let last = |name: &str| {
        rows.iter()
            .rfind(|r| r.name == name)
            .unwrap_or_else(|| panic!("no {name} in {rows:?}"))
    };
    let orders = last("orders_total");
    assert_eq!(orders.value, 10.0);
    assert_eq!(orders.labels.get("job").map(String::as_str), Some("shop"));
    assert_eq!(
        orders.labels.get("instance").map(String::as_str),
        Some("py-1")
    );
    assert_eq!(orders.labels.get("region").map(String::as_str), Some("eu"));
    assert_eq!(
        orders.labels.get("otel_scope_name").map(String::as_str),
        Some("tidemark-test")
    );
    assert_eq!(last("checkout_latency_count").value, 10.0);
    assert!((last("checkout_latency_sum").value - 2.75).abs() < 1e-9);
    assert!(
        rows.iter().any(|r| r.name == "checkout_latency_bucket"
            && r.labels.get("le").is_some_and(|l| l == "+Inf"))
    );
    let gauge = last("queue_depth");
    assert_eq!(
        (gauge.value, gauge.labels.get("queue").map(String::as_str)),
        (5.0, Some("emails"))
    );
}

#[test]
fn overload_is_refused_and_every_accepted_sample_is_processed() {
    use tidemark_pipelines::server::ingest::proto::ingest_service_client::IngestServiceClient;
    use tidemark_pipelines::server::ingest::proto::{Label, Point, Series, WriteRequest};

    // A queue that holds one request; eight senders at once offer far more.
    let server = Server::start(&[], free_port());
    let pipeline = "name: slow\nsources:\n  in: {type: grpc, queue: 10000, idle_timeout: 100ms}\n\
                    transforms:\n  w: {type: window, inputs: [in], window: {tumbling: 1s}, aggregates: [count, p99]}\n\
                    sinks:\n  out: {type: blackhole, inputs: [w]}\n";
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(pipeline)).0,
        201
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://127.0.0.1:{}", server.grpc);
    let (accepted, refused) = runtime.block_on(async move {
        let mut tasks = Vec::new();
        for sender in 0..8i64 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = IngestServiceClient::connect(url).await.unwrap();
                let (mut accepted, mut refused) = (0u64, 0u64);
                for batch in 0..40i64 {
                    let request = WriteRequest {
                        series: (0..100)
                            .map(|s| Series {
                                name: "load".into(),
                                labels: vec![Label {
                                    name: "s".into(),
                                    value: format!("{sender}-{s}"),
                                }],
                                points: (0..100)
                                    .map(|i| Point {
                                        timestamp_ms: batch * 100 + i,
                                        value: i as f64,
                                    })
                                    .collect(),
                            })
                            .collect(),
                    };
                    match client.write(request).await {
                        Ok(r) => accepted += r.into_inner().accepted,
                        Err(e) => {
                            assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
                            refused += 1;
                        }
                    }
                }
                (accepted, refused)
            }));
        }
        let mut totals = (0u64, 0u64);
        for t in tasks {
            let (a, r) = t.await.unwrap();
            totals.0 += a;
            totals.1 += r;
        }
        totals
    });
    assert!(refused > 0, "the senders should have been told to back off");
    assert!(accepted > 0);
    // Every acknowledged sample reaches the pipeline, and nothing else does.
    wait_until("every accepted sample", || {
        server.json("GET", "/api/v1/pipelines/slow", None).1["samples_in"].as_u64()
            == Some(accepted)
    });
    assert!(server.stop().success());
}
