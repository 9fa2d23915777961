//! `/metrics`: the engine's own telemetry in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use tidemark_engine::stats::Role;
use tidemark_engine::time::now_millis;

use super::control::{Control, State};

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every pipeline's counters.
pub fn render(control: &Control) -> String {
    let mut out = String::new();
    let pipelines = control.stats();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    let per = |f: &dyn Fn(&tidemark_engine::stats::Totals) -> Option<f64>| -> Vec<(String, f64)> {
        pipelines
            .iter()
            .filter_map(|(n, _, s)| {
                f(&s.totals()).map(|v| (format!("pipeline=\"{}\"", escape(n)), v))
            })
            .collect()
    };
    family(
        "tidemark_samples_in_total",
        "counter",
        "Samples read by a pipeline's sources.",
        per(&|t| Some(t.samples_in as f64)),
    );
    family(
        "tidemark_samples_out_total",
        "counter",
        "Samples written by a pipeline's sinks.",
        per(&|t| Some(t.samples_out as f64)),
    );
    family(
        "tidemark_samples_rejected_total",
        "counter",
        "Samples rejected at the edge.",
        per(&|t| Some(t.rejected as f64)),
    );
    family(
        "tidemark_samples_late_total",
        "counter",
        "Samples dropped as late.",
        per(&|t| Some(t.late as f64)),
    );
    family(
        "tidemark_watermark_seconds",
        "gauge",
        "The pipeline's watermark (seconds since the epoch).",
        per(&|t| t.watermark.map(|w| w as f64 / 1000.0)),
    );
    family(
        "tidemark_watermark_lag_seconds",
        "gauge",
        "How far the watermark is behind the wall clock.",
        per(&|t| {
            t.watermark
                .map(|w| (now_millis() as f64 - w as f64) / 1000.0)
        }),
    );
    let mut received = Vec::new();
    let mut sent = Vec::new();
    let mut errors = Vec::new();
    let mut retries = Vec::new();
    let mut partial = Vec::new();
    let mut dropped = Vec::new();
    let mut in_flight = Vec::new();
    let mut notifications = Vec::new();
    for (pipeline, _, stats) in &pipelines {
        for (component, r, s) in stats.components() {
            let labels = format!(
                "pipeline=\"{}\",component=\"{}\",role=\"{}\"",
                escape(pipeline),
                escape(&component),
                r.as_str()
            );
            received.push((labels.clone(), s.received.load(Ordering::Relaxed) as f64));
            sent.push((labels.clone(), s.sent.load(Ordering::Relaxed) as f64));
            errors.push((labels.clone(), s.errors.load(Ordering::Relaxed) as f64));
            retries.push((labels.clone(), s.retries.load(Ordering::Relaxed) as f64));
            let partial_windows = s.partial_windows.load(Ordering::Relaxed);
            if partial_windows > 0 {
                partial.push((labels.clone(), partial_windows as f64));
            }
            if r == Role::Source {
                in_flight.push((labels.clone(), s.in_flight.load(Ordering::Relaxed) as f64));
            }
            for (reason, n) in s.drop_counts() {
                dropped.push((format!("{labels},reason=\"{}\"", reason.as_str()), n as f64));
            }
            for ((receiver, outcome, reason), n) in s.notify_counts() {
                notifications.push((
                    format!(
                        "{labels},receiver=\"{}\",outcome=\"{outcome}\",reason=\"{reason}\"",
                        escape(&receiver)
                    ),
                    n as f64,
                ));
            }
        }
    }
    family(
        "tidemark_notifications_total",
        "counter",
        "Notifications and alerts a notifier sink sent, failed to send, retried or left out, by receiver, outcome and reason.",
        notifications,
    );
    family(
        "tidemark_component_received_total",
        "counter",
        "Records a component received.",
        received,
    );
    family(
        "tidemark_component_sent_total",
        "counter",
        "Records a component sent on or wrote.",
        sent,
    );
    family(
        "tidemark_component_errors_total",
        "counter",
        "Errors talking to files or external systems.",
        errors,
    );
    family(
        "tidemark_component_retries_total",
        "counter",
        "Writes that failed and were made again (nothing lost).",
        retries,
    );
    family(
        "tidemark_component_partial_windows_total",
        "counter",
        "Results of partial windows (started before the input, or closed by its end), emitted, marked or dropped as the window's partial option says.",
        partial,
    );
    family(
        "tidemark_component_dropped_total",
        "counter",
        "Records a component dropped, by reason.",
        dropped,
    );
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for (listener, _, s) in control.listeners.components() {
        accepted.push((
            format!("listener=\"{listener}\""),
            s.received.load(Ordering::Relaxed) as f64,
        ));
        for (reason, n) in s.drop_counts() {
            refused.push((
                format!("listener=\"{listener}\",reason=\"{}\"", reason.as_str()),
                n as f64,
            ));
        }
    }
    family(
        "tidemark_ingest_accepted_total",
        "counter",
        "Samples a network listener accepted.",
        accepted,
    );
    family(
        "tidemark_ingest_rejected_total",
        "counter",
        "Samples (or requests) a network listener rejected, by reason.",
        refused,
    );
    let states = State::ALL;
    let count = |s: State| pipelines.iter().filter(|(_, st, _)| *st == s).count() as f64;
    family(
        "tidemark_pipelines",
        "gauge",
        "Pipelines in this process by state.",
        states
            .iter()
            .map(|s| {
                (
                    format!(
                        "state=\"{}\"",
                        serde_json::to_value(s)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    ),
                    count(*s),
                )
            })
            .collect(),
    );
    let process = format!("process=\"{}\"", control.process);
    family(
        "tidemark_ingest_series_cache_bytes",
        "gauge",
        "Memory held by the listeners' cache of validated series.",
        vec![(process.clone(), control.edge.series.bytes() as f64)],
    );
    family(
        "tidemark_ingest_decoding_bytes",
        "gauge",
        "Memory held by requests being decoded, of the budget limits.max_decode_mb.",
        vec![(process.clone(), control.decoding_bytes() as f64)],
    );
    family(
        "tidemark_http_refusals_total",
        "counter",
        "Requests refused before any handler ran, by reason (unauthenticated, forbidden, origin, host, content_type).",
        control
            .gate
            .refusals()
            .into_iter()
            .map(|(reason, n)| (format!("{process},reason=\"{reason}\""), n as f64))
            .collect(),
    );
    family(
        "tidemark_quota_refusals_total",
        "counter",
        "Requests and pipelines refused by a quota or the access policy, by quota (pipelines, subscribers, max_queue, max_memory_mb, ingest_rate, access).",
        control
            .quotas
            .refusals()
            .into_iter()
            .map(|(quota, n)| (format!("{process},quota=\"{quota}\""), n as f64))
            .collect(),
    );
    let histories = control.history.list();
    let memory = |f: &dyn Fn(&tidemark_engine::history::History) -> f64| -> Vec<(String, f64)> {
        histories
            .iter()
            .map(|(p, s, h)| {
                (
                    format!("pipeline=\"{}\",sink=\"{}\"", escape(p), escape(s)),
                    f(h),
                )
            })
            .collect()
    };
    family(
        "tidemark_memory_series",
        "gauge",
        "Series a memory sink holds for the query API.",
        memory(&|h| h.series() as f64),
    );
    family(
        "tidemark_memory_points",
        "gauge",
        "Points a memory sink holds for the query API.",
        memory(&|h| h.points() as f64),
    );
    family(
        "tidemark_memory_bytes",
        "gauge",
        "Memory a memory sink holds (an estimate that errs high), of its max_mb.",
        memory(&|h| h.bytes() as f64),
    );
    family(
        "tidemark_memory_retention_seconds",
        "gauge",
        "Event time a memory sink keeps now: its retention, or less while over max_mb.",
        memory(&|h| h.retention_kept() as f64 / 1000.0),
    );
    family(
        "tidemark_memory_evicted_points_total",
        "counter",
        "Points a memory sink forgot before their retention to stay under max_mb.",
        memory(&|h| h.evicted.load(Ordering::Relaxed) as f64),
    );
    family(
        "tidemark_up",
        "gauge",
        "1 while the process runs.",
        vec![(format!("process=\"{}\"", control.process), 1.0)],
    );
    out
}
