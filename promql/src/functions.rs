//! PromQL functions, as Prometheus defines them.

use chrono::{DateTime, Datelike, Timelike};
use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr, MatrixSelector};
use regex::Regex;
use tidemark_engine::series::METRIC_NAME_LABEL;

use crate::eval::{EvalError, Evaluator, offset_ms, unique};
use crate::labels::{drop_name, set};
use crate::value::{Element, RangeSeries, Value};
use tidemark_engine::memstore::Point;

/// Every function the evaluator knows; `check` refuses the others.
pub const SUPPORTED: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

/// Evaluates a function call at `t`.
pub(crate) fn call(ev: &Evaluator, call: &Call, t: i64) -> Result<Value, EvalError> {
    let name = call.func.name;
    let args: Vec<&Expr> = call.args.args.iter().map(|a| a.as_ref()).collect();
    let arg = |i: usize| {
        args.get(i)
            .copied()
            .ok_or_else(|| EvalError::new(format!("{name}() is missing argument {}", i + 1)))
    };
    let out = match name {
        "time" => return Ok(Value::Scalar(t as f64 / 1000.0)),
        "pi" => return Ok(Value::Scalar(std::f64::consts::PI)),
        "scalar" => {
            let v = ev.vector(arg(0)?, t)?;
            return Ok(Value::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN }));
        }
        "vector" => {
            let v = ev.scalar(arg(0)?, t)?;
            let series = tidemark_engine::Series::from_labels(Vec::new());
            return Ok(Value::Vector(vec![Element { series, t, v }]));
        }
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "acos"
        | "acosh" | "asin" | "asinh" | "atan" | "atanh" | "cos" | "cosh" | "sin" | "sinh"
        | "tan" | "tanh" | "deg" | "rad" => {
            let f = math(name);
            map_values(ev.vector(arg(0)?, t)?, t, f)
        }
        "round" => {
            let to = match args.get(1) {
                Some(a) => ev.scalar(a, t)?,
                None => 1.0,
            };
            let inverse = 1.0 / to;
            map_values(ev.vector(arg(0)?, t)?, t, |v| {
                (v * inverse + 0.5).floor() / inverse
            })
        }
        "clamp" => {
            let (lo, hi) = (ev.scalar(arg(1)?, t)?, ev.scalar(arg(2)?, t)?);
            if hi < lo {
                return Ok(Value::Vector(Vec::new()));
            }
            map_values(ev.vector(arg(0)?, t)?, t, |v| v.max(lo).min(hi))
        }
        "clamp_max" => {
            let hi = ev.scalar(arg(1)?, t)?;
            map_values(ev.vector(arg(0)?, t)?, t, |v| v.min(hi))
        }
        "clamp_min" => {
            let lo = ev.scalar(arg(1)?, t)?;
            map_values(ev.vector(arg(0)?, t)?, t, |v| v.max(lo))
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            let v = match args.first() {
                Some(a) => ev.vector(a, t)?,
                None => vec![Element {
                    series: tidemark_engine::Series::from_labels(Vec::new()),
                    t,
                    v: t as f64 / 1000.0,
                }],
            };
            map_values(v, t, |v| date_part(name, v))
        }
        "timestamp" => {
            // A selector's samples keep their own time; anything else is
            // stamped with the evaluation time already.
            let v = ev.vector(arg(0)?, t)?;
            v.into_iter()
                .map(|e| Element {
                    series: drop_name(&e.series),
                    t,
                    v: e.t as f64 / 1000.0,
                })
                .collect()
        }
        "sort" | "sort_desc" => {
            let mut v = ev.vector(arg(0)?, t)?;
            v.sort_by(|a, b| a.v.total_cmp(&b.v));
            if name == "sort_desc" {
                v.reverse();
            }
            return Ok(Value::Vector(v));
        }
        "label_replace" => return label_replace(ev, &args, t).map(Value::Vector),
        "label_join" => return label_join(ev, &args, t).map(Value::Vector),
        "absent" => {
            let v = ev.vector(arg(0)?, t)?;
            return Ok(Value::Vector(absent(arg(0)?, v.is_empty(), t)));
        }
        "absent_over_time" => {
            let (m, _) = matrix(ev, arg(0)?, t)?;
            return Ok(Value::Vector(absent(arg(0)?, m.is_empty(), t)));
        }
        "histogram_quantile" => {
            let q = ev.scalar(arg(0)?, t)?;
            crate::histogram::quantile(q, ev.vector(arg(1)?, t)?, t)?
        }
        "rate" | "increase" | "delta" => {
            let (m, sel) = matrix(ev, arg(0)?, t)?;
            let range = sel.range.as_millis() as i64;
            let end = t - offset_ms(&sel.vs.offset);
            let (counter, per_second) = (name != "delta", name == "rate");
            over(m, t, |ps| {
                extrapolated(ps, end - range, end, range, counter, per_second)
            })
        }
        "irate" | "idelta" => {
            let (m, _) = matrix(ev, arg(0)?, t)?;
            over(m, t, |ps| instant_delta(ps, name == "irate"))
        }
        "deriv" => {
            let (m, _) = matrix(ev, arg(0)?, t)?;
            over(m, t, |ps| (ps.len() >= 2).then(|| linear(ps, ps[0].t).0))
        }
        "predict_linear" => {
            let (m, _) = matrix(ev, arg(0)?, t)?;
            let ahead = ev.scalar(arg(1)?, t)?;
            over(m, t, |ps| {
                (ps.len() >= 2).then(|| {
                    let (slope, intercept) = linear(ps, t);
                    slope * ahead + intercept
                })
            })
        }
        "quantile_over_time" => {
            let q = ev.scalar(arg(0)?, t)?;
            let (m, _) = matrix(ev, arg(1)?, t)?;
            over(m, t, |ps| {
                let mut vs: Vec<f64> = ps.iter().map(|p| p.v).collect();
                Some(quantile(q, &mut vs))
            })
        }
        "last_over_time" => {
            let (m, _) = matrix(ev, arg(0)?, t)?;
            // The only range function that keeps the metric name.
            m.into_iter()
                .filter_map(|s| {
                    let last = s.points.last()?;
                    Some(Element {
                        series: s.series,
                        t,
                        v: last.v,
                    })
                })
                .collect()
        }
        "avg_over_time" | "count_over_time" | "sum_over_time" | "min_over_time"
        | "max_over_time" | "stddev_over_time" | "stdvar_over_time" | "present_over_time"
        | "changes" | "resets" => {
            let (m, _) = matrix(ev, arg(0)?, t)?;
            over(m, t, |ps| Some(over_time(name, ps)))
        }
        other => {
            return Err(EvalError::new(format!(
                "function {other}() is not supported"
            )));
        }
    };
    unique(out).map(Value::Vector)
}

/// The range argument of a function: its series and the selector (for
/// its range and offset).
fn matrix<'e>(
    ev: &Evaluator,
    expr: &'e Expr,
    t: i64,
) -> Result<(Vec<RangeSeries>, &'e MatrixSelector), EvalError> {
    match expr {
        Expr::MatrixSelector(ms) => Ok((ev.range(&ms.vs, t, ms.range.as_millis() as i64), ms)),
        Expr::Paren(p) => matrix(ev, &p.expr, t),
        _ => Err(EvalError::new("expected a range vector selector")),
    }
}

/// A range function's result per series, metric name dropped.
fn over(m: Vec<RangeSeries>, t: i64, mut f: impl FnMut(&[Point]) -> Option<f64>) -> Vec<Element> {
    m.into_iter()
        .filter_map(|s| {
            let v = f(&s.points)?;
            Some(Element {
                series: drop_name(&s.series),
                t,
                v,
            })
        })
        .collect()
}

/// A function of each value, metric name dropped.
fn map_values(v: Vec<Element>, t: i64, f: impl Fn(f64) -> f64) -> Vec<Element> {
    v.into_iter()
        .map(|e| Element {
            series: drop_name(&e.series),
            t,
            v: f(e.v),
        })
        .collect()
}

fn math(name: &str) -> fn(f64) -> f64 {
    match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sgn" => |v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        },
        "acos" => f64::acos,
        "acosh" => f64::acosh,
        "asin" => f64::asin,
        "asinh" => f64::asinh,
        "atan" => f64::atan,
        "atanh" => f64::atanh,
        "cos" => f64::cos,
        "cosh" => f64::cosh,
        "sin" => f64::sin,
        "sinh" => f64::sinh,
        "tan" => f64::tan,
        "tanh" => f64::tanh,
        "deg" => f64::to_degrees,
        _ => f64::to_radians,
    }
}

/// A calendar field of a time in seconds since the epoch, in UTC.
fn date_part(name: &str, seconds: f64) -> f64 {
    if !seconds.is_finite() {
        return f64::NAN;
    }
    let Some(d) = DateTime::from_timestamp(seconds as i64, 0) else {
        return f64::NAN;
    };
    (match name {
        "day_of_month" => d.day(),
        "day_of_week" => d.weekday().num_days_from_sunday(),
        "day_of_year" => d.ordinal(),
        "days_in_month" => {
            let next = if d.month() == 12 {
                chrono::NaiveDate::from_ymd_opt(d.year() + 1, 1, 1)
            } else {
                chrono::NaiveDate::from_ymd_opt(d.year(), d.month() + 1, 1)
            };
            next.and_then(|n| n.pred_opt()).map_or(0, |l| l.day())
        }
        "hour" => d.hour(),
        "minute" => d.minute(),
        "month" => d.month(),
        _ => return d.year() as f64,
    }) as f64
}

/// `rate`, `increase` and `delta`: the change over the samples in the
/// range, with counter resets added back (`counter`), extrapolated toward
/// the range's ends as Prometheus does (up to the zero point of a
/// counter, and by at most half a sample interval past the first or last
/// sample when they are far from the ends).
fn extrapolated(
    ps: &[Point],
    start: i64,
    end: i64,
    range: i64,
    counter: bool,
    per_second: bool,
) -> Option<f64> {
    if ps.len() < 2 {
        return None;
    }
    let (first, last) = (ps[0], ps[ps.len() - 1]);
    let mut result = last.v - first.v;
    if counter {
        let mut previous = 0.0;
        for p in ps {
            if p.v < previous {
                result += previous;
            }
            previous = p.v;
        }
    }
    let mut to_start = (first.t - start) as f64 / 1000.0;
    let to_end = (end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let average = sampled / (ps.len() - 1) as f64;
    if counter && result > 0.0 && first.v >= 0.0 {
        let to_zero = sampled * (first.v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average / 2.0
    };
    result *= interval / sampled;
    if per_second {
        result /= range as f64 / 1000.0;
    }
    Some(result)
}

/// `irate` and `idelta`: from the last two samples.
fn instant_delta(ps: &[Point], rate: bool) -> Option<f64> {
    if ps.len() < 2 {
        return None;
    }
    let (previous, last) = (ps[ps.len() - 2], ps[ps.len() - 1]);
    let mut result = if rate && last.v < previous.v {
        last.v // a counter reset
    } else {
        last.v - previous.v
    };
    if rate {
        let seconds = (last.t - previous.t) as f64 / 1000.0;
        if seconds == 0.0 {
            return None;
        }
        result /= seconds;
    }
    Some(result)
}

/// Kahan-compensated addition: the new sum and compensation.
pub(crate) fn kahan(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Least-squares slope (per second) and intercept at `at`.
fn linear(ps: &[Point], at: i64) -> (f64, f64) {
    let n = ps.len() as f64;
    let (mut sx, mut cx, mut sy, mut cy) = (0.0, 0.0, 0.0, 0.0);
    let (mut sxy, mut cxy, mut sx2, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    let first = ps[0].v;
    let constant = ps.iter().all(|p| p.v == first);
    if constant {
        if first.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, first);
    }
    for p in ps {
        let x = (p.t - at) as f64 / 1000.0;
        (sx, cx) = kahan(x, sx, cx);
        (sy, cy) = kahan(p.v, sy, cy);
        (sxy, cxy) = kahan(x * p.v, sxy, cxy);
        (sx2, cx2) = kahan(x * x, sx2, cx2);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// The φ-quantile of `values` with linear interpolation between ranks
/// (Prometheus's `quantile`), reordering them.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0) as usize;
    let upper = (lower + 1).min(values.len() - 1);
    let weight = rank - rank.floor();
    values[lower] * (1.0 - weight) + values[upper] * weight
}

/// The `*_over_time` aggregations, `changes` and `resets`.
fn over_time(name: &str, ps: &[Point]) -> f64 {
    let values = ps.iter().map(|p| p.v);
    match name {
        "count_over_time" => ps.len() as f64,
        "present_over_time" => 1.0,
        "sum_over_time" => {
            let (s, c) = values.fold((0.0, 0.0), |(s, c), v| kahan(v, s, c));
            s + c
        }
        "avg_over_time" => {
            let (mut mean, mut count) = (0.0f64, 0.0);
            for v in values {
                count += 1.0;
                if mean.is_infinite() {
                    if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                        continue;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        continue;
                    }
                }
                mean += v / count - mean / count;
            }
            mean
        }
        "min_over_time" => values.fold(f64::NAN, |m, v| if m.is_nan() || v < m { v } else { m }),
        "max_over_time" => values.fold(f64::NAN, |m, v| if m.is_nan() || v > m { v } else { m }),
        "stddev_over_time" | "stdvar_over_time" => {
            let (mut count, mut mean, mut sq) = (0.0, 0.0, 0.0);
            for v in values {
                count += 1.0;
                let delta = v - mean;
                mean += delta / count;
                sq += delta * (v - mean);
            }
            let var = sq / count;
            if name == "stddev_over_time" {
                var.sqrt()
            } else {
                var
            }
        }
        "changes" => ps
            .windows(2)
            .filter(|w| w[1].v != w[0].v && !(w[1].v.is_nan() && w[0].v.is_nan()))
            .count() as f64,
        _ => ps.windows(2).filter(|w| w[1].v < w[0].v).count() as f64,
    }
}

/// `absent` and `absent_over_time`: one element when the argument is
/// empty, with the labels its selector fixes by equality (a label matched
/// by equality twice is left out).
fn absent(expr: &Expr, empty: bool, t: i64) -> Vec<Element> {
    if !empty {
        return Vec::new();
    }
    let vs = match expr {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    };
    let mut labels: Vec<(String, String)> = Vec::new();
    let mut twice: Vec<String> = Vec::new();
    if let Some(vs) = vs.filter(|vs| vs.matchers.or_matchers.is_empty()) {
        for m in &vs.matchers.matchers {
            if m.op != MatchOp::Equal || m.name == METRIC_NAME_LABEL {
                continue;
            }
            if labels.iter().any(|(n, _)| *n == m.name) {
                twice.push(m.name.clone());
            } else {
                labels.push((m.name.clone(), m.value.clone()));
            }
        }
    }
    labels.retain(|(n, _)| !twice.contains(n));
    let series = tidemark_engine::Series::from_labels(
        labels
            .into_iter()
            .map(|(n, v)| (n.into(), v.into()))
            .collect(),
    );
    vec![Element { series, t, v: 1.0 }]
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `label_replace(v, dst, replacement, src, regex)`.
fn label_replace(ev: &Evaluator, args: &[&Expr], t: i64) -> Result<Vec<Element>, EvalError> {
    if args.len() != 5 {
        return Err(EvalError::new("label_replace() takes five arguments"));
    }
    let v = ev.vector(args[0], t)?;
    let dst = ev.string(args[1], t)?;
    let replacement = ev.string(args[2], t)?;
    let src = ev.string(args[3], t)?;
    let pattern = ev.string(args[4], t)?;
    let re = Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| {
        EvalError::new(format!(
            "invalid regular expression in label_replace(): {e}"
        ))
    })?;
    if !valid_label_name(&dst) {
        return Err(EvalError::new(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    let out = v
        .into_iter()
        .map(|e| {
            let value = e.series.get(&src).unwrap_or("");
            let series = match re.captures(value) {
                Some(caps) => {
                    let mut to = String::new();
                    caps.expand(&replacement, &mut to);
                    set(&e.series, &dst, &to)
                }
                None => e.series.clone(),
            };
            Element { series, t, v: e.v }
        })
        .collect();
    unique(out)
}

/// `label_join(v, dst, separator, src...)`.
fn label_join(ev: &Evaluator, args: &[&Expr], t: i64) -> Result<Vec<Element>, EvalError> {
    if args.len() < 3 {
        return Err(EvalError::new(
            "label_join() takes at least three arguments",
        ));
    }
    let v = ev.vector(args[0], t)?;
    let dst = ev.string(args[1], t)?;
    let separator = ev.string(args[2], t)?;
    let sources = args[3..]
        .iter()
        .map(|a| ev.string(a, t))
        .collect::<Result<Vec<_>, _>>()?;
    if !valid_label_name(&dst) {
        return Err(EvalError::new(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    let out = v
        .into_iter()
        .map(|e| {
            let joined = sources
                .iter()
                .map(|s| e.series.get(s).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(&separator);
            Element {
                series: set(&e.series, &dst, &joined),
                t,
                v: e.v,
            }
        })
        .collect();
    unique(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(vs: &[(i64, f64)]) -> Vec<Point> {
        vs.iter().map(|&(t, v)| Point { t, v }).collect()
    }

    #[test]
    fn rate_extrapolates_as_prometheus_does() {
        // A counter +10 every 10 s over a 60 s range that holds samples
        // at 10..=60 s: the increase is 50 over 50 s, extrapolated by
        // the 10 s to the range's start (within 1.1 intervals).
        let ps = points(&[
            (10_000, 10.0),
            (20_000, 20.0),
            (30_000, 30.0),
            (40_000, 40.0),
            (50_000, 50.0),
            (60_000, 60.0),
        ]);
        let inc = extrapolated(&ps, 0, 60_000, 60_000, true, false).unwrap();
        // The zero point (10 s before the first sample) bounds it too.
        assert!((inc - 60.0).abs() < 1e-12, "{inc}");
        // A reset adds the value before it back.
        let ps = points(&[(0, 5.0), (10_000, 10.0), (20_000, 2.0), (30_000, 7.0)]);
        let d = extrapolated(&ps, 0, 30_000, 30_000, true, false).unwrap();
        assert!((d - 12.0).abs() < 1e-12, "{d}");
        assert_eq!(extrapolated(&ps[..1], 0, 30_000, 30_000, true, true), None);
    }

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(quantile(0.5, &mut [1.0, 3.0, 2.0, 4.0]), 2.5);
        assert_eq!(quantile(2.0, &mut [1.0]), f64::INFINITY);
        assert!(quantile(0.5, &mut []).is_nan());
    }

    #[test]
    fn regression_and_calendar() {
        let ps = points(&[(0, 1.0), (1000, 3.0), (2000, 5.0)]);
        let (slope, intercept) = linear(&ps, 2000);
        assert!((slope - 2.0).abs() < 1e-12 && (intercept - 5.0).abs() < 1e-12);
        // 2024-02-29T13:45:00Z
        let t = 1_709_214_300.0;
        assert_eq!(date_part("days_in_month", t), 29.0);
        assert_eq!(date_part("hour", t), 13.0);
        assert_eq!(date_part("day_of_week", t), 4.0);
    }
}
