//! Label-set operations the evaluator needs: dropping the metric name,
//! keeping or removing some labels, setting one.

use tidemark_engine::Series;
use tidemark_engine::series::{Label, METRIC_NAME_LABEL};

/// The series without its metric name.
pub fn drop_name(series: &Series) -> Series {
    if series.get(METRIC_NAME_LABEL).is_none() {
        return series.clone();
    }
    rebuild(series, |name| name != METRIC_NAME_LABEL)
}

/// The labels for which `keep` says yes.
pub(crate) fn rebuild(series: &Series, mut keep: impl FnMut(&str) -> bool) -> Series {
    let labels: Vec<Label> = series
        .labels()
        .iter()
        .filter(|(n, _)| keep(n))
        .cloned()
        .collect();
    Series::from_labels(labels)
}

/// Only the labels named in `names` (`by`, `on`).
pub(crate) fn keep_only(series: &Series, names: &[String]) -> Series {
    rebuild(series, |n| names.iter().any(|k| k == n))
}

/// All labels but those in `names` and the metric name (`without`,
/// `ignoring`).
pub(crate) fn remove(series: &Series, names: &[String]) -> Series {
    rebuild(series, |n| {
        n != METRIC_NAME_LABEL && !names.iter().any(|k| k == n)
    })
}

/// The series with label `name` set to `value` (removed when empty).
pub fn set(series: &Series, name: &str, value: &str) -> Series {
    series.with_label(name, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_operations() {
        let s = Series::new("m", [("a", "1"), ("b", "2")]);
        assert_eq!(drop_name(&s).to_string(), r#"{a="1", b="2"}"#);
        assert_eq!(keep_only(&s, &["b".into()]).to_string(), r#"{b="2"}"#);
        assert_eq!(remove(&s, &["b".into()]).to_string(), r#"{a="1"}"#);
        assert_eq!(set(&s, "a", "").to_string(), r#"m{b="2"}"#);
        assert_eq!(set(&s, "c", "3").get("c"), Some("3"));
    }
}
