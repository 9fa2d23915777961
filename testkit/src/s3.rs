//! The S3 server the tests use (moto, started by `deploy/s3.sh start
//! 19100`; `TIDEMARK_S3` points elsewhere).

use std::time::Duration;

fn agent(timeout: Option<Duration>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(timeout)
        .build()
        .into()
}

/// The S3 endpoint; fails, saying how to start one, if none answers.
pub fn endpoint() -> String {
    let url = std::env::var("TIDEMARK_S3").unwrap_or_else(|_| "http://127.0.0.1:19100".into());
    assert!(
        agent(Some(Duration::from_secs(2)))
            .get(&format!("{url}/moto-api/"))
            .call()
            .is_ok(),
        "no S3 server at {url}: start one with `deploy/s3.sh start 19100` (./deploy/test.sh does), or set TIDEMARK_S3"
    );
    url
}

/// Creates a bucket of its own for a test (moto takes any credentials).
pub fn bucket(endpoint: &str, name: &str) -> String {
    let bucket = format!("{name}-{}", std::process::id());
    let status = agent(None)
        .put(&format!("{endpoint}/{bucket}"))
        .send_empty()
        .unwrap()
        .status();
    assert!(
        status.is_success(),
        "cannot create bucket {bucket}: {status}"
    );
    bucket
}

/// The keys of `bucket` under `prefix` (the first 1000).
pub fn keys(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let url = format!("{endpoint}/{bucket}?list-type=2&prefix={prefix}");
    let text = agent(None)
        .get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.split("<Key>")
        .skip(1)
        .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned()))
        .collect()
}

/// The environment that points a `tidemark` process at the store.
pub fn env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec()
}
