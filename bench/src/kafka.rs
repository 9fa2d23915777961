//! `tidemark bench kafka`: how fast the `kafka` source consumes.
//!
//! Produces `--samples` JSON samples (`--per-message` lines a message, the
//! series spread over `--partitions`) into a new topic once, then for each
//! worker count reads the whole topic with a fresh consumer group into the
//! discard sink, with and without a 10 s tumbling window per series. The
//! time runs from the start of the run to the moment the source has taken
//! every sample; each figure is the median of `--repeats` runs in one
//! invocation. The table goes to `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

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
    /// JSON lines in a message.
    #[arg(long, default_value_t = 100)]
    pub per_message: usize,
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

/// Produces the samples; returns the seconds it took.
fn produce(options: &KafkaBenchOptions, topic: &str) -> anyhow::Result<f64> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &options.brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()?;
    let started = Instant::now();
    let now = tidemark_engine::time::now_millis();
    let base = (now - 3_600_000) / 1000 * 1000;
    let ticks = options.samples.div_ceil(options.series);
    let mut lines: Vec<Vec<String>> = vec![Vec::new(); options.partitions as usize];
    let mut sent = 0u64;
    let send = |partition: usize, lines: &mut Vec<String>| -> anyhow::Result<()> {
        let payload = lines.join("\n");
        lines.clear();
        let mut record = BaseRecord::<(), str>::to(topic)
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
            lines[p].push(format!(
                r#"{{"name":"bench","labels":{{"series":"s{s}"}},"timestamp":{},"value":{}}}"#,
                base + k as i64 * 1000,
                (s + k) % 100
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
        "name: bench-kafka\nsources:\n  k:\n    type: kafka\n    brokers: {}\n    topics: [{topic}]\n    group: {group}\n    checkpoint_topic: {topic}-checkpoints\n{option}{transform}sinks:\n  out:\n    type: blackhole\n    inputs: [{}]\n",
        options.brokers,
        if window { "w" } else { "k" }
    )
}

/// Runs the benchmark, prints the table and writes it.
pub fn kafka(options: &KafkaBenchOptions) -> anyhow::Result<()> {
    let topic = format!("tidemark-bench-{}", tidemark_engine::time::now_millis());
    create_topic(&options.brokers, &topic, options.partitions)?;
    let produce_seconds = produce(options, &topic)?;
    eprintln!(
        "Produced {} samples to {topic} in {produce_seconds:.1} s ({:.2} M samples/s).",
        options.samples,
        options.samples as f64 / produce_seconds / 1e6
    );
    let mut rows = Vec::new();
    let mut group = 0;
    let settings: Vec<Option<&str>> = std::iter::once(None)
        .chain(options.option.iter().map(|o| Some(o.as_str())))
        .collect();
    for &workers in &options.workers {
        for &option in &settings {
            for window in [false, true] {
                let mut rates = Vec::new();
                for _ in 0..options.repeats.max(1) {
                    group += 1;
                    let text =
                        pipeline(options, &topic, &format!("{topic}-{group}"), window, option);
                    let plan = compile("bench.yaml", &text)
                        .map_err(|e| anyhow::anyhow!("benchmark pipeline: {e:?}"))?;
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
                    rates.push(options.samples as f64 / report.elapsed.as_secs_f64());
                }
                let rate = crate::window::median(rates.clone());
                let label = if window {
                    "10 s window per series -> discard"
                } else {
                    "discard"
                };
                let setting = option.unwrap_or("librdkafka defaults");
                eprintln!(
                    "workers {workers}  {setting:<24} {label:<34} {:>6.2} M samples/s (runs: {})",
                    rate / 1e6,
                    rates
                        .iter()
                        .map(|r| format!("{:.2}", r / 1e6))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                rows.push((workers, setting, label, rate));
            }
        }
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured {} with `tidemark bench kafka --samples {} --series {} --partitions {} --per-message {} --repeats {}` \
         (release build) against tansu 0.6 in memory on the same machine (`deploy/tansu.sh start 19092`): JSON samples, \
         {} lines a message, read from the start of the topic by a fresh consumer group. Time from the start of the run \
         until the source has taken every sample; median of {} runs in one invocation. Producing them took {:.1} s \
         ({:.2} M samples/s, librdkafka).\n",
        tidemark_engine::time::format_millis(tidemark_engine::time::now_millis()),
        options.samples,
        options.series,
        options.partitions,
        options.per_message,
        options.repeats,
        options.per_message,
        options.repeats,
        produce_seconds,
        options.samples as f64 / produce_seconds / 1e6
    );
    let _ = writeln!(
        md,
        "| workers | consumer settings | pipeline | samples/s | per worker |"
    );
    let _ = writeln!(md, "|---:|---|---|---:|---:|");
    for (workers, setting, label, rate) in &rows {
        let _ = writeln!(
            md,
            "| {workers} | {setting} | kafka -> {label} | {:.2} M | {:.2} M |",
            rate / 1e6,
            rate / 1e6 / *workers as f64
        );
    }
    eprintln!("\n{md}");
    if !options.no_write {
        crate::write_section(&options.output, "kafka", &md)?;
        eprintln!("Wrote {}.", options.output.display());
    }
    Ok(())
}
