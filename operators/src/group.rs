//! Grouping for windows: per series, `by` some labels, or `without` some.
//!
//! The metric name always stays part of the group, as in VictoriaMetrics'
//! stream aggregation: `by: [host]` aggregates each metric per host.

use tidemark_engine::Series;

/// How a window groups series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grouping {
    /// Each series on its own (neither `by` nor `without`).
    Series,
    /// Keep only these labels (sorted, unique).
    By(Vec<String>),
    /// Drop these labels (sorted, unique).
    Without(Vec<String>),
}

impl Grouping {
    /// A grouping from label lists, sorted and de-duplicated.
    pub fn new(by: Option<Vec<String>>, without: Option<Vec<String>>) -> Grouping {
        let norm = |mut v: Vec<String>| {
            v.sort();
            v.dedup();
            v
        };
        match (by, without) {
            (Some(by), _) => Grouping::By(norm(by)),
            (None, Some(without)) => Grouping::Without(norm(without)),
            (None, None) => Grouping::Series,
        }
    }

    /// `_by_a_b`, `_without_a_b` or nothing.
    pub fn name_suffix(&self) -> String {
        match self {
            Grouping::Series => String::new(),
            Grouping::By(l) => format!("_by_{}", l.join("_")),
            Grouping::Without(l) => format!("_without_{}", l.join("_")),
        }
    }

    /// The group a series belongs to.
    pub fn project(&self, series: &Series) -> Series {
        match self {
            Grouping::Series => series.clone(),
            Grouping::By(keep) => Series::new(
                series.name(),
                series
                    .tags()
                    .filter(|(n, _)| keep.binary_search_by(|k| k.as_str().cmp(n)).is_ok()),
            ),
            Grouping::Without(drop) => Series::new(
                series.name(),
                series
                    .tags()
                    .filter(|(n, _)| drop.binary_search_by(|k| k.as_str().cmp(n)).is_err()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_and_names() {
        let s = Series::new("cpu", [("host", "a"), ("dc", "x"), ("core", "1")]);
        let by = Grouping::new(Some(vec!["host".into(), "dc".into()]), None);
        assert_eq!(
            by.project(&s),
            Series::new("cpu", [("host", "a"), ("dc", "x")])
        );
        assert_eq!(by.name_suffix(), "_by_dc_host");
        let without = Grouping::new(None, Some(vec!["core".into()]));
        assert_eq!(
            without.project(&s),
            Series::new("cpu", [("host", "a"), ("dc", "x")])
        );
        assert_eq!(without.name_suffix(), "_without_core");
        assert_eq!(Grouping::Series.project(&s), s);
        assert_eq!(Grouping::Series.name_suffix(), "");
    }
}
