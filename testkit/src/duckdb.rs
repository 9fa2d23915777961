//! Querying the Parquet archive with the real DuckDB (the PyPI package and
//! its httpfs extension, installed into `.deploy-cache/venv` by
//! `./deploy/test.sh`).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.deploy-cache/venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import duckdb, duckdb_ext"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "DuckDB is missing from .deploy-cache/venv: run ./deploy/test.sh, which installs duckdb and duckdb-ext-httpfs"
    );
    python
}

const SCRIPT: &str = r#"
import json, os, sys
import duckdb, duckdb_ext
con = duckdb.connect()
con.execute("SET extension_directory = ?", (os.path.join(list(duckdb_ext.__path__)[0], "extensions"),))
con.execute("SET autoinstall_known_extensions = false")
con.execute("LOAD httpfs")
endpoint = os.environ.get("DUCKDB_S3_ENDPOINT")
if endpoint:
    con.execute(f"CREATE SECRET (TYPE s3, KEY_ID 'test', SECRET 'test', REGION 'us-east-1', ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false)")
cur = con.execute(sys.argv[1])
names = [d[0] for d in cur.description]
for row in cur.fetchall():
    print(json.dumps(dict(zip(names, row)), default=str))
"#;

/// Runs `sql` in a fresh DuckDB; with `s3_endpoint` (`host:port`), S3 paths
/// go to that server. Rows come back as JSON objects.
pub fn query(sql: &str, s3_endpoint: Option<&str>) -> Vec<Value> {
    let mut command = Command::new(python());
    command.args(["-c", SCRIPT, sql]);
    if let Some(e) = s3_endpoint {
        command.env("DUCKDB_S3_ENDPOINT", e);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "DuckDB failed on {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
