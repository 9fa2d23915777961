//! Which of many selectors may match a series, without trying them all.

use rustc_hash::FxHashMap;

use promql_parser::label::MatchOp;
use promql_parser::parser::VectorSelector;
use tidemark_engine::Series;
use tidemark_engine::series::METRIC_NAME_LABEL;

use tidemark_engine::memstore::selects;

/// Selectors, each with a payload, indexed by one equality matcher each
/// (a label other than the name when there is one, being more selective,
/// else the name); selectors with none are tried on every series.
#[derive(Debug)]
pub struct SelectorIndex<T> {
    entries: Vec<(VectorSelector, T)>,
    by_pair: FxHashMap<(String, String), Vec<usize>>,
    any: Vec<usize>,
}

fn key(vs: &VectorSelector) -> Option<(String, String)> {
    if !vs.matchers.or_matchers.is_empty() {
        return None;
    }
    let equal = |m: &&promql_parser::label::Matcher| m.op == MatchOp::Equal && !m.value.is_empty();
    vs.matchers
        .matchers
        .iter()
        .filter(equal)
        .find(|m| m.name != METRIC_NAME_LABEL)
        .or_else(|| vs.matchers.matchers.iter().find(equal))
        .map(|m| (m.name.clone(), m.value.clone()))
        .or_else(|| {
            vs.name
                .as_ref()
                .map(|n| (METRIC_NAME_LABEL.to_owned(), n.clone()))
        })
}

impl<T> SelectorIndex<T> {
    /// Indexes `entries`.
    pub fn new(entries: Vec<(VectorSelector, T)>) -> SelectorIndex<T> {
        let mut by_pair: FxHashMap<(String, String), Vec<usize>> = FxHashMap::default();
        let mut any = Vec::new();
        for (i, (vs, _)) in entries.iter().enumerate() {
            match key(vs) {
                Some(k) => by_pair.entry(k).or_default().push(i),
                None => any.push(i),
            }
        }
        SelectorIndex {
            entries,
            by_pair,
            any,
        }
    }

    /// The payloads of the selectors that match `series`.
    pub fn matching<'a>(&'a self, series: &'a Series) -> impl Iterator<Item = &'a T> + 'a {
        series
            .labels()
            .iter()
            .filter_map(|(n, v)| self.by_pair.get(&(n.to_string(), v.to_string())))
            .flatten()
            .chain(self.any.iter())
            .map(|&i| &self.entries[i])
            .filter(|(vs, _)| selects(vs, series))
            .map(|(_, t)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(text: &str) -> VectorSelector {
        match promql_parser::parser::parse(text).unwrap() {
            promql_parser::parser::Expr::VectorSelector(vs) => vs,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn finds_exactly_the_matching_selectors() {
        let index = SelectorIndex::new(vec![
            (vs(r#"cpu{host="a"}"#), 0),
            (vs("cpu"), 1),
            (vs(r#"{job=~"x|y"}"#), 2),
            (vs(r#"mem{host="a"}"#), 3),
            (vs(r#"cpu{host!="a"}"#), 4),
        ]);
        let found = |s: Series| {
            let mut v: Vec<i32> = index.matching(&s).copied().collect();
            v.sort();
            v
        };
        assert_eq!(
            found(Series::new("cpu", [("host", "a"), ("job", "x")])),
            vec![0, 1, 2]
        );
        assert_eq!(found(Series::new("cpu", [("host", "b")])), vec![1, 4]);
        assert_eq!(found(Series::new("mem", [("host", "a")])), vec![3]);
    }
}
