//! `amtool` (Debian's `prometheus-alertmanager`) as the oracle of routing
//! decisions. Included by path in tests of crates below this one.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `amtool`, installed by deploy/test.sh from Debian's
/// `prometheus-alertmanager`.
pub fn amtool() -> PathBuf {
    tool("/usr/bin/amtool")
}

/// A tool of Debian's `prometheus-alertmanager`, or a panic that says how
/// to install it.
pub fn tool(path: &str) -> PathBuf {
    let path = PathBuf::from(path);
    assert!(
        path.exists(),
        "{} is missing: run ./deploy/test.sh, which installs Debian's prometheus-alertmanager",
        path.display()
    );
    path
}

/// The receivers `amtool config routes test` names for an alert with
/// `labels` under the configuration in `config`, in its order.
pub fn routes_test(config: &Path, labels: &[(String, String)]) -> Vec<String> {
    let mut cmd = Command::new(amtool());
    cmd.arg("config")
        .arg("routes")
        .arg("test")
        .arg(format!("--config.file={}", config.display()));
    for (n, v) in labels {
        cmd.arg(format!("{n}={}", go_quoted(v)));
    }
    let out = cmd.output().expect("amtool runs");
    assert!(
        out.status.success(),
        "amtool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(',')
        .map(str::to_owned)
        .collect()
}

fn go_quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}
