//! Tidemark's PromQL evaluator.
//!
//! Expressions are parsed by `promql-parser` (the same parser the rest of
//! the workspace uses for selectors); this crate evaluates them at one
//! instant over a [`Storage`] of recent samples, with Prometheus's
//! semantics: lookback delta and staleness markers for instant selectors,
//! closed `[t - range, t]` ranges (Prometheus 2.x, whose `promtool` is our
//! oracle), counter resets and extrapolation in `rate`, `increase` and
//! `delta`, vector matching with `on`, `ignoring`, `group_left` and
//! `group_right`, set operators, aggregations and the scalar and time
//! functions. [`check`] refuses, before anything runs, what this evaluator
//! does not support (subqueries, `@`, native-histogram functions), so that
//! a rule never fails at run time for a reason known in advance.
//!
//! The `alert` transform (`tidemark-operators`) evaluates rule groups with
//! it in event time, over a [`MemStore`] it feeds from the stream; the
//! query API reuses it over its own storage. docs/promql.md lists what is
//! supported and where we differ from Prometheus.
//!
//! ```
//! use tidemark_engine::Series;
//! use tidemark_promql::{Evaluator, MemStore, Value, parse};
//!
//! let mut store = MemStore::default();
//! let s = Series::new("http_requests_total", [("job", "api")]);
//! for i in 0..=10 {
//!     store.insert(&s, i * 15_000, (i * 30) as f64); // +30 every 15 s
//! }
//! let expr = parse("rate(http_requests_total[1m])").unwrap();
//! let value = Evaluator::new(&store).eval(&expr, 150_000).unwrap();
//! let Value::Vector(v) = value else { panic!() };
//! assert_eq!(v.len(), 1);
//! assert!((v[0].v - 2.0).abs() < 1e-12);
//! assert_eq!(v[0].series.get("__name__"), None);
//! ```

mod aggregate;
mod binary;
pub mod check;
mod eval;
mod functions;
pub mod gofmt;
mod histogram;
mod index;
mod labels;
mod reads;
mod value;

pub use check::{Unsupported, check, parse};
pub use eval::{EvalError, Evaluator};
pub use index::SelectorIndex;
pub use labels::{drop_name, set as set_label};
pub use reads::reads;
pub use tidemark_engine::memstore::{MemStore, Point, STALE_NAN, Storage, is_stale, selects};
pub use value::{Element, RangeSeries, Value};

/// Prometheus's default lookback delta: an instant selector finds a
/// series' latest sample at most this long before the evaluation time.
pub const DEFAULT_LOOKBACK: i64 = 5 * 60 * 1000;
