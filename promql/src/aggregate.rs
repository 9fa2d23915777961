//! Aggregation operators: `sum`, `avg`, `min`, `max`, `count`, `group`,
//! `stddev`, `stdvar`, `topk`, `bottomk`, `quantile`, `count_values`, by
//! or without labels.

use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_MAX, T_MIN, T_QUANTILE, T_STDDEV,
    T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};
use rustc_hash::FxHashMap;
use tidemark_engine::{Series, SeriesId};

use crate::eval::{EvalError, Evaluator};
use crate::functions::{kahan, quantile};
use crate::labels::{keep_only, remove, set};
use crate::value::{Element, Value};

/// One group's running values: every aggregation's, folded as the
/// elements come (sum with Kahan compensation, Prometheus's incremental
/// mean, Welford's variance, NaN-aware min and max).
struct Group {
    series: Series,
    count: f64,
    sum: f64,
    sum_c: f64,
    mean: f64,
    min: f64,
    max: f64,
    var_mean: f64,
    var_sq: f64,
    members: Vec<Element>,
}

impl Group {
    fn new(series: Series) -> Group {
        Group {
            series,
            count: 0.0,
            sum: 0.0,
            sum_c: 0.0,
            mean: 0.0,
            min: f64::NAN,
            max: f64::NAN,
            var_mean: 0.0,
            var_sq: 0.0,
            members: Vec::new(),
        }
    }

    fn fold(&mut self, v: f64) {
        self.count += 1.0;
        (self.sum, self.sum_c) = kahan(v, self.sum, self.sum_c);
        if self.count == 1.0 {
            self.mean = v;
        } else if !(self.mean.is_infinite()
            && ((v.is_infinite() && (self.mean > 0.0) == (v > 0.0))
                || (!v.is_infinite() && !v.is_nan())))
        {
            self.mean += v / self.count - self.mean / self.count;
        }
        if self.min.is_nan() || v < self.min {
            self.min = v;
        }
        if self.max.is_nan() || v > self.max {
            self.max = v;
        }
        let delta = v - self.var_mean;
        self.var_mean += delta / self.count;
        self.var_sq += delta * (v - self.var_mean);
    }
}

/// Evaluates an aggregation at `t`.
pub(crate) fn eval(ev: &Evaluator, agg: &AggregateExpr, t: i64) -> Result<Value, EvalError> {
    let op = agg.op.id();
    let input = ev.vector(&agg.expr, t)?;
    let grouping = |s: &Series| match &agg.modifier {
        None => Series::from_labels(Vec::new()),
        Some(LabelModifier::Include(l)) => keep_only(s, &l.labels),
        Some(LabelModifier::Exclude(l)) => remove(s, &l.labels),
    };
    if op == T_COUNT_VALUES {
        let Some(param) = &agg.param else {
            return Err(EvalError::new("count_values() needs a label name"));
        };
        let label = ev.string(param, t)?;
        let relabelled = input
            .into_iter()
            .map(|e| Element {
                series: set(&e.series, &label, &crate::gofmt::f(e.v)),
                t,
                v: e.v,
            })
            .collect::<Vec<_>>();
        let by_value = |s: &Series| set(&grouping(s), &label, s.get(&label).unwrap_or(""));
        let out = groups(relabelled, by_value, false)
            .into_iter()
            .map(|g| Element {
                series: g.series,
                t,
                v: g.count,
            })
            .collect();
        return Ok(Value::Vector(out));
    }
    let param = match &agg.param {
        Some(p) => Some(ev.scalar(p, t)?),
        None => None,
    };
    if op == T_TOPK || op == T_BOTTOMK {
        let k = param.unwrap_or(0.0);
        return Ok(Value::Vector(top(input, grouping, k, op == T_TOPK)));
    }
    let mut out = Vec::new();
    for g in groups(input, grouping, op == T_QUANTILE) {
        let v = match op {
            T_SUM => g.sum + g.sum_c,
            T_AVG => g.mean,
            T_COUNT => g.count,
            T_GROUP => 1.0,
            T_MIN => g.min,
            T_MAX => g.max,
            T_STDVAR => g.var_sq / g.count,
            T_STDDEV => (g.var_sq / g.count).sqrt(),
            T_QUANTILE => {
                let mut vs: Vec<f64> = g.members.iter().map(|e| e.v).collect();
                quantile(param.unwrap_or(f64::NAN), &mut vs)
            }
            _ => {
                return Err(EvalError::new(format!(
                    "aggregation {} is not supported",
                    agg.op
                )));
            }
        };
        out.push(Element {
            series: g.series,
            t,
            v,
        });
    }
    Ok(Value::Vector(out))
}

/// Groups `input` by `grouping`, folding each element into its group;
/// `keep` keeps the elements too (for `quantile`).
fn groups(input: Vec<Element>, grouping: impl Fn(&Series) -> Series, keep: bool) -> Vec<Group> {
    let mut index: FxHashMap<SeriesId, usize> = FxHashMap::default();
    let mut out: Vec<Group> = Vec::new();
    for e in input {
        let key = grouping(&e.series);
        let at = *index.entry(key.id()).or_insert_with(|| {
            out.push(Group::new(key));
            out.len() - 1
        });
        let g = &mut out[at];
        g.fold(e.v);
        if keep {
            g.members.push(e);
        }
    }
    out
}

/// `topk` and `bottomk`: the `k` largest (smallest) elements of each
/// group, with their own labels; NaN ranks last either way.
fn top(
    input: Vec<Element>,
    grouping: impl Fn(&Series) -> Series,
    k: f64,
    largest: bool,
) -> Vec<Element> {
    if k.is_nan() || k < 1.0 {
        return Vec::new();
    }
    let k = if k > input.len() as f64 {
        input.len()
    } else {
        k as usize
    };
    let mut index: FxHashMap<SeriesId, usize> = FxHashMap::default();
    let mut members: Vec<Vec<Element>> = Vec::new();
    for e in input {
        let key = grouping(&e.series).id();
        let at = *index.entry(key).or_insert_with(|| {
            members.push(Vec::new());
            members.len() - 1
        });
        members[at].push(e);
    }
    let rank = |e: &Element| {
        if e.v.is_nan() {
            f64::NEG_INFINITY
        } else if largest {
            e.v
        } else {
            -e.v
        }
    };
    let mut out = Vec::new();
    for mut group in members {
        // Stable: among equal values the earlier element wins.
        group.sort_by(|a, b| rank(b).total_cmp(&rank(a)));
        group.truncate(k);
        out.extend(group);
    }
    out
}
