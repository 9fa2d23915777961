//! The `labels` operator: keeps, drops, renames or sets labels. The
//! rewritten series is cached per input series id.

mod config;
pub use config::{LabelsConfig, LabelsTransform};

use std::sync::Arc;

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Pipeline;

use tidemark_engine::runtime::{Operator, SampleStream};
use tidemark_engine::series::Label;
use tidemark_engine::stats::{ComponentStats, add};
use tidemark_engine::{Sample, Series, SeriesId};

/// One label rewrite, applied in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relabel {
    /// Keep only these labels (and the metric name).
    Keep(Vec<String>),
    /// Drop these labels.
    Drop(Vec<String>),
    /// Rename labels: `(from, to)`; a renamed label replaces any existing `to`.
    Rename(Vec<(String, String)>),
    /// Set labels to fixed values; an empty value removes the label.
    Set(Vec<(String, String)>),
}

/// Applies rewrites to a series. The metric name is `__name__` and can be
/// set too.
pub fn relabel(series: &Series, rules: &[Relabel]) -> Series {
    let mut labels: Vec<Label> = series.labels().to_vec();
    let is_name = |n: &str| n == tidemark_engine::series::METRIC_NAME_LABEL;
    for rule in rules {
        match rule {
            Relabel::Keep(keep) => {
                labels.retain(|(n, _)| is_name(n) || keep.iter().any(|k| k == n.as_ref()))
            }
            Relabel::Drop(drop) => {
                labels.retain(|(n, _)| is_name(n) || !drop.iter().any(|k| k == n.as_ref()))
            }
            Relabel::Rename(pairs) => {
                for (from, to) in pairs {
                    if let Some(i) = labels.iter().position(|(n, _)| n.as_ref() == from) {
                        let (_, v) = labels.remove(i);
                        labels.retain(|(n, _)| n.as_ref() != to);
                        labels.push((Arc::from(to.as_str()), v));
                    }
                }
            }
            Relabel::Set(pairs) => {
                for (name, value) in pairs {
                    labels.retain(|(n, _)| n.as_ref() != name);
                    labels.push((Arc::from(name.as_str()), Arc::from(value.as_str())));
                }
            }
        }
    }
    Series::from_labels(labels)
}

/// Label rewriting.
pub trait Labels<'scope> {
    /// Rewrites every sample's labels with `rules`.
    fn relabel(
        self,
        name: &str,
        rules: Vec<Relabel>,
        stats: Arc<ComponentStats>,
    ) -> SampleStream<'scope>;
}

impl<'scope> Labels<'scope> for SampleStream<'scope> {
    fn relabel(
        self,
        name: &str,
        rules: Vec<Relabel>,
        stats: Arc<ComponentStats>,
    ) -> SampleStream<'scope> {
        let mut cache: FxHashMap<SeriesId, Series> = FxHashMap::default();
        self.unary(Pipeline, name, move |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    for s in data.iter_mut() {
                        s.series = cache
                            .entry(s.series.id())
                            .or_insert_with(|| relabel(&s.series, &rules))
                            .clone();
                    }
                    add(&stats.received, data.len() as u64);
                    add(&stats.sent, data.len() as u64);
                    output.session(&cap).give_container(data);
                });
            }
        })
        .container::<Vec<Sample>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_in_order() {
        let s = Series::new("cpu", [("host", "a"), ("dc", "x"), ("core", "1")]);
        let out = relabel(
            &s,
            &[
                Relabel::Drop(vec!["core".into()]),
                Relabel::Rename(vec![("dc".into(), "region".into())]),
                Relabel::Set(vec![
                    ("env".into(), "prod".into()),
                    ("host".into(), String::new()),
                ]),
            ],
        );
        assert_eq!(out, Series::new("cpu", [("region", "x"), ("env", "prod")]));
        let kept = relabel(&s, &[Relabel::Keep(vec!["host".into()])]);
        assert_eq!(kept, Series::new("cpu", [("host", "a")]));
        let renamed = relabel(
            &s,
            &[Relabel::Set(vec![("__name__".into(), "cpu_total".into())])],
        );
        assert_eq!(renamed.name(), "cpu_total");
    }
}
