//! `tidemark bench websocket`: fan-out of a `websocket` sink to many
//! subscribers.
//!
//! Starts `tidemark serve` (a child process) with a gRPC source feeding a
//! `websocket` sink (`slow_client: latest`, so a subscriber that falls
//! behind skips ahead instead of being closed), connects N subscribers
//! (tokio-tungstenite, in this process) and sends `--rate` values a second
//! over gRPC in batches every 10 ms, each value carrying its send time. It
//! reports the values delivered a second over all subscribers, the share of
//! what a perfect fan-out would deliver (rate x N), values skipped, the
//! delivery latency (send to receipt, p50/p99) and the server's CPU. A
//! message counts if its first value was sent within the measured window
//! (so what was sent before or after it is not counted by its arrival).
//! Subscribers count values without parsing whole messages, so that the
//! clients, which share the machine, cost as little as possible.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use tidemark_codecs::ingest::proto::{Label, Point, Series, WriteRequest};
use tidemark_server::ingest::proto::ingest_service_client::IngestServiceClient;

use crate::latency::{ServerChild, cpu_seconds, start_server, ticks_per_second};

/// Options of `tidemark bench websocket`.
#[derive(Clone, Debug, clap::Args)]
pub struct WebsocketBenchOptions {
    /// Values published per second (each to every subscriber).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000u64, 10_000, 100_000])]
    pub rates: Vec<u64>,
    /// Subscriber counts.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 10, 100])]
    pub subscribers: Vec<usize>,
    /// Distinct series.
    #[arg(long, default_value_t = 1000)]
    pub series: usize,
    /// Seconds each step is measured (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Markdown file whose websocket section is rewritten.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub output: PathBuf,
    /// Print only; do not write the file.
    #[arg(long)]
    pub no_write: bool,
}

const PIPELINE: &str = "name: fanout
sources:
  in: {type: grpc, idle_timeout: 1s}
sinks:
  live: {type: websocket, inputs: [in], queue: 100000, slow_client: latest}
";

const BASE: i64 = 1_795_564_800_000;

struct Step {
    rate: u64,
    subscribers: usize,
    delivered: f64,
    share: f64,
    skipped: u64,
    p50: f64,
    p99: f64,
    cpu: f64,
}

impl Step {
    /// The step's row of the markdown table.
    fn row(&self) -> String {
        format!(
            "| {} K | {} | {:.0} K | {:.1}% | {} | {:.1} ms | {:.1} ms | {:.0}% |",
            self.rate as f64 / 1e3,
            self.subscribers,
            self.delivered / 1e3,
            self.share * 100.0,
            self.skipped,
            self.p50,
            self.p99,
            self.cpu
        )
    }
}

/// What the subscribers saw, shared.
struct Seen {
    values: AtomicU64,
    skipped: AtomicU64,
    latency: std::sync::Mutex<Histogram<u64>>,
    /// Messages whose first value was sent in [from, to) µs are counted.
    from: AtomicU64,
    to: AtomicU64,
}

fn micros_since(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

/// Counts the values of a `samples` message and reads the first value
/// (its send time in µs) without parsing the whole message.
fn scan(text: &str) -> (u64, Option<f64>, u64) {
    if !text.starts_with("{\"type\":\"samples\"") {
        return (0, None, 0);
    }
    let count = text.matches("\"timestamp\":").count() as u64;
    let first = text.find("\"value\":").and_then(|at| {
        let rest = &text[at + 8..];
        let end = rest.find(['}', ','])?;
        rest[..end].parse::<f64>().ok()
    });
    let skipped = text
        .rfind("\"skipped\":")
        .and_then(|at| {
            let rest = &text[at + 10..];
            rest[..rest.find('}')?].parse::<u64>().ok()
        })
        .unwrap_or(0);
    (count, first, skipped)
}

async fn subscriber(url: String, seen: Arc<Seen>, start: Instant) -> anyhow::Result<()> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    while let Some(message) = socket.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        let (count, first, skipped) = scan(&text);
        let Some(sent) = first else { continue };
        let window = seen.from.load(Ordering::Relaxed)..seen.to.load(Ordering::Relaxed);
        if !window.contains(&(sent as u64)) {
            continue;
        }
        seen.values.fetch_add(count, Ordering::Relaxed);
        seen.skipped.fetch_add(skipped, Ordering::Relaxed);
        {
            let now = micros_since(start);
            let mut h = seen
                .latency
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = h.record(now.saturating_sub(sent as u64).max(1));
        }
    }
    Ok(())
}

fn request(series: usize, from: usize, count: usize, t: i64, value: f64) -> WriteRequest {
    WriteRequest {
        series: (from..from + count)
            .map(|i| Series {
                name: "load".into(),
                labels: vec![Label {
                    name: "series".into(),
                    value: format!("s{}", i % series),
                }],
                points: vec![Point {
                    timestamp_ms: t,
                    value,
                }],
            })
            .collect(),
    }
}

async fn step(
    server: &ServerChild,
    o: &WebsocketBenchOptions,
    rate: u64,
    subscribers: usize,
    tick: &mut i64,
) -> anyhow::Result<Step> {
    let start = Instant::now();
    let seen = Arc::new(Seen {
        values: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        latency: std::sync::Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        from: AtomicU64::new(u64::MAX),
        to: AtomicU64::new(u64::MAX),
    });
    let url = format!(
        "{}/ws?pipeline=fanout",
        server.http.replace("http://", "ws://")
    );
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        tasks.push(tokio::spawn(subscriber(
            url.clone(),
            Arc::clone(&seen),
            start,
        )));
    }
    let mut client = IngestServiceClient::connect(server.grpc.clone()).await?;
    // Every 10 ms, rate/100 values (a rolling window over the series).
    let per_tick = (rate / 100).max(1) as usize;
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (warmup, total) = (100u64, 100 * (1 + o.seconds));
    let (tps, pid) = (ticks_per_second(), server.child.id());
    let mut cpu0 = (0.0, Instant::now());
    let mut offered = 0u64;
    let mut cursor = 0usize;
    for i in 0..total {
        interval.tick().await;
        let now = micros_since(start);
        if i == warmup {
            seen.from.store(now, Ordering::Relaxed);
            cpu0 = (cpu_seconds(pid, tps)?, Instant::now());
        }
        *tick += 1;
        let value = now as f64;
        client
            .write(request(
                o.series,
                cursor,
                per_tick,
                BASE + *tick * 10,
                value,
            ))
            .await?;
        cursor = (cursor + per_tick) % o.series;
        if i >= warmup {
            offered += per_tick as u64;
        }
    }
    // Values sent from here on are not counted; let the rest arrive.
    let to = micros_since(start);
    seen.to.store(to, Ordering::Relaxed);
    let cpu = 100.0 * (cpu_seconds(pid, tps)? - cpu0.0) / cpu0.1.elapsed().as_secs_f64();
    let elapsed = (to - seen.from.load(Ordering::Relaxed)) as f64 / 1e6;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for t in &tasks {
        t.abort();
    }
    let values = seen.values.load(Ordering::Relaxed);
    let h = seen
        .latency
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(Step {
        rate,
        subscribers,
        delivered: values as f64 / elapsed,
        share: values as f64 / (offered as f64 * subscribers as f64),
        skipped: seen.skipped.load(Ordering::Relaxed),
        p50: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99: h.value_at_quantile(0.99) as f64 / 1000.0,
        cpu,
    })
}

/// Runs the benchmark, prints the table and writes it.
pub fn websocket(o: &WebsocketBenchOptions) -> anyhow::Result<()> {
    let server = start_server(1, PIPELINE)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut steps = Vec::new();
    let mut tick = 0;
    for &rate in &o.rates {
        for &subscribers in &o.subscribers {
            let s = runtime.block_on(step(&server, o, rate, subscribers, &mut tick))?;
            eprintln!("{}", s.row());
            steps.push(s);
        }
    }
    drop(server);
    let mut md = format!(
        "WebSocket fan-out (`tidemark bench websocket`, `tidemark serve` with 1 worker, a gRPC source into a `websocket` sink with `slow_client: latest`, {} series; values sent every 10 ms, each to every subscriber; subscribers are tokio-tungstenite clients in the benchmark process on the same 2 cores; {} s per step after 1 s of warm-up):\n\n\
         | values/s published | subscribers | values/s delivered (all subscribers) | of rate x subscribers | skipped | latency p50 | p99 | server CPU |\n|---|---|---|---|---|---|---|---|\n",
        o.series, o.seconds
    );
    for s in &steps {
        let _ = writeln!(md, "{}", s.row());
    }
    eprintln!("\n{md}");
    if !o.no_write {
        crate::write_section(&o.output, "websocket", &md)?;
        eprintln!("Wrote {}.", o.output.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::scan;

    #[test]
    fn scan_counts_values_and_reads_the_first_and_the_skips() {
        let m = r#"{"type":"samples","watermark":5,"samples":[{"name":"load","labels":{"series":"s1"},"timestamp":10,"value":1234.5},{"name":"load","labels":{"series":"s2"},"timestamp":10,"value":99}],"skipped":7}"#;
        assert_eq!(scan(m), (2, Some(1234.5), 7));
        assert_eq!(
            scan(r#"{"type":"progress","watermark":1,"published":2}"#),
            (0, None, 0)
        );
    }
}
