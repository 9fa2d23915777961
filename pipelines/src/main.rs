//! The `tidemark` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use tidemark_engine::flow::DEFAULT_MAX_IN_FLIGHT;
use tidemark_engine::runtime::Cluster;
use tidemark_pipelines::bench::{self, BenchOptions};
use tidemark_pipelines::compile_file;
use tidemark_pipelines::run::{ProgressMode, RunOptions, run};
use tidemark_pipelines::server::http::Auth;
use tidemark_pipelines::server::{ServeOptions, client, serve};

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
        cluster: ClusterArgs,
        /// Progress display on standard error.
        #[arg(long, value_enum, default_value = "auto")]
        progress: ProgressMode,
        /// Records each source instance may have in flight before it waits.
        #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
        max_in_flight: u64,
    },
    /// Serve: run the pipelines applied over the API until SIGTERM.
    Serve {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// HTTP listen address (control API, /metrics, /healthz).
        #[arg(long, default_value = "0.0.0.0:8080", env = "TIDEMARK_HTTP")]
        http: std::net::SocketAddr,
        /// Apply every `*.yaml` in this directory at start.
        #[arg(long, env = "TIDEMARK_PIPELINES")]
        pipelines: Option<PathBuf>,
        /// Records each source instance may have in flight before it waits.
        #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
        max_in_flight: u64,
        /// Seconds a graceful stop may take before the process exits anyway.
        #[arg(long, default_value_t = 30)]
        shutdown_timeout: u64,
        /// File of bearer tokens (one a line) required by the control API.
        #[arg(long, env = "TIDEMARK_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        /// Require a token for /metrics too (health checks stay open).
        #[arg(long, requires = "token_file")]
        protect_metrics: bool,
    },
    /// Manage the pipelines of a running server.
    Pipeline {
        /// The server's HTTP address.
        #[arg(
            long,
            global = true,
            default_value = "http://127.0.0.1:8080",
            env = "TIDEMARK_SERVER"
        )]
        server: String,
        #[command(subcommand)]
        action: PipelineCommand,
    },
    /// Check pipeline files and report every error, without running them.
    Validate {
        /// Pipeline files.
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Benchmarks that print figures and write them to docs/benchmarks.md.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
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
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("TIDEMARK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
            cluster,
            progress,
            max_in_flight,
        } => {
            let plan = match compile_file(&file) {
                Ok(p) => p,
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    return Ok(ExitCode::FAILURE);
                }
            };
            let options = RunOptions {
                cluster: cluster.cluster()?,
                progress,
                max_in_flight,
            };
            let report = run(plan, options)?;
            Ok(if report.errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Serve {
            cluster,
            http,
            pipelines,
            max_in_flight,
            shutdown_timeout,
            token_file,
            protect_metrics,
        } => {
            let auth = match token_file {
                Some(path) => Auth::from_file(&path, protect_metrics)?,
                None => Auth::default(),
            };
            serve(ServeOptions {
                cluster: cluster.cluster()?,
                http,
                pipelines,
                max_in_flight,
                shutdown_timeout: std::time::Duration::from_secs(shutdown_timeout),
                auth,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pipeline { server, action } => {
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
        Command::Bench {
            which: BenchCommand::Window(options),
        } => {
            bench::window(&options)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
