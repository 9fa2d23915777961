//! The one sanitiser of Prometheus names, for formats whose names are
//! freer than Prometheus' (OTLP metric names and attribute keys, Influx
//! measurements, fields and tags): every character outside
//! `[a-zA-Z0-9_]` (and `:` in metric names) becomes `_`, and a name that
//! is empty or starts with a digit gets a leading `_`, as Prometheus'
//! OTLP translation does.

/// A Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn metric_name(name: &str) -> String {
    sanitize(name, true)
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn label_name(name: &str) -> String {
    sanitize(name, false)
}

fn sanitize(name: &str, colons: bool) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':') {
            c
        } else {
            '_'
        }
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_engine::validate::{is_label_name, is_metric_name};

    #[test]
    fn names_become_valid_and_keep_what_was_valid() {
        for (raw, metric, label) in [
            (
                "http.server.duration",
                "http_server_duration",
                "http_server_duration",
            ),
            ("ns:rate5m", "ns:rate5m", "ns_rate5m"),
            ("5xx", "_5xx", "_5xx"),
            ("", "_", "_"),
            ("crème", "cr_me", "cr_me"),
            ("already_ok", "already_ok", "already_ok"),
        ] {
            assert_eq!(metric_name(raw), metric, "{raw:?}");
            assert_eq!(label_name(raw), label, "{raw:?}");
            assert!(is_metric_name(&metric_name(raw)), "{raw:?}");
            assert!(is_label_name(&label_name(raw)), "{raw:?}");
        }
    }
}
