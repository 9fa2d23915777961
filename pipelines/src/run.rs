//! Running a compiled pipeline: start the workers, show progress, stop on
//! Ctrl-C or SIGTERM (sources stop, open windows flush, sinks drain), and
//! report what happened.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use tidemark_engine::component::{Failure, Shutdown, StdoutWriter};
use tidemark_engine::flow::DEFAULT_MAX_IN_FLIGHT;
use tidemark_engine::runtime::{Cluster, execute};
use tidemark_engine::stats::{PipelineStats, Role, Totals};
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
    /// The dashboard and `/ws` for the pipeline's `websocket` sinks
    /// (nothing is served without one).
    pub dashboard: Option<Dashboard>,
    /// Stop (as on Ctrl-C) once the sources have taken this many samples;
    /// the reported time is when they had. For benchmarks of endless
    /// sources.
    pub stop_after_samples: Option<u64>,
    /// How long a graceful stop may take: past it the run returns an error
    /// that says what was not written (a sink whose store is gone retries
    /// until then).
    pub shutdown_timeout: Duration,
}

/// The default of [`RunOptions::shutdown_timeout`], as `serve`'s.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

impl RunOptions {
    /// One process with `workers` threads, no progress display.
    pub fn quiet(workers: usize) -> RunOptions {
        RunOptions {
            cluster: Cluster::local(workers),
            progress: ProgressMode::Off,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            dashboard: None,
            stop_after_samples: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

/// Starts a listener that serves a run's live hub (the dashboard, `/ws`);
/// what it returns keeps it open until dropped. `tidemark-server` provides
/// one, so this crate needs no HTTP stack.
pub type ServeLive = fn(std::net::SocketAddr, Arc<LiveHub>) -> anyhow::Result<Box<dyn Send>>;

/// Where and how a run serves its dashboard.
#[derive(Clone, Debug)]
pub struct Dashboard {
    /// The address to listen on.
    pub addr: std::net::SocketAddr,
    /// Whether the address was asked for: then a listener that cannot bind
    /// stops the run; otherwise (the default address) the run goes on
    /// without it, with a warning.
    pub required: bool,
    /// The listener.
    pub serve: ServeLive,
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

/// How soon after the first signal a second one is taken as the same
/// request: GNU `timeout` (without `--foreground`) and some supervisors
/// signal the process and its group back to back.
const REPEAT: Duration = Duration::from_secs(1);

/// Installs the Ctrl-C / SIGTERM handler once per process: the first signal
/// stops the running pipeline gracefully, a second one (more than a second
/// later) exits at once.
fn install_signal_handler() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    static FIRST: OnceLock<Instant> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let result = ctrlc::set_handler(|| {
            let current = current_shutdown().lock().unwrap_or_else(|e| e.into_inner()).clone();
            let first = *FIRST.get_or_init(Instant::now);
            match current {
                Some(s) if s.is_triggered() && first.elapsed() < REPEAT => {}
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

/// What each sink took and has not written yet, for the message of a
/// stop that timed out.
fn unwritten(stats: &PipelineStats) -> String {
    let pending: Vec<String> = stats
        .components()
        .into_iter()
        .filter(|(_, role, _)| *role == Role::Sink)
        .map(|(name, _, s)| {
            let received = s.received.load(std::sync::atomic::Ordering::Relaxed);
            let sent = s.sent.load(std::sync::atomic::Ordering::Relaxed);
            (name, received.saturating_sub(sent))
        })
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("sink {name:?} holds {n} samples"))
        .collect();
    if pending.is_empty() {
        "the sinks hold nothing, a source or window is still draining".into()
    } else {
        pending.join(", ")
    }
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

/// Retries so far, and the last error one followed.
fn retries(stats: &PipelineStats) -> (u64, Option<String>) {
    stats
        .components()
        .into_iter()
        .fold((0, None), |(n, last), (_, _, s)| {
            let r = s.retries.load(std::sync::atomic::Ordering::Relaxed);
            (n + r, s.last_error().or(last))
        })
}

fn progress_line(t: &Totals, rate: f64, retried: &(u64, Option<String>)) -> String {
    let watermark = t
        .watermark
        .map_or("done".to_owned(), |w| format_millis(w as i64));
    let mut line = format!(
        "in {} ({}/s) | out {} | watermark {} | late {} | rejected {}",
        human(t.samples_in as f64),
        human(rate),
        human(t.samples_out as f64),
        watermark,
        t.late,
        t.rejected
    );
    if let (n @ 1.., Some(error)) = retried {
        line.push_str(&format!(" | retries {n} (last: {error})"));
    }
    line
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
    let failure: Arc<Failure> = Arc::default();
    let listener = match &options.dashboard {
        Some(d) if !plan.websocket_sinks().is_empty() => {
            match (d.serve)(d.addr, Arc::clone(&live)) {
                Ok(l) => Some(l),
                Err(e) if d.required => return Err(e),
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
        rules: Arc::default(),
        silences: Arc::default(),
        incidents: Arc::default(),
        notifications: Arc::default(),
        history: Arc::default(),
        failure: Arc::clone(&failure),
        tenant: None,
        checkpoints: None,
        state_dir: None,
        processes: options.cluster.processes(),
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
        let dataflow = worker.next_dataflow_index();
        let built = build(worker, &worker_plan, &env);
        let local = worker.index() % workers;
        while !built.over() {
            worker.step_or_park(Some(Duration::from_millis(50)));
            let w = built.sources.with_frontier(|f| f.iter().min().copied());
            env.stats.set_watermark(local, w);
        }
        if built.failure.get().is_some() {
            env.shutdown.trigger();
            worker.drop_dataflow(dataflow);
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
    let mut stopping: Option<Instant> = None;
    while !running.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
        if shutdown.is_triggered() {
            let since = *stopping.get_or_insert_with(Instant::now);
            if since.elapsed() > options.shutdown_timeout {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                // The workers may be stuck in a sink's retries: do not wait.
                running.abandon();
                anyhow::bail!(
                    "pipeline {:?} did not stop within {:?} (--shutdown-timeout): {}; what was not written was not acknowledged",
                    plan.name,
                    options.shutdown_timeout,
                    unwritten(&stats)
                );
            }
        }
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
        let retried = retries(&stats);
        let dt = last.0.elapsed().as_secs_f64();
        if dt >= 1.0 {
            rate = (t.samples_in - last.1) as f64 / dt;
            last = (Instant::now(), t.samples_in);
        }
        match (&bar, options.progress) {
            (Some(b), _) => b.set_message(progress_line(&t, rate, &retried)),
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
                    retries = retried.0,
                    last_error = retried.1.as_deref().unwrap_or(""),
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
        partial_windows = totals.partial_windows,
        errors,
        retries,
        "Finished."
    );
    if let Some(failure) = failure.get() {
        anyhow::bail!(
            "pipeline {:?} failed: {failure}; what it had not written was not acknowledged, so a Kafka source reads it again after a restart",
            plan.name
        );
    }
    Ok(RunReport {
        totals,
        errors,
        elapsed,
        interrupted: shutdown.is_triggered(),
    })
}
