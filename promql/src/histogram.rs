//! `histogram_quantile` over classic histograms (`_bucket` series with an
//! `le` label).

use rustc_hash::FxHashMap;
use tidemark_engine::{Series, SeriesId};

use crate::eval::EvalError;
use crate::labels::{drop_name, rebuild};
use crate::value::Element;

/// The φ-quantile of each histogram in `v` (elements grouped by their
/// labels other than `le` and the metric name), interpolated linearly
/// inside the bucket the rank falls into, as Prometheus does.
pub(crate) fn quantile(q: f64, v: Vec<Element>, t: i64) -> Result<Vec<Element>, EvalError> {
    let mut groups: FxHashMap<SeriesId, (Series, Vec<(f64, f64)>)> = FxHashMap::default();
    let mut order = Vec::new();
    for e in v {
        let Some(le) = e.series.get("le").and_then(parse_bound) else {
            continue; // not a bucket: ignored, as in Prometheus
        };
        let key = rebuild(&drop_name(&e.series), |n| n != "le");
        let entry = groups.entry(key.id()).or_insert_with(|| {
            order.push(key.id());
            (key, Vec::new())
        });
        entry.1.push((le, e.v));
    }
    Ok(order
        .into_iter()
        .filter_map(|id| groups.remove(&id))
        .map(|(series, mut buckets)| Element {
            series,
            t,
            v: bucket_quantile(q, &mut buckets),
        })
        .collect())
}

/// An `le` value as Go's `strconv.ParseFloat` reads it.
fn parse_bound(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// The quantile of one histogram's (upper bound, cumulative count)
/// buckets.
fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if !buckets.last().is_some_and(|b| b.0 == f64::INFINITY) {
        return f64::NAN;
    }
    // Buckets with the same bound are summed; counts are made monotonic
    // (scrapes of a histogram are not atomic).
    buckets.dedup_by(|next, kept| {
        if next.0 == kept.0 {
            kept.1 += next.1;
            true
        } else {
            false
        }
    });
    let mut max = f64::NEG_INFINITY;
    for b in buckets.iter_mut() {
        if b.1 > max {
            max = b.1;
        } else if b.1 < max {
            b.1 = max;
        }
    }
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let last = buckets.len() - 1;
    let b = buckets[..last].partition_point(|b| b.1 < rank);
    if b == last {
        return buckets[last - 1].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_inside_the_bucket() {
        let mut b = vec![
            (f64::INFINITY, 100.0),
            (0.1, 50.0),
            (0.5, 90.0),
            (1.0, 100.0),
        ];
        // Rank 45 of 100 falls in (0, 0.1]: 0.1 * 45/50.
        assert!((bucket_quantile(0.45, &mut b.clone()) - 0.09).abs() < 1e-12);
        // Rank 70: (0.1, 0.5], 20 of 40 in.
        assert!((bucket_quantile(0.7, &mut b) - 0.3).abs() < 1e-12);
        assert!(bucket_quantile(0.5, &mut vec![(1.0, 3.0)]).is_nan());
    }
}
