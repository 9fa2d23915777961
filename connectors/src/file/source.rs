//! The `file` source: worker 0 reads and decodes on a thread of its own and
//! hands batches to the dataflow through a bounded channel (a full channel
//! blocks the reader: backpressure). Every other worker's instance finishes at
//! once, so it holds no watermark back.
//!
//! Each sample's timely time is the watermark after it was read
//! (`max seen - max_out_of_orderness`), so lateness depends only on the file.
//!
//! In a checkpointed pipeline (a file, not standard input) worker 0 records,
//! for every checkpoint its output crosses, the offset and number of the
//! first line whose sample enters at or after the cut, the largest
//! timestamp before it and a CRC-32 of the 64 KiB before it; a restore
//! reads on from there once the file's bytes before it are found the same,
//! and stops the pipeline with an error if they are not (the file was
//! changed or replaced: reading on would be wrong, and reading it again
//! from the start would count its beginning twice).

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use tidemark_codecs::json::{DecodeError, decode_json};
use tidemark_engine::Sample;
use tidemark_engine::checkpoint::{Part, decode, encode};
use tidemark_engine::component::{Shutdown, SourceContext};
use tidemark_engine::error::{ComponentError, Fault};
use tidemark_engine::flow::FlowControl;
use tidemark_engine::runtime::{PipelineScope, SampleStream, SyncActivator, source};
use tidemark_engine::stats::{ComponentStats, DropReason, add};
use tidemark_engine::time::{Millis, Time};
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

/// Counts the bytes consumed from a reader: the offset of what comes next.
struct Counted<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount);
        self.offset += amount as u64;
    }
}

/// What the reader hands to the operator.
struct Batch {
    samples: Vec<Sample>,
    /// Each sample's line: where it starts.
    lines: Vec<At>,
    /// Where the line after the batch starts.
    end: At,
}

/// A line of the file: its first byte's offset and its number (from 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct At {
    offset: u64,
    line: u64,
}

/// Bytes before a position whose checksum a restore checks: the file must
/// still hold, there, what the checkpointed run read.
const CHECKED: u64 = 64 * 1024;

/// Where worker 0's reader is in the file at a checkpoint (the other
/// workers' parts are `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    /// Offset of the next line to read.
    offset: u64,
    /// Its number (from 0).
    line: u64,
    /// The largest timestamp read before it.
    max_seen: Option<Millis>,
    /// CRC-32 of the (up to) [`CHECKED`] bytes before `offset`.
    crc32: u32,
}

/// CRC-32 of the (up to) [`CHECKED`] bytes of `file` before `offset`.
fn crc_before(file: &std::fs::File, offset: u64) -> std::io::Result<u32> {
    use std::os::unix::fs::FileExt;
    let from = offset.saturating_sub(CHECKED);
    let mut buf = vec![0u8; (offset - from) as usize];
    file.read_exact_at(&mut buf, from)?;
    Ok(crc32fast::hash(&buf))
}

/// Opens `path` at a checkpoint's position, checking that the file still
/// holds what the checkpointed run read before it.
fn reopen(path: &std::path::Path, at: &Position) -> Result<std::fs::File, String> {
    use std::io::{Seek, SeekFrom};
    let mut file = open(path).map_err(|e| format!("cannot open it again: {e}"))?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(
            "it is not a regular file (a pipe?): the position in it cannot be found again".into(),
        );
    }
    if meta.len() < at.offset {
        return Err(format!(
            "it holds {} bytes, fewer than the {} read before the checkpoint: it was replaced or truncated",
            meta.len(),
            at.offset
        ));
    }
    if crc_before(&file, at.offset).map_err(|e| e.to_string())? != at.crc32 {
        return Err(format!(
            "its bytes before offset {} (line {}) are not those read before the checkpoint: it was changed or replaced",
            at.offset,
            at.line + 1
        ));
    }
    file.seek(SeekFrom::Start(at.offset))
        .map_err(|e| e.to_string())?;
    Ok(file)
}

/// What the reader thread reads with.
struct Reading {
    shutdown: Shutdown,
    limits: Limits,
    stats: Arc<ComponentStats>,
}

/// Reads `input` (at `from` in its file) line by line, decoding samples.
fn read_lines(
    input: Box<dyn Read + Send>,
    from: At,
    origin: &str,
    reading: &Reading,
    tx: &SyncSender<Result<Batch, String>>,
    activator: &SyncActivator,
) {
    let Reading {
        shutdown,
        limits,
        stats,
    } = reading;
    let empty = |end: At| Batch {
        samples: Vec::with_capacity(BATCH),
        lines: Vec::with_capacity(BATCH),
        end,
    };
    let mut batch = empty(from);
    let mut logged = 0;
    let mut reader = Counted {
        inner: BufReader::with_capacity(1 << 16, input),
        offset: from.offset,
    };
    let (mut buf, mut skipping) = (Vec::new(), false);
    let mut line = from.line;
    let send = |batch: &mut Batch, end: At| {
        let mut full = std::mem::replace(batch, empty(end));
        full.end = end;
        let sent = tx.send(Ok(full)).is_ok();
        let _ = activator.activate();
        sent
    };
    loop {
        if shutdown.is_triggered() {
            return;
        }
        let here = At {
            offset: reader.offset,
            line,
        };
        // What was read goes on before a read that may wait (stdin, a pipe
        // or a FIFO with one line a second), not only when a batch fills.
        if reader.inner.buffer().is_empty() && !batch.samples.is_empty() && !send(&mut batch, here)
        {
            return;
        }
        let decoded = match read_line(&mut reader, &mut buf, &mut skipping) {
            Ok(Line::End) => break,
            Ok(Line::More) => continue,
            Err(error) => {
                add(&stats.errors, 1);
                tracing::error!(%error, file = origin, line = line + 1, "Failed to read; stopping this source.");
                break;
            }
            Ok(Line::TooLong) => Err(DecodeError {
                reason: RejectReason::Malformed,
                detail: format!("line longer than {} KiB", MAX_LINE >> 10),
            }),
            Ok(Line::Text) => match std::str::from_utf8(&buf) {
                Ok(text) if text.trim().is_empty() => {
                    line += 1;
                    continue;
                }
                Ok(text) => decode_json(text, limits),
                Err(e) => Err(DecodeError {
                    reason: RejectReason::Malformed,
                    detail: format!("not UTF-8: {e}"),
                }),
            },
        };
        line += 1;
        match decoded {
            Ok(sample) => {
                batch.samples.push(sample);
                batch.lines.push(here);
            }
            Err(error) => {
                stats.dropped(DropReason::Rejected(error.reason), 1);
                if logged < 10 {
                    logged += 1;
                    tracing::warn!(file = origin, line, reason = error.reason.as_str(), %error, "Rejected a sample.");
                }
            }
        }
        if batch.samples.len() == BATCH {
            let end = At {
                offset: reader.offset,
                line,
            };
            if !send(&mut batch, end) {
                return;
            }
        }
    }
    let end = At {
        offset: reader.offset,
        line,
    };
    // (The last batch, empty or not: it says where the file ended.)
    send(&mut batch, end);
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

/// Starts the reader thread (at `restored`, a checkpoint's position, if
/// any).
fn spawn_reader(
    config: &FileSource,
    ctx: &SourceContext,
    restored: Option<Position>,
    activator: SyncActivator,
) -> Receiver<Result<Batch, String>> {
    let (tx, rx) = sync_channel(16);
    let path = config.path.clone();
    let reading = Reading {
        shutdown: ctx.shutdown.clone(),
        limits: ctx.limits.clone(),
        stats: Arc::clone(&ctx.stats),
    };
    let spawned = std::thread::Builder::new()
        .name(format!("file-{}", ctx.name))
        .spawn(move || {
            let origin = path
                .as_ref()
                .map_or("-".to_owned(), |p| p.display().to_string());
            let from = restored.map_or(At::default(), |p| At {
                offset: p.offset,
                line: p.line,
            });
            let input: Box<dyn Read + Send> = match (&path, restored) {
                (None, _) => Box::new(std::io::stdin()),
                (Some(p), Some(at)) => match reopen(p, &at) {
                    Ok(f) => Box::new(f),
                    Err(why) => {
                        let _ = tx.send(Err(format!(
                            "cannot go on reading {origin} where the checkpoint left it: {why}. Delete the pipeline's checkpoints (or apply it under another name) to read the file from its start."
                        )));
                        let _ = activator.activate();
                        return;
                    }
                },
                (Some(p), None) => match open(p) {
                    Ok(f) => Box::new(f),
                    Err(error) => {
                        add(&reading.stats.errors, 1);
                        tracing::error!(%error, file = %origin, "Cannot open the input file.");
                        return;
                    }
                },
            };
            read_lines(input, from, &origin, &reading, &tx, &activator);
            drop(tx);
            let _ = activator.activate();
        });
    if let Err(error) = spawned {
        add(&ctx.stats.errors, 1);
        tracing::error!(%error, "Cannot start the file reader thread.");
    }
    rx
}

/// Worker 0's position where it is now: before the line `at`, with
/// `max_seen` read before it.
fn position(
    file: &mut Option<std::fs::File>,
    path: &std::path::Path,
    at: At,
    max_seen: Option<Millis>,
) -> std::io::Result<Position> {
    if file.is_none() {
        *file = Some(std::fs::File::open(path)?);
    }
    let crc32 = match file.as_ref() {
        Some(f) => crc_before(f, at.offset)?,
        None => 0,
    };
    Ok(Position {
        offset: at.offset,
        line: at.line,
        max_seen,
        crc32,
    })
}

/// The restored position: worker 0's part of the checkpoint.
fn restored_position(parts: &[Part]) -> Result<Option<Position>, String> {
    let mut found = None;
    for part in parts {
        if let Some(p) = decode::<Option<Position>>(part)? {
            found = Some(p);
        }
    }
    Ok(found)
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
            let mut capability = capability;
            // Restored from a checkpoint: worker 0 reads on where it was;
            // every worker's output starts at its cut.
            let restored = ctx.restore(&mut capability, |parts| {
                if reader {
                    restored_position(&parts)
                } else {
                    Ok(None)
                }
            });
            let (restored, mut refused) = match restored {
                Ok(p) => (p, None),
                Err(why) => (None, Some(why)),
            };
            let mut watermarks = Watermarks::new(1, config.max_out_of_orderness, None);
            let mut max_seen = restored.and_then(|p| p.max_seen);
            if let Some(m) = max_seen {
                watermarks.observe(0, m, Instant::now());
                watermarks.advance(Instant::now());
            }
            let mut cap = Some(capability);
            if !reader {
                // Nothing to read here: this worker's output is complete.
                if let (Some(cut), Some(c)) = (&ctx.checkpoint, &cap) {
                    cut.finish(*c.time(), encode(&None::<Position>));
                }
                cap = None;
            }
            let rx = (reader && refused.is_none()).then(|| {
                let sync = scope.worker().sync_activator_for(info.address.to_vec());
                spawn_reader(&config, &ctx, restored, sync)
            });
            let mut file = None;
            let mut last = restored.map_or(At::default(), |p| At { offset: p.offset, line: p.line });
            let mut flow = FlowControl::new(ctx.probe.clone(), ctx.holdback, ctx.max_in_flight).with_gauge(Arc::clone(&ctx.stats));
            let mut last_data = Instant::now();
            let mut idle = false;
            move |output| {
                let Some(c) = cap.as_mut() else { return };
                // The pipeline cannot go on: stop it, writing nothing more.
                let mut fail = |why: String| {
                    add(&ctx.stats.errors, 1);
                    tracing::error!(source = %ctx.name, "{why}");
                    ctx.failure.fail(&ctx.name, &ComponentError::permanent(Fault::Config, why));
                    ctx.resume.abandon();
                };
                if let Some(why) = refused.take() {
                    fail(why);
                    cap = None;
                    return;
                }
                let Some(rx) = rx.as_ref() else { return };
                if let Some(cut) = &ctx.checkpoint {
                    cut.checkpoints().poll(ctx.probe.with_frontier(|f| f.iter().min().copied()).unwrap_or(Time::MAX));
                }
                if ctx.shutdown.is_triggered() {
                    // Checkpointed, it stops without draining, as the other
                    // sources do: a restart reads on from the checkpoint.
                    if ctx.checkpoint.is_some() {
                        ctx.resume.abandon();
                    }
                    cap = None;
                    return;
                }
                // Its position for every checkpoint its output crosses
                // moving from `from` to `to`: before line `at`.
                let cross = |file: &mut Option<std::fs::File>, from: Time, to: Time, at: At, max_seen: Option<Millis>, fail: &mut dyn FnMut(String)| {
                    let (Some(cut), Some(path)) = (&ctx.checkpoint, &config.path) else { return };
                    let crossed = cut.crossed(from, to);
                    if crossed.is_empty() {
                        return;
                    }
                    match position(file, path, at, max_seen) {
                        Ok(p) => {
                            let bytes = encode(&Some(p));
                            for b in crossed {
                                cut.write_at(b, bytes.clone());
                            }
                        }
                        // (The checkpoint does not complete; nor does any
                        // later one: the file cannot be read back.)
                        Err(error) => fail(format!("cannot read back {} for a checkpoint: {error}", path.display())),
                    }
                };
                for _ in 0..64 {
                    if !flow.may_send(*c.time()) {
                        activator.activate_after(Duration::from_millis(1));
                        return;
                    }
                    let batch = match rx.try_recv() {
                        Ok(Ok(b)) => b,
                        Ok(Err(why)) => {
                            fail(why);
                            cap = None;
                            return;
                        }
                        Err(TryRecvError::Empty) => {
                            // Nothing to read: after idle_timeout, stop holding
                            // the pipeline's watermark back.
                            if let Some(timeout) = config.idle_timeout {
                                if last_data.elapsed() >= timeout {
                                    let target = ctx.clock.max();
                                    if target > *c.time() {
                                        cross(&mut file, *c.time(), target, last, max_seen, &mut fail);
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
                            // The end of the file: this output is complete.
                            if let (Some(cut), Some(path)) = (&ctx.checkpoint, &config.path) {
                                match position(&mut file, path, last, max_seen) {
                                    Ok(p) => cut.finish(*c.time(), encode(&Some(p))),
                                    Err(error) => fail(format!("cannot read back {} for a checkpoint: {error}", path.display())),
                                }
                            }
                            cap = None;
                            return;
                        }
                    };
                    let now = Instant::now();
                    last_data = now;
                    idle = false;
                    let Batch { samples, lines, end } = batch;
                    add(&ctx.stats.received, samples.len() as u64);
                    let mut run: Vec<Sample> = Vec::with_capacity(samples.len());
                    for (sample, at) in samples.into_iter().zip(lines) {
                        watermarks.observe(0, sample.timestamp, now);
                        let time = watermarks.advance(now).max(*c.time());
                        if time != *c.time() {
                            if !run.is_empty() {
                                flow.sent(*c.time(), run.len() as u64);
                                output.session(&*c).give_container(&mut run);
                                run.clear();
                            }
                            // This sample is the first at or after every
                            // checkpoint on the way.
                            cross(&mut file, *c.time(), time, at, max_seen, &mut fail);
                            c.downgrade(&time);
                        }
                        max_seen = Some(max_seen.map_or(sample.timestamp, |m| m.max(sample.timestamp)));
                        run.push(sample);
                    }
                    last = end;
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
