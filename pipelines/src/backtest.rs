//! `tidemark backtest`: a pipeline replayed over its own archive.
//!
//! The pipeline's definition is rewritten before it is compiled:
//!
//! - each source becomes a `parquet` source over the archive of what it
//!   read: the pipeline's own `parquet` sink whose only input is that
//!   source, or the archive named with `--archive SOURCE=PATH`;
//! - each sink is dropped, and every stream that a sink read (a window's
//!   output, `rules.alerts`, a `route`'s notifications, ...) is written
//!   once, as JSON lines, to `<out>/<stream>.jsonl` instead. Nothing is
//!   sent to a database, a receiver or Alertmanager. Streams straight from
//!   a source are not written: they are the archive.
//!
//! The transforms stay as they are, so the same dataflow runs in the same
//! event time. After the run, [`summarize`] reads the files back into a
//! summary: the alerts that fired and when, incidents, anomalies and
//! notifications.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use tidemark_engine::time::format_millis;

use crate::compile::{Diagnostic, compile};
use crate::plan::Plan;
use crate::run::RunReport;
use crate::yaml;

/// What to replay and where to write.
#[derive(Clone, Debug, Default)]
pub struct Backtest {
    /// The first event time replayed (ms); default the archive's start.
    pub from: Option<i64>,
    /// The event time the replay stops before (ms); default its end.
    pub to: Option<i64>,
    /// Where the outputs and `summary.json` go.
    pub out: PathBuf,
    /// Archives named for sources: `(source, path)`, the path ending in
    /// `/pipeline=<name>/output=<sink>`.
    pub archives: Vec<(String, String)>,
}

/// A stream written by the backtest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    /// As sinks name it: `w`, `rules.alerts`.
    pub name: String,
    /// Where it is written.
    pub file: PathBuf,
    /// The sinks of the pipeline that read it.
    pub sinks: Vec<String>,
}

/// A pipeline ready to be backtested.
#[derive(Debug)]
pub struct Prepared {
    /// The rewritten pipeline.
    pub plan: Plan,
    /// What each source replays: `(source, archive)`.
    pub sources: Vec<(String, String)>,
    /// The streams written.
    pub streams: Vec<Stream>,
}

/// An event time given on the command line: RFC 3339 or milliseconds
/// since the epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    tidemark_connectors::parquet::TimeBound::Text(text.to_owned()).millis()
}

/// Splits `<prefix>/pipeline=<name>/output=<sink>` into its three parts.
pub fn parse_archive(path: &str) -> Result<(String, String, String), String> {
    let trimmed = path.trim_end_matches('/');
    let shape = || {
        format!(
            "archive {path:?} must end in /pipeline=<name>/output=<sink>, as the parquet sink lays it out (s3://bucket/prefix/pipeline=ingest/output=raw)"
        )
    };
    let (rest, output) = trimmed.rsplit_once("/output=").ok_or_else(shape)?;
    let (prefix, pipeline) = rest.rsplit_once("/pipeline=").ok_or_else(shape)?;
    if prefix.is_empty() || pipeline.is_empty() || output.is_empty() || output.contains('/') {
        return Err(shape());
    }
    Ok((prefix.to_owned(), pipeline.to_owned(), output.to_owned()))
}

fn inputs_of(component: &Value) -> Vec<String> {
    match component.get("inputs") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The file a stream is written to: its name, with characters that do not
/// belong in a file name replaced.
fn file_name(stream: &str) -> String {
    let safe: String = stream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.jsonl")
}

/// The settings of a sink that a replay source of the same type takes.
const PARQUET_FIELDS: [&str; 5] = [
    "path",
    "endpoint",
    "region",
    "access_key_id",
    "secret_access_key_env",
];
const TIMESCALEDB_FIELDS: [&str; 6] = [
    "url",
    "password_env",
    "ca_file",
    "schema",
    "table",
    "series_table",
];

/// The replay source over what the sink `sink` (`settings`) of `pipeline`
/// wrote: a `parquet` or a `timescaledb` source.
fn replay_of(pipeline: &str, sink: &str, settings: &Value) -> serde_json::Map<String, Value> {
    let kind = settings.get("type").and_then(Value::as_str).unwrap_or("");
    let mut config = serde_json::Map::new();
    config.insert("type".into(), json!(kind));
    let fields: &[&str] = if kind == "parquet" {
        &PARQUET_FIELDS
    } else {
        &TIMESCALEDB_FIELDS
    };
    for field in fields {
        if let Some(v) = settings.get(*field) {
            config.insert((*field).into(), v.clone());
        }
    }
    if kind == "parquet" {
        config.insert("pipeline".into(), json!(pipeline));
        config.insert("output".into(), json!(sink));
    }
    config
}

fn is_archive(settings: &Value, kind: &str) -> bool {
    settings.get("type").and_then(Value::as_str) == Some(kind)
}

/// The archive source replacing `source`: from `--archive` (a Parquet
/// archive's path, or the name of one of the pipeline's `parquet` or
/// `timescaledb` sinks), or from the pipeline's `parquet` sink that
/// archives it, or failing that its `timescaledb` sink.
fn archive_for(
    source: &str,
    pipeline: &str,
    sinks: &serde_json::Map<String, Value>,
    named: &[(String, String)],
) -> Result<serde_json::Map<String, Value>, String> {
    let reads_only_source = |s: &Value| inputs_of(s) == [source];
    if let Some((_, path)) = named.iter().find(|(s, _)| s == source) {
        if !path.contains("/pipeline=")
            && let Some(settings) = sinks.get(path)
        {
            if !(is_archive(settings, "parquet") || is_archive(settings, "timescaledb")) {
                return Err(format!(
                    "--archive {source}={path}: sink {path:?} is neither a parquet nor a timescaledb sink, so it keeps nothing to replay"
                ));
            }
            if !reads_only_source(settings) {
                return Err(format!(
                    "--archive {source}={path}: sink {path:?} does not read exactly [{source}], so it did not archive that source"
                ));
            }
            return Ok(replay_of(pipeline, path, settings));
        }
        let (prefix, pipeline, output) = parse_archive(path)?;
        let mut config = serde_json::Map::new();
        config.insert("type".into(), json!("parquet"));
        config.insert("path".into(), json!(prefix));
        config.insert("pipeline".into(), json!(pipeline));
        config.insert("output".into(), json!(output));
        return Ok(config);
    }
    for kind in ["parquet", "timescaledb"] {
        let archives: Vec<(&String, &Value)> = sinks
            .iter()
            .filter(|(_, s)| is_archive(s, kind) && reads_only_source(s))
            .collect();
        match archives.as_slice() {
            [] => continue,
            [(sink, settings)] => return Ok(replay_of(pipeline, sink, settings)),
            several => {
                let names: Vec<&str> = several.iter().map(|(n, _)| n.as_str()).collect();
                return Err(format!(
                    "source {source:?} is archived by several {kind} sinks ({}); choose one with --archive {source}=<sink>",
                    names.join(", ")
                ));
            }
        }
    }
    Err(format!(
        "source {source:?} has no archive to replay: no parquet or timescaledb sink of the pipeline has inputs [{source}]; name one with --archive {source}=s3://bucket/prefix/pipeline=<name>/output=<sink>"
    ))
}

/// What a replay source config reads, for the log and the summary: a
/// Parquet archive as `--archive` names it, or a table and its database.
fn archive_path(config: &serde_json::Map<String, Value>) -> String {
    let field = |name: &str| config.get(name).and_then(Value::as_str).unwrap_or("");
    if field("type") == "timescaledb" {
        let or = |name: &str, default: &'static str| match field(name) {
            "" => default,
            set => set,
        };
        let at = tidemark_connectors::timescaledb::location(field("url"));
        return format!(
            "timescaledb {}.{} at {at}",
            or("schema", "public"),
            or("table", "tidemark_samples")
        );
    }
    format!(
        "{}/pipeline={}/output={}",
        field("path").trim_end_matches('/'),
        field("pipeline"),
        field("output")
    )
}

/// Rewrites the pipeline `text` (from `file`) for a backtest and compiles
/// it. Errors of the pipeline itself come first, located in `file`.
pub fn prepare(file: &str, text: &str, backtest: &Backtest) -> Result<Prepared, Vec<String>> {
    let strings = |errors: Vec<Diagnostic>| -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    };
    compile(file, text).map_err(strings)?;
    let root = yaml::parse(text).map_err(|e| vec![e.message])?;
    let mut root = root.to_json();
    let pipeline = root
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let empty = serde_json::Map::new();
    let section = |root: &Value, key: &str| {
        root.get(key)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(|| empty.clone())
    };
    let (sources, sinks) = (section(&root, "sources"), section(&root, "sinks"));
    let mut errors = Vec::new();
    for (source, _) in &backtest.archives {
        if !sources.contains_key(source) {
            errors.push(format!(
                "--archive {source}=...: the pipeline has no source {source:?}"
            ));
        }
    }
    let mut replaced = serde_json::Map::new();
    let mut replays = Vec::new();
    for (name, config) in &sources {
        let replays_already = is_archive(config, "parquet") || is_archive(config, "timescaledb");
        let mut config = if replays_already && !backtest.archives.iter().any(|(s, _)| s == name) {
            config.as_object().cloned().unwrap_or_default()
        } else {
            match archive_for(name, &pipeline, &sinks, &backtest.archives) {
                Ok(found) => found,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            }
        };
        if let Some(from) = backtest.from {
            config.insert("from".into(), json!(from));
        }
        if let Some(to) = backtest.to {
            config.insert("to".into(), json!(to));
        }
        replays.push((name.clone(), archive_path(&config)));
        replaced.insert(name.clone(), Value::Object(config));
    }
    // Each stream a sink read, once, in the order sinks name them.
    let mut streams: Vec<Stream> = Vec::new();
    for (sink, config) in &sinks {
        for input in inputs_of(config) {
            let component = input.split('.').next().unwrap_or_default();
            if sources.contains_key(component) {
                continue;
            }
            match streams.iter_mut().find(|s| s.name == input) {
                Some(stream) => stream.sinks.push(sink.clone()),
                None => streams.push(Stream {
                    file: backtest.out.join(file_name(&input)),
                    name: input,
                    sinks: vec![sink.clone()],
                }),
            }
        }
    }
    if streams.is_empty() && errors.is_empty() {
        errors.push(
            "nothing to backtest: every sink of the pipeline reads a source directly, and the replay would write back the archive itself".into(),
        );
    }
    let transforms = section(&root, "transforms");
    let taken: BTreeSet<&String> = sources.keys().chain(transforms.keys()).collect();
    let mut written = serde_json::Map::new();
    let mut n = 0;
    for stream in &streams {
        let name = loop {
            n += 1;
            let name = format!("backtest_{n}");
            if !taken.iter().any(|t| **t == name) {
                break name;
            }
        };
        written.insert(
            name,
            json!({"type": "file", "inputs": [stream.name], "path": stream.file.to_string_lossy()}),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if let Some(map) = root.as_object_mut() {
        map.insert("sources".into(), Value::Object(replaced));
        map.insert("sinks".into(), Value::Object(written));
    }
    let rewritten = serde_json::to_string_pretty(&root).map_err(|e| vec![e.to_string()])?;
    let label = format!("{file} (as rewritten for the backtest)");
    let plan = compile(&label, &rewritten).map_err(strings)?;
    Ok(Prepared {
        plan,
        sources: replays,
        streams,
    })
}

/// What one alert did in the backtest: when it fired, and when it
/// resolved if it did.
#[derive(Default)]
struct Episode {
    fired: Option<i64>,
    resolved: Option<i64>,
}

/// Reads the backtest's outputs back into its summary (the contents of
/// `summary.json`).
pub fn summarize(
    prepared: &Prepared,
    backtest: &Backtest,
    report: &RunReport,
) -> std::io::Result<Value> {
    let mut streams = Vec::new();
    // Alerts by (labels, startsAt): one firing episode each.
    let mut alerts: BTreeMap<(String, i64), (Value, Episode)> = BTreeMap::new();
    let mut incidents: BTreeMap<String, Value> = BTreeMap::new();
    let mut anomalies: BTreeMap<String, u64> = BTreeMap::new();
    let mut notifications: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for stream in &prepared.streams {
        let mut records = 0u64;
        let file = match std::fs::File::open(&stream.file) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        for line in file
            .into_iter()
            .flat_map(|f| std::io::BufReader::new(f).lines())
        {
            let line = line?;
            records += 1;
            // Samples are most of the lines: only the detector's flags
            // are read.
            if line.starts_with("{\"name\":") && !line.contains(":anomaly\"") {
                continue;
            }
            let Ok(record) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let text = |key: &str| record.get(key).and_then(Value::as_str);
            let number = |key: &str| record.get(key).and_then(Value::as_i64);
            if let (Some(state), Some(labels)) = (text("state"), record.get("labels")) {
                let Some(starts) = number("startsAt") else {
                    continue;
                };
                let entry = alerts
                    .entry((labels.to_string(), starts))
                    .or_insert_with(|| (labels.clone(), Episode::default()));
                match state {
                    "firing" => entry.1.fired = entry.1.fired.or(Some(starts)),
                    "resolved" => entry.1.resolved = number("endsAt").or(number("at")),
                    _ => {}
                }
            } else if let (Some(id), Some(_)) = (text("id"), record.get("members")) {
                let members = record
                    .get("members")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                let entry = incidents.entry(id.to_owned()).or_insert_with(|| {
                    json!({"id": id, "opened_at": number("openedAt").map(format_millis), "max_members": 0})
                });
                entry["status"] = json!(text("status"));
                entry["root"] = json!(text("root"));
                if members as u64 > entry["max_members"].as_u64().unwrap_or(0) {
                    entry["max_members"] = json!(members);
                }
            } else if let (Some(receiver), Some(status)) = (text("receiver"), text("status")) {
                let counts = notifications.entry(receiver.to_owned()).or_default();
                match status {
                    "resolved" => counts.1 += 1,
                    _ => counts.0 += 1,
                }
            } else if let Some(name) = text("name").and_then(|n| n.strip_suffix(":anomaly"))
                && record.get("value").and_then(Value::as_f64) == Some(1.0)
            {
                *anomalies.entry(name.to_owned()).or_default() += 1;
            }
        }
        streams.push(json!({
            "stream": stream.name,
            "file": stream.file.file_name().map(|f| f.to_string_lossy().into_owned()),
            "records": records,
            "sinks": stream.sinks,
        }));
    }
    // In the order they fired.
    let mut fired: Vec<(i64, Value)> = alerts
        .into_values()
        .filter_map(|(labels, episode)| {
            episode.fired.map(|at| {
                let alert = json!({
                    "labels": labels,
                    "fired_at": format_millis(at),
                    "resolved_at": episode.resolved.map(format_millis),
                });
                (at, alert)
            })
        })
        .collect();
    fired.sort_by_key(|(at, _)| *at);
    let fired: Vec<Value> = fired.into_iter().map(|(_, alert)| alert).collect();
    let seconds = report.elapsed.as_secs_f64();
    let bound = |t: Option<i64>| t.map(format_millis);
    Ok(json!({
        "pipeline": prepared.plan.name,
        "from": bound(backtest.from),
        "to": bound(backtest.to),
        "archives": prepared.sources.iter().map(|(s, a)| json!({"source": s, "archive": a})).collect::<Vec<_>>(),
        "samples_replayed": report.totals.samples_in,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "samples_per_second": (report.totals.samples_in as f64 / seconds.max(1e-9)).round() as u64,
        "late": report.totals.late,
        "rejected": report.totals.rejected,
        "errors": report.errors,
        "streams": streams,
        "alerts_fired": fired,
        "incidents": incidents.into_values().collect::<Vec<_>>(),
        "anomalies": anomalies,
        "notifications": notifications
            .into_iter()
            .map(|(r, (firing, resolved))| (r, json!({"firing": firing, "resolved": resolved})))
            .collect::<serde_json::Map<_, _>>(),
    }))
}

/// The summary as a few lines for a terminal.
pub fn render(summary: &Value, out: &Path) -> String {
    let mut lines = Vec::new();
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    lines.push(format!(
        "Replayed {} samples in {} s ({}/s), {} late, {} rejected, {} errors.",
        n(&summary["samples_replayed"]),
        summary["seconds"],
        n(&summary["samples_per_second"]),
        n(&summary["late"]),
        n(&summary["rejected"]),
        n(&summary["errors"]),
    ));
    let fired = summary["alerts_fired"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    lines.push(format!("Alerts that fired: {}", fired.len()));
    for alert in fired.iter().take(20) {
        let labels = alert["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let until = alert["resolved_at"]
            .as_str()
            .map_or("still firing".to_owned(), |t| format!("until {t}"));
        lines.push(format!(
            "  {} {{{labels}}} {until}",
            alert["fired_at"].as_str().unwrap_or_default()
        ));
    }
    if fired.len() > 20 {
        lines.push(format!("  ... {} more in summary.json", fired.len() - 20));
    }
    let incidents = summary["incidents"].as_array().map_or(0, Vec::len);
    lines.push(format!("Incidents: {incidents}"));
    if let Some(map) = summary["anomalies"].as_object() {
        let total: u64 = map.values().map(n).sum();
        lines.push(format!("Anomalous samples: {total}"));
    }
    if let Some(map) = summary["notifications"].as_object() {
        for (receiver, counts) in map {
            lines.push(format!(
                "Notifications to {receiver}: {} firing, {} resolved",
                n(&counts["firing"]),
                n(&counts["resolved"])
            ));
        }
    }
    lines.push(format!("Outputs and summary.json are in {}", out.display()));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIPELINE: &str = "name: live
sources:
  in: {type: file, path: in.jsonl}
transforms:
  w: {type: window, inputs: [in], window: {tumbling: 1m}, aggregates: [avg]}
sinks:
  raw: {type: parquet, inputs: [in], path: /tmp/archive}
  db: {type: file, inputs: [w], path: /tmp/w.jsonl}
  copy: {type: console, inputs: [w]}
";

    fn backtest() -> Backtest {
        Backtest {
            from: Some(1000),
            to: Some(2000),
            out: PathBuf::from("/tmp/bt"),
            archives: Vec::new(),
        }
    }

    #[test]
    fn archives_are_named_by_their_partitions() {
        assert_eq!(
            parse_archive("s3://b/p/x/pipeline=ingest/output=raw/"),
            Ok(("s3://b/p/x".into(), "ingest".into(), "raw".into()))
        );
        assert!(parse_archive("s3://b/p/pipeline=ingest").is_err());
        assert!(parse_archive("/pipeline=a/output=b").is_err());
        assert!(parse_archive("/d/pipeline=a/output=b/date=2026-01-01").is_err());
    }

    #[test]
    fn sources_replay_their_archive_and_each_stream_is_written_once() {
        let prepared = prepare("p.yaml", PIPELINE, &backtest()).unwrap();
        assert_eq!(
            prepared.sources,
            [("in".into(), "/tmp/archive/pipeline=live/output=raw".into())]
        );
        assert_eq!(
            prepared.streams,
            [Stream {
                name: "w".into(),
                file: PathBuf::from("/tmp/bt/w.jsonl"),
                sinks: vec!["copy".into(), "db".into()],
            }]
        );
        let source = &prepared.plan.sources[0].1;
        assert!(
            format!("{source:?}").contains("from: 1000, to: 2000"),
            "{source:?}"
        );
        let sinks: Vec<&str> = prepared
            .plan
            .sinks
            .iter()
            .map(|(n, _, _)| n.as_str())
            .collect();
        assert_eq!(sinks, ["backtest_1"]);
    }

    #[test]
    fn a_source_without_an_archive_is_explained() {
        let text = PIPELINE.replace(
            "inputs: [in], path: /tmp/archive",
            "inputs: [w], path: /tmp/archive",
        );
        let errors = prepare("p.yaml", &text, &backtest()).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("--archive in="), "{errors:?}");
        let named = Backtest {
            archives: vec![("in".into(), "/a/pipeline=other/output=raw".into())],
            ..backtest()
        };
        let prepared = prepare("p.yaml", &text, &named).unwrap();
        assert_eq!(prepared.sources[0].1, "/a/pipeline=other/output=raw");
        let wrong = Backtest {
            archives: vec![("nope".into(), "/a/pipeline=other/output=raw".into())],
            ..backtest()
        };
        let errors = prepare("p.yaml", &text, &wrong).unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains("no source \"nope\"")),
            "{errors:?}"
        );
    }

    #[test]
    fn a_timescaledb_sink_is_replayed_where_there_is_no_parquet_archive() {
        let db = "{type: timescaledb, inputs: [in], url: \"postgresql://u:secret@db.internal:6432/metrics\", table: raw_samples}";
        let only_db = PIPELINE.replace(
            "raw: {type: parquet, inputs: [in], path: /tmp/archive}",
            &format!("raw: {db}"),
        );
        let prepared = prepare("p.yaml", &only_db, &backtest()).unwrap();
        assert_eq!(
            prepared.sources,
            [(
                "in".into(),
                "timescaledb public.raw_samples at db.internal:6432/metrics".into()
            )]
        );
        let source = format!("{:?}", prepared.plan.sources[0].1);
        assert!(
            source.contains("TimescaleSource") && source.contains("from: 1000, to: 2000"),
            "{source}"
        );
        // Both: the Parquet archive, unless the sink is named.
        let both = PIPELINE.replace(
            "  db: {type: file",
            &format!("  tsdb: {db}\n  db: {{type: file"),
        );
        let prepared = prepare("p.yaml", &both, &backtest()).unwrap();
        assert_eq!(
            prepared.sources[0].1,
            "/tmp/archive/pipeline=live/output=raw"
        );
        let named = |sink: &str| Backtest {
            archives: vec![("in".into(), sink.into())],
            ..backtest()
        };
        let prepared = prepare("p.yaml", &both, &named("tsdb")).unwrap();
        assert!(
            prepared.sources[0]
                .1
                .starts_with("timescaledb public.raw_samples")
        );
        let errors = prepare("p.yaml", &both, &named("copy")).unwrap_err();
        assert!(
            errors[0].contains("neither a parquet nor a timescaledb sink"),
            "{errors:?}"
        );
        let errors = prepare(
            "p.yaml",
            &both.replace("[in], url", "[w], url"),
            &named("tsdb"),
        )
        .unwrap_err();
        assert!(
            errors[0].contains("does not read exactly [in]"),
            "{errors:?}"
        );
        // Two tables: choose one.
        let two = only_db.replace(
            "  db: {type: file",
            &format!("  tsdb: {db}\n  db: {{type: file"),
        );
        let errors = prepare("p.yaml", &two, &backtest()).unwrap_err();
        assert!(
            errors[0].contains("several timescaledb sinks (raw, tsdb)")
                && errors[0].contains("--archive in=<sink>"),
            "{errors:?}"
        );
    }

    #[test]
    fn errors_of_the_pipeline_point_into_its_file() {
        let text = PIPELINE.replace("tumbling: 1m", "tumbling: soon");
        let errors = prepare("p.yaml", &text, &backtest()).unwrap_err();
        assert!(errors[0].starts_with("p.yaml:5:"), "{errors:?}");
    }

    #[test]
    fn the_summary_lists_firing_episodes_in_time_order_and_counts_the_rest() {
        let dir = std::env::temp_dir().join(format!("tidemark-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut prepared = prepare("p.yaml", PIPELINE, &backtest()).unwrap();
        prepared.streams[0].file = dir.join("w.jsonl");
        let alert = |host: &str, state: &str, starts: i64, ends: Option<i64>| {
            json!({"labels": {"alertname": "A", "host": host}, "state": state, "startsAt": starts,
                   "activeAt": starts, "endsAt": ends, "at": ends.unwrap_or(starts)})
            .to_string()
        };
        let lines = [
            alert("b", "pending", 1_000, None),
            alert("b", "firing", 2_000, None),
            alert("a", "firing", 5_000, None),
            alert("b", "resolved", 2_000, Some(9_000)),
            r#"{"name":"cpu:anomaly","labels":{},"timestamp":1,"value":1.0}"#.to_owned(),
            r#"{"name":"cpu:anomaly","labels":{},"timestamp":2,"value":0.0}"#.to_owned(),
            r#"{"name":"cpu:anomaly_score","labels":{},"timestamp":1,"value":1.0}"#.to_owned(),
            json!({"id": "i1", "status": "opened", "openedAt": 2_000, "at": 2_000, "members": [{}],
                   "root": "host=b", "rootReason": "", "summary": ""})
            .to_string(),
            json!({"id": "i1", "status": "resolved", "openedAt": 2_000, "at": 9_000,
                   "members": [{}, {}], "root": "host=b", "rootReason": "", "summary": ""})
            .to_string(),
            json!({"receiver": "oncall", "status": "firing", "groupKey": "{}"}).to_string(),
            json!({"receiver": "oncall", "status": "resolved", "groupKey": "{}"}).to_string(),
        ];
        std::fs::write(&prepared.streams[0].file, lines.join("\n") + "\n").unwrap();
        let report = RunReport {
            totals: Default::default(),
            errors: 0,
            elapsed: std::time::Duration::from_secs(1),
            interrupted: false,
        };
        let summary = summarize(&prepared, &backtest(), &report).unwrap();
        let fired = summary["alerts_fired"].as_array().unwrap();
        let hosts: Vec<&str> = fired
            .iter()
            .map(|a| a["labels"]["host"].as_str().unwrap())
            .collect();
        assert_eq!(hosts, ["b", "a"], "{summary}");
        assert_eq!(fired[0]["fired_at"], "1970-01-01T00:00:02.000Z");
        assert_eq!(fired[0]["resolved_at"], "1970-01-01T00:00:09.000Z");
        assert_eq!(fired[1]["resolved_at"], Value::Null);
        assert_eq!(
            summary["incidents"],
            json!([{"id": "i1", "opened_at": "1970-01-01T00:00:02.000Z", "status": "resolved",
                    "root": "host=b", "max_members": 2}])
        );
        assert_eq!(summary["anomalies"], json!({"cpu": 1}));
        assert_eq!(
            summary["notifications"]["oncall"],
            json!({"firing": 1, "resolved": 1})
        );
        assert_eq!(summary["streams"][0]["records"], lines.len());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
