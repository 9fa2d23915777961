//! Security (issue 23) end to end, against a real `tidemark serve`: the
//! authorization matrix (every route and gRPC method against every kind of
//! caller), tenants kept apart on data, what pipelines may touch, quotas,
//! and the safe defaults. The cross-origin attack in a real browser is in
//! `dashboard.rs`.

use tidemark_testkit as common;

use std::process::{Command, Stdio};

use common::server::{Server, wait_until};
use common::temp_dir;
use serde_json::Value;

const TOKENS: &str = "\
# role and tenant of each caller in the matrix
admin-token-0123456789
acme-token-0123456789 acme
globex-token-0123456789 globex
ingest-token-0123456789 role=ingest tenant=acme
read-token-0123456789 role=read
readacme-token-0123456789 role=read tenant=acme
";

/// (caller, token sent) in the matrix's row order.
const CALLERS: [(&str, Option<&str>); 8] = [
    ("none", None),
    ("wrong", Some("not-a-token-0123456789")),
    ("admin", Some("admin-token-0123456789")),
    ("acme", Some("acme-token-0123456789")),
    ("globex", Some("globex-token-0123456789")),
    ("ingest", Some("ingest-token-0123456789")),
    ("read", Some("read-token-0123456789")),
    ("read-acme", Some("readacme-token-0123456789")),
];

/// A pipeline with a generator and a `websocket` sink.
fn live(name: &str) -> String {
    format!(
        "name: {name}\nsources:\n  gen: {{type: generator, series: 1, interval: 1s, rate: 5, seed: 1}}\n\
         sinks:\n  live: {{type: websocket, inputs: [gen]}}\n"
    )
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Sends a request as `token`; the status and the body.
fn call(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, String) {
    let url = format!("{}{path}", server.url);
    let agent = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut response = match method {
        "GET" => {
            let mut r = agent.get(&url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call().unwrap()
        }
        "DELETE" => {
            let mut r = agent.delete(&url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call().unwrap()
        }
        _ => {
            let mut r = agent.post(&url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            if path == "/api/v1/write" {
                r = r.header("content-encoding", "snappy");
            } else if path == "/v1/metrics" {
                r = r.header("content-type", "application/x-protobuf");
            } else {
                r = r.header("content-type", "application/yaml");
            }
            r.send(body.unwrap_or_default()).unwrap()
        }
    };
    (
        response.status().as_u16(),
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn remote_write_body() -> Vec<u8> {
    let now = tidemark_engine::time::now_millis();
    common::remote_write_body(&[(&[("__name__", "up")], &[(now, 1.0)])])
}

/// The WebSocket handshake's answer: 101, or the refusal's status.
async fn ws_status(server: &Server, pipeline: &str, token: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}/ws?pipeline={pipeline}",
        server.url.replace("http://", "ws://")
    );
    let mut request = url.into_client_request().unwrap();
    if let Some(t) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => {
            drop(socket);
            response.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("the handshake failed: {e}"),
    }
}

fn authed<T>(mut request: tonic::Request<T>, token: Option<&str>) -> tonic::Request<T> {
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    request
}

fn count(body: &str, key: &str) -> usize {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v[key].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Every route and gRPC method against every kind of caller. The expected
/// table is the contract: a change in any cell fails the test.
#[test]
fn the_authorization_matrix() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use tidemark_server::grpc::proto::pipeline_service_client::PipelineServiceClient;
    use tidemark_server::grpc::proto::{ApplyRequest, DeleteRequest, GetRequest, ListRequest};
    use tidemark_server::ingest::proto::ingest_service_client::IngestServiceClient;
    use tidemark_server::ingest::proto::{Point, Series, WriteRequest};

    let dir = temp_dir("security-matrix");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, TOKENS).unwrap();
    let server = Server::start(&["--token-file", tokens.to_str().unwrap()], 0);
    let shared = "name: shared\nsources:\n  g: {type: grpc, idle_timeout: 100ms}\n  rw: {type: remote_write, idle_timeout: 100ms}\n  \
                  o: {type: otlp, idle_timeout: 100ms}\nsinks:\n  live: {type: websocket, inputs: [g, rw, o]}\n";
    let apply = |yaml: &str, token: &str| {
        let (status, body) = call(
            &server,
            "POST",
            "/api/v1/pipelines",
            Some(token),
            Some(yaml.as_bytes()),
        );
        assert!(status == 201 || status == 200, "{status} {body}");
    };
    apply(shared, CALLERS[2].1.unwrap());
    apply(&live("acme-p"), CALLERS[3].1.unwrap());
    apply(&live("globex-p"), CALLERS[4].1.unwrap());
    let rw = remote_write_body();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let grpc = format!("http://127.0.0.1:{}", server.grpc);
    let mut rows = Vec::new();
    for (caller, token) in CALLERS {
        let mut cells = Vec::new();
        let http = |method: &str, path: &str, body: Option<&[u8]>| {
            call(&server, method, path, token, body)
        };
        cells.push(http("GET", "/healthz", None).0.to_string());
        cells.push(http("GET", "/readyz", None).0.to_string());
        cells.push(http("GET", "/metrics", None).0.to_string());
        cells.push(http("GET", "/", None).0.to_string());
        let (status, body) = http("GET", "/api/v1/pipelines", None);
        cells.push(format!("{status}:{}", count(&body, "pipelines")));
        cells.push(http("GET", "/api/v1/pipelines/acme-p", None).0.to_string());
        let new = live(&format!("new-{caller}"));
        let (status, _) = http("POST", "/api/v1/pipelines", Some(new.as_bytes()));
        cells.push(status.to_string());
        if status == 201 {
            assert_eq!(
                http("DELETE", &format!("/api/v1/pipelines/new-{caller}"), None).0,
                204
            );
        }
        let (status, _) = http("DELETE", "/api/v1/pipelines/globex-p", None);
        cells.push(status.to_string());
        if status == 204 {
            apply(&live("globex-p"), CALLERS[4].1.unwrap());
        }
        cells.push(http("POST", "/api/v1/write", Some(&rw)).0.to_string());
        cells.push(http("POST", "/v1/metrics", Some(&[])).0.to_string());
        let (status, body) = http("GET", "/api/v1/live", None);
        cells.push(format!("{status}:{}", count(&body, "outputs")));
        cells.push(
            runtime
                .block_on(ws_status(&server, "acme-p", token))
                .to_string(),
        );
        cells.push(http("GET", "/api/v1/rules", None).0.to_string());
        cells.push(http("GET", "/api/v1/alerts", None).0.to_string());
        let silence = format!(
            r#"{{"matchers":[{{"name":"alertname","value":"X-{caller}","isRegex":false}}],"startsAt":"2020-01-01T00:00:00Z","endsAt":"2099-01-01T00:00:00Z","createdBy":"{caller}","comment":"matrix"}}"#
        );
        cells.push(
            http("POST", "/api/v2/silences", Some(silence.as_bytes()))
                .0
                .to_string(),
        );
        let (status, body) = http("GET", "/api/v2/silences", None);
        let listed = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0);
        cells.push(format!("{status}:{listed}"));
        cells.push(http("GET", "/api/v1/notifications", None).0.to_string());
        let code = |e: tonic::Status| format!("{:?}", e.code());
        runtime.block_on(async {
            let mut control = PipelineServiceClient::connect(grpc.clone()).await.unwrap();
            cells.push(
                match control
                    .list(authed(tonic::Request::new(ListRequest {}), token))
                    .await
                {
                    Ok(r) => format!("Ok:{}", r.into_inner().pipelines.len()),
                    Err(e) => code(e),
                },
            );
            let get = GetRequest {
                name: "acme-p".into(),
            };
            cells.push(
                match control.get(authed(tonic::Request::new(get), token)).await {
                    Ok(_) => "Ok".into(),
                    Err(e) => code(e),
                },
            );
            let mut ingest = IngestServiceClient::connect(grpc.clone()).await.unwrap();
            let write = WriteRequest {
                series: vec![Series {
                    name: "up".into(),
                    labels: Vec::new(),
                    points: vec![Point {
                        timestamp_ms: tidemark_engine::time::now_millis(),
                        value: 1.0,
                    }],
                }],
            };
            cells.push(
                match ingest
                    .write(authed(tonic::Request::new(write), token))
                    .await
                {
                    Ok(_) => "Ok".into(),
                    Err(e) => code(e),
                },
            );
            let mut otlp = MetricsServiceClient::connect(grpc.clone()).await.unwrap();
            let export = ExportMetricsServiceRequest::default();
            cells.push(
                match otlp
                    .export(authed(tonic::Request::new(export), token))
                    .await
                {
                    Ok(_) => "Ok".into(),
                    Err(e) => code(e),
                },
            );
            let name = format!("g-{caller}");
            let definition = live(&name);
            let applied = control
                .apply(authed(
                    tonic::Request::new(ApplyRequest { definition }),
                    token,
                ))
                .await;
            cells.push(match applied {
                Ok(_) => "Ok".into(),
                Err(e) => code(e),
            });
            // Delete what it applied, or, when it could not, acme's.
            let target = if cells.last().is_some_and(|c| c == "Ok") {
                name
            } else {
                "acme-p".into()
            };
            let delete = DeleteRequest { name: target };
            cells.push(
                match control
                    .delete(authed(tonic::Request::new(delete), token))
                    .await
                {
                    Ok(_) => "Ok".into(),
                    Err(e) => code(e),
                },
            );
        });
        rows.push(format!("{caller:<9} {}", cells.join(" ")));
    }
    let table = rows.join("\n");
    // healthz readyz metrics dashboard list get-acme apply delete-globex
    // remote-write otlp-http live ws-acme rules alerts silence-post silences
    // notifications | gRPC: list get-acme ingest
    // otlp-export apply delete
    let expected = "\
none      200 200 401 200 401:0 401 401 401 401 401 401:0 401 401 401 401 401:0 401 Unauthenticated Unauthenticated Unauthenticated Unauthenticated Unauthenticated Unauthenticated
wrong     200 200 401 200 401:0 401 401 401 401 401 401:0 401 401 401 401 401:0 401 Unauthenticated Unauthenticated Unauthenticated Unauthenticated Unauthenticated Unauthenticated
admin     200 200 200 200 200:3 200 201 204 204 200 200:3 101 200 200 200 200:1 200 Ok:3 Ok Ok Ok Ok Ok
acme      200 200 403 200 200:1 200 201 404 204 200 200:1 101 200 200 200 200:1 200 Ok:1 Ok Ok Ok Ok Ok
globex    200 200 403 200 200:1 404 201 204 204 200 200:1 404 200 200 200 200:1 200 Ok:1 NotFound Ok Ok Ok Ok
ingest    200 200 403 200 403:0 403 403 403 204 200 403:0 403 403 403 403 403:0 403 PermissionDenied PermissionDenied Ok Ok PermissionDenied PermissionDenied
read      200 200 200 200 200:3 200 403 403 403 403 200:3 101 200 200 403 200:3 200 Ok:3 Ok PermissionDenied PermissionDenied PermissionDenied PermissionDenied
read-acme 200 200 403 200 200:1 200 403 403 403 403 200:1 101 200 200 403 200:1 200 Ok:1 Ok PermissionDenied PermissionDenied PermissionDenied PermissionDenied";
    assert_eq!(table, expected, "\n{table}\n");
    // Every refusal was counted by reason.
    let (_, metrics) = call(&server, "GET", "/metrics", CALLERS[2].1, None);
    for reason in ["unauthenticated", "forbidden"] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason} is not counted"
        );
    }
    assert!(server.stop().success());
}

/// A tenant's pipeline receives only its tenant's samples, whoever else
/// sends to the same listener, and shows no secrets of its definition.
#[test]
fn tenants_are_kept_apart_on_data_and_definitions() {
    let dir = temp_dir("security-tenants");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, TOKENS).unwrap();
    let server = Server::start(&["--token-file", tokens.to_str().unwrap()], 0);
    let sink = |name: &str| dir.join(format!("{name}.jsonl"));
    let pipeline = |name: &str| {
        format!(
            "name: {name}\nsources:\n  rw: {{type: remote_write, idle_timeout: 100ms}}\n\
             sinks:\n  out: {{type: file, inputs: [rw], path: {}, append: false}}\n",
            sink(name).display()
        )
    };
    for (name, token) in [
        ("all", CALLERS[2].1),
        ("acme", CALLERS[3].1),
        ("globex", CALLERS[4].1),
    ] {
        let (status, body) = call(
            &server,
            "POST",
            "/api/v1/pipelines",
            token,
            Some(pipeline(name).as_bytes()),
        );
        assert_eq!(status, 201, "{body}");
    }
    // A pipeline's definition is shown without its secrets.
    let secret = "name: secret\nsources:\n  rw: {type: otlp}\n\
                  sinks:\n  db: {type: redis, inputs: [rw], url: \"redis://:hunter2-secret@127.0.0.1:1/0\"}\n";
    let (status, body) = call(
        &server,
        "POST",
        "/api/v1/pipelines",
        CALLERS[3].1,
        Some(secret.as_bytes()),
    );
    assert_eq!(status, 201, "{body}");
    assert!(!body.contains("hunter2"), "{body}");
    let (_, body) = call(
        &server,
        "GET",
        "/api/v1/pipelines/secret",
        CALLERS[3].1,
        None,
    );
    assert!(body.contains("redis://:*****@127.0.0.1:1/0"), "{body}");
    assert!(!body.contains("hunter2"), "{body}");
    // The name is acme's: globex cannot take it over.
    let (status, body) = call(
        &server,
        "POST",
        "/api/v1/pipelines",
        CALLERS[4].1,
        Some(secret.as_bytes()),
    );
    assert_eq!(status, 409, "{body}");
    // acme (with its own token and its ingest-only one) and globex send.
    let rw = remote_write_body();
    for token in [CALLERS[3].1, CALLERS[4].1, CALLERS[5].1] {
        assert_eq!(
            call(&server, "POST", "/api/v1/write", token, Some(&rw)).0,
            204
        );
    }
    let tenants = |name: &str| -> Vec<String> {
        let mut t: Vec<String> = common::read_rows(&sink(name))
            .iter()
            .map(|r| r.labels.get("tenant").cloned().unwrap_or_default())
            .collect();
        t.sort();
        t
    };
    // Stopping flushes every sink.
    assert!(server.stop().success());
    assert_eq!(tenants("all"), ["acme", "acme", "globex"]);
    assert_eq!(tenants("acme"), ["acme", "acme"]);
    assert_eq!(tenants("globex"), ["globex"]);
}

/// A serve without `--allow-*` flags: each thing a pipeline may not touch
/// is refused where it is written, naming the setting that allows it.
#[test]
fn pipelines_touch_only_what_the_server_allows() {
    let dir = temp_dir("security-access");
    let mut child = Command::new(common::tidemark_bin())
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .args(["--allow-write-dir", dir.join("out").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (Some(http), Some(grpc)) = common::server::listening(child.stderr.take().unwrap()) else {
        panic!("the server did not start");
    };
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{http}"),
        grpc,
        token: None,
    };
    let forbidden = r#"name: reach
sources:
  secrets: {type: file, path: /etc/passwd}
  kafka: {type: kafka, brokers: "10.0.0.1:9092", topics: [m], group: g, options: {plugin.library.paths: /tmp/evil.so}}
  big: {type: grpc, queue: 100000000}
sinks:
  cache: {type: redis, inputs: [secrets, kafka, big], url: "redis://169.254.169.254:6379", password_env: AWS_SECRET_ACCESS_KEY}
  file: {type: file, inputs: [secrets], path: /root/.bashrc}
"#;
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(forbidden));
    assert_eq!(status, 400, "{body}");
    let errors: Vec<(u64, u64, String)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["column"].as_u64().unwrap(),
                e["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = [
        (
            3,
            31,
            "reads /etc/passwd, outside the directories pipelines may read on this server (the server's access.read_dirs: none)",
        ),
        (
            4,
            33,
            "connects to 10.0.0.1:9092, which the server's access.hosts does not allow (add \"10.0.0.1:9092\" to it)",
        ),
        (
            4,
            105,
            "librdkafka's plugin.library.paths runs a program or loads a library: not allowed on a server (run such a pipeline with `tidemark run`)",
        ),
        (
            5,
            28,
            "a queue of 100000000 records is over the server's quota (quotas.max_queue: 1048576)",
        ),
        (
            7,
            60,
            "connects to 169.254.169.254:6379, which the server's access.hosts does not allow (add \"169.254.169.254:6379\" to it)",
        ),
        (
            7,
            106,
            "reads the environment variable AWS_SECRET_ACCESS_KEY, which the server's access.env does not list",
        ),
        (
            8,
            47,
            "writes /root/.bashrc, outside the directories pipelines may write on this server (the server's access.write_dirs: ",
        ),
    ];

    assert_eq!(errors.len(), expect.len(), "{body}");
    for ((line, column, message), (l, c, m)) in errors.iter().zip(expect) {
        assert_eq!((*line, *column), (l, c), "{message}");
        assert!(message.starts_with(m), "{message}\nexpected: {m}");
    }
    assert!(server.pipeline_names().is_empty());

    // Inside write_dirs: a new file is written; an existing one is not
    // replaced unless the sink says so, and then only in replace_dirs.
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let existing = out.join("kept.jsonl");
    std::fs::write(
        &existing,
        "{\"name\":\"old\",\"labels\":{},\"timestamp\":1,\"value\":1}\n",
    )
    .unwrap();
    let writing = |append: &str| {
        format!(
            "name: w\nsources:\n  gen: {{type: generator, series: 1, interval: 1s, samples: 2, seed: 1}}\n\
             sinks:\n  out: {{type: file, inputs: [gen], path: {}{append}}}\n",
            existing.display()
        )
    };
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&writing("")));
    assert_eq!(status, 400);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("exists and would be replaced: say `append: true`"),
        "{body}"
    );
    let (status, body) = server.json(
        "POST",
        "/api/v1/pipelines",
        Some(&writing(", append: false")),
    );
    assert_eq!(status, 400);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("access.replace_dirs: none"),
        "{body}"
    );
    let (status, body) = server.json(
        "POST",
        "/api/v1/pipelines",
        Some(&writing(", append: true")),
    );
    assert_eq!(status, 201, "{body}");
    wait_until("the samples appended", || {
        common::read_rows(&existing).len() == 3
    });
    assert_eq!(
        common::read_rows(&existing)[0].name,
        "old",
        "appended, not replaced"
    );
    // A symbolic link out of the directory is followed before the check.
    std::os::unix::fs::symlink("/etc", out.join("etc")).unwrap();
    let through = format!(
        "name: l\nsources:\n  f: {{type: file, path: {}}}\nsinks:\n  out: {{type: blackhole, inputs: [f]}}\n",
        out.join("etc/passwd").display()
    );
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(&through)).0,
        400
    );
    let (_, metrics) = server.request("GET", "/metrics", None).unwrap();
    assert!(
        metrics.contains("tidemark_quota_refusals_total{process=\"0\",quota=\"access\"}"),
        "{metrics}"
    );
    assert!(server.stop().success());
}

/// Quotas per tenant: pipelines, subscribers, queue sizes, ingest rate;
/// each refusal explained and counted.
#[test]
fn quotas_are_enforced_and_counted() {
    let dir = temp_dir("security-quotas");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, TOKENS).unwrap();
    let config = dir.join("tidemark.yaml");
    std::fs::write(
        &config,
        "quotas:\n  pipelines: 2\n  subscribers: 1\n  max_queue: 10000\n  ingest_rate: 10\n",
    )
    .unwrap();
    let server = Server::start(
        &[
            "--token-file",
            tokens.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        0,
    );
    let acme = CALLERS[3].1;
    let apply = |yaml: &str, token| {
        call(
            &server,
            "POST",
            "/api/v1/pipelines",
            token,
            Some(yaml.as_bytes()),
        )
    };
    assert_eq!(apply(&live("a1"), acme).0, 201);
    let rw = "name: a2\nsources:\n  rw: {type: remote_write, queue: 10000}\nsinks:\n  live: {type: websocket, inputs: [rw], queue: 10000}\n";
    assert_eq!(apply(rw, acme).0, 201);
    let (status, body) = apply(&live("a3"), acme);
    assert_eq!(status, 429, "{body}");
    assert!(
        body.contains("tenant acme already runs 2 pipelines, its quota (quotas.pipelines)"),
        "{body}"
    );
    assert_eq!(apply(rw, acme).0, 200, "replacing its own is not a new one");
    assert_eq!(
        apply(&live("g1"), CALLERS[4].1).0,
        201,
        "globex has its own quota"
    );
    let (status, body) = apply(
        &rw.replace("a2", "big").replace("10000", "10001"),
        CALLERS[2].1,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("quotas.max_queue: 10000"), "{body}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!(
            "{}/ws?pipeline=a1&token={}",
            server.url.replace("http://", "ws://"),
            acme.unwrap()
        );
        let first = tokio_tungstenite::connect_async(url.clone().into_client_request().unwrap())
            .await
            .expect("the first subscriber");
        assert_eq!(
            ws_status(&server, "a1", acme).await,
            429,
            "a second one is over the quota"
        );
        assert_eq!(
            ws_status(&server, "g1", CALLERS[4].1).await,
            101,
            "globex's own"
        );
        drop(first);
        let start = std::time::Instant::now();
        while ws_status(&server, "a1", acme).await != 101 {
            assert!(
                start.elapsed().as_secs() < 10,
                "the closed subscriber's place was not freed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });

    // Ingest: 10 samples a second for acme; one request over it is 429.
    let now = tidemark_engine::time::now_millis();
    let names: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    let labels: Vec<[(&str, &str); 1]> = names.iter().map(|n| [("__name__", n.as_str())]).collect();
    let points = [(now, 1.0)];
    let series: Vec<common::RwSeries<'_>> = labels.iter().map(|l| (&l[..], &points[..])).collect();
    let body = common::remote_write_body(&series);
    assert_eq!(
        call(&server, "POST", "/api/v1/write", acme, Some(&body)).0,
        204
    );
    let (status, text) = call(&server, "POST", "/api/v1/write", acme, Some(&body));
    assert_eq!(status, 429, "{text}");
    assert!(
        text.contains("tenant acme is over its ingest quota of 10 samples a second"),
        "{text}"
    );
    let (_, metrics) = call(&server, "GET", "/metrics", CALLERS[2].1, None);
    for quota in ["pipelines", "subscribers", "max_queue", "ingest_rate"] {
        assert!(
            metrics.contains(&format!(
                "tidemark_quota_refusals_total{{process=\"0\",quota=\"{quota}\"}}"
            )),
            "{quota}: {metrics}"
        );
    }
    assert!(server.stop().success());
}

/// With tokens `/metrics` needs an admin or read token unless the operator
/// opens it for scrapers without one.
#[test]
fn metrics_are_protected_with_tokens_unless_opened() {
    let dir = temp_dir("security-metrics");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, TOKENS).unwrap();
    let file = tokens.to_str().unwrap();
    let server = Server::start(&["--token-file", file], 0);
    assert_eq!(call(&server, "GET", "/metrics", None, None).0, 401);
    assert_eq!(call(&server, "GET", "/metrics", CALLERS[6].1, None).0, 200);
    assert!(server.stop().success());
    let server = Server::start(&["--token-file", file, "--protect-metrics", "false"], 0);
    assert_eq!(call(&server, "GET", "/metrics", None, None).0, 200);
    assert!(server.stop().success());
}

/// Without tokens the server stays on loopback unless told otherwise, and
/// refuses what a web page could send it.
#[test]
fn safe_defaults_without_tokens() {
    let refused = Command::new(common::tidemark_bin())
        .args(["serve", "--http", "0.0.0.0:0", "--grpc", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without tokens"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-unauthenticated"), "{stderr}");

    let mut child = Command::new(common::tidemark_bin())
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "0.0.0.0:0",
            "--allow-unauthenticated",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    let warned = lines
        .by_ref()
        .map_while(Result::ok)
        .take(20)
        .any(|l| l.contains("WARN") && l.contains("WITHOUT TOKENS"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned, "no warning at start");

    let server = Server::start(&[], 0);
    let pipeline = live("p");
    let agent = agent();
    let url = format!("{}/api/v1/pipelines", server.url);
    // As a page would send it, without a preflight: refused.
    let mut r = agent
        .post(&url)
        .header("content-type", "text/plain")
        .send(pipeline.as_bytes())
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    assert!(
        r.body_mut()
            .read_to_string()
            .unwrap()
            .contains("application/yaml")
    );
    // From another origin, or addressed to another name (DNS rebinding).
    for (name, value) in [("origin", "http://evil.example"), ("host", "evil.example")] {
        let r = agent
            .post(&url)
            .header("content-type", "application/yaml")
            .header(name, value)
            .send(pipeline.as_bytes())
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{name}: {value}");
    }
    assert!(server.pipeline_names().is_empty());
    let (_, metrics) = server.request("GET", "/metrics", None).unwrap();
    for reason in ["content_type", "origin", "host"] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"}} 1")),
            "{reason}: {metrics}"
        );
    }
    assert!(server.stop().success());
}
