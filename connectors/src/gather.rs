//! The shared shape of the `file` and `console` sinks: gather every sample
//! on worker 0, keep them per timely time (holding a capability, so the
//! pipeline is not done before they are written), and once the frontier has
//! passed a time, write its samples in a canonical order (series, then
//! timestamp). Output is therefore the same for any number of workers.
//! A time's capability is released only once its samples are written and
//! flushed, so the sink's frontier is its durable frontier; times the
//! pipeline's [`Resume`] says were written by an earlier run are skipped.

use std::collections::BTreeMap;
use std::sync::Arc;

use timely::dataflow::operators::Capability;

use tidemark_engine::Sample;
use tidemark_engine::component::Resume;
use tidemark_engine::runtime::{
    Operator, ProgressBuilder, ProgressStream, SampleStream, frontier_min, to_first_worker,
};
use tidemark_engine::stats::{ComponentStats, add};
use tidemark_engine::time::Time;

/// Writes one time's sorted samples; returns how many were written.
pub(crate) trait Writer: 'static {
    fn write(&mut self, samples: &[Sample]) -> std::io::Result<()>;
    fn flush(&mut self) -> std::io::Result<()>;
}

pub(crate) fn gather_sink<'scope>(
    stream: SampleStream<'scope>,
    name: &str,
    stats: Arc<ComponentStats>,
    resume: Arc<Resume>,
    mut writer: impl Writer,
) -> ProgressStream<'scope> {
    let label = name.to_owned();
    stream
        .unary_frontier::<ProgressBuilder, _, _, _>(to_first_worker(), name, move |_cap, _info| {
            let mut stash: BTreeMap<Time, (Capability<Time>, Vec<Sample>)> = BTreeMap::new();
            let mut failed = false;
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else { return };
                    add(&stats.received, data.len() as u64);
                    let time = *cap.time();
                    stash.entry(time).or_insert_with(|| (cap, Vec::new())).1.append(data);
                });
                let f = frontier_min(frontier).unwrap_or(Time::MAX);
                let mut wrote = false;
                while let Some(entry) = stash.first_entry() {
                    if *entry.key() >= f {
                        break;
                    }
                    let (cap, mut batch) = entry.remove();
                    batch.sort_by(|a, b| {
                        a.series.cmp(&b.series).then(a.timestamp.cmp(&b.timestamp)).then(a.value.total_cmp(&b.value))
                    });
                    if failed || !resume.writes(*cap.time()) {
                        continue;
                    }
                    match writer.write(&batch) {
                        Ok(()) => add(&stats.sent, batch.len() as u64),
                        Err(error) => {
                            add(&stats.errors, 1);
                            tracing::error!(%error, sink = %label, "Failed to write; dropping this sink's output from here on.");
                            failed = true;
                        }
                    }
                    wrote = true;
                }
                if wrote
                    && !failed
                    && let Err(error) = writer.flush()
                {
                    add(&stats.errors, 1);
                    tracing::error!(%error, sink = %label, "Failed to flush.");
                    failed = true;
                }
            }
        })
        .container::<Vec<()>>()
}
