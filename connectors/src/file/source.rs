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

use tidemark_codecs::json::{DecodeError, decode_json};
use tidemark_engine::Sample;
use tidemark_engine::component::{Shutdown, SourceContext};
use tidemark_engine::flow::FlowControl;
use tidemark_engine::runtime::{PipelineScope, SampleStream, SyncActivator, source};
use tidemark_engine::stats::{ComponentStats, DropReason, add};
use tidemark_engine::validate::{Limits, RejectReason};
use tidemark_engine::watermark::Watermarks;

use super::config::FileSource;

const BATCH: usize = 1024;

/// The longest line read; a longer one (or an endless file without
/// newlines, such as a device) is rejected in pieces as `malformed`
/// without holding more than this in memory.
pub const MAX_LINE: usize = 1 << 20;

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line, in the buffer (without its newline).
    Text,
    /// The start of a line longer than [`MAX_LINE`], which is skipped.
    TooLong,
    /// More of the line being skipped (a device without newlines goes on
    /// like this): nothing new to count, but a chance to notice a stop.
    More,
    /// The end of the input.
    End,
}

/// Reads one line into `buf`, never holding more than [`MAX_LINE`] bytes;
/// `skipping` carries a long line's skipping over to the next call.
fn read_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    skipping: &mut bool,
) -> std::io::Result<Line> {
    buf.clear();
    let (mut read_any, mut skipped) = (false, 0usize);
    let started_skipping = *skipping;
    let report = |started: bool| if started { Line::More } else { Line::TooLong };
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            let was_skipping = std::mem::take(skipping);
            return Ok(match (read_any, was_skipping) {
                (false, false) => Line::End,
                (_, true) => report(started_skipping),
                (true, false) => Line::Text,
            });
        }
        read_any = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        if !*skipping && buf.len() + chunk.len() <= MAX_LINE {
            buf.extend_from_slice(chunk);
        } else {
            *skipping = true;
            skipped += buf.len() + chunk.len();
            buf.clear();
        }
        let used = newline.map_or(available.len(), |i| i + 1);
        reader.consume(used);
        if newline.is_some() {
            return Ok(if std::mem::take(skipping) {
                report(started_skipping)
            } else {
                Line::Text
            });
        }
        if skipped >= MAX_LINE {
            // An endless line: report now and go on skipping next time, so
            // that a device without newlines is seen (and a stop noticed)
            // between pieces.
            return Ok(report(started_skipping));
        }
    }
}

fn read_lines(
    input: Box<dyn Read + Send>,
    origin: &str,
    shutdown: &Shutdown,
    limits: &Limits,
    stats: &ComponentStats,
    tx: &SyncSender<Vec<Sample>>,
    activator: &SyncActivator,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut logged = 0;
    let mut reader = BufReader::with_capacity(1 << 16, input);
    let (mut buf, mut skipping) = (Vec::new(), false);
    let send = |batch: &mut Vec<Sample>| {
        let full = std::mem::replace(batch, Vec::with_capacity(BATCH));
        let sent = tx.send(full).is_ok();
        let _ = activator.activate();
        sent
    };
    for n in 0.. {
        if shutdown.is_triggered() {
            return;
        }
        // What was read goes on before a read that may wait (stdin, a pipe
        // or a FIFO with one line a second), not only when a batch fills.
        if reader.buffer().is_empty() && !batch.is_empty() && !send(&mut batch) {
            return;
        }
        let decoded = match read_line(&mut reader, &mut buf, &mut skipping) {
            Ok(Line::End) => break,
            Ok(Line::More) => continue,
            Err(error) => {
                add(&stats.errors, 1);
                tracing::error!(%error, file = origin, line = n + 1, "Failed to read; stopping this source.");
                break;
            }
            Ok(Line::TooLong) => Err(DecodeError {
                reason: RejectReason::Malformed,
                detail: format!("line longer than {} KiB", MAX_LINE >> 10),
            }),
            Ok(Line::Text) => match std::str::from_utf8(&buf) {
                Ok(line) if line.trim().is_empty() => continue,
                Ok(line) => decode_json(line, limits),
                Err(e) => Err(DecodeError {
                    reason: RejectReason::Malformed,
                    detail: format!("not UTF-8: {e}"),
                }),
            },
        };
        match decoded {
            Ok(sample) => batch.push(sample),
            Err(error) => {
                stats.dropped(DropReason::Rejected(error.reason), 1);
                if logged < 10 {
                    logged += 1;
                    tracing::warn!(file = origin, line = n + 1, reason = error.reason.as_str(), %error, "Rejected a sample.");
                }
            }
        }
        if batch.len() == BATCH && !send(&mut batch) {
            return;
        }
    }
    if !batch.is_empty() {
        send(&mut batch);
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

/// Opens a source file; devices (`/dev/zero`, `/dev/urandom`) are refused:
/// they never end and have no lines. FIFOs are read like files.
fn open(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::metadata(path)?.file_type();
    if kind.is_char_device() || kind.is_block_device() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a device is not a file of JSON lines",
        ));
    }
    std::fs::File::open(path)
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
    let shutdown = ctx.shutdown.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("file-{}", ctx.name))
        .spawn(move || {
            let origin = path
                .as_ref()
                .map_or("-".to_owned(), |p| p.display().to_string());
            let input: Box<dyn Read + Send> = match &path {
                None => Box::new(std::io::stdin()),
                Some(p) => match open(p) {
                    Ok(f) => Box::new(f),
                    Err(error) => {
                        add(&stats.errors, 1);
                        tracing::error!(%error, file = %origin, "Cannot open the input file.");
                        return;
                    }
                },
            };
            read_lines(input, &origin, &shutdown, &limits, &stats, &tx, &activator);
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
                            } else {
                                // Look again soon, to notice a stop while
                                // the reader waits (standard input).
                                activator.activate_after(Duration::from_millis(100));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<(Line, Vec<u8>)> {
        let mut reader = BufReader::with_capacity(7, input);
        let (mut buf, mut skipping) = (Vec::new(), false);
        let mut out = Vec::new();
        loop {
            let line = read_line(&mut reader, &mut buf, &mut skipping).unwrap();
            if line == Line::End {
                return out;
            }
            out.push((line, buf.clone()));
        }
    }

    #[test]
    fn lines_are_read_whole_and_long_ones_skipped_in_bounded_memory() {
        assert_eq!(
            lines(b"ab\n\nlonger than seven\nlast"),
            [
                (Line::Text, b"ab".to_vec()),
                (Line::Text, b"".to_vec()),
                (Line::Text, b"longer than seven".to_vec()),
                (Line::Text, b"last".to_vec()),
            ]
        );
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.extend_from_slice(b"\nok\n");
        // One rejection for the long line (its rest may come as `More`),
        // then the next line whole.
        let got: Vec<_> = lines(&input)
            .into_iter()
            .filter(|(l, _)| *l != Line::More)
            .collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, Line::TooLong);
        assert!(got[0].1.is_empty());
        assert_eq!(got[1], (Line::Text, b"ok".to_vec()));
        // No newline at all (a device): one rejection, then pieces of
        // about MAX_LINE bytes, never held.
        let endless = vec![0u8; 3 * MAX_LINE];
        let got = lines(&endless);
        assert_eq!(got[0], (Line::TooLong, Vec::new()));
        assert!(
            got[1..]
                .iter()
                .all(|(l, b)| *l == Line::More && b.is_empty())
        );
        assert!(got.len() >= 3, "{}", got.len());
    }

    #[test]
    fn devices_are_refused_as_sources() {
        let error = open(std::path::Path::new("/dev/zero")).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(open(std::path::Path::new("/dev/zero/x")).is_err());
    }
}
