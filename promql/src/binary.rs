//! Binary operators: arithmetic, comparison (filtering or with `bool`),
//! `and`, `or`, `unless`, and vector matching (`on`, `ignoring`,
//! `group_left`, `group_right`).

use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD,
    T_MUL, T_NEQ, T_POW, T_SUB, TokenId,
};
use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};
use rustc_hash::{FxHashMap, FxHashSet};
use tidemark_engine::{Series, SeriesId};

use crate::eval::{EvalError, Evaluator, unique};
use crate::labels::{drop_name, keep_only, rebuild, remove, set};
use crate::value::{Element, Value};

fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Whether the result loses the metric name: arithmetic does, except
/// `atan2` (as in Prometheus 2.x).
fn drops_name(op: TokenId) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_POW | T_MOD)
}

/// `lhs op rhs`: the value, and whether a comparison holds (always true
/// for arithmetic). A comparison's value is its left side.
fn apply(op: TokenId, lhs: f64, rhs: f64) -> (f64, bool) {
    match op {
        T_ADD => (lhs + rhs, true),
        T_SUB => (lhs - rhs, true),
        T_MUL => (lhs * rhs, true),
        T_DIV => (lhs / rhs, true),
        T_POW => (lhs.powf(rhs), true),
        T_MOD => (lhs % rhs, true),
        T_ATAN2 => (lhs.atan2(rhs), true),
        T_EQLC => (lhs, lhs == rhs),
        T_NEQ => (lhs, lhs != rhs),
        T_GTR => (lhs, lhs > rhs),
        T_LSS => (lhs, lhs < rhs),
        T_GTE => (lhs, lhs >= rhs),
        _ => (lhs, lhs <= rhs),
    }
}

/// Evaluates a binary expression at `t`.
pub(crate) fn eval(ev: &Evaluator, bin: &BinaryExpr, t: i64) -> Result<Value, EvalError> {
    let op = bin.op.id();
    let modifier = bin.modifier.as_ref();
    let boolean = modifier.is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&bin.lhs, t)?;
    let rhs = ev.eval(&bin.rhs, t)?;
    match (lhs, rhs) {
        (Value::Scalar(a), Value::Scalar(b)) => {
            let (v, holds) = apply(op, a, b);
            Ok(Value::Scalar(if is_comparison(op) {
                if holds { 1.0 } else { 0.0 }
            } else {
                v
            }))
        }
        (Value::Vector(v), Value::Scalar(s)) => with_scalar(v, s, op, false, boolean, t),
        (Value::Scalar(s), Value::Vector(v)) => with_scalar(v, s, op, true, boolean, t),
        (Value::Vector(l), Value::Vector(r)) => match op {
            T_LAND | T_LOR | T_LUNLESS => Ok(Value::Vector(set_op(op, l, r, modifier))),
            _ => vectors(op, l, r, modifier, boolean, t).map(Value::Vector),
        },
        (l, r) => Err(EvalError::new(format!(
            "binary operator {} is not defined between a {} and a {}",
            bin.op,
            l.type_name(),
            r.type_name()
        ))),
    }
}

/// A vector and a scalar (`swap`: the scalar is on the left).
fn with_scalar(
    v: Vec<Element>,
    s: f64,
    op: TokenId,
    swap: bool,
    boolean: bool,
    t: i64,
) -> Result<Value, EvalError> {
    let drop = drops_name(op) || boolean;
    let mut out = Vec::with_capacity(v.len());
    for e in v {
        let (l, r) = if swap { (s, e.v) } else { (e.v, s) };
        let (mut value, holds) = apply(op, l, r);
        if is_comparison(op) && swap {
            value = e.v; // the vector's value is kept either way round
        }
        if boolean {
            value = if holds { 1.0 } else { 0.0 };
        } else if !holds {
            continue;
        }
        let series = if drop { drop_name(&e.series) } else { e.series };
        out.push(Element {
            series,
            t,
            v: value,
        });
    }
    unique(out).map(Value::Vector)
}

/// The labels two elements are matched on.
fn signature(series: &Series, matching: Option<&LabelModifier>) -> SeriesId {
    match matching {
        Some(LabelModifier::Include(l)) => keep_only(series, &l.labels).id(),
        Some(LabelModifier::Exclude(l)) => remove(series, &l.labels).id(),
        None => remove(series, &[]).id(),
    }
}

/// `and`, `or`, `unless`.
fn set_op(
    op: TokenId,
    lhs: Vec<Element>,
    rhs: Vec<Element>,
    modifier: Option<&BinModifier>,
) -> Vec<Element> {
    let matching = modifier.and_then(|m| m.matching.as_ref());
    let sigs = |v: &[Element]| -> FxHashSet<SeriesId> {
        v.iter().map(|e| signature(&e.series, matching)).collect()
    };
    match op {
        T_LAND => {
            let right = sigs(&rhs);
            lhs.into_iter()
                .filter(|e| right.contains(&signature(&e.series, matching)))
                .collect()
        }
        T_LUNLESS => {
            let right = sigs(&rhs);
            lhs.into_iter()
                .filter(|e| !right.contains(&signature(&e.series, matching)))
                .collect()
        }
        _ => {
            let left = sigs(&lhs);
            let mut out = lhs;
            out.extend(
                rhs.into_iter()
                    .filter(|e| !left.contains(&signature(&e.series, matching))),
            );
            out
        }
    }
}

/// Arithmetic and comparison between two vectors, matched one-to-one or
/// many-to-one (one-to-many with `group_right`).
fn vectors(
    op: TokenId,
    lhs: Vec<Element>,
    rhs: Vec<Element>,
    modifier: Option<&BinModifier>,
    boolean: bool,
    t: i64,
) -> Result<Vec<Element>, EvalError> {
    let matching = modifier.and_then(|m| m.matching.as_ref());
    let card = modifier.map_or(&VectorMatchCardinality::OneToOne, |m| &m.card);
    let (include, swapped) = match card {
        VectorMatchCardinality::ManyToOne(l) => (l.labels.as_slice(), false),
        VectorMatchCardinality::OneToMany(l) => (l.labels.as_slice(), true),
        _ => (&[][..], false),
    };
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    let mut right: FxHashMap<SeriesId, Element> = FxHashMap::default();
    for e in one {
        let sig = signature(&e.series, matching);
        if let Some(previous) = right.get(&sig) {
            let side = if swapped { "left" } else { "right" };
            return Err(EvalError::new(format!(
                "found duplicate series for the match group on the {side} hand-side of the \
                 operation: [{}, {}];many-to-many matching not allowed: matching labels must be \
                 unique on one side",
                previous.series, e.series
            )));
        }
        right.insert(sig, e);
    }
    let mut matched: FxHashMap<SeriesId, FxHashSet<SeriesId>> = FxHashMap::default();
    let mut out = Vec::new();
    for l in many {
        let sig = signature(&l.series, matching);
        let Some(r) = right.get(&sig) else { continue };
        let (a, b) = if swapped { (r.v, l.v) } else { (l.v, r.v) };
        let (mut value, holds) = apply(op, a, b);
        if boolean {
            value = if holds { 1.0 } else { 0.0 };
        } else if !holds {
            continue;
        }
        let mut series = result_labels(&l.series, &r.series, op, matching, one_to_one, include);
        if boolean {
            series = drop_name(&series);
        }
        let seen = matched.entry(sig).or_default();
        if one_to_one {
            if !seen.is_empty() {
                return Err(EvalError::new(
                    "multiple matches for labels: many-to-one matching must be explicit \
                     (group_left/group_right)",
                ));
            }
            seen.insert(series.id());
        } else if !seen.insert(series.id()) {
            return Err(EvalError::new(
                "multiple matches for labels: grouping labels must ensure unique matches",
            ));
        }
        out.push(Element {
            series,
            t,
            v: value,
        });
    }
    unique(out)
}

/// The labels of a matched pair's result: the "many" side's, without
/// the metric name for arithmetic, narrowed to the `on` labels (or
/// without the `ignoring` ones) when matching one-to-one, and with the
/// `group_left`/`group_right` labels copied from the "one" side.
fn result_labels(
    many: &Series,
    one: &Series,
    op: TokenId,
    matching: Option<&LabelModifier>,
    one_to_one: bool,
    include: &[String],
) -> Series {
    let mut series = if drops_name(op) {
        drop_name(many)
    } else {
        many.clone()
    };
    if one_to_one {
        series = match matching {
            Some(LabelModifier::Include(l)) => keep_only(&series, &l.labels),
            Some(LabelModifier::Exclude(l)) => {
                rebuild(&series, |n| !l.labels.iter().any(|k| k == n))
            }
            None => series,
        };
    }
    for name in include {
        series = set(&series, name, one.get(name).unwrap_or(""));
    }
    series
}
