//! `tidemark bench latency`: acknowledgement latency and server CPU against
//! the offered rate.
//!
//! Starts `tidemark serve` as a child process with a window pipeline reading
//! all three ingest protocols, then runs the open-loop load generator
//! ([`crate::loadgen`]) in this process at each offered rate in turn, and on
//! past the last one until the server saturates (it acknowledges less than
//! 95% of the offered rate, or refuses or fails batches). Server CPU is read
//! from `/proc/PID/stat` around each step. The load generator shares the
//! machine with the server, as the issue asks. Writes a table to
//! `docs/benchmarks.md` and a chart (plotters) to `docs/latency.png`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::loadgen::{LoadOptions, LoadProtocol, LoadReport, run_load};

/// Options of `tidemark bench latency`.
#[derive(Clone, Debug, clap::Args)]
pub struct LatencyOptions {
    /// Offered rates in samples per second, measured in this order.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000.0f64, 10_000.0, 50_000.0, 100_000.0, 200_000.0, 500_000.0, 1_000_000.0, 2_000_000.0])]
    pub rates: Vec<f64>,
    /// How long each rate is offered.
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub duration: Duration,
    /// Protocol offered.
    #[arg(long, value_enum, default_value = "grpc")]
    pub protocol: LoadProtocol,
    /// Samples per request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Batch sizes also measured at 100 K samples/s (latency grows with the batch).
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 250])]
    pub batch_sweep: Vec<usize>,
    /// Load generator connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Distinct series.
    #[arg(long, default_value_t = 10_000)]
    pub series: u64,
    /// Server worker threads (issue 21's goals are for 2).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// The server's `--io-threads` (HTTP and gRPC, ingest decoding).
    #[arg(long, default_value_t = tidemark_server::DEFAULT_IO_THREADS)]
    pub io_threads: usize,
    /// Markdown file whose latency section is rewritten.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub output: PathBuf,
    /// Chart written next to it.
    #[arg(long, default_value = "docs/latency.png")]
    pub chart: PathBuf,
    /// TrueType font for the chart's text.
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    pub font: PathBuf,
    /// Print only; write neither the table nor the chart.
    #[arg(long)]
    pub no_write: bool,
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    tidemark_engine::time::parse_duration(text).map_err(|e| e.to_string())
}

/// One measured step.
#[derive(Clone, Debug)]
pub struct Step {
    /// Samples per request.
    pub batch: usize,
    /// What the load generator saw.
    pub report: LoadReport,
    /// Server CPU over the step, in percent of one core.
    pub server_cpu: f64,
    /// Whether the server kept up.
    pub kept_up: bool,
}

const PIPELINE: &str = "name: latency
sources:
  g: {type: grpc, max_out_of_orderness: 1s}
  rw: {type: remote_write, max_out_of_orderness: 1s}
  o: {type: otlp, max_out_of_orderness: 1s}
transforms:
  w:
    type: window
    inputs: [g, rw, o]
    window: {tumbling: 10s}
    by: [series]
    aggregates: [count, sum, max]
sinks:
  out: {type: blackhole, inputs: [w]}
";

pub(super) struct ServerChild {
    pub(super) child: Child,
    pub(super) http: String,
    pub(super) grpc: String,
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `tidemark serve` with `workers` and applies `pipeline`.
pub(super) fn start_server(workers: usize, pipeline: &str) -> anyhow::Result<ServerChild> {
    start_server_with(workers, &[], Some(pipeline))
}

/// Starts `tidemark serve` with `workers` and `args`, and applies
/// `pipeline` if given.
pub(super) fn start_server_with(
    workers: usize,
    args: &[&str],
    pipeline: Option<&str>,
) -> anyhow::Result<ServerChild> {
    let (http, grpc) = (free_port()?, free_port()?);
    let child = Command::new(std::env::current_exe()?)
        .args(["serve", "--workers", &workers.to_string()])
        .args(args)
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--grpc", &format!("127.0.0.1:{grpc}")])
        .env("TIDEMARK_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let server = ServerChild {
        child,
        http: format!("http://127.0.0.1:{http}"),
        grpc: format!("http://127.0.0.1:{grpc}"),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = agent.get(&format!("{}/readyz", server.http)).call()
            && r.status() == 200
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the server did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(pipeline) = pipeline else {
        return Ok(server);
    };
    let mut r = agent
        .post(&format!("{}/api/v1/pipelines", server.http))
        .header("content-type", "application/yaml")
        .send(pipeline)?;
    anyhow::ensure!(
        r.status() == 201 || r.status() == 200,
        "applying the pipeline failed: {}",
        r.body_mut().read_to_string().unwrap_or_default()
    );
    Ok(server)
}

/// CPU seconds (user + system) a process has used.
pub(super) fn cpu_seconds(pid: u32, ticks_per_second: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / ticks_per_second)
}

pub(super) fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Runs `load` against `server`; returns the report and the server's CPU
/// over the run, in percent of one core.
pub(super) fn load_with_cpu(
    server: &ServerChild,
    load: &LoadOptions,
) -> anyhow::Result<(LoadReport, f64)> {
    let tps = ticks_per_second();
    let pid = server.child.id();
    let (cpu0, t0) = (cpu_seconds(pid, tps)?, Instant::now());
    let report = run_load(load)?;
    let cpu = 100.0 * (cpu_seconds(pid, tps)? - cpu0) / t0.elapsed().as_secs_f64();
    Ok((report, cpu))
}

fn measure(
    server: &ServerChild,
    options: &LatencyOptions,
    rate: f64,
    batch: usize,
) -> anyhow::Result<Step> {
    let load = LoadOptions {
        protocol: options.protocol,
        target: match options.protocol {
            LoadProtocol::RemoteWrite => server.http.clone(),
            LoadProtocol::Grpc | LoadProtocol::Otlp => server.grpc.clone(),
        },
        rate,
        series: options.series,
        batch,
        connections: options.connections,
        duration: options.duration,
        metric: "loadgen_value".into(),
        token: None,
    };
    let (report, server_cpu) = load_with_cpu(server, &load)?;
    let kept_up = report.achieved_rate >= 0.95 * rate
        && report.batches_refused == 0
        && report.batches_failed == 0;
    eprintln!(
        "{:>9.0}/s batch {batch:>5}: achieved {:>9.0}/s, p50 {:>8.3} ms, p99 {:>8.3} ms, p99.9 {:>8.3} ms, server CPU {:>5.1}%{}",
        rate,
        report.achieved_rate,
        report.p50_ms,
        report.p99_ms,
        report.p999_ms,
        server_cpu,
        if kept_up { "" } else { "  (saturated)" }
    );
    // Let queues drain before the next step.
    std::thread::sleep(Duration::from_secs(1));
    Ok(Step {
        batch,
        report,
        server_cpu,
        kept_up,
    })
}

/// Runs the benchmark.
pub fn latency(options: &LatencyOptions) -> anyhow::Result<()> {
    let font: Option<&'static [u8]> = if options.no_write {
        None
    } else {
        let bytes = std::fs::read(&options.font).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the chart font {}: {e} (install it with `apt-get install fonts-dejavu-core`, pass --font, or use --no-write)",
                options.font.display()
            )
        })?;
        Some(Box::leak(bytes.into_boxed_slice()))
    };
    let server = start_server_with(
        options.workers,
        &["--io-threads", &options.io_threads.to_string()],
        Some(PIPELINE),
    )?;
    eprintln!(
        "Server: {} workers; load: {}, {} connections, {} series, {:?} per rate.",
        options.workers,
        options.protocol.name(),
        options.connections,
        options.series,
        options.duration
    );
    // Warm up: connections, the series cache, the window's state.
    let _ = measure(&server, options, 10_000.0, options.batch)?;
    let mut steps = Vec::new();
    let mut rates = options.rates.clone();
    let mut i = 0;
    while i < rates.len() {
        let step = measure(&server, options, rates[i], options.batch)?;
        let kept_up = step.kept_up;
        steps.push(step);
        if !kept_up {
            break;
        }
        if i + 1 == rates.len() && rates.len() < options.rates.len() + 10 {
            // On past the list until the server saturates.
            rates.push(rates[i] * 1.5);
        }
        i += 1;
    }
    let mut sweep = Vec::new();
    for &batch in &options.batch_sweep {
        sweep.push(measure(&server, options, 100_000.0, batch)?);
    }
    drop(server);

    let md = markdown(options, &steps, &sweep);
    eprintln!("\n{md}");
    if let Some(font) = font {
        chart(&options.chart, font, &steps)?;
        eprintln!("Wrote {}.", options.chart.display());
        crate::write_section(&options.output, "latency", &md)?;
        eprintln!("Wrote {}.", options.output.display());
    }
    Ok(())
}

fn rate_label(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{} M", trim(rate / 1e6))
    } else if rate >= 1e3 {
        format!("{} K", trim(rate / 1e3))
    } else {
        trim(rate)
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn markdown(options: &LatencyOptions, steps: &[Step], sweep: &[Step]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured {} with `tidemark bench latency` (release build): `tidemark serve --workers {} --io-threads {}` with a 10 s tumbling window by series (count, sum, max) into a discard sink; the load generator in the benchmark's own process, on the same 2-core machine, offering `{}` batches of {} samples over {} series on {} connections (one request in flight each), {} s per rate. Latency runs from each batch's due time to its acknowledgement (open loop, HDR histogram). Server CPU is user + system time of the server process over the step, in percent of one core. Chart: [latency.png](latency.png).\n",
        tidemark_engine::time::format_millis(tidemark_engine::time::now_millis()),
        options.workers,
        options.io_threads,
        options.protocol.name(),
        options.batch,
        options.series,
        options.connections,
        options.duration.as_secs_f64(),
    );
    let header = "| offered samples/s | batch | achieved samples/s | p50 ms | p90 ms | p99 ms | p99.9 ms | server CPU | |\n|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
    let row = |md: &mut String, s: &Step| {
        let r = &s.report;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0}% | {} |",
            rate_label(r.offered_rate),
            s.batch,
            rate_label(r.achieved_rate),
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.p999_ms,
            s.server_cpu,
            if s.kept_up {
                String::new()
            } else if r.batches_refused > 0 {
                format!("saturated: {} batches refused", r.batches_refused)
            } else {
                "saturated".into()
            }
        );
    };
    md.push_str(header);
    for s in steps {
        row(&mut md, s);
    }
    let target = |rate: f64, p99: f64| -> String {
        match steps
            .iter()
            .find(|s| (s.report.offered_rate - rate).abs() < 1.0)
        {
            Some(s) if s.kept_up && s.report.p99_ms <= p99 => {
                format!("met (p99 {:.2} ms)", s.report.p99_ms)
            }
            Some(s) if s.kept_up => format!("missed (p99 {:.2} ms)", s.report.p99_ms),
            Some(_) => "missed (saturated)".into(),
            None => "not measured".into(),
        }
    };
    let _ = writeln!(
        md,
        "\nTargets (issue 4): 1 M samples/s sustained with p99 <= 10 ms: {}; p99 <= 2 ms at 100 K samples/s: {}.",
        target(1e6, 10.0),
        target(1e5, 2.0)
    );
    let _ = writeln!(
        md,
        "\nGoals (issue 21, on a server of 2 workers{}): 2 M samples/s sustained with p99 <= 10 ms: {}; p99 <= 2 ms at 100 K samples/s with {}-sample batches: {}.\n",
        if options.workers == 2 {
            String::new()
        } else {
            format!("; this run had {}", options.workers)
        },
        target(2e6, 10.0),
        options.batch,
        target(1e5, 2.0)
    );
    if !sweep.is_empty() {
        let _ = writeln!(
            md,
            "At 100 K samples/s with smaller batches (the latency of a request grows with the samples in it):\n"
        );
        md.push_str(header);
        for s in sweep {
            row(&mut md, s);
        }
    }
    md
}

fn chart(path: &Path, font: &'static [u8], steps: &[Step]) -> anyhow::Result<()> {
    use plotters::prelude::*;
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("the chart font is not a TrueType font"))?;
    let max_rate = steps
        .iter()
        .map(|s| s.report.offered_rate)
        .fold(1e6, f64::max)
        * 1.5;
    let max_p99 = steps.iter().map(|s| s.report.p99_ms).fold(10.0, f64::max) * 2.0;
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Tidemark ingest: p99 ack latency and server CPU vs offered rate",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .right_y_label_area_size(65)
        .build_cartesian_2d(
            (500f64..max_rate).log_scale(),
            (0.05f64..max_p99).log_scale(),
        )?
        .set_secondary_coord((500f64..max_rate).log_scale(), 0f64..200f64);
    chart
        .configure_mesh()
        .x_desc("offered samples/s")
        .y_desc("p99 latency (ms)")
        .x_label_formatter(&|x| rate_label(*x))
        .label_style(("sans-serif", 14))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("server CPU (% of one core)")
        .label_style(("sans-serif", 14))
        .draw()?;
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    chart
        .draw_series(LineSeries::new(
            steps
                .iter()
                .map(|s| (s.report.offered_rate, s.report.p99_ms)),
            blue.stroke_width(2),
        ))?
        .label("p99 ack latency (ms)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2)));
    chart.draw_series(
        steps
            .iter()
            .map(|s| Circle::new((s.report.offered_rate, s.report.p99_ms), 4, blue.filled())),
    )?;
    chart
        .draw_secondary_series(LineSeries::new(
            steps.iter().map(|s| (s.report.offered_rate, s.server_cpu)),
            orange.stroke_width(2),
        ))?
        .label("server CPU (%)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], orange.stroke_width(2)));
    chart.draw_secondary_series(
        steps
            .iter()
            .map(|s| Circle::new((s.report.offered_rate, s.server_cpu), 4, orange.filled())),
    )?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}
