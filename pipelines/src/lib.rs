//! # tidemark-pipelines
//!
//! The pipeline language and everything that runs it: YAML with positions
//! ([`yaml`]), the component registry ([`config`]), the compiler that
//! validates a pipeline without I/O and reports every located error at once
//! ([`compile`]), the validated [`plan`], the dataflow [`build`]er that every
//! worker runs, the [`run`]ner (progress, signals, report) and the
//! [`fuzzing`] entry point for pipeline text.
//!
//! This is the only crate that knows every component. It has no HTTP or
//! gRPC stack: `tidemark-server` serves pipelines over the network (and
//! `tidemark run`'s dashboard, through [`run::Dashboard`]), `tidemark-cli`
//! is the binary, `tidemark-bench` the benchmarks.

pub mod access;
pub mod backtest;
pub mod build;
pub mod compile;
pub mod config;
pub mod fuzzing;
pub mod plan;
pub mod run;
/// YAML with positions (in the engine, so that components can read their own
/// files, such as rule files, with located errors).
pub use tidemark_engine::yaml;

pub use compile::{Diagnostic, DiagnosticKind, compile};

/// Compiles a pipeline file (`-` for standard input).
pub fn compile_file(path: &str) -> Result<plan::Plan, Vec<Diagnostic>> {
    let text = if path == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map(|_| s)
    } else {
        std::fs::read_to_string(path)
    };
    match text {
        Ok(text) => compile(path, &text),
        Err(e) => Err(vec![Diagnostic {
            file: path.to_owned(),
            pos: yaml::Pos { line: 1, column: 1 },
            component: None,
            message: format!("cannot read the file: {e}"),
            kind: DiagnosticKind::Yaml,
        }]),
    }
}
