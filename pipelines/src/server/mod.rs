//! `tidemark serve`: a long-lived process that runs the pipelines submitted
//! to it. Timely workers run the [`control::worker_loop`]; a tokio runtime
//! serves HTTP ([`http`]). See `docs/server.md`.

pub mod client;
pub mod config;
pub mod control;
pub mod grpc;
pub mod http;
pub mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark_engine::component::StdoutWriter;
use tidemark_engine::runtime::{Cluster, execute};

use control::Control;

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Workers and processes.
    pub cluster: Cluster,
    /// HTTP listen address.
    pub http: SocketAddr,
    /// gRPC listen address.
    pub grpc: SocketAddr,
    /// Pipelines to apply at start (every `*.yaml` in the directory).
    pub pipelines: Option<PathBuf>,
    /// Records each source instance may have in flight.
    pub max_in_flight: u64,
    /// How long a graceful stop may take before the process exits anyway.
    pub shutdown_timeout: Duration,
    /// Bearer tokens.
    pub auth: http::Auth,
}

fn read_pipelines(dir: &PathBuf) -> anyhow::Result<Vec<(String, String)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read the pipelines directory {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    let mut failed = false;
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        match crate::compile(&f.display().to_string(), &text) {
            Ok(plan) => out.push((plan.name, text)),
            Err(errors) => {
                failed = true;
                for e in errors {
                    tracing::error!("{e}");
                }
            }
        }
    }
    anyhow::ensure!(!failed, "pipelines in {} have errors", dir.display());
    Ok(out)
}

async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Runs the server until Ctrl-C or SIGTERM: then it stops accepting
/// requests, stops every pipeline's sources, flushes windows and sinks, and
/// returns (or exits with an error after `shutdown_timeout`).
pub fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let initial = match &options.pipelines {
        Some(dir) => read_pipelines(dir)?,
        None => Vec::new(),
    };
    let stdout: StdoutWriter = Arc::new(|bytes: &[u8]| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes).and_then(|()| out.flush());
    });
    let cluster = options.cluster.clone();
    let control = Control::new(
        cluster.process,
        cluster.processes(),
        cluster.workers,
        stdout,
        options.max_in_flight,
    );
    let for_workers = Arc::clone(&control);
    let running = execute(&cluster, move |worker| {
        control::worker_loop(worker, &for_workers)
    })?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served: anyhow::Result<()> = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(options.http)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.http))?;
        tracing::info!(http = %listener.local_addr()?, process = cluster.process, workers = cluster.workers, "Listening.");
        let grpc_listener = tokio::net::TcpListener::bind(options.grpc)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.grpc))?;
        tracing::info!(grpc = %grpc_listener.local_addr()?, "Listening.");
        let grpc = tokio::spawn(grpc::serve(grpc_listener, Arc::clone(&control), options.auth.clone()));
        if cluster.process == 0 {
            for (name, yaml) in &initial {
                control.apply(name, yaml);
            }
        }
        let stopping = Arc::clone(&control);
        axum::serve(listener, http::router(Arc::clone(&control), options.auth.clone()))
            .with_graceful_shutdown(async move {
                // A signal here, or a shutdown sequenced by another process.
                let remote = async {
                    while !stopping.shutdown.is_triggered() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                };
                tokio::select! {
                    () = stop_signal() => {},
                    () = remote => {},
                }
                tracing::info!("Stopping: sources end, windows and sinks flush.");
                stopping.request_shutdown();
            })
            .await?;
        grpc.await??;
        Ok(())
    });
    if let Err(e) = served {
        control.request_shutdown();
        return Err(e);
    }
    let deadline = Instant::now() + options.shutdown_timeout;
    while !running.is_finished() {
        if Instant::now() > deadline {
            tracing::error!(
                seconds = options.shutdown_timeout.as_secs(),
                "Pipelines did not drain in time; exiting."
            );
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    running.join()?;
    tracing::info!("Stopped.");
    Ok(())
}
