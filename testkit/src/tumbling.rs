//! A window pipeline's input and its result computed from scratch, for the
//! sink tests: `hosts` hosts send `m` once a second for `seconds` seconds
//! (integer values, so sums are exact), summed in 10 s tumbling windows by
//! host.

use std::collections::BTreeMap;
use std::path::Path;

/// 2026-11-25T00:00:00Z, a multiple of 10 s.
pub const BASE: i64 = 1_795_564_800_000;

/// (metric, host, window end) -> value.
pub type Expected = BTreeMap<(String, String, i64), f64>;

pub fn value(host: usize, second: i64) -> f64 {
    ((host as i64 * 7 + second * 13) % 101) as f64
}

pub fn timestamp(second: i64) -> i64 {
    BASE + second * 1000 + 500
}

/// JSON lines for seconds `from..to`.
pub fn input(hosts: usize, from: i64, to: i64) -> String {
    let mut out = String::new();
    for s in from..to {
        for h in 0..hosts {
            out.push_str(&format!(
                "{{\"name\":\"m\",\"labels\":{{\"host\":\"h{h:03}\"}},\"timestamp\":{},\"value\":{}}}\n",
                timestamp(s),
                value(h, s)
            ));
        }
    }
    out
}

pub fn write_input(path: &Path, hosts: usize, seconds: i64) {
    std::fs::write(path, input(hosts, 0, seconds)).unwrap();
}

/// count, sum and max per host and window, from scratch.
pub fn expected(hosts: usize, seconds: i64) -> Expected {
    let mut out = Expected::new();
    for h in 0..hosts {
        let host = format!("h{h:03}");
        let mut windows: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for s in 0..seconds {
            let t = timestamp(s);
            let end = (t.div_euclid(10_000) + 1) * 10_000;
            windows.entry(end).or_default().push(value(h, s));
        }
        for (end, values) in windows {
            let max = values.iter().cloned().fold(f64::MIN, f64::max);
            out.insert(
                ("m:10s_by_host_count".into(), host.clone(), end),
                values.len() as f64,
            );
            out.insert(
                ("m:10s_by_host_sum".into(), host.clone(), end),
                values.iter().sum(),
            );
            out.insert(("m:10s_by_host_max".into(), host.clone(), end), max);
        }
    }
    out
}

/// The pipeline, with `sink` (YAML of one sink named `out`, indented by 4)
/// reading the window.
pub fn pipeline(name: &str, input: &str, sink: &str) -> String {
    format!(
        "name: {name}
sources:
  in:
    type: file
    path: \"{input}\"
transforms:
  w:
    type: window
    inputs: [in]
    window: {{tumbling: 10s}}
    by: [host]
    aggregates: [count, sum, max]
sinks:
  out:
    inputs: [w]
{sink}"
    )
}
