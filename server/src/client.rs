//! `tidemark pipeline apply|list|get|delete`: the CLI side of the control API.

use std::time::Duration;

use serde_json::Value;

/// The token the CLI sends, from `TIDEMARK_TOKEN` or `--token-file`.
pub fn token() -> Option<String> {
    std::env::var("TIDEMARK_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
}

fn with_token<B>(request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
    match token() {
        Some(t) => request.header("authorization", format!("Bearer {t}")),
        None => request,
    }
}

/// An HTTP agent; with `TIDEMARK_CA_CERT` (a PEM file) it trusts that CA,
/// for servers with a private or self-signed certificate.
fn agent() -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)));
    if let Some(path) = std::env::var_os("TIDEMARK_CA_CERT") {
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|pem| {
                ureq::tls::Certificate::from_pem(&pem)
                    .map(|c| c.to_owned())
                    .map_err(|e| e.to_string())
            }) {
            Ok(cert) => {
                let roots = ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![cert]));
                config =
                    config.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build());
            }
            Err(e) => eprintln!(
                "ignoring TIDEMARK_CA_CERT {}: {e}",
                std::path::Path::new(&path).display()
            ),
        }
    }
    config.build().into()
}

fn read(mut response: ureq::http::Response<ureq::Body>) -> anyhow::Result<(u16, Value)> {
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string()?;
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, value))
}

/// The answer to a request; a server that cannot be reached is named.
fn send(
    server: &str,
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> anyhow::Result<(u16, Value)> {
    let response = result.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the server at {server}: {e} (is `tidemark serve` running there? --server or TIDEMARK_SERVER names another)"
        )
    })?;
    read(response)
}

/// What to say about an answer that is not a success.
fn refused(status: u16, body: &Value) -> String {
    let detail = body["error"]
        .as_str()
        .map_or_else(|| body.to_string(), str::to_owned);
    match status {
        401 => format!(
            "server answered 401: {detail} (set TIDEMARK_TOKEN to a token the server accepts)"
        ),
        _ => format!("server answered {status}: {detail}"),
    }
}

fn url(server: &str, path: &str) -> String {
    format!("{}/api/v1/pipelines{path}", server.trim_end_matches('/'))
}

/// Applies a pipeline file; prints located errors (with the file's name) on 400.
pub fn apply(server: &str, file: &str) -> anyhow::Result<bool> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))?
    };
    let request =
        with_token(agent().post(&url(server, ""))).header("content-type", "application/yaml");
    let (status, body) = send(server, request.send(&text))?;
    match status {
        200 | 201 => {
            let verb = if status == 201 { "created" } else { "replaced" };
            eprintln!(
                "pipeline {} {verb} ({})",
                body["name"].as_str().unwrap_or("?"),
                body["state"].as_str().unwrap_or("?")
            );
            Ok(true)
        }
        400 if body["errors"].is_array() => {
            let errors = body["errors"].as_array().cloned().unwrap_or_default();
            for e in &errors {
                let component = match &e["component"] {
                    Value::Object(c) => format!(
                        "{} {:?}: ",
                        c["kind"].as_str().unwrap_or(""),
                        c["name"].as_str().unwrap_or("")
                    ),
                    _ => String::new(),
                };
                eprintln!(
                    "{file}:{}:{}: {component}{}",
                    e["line"],
                    e["column"],
                    e["message"].as_str().unwrap_or("")
                );
            }
            eprintln!(
                "{file}: {} error{}",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            Ok(false)
        }
        _ => {
            eprintln!("{}", refused(status, &body));
            Ok(false)
        }
    }
}

/// Lists pipelines as a table on standard output.
pub fn list(server: &str) -> anyhow::Result<bool> {
    let (status, body) = send(server, with_token(agent().get(&url(server, ""))).call())?;
    if status != 200 {
        eprintln!("{}", refused(status, &body));
        return Ok(false);
    }
    let mut out = format!(
        "{:<24} {:<9} {:>12} {:>12} {:>8} {:>8}  WATERMARK\n",
        "NAME", "STATE", "IN", "OUT", "LATE", "REJECTED"
    );
    for p in body["pipelines"].as_array().into_iter().flatten() {
        let watermark = p["watermark"]
            .as_i64()
            .map_or("-".to_owned(), tidemark_engine::time::format_millis);
        out.push_str(&format!(
            "{:<24} {:<9} {:>12} {:>12} {:>8} {:>8}  {watermark}\n",
            p["name"].as_str().unwrap_or(""),
            p["state"].as_str().unwrap_or(""),
            p["samples_in"].as_u64().unwrap_or(0),
            p["samples_out"].as_u64().unwrap_or(0),
            p["late"].as_u64().unwrap_or(0),
            p["rejected"].as_u64().unwrap_or(0),
        ));
    }
    print_out(&out);
    Ok(true)
}

/// Prints one pipeline's status as JSON.
pub fn get(server: &str, name: &str) -> anyhow::Result<bool> {
    let request = with_token(agent().get(&url(server, &format!("/{name}"))));
    let (status, body) = send(server, request.call())?;
    if status != 200 {
        eprintln!("{}", refused(status, &body));
        return Ok(false);
    }
    print_out(&format!("{}\n", serde_json::to_string_pretty(&body)?));
    Ok(true)
}

/// Deletes a pipeline.
pub fn delete(server: &str, name: &str) -> anyhow::Result<bool> {
    let request = with_token(agent().delete(&url(server, &format!("/{name}"))));
    let (status, body) = send(server, request.call())?;
    if status != 204 {
        eprintln!("{}", refused(status, &body));
        return Ok(false);
    }
    eprintln!("pipeline {name} deleted");
    Ok(true)
}

fn print_out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

fn silences_url(server: &str, path: &str) -> String {
    format!("{}/api/v2/{path}", server.trim_end_matches('/'))
}

/// Creates a silence of `matchers` (Alertmanager's syntax, `name=value`,
/// `name=~regex`, ...) from now for `duration`; prints its id.
pub fn silence_add(
    server: &str,
    matchers: &[String],
    duration: &str,
    author: &str,
    comment: &str,
) -> anyhow::Result<bool> {
    use tidemark_operators::notify::matcher::{self, Op};
    let mut list = Vec::new();
    for text in matchers {
        for m in matcher::parse(text).map_err(|e| anyhow::anyhow!("matcher {e}"))? {
            list.push(serde_json::json!({
                "name": m.name,
                "value": m.value,
                "isRegex": matches!(m.op, Op::Regex | Op::NotRegex),
                "isEqual": matches!(m.op, Op::Equal | Op::Regex),
            }));
        }
    }
    if list.is_empty() {
        anyhow::bail!("a silence needs at least one matcher (such as alertname=ApiDown)");
    }
    let length = tidemark_engine::time::parse_duration(duration)
        .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
    let now = tidemark_engine::time::now_millis();
    let body = serde_json::json!({
        "matchers": list,
        "startsAt": tidemark_engine::time::format_millis(now),
        "endsAt": tidemark_engine::time::format_millis(now + tidemark_engine::time::millis(length)),
        "createdBy": author,
        "comment": comment,
    });
    let request = with_token(agent().post(&silences_url(server, "silences")))
        .header("content-type", "application/json");
    let (status, body) = send(server, request.send(body.to_string()))?;
    if status != 200 {
        eprintln!("{}", refused(status, &body));
        return Ok(false);
    }
    print_out(&format!("{}\n", body["silenceID"].as_str().unwrap_or("")));
    Ok(true)
}

/// Lists silences as a table.
pub fn silence_list(server: &str, expired: bool) -> anyhow::Result<bool> {
    let request = with_token(agent().get(&silences_url(server, "silences")));
    let (status, body) = send(server, request.call())?;
    if status != 200 {
        eprintln!("{}", refused(status, &body));
        return Ok(false);
    }
    let mut out = format!(
        "{:<26} {:<8} {:<24} {:<12} {:<40} COMMENT\n",
        "ID", "STATE", "ENDS", "CREATED BY", "MATCHERS"
    );
    for s in body.as_array().into_iter().flatten() {
        let state = s["status"]["state"].as_str().unwrap_or("");
        if state == "expired" && !expired {
            continue;
        }
        let matchers: Vec<String> = s["matchers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let op = match (m["isRegex"].as_bool(), m["isEqual"].as_bool()) {
                    (Some(true), Some(false)) => "!~",
                    (Some(true), _) => "=~",
                    (_, Some(false)) => "!=",
                    _ => "=",
                };
                format!(
                    "{}{op}{:?}",
                    m["name"].as_str().unwrap_or(""),
                    m["value"].as_str().unwrap_or("")
                )
            })
            .collect();
        out.push_str(&format!(
            "{:<26} {:<8} {:<24} {:<12} {:<40} {}\n",
            s["id"].as_str().unwrap_or(""),
            state,
            s["endsAt"].as_str().unwrap_or(""),
            s["createdBy"].as_str().unwrap_or(""),
            matchers.join(","),
            s["comment"].as_str().unwrap_or("")
        ));
    }
    print_out(&out);
    Ok(true)
}

/// Expires a silence now.
pub fn silence_expire(server: &str, id: &str) -> anyhow::Result<bool> {
    let request = with_token(agent().delete(&silences_url(server, &format!("silence/{id}"))));
    let (status, body) = send(server, request.call())?;
    if status != 200 {
        eprintln!("{}", refused(status, &body));
        return Ok(false);
    }
    eprintln!("silence {id} expired");
    Ok(true)
}
