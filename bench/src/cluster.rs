//! Two processes of one worker against one process of two: the window
//! benchmark's pipeline run by `tidemark run` children, once with
//! `--workers 2` and once as a cluster of two processes on loopback (a host
//! file, `--process 0` and `1`), so that both pay the same start-up and
//! only the exchange between workers differs: in one process records move
//! between threads as they are; across processes every record that changes
//! worker is serialised, sent over TCP and deserialised.

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::window::median;

/// One measured configuration.
pub struct ClusterRow {
    /// Series of the generator.
    pub series: u64,
    /// The window's `pre_aggregate`: `auto` (the default) or `false`.
    pub pre_aggregate: &'static str,
    /// Median samples/s of one process with two workers.
    pub one_process: f64,
    /// Median samples/s of two processes with one worker each.
    pub two_processes: f64,
    /// Every run's rates, one process then two, for the log.
    pub runs: (Vec<f64>, Vec<f64>),
}

/// The pipeline: the window benchmark's generator into a 10 s tumbling
/// window per series with count,sum,min,max,avg, output discarded.
fn pipeline(series: u64, ticks: u64, pre_aggregate: &str) -> String {
    format!(
        "name: bench-cluster
sources:
  gen:
    type: generator
    series: {series}
    interval: 1s
    start: 2026-01-01T00:00:00Z
    samples: {ticks}
    rate: 0
    seed: 1
transforms:
  w:
    type: window
    inputs: [gen]
    window: {{tumbling: 10s}}
    aggregates: [count, sum, min, max, avg]
    pre_aggregate: {pre_aggregate}
sinks:
  out:
    type: blackhole
    inputs: [w]
"
    )
}

/// Starts `tidemark run` on `yaml` with `args`, logging JSON at info.
fn spawn(yaml: &std::path::Path, args: &[String]) -> anyhow::Result<Child> {
    Command::new(std::env::current_exe()?)
        .args(["--log-format", "json", "run", "--progress", "off"])
        .arg(yaml)
        .args(args)
        .env("TIDEMARK_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start tidemark run")
}

/// Waits for a child and reads its `Finished.` line: samples taken by its
/// sources and seconds from its start to the end of the run.
fn finish(mut child: Child) -> anyhow::Result<(u64, f64)> {
    let mut log = String::new();
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut log)?;
    }
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "tidemark run failed ({status}):\n{log}");
    for line in log.lines().rev() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let fields = &v["fields"];
        if fields["message"] == "Finished." {
            let samples = fields["samples_in"]
                .as_u64()
                .context("Finished. without samples_in")?;
            let seconds: f64 = fields["seconds"]
                .as_str()
                .context("Finished. without seconds")?
                .parse()?;
            return Ok((samples, seconds));
        }
    }
    anyhow::bail!("tidemark run printed no Finished. line:\n{log}")
}

/// Samples/s of one run: the samples of every process over the slowest
/// process's time.
fn rate(parts: Vec<(u64, f64)>) -> f64 {
    let samples: u64 = parts.iter().map(|p| p.0).sum();
    let seconds = parts.iter().map(|p| p.1).fold(0.0, f64::max);
    samples as f64 / seconds.max(1e-9)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Measures both configurations `repeats` times each, alternating, with the
/// window's `pre_aggregate` as given.
pub fn measure(
    series: u64,
    samples: u64,
    repeats: usize,
    pre_aggregate: &'static str,
) -> anyhow::Result<ClusterRow> {
    let dir = std::env::temp_dir().join(format!("tidemark-bench-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let row = runs(&dir, series, samples, repeats, pre_aggregate);
    let _ = std::fs::remove_dir_all(&dir);
    row
}

fn runs(
    dir: &std::path::Path,
    series: u64,
    samples: u64,
    repeats: usize,
    pre_aggregate: &'static str,
) -> anyhow::Result<ClusterRow> {
    let yaml = dir.join("pipeline.yaml");
    let ticks = (samples / series).max(1);
    std::fs::write(&yaml, pipeline(series, ticks, pre_aggregate))?;
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for _ in 0..repeats.max(1) {
        let child = spawn(&yaml, &["--workers".into(), "2".into()])?;
        one.push(rate(vec![finish(child)?]));

        let hosts = dir.join("hosts");
        std::fs::write(
            &hosts,
            format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port()?, free_port()?),
        )?;
        let args = |process: usize| {
            vec![
                "--hostfile".to_owned(),
                hosts.display().to_string(),
                "--process".to_owned(),
                process.to_string(),
            ]
        };
        let (p0, p1) = (spawn(&yaml, &args(0))?, spawn(&yaml, &args(1))?);
        // Each child's log is read on its own thread, so neither blocks on
        // a full pipe while the other is waited for.
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| finish(p0));
            let b = finish(p1);
            (a.join(), b)
        });
        let a = a.map_err(|_| anyhow::anyhow!("reading process 0's log panicked"))?;
        two.push(rate(vec![a?, b?]));
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(ClusterRow {
        series,
        pre_aggregate,
        one_process: median(one.clone()),
        two_processes: median(two.clone()),
        runs: (one, two),
    })
}
