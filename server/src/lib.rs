//! # tidemark-server
//!
//! `tidemark serve`: a long-lived process that runs the pipelines submitted
//! to it. Timely workers run the [`control::worker_loop`]; a tokio runtime
//! serves HTTP ([`http`]) and gRPC ([`grpc`]). The ingest listeners
//! ([`ingest`], [`remote_write`], [`otlp`]) are thin adapters over
//! `tidemark_codecs` and one [`admit`] path; [`live`] serves `/ws` and the
//! [`dashboard`], also for `tidemark run` ([`live::serve_dashboard`]);
//! [`query`] and [`remote_read`] answer Prometheus's clients from the
//! `memory` sinks.
//! See `docs/server.md`.

pub mod admit;
pub mod auth;
pub mod client;
pub mod codec;
pub mod config;
pub mod conn;
pub mod control;
pub mod dashboard;
pub mod gate;
pub mod grpc;
pub mod http;
pub mod ingest;
pub mod live;
pub mod metrics;
pub mod notifier;
pub mod otlp;
pub mod query;
pub mod quota;
pub mod remote_read;
pub mod remote_write;
pub mod rules;
pub mod store;
pub mod tenancy;

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
    /// Where the server keeps what must survive a restart (the applied
    /// pipelines); nothing is kept without it.
    pub data_dir: Option<PathBuf>,
    /// How the write-ahead log of network ingest is kept (with `data_dir`).
    pub wal: tidemark_engine::wal::WalOptions,
    /// How operator state is checkpointed (with `data_dir`; `None`: not).
    pub checkpoints: Option<tidemark_engine::checkpoint::CheckpointOptions>,
    /// Where checkpoints are kept (`None`: `data_dir/checkpoints`).
    pub checkpoint_store: Option<tidemark_engine::checkpoint::Store>,
    /// Records each source instance may have in flight.
    pub max_in_flight: u64,
    /// Threads of the runtime that serves HTTP and gRPC (and decodes what
    /// they receive), beside the dataflow workers.
    pub io_threads: usize,
    /// How long a graceful stop may take before the process exits anyway.
    pub shutdown_timeout: Duration,
    /// Bearer tokens.
    pub auth: http::Auth,
    /// TLS certificate chain and key (PEM) for both listeners.
    pub tls: Option<TlsFiles>,
    /// Limits on samples received over the network.
    pub limits: tidemark_engine::validate::Limits,
    /// How far from this server's clock a received timestamp may be.
    pub time_bounds: tidemark_engine::validate::TimeBounds,
    /// Memory, in MiB, that requests being decoded may hold together.
    pub max_decode_mb: u64,
    /// Connections both listeners may hold open together.
    pub max_connections: usize,
    /// How long an HTTP client may take to send a request's headers (and
    /// how long a keep-alive connection may stay idle).
    pub header_timeout: Duration,
    /// Listen beyond loopback without tokens (a warning at every start).
    pub allow_unauthenticated: bool,
    /// Origins whose pages may call the server, beside its own.
    pub allowed_origins: Vec<String>,
    /// What pipelines applied over the API may touch.
    pub access: tidemark_pipelines::access::Access,
    /// Quotas per tenant.
    pub quotas: quota::QuotaConfig,
}

impl ServeOptions {
    /// Refuses to listen beyond loopback without tokens unless the
    /// operator said so; says so loudly when they did.
    pub fn check_exposure(&self) -> anyhow::Result<()> {
        if self.auth.enabled() {
            return Ok(());
        }
        let exposed: Vec<String> = [self.http, self.grpc]
            .iter()
            .filter(|a| !a.ip().is_loopback())
            .map(ToString::to_string)
            .collect();
        if exposed.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            self.allow_unauthenticated,
            "refusing to listen on {} without tokens: anyone who reaches it could run pipelines and read their data. Give --token-file (docs/security.md), listen on 127.0.0.1, or pass --allow-unauthenticated to accept the risk",
            exposed.join(" and ")
        );
        tracing::warn!(
            addresses = %exposed.join(", "),
            "Listening beyond loopback WITHOUT TOKENS (--allow-unauthenticated): anyone who reaches these addresses can apply pipelines and read every output."
        );
        Ok(())
    }
}

/// How long a start waits for the pipelines read back from the data
/// directory to run again before it serves the APIs.
const RESTORE_WAIT: Duration = Duration::from_secs(60);

/// The default of [`ServeOptions::io_threads`]: one per core of this
/// 2-core reference machine; ingest decodes on these threads.
pub const DEFAULT_IO_THREADS: usize = 2;

/// The default of [`ServeOptions::max_decode_mb`].
pub const DEFAULT_MAX_DECODE_MB: u64 = 256;

/// Raises the soft limit on open files to the hard limit: every client
/// connection, Kafka broker connection and output file takes a descriptor,
/// and the usual soft limit (1 024) is reached by a thousand idle sockets.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let before = limit.current;
        limit.current = limit.maximum;
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => {
                tracing::debug!(?before, now = ?limit.current, "Raised the open files limit.")
            }
            Err(error) => tracing::warn!(%error, ?before, "Cannot raise the open files limit."),
        }
    }
}

type HttpBuilder = hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>;

/// What every HTTP listener's connections get: a client must send a
/// request head within `header_timeout` (slowloris, idle keep-alive
/// connections), and HTTP/2 peers that went away are found by pings.
fn configure_http(builder: &mut HttpBuilder, header_timeout: Duration) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
}

/// PEM files for TLS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

struct LoadedTls {
    http: axum_server::tls_rustls::RustlsConfig,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl TlsFiles {
    async fn load(&self) -> anyhow::Result<LoadedTls> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
        };
        let (cert_pem, key_pem) = (read(&self.cert)?, read(&self.key)?);
        let http =
            axum_server::tls_rustls::RustlsConfig::from_pem(cert_pem.clone(), key_pem.clone())
                .await
                .map_err(|e| anyhow::anyhow!("invalid TLS certificate or key: {e}"))?;
        Ok(LoadedTls {
            http,
            cert_pem,
            key_pem,
        })
    }
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
        match tidemark_pipelines::compile(&f.display().to_string(), &text) {
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
    options.check_exposure()?;
    options
        .access
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    raise_open_files_limit();
    // One TLS implementation for every listener and client: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
    // The first process keeps the applied pipelines and reapplies them.
    let (store, stored) = match &options.data_dir {
        Some(dir) if cluster.process == 0 => {
            let (store, stored) = store::PipelineStore::open(dir)?;
            tracing::info!(data_dir = %dir.display(), pipelines = stored.len(), "Applied pipelines read back.");
            (Some(store), stored)
        }
        _ => (None, Vec::new()),
    };
    // Every process keeps the silences its API was given.
    let (silence_store, silences) = match &options.data_dir {
        Some(dir) => {
            let (store, silences) = store::SilenceStore::open(dir)?;
            (Some(store), silences)
        }
        None => (None, Vec::new()),
    };
    // Every process keeps a write-ahead log of what its listeners
    // acknowledged; its network sources read it.
    let wal = match &options.data_dir {
        Some(dir) => {
            let wal = tidemark_engine::wal::Wal::open(dir, options.wal.clone())?;
            tracing::info!(wal = %wal.dir().display(), bytes = wal.bytes(), next = wal.end(), fsync = ?options.wal.fsync, "Write-ahead log open.");
            Some(wal)
        }
        None => None,
    };
    let control = Control::new(&options, stdout, store, silence_store, wal);
    if !silences.is_empty() {
        tracing::info!(silences = silences.len(), "Silences read back.");
        control.silences.restore(silences);
    }
    let for_workers = Arc::clone(&control);
    let running = execute(&cluster, move |worker| {
        control::worker_loop(worker, &for_workers)
    })?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.io_threads.max(1))
        .enable_all()
        .build()?;
    let served: anyhow::Result<()> = runtime.block_on(async {
        let tls = match &options.tls {
            Some(t) => Some(t.load().await?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(options.http)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.http))?;
        tracing::info!(http = %listener.local_addr()?, tls = tls.is_some(), process = cluster.process, workers = cluster.workers, "Listening.");
        let grpc_listener = tokio::net::TcpListener::bind(options.grpc)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.grpc))?;
        tracing::info!(grpc = %grpc_listener.local_addr()?, tls = tls.is_some(), "Listening.");
        let grpc_identity = tls.as_ref().map(|t| tonic::transport::Identity::from_pem(&t.cert_pem, &t.key_pem));
        let connections = conn::Connections::new(options.max_connections);
        if cluster.process == 0 {
            // What was applied before the restart, in its order, checked
            // again against today's access policy and quotas (a stored
            // pipeline that no longer compiles or is no longer allowed is
            // reported and left in the store); then the directory's, which
            // replace stored ones of the same name.
            let mut restoring = Vec::new();
            for s in &stored {
                match control.compile_request(&s.yaml) {
                    Ok(_) => {
                        let id = control.apply(&s.name, &s.yaml, s.owner.as_deref());
                        restoring.push((s.name.clone(), id));
                    }
                    Err(errors) => {
                        for e in errors {
                            tracing::error!(pipeline = %s.name, "A stored pipeline is refused; not started: {e}");
                        }
                    }
                }
            }
            for (name, yaml) in &initial {
                control.apply(name, yaml, None);
            }
            // The API answers once the pipelines read back are running
            // again (their state restored), so that a client asking right
            // after a restart does not hear "no pipeline named ...".
            // Connections wait in the listener's queue meanwhile.
            let settled = control
                .wait_for(RESTORE_WAIT, |c| restoring.iter().all(|(n, id)| c.is_settled(n, *id)))
                .await;
            if !settled {
                let waiting: Vec<&str> = restoring
                    .iter()
                    .filter(|(n, id)| !control.is_settled(n, *id))
                    .map(|(n, _)| n.as_str())
                    .collect();
                tracing::warn!(seconds = RESTORE_WAIT.as_secs(), pipelines = ?waiting, "Pipelines read back are not all running yet; serving the APIs meanwhile.");
            }
        }
        let grpc = tokio::spawn(grpc::serve(grpc_listener, Arc::clone(&control), options.auth.clone(), grpc_identity, connections.clone()));
        // Stop on a signal here, or on a shutdown sequenced by another process.
        let stopping = Arc::clone(&control);
        let stop = async move {
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
        };
        let router = http::router(Arc::clone(&control));
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            stop.await;
            stopper.graceful_shutdown(Some(Duration::from_secs(10)));
        });
        let configure = |builder: &mut HttpBuilder| configure_http(builder, options.header_timeout);
        match tls {
            None => {
                let mut server = axum_server::from_tcp(listener.into_std()?)?.acceptor(connections);
                configure(server.http_builder());
                server.handle(handle).serve(router.into_make_service()).await?;
            }
            Some(t) => {
                let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(t.http).acceptor(connections);
                let mut server = axum_server::from_tcp(listener.into_std()?)?.acceptor(acceptor);
                configure(server.http_builder());
                server.handle(handle).serve(router.into_make_service()).await?;
            }
        }
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
