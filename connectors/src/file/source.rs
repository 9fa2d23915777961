//! The `file` source: worker 0 reads and decodes on a thread of its own and
//! hands batches to the dataflow through a bounded channel (a full channel
//! blocks the reader: backpressure). Every other worker's instance finishes at
//! once, so it holds no watermark back.
//!
//! Each sample's timely time is the watermark after it was read
//! (`max seen - max_out_of_orderness`), so lateness depends only on the file.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

use tidemark_engine::Sample;
use tidemark_engine::codec::decode_json;
use tidemark_engine::component::SourceContext;
use tidemark_engine::flow::FlowControl;
use tidemark_engine::runtime::{PipelineScope, SampleStream, SyncActivator, source};
use tidemark_engine::stats::{ComponentStats, DropReason, add};
use tidemark_engine::validate::{Limits, RejectReason};
use tidemark_engine::watermark::Watermarks;

use super::config::FileSource;

const BATCH: usize = 1024;

fn read_lines(
    input: Box<dyn Read + Send>,
    origin: &str,
    limits: &Limits,
    stats: &ComponentStats,
    tx: &SyncSender<Vec<Sample>>,
    activator: &SyncActivator,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut logged = 0;
    for (n, line) in BufReader::with_capacity(1 << 16, input).lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(error) => {
                add(&stats.errors, 1);
                tracing::error!(%error, file = origin, line = n + 1, "Failed to read; stopping this source.");
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match decode_json(&line, limits) {
            Ok(sample) => batch.push(sample),
            Err(error) => {
                stats.dropped(DropReason::Rejected(error.reason), 1);
                if logged < 10 {
                    logged += 1;
                    tracing::warn!(file = origin, line = n + 1, reason = error.reason.as_str(), %error, "Rejected a sample.");
                }
            }
        }
        if batch.len() == BATCH {
            if tx
                .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                .is_err()
            {
                return;
            }
            let _ = activator.activate();
        }
    }
    if !batch.is_empty() && tx.send(batch).is_ok() {
        let _ = activator.activate();
    }
    let rejected: u64 = RejectReason::ALL
        .iter()
        .map(|r| stats.drops(DropReason::Rejected(*r)))
        .sum();
    if rejected > 0 {
        tracing::warn!(
            file = origin,
            rejected,
            "Finished reading with rejected samples."
        );
    }
}

fn spawn_reader(
    config: &FileSource,
    ctx: &SourceContext,
    activator: SyncActivator,
) -> Receiver<Vec<Sample>> {
    let (tx, rx) = sync_channel(16);
    let path = config.path.clone();
    let limits = ctx.limits.clone();
    let stats = Arc::clone(&ctx.stats);
    let spawned = std::thread::Builder::new()
        .name(format!("file-{}", ctx.name))
        .spawn(move || {
            let origin = path
                .as_ref()
                .map_or("-".to_owned(), |p| p.display().to_string());
            let input: Box<dyn Read + Send> = match &path {
                None => Box::new(std::io::stdin()),
                Some(p) => match std::fs::File::open(p) {
                    Ok(f) => Box::new(f),
                    Err(error) => {
                        add(&stats.errors, 1);
                        tracing::error!(%error, file = %origin, "Cannot open the input file.");
                        return;
                    }
                },
            };
            read_lines(input, &origin, &limits, &stats, &tx, &activator);
            drop(tx);
            let _ = activator.activate();
        });
    if let Err(error) = spawned {
        add(&ctx.stats.errors, 1);
        tracing::error!(%error, "Cannot start the file reader thread.");
    }
    rx
}

impl FileSource {
    /// Builds the source on a worker.
    pub fn build<'scope>(
        &self,
        scope: PipelineScope<'scope>,
        ctx: SourceContext,
    ) -> SampleStream<'scope> {
        let config = self.clone();
        let reader = scope.index() == 0;
        source(scope, &ctx.name.clone(), move |capability, info| {
            let activator = scope.activator_for(Rc::clone(&info.address));
            let mut cap = reader.then_some(capability);
            let rx = reader.then(|| {
                let sync = scope.worker().sync_activator_for(info.address.to_vec());
                spawn_reader(&config, &ctx, sync)
            });
            let mut watermarks = Watermarks::new(1, config.max_out_of_orderness, None);
            let mut flow = FlowControl::new(ctx.probe.clone(), ctx.holdback, ctx.max_in_flight).with_gauge(Arc::clone(&ctx.stats));
            let mut last_data = Instant::now();
            let mut idle = false;
            move |output| {
                let (Some(c), Some(rx)) = (cap.as_mut(), rx.as_ref()) else { return };
                if ctx.shutdown.is_triggered() {
                    cap = None;
                    return;
                }
                for _ in 0..64 {
                    if !flow.may_send(*c.time()) {
                        activator.activate_after(Duration::from_millis(1));
                        return;
                    }
                    let mut batch = match rx.try_recv() {
                        Ok(b) => b,
                        Err(TryRecvError::Empty) => {
                            // Nothing to read: after idle_timeout, stop holding
                            // the pipeline's watermark back.
                            if let Some(timeout) = config.idle_timeout {
                                if last_data.elapsed() >= timeout {
                                    let target = ctx.clock.max();
                                    if target > *c.time() {
                                        c.downgrade(&target);
                                    }
                                    if !idle {
                                        idle = true;
                                        tracing::info!(source = %ctx.name, "Source is idle; it no longer holds the watermark back.");
                                    }
                                }
                                activator.activate_after(timeout.min(Duration::from_millis(100)));
                            }
                            return;
                        }
                        Err(TryRecvError::Disconnected) => {
                            cap = None;
                            return;
                        }
                    };
                    let now = Instant::now();
                    last_data = now;
                    idle = false;
                    add(&ctx.stats.received, batch.len() as u64);
                    let mut run: Vec<Sample> = Vec::with_capacity(batch.len());
                    for sample in batch.drain(..) {
                        watermarks.observe(0, sample.timestamp, now);
                        let time = watermarks.advance(now).max(*c.time());
                        if time != *c.time() {
                            if !run.is_empty() {
                                flow.sent(*c.time(), run.len() as u64);
                                output.session(&*c).give_container(&mut run);
                                run.clear();
                            }
                            c.downgrade(&time);
                        }
                        run.push(sample);
                    }
                    if !run.is_empty() {
                        flow.sent(*c.time(), run.len() as u64);
                        output.session(&*c).give_container(&mut run);
                    }
                    ctx.clock.publish(*c.time());
                }
                activator.activate();
            }
        })
        .container::<Vec<Sample>>()
    }
}

use std::rc::Rc;
