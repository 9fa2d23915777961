//! The evaluator: an expression at one instant over a [`Storage`].

use promql_parser::parser::{Expr, Offset, VectorSelector};

use crate::labels::drop_name;
use crate::value::{Element, RangeSeries, Value};
use tidemark_engine::memstore::{Storage, is_stale};

/// An evaluation that failed on the data (two series that must not meet
/// met, say); the message is Prometheus's where it has one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

impl EvalError {
    pub(crate) fn new(message: impl Into<String>) -> EvalError {
        EvalError(message.into())
    }
}

/// Evaluates expressions over a store.
pub struct Evaluator<'a> {
    store: &'a dyn Storage,
    lookback: i64,
}

/// Milliseconds of an `offset` modifier (negative for `offset -5m`).
pub(crate) fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

impl<'a> Evaluator<'a> {
    /// An evaluator with Prometheus's default lookback delta (5 minutes).
    pub fn new(store: &'a dyn Storage) -> Evaluator<'a> {
        Evaluator {
            store,
            lookback: crate::DEFAULT_LOOKBACK,
        }
    }

    /// Sets the lookback delta, in milliseconds.
    pub fn with_lookback(mut self, lookback: i64) -> Evaluator<'a> {
        self.lookback = lookback;
        self
    }

    /// Evaluates `expr` at time `t` (milliseconds since the epoch).
    pub fn eval(&self, expr: &Expr, t: i64) -> Result<Value, EvalError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(v) => Ok(Value::Vector(
                    v.into_iter()
                        .map(|e| Element {
                            series: drop_name(&e.series),
                            t,
                            v: -e.v,
                        })
                        .collect(),
                )),
                other => Err(EvalError::new(format!(
                    "unary minus is not defined on a {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.instant(vs, t))),
            Expr::MatrixSelector(ms) => {
                let range = ms.range.as_millis() as i64;
                Ok(Value::Matrix(self.range(&ms.vs, t, range)))
            }
            Expr::Call(call) => crate::functions::call(self, call, t),
            Expr::Aggregate(agg) => crate::aggregate::eval(self, agg, t),
            Expr::Binary(bin) => crate::binary::eval(self, bin, t),
            Expr::Subquery(_) | Expr::Extension(_) => Err(EvalError::new(
                "subqueries and extensions are not supported (check() refuses them)",
            )),
        }
    }

    /// An instant selector at `t`: each series' latest sample in
    /// `[t - offset - lookback, t - offset]`, unless it is a staleness
    /// marker.
    pub(crate) fn instant(&self, vs: &VectorSelector, t: i64) -> Vec<Element> {
        let end = t - offset_ms(&vs.offset);
        let mut out = Vec::new();
        self.store
            .select(vs, end - self.lookback, end, &mut |series, points| {
                if let Some(last) = points.last().filter(|p| !is_stale(p.v)) {
                    out.push(Element {
                        series: series.clone(),
                        t: last.t,
                        v: last.v,
                    });
                }
            });
        out
    }

    /// A range selector at `t`: each series' samples in `[t - offset -
    /// range, t - offset]`, staleness markers left out.
    pub(crate) fn range(&self, vs: &VectorSelector, t: i64, range: i64) -> Vec<RangeSeries> {
        let end = t - offset_ms(&vs.offset);
        let mut out = Vec::new();
        self.store
            .select(vs, end - range, end, &mut |series, points| {
                let points: Vec<_> = points.iter().copied().filter(|p| !is_stale(p.v)).collect();
                if !points.is_empty() {
                    out.push(RangeSeries {
                        series: series.clone(),
                        points,
                    });
                }
            });
        out
    }

    /// Evaluates an argument that must be an instant vector.
    pub(crate) fn vector(&self, expr: &Expr, t: i64) -> Result<Vec<Element>, EvalError> {
        match self.eval(expr, t)? {
            Value::Vector(v) => Ok(v),
            other => Err(EvalError::new(format!(
                "expected an instant vector, got a {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates an argument that must be a scalar.
    pub(crate) fn scalar(&self, expr: &Expr, t: i64) -> Result<f64, EvalError> {
        match self.eval(expr, t)? {
            Value::Scalar(v) => Ok(v),
            other => Err(EvalError::new(format!(
                "expected a scalar, got a {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates an argument that must be a string.
    pub(crate) fn string(&self, expr: &Expr, t: i64) -> Result<String, EvalError> {
        match self.eval(expr, t)? {
            Value::String(s) => Ok(s),
            other => Err(EvalError::new(format!(
                "expected a string, got a {}",
                other.type_name()
            ))),
        }
    }
}

/// Fails if two elements of a vector have the same labels, as Prometheus
/// does after a function or operator dropped the metric name.
pub(crate) fn unique(v: Vec<Element>) -> Result<Vec<Element>, EvalError> {
    if v.len() > 1 {
        let mut seen = rustc_hash::FxHashSet::default();
        for e in &v {
            if !seen.insert(e.series.id()) {
                return Err(EvalError::new(
                    "vector cannot contain metrics with the same labelset",
                ));
            }
        }
    }
    Ok(v)
}
