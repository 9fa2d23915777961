//! The `websocket` sink and `/ws` on `tidemark serve`, with a real
//! WebSocket client (tokio-tungstenite) and samples sent over gRPC.

use tidemark_testkit as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use common::server::{Server, wait_until};
use tidemark_server::ingest::proto::ingest_service_client::IngestServiceClient;
use tidemark_server::ingest::proto::{Label, Point, Series, WriteRequest};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn pipeline(queue: usize) -> String {
    format!(
        "name: live\nsources:\n  in: {{type: grpc, idle_timeout: 100ms}}\n\
         sinks:\n  screen: {{type: websocket, inputs: [in], queue: {queue}, slow_client: close}}\n"
    )
}

fn request(hosts: &[&str], from: i64, points: i64) -> WriteRequest {
    WriteRequest {
        series: hosts
            .iter()
            .map(|h| Series {
                name: "cpu".into(),
                labels: vec![Label {
                    name: "host".into(),
                    value: (*h).into(),
                }],
                points: (from..from + points)
                    .map(|i| Point {
                        timestamp_ms: 1_795_564_800_000 + i * 1000,
                        value: i as f64,
                    })
                    .collect(),
            })
            .collect(),
    }
}

async fn connect(server: &Server, query: &str) -> Socket {
    let url = format!("{}/ws?{query}", server.url.replace("http://", "ws://"));
    tokio_tungstenite::connect_async(url.into_client_request().unwrap())
        .await
        .unwrap()
        .0
}

/// The next JSON message (skipping pings and progress reports).
async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("no message within 20 s")
            .expect("the socket closed")
            .unwrap();
        match message {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "progress" {
                    return v;
                }
            }
            Message::Close(frame) => panic!("closed by the server: {frame:?}"),
            _ => {}
        }
    }
}

fn points(message: &Value) -> Vec<(String, i64)> {
    message["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["labels"]["host"].as_str().unwrap().to_owned(),
                s["timestamp"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn subscribers_get_a_snapshot_then_new_values_and_a_selector_filters() {
    let server = Server::start(&[], 0);
    assert_eq!(
        server
            .json("POST", "/api/v1/pipelines", Some(&pipeline(1000)))
            .0,
        201
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let grpc = format!("http://127.0.0.1:{}", server.grpc);
    runtime.block_on(async {
        let mut client = IngestServiceClient::connect(grpc).await.unwrap();
        client.write(request(&["a", "b"], 0, 2)).await.unwrap();
        wait_until("the first values published", || {
            server.json("GET", "/api/v1/pipelines/live", None).1["samples_out"] == 4
        });
        let mut all = connect(&server, "pipeline=live").await;
        let mut only_a = connect(
            &server,
            "pipeline=live&output=screen&match=%7Bhost%3D%22a%22%7D",
        )
        .await;
        let snapshot = next(&mut all).await;
        assert_eq!(snapshot["type"], "snapshot");
        assert_eq!(snapshot["output"], "screen");
        let base = 1_795_564_800_000i64;
        // The latest value of each series, oldest first.
        let mut latest = points(&snapshot);
        latest.sort();
        assert_eq!(
            latest,
            vec![("a".into(), base + 1000), ("b".into(), base + 1000)]
        );
        assert_eq!(
            points(&next(&mut only_a).await),
            vec![("a".into(), base + 1000)]
        );

        client.write(request(&["a", "b"], 2, 3)).await.unwrap();
        let mut seen_all = Vec::new();
        while seen_all.len() < 6 {
            let m = next(&mut all).await;
            assert_eq!(m["type"], "samples");
            seen_all.extend(points(&m));
        }
        seen_all.sort();
        let expected: Vec<(String, i64)> = ["a", "b"]
            .iter()
            .flat_map(|h| (2..5).map(move |i| ((*h).to_owned(), base + i * 1000)))
            .collect();
        assert_eq!(seen_all, expected);
        let mut seen_a = Vec::new();
        while seen_a.len() < 3 {
            seen_a.extend(points(&next(&mut only_a).await));
        }
        assert!(seen_a.iter().all(|(h, _)| h == "a"), "{seen_a:?}");
        assert_eq!(seen_a.len(), 3);

        // Clear errors before the upgrade.
        for (query, status) in [
            ("pipeline=nope", 404),
            ("pipeline=live&output=other", 404),
            ("pipeline=live&match=%7Bhost%3D", 400),
        ] {
            let url = format!("{}/ws?{query}", server.url.replace("http://", "ws://"));
            match tokio_tungstenite::connect_async(url).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                    assert_eq!(r.status().as_u16(), status, "{query}");
                }
                other => panic!("{query}: {:?}", other.map(|_| ())),
            }
        }
        // /api/v1/live lists the output with what it published.
        let (status, live) = server.json("GET", "/api/v1/live", None);
        assert_eq!(status, 200);
        assert_eq!(live["outputs"][0]["pipeline"], "live");
        assert_eq!(live["outputs"][0]["published"], 10);
        assert_eq!(live["outputs"][0]["series"], 2);
        all.close(None).await.unwrap();

        // Replacing the pipeline closes its subscribers with the reason;
        // a new subscription starts from the new pipeline's (empty)
        // snapshot.
        assert_eq!(
            server
                .json("POST", "/api/v1/pipelines", Some(&pipeline(500)))
                .0,
            200
        );
        let frame = loop {
            match tokio::time::timeout(Duration::from_secs(20), only_a.next()).await {
                Ok(Some(Ok(Message::Close(Some(frame))))) => break frame,
                Ok(Some(Ok(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(frame.reason.as_str(), "the pipeline was removed");
        let mut again = connect(&server, "pipeline=live").await;
        let snapshot = next(&mut again).await;
        assert_eq!(snapshot["type"], "snapshot");
        assert_eq!(snapshot["samples"].as_array().unwrap().len(), 0);
    });
    assert!(server.stop().success());
}

#[test]
fn a_slow_subscriber_is_closed_with_a_reason_while_a_fast_one_gets_everything() {
    let server = Server::start(&[], 0);
    assert_eq!(
        server
            .json("POST", "/api/v1/pipelines", Some(&pipeline(50_000)))
            .0,
        201
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let grpc = format!("http://127.0.0.1:{}", server.grpc);
    let (requests, hosts, per) = (40, 100usize, 100i64);
    let total = requests * hosts * per as usize;
    runtime.block_on(async {
        let mut slow = connect(&server, "pipeline=live").await;
        let mut fast = connect(&server, "pipeline=live").await;
        let got = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&got);
        let reader = tokio::spawn(async move {
            let mut n = 0;
            while n < total {
                let m = next(&mut fast).await;
                if m["type"] == "samples" {
                    assert!(m.get("skipped").is_none());
                    n += m["samples"].as_array().unwrap().len();
                    counter.store(n, Ordering::SeqCst);
                }
            }
            n
        });
        let names: Vec<String> = (0..hosts).map(|h| format!("h{h}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut client = IngestServiceClient::connect(grpc).await.unwrap();
        for r in 0..requests as i64 {
            client.write(request(&names, r * per, per)).await.unwrap();
            // The fast client reads as it comes (a debug-build server
            // encodes JSON slower than it ingests, so the sender waits for
            // it to be at most two requests behind); the slow one reads
            // nothing and falls behind by the whole stream.
            let sent = (r as usize + 1) * hosts * per as usize;
            let behind = 2 * hosts * per as usize;
            while got.load(Ordering::SeqCst) + behind < sent && !reader.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        // The fast client got every value, in spite of the slow one.
        assert_eq!(reader.await.unwrap(), total);
        // The slow one (which read nothing so far: 400 000 values against
        // a queue of 50 000, while each request brings 10 000) finds its messages end
        // in a close frame that says why.
        let reason = loop {
            match tokio::time::timeout(Duration::from_secs(20), slow.next()).await {
                Ok(Some(Ok(Message::Close(Some(frame))))) => break frame,
                Ok(Some(Ok(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(u16::from(reason.code), 1008);
        assert_eq!(
            reason.reason.as_str(),
            "too slow: more than 50000 values waiting"
        );
    });
    assert!(server.stop().success());
}

#[test]
fn subscriptions_need_a_token_when_the_server_has_tokens() {
    let server = Server::start_with_token(&common::temp_dir("ws-tokens"), "s3cret");
    assert_eq!(
        server
            .json("POST", "/api/v1/pipelines", Some(&pipeline(10)))
            .0,
        201
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let ws = server.url.replace("http://", "ws://");
        match tokio_tungstenite::connect_async(format!("{ws}/ws?pipeline=live")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), 401);
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        // A browser passes the token in the query; other clients may use
        // the header.
        let mut by_query = connect(&server, "pipeline=live&token=s3cret").await;
        assert_eq!(next(&mut by_query).await["type"], "snapshot");
        let mut request = format!("{ws}/ws?pipeline=live")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", "Bearer s3cret".parse().unwrap());
        let (mut by_header, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(next(&mut by_header).await["type"], "snapshot");
        by_header.send(Message::Close(None)).await.unwrap();
    });
    assert!(server.stop().success());
}
