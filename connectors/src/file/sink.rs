//! The `file` sink: JSON lines, written per closed time in a canonical order.
//! Samples as the file source reads them; alerts, incidents and
//! notifications as their records serialise (Alertmanager's field names).
//!
//! Durable means on disk: a time's lines are written, flushed and, for a
//! regular file, `fsync`ed before its capability goes (so Kafka offsets
//! move only after that). Devices, FIFOs and pipes (`/dev/null`, `| jq`)
//! are written and flushed but not synced, which they do not support. A
//! write that fails is undone (the file is cut back to its last durable
//! length, so no truncated line stays) and done again later. A FIFO with
//! no reader yet is opened again later, without blocking the worker.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};

use tidemark_codecs::json::encode_json;
use tidemark_engine::Sample;
use tidemark_engine::component::{SinkContext, StdoutWriter};
use tidemark_engine::error::{ComponentError, Fault};
use tidemark_engine::runtime::ProgressStream;
use tidemark_engine::spec::AnyStream;

use super::FileSinkConfig;
use crate::gather::{Gather, Record, Writer, gather_sink};

/// How a record is written as one JSON line.
trait Line: Record {
    fn line(&self, out: &mut impl Write) -> std::io::Result<()>;
}

impl Line for Sample {
    fn line(&self, out: &mut impl Write) -> std::io::Result<()> {
        encode_json(self, out)
    }
}

macro_rules! serde_line {
    ($($t:ty),*) => {$(
        impl Line for $t {
            fn line(&self, out: &mut impl Write) -> std::io::Result<()> {
                serde_json::to_writer(&mut *out, self)?;
                out.write_all(b"\n")
            }
        }
    )*};
}
serde_line!(
    tidemark_engine::alert::Alert,
    tidemark_engine::incident::Incident,
    tidemark_engine::notify::Notification
);

/// An open output file.
struct Open {
    writer: BufWriter<File>,
    /// Whether it is a regular file (synced, and cut back after a failure).
    regular: bool,
    /// Its length after the last flush that succeeded.
    durable_len: u64,
}

enum Target {
    File {
        open: Option<Open>,
        path: String,
        append: bool,
    },
    Stdout(StdoutWriter, Vec<u8>),
}

/// An I/O error of the file sink: a pipe whose reader left is as final as
/// a path that cannot be created.
fn io_error(what: &str, path: &str, error: std::io::Error) -> ComponentError {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        return ComponentError::permanent(Fault::Config, format!("cannot {what} {path}"))
            .caused_by(error);
    }
    ComponentError::io(format!("cannot {what} {path}"), error)
}

/// Cuts off a regular file's last line if it has no newline: the torn end
/// of a write the process did not finish (killed, or the machine lost
/// power), never durable. Appending after it would glue the next line to
/// it. Returns the bytes cut.
fn cut_torn_line(path: &std::path::Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 1 << 16];
    // From the end back to the last newline.
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let from = end.saturating_sub(chunk.len() as u64);
        let piece = &mut chunk[..(end - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(piece)?;
        if let Some(i) = piece.iter().rposition(|&b| b == b'\n') {
            break from + i as u64 + 1;
        }
        end = from;
    };
    if keep < len {
        file.set_len(keep)?;
        file.sync_all()?;
    }
    Ok(len - keep)
}

fn open(path: &str, append: bool) -> std::io::Result<Open> {
    use std::os::unix::fs::OpenOptionsExt;

    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};

    let p = std::path::Path::new(path);
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    if append && std::fs::metadata(p).is_ok_and(|m| m.file_type().is_file()) {
        let cut = cut_torn_line(p)?;
        if cut > 0 {
            tracing::warn!(
                file = path,
                bytes = cut,
                "Cut off the file's last line, which a write the process did not finish left without its end; what it held is written again."
            );
        }
    }
    // A FIFO that nobody reads would block `open`, and the worker with it
    // (every pipeline on it): opened without blocking, it fails with ENXIO
    // instead, which is retried. Writes then block as usual, so a slow
    // reader slows the sink down and loses nothing.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(p)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) {
                std::io::Error::new(e.kind(), "a FIFO that no process reads yet")
            } else {
                e
            }
        })?;
    fcntl_setfl(&file, fcntl_getfl(&file)? - OFlags::NONBLOCK)?;
    let metadata = file.metadata()?;
    let regular = metadata.file_type().is_file();
    Ok(Open {
        writer: BufWriter::with_capacity(1 << 16, file),
        regular,
        durable_len: if regular { metadata.len() } else { 0 },
    })
}

impl<R: Line> Writer<R> for Target {
    fn write(&mut self, samples: &[R]) -> Result<(), ComponentError> {
        match self {
            Target::File {
                open: o,
                path,
                append,
            } => {
                if o.is_none() {
                    *o = Some(open(path, *append).map_err(|e| io_error("create", path, e))?);
                }
                let Some(o) = o.as_mut() else {
                    return Ok(());
                };
                for s in samples {
                    s.line(&mut o.writer)
                        .map_err(|e| io_error("write", path, e))?;
                }
                Ok(())
            }
            Target::Stdout(out, buffer) => {
                buffer.clear();
                for s in samples {
                    // Writing to a Vec cannot fail.
                    let _ = s.line(buffer);
                }
                out(buffer);
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> Result<(), ComponentError> {
        self.flush_file()
    }

    fn reset(&mut self) {
        self.reset_file()
    }
}

impl Target {
    fn flush_file(&mut self) -> Result<(), ComponentError> {
        let Target::File {
            open: Some(o),
            path,
            ..
        } = self
        else {
            return Ok(());
        };
        o.writer.flush().map_err(|e| io_error("write", path, e))?;
        if o.regular {
            let file = o.writer.get_ref();
            file.sync_data().map_err(|e| io_error("sync", path, e))?;
            o.durable_len = file
                .metadata()
                .map_err(|e| io_error("sync", path, e))?
                .len();
        }
        Ok(())
    }

    fn reset_file(&mut self) {
        let Target::File { open: o, .. } = self else {
            return;
        };
        // Drop what is buffered without writing it; cut a regular file back
        // to what was durable, or reopen it when that fails.
        let Some(old) = o.take() else { return };
        let (file, _buffered) = old.writer.into_parts();
        if !old.regular {
            return;
        }
        let mut file = file;
        if file.set_len(old.durable_len).is_ok()
            && file.seek(SeekFrom::Start(old.durable_len)).is_ok()
        {
            *o = Some(Open {
                writer: BufWriter::with_capacity(1 << 16, file),
                regular: true,
                durable_len: old.durable_len,
            });
        }
    }
}

impl FileSinkConfig {
    /// Builds the sink on a worker, for whatever its input carries. Worker
    /// 0 creates the file (truncating it unless `append`) when the run
    /// starts, so an empty result is an empty file.
    pub fn build<'scope>(
        &self,
        input: AnyStream<'scope>,
        ctx: SinkContext,
    ) -> ProgressStream<'scope> {
        let worker = ctx.worker;
        let mut target = if self.path == "-" {
            Target::Stdout(std::sync::Arc::clone(&ctx.stdout), Vec::new())
        } else {
            Target::File {
                open: None,
                path: self.path.clone(),
                append: self.append.unwrap_or(false),
            }
        };
        if worker == 0
            && let Err(error) = Writer::<Sample>::write(&mut target, &[])
        {
            if error.retryable {
                // Tried again with the first write (a FIFO with no reader
                // yet, a full disk): the status API shows why it waits.
                ctx.stats.retried(&error.chain());
                tracing::warn!(error = %error.chain(), path = %self.path, "Cannot open the output file yet; it will be tried again.");
            } else {
                tidemark_engine::stats::add(&ctx.stats.errors, 1);
                tracing::error!(error = %error.chain(), path = %self.path, "Cannot create the output file; the pipeline stops.");
                ctx.failure.fail(&ctx.name, &error);
            }
            target.reset_file();
        }
        let gather = Gather::from(ctx);
        match input {
            AnyStream::Samples(s) => gather_sink(s, gather, target),
            AnyStream::Alerts(s) => gather_sink(s, gather, target),
            AnyStream::Incidents(s) => gather_sink(s, gather, target),
            AnyStream::Notifications(s) => gather_sink(s, gather, target),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_off_and_whole_lines_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let long_tail = "x".repeat(200_000);
        for (content, kept) in [
            ("a\nb\n", "a\nb\n"),
            ("a\nb\n{\"name\":", "a\nb\n"),
            ("{\"torn", ""),
            ("", ""),
        ] {
            std::fs::write(&path, content).unwrap();
            let cut = cut_torn_line(&path).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), kept, "{content:?}");
            assert_eq!(cut as usize, content.len() - kept.len());
        }
        // A tail longer than one read back.
        std::fs::write(&path, format!("a\n{long_tail}")).unwrap();
        assert_eq!(cut_torn_line(&path).unwrap(), 200_000);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\n");
    }
}
