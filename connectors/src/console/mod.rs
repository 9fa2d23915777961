//! The `console` sink: readable lines on standard output,
//! `2026-01-01T00:01:00.000Z  cpu_usage:1m_avg{host="a"}  42.5`.

use std::io::Write;

use std::sync::Arc;

use serde::Deserialize;

use tidemark_engine::Sample;
use tidemark_engine::component::{ConfigError, SinkContext, StdoutWriter};
use tidemark_engine::runtime::{ProgressStream, SampleStream};
use tidemark_engine::spec::{AnyStream, SinkSpec, StreamKind, Validate};
use tidemark_engine::time::Time;
use tidemark_engine::time::format_millis;

use crate::gather::{Writer, gather_sink};

/// `type: console`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Print at most this many lines per window end (timely time); the rest
    /// are summarised in one line. 0 prints everything. Default 20.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
}

fn default_max_lines() -> usize {
    20
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            max_lines: default_max_lines(),
        }
    }
}

impl ConsoleConfig {
    /// Nothing to check.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        Ok(())
    }

    /// Builds the sink on a worker.
    pub fn build<'scope>(
        &self,
        stream: SampleStream<'scope>,
        ctx: SinkContext,
    ) -> ProgressStream<'scope> {
        let writer = ConsoleWriter {
            out: ctx.stdout,
            max_lines: self.max_lines,
            buffer: Vec::new(),
        };
        gather_sink(stream, &ctx.name, ctx.stats, ctx.resume, writer)
    }
}

struct ConsoleWriter {
    out: StdoutWriter,
    max_lines: usize,
    buffer: Vec<u8>,
}

impl Writer for ConsoleWriter {
    fn write(&mut self, samples: &[Sample]) -> std::io::Result<()> {
        self.buffer.clear();
        let shown = if self.max_lines == 0 {
            samples.len()
        } else {
            samples.len().min(self.max_lines)
        };
        for s in &samples[..shown] {
            writeln!(
                self.buffer,
                "{}  {}  {}",
                format_millis(s.timestamp),
                s.series,
                s.value
            )?;
        }
        if shown < samples.len() {
            writeln!(
                self.buffer,
                "... and {} more (raise max_lines to see them)",
                samples.len() - shown
            )?;
        }
        (self.out)(&self.buffer);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Validate<dyn SinkSpec> for ConsoleConfig {
    fn validated(&self) -> Result<Arc<dyn SinkSpec>, Vec<ConfigError>> {
        self.validate()?;
        Ok(Arc::new(self.clone()))
    }
}

impl SinkSpec for ConsoleConfig {
    fn takes(&self) -> StreamKind {
        StreamKind::Samples
    }
    fn holdback(&self) -> Time {
        0
    }
    fn serves_live(&self) -> bool {
        false
    }
    fn build<'scope>(&self, input: AnyStream<'scope>, ctx: SinkContext) -> ProgressStream<'scope> {
        self.build(input.into_samples(), ctx)
    }
}
