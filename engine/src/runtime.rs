//! The timely-dataflow runtime, wrapped so that its API touches one crate.
//!
//! A process runs `workers` timely worker threads; several processes form a
//! cluster through timely's own cluster mode, given the address of every
//! process (a host file, one `host:port` a line) and this process's index.
//! Records move between workers in `Vec` batches, exchanged by series id.

use std::path::Path;

use timely::dataflow::channels::pact::Exchange;

use crate::series::Sample;
use crate::time::Time;

pub use timely::WorkerConfig;
pub use timely::dataflow::operators::generic::operator::{empty, source};
pub use timely::dataflow::operators::{Capability, Concatenate, Inspect, Operator, Probe};
pub use timely::dataflow::{ProbeHandle, Scope, Stream};
pub use timely::scheduling::{Activator, SyncActivator};
pub use timely::worker::Worker;

/// The container builder of streams that carry no data.
pub type ProgressBuilder = timely::container::CapacityContainerBuilder<Vec<()>>;

/// A stream of sample batches.
pub type SampleStream<'scope> = Stream<'scope, Time, Vec<Sample>>;

/// A stream of alert state changes (an `alert` transform's `alerts`).
pub type AlertStream<'scope> = Stream<'scope, Time, Vec<crate::alert::Alert>>;

/// A stream of incident changes (a `correlate` transform's `incidents`).
pub type IncidentStream<'scope> = Stream<'scope, Time, Vec<crate::incident::Incident>>;

/// A stream of notifications (a `route` transform's output).
pub type NotificationStream<'scope> = Stream<'scope, Time, Vec<crate::notify::Notification>>;

/// A stream that carries no data, only progress: what sinks return.
pub type ProgressStream<'scope> = Stream<'scope, Time, Vec<()>>;

/// The scope every pipeline is built in.
pub type PipelineScope<'scope> = Scope<'scope, Time>;

/// How many workers, in how many processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Worker threads in this process.
    pub workers: usize,
    /// This process's index into `hosts`.
    pub process: usize,
    /// `host:port` of every process; empty for a single process.
    pub hosts: Vec<String>,
}

/// The cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The host file could not be read.
    #[error("cannot read host file {path}")]
    HostFile {
        /// The path given.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is inconsistent.
    #[error("invalid cluster configuration: {0}")]
    Invalid(String),
    /// Timely failed to start (for example, a peer did not connect).
    #[error("cannot start the dataflow workers: {0}")]
    Start(String),
    /// A worker thread panicked.
    #[error("worker failed: {0}")]
    Worker(String),
}

impl Cluster {
    /// One process with `workers` threads.
    pub fn local(workers: usize) -> Cluster {
        Cluster {
            workers,
            process: 0,
            hosts: Vec::new(),
        }
    }

    /// A cluster from a host file (one `host:port` a line; blank lines and
    /// `#` comments ignored) and this process's index.
    pub fn from_host_file(
        workers: usize,
        process: usize,
        path: &Path,
    ) -> Result<Cluster, ClusterError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::HostFile {
            path: path.display().to_string(),
            source,
        })?;
        let hosts: Vec<String> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        let cluster = Cluster {
            workers,
            process,
            hosts,
        };
        cluster.check()?;
        Ok(cluster)
    }

    /// Checks the configuration.
    pub fn check(&self) -> Result<(), ClusterError> {
        if self.workers == 0 {
            return Err(ClusterError::Invalid("--workers must be at least 1".into()));
        }
        if !self.hosts.is_empty() && self.process >= self.hosts.len() {
            return Err(ClusterError::Invalid(format!(
                "process index {} is out of range for {} hosts",
                self.process,
                self.hosts.len()
            )));
        }
        Ok(())
    }

    /// Number of processes.
    pub fn processes(&self) -> usize {
        self.hosts.len().max(1)
    }

    /// The timely configuration of one process (a cluster connects in
    /// [`execute`]).
    fn timely_config(&self) -> timely::Config {
        let communication = if self.workers > 1 {
            timely::CommunicationConfig::Process(self.workers)
        } else {
            timely::CommunicationConfig::Thread
        };
        timely::Config {
            communication,
            worker: WorkerConfig::default(),
        }
    }
}

/// Running workers; [`Running::join`] waits for them.
pub struct Running<R: Send + 'static> {
    guards: timely::communication::WorkerGuards<R>,
}

impl<R: Send + 'static> Running<R> {
    /// Whether every local worker has returned.
    pub fn is_finished(&self) -> bool {
        self.guards.guards().iter().all(|g| g.is_finished())
    }

    /// Leaves the workers running without waiting for them (dropping a
    /// `Running` waits): for a process that is about to exit anyway, after a
    /// stop that did not finish in time.
    pub fn abandon(self) {
        std::mem::forget(self.guards);
    }

    /// Waits for the workers and returns what each returned.
    pub fn join(self) -> Result<Vec<R>, ClusterError> {
        self.guards
            .join()
            .into_iter()
            .map(|r| r.map_err(ClusterError::Worker))
            .collect()
    }
}

/// Starts the workers of this process; each runs `func`.
pub fn execute<R, F>(cluster: &Cluster, func: F) -> Result<Running<R>, ClusterError>
where
    R: Send + 'static,
    F: Fn(&mut Worker) -> R + Send + Sync + 'static,
{
    cluster.check()?;
    let guards = if cluster.hosts.len() > 1 {
        // Connected here rather than by timely, which polls once a second
        // (see `crate::connect`); timely's network threads take over.
        use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
        use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
        let sockets = crate::connect::connect(&cluster.hosts, cluster.process)
            .map_err(|e| ClusterError::Start(format!("failed to connect the cluster: {e}")))?;
        let hooks = timely::communication::Hooks::default();
        let local = ProcessBuilder::new_typed_vector(
            cluster.workers,
            hooks.refill.clone(),
            hooks.spill.clone(),
        );
        let (builders, network) = initialize_networking_from_sockets(
            local,
            sockets,
            cluster.process,
            cluster.workers,
            hooks,
        )
        .map_err(|e| ClusterError::Start(format!("failed to initialize networking: {e}")))?;
        timely::execute::execute_from(
            builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
            Box::new(network),
            WorkerConfig::default(),
            func,
        )
    } else {
        timely::execute(cluster.timely_config(), func)
    }
    .map_err(ClusterError::Start)?;
    Ok(Running { guards })
}

/// The exchange contract that sends each sample to the worker owning its
/// series.
pub fn by_series() -> Exchange<Sample, impl FnMut(&Sample) -> u64 + 'static> {
    Exchange::new(|s: &Sample| s.series.id().0)
}

/// The exchange contract that gathers everything on worker 0.
pub fn to_first_worker() -> Exchange<Sample, impl FnMut(&Sample) -> u64 + 'static> {
    Exchange::new(|_: &Sample| 0)
}

/// Moves a capability up to `to`; one already there or past it stays.
pub fn raise(cap: &mut Capability<Time>, to: Time) {
    if to > *cap.time() {
        cap.downgrade(&to);
    }
}

/// The least time of a frontier, or `None` if it is empty.
pub fn frontier_min(frontier: &timely::progress::frontier::MutableAntichain<Time>) -> Option<Time> {
    frontier.frontier().iter().min().copied()
}
