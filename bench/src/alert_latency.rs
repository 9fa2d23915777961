//! `tidemark bench alert --latency`: from the sample that lets a step run
//! to the alert it decides, in server mode.
//!
//! `tidemark serve` (1 worker) runs a gRPC source (no out-of-order slack)
//! into an `alert` transform (interval 1 s, `Probe: probe > 0`) whose
//! samples go to a `websocket` sink. Each round writes `probe{i="k"} 1`
//! stamped exactly at a step, then, 20 ms later, a sample of another
//! series stamped 1 ms after the step: that one moves the watermark past
//! the step, which runs and fires `Probe{i="k"}`. The latency is from
//! sending it to a WebSocket subscriber receiving `ALERTS{i="k"}`: the
//! gRPC write and acknowledgement, the watermark, the step, the sink and
//! the WebSocket, all on this machine.
//!
//! [`measure_incidents`] does the same with a `correlate` transform after
//! the `alert` transform, its `ALERTS_INCIDENT` samples going to the
//! WebSocket: every round's alert is tied to the earlier ones (an equal
//! `job` label), so each round updates one incident that grows to all of
//! them.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use tidemark_codecs::ingest::proto::{Label, Point, Series, WriteRequest};
use tidemark_server::ingest::proto::ingest_service_client::IngestServiceClient;

use crate::latency::start_server;

/// The pipeline `name`: a gRPC source into alert rules (`Probe`, every
/// second), then `rest`: more transforms and the `live` WebSocket sink.
fn pipeline(name: &str, rest: &str) -> String {
    format!(
        "name: {name}
sources:
  in: {{type: grpc, max_out_of_orderness: 0s, idle_timeout: 1h}}
transforms:
  rules:
    type: alert
    inputs: [in]
    lookback: 2s
    rules:
      groups:
      - name: probe
        interval: 1s
        rules:
        - alert: Probe
          expr: probe > 0
{rest}"
    )
}

/// The alert rules' `ALERTS` samples to the WebSocket.
const ALERTS: &str = "sinks:
  live: {type: websocket, inputs: [rules]}
";

/// A `correlate` after the rules, its `ALERTS_INCIDENT` samples to the
/// WebSocket.
const INCIDENTS: &str = "  inc:
    type: correlate
    inputs: [rules]
    window: 1h
    rules:
      labels: {by: [job], weight: 1}
sinks:
  live: {type: websocket, inputs: [inc]}
";

const BASE: i64 = 1_795_564_800_000;

fn write(name: &str, labels: &[(&str, &str)], t: i64, value: f64) -> WriteRequest {
    WriteRequest {
        series: vec![Series {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(name, value)| Label {
                    name: (*name).into(),
                    value: (*value).into(),
                })
                .collect(),
            points: vec![Point {
                timestamp_ms: t,
                value,
            }],
        }],
    }
}

/// Latency percentiles (ms): p50, p99, max, over `rounds` rounds.
pub fn measure(rounds: usize) -> anyhow::Result<(f64, f64, f64)> {
    measure_with(
        rounds,
        &pipeline("alert-latency", ALERTS),
        "alert-latency",
        "ALERTS",
    )
}

/// As [`measure`], to the `ALERTS_INCIDENT` sample of a `correlate`
/// transform after the alert rules.
pub fn measure_incidents(rounds: usize) -> anyhow::Result<(f64, f64, f64)> {
    measure_with(
        rounds,
        &pipeline("incident-latency", INCIDENTS),
        "incident-latency",
        "ALERTS_INCIDENT",
    )
}

fn measure_with(
    rounds: usize,
    yaml: &str,
    name: &str,
    metric: &str,
) -> anyhow::Result<(f64, f64, f64)> {
    let server = start_server(1, yaml)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let url = format!(
            "{}/ws?pipeline={name}",
            server.http.replace("http://", "ws://")
        );
        let metric = format!("\"{metric}\"");
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
        let mut client = IngestServiceClient::connect(server.grpc.clone()).await?;
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        // The incident every round's alert joins (with `correlate`).
        let mut incident: Option<String> = None;
        for k in 0..rounds + 10 {
            let step = BASE + k as i64 * 1000;
            let id = format!("{k}");
            client
                .write(write("probe", &[("i", &id), ("job", "probe")], step, 1.0))
                .await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let sent = Instant::now();
            client.write(write("tick", &[], step + 1, 0.0)).await?;
            let wanted = format!("\"i\":\"{id}\"");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let message = tokio::time::timeout_at(deadline, socket.next())
                    .await
                    .map_err(|_| anyhow::anyhow!("no {metric} for round {k} within 10 s"))?;
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => anyhow::bail!("the WebSocket failed: {e}"),
                    None => anyhow::bail!("the server closed the WebSocket"),
                };
                if text.contains(&metric) && text.contains(&wanted) {
                    let named = text
                        .split_once("\"incident\":\"")
                        .and_then(|(_, rest)| rest.split_once('"'))
                        .map(|(id, _)| id.to_owned());
                    if let Some(named) = named {
                        let first = incident.get_or_insert_with(|| named.clone());
                        if *first != named {
                            anyhow::bail!("round {k}'s alert is in another incident: {text}");
                        }
                    }
                    break;
                }
            }
            // The first rounds warm the connections up.
            if k >= 10 {
                h.record((sent.elapsed().as_micros() as u64).max(1))?;
            }
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Ok((ms(0.5), ms(0.99), h.max() as f64 / 1000.0))
    })
}
