//! The `file` sink: JSON lines, written per closed time in a canonical order.

use std::fs::File;
use std::io::{BufWriter, Write};

use tidemark_engine::Sample;
use tidemark_engine::codec::encode_json;
use tidemark_engine::component::{SinkContext, StdoutWriter};
use tidemark_engine::runtime::{ProgressStream, SampleStream};

use super::FileSinkConfig;
use crate::gather::{Writer, gather_sink};

enum Target {
    File(Option<BufWriter<File>>, String, bool),
    Stdout(StdoutWriter, Vec<u8>),
}

impl Writer for Target {
    fn write(&mut self, samples: &[Sample]) -> std::io::Result<()> {
        match self {
            Target::File(file, path, append) => {
                if file.is_none() {
                    let p = std::path::Path::new(path.as_str());
                    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::create_dir_all(dir)?;
                    }
                    let f = std::fs::OpenOptions::new()
                        .create(true)
                        .write(true)
                        .append(*append)
                        .truncate(!*append)
                        .open(p)?;
                    *file = Some(BufWriter::with_capacity(1 << 16, f));
                }
                let Some(w) = file.as_mut() else {
                    return Ok(());
                };
                for s in samples {
                    encode_json(s, w)?;
                }
                Ok(())
            }
            Target::Stdout(out, buffer) => {
                buffer.clear();
                for s in samples {
                    encode_json(s, buffer)?;
                }
                out(buffer);
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            // Durable means on disk: the sink's frontier (and so Kafka
            // offsets) moves only after this.
            Target::File(Some(w), _, _) => {
                w.flush()?;
                w.get_ref().sync_data()
            }
            _ => Ok(()),
        }
    }
}

impl FileSinkConfig {
    /// Builds the sink on a worker. Worker 0 creates the file (truncating
    /// it unless `append`) when the run starts, so an empty result is an
    /// empty file.
    pub fn build<'scope>(
        &self,
        stream: SampleStream<'scope>,
        ctx: SinkContext,
        worker: usize,
    ) -> ProgressStream<'scope> {
        let mut target = if self.path == "-" {
            Target::Stdout(ctx.stdout, Vec::new())
        } else {
            Target::File(None, self.path.clone(), self.append)
        };
        if worker == 0
            && let Err(error) = target.write(&[])
        {
            tidemark_engine::stats::add(&ctx.stats.errors, 1);
            tracing::error!(%error, path = %self.path, "Cannot create the output file.");
        }
        gather_sink(stream, &ctx.name, ctx.stats, ctx.resume, target)
    }
}
