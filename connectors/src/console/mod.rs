//! The `console` sink: readable lines on standard output,
//! `2026-01-01T00:01:00.000Z  cpu_usage:1m_avg{host="a"}  42.5`.

use std::io::Write;

use serde::Deserialize;

use tidemark_engine::Sample;
use tidemark_engine::component::{ConfigError, SinkContext, StdoutWriter};
use tidemark_engine::error::ComponentError;
use tidemark_engine::runtime::{ProgressStream, SampleStream};
use tidemark_engine::time::format_millis;

use crate::gather::{Gather, Writer, gather_sink};

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
            out: std::sync::Arc::clone(&ctx.stdout),
            max_lines: self.max_lines,
            buffer: Vec::new(),
        };
        gather_sink(stream, Gather::from(ctx), writer)
    }
}

struct ConsoleWriter {
    out: StdoutWriter,
    max_lines: usize,
    buffer: Vec<u8>,
}

impl Writer<Sample> for ConsoleWriter {
    fn write(&mut self, samples: &[Sample]) -> Result<(), ComponentError> {
        self.buffer.clear();
        let shown = if self.max_lines == 0 {
            samples.len()
        } else {
            samples.len().min(self.max_lines)
        };
        for s in &samples[..shown] {
            // Writing to a Vec cannot fail.
            let _ = writeln!(
                self.buffer,
                "{}  {}  {}",
                format_millis(s.timestamp),
                s.series,
                s.value
            );
        }
        if shown < samples.len() {
            // Writing to a Vec cannot fail.
            let _ = writeln!(
                self.buffer,
                "... and {} more (raise max_lines to see them)",
                samples.len() - shown
            );
        }
        (self.out)(&self.buffer);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ComponentError> {
        Ok(())
    }

    fn reset(&mut self) {}
}

samples_sink!(ConsoleConfig => self, holdback: |_| 0, serves_live: false, touches: |_| Vec::new());
