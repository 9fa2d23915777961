//! The `tidemark` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use tidemark_bench::{self as bench, BenchOptions};
use tidemark_engine::flow::DEFAULT_MAX_IN_FLIGHT;
use tidemark_engine::runtime::Cluster;
use tidemark_pipelines::Diagnostic;
use tidemark_pipelines::compile_file;
use tidemark_pipelines::run::{Dashboard, ProgressMode, RunOptions, run};
use tidemark_server::config::{ServerConfig, parse_bound};
use tidemark_server::http::Auth;
use tidemark_server::{ServeOptions, TlsFiles, client, serve};

// glibc's malloc spent a third of the ingest path's time in allocation and
// consolidation under load (perf, docs/benchmarks.md); mimalloc's per-thread
// free lists suit many small, short-lived allocations across threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tidemark: a stream-processing engine for metrics.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format on standard error.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "TIDEMARK_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct ClusterArgs {
    /// Worker threads in this process.
    #[arg(short, long, default_value_t = 1, env = "TIDEMARK_WORKERS")]
    workers: usize,
    /// File listing every process of a cluster, one `host:port` a line.
    #[arg(long, requires = "process", env = "TIDEMARK_HOSTFILE")]
    hostfile: Option<PathBuf>,
    /// This process's index in the host file (0-based).
    #[arg(long, requires = "hostfile", env = "TIDEMARK_PROCESS")]
    process: Option<usize>,
}

impl ClusterArgs {
    fn cluster(&self) -> anyhow::Result<Cluster> {
        Ok(match (&self.hostfile, self.process) {
            (Some(path), Some(process)) => Cluster::from_host_file(self.workers, process, path)?,
            _ => {
                let c = Cluster::local(self.workers);
                c.check()?;
                c
            }
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline until its sources end or Ctrl-C / SIGTERM.
    Run {
        /// The pipeline file (`-` for standard input).
        file: String,
        #[command(flatten)]
        here: RunHere,
        /// Where the dashboard and `/ws` listen when the pipeline has a
        /// `websocket` sink (on process 0 of a cluster unless given)
        /// [default: 127.0.0.1:8080].
        #[arg(long, env = "TIDEMARK_HTTP")]
        http: Option<std::net::SocketAddr>,
        /// How long a graceful stop (Ctrl-C, SIGTERM) may take before the
        /// run exits with 1 and says what was not written.
        #[arg(long, default_value = "30s", env = "TIDEMARK_SHUTDOWN_TIMEOUT")]
        shutdown_timeout: String,
    },
    /// Replay a pipeline over its Parquet archive (or its TimescaleDB
    /// tables), as fast as the machine allows, and write what it would have
    /// produced (docs/backtest.md).
    Backtest(Box<BacktestArgs>),
    /// Serve: run the pipelines applied over the API until SIGTERM.
    Serve(Box<ServeArgs>),
    /// Manage the pipelines of a running server.
    Pipeline {
        #[command(flatten)]
        server: ServerAddr,
        #[command(subcommand)]
        action: PipelineCommand,
    },
    /// Manage the silences of a running server (Alertmanager's API v2;
    /// amtool works too).
    Silence {
        #[command(flatten)]
        server: ServerAddr,
        #[command(subcommand)]
        action: SilenceCommand,
    },
    /// Check pipeline files and report every error, without running them.
    Validate {
        /// Pipeline files.
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Offer load to a server's ingest listeners at a fixed rate (open loop) and report ack latency.
    Loadgen {
        #[command(flatten)]
        options: bench::loadgen::LoadOptions,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks that print figures and write them to docs/benchmarks.md.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

/// `tidemark backtest`.
#[derive(clap::Args)]
struct BacktestArgs {
    /// The pipeline file.
    file: String,
    /// The first event time replayed (RFC 3339 or ms since the epoch)
    /// [default: the archive's start].
    #[arg(long)]
    from: Option<String>,
    /// The event time the replay stops before [default: the archive's
    /// end].
    #[arg(long)]
    to: Option<String>,
    /// Directory for each stream's output and summary.json.
    #[arg(long, default_value = "backtest")]
    out: PathBuf,
    /// The archive a source replays, when the pipeline has no parquet
    /// sink of exactly that source, or several: SOURCE=PATH, PATH ending
    /// in /pipeline=<name>/output=<sink>, or the name of one of the
    /// pipeline's parquet or timescaledb sinks of that source; repeatable.
    #[arg(long = "archive", value_name = "SOURCE=PATH")]
    archives: Vec<String>,
    #[command(flatten)]
    here: RunHere,
}

/// How a pipeline runs in this process, for `run` and `backtest`.
#[derive(clap::Args)]
struct RunHere {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Progress display on standard error.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Records each source instance may have in flight before it waits.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: u64,
}

impl RunHere {
    /// The run's options, without a dashboard.
    fn options(self, shutdown_timeout: std::time::Duration) -> anyhow::Result<RunOptions> {
        Ok(RunOptions {
            cluster: self.cluster.cluster()?,
            progress: self.progress,
            max_in_flight: self.max_in_flight,
            dashboard: None,
            stop_after_samples: None,
            shutdown_timeout,
        })
    }
}

/// A run's exit status: failure if a sink or source hit an error that lost
/// or held back output.
fn run_status(report: &tidemark_pipelines::run::RunReport) -> ExitCode {
    if report.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `tidemark serve`: flags and variables win over `--config`, which wins
/// over the defaults shown.
#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file (see docs/configuration.md).
    #[arg(long, env = "TIDEMARK_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP listen address (control API, /metrics, /healthz) [default: 0.0.0.0:8080 with a token file, 127.0.0.1:8080 without].
    #[arg(long, env = "TIDEMARK_HTTP")]
    http: Option<std::net::SocketAddr>,
    /// gRPC listen address (control service, ingest, OTLP) [default: 0.0.0.0:4317 with a token file, 127.0.0.1:4317 without].
    #[arg(long, env = "TIDEMARK_GRPC")]
    grpc: Option<std::net::SocketAddr>,
    /// Listen beyond loopback without a token file: anyone who reaches the server can run pipelines.
    #[arg(long, env = "TIDEMARK_ALLOW_UNAUTHENTICATED", num_args = 0..=1, default_missing_value = "true")]
    allow_unauthenticated: Option<bool>,
    /// An origin (`https://grafana.example.com`) whose pages may call the server; repeatable.
    #[arg(long = "allowed-origin")]
    allowed_origins: Vec<String>,
    /// A directory whose files pipelines' `file` sources may read (access.read_dirs); repeatable.
    #[arg(long = "allow-read-dir")]
    allow_read_dirs: Vec<PathBuf>,
    /// A directory where pipelines' `file` and `parquet` sinks may write (access.write_dirs); repeatable.
    #[arg(long = "allow-write-dir")]
    allow_write_dirs: Vec<PathBuf>,
    /// A directory (also allowed for writing) where a `file` sink with `append: false` may replace an existing file (access.replace_dirs); repeatable.
    #[arg(long = "allow-replace-dir")]
    allow_replace_dirs: Vec<PathBuf>,
    /// A host pipelines may connect to: `host:port`, `host`, `*.domain`, a network, `*` (access.hosts); repeatable.
    #[arg(long = "allow-host")]
    allow_hosts: Vec<String>,
    /// An environment variable `*_env` fields may name (access.env); repeatable.
    #[arg(long = "allow-env")]
    allow_env: Vec<String>,
    /// Worker threads in this process [default: 1].
    #[arg(short, long, env = "TIDEMARK_WORKERS")]
    workers: Option<usize>,
    /// File listing every process of a cluster, one `host:port` a line.
    #[arg(long, env = "TIDEMARK_HOSTFILE")]
    hostfile: Option<PathBuf>,
    /// This process's index in the host file (0-based).
    #[arg(long, env = "TIDEMARK_PROCESS")]
    process: Option<usize>,
    /// Apply every `*.yaml` in this directory at start.
    #[arg(long, env = "TIDEMARK_PIPELINES")]
    pipelines: Option<PathBuf>,
    /// Keep the applied pipelines, silences and a write-ahead log of network ingest in this directory; apply the pipelines again at start and replay the log.
    #[arg(long, env = "TIDEMARK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// When the write-ahead log syncs to disk: `always` (before a request is acknowledged), an interval such as `100ms`, or `never` [default: always].
    #[arg(long, env = "TIDEMARK_WAL_FSYNC")]
    wal_fsync: Option<String>,
    /// The most the write-ahead log may hold, in MiB; past it, ingest is refused until pipelines catch up [default: 2048].
    #[arg(long, env = "TIDEMARK_WAL_MAX_MB")]
    wal_max_mb: Option<u64>,
    /// Time between checkpoints of operator state (windows, scores) under --data-dir, or `off` [default: 10s].
    #[arg(long, env = "TIDEMARK_CHECKPOINT_INTERVAL")]
    checkpoint_interval: Option<String>,
    /// Where checkpoints are kept: `s3://bucket/prefix` (endpoint, region and credentials from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) or a directory [default: DATA_DIR/checkpoints]; in a cluster, one every process sees (needed there).
    #[arg(long, env = "TIDEMARK_CHECKPOINT_STORE")]
    checkpoint_store: Option<String>,
    /// Records each source instance may have in flight before it waits [default: 1048576].
    #[arg(long, env = "TIDEMARK_MAX_IN_FLIGHT")]
    max_in_flight: Option<u64>,
    /// Threads that serve HTTP and gRPC and decode what they receive, beside the dataflow workers [default: 2].
    #[arg(long, env = "TIDEMARK_IO_THREADS")]
    io_threads: Option<usize>,
    /// How long a graceful stop may take before the process exits anyway [default: 30s].
    #[arg(long, env = "TIDEMARK_SHUTDOWN_TIMEOUT")]
    shutdown_timeout: Option<String>,
    /// File of bearer tokens (one a line) required by the control API.
    #[arg(long, env = "TIDEMARK_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) for the HTTP and gRPC listeners; with --tls-key.
    #[arg(long, env = "TIDEMARK_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); with --tls-cert.
    #[arg(long, env = "TIDEMARK_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// How far ahead of this server's clock a received timestamp may be: a duration or `off` [default: 10m].
    #[arg(long, env = "TIDEMARK_MAX_FUTURE")]
    max_future: Option<String>,
    /// How far behind this server's clock a received timestamp may be: a duration or `off` [default: off].
    #[arg(long, env = "TIDEMARK_MAX_AGE")]
    max_age: Option<String>,
    /// Require a token for /metrics [default: true with a token file; `false` opens it to scrapers without tokens].
    #[arg(long, env = "TIDEMARK_PROTECT_METRICS", num_args = 0..=1, default_missing_value = "true")]
    protect_metrics: Option<bool>,
}

impl ServeArgs {
    fn options(self) -> anyhow::Result<Result<ServeOptions, Vec<Diagnostic>>> {
        let file = match &self.config {
            Some(path) => match ServerConfig::load(path) {
                Ok(c) => c,
                Err(errors) => return Ok(Err(errors)),
            },
            None => ServerConfig::default(),
        };
        let workers = self.workers.or(file.workers).unwrap_or(1);
        let io_threads = self
            .io_threads
            .or(file.io_threads)
            .unwrap_or(tidemark_server::DEFAULT_IO_THREADS);
        anyhow::ensure!(io_threads >= 1, "--io-threads: at least 1");
        let cluster = match (
            self.hostfile.or(file.hostfile),
            self.process.or(file.process),
        ) {
            (Some(path), Some(process)) => Cluster::from_host_file(workers, process, &path)?,
            (None, None) => Cluster::local(workers),
            _ => anyhow::bail!("give both a host file and a process index, or neither"),
        };
        cluster.check()?;
        let timeout = self
            .shutdown_timeout
            .or(file.shutdown_timeout)
            .unwrap_or_else(|| "30s".into());
        let shutdown_timeout = tidemark_engine::time::parse_duration(&timeout)?;
        let mut wal = tidemark_engine::wal::WalOptions::default();
        if let Some(f) = self.wal_fsync.as_ref().or(file.wal_fsync.as_ref()) {
            wal.fsync = f.parse().map_err(|e| anyhow::anyhow!("--wal-fsync: {e}"))?;
        }
        if let Some(mb) = self.wal_max_mb.or(file.wal_max_mb) {
            anyhow::ensure!(mb >= 1, "--wal-max-mb: at least 1 MiB");
            wal.max_bytes = mb << 20;
            // Segments are deleted whole: several to a log; a small log
            // leaves less room free on its disk.
            wal.segment_bytes = wal.segment_bytes.min((mb << 20) / 8);
            wal.reserve_bytes = wal.reserve_bytes.min((mb << 20) / 8);
        }
        let checkpoints = match self
            .checkpoint_interval
            .as_deref()
            .or(file.checkpoint_interval.as_deref())
        {
            Some("off") => None,
            Some(text) => {
                let interval = tidemark_engine::time::parse_duration(text)
                    .map_err(|e| anyhow::anyhow!("--checkpoint-interval: {e} (or `off`)"))?;
                anyhow::ensure!(
                    !interval.is_zero(),
                    "--checkpoint-interval: must be longer than 0 (or `off`)"
                );
                Some(tidemark_engine::checkpoint::CheckpointOptions {
                    interval,
                    ..Default::default()
                })
            }
            None => Some(Default::default()),
        };
        let data_dir = self.data_dir.or(file.data_dir);
        let checkpoint_store = match self.checkpoint_store.or(file.checkpoint_store) {
            Some(location) => {
                anyhow::ensure!(
                    data_dir.is_some(),
                    "--checkpoint-store needs --data-dir (the applied pipelines and the write-ahead log stay there)"
                );
                let store = tidemark_engine::checkpoint::Store::open(&location)
                    .map_err(|e| anyhow::anyhow!("--checkpoint-store: {e}"))?;
                Some(store)
            }
            None => None,
        };
        let protect_metrics = self.protect_metrics.or(file.protect_metrics);
        // With tokens `/metrics` needs one too unless the operator opens it:
        // it names every pipeline and tenant.
        let auth = match self.token_file.or(file.token_file) {
            Some(path) => Auth::from_file(&path, protect_metrics.unwrap_or(true))?,
            None if protect_metrics == Some(true) => {
                anyhow::bail!("protect_metrics needs a token file")
            }
            None => Auth::default(),
        };
        let tls = match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => anyhow::bail!("TLS needs both a certificate (--tls-cert) and a key (--tls-key)"),
        };
        let bound = |flag: &str, text: Option<String>, default: Option<i64>| match text {
            Some(t) => parse_bound(&t).map_err(|e| anyhow::anyhow!("--{flag}: {e}")),
            None => Ok(default),
        };
        let defaults = tidemark_engine::validate::TimeBounds::default();
        let time_bounds = tidemark_engine::validate::TimeBounds {
            max_future_ms: bound(
                "max-future",
                self.max_future.or(file.limits.max_future.clone()),
                defaults.max_future_ms,
            )?,
            max_age_ms: bound(
                "max-age",
                self.max_age.or(file.limits.max_age.clone()),
                defaults.max_age_ms,
            )?,
        };
        let mut access = file.access.clone();
        access.read_dirs.extend(self.allow_read_dirs);
        access.write_dirs.extend(self.allow_write_dirs);
        access.replace_dirs.extend(self.allow_replace_dirs);
        access.hosts.extend(self.allow_hosts);
        access.env.extend(self.allow_env);
        // Without tokens, loopback only unless the operator says otherwise.
        let everywhere = auth.enabled();
        let default_ip = if everywhere {
            std::net::IpAddr::from([0, 0, 0, 0])
        } else {
            std::net::IpAddr::from([127, 0, 0, 1])
        };
        let mut allowed_origins = file.allowed_origins.clone();
        allowed_origins.extend(self.allowed_origins);
        Ok(Ok(ServeOptions {
            allow_unauthenticated: self
                .allow_unauthenticated
                .or(file.allow_unauthenticated)
                .unwrap_or(false),
            allowed_origins,
            access,
            quotas: file.quotas.clone(),
            limits: file.limits.labels(),
            max_decode_mb: file
                .limits
                .max_decode_mb
                .unwrap_or(tidemark_server::DEFAULT_MAX_DECODE_MB),
            max_connections: file
                .limits
                .max_connections
                .unwrap_or(tidemark_server::conn::DEFAULT_MAX_CONNECTIONS),
            header_timeout: match &file.limits.header_timeout {
                Some(t) => tidemark_engine::time::parse_duration(t)
                    .map_err(|e| anyhow::anyhow!("limits.header_timeout: {e}"))?,
                None => tidemark_server::conn::DEFAULT_HEADER_TIMEOUT,
            },
            time_bounds,
            cluster,
            http: self
                .http
                .or(file.http)
                .unwrap_or_else(|| std::net::SocketAddr::new(default_ip, 8080)),
            grpc: self
                .grpc
                .or(file.grpc)
                .unwrap_or_else(|| std::net::SocketAddr::new(default_ip, 4317)),
            pipelines: self.pipelines.or(file.pipelines),
            data_dir,
            wal,
            checkpoints,
            checkpoint_store,
            max_in_flight: self
                .max_in_flight
                .or(file.max_in_flight)
                .unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            io_threads,
            shutdown_timeout,
            auth,
            tls,
        }))
    }
}

/// `--server`: the running server a client command talks to.
#[derive(clap::Args)]
struct ServerAddr {
    /// The server's HTTP address.
    #[arg(
        long = "server",
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "TIDEMARK_SERVER"
    )]
    url: String,
}

#[derive(Subcommand)]
enum SilenceCommand {
    /// Silence the alerts matching every matcher (`alertname=ApiDown`,
    /// `instance=~"a|b"`) from now for `--duration`; prints its id.
    Add {
        /// Matchers, in Alertmanager's syntax.
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long it lasts.
        #[arg(short, long, default_value = "1h")]
        duration: String,
        /// Why (shown to everyone who lists silences).
        #[arg(short, long)]
        comment: String,
        /// Who makes it; default `$USER`.
        #[arg(short, long)]
        author: Option<String>,
    },
    /// List silences (active and pending; `--expired` too).
    List {
        /// Also the expired ones.
        #[arg(long)]
        expired: bool,
    },
    /// End a silence now.
    Expire {
        /// Its id.
        id: String,
    },
}

#[derive(Subcommand)]
enum PipelineCommand {
    /// Create or replace a pipeline from a file (`-` for standard input).
    Apply {
        /// The pipeline file.
        #[arg(short, long)]
        file: String,
    },
    /// List pipelines with their state and counters.
    List,
    /// Show one pipeline's status and definition as JSON.
    Get {
        /// Pipeline name.
        name: String,
    },
    /// Stop a pipeline (sources end, windows flush) and remove it.
    Delete {
        /// Pipeline name.
        name: String,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Engine throughput: generator, 10 s tumbling window per series, discard.
    Window(BenchOptions),
    /// Anomaly scoring quality on NAB and its cost.
    Anomaly(bench::anomaly::AnomalyBenchOptions),
    /// Alert rules: samples and rule evaluations per second, 100 to 10 000 rules.
    Alert(bench::alert::AlertBenchOptions),
    /// Incident correlation: ARI against ground truth and alert samples per second.
    Correlate(bench::correlate::CorrelateBenchOptions),
    /// Consume throughput from a Kafka broker (tansu by default).
    Kafka(bench::kafka::KafkaBenchOptions),
    /// Write throughput of the timescaledb and redis sinks.
    Sinks(bench::sinks::SinkBenchOptions),
    /// Ingest: p99 ack latency and server CPU against the offered rate (docs/latency.png).
    Latency(bench::latency::LatencyOptions),
    /// Write-ahead log of network ingest: ack latency per fsync policy, and recovery after kill -9.
    Wal(bench::wal::WalBenchOptions),
    /// Checkpoints of operator state: bytes, cut and restore time for 100 000 series (windows, scores).
    Checkpoint(bench::checkpoint::CheckpointBenchOptions),
    /// WebSocket fan-out: values delivered to 1, 10 and 100 subscribers.
    Websocket(bench::websocket::WebsocketBenchOptions),
    /// Query API latency over a memory sink (10 000 and 100 000 series), and what queries cost ingest.
    Query(bench::query::QueryBenchOptions),
    /// Backtest: samples per second replayed from a Parquet archive into a window and a detector.
    Backtest(bench::backtest::BacktestBenchOptions),
}

fn init_logging(format: LogFormat) {
    // tokio-postgres logs every server notice at info; the sink logs what
    // matters itself.
    let filter = EnvFilter::try_from_env("TIDEMARK_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // With standard error closed (a pipe whose reader left), reporting
        // the failed write would panic (it uses eprintln!): drop the line
        // and keep running.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match execute(cli.command) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate { files } => {
            let mut failed = false;
            for file in &files {
                match compile_file(file) {
                    Ok(plan) => {
                        eprintln!(
                            "{file}: ok (pipeline {:?}: {} sources, {} transforms, {} sinks)",
                            plan.name,
                            plan.sources.len(),
                            plan.transforms.len(),
                            plan.sinks.len()
                        );
                    }
                    Err(errors) => {
                        failed = true;
                        for e in &errors {
                            eprintln!("{e}");
                        }
                        eprintln!(
                            "{file}: {} error{}",
                            errors.len(),
                            if errors.len() == 1 { "" } else { "s" }
                        );
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Run {
            file,
            here,
            http,
            shutdown_timeout,
        } => {
            let shutdown_timeout = tidemark_engine::time::parse_duration(&shutdown_timeout)
                .map_err(|e| anyhow::anyhow!("--shutdown-timeout: {e}"))?;
            let plan = match compile_file(&file) {
                Ok(p) => p,
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    return Ok(ExitCode::FAILURE);
                }
            };
            let mut options = here.options(shutdown_timeout)?;
            let required = http.is_some();
            let http = http.or_else(|| {
                (options.cluster.process == 0)
                    .then(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8080)))
            });
            options.dashboard = http.map(|addr| Dashboard {
                addr,
                required,
                serve: tidemark_server::live::serve_dashboard,
            });
            let report = run(plan, options)?;
            Ok(run_status(&report))
        }
        Command::Backtest(args) => backtest(*args),
        Command::Serve(args) => match (*args).options()? {
            Ok(options) => {
                serve(options)?;
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Pipeline {
            server: ServerAddr { url: server },
            action,
        } => {
            let ok = match action {
                PipelineCommand::Apply { file } => client::apply(&server, &file)?,
                PipelineCommand::List => client::list(&server)?,
                PipelineCommand::Get { name } => client::get(&server, &name)?,
                PipelineCommand::Delete { name } => client::delete(&server, &name)?,
            };
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Silence {
            server: ServerAddr { url: server },
            action,
        } => {
            let ok = match action {
                SilenceCommand::Add {
                    matchers,
                    duration,
                    comment,
                    author,
                } => {
                    let author = author
                        .or_else(|| std::env::var("USER").ok())
                        .unwrap_or_else(|| "tidemark".into());
                    client::silence_add(&server, &matchers, &duration, &author, &comment)?
                }
                SilenceCommand::List { expired } => client::silence_list(&server, expired)?,
                SilenceCommand::Expire { id } => client::silence_expire(&server, &id)?,
            };
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Loadgen { options, json } => {
            let report = bench::loadgen::run_load(&options)?;
            let text = if json {
                serde_json::to_string(&report)?
            } else {
                report.summary()
            };
            std::io::Write::write_all(&mut std::io::stdout(), format!("{text}\n").as_bytes())?;
            Ok(if report.batches_failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Bench {
            which: BenchCommand::Latency(options),
        } => {
            bench::latency::latency(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            which: BenchCommand::Wal(options),
        } => {
            bench::wal::wal(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            which: BenchCommand::Checkpoint(options),
        } => {
            bench::checkpoint::checkpoint(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            which: BenchCommand::Backtest(options),
        } => {
            bench::backtest::run_bench(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            which: BenchCommand::Sinks(options),
        } => {
            bench::sinks::sinks(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            which: BenchCommand::Websocket(options),
        } => {
            bench::websocket::websocket(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            which: BenchCommand::Query(options),
        } => {
            bench::query::query(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            which: BenchCommand::Kafka(options),
        } => {
            bench::kafka::kafka(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            which: BenchCommand::Anomaly(options),
        } => {
            bench::anomaly::anomaly(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            which: BenchCommand::Correlate(options),
        } => {
            bench::correlate::correlate_bench(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            which: BenchCommand::Alert(options),
        } => {
            bench::alert::alert(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            which: BenchCommand::Window(options),
        } => {
            bench::window(&options)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `tidemark backtest`: rewrite, run, summarize.
fn backtest(args: BacktestArgs) -> anyhow::Result<ExitCode> {
    let BacktestArgs {
        file,
        from,
        to,
        out,
        archives,
        here,
    } = args;
    use tidemark_pipelines::backtest::{Backtest, parse_time, prepare, render, summarize};
    let time = |flag: &str, text: Option<String>| -> anyhow::Result<Option<i64>> {
        text.map(|t| parse_time(&t).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
            .transpose()
    };
    let archives = archives
        .iter()
        .map(|a| {
            a.split_once('=')
                .filter(|(s, p)| !s.is_empty() && !p.is_empty())
                .map(|(s, p)| (s.to_owned(), p.to_owned()))
                .ok_or_else(|| anyhow::anyhow!("--archive {a:?}: expected SOURCE=PATH"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let backtest = Backtest {
        from: time("from", from)?,
        to: time("to", to)?,
        out,
        archives,
    };
    if let (Some(from), Some(to)) = (backtest.from, backtest.to) {
        anyhow::ensure!(
            from < to,
            "--to must be after --from (the range is [from, to))"
        );
    }
    let text =
        std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))?;
    let prepared = match prepare(&file, &text, &backtest) {
        Ok(p) => p,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    std::fs::create_dir_all(&backtest.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", backtest.out.display()))?;
    for (source, archive) in &prepared.sources {
        tracing::info!(source = %source, archive = %archive, "Replaying.");
    }
    let options = here.options(tidemark_pipelines::run::DEFAULT_SHUTDOWN_TIMEOUT)?;
    let process = options.cluster.process;
    let report = run(prepared.plan.clone(), options)?;
    if process != 0 {
        // Process 0's workers wrote the outputs; it writes the summary.
        return Ok(if report.interrupted {
            ExitCode::FAILURE
        } else {
            run_status(&report)
        });
    }
    let summary = summarize(&prepared, &backtest, &report)?;
    let path = backtest.out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    std::io::Write::write_all(
        &mut std::io::stdout(),
        format!("{}\n", render(&summary, &backtest.out)).as_bytes(),
    )?;
    if report.errors > 0 || report.interrupted {
        eprintln!(
            "The backtest is incomplete: {} errors{} (see the log above).",
            report.errors,
            if report.interrupted {
                ", interrupted"
            } else {
                ""
            }
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
