//! Compiling a pipeline: YAML text to a validated [`Plan`], without I/O,
//! in three steps: the [`components`] (the pipeline's own fields, each
//! component's config validated through the registry), the [`graph`]
//! (inputs, ports, what nothing reads, cycles, stream kinds, an order to
//! build in) and the [`downstream`] properties of each source (holdback and
//! reach).
//!
//! Every error is collected, each with its file, line, column, component
//! and [`DiagnosticKind`], so `tidemark validate` reports them all at once.

use std::fmt;

use crate::config::Section;
use crate::plan::Plan;
use crate::yaml::{self, Pos};

mod components;
mod downstream;
mod graph;

pub use components::{TypeErrors, typed};

/// What kind of mistake a [`Diagnostic`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiagnosticKind {
    /// The text is not YAML, or not a file that can be read.
    Yaml,
    /// The pipeline's own fields: `name`, `limits`, the three sections.
    Pipeline,
    /// A component's name or shape, or a name used twice.
    Component,
    /// A field of a component's config.
    Config,
    /// A transform or sink without inputs.
    NoInputs,
    /// An input that names no source or transform.
    UnknownInput,
    /// Any other wrong input: a sink, itself, twice, a port that is not there.
    Input,
    /// A source or transform that nothing reads.
    Unread,
    /// Transforms that read each other in a circle.
    Cycle,
    /// An input of another stream kind than its reader takes, or window
    /// results where raw counters are needed.
    Stream,
    /// Something the server's access policy or quotas do not allow (a
    /// file, a host, an environment variable, a queue size): `tidemark
    /// serve` only.
    Access,
}

/// One located error.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// The file (or `-`).
    pub file: String,
    /// Where in it.
    pub pos: Pos,
    /// The component, if the error belongs to one.
    pub component: Option<(Section, String)>,
    /// What is wrong.
    pub message: String,
    /// What kind of mistake it is.
    pub kind: DiagnosticKind,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.pos.line, self.pos.column)?;
        if let Some((section, name)) = &self.component {
            write!(f, "{} {name:?}: ", section.word())?;
        }
        f.write_str(&self.message)
    }
}

/// The errors found so far.
struct Ctx<'a> {
    file: &'a str,
    errors: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn error(
        &mut self,
        kind: DiagnosticKind,
        pos: Pos,
        component: Option<(Section, &str)>,
        message: impl Into<String>,
    ) {
        self.errors.push(Diagnostic {
            file: self.file.to_owned(),
            pos,
            component: component.map(|(s, n)| (s, n.to_owned())),
            message: message.into(),
            kind,
        });
    }

    fn has(&self, kinds: &[DiagnosticKind]) -> bool {
        self.errors.iter().any(|e| kinds.contains(&e.kind))
    }
}

/// Compiles a pipeline. `file` names the source in messages.
pub fn compile(file: &str, text: &str) -> Result<Plan, Vec<Diagnostic>> {
    let mut ctx = Ctx {
        file,
        errors: Vec::new(),
    };
    let root = match yaml::parse(text) {
        Ok(r) => r,
        Err(e) => {
            let message = format!("invalid YAML: {}", e.message);
            ctx.error(DiagnosticKind::Yaml, e.pos, None, message);
            return Err(ctx.errors);
        }
    };
    let Some(parsed) = components::parse(&mut ctx, &root) else {
        return Err(ctx.errors);
    };
    let order = graph::check(&mut ctx, &parsed);
    if !ctx.errors.is_empty() {
        ctx.errors.sort();
        ctx.errors.dedup();
        return Err(ctx.errors);
    }
    Ok(downstream::plan(parsed, &order))
}

/// Splits an input into its component and port: `rules.alerts` is the
/// `alerts` output of `rules`; `rules` its default output.
pub(crate) fn split_port(input: &str) -> (&str, Option<&str>) {
    match input.split_once('.') {
        Some((component, port)) => (component, Some(port)),
        None => (input, None),
    }
}

#[cfg(test)]
mod tests;
