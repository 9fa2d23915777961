//! Running a compiled pipeline: start the workers, show progress, stop on
//! Ctrl-C or SIGTERM (sources stop, open windows flush, sinks drain), and
//! report what happened.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use tidemark_engine::component::{Shutdown, StdoutWriter};
use tidemark_engine::flow::DEFAULT_MAX_IN_FLIGHT;
use tidemark_engine::runtime::{Cluster, execute};
use tidemark_engine::stats::{PipelineStats, Totals};
use tidemark_engine::time::format_millis;

use tidemark_engine::live::LiveHub;

use crate::build::{Env, build};
use crate::plan::Plan;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A progress line on a terminal, log lines otherwise.
    Auto,
    /// Always the progress line.
    Bar,
    /// Log lines every 10 seconds.
    Log,
    /// Nothing while running.
    Off,
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Workers and processes.
    pub cluster: Cluster,
    /// Progress display.
    pub progress: ProgressMode,
    /// Records each source instance may have in flight.
    pub max_in_flight: u64,
    /// Where to serve the dashboard and `/ws` for the pipeline's
    /// `websocket` sinks (nothing is served without one).
    pub http: Option<std::net::SocketAddr>,
    /// Whether `http` was asked for: then a listener that cannot bind
    /// stops the run; otherwise (the default address) the run goes on
    /// without it, with a warning.
    pub http_required: bool,
    /// Stop (as on Ctrl-C) once the sources have taken this many samples;
    /// the reported time is when they had. For benchmarks of endless
    /// sources.
    pub stop_after_samples: Option<u64>,
}

impl RunOptions {
    /// One process with `workers` threads, no progress display.
    pub fn quiet(workers: usize) -> RunOptions {
        RunOptions {
            cluster: Cluster::local(workers),
            progress: ProgressMode::Off,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            http: None,
            http_required: false,
            stop_after_samples: None,
        }
    }
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// Totals in this process.
    pub totals: Totals,
    /// Errors talking to files or systems.
    pub errors: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Whether the run was stopped by a signal.
    pub interrupted: bool,
}

fn current_shutdown() -> &'static Mutex<Option<Shutdown>> {
    static CURRENT: OnceLock<Mutex<Option<Shutdown>>> = OnceLock::new();
    CURRENT.get_or_init(|| Mutex::new(None))
}

/// Installs the Ctrl-C / SIGTERM handler once per process: the first signal
/// stops the running pipeline gracefully, a second one exits at once.
fn install_signal_handler() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let result = ctrlc::set_handler(|| {
            let current = current_shutdown().lock().unwrap_or_else(|e| e.into_inner()).clone();
            match current {
                Some(s) if !s.is_triggered() => {
                    // Stop first: with standard error closed (a pipe whose
                    // reader left), eprintln! would panic this thread and
                    // the signal would be lost.
                    s.trigger();
                    let _ = writeln!(
                        std::io::stderr(),
                        "\nStopping: finite sources close their windows and sinks flush; Kafka sources commit what is durable and leave open windows to the next run (press Ctrl-C again to exit now)."
                    );
                }
                _ => std::process::exit(130),
            }
        });
        if let Err(error) = result {
            tracing::warn!(%error, "Cannot install the signal handler; Ctrl-C will stop the process at once.");
        }
    });
}

fn human(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}K", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

fn progress_line(t: &Totals, rate: f64) -> String {
    let watermark = t
        .watermark
        .map_or("done".to_owned(), |w| format_millis(w as i64));
    format!(
        "in {} ({}/s) | out {} | watermark {} | late {} | rejected {}",
        human(t.samples_in as f64),
        human(rate),
        human(t.samples_out as f64),
        watermark,
        t.late,
        t.rejected
    )
}

/// Runs a pipeline in this process (one process of a cluster when the
/// options name several) until its sources end or a signal stops it.
pub fn run(plan: Plan, options: RunOptions) -> anyhow::Result<RunReport> {
    let network = plan.network_sources();
    anyhow::ensure!(
        network.is_empty(),
        "sources {} read the server's network listeners: apply this pipeline to `tidemark serve`",
        network.join(", ")
    );
    let workers = options.cluster.workers;
    let stats = PipelineStats::new(&plan.name, workers);
    let shutdown = Shutdown::default();
    *current_shutdown().lock().unwrap_or_else(|e| e.into_inner()) = Some(shutdown.clone());
    install_signal_handler();

    let bar = match options.progress {
        ProgressMode::Bar => true,
        ProgressMode::Auto => std::io::stderr().is_terminal(),
        _ => false,
    }
    .then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let out_bar = bar.clone();
    let stdout: StdoutWriter = Arc::new(move |bytes: &[u8]| {
        let write = || {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(bytes).and_then(|()| out.flush());
        };
        match &out_bar {
            Some(b) => b.suspend(write),
            None => write(),
        }
    });
    let live: Arc<LiveHub> = Arc::default();
    let listener = match options.http {
        Some(addr) if !plan.websocket_sinks().is_empty() => {
            match LiveListener::start(addr, Arc::clone(&live)) {
                Ok(l) => Some(l),
                Err(e) if options.http_required => return Err(e),
                Err(error) => {
                    tracing::warn!(%error, "Running without the dashboard.");
                    None
                }
            }
        }
        _ => None,
    };
    let env = Env {
        stats: Arc::clone(&stats),
        shutdown: shutdown.clone(),
        stdout,
        max_in_flight: options.max_in_flight,
        clock: Arc::default(),
        ingest: None,
        resume: Arc::default(),
        live,
    };
    let plan = Arc::new(plan);
    let started = Instant::now();
    tracing::info!(
        pipeline = %plan.name,
        workers,
        processes = options.cluster.processes(),
        process = options.cluster.process,
        "Starting."
    );
    let worker_plan = Arc::clone(&plan);
    let running = execute(&options.cluster, move |worker| {
        let built = build(worker, &worker_plan, &env);
        let local = worker.index() % workers;
        while !built.sinks.done() {
            worker.step_or_park(Some(Duration::from_millis(50)));
            let w = built.sources.with_frontier(|f| f.iter().min().copied());
            env.stats.set_watermark(local, w);
        }
        env.stats.set_watermark(local, None);
    })?;

    let mut last_log = Instant::now();
    let mut last_shown = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut rate = 0.0;
    let mut reached: Option<Duration> = None;
    // Poll often so that the measured elapsed time is precise; refresh the
    // display five times a second.
    while !running.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
        if let Some(n) = options.stop_after_samples
            && reached.is_none()
            && stats.totals().samples_in >= n
        {
            reached = Some(started.elapsed());
            shutdown.trigger();
        }
        if last_shown.elapsed() < Duration::from_millis(200) {
            continue;
        }
        last_shown = Instant::now();
        let t = stats.totals();
        let dt = last.0.elapsed().as_secs_f64();
        if dt >= 1.0 {
            rate = (t.samples_in - last.1) as f64 / dt;
            last = (Instant::now(), t.samples_in);
        }
        match (&bar, options.progress) {
            (Some(b), _) => b.set_message(progress_line(&t, rate)),
            (None, ProgressMode::Auto | ProgressMode::Log)
                if last_log.elapsed() >= Duration::from_secs(10) =>
            {
                last_log = Instant::now();
                tracing::info!(
                    samples_in = t.samples_in,
                    rate = rate.round(),
                    samples_out = t.samples_out,
                    watermark = %t.watermark.map_or("done".to_owned(), |w| format_millis(w as i64)),
                    late = t.late,
                    rejected = t.rejected,
                    "Running."
                );
            }
            _ => {}
        }
    }
    let elapsed = reached.unwrap_or_else(|| started.elapsed());
    running.join()?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    *current_shutdown().lock().unwrap_or_else(|e| e.into_inner()) = None;
    drop(listener);

    let totals = stats.totals();
    let (mut errors, mut retries) = (0, 0);
    for (name, role, s) in stats.components() {
        errors += s.errors.load(std::sync::atomic::Ordering::Relaxed);
        retries += s.retries.load(std::sync::atomic::Ordering::Relaxed);
        for (reason, n) in s.drop_counts() {
            tracing::warn!(component = %name, role = role.as_str(), reason = reason.as_str(), count = n, "Dropped samples.");
        }
    }
    tracing::info!(
        pipeline = %plan.name,
        seconds = format!("{:.2}", elapsed.as_secs_f64()),
        samples_in = totals.samples_in,
        rate = (totals.samples_in as f64 / elapsed.as_secs_f64().max(1e-9)).round(),
        samples_out = totals.samples_out,
        late = totals.late,
        rejected = totals.rejected,
        corrections = totals.corrections,
        errors,
        retries,
        "Finished."
    );
    Ok(RunReport {
        totals,
        errors,
        elapsed,
        interrupted: shutdown.is_triggered(),
    })
}

/// The HTTP listener of `tidemark run` for a pipeline with `websocket`
/// sinks: the dashboard, `/api/v1/live` and `/ws` (no tokens: bind it to a
/// loopback address, the default, or put it behind a proxy). It stops with
/// the run.
struct LiveListener {
    runtime: Option<tokio::runtime::Runtime>,
}

impl LiveListener {
    fn start(addr: std::net::SocketAddr, hub: Arc<LiveHub>) -> anyhow::Result<LiveListener> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tidemark-http")
            .enable_all()
            .build()?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot serve the dashboard on {addr}: {e} (choose another address with --http, e.g. --http 127.0.0.1:0)"
                )
            })?;
        let bound = listener.local_addr()?;
        tracing::info!(http = %bound, "Listening.");
        tracing::info!("Dashboard: http://{bound}/");
        let router = crate::server::live::router(crate::server::live::LiveState {
            hub,
            auth: Arc::default(),
            control: None,
        });
        runtime.spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::warn!(%error, "The dashboard listener stopped.");
            }
        });
        Ok(LiveListener {
            runtime: Some(runtime),
        })
    }
}

impl Drop for LiveListener {
    fn drop(&mut self) {
        // Open subscriptions end with the process; do not wait for them.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
