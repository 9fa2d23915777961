//! `tidemark bench kafka`: how fast the `kafka` source consumes.
//!
//! For each `--formats` (JSON lines, the Tidemark protobuf) produces
//! `--samples` samples (`--per-message` a message, the series spread over
//! `--partitions`) into a new topic once, then for each worker count reads
//! the whole topic with a fresh consumer group into the discard sink, with
//! and without a 10 s tumbling window per series. The time runs from the
//! start of the run to the moment the source has taken every sample; each
//! figure is the median of `--repeats` runs in one invocation, beside the
//! share of a core the broker (a local `tansu` process, if found) used
//! meanwhile. The table goes to `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use tidemark_codecs::Codec;
use tidemark_engine::{Sample, Series};
use tidemark_pipelines::compile;
use tidemark_pipelines::run::{RunOptions, run};

/// Options of `tidemark bench kafka`.
#[derive(Clone, Debug, clap::Args)]
pub struct KafkaBenchOptions {
    /// Bootstrap brokers (`deploy/tansu.sh start 19092` starts one).
    #[arg(long, env = "TIDEMARK_KAFKA", default_value = "127.0.0.1:19092")]
    pub brokers: String,
    /// Samples to produce and read.
    #[arg(long, default_value_t = 2_000_000)]
    pub samples: u64,
    /// Series (one sample each per second of event time).
    #[arg(long, default_value_t = 10_000)]
    pub series: u64,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Samples in a message (JSON lines, or series of one point in a
    /// protobuf `WriteRequest`).
    #[arg(long, default_value_t = 100)]
    pub per_message: usize,
    /// Message formats to measure (`json`, `protobuf`).
    #[arg(long, value_delimiter = ',', default_values_t = ["json".to_owned(), "protobuf".to_owned()])]
    pub formats: Vec<String>,
    /// Worker counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    pub workers: Vec<usize>,
    /// Runs per configuration; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// librdkafka consumer properties to measure besides the defaults, as
    /// `key=value` (each a row of its own).
    #[arg(long, value_delimiter = ',', default_values_t = ["fetch.wait.max.ms=10".to_owned()])]
    pub option: Vec<String>,
    /// Markdown file whose kafka section is rewritten.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub output: PathBuf,
    /// Print only; do not write the file.
    #[arg(long)]
    pub no_write: bool,
}

fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in futures_executor::block_on(admin.create_topics([&new], &options))? {
        r.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}"))?;
    }
    Ok(())
}

/// A message of `samples` in `format`.
fn payload(format: Codec, samples: &[Sample]) -> Vec<u8> {
    match format {
        Codec::Protobuf => {
            let mut out = Vec::new();
            tidemark_codecs::ingest::encode_all(samples, &mut out);
            out
        }
        _ => {
            let mut out = Vec::new();
            for s in samples {
                tidemark_codecs::encode(Codec::Json, s, &mut out);
                out.push(b'\n');
            }
            out.pop();
            out
        }
    }
}

/// Produces the samples; returns the seconds it took.
fn produce(options: &KafkaBenchOptions, topic: &str, format: Codec) -> anyhow::Result<f64> {
    // One message per record batch: tansu 0.6 returns nothing when a fetch
    // starts inside the last batch of a partition, which a consumer that
    // paused for backpressure and resumed does (the tail was never read).
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &options.brokers)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .create()?;
    let started = Instant::now();
    let now = tidemark_engine::time::now_millis();
    let base = (now - 3_600_000) / 1000 * 1000;
    let ticks = options.samples.div_ceil(options.series);
    let mut lines: Vec<Vec<Sample>> = vec![Vec::new(); options.partitions as usize];
    let mut sent = 0u64;
    let send = |partition: usize, lines: &mut Vec<Sample>| -> anyhow::Result<()> {
        let payload = payload(format, lines);
        lines.clear();
        let mut record = BaseRecord::<(), [u8]>::to(topic)
            .partition(partition as i32)
            .payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    producer.poll(Duration::from_millis(10));
                    record = r;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        producer.poll(Duration::ZERO);
        Ok(())
    };
    'done: for k in 0..ticks {
        for s in 0..options.series {
            if sent == options.samples {
                break 'done;
            }
            let p = (s % options.partitions as u64) as usize;
            lines[p].push(Sample::new(
                Series::new("bench", [("series", format!("s{s}"))]),
                base + k as i64 * 1000,
                ((s + k) % 100) as f64,
            ));
            sent += 1;
            if lines[p].len() == options.per_message {
                send(p, &mut lines[p])?;
            }
        }
    }
    for (p, l) in lines.iter_mut().enumerate() {
        if !l.is_empty() {
            send(p, l)?;
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(started.elapsed().as_secs_f64())
}

fn pipeline(
    options: &KafkaBenchOptions,
    topic: &str,
    group: &str,
    window: bool,
    option: Option<&str>,
    format: &str,
) -> String {
    let option = match option.and_then(|o| o.split_once('=')) {
        Some((k, v)) => format!("    options: {{{k}: \"{v}\"}}\n"),
        None => String::new(),
    };
    let transform = if window {
        "transforms:\n  w:\n    type: window\n    inputs: [k]\n    window: {tumbling: 10s}\n    aggregates: [count, sum, max]\n"
    } else {
        ""
    };
    format!(
        "name: bench-kafka\nsources:\n  k:\n    type: kafka\n    format: {format}\n    brokers: {}\n    topics: [{topic}]\n    group: {group}\n    checkpoint_topic: {topic}-checkpoints\n{option}{transform}sinks:\n  out:\n    type: blackhole\n    inputs: [{}]\n",
        options.brokers,
        if window { "w" } else { "k" }
    )
}

/// CPU seconds used so far by the local broker (`tansu` processes), if
/// one runs on this machine.
fn broker_cpu_seconds() -> Option<f64> {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if comm.trim() != "tansu" {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // Fields after the command's closing parenthesis; utime and stime
        // are the 14th and 15th of the whole line.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let used = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        *total.get_or_insert(0.0) += (used(11) + used(12)) / ticks;
    }
    total
}

/// Runs the benchmark, prints the table and writes it.
pub fn kafka(options: &KafkaBenchOptions) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut produced = Vec::new();
    let mut group = 0;
    let settings: Vec<Option<&str>> = std::iter::once(None)
        .chain(options.option.iter().map(|o| Some(o.as_str())))
        .collect();
    for format in &options.formats {
        let codec = match format.as_str() {
            "json" => Codec::Json,
            "protobuf" => Codec::Protobuf,
            other => anyhow::bail!("--formats: {other:?} is not json or protobuf"),
        };
        let topic = format!(
            "tidemark-bench-{}-{format}",
            tidemark_engine::time::now_millis()
        );
        create_topic(&options.brokers, &topic, options.partitions)?;
        let produce_seconds = produce(options, &topic, codec)?;
        eprintln!(
            "Produced {} {format} samples to {topic} in {produce_seconds:.1} s ({:.2} M samples/s).",
            options.samples,
            options.samples as f64 / produce_seconds / 1e6
        );
        produced.push(format!(
            "{format} {produce_seconds:.1} s ({:.2} M samples/s)",
            options.samples as f64 / produce_seconds / 1e6
        ));
        for &workers in &options.workers {
            for &option in &settings {
                for window in [false, true] {
                    let mut rates = Vec::new();
                    let mut broker = Vec::new();
                    for _ in 0..options.repeats.max(1) {
                        group += 1;
                        let text = pipeline(
                            options,
                            &topic,
                            &format!("{topic}-{group}"),
                            window,
                            option,
                            format,
                        );
                        let plan = compile("bench.yaml", &text)
                            .map_err(|e| anyhow::anyhow!("benchmark pipeline: {e:?}"))?;
                        let cpu_before = broker_cpu_seconds();
                        let report = run(
                            plan,
                            RunOptions {
                                stop_after_samples: Some(options.samples),
                                ..RunOptions::quiet(workers)
                            },
                        )?;
                        anyhow::ensure!(
                            report.totals.samples_in >= options.samples,
                            "the source took {} of {} samples",
                            report.totals.samples_in,
                            options.samples
                        );
                        if let (Some(a), Some(b)) = (cpu_before, broker_cpu_seconds()) {
                            broker.push((b - a) / report.elapsed.as_secs_f64());
                        }
                        rates.push(options.samples as f64 / report.elapsed.as_secs_f64());
                    }
                    let rate = crate::window::median(rates.clone());
                    let broker = (!broker.is_empty()).then(|| crate::window::median(broker));
                    let label = if window {
                        "10 s window per series -> discard"
                    } else {
                        "discard"
                    };
                    let setting = option.unwrap_or("librdkafka defaults");
                    eprintln!(
                        "{format:<8} workers {workers}  {setting:<24} {label:<34} {:>6.2} M samples/s (runs: {}), broker {}",
                        rate / 1e6,
                        rates
                            .iter()
                            .map(|r| format!("{:.2}", r / 1e6))
                            .collect::<Vec<_>>()
                            .join(", "),
                        broker.map_or("-".to_owned(), |b| format!("{:.0}% of a core", b * 100.0))
                    );
                    rows.push((format.clone(), workers, setting, label, rate, broker));
                }
            }
        }
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured {} with `tidemark bench kafka --samples {} --series {} --partitions {} --per-message {} --formats {} --repeats {}` \
         (release build) against tansu 0.6 in memory on the same machine (`deploy/tansu.sh start 19092`): \
         {} samples a message (JSON lines, or a protobuf `WriteRequest` of one-point series), read from the start of the topic by a fresh \
         consumer group. Messages are produced one per record batch (tansu 0.6 cannot fetch from inside a partition's last batch). \
         Time from the start of the run until the source has taken every sample; median of {} runs in one invocation; the broker column is the CPU the `tansu` process used meanwhile (median), on the same 2 cores. Producing took: {}.\n",
        tidemark_engine::time::format_millis(tidemark_engine::time::now_millis()),
        options.samples,
        options.series,
        options.partitions,
        options.per_message,
        options.formats.join(","),
        options.repeats,
        options.per_message,
        options.repeats,
        produced.join("; "),
    );
    let _ = writeln!(
        md,
        "| format | workers | consumer settings | pipeline | samples/s | per worker | broker CPU |"
    );
    let _ = writeln!(md, "|---|---:|---|---|---:|---:|---:|");
    for (format, workers, setting, label, rate, broker) in &rows {
        let _ = writeln!(
            md,
            "| {format} | {workers} | {setting} | kafka -> {label} | {:.2} M | {:.2} M | {} |",
            rate / 1e6,
            rate / 1e6 / *workers as f64,
            broker.map_or("-".to_owned(), |b| format!("{:.0}%", b * 100.0))
        );
    }
    eprintln!("\n{md}");
    if !options.no_write {
        crate::write_section(&options.output, "kafka", &md)?;
        eprintln!("Wrote {}.", options.output.display());
    }
    Ok(())
}
