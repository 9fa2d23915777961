//! Configuration of the `notify` sink: the receivers of an Alertmanager
//! configuration file, with their `webhook_configs`, `slack_configs` and
//! `pagerduty_configs` in Alertmanager's own format.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use tidemark_engine::component::ConfigError;

use super::template::Text;
use crate::alertmanager::config::{check_url, positive};

/// The `notify` sink: delivers a `route` transform's notifications to the
/// receivers its configuration file names.
///
/// ```yaml
/// type: notify
/// inputs: [page]
/// config: alertmanager.yml
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifySinkConfig {
    /// An Alertmanager configuration file (the same one the `route`
    /// transform reads): its `global` section and `receivers` are used.
    pub config: String,
    /// Time limit of one request. Default `10s`.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// How long a notification that fails in a way a retry can mend is
    /// retried before it is given up (counted, logged). Default `10m`.
    #[serde(default = "default_retry_for")]
    pub retry_for: String,
    /// Notifications whose event time is further than this behind the
    /// wall clock are not sent (counted as `too_old`): a replay or
    /// backfill of old data pages nobody. `off` sends everything.
    /// Default `1h`.
    #[serde(default = "default_max_age")]
    pub max_age: String,
    /// At most this many notifications a minute to each integration of a
    /// receiver (one Slack webhook, one PagerDuty routing key, ...); more
    /// wait their turn, none is dropped. 0 (the default): no limit beyond
    /// what the receiver answers (429 with `Retry-After` is honoured).
    #[serde(default)]
    pub max_per_minute: u32,
    /// The notification log: a file recording what each integration was
    /// sent, so that a replay of the same input (a restart, a rerun) does
    /// not page again. None by default (then a replay notifies again).
    #[serde(default)]
    pub log: Option<String>,
}

fn default_timeout() -> String {
    "10s".into()
}
fn default_retry_for() -> String {
    "10m".into()
}
fn default_max_age() -> String {
    "1h".into()
}

/// The parts of the file this sink reads.
#[derive(Clone, Debug, Deserialize)]
struct FileConfig {
    #[serde(default)]
    global: Global,
    /// Files of named templates (a `*` may stand for any part of a file
    /// name), relative to the configuration file.
    #[serde(default)]
    templates: Vec<String>,
    #[serde(default)]
    receivers: Vec<ReceiverConfig>,
}

/// Alertmanager's `global` defaults this sink uses.
#[derive(Clone, Debug, Default, Deserialize)]
struct Global {
    #[serde(default)]
    slack_api_url: Option<String>,
    #[serde(default)]
    slack_api_url_file: Option<String>,
    #[serde(default)]
    pagerduty_url: Option<String>,
    #[serde(default)]
    smtp_from: Option<String>,
    #[serde(default)]
    smtp_smarthost: Option<String>,
    #[serde(default)]
    smtp_hello: Option<String>,
    #[serde(default)]
    smtp_auth_username: Option<String>,
    #[serde(default)]
    smtp_auth_password: Option<String>,
    #[serde(default)]
    smtp_auth_password_file: Option<String>,
    #[serde(default)]
    smtp_require_tls: Option<bool>,
    #[serde(flatten)]
    _rest: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiverConfig {
    name: String,
    #[serde(default)]
    webhook_configs: Vec<WebhookConfig>,
    #[serde(default)]
    slack_configs: Vec<SlackConfig>,
    #[serde(default)]
    pagerduty_configs: Vec<PagerdutyConfig>,
    #[serde(default)]
    email_configs: Vec<EmailConfig>,
    #[serde(default)]
    opsgenie_configs: Vec<serde_json::Value>,
    #[serde(default)]
    victorops_configs: Vec<serde_json::Value>,
    #[serde(default)]
    pushover_configs: Vec<serde_json::Value>,
    #[serde(default)]
    wechat_configs: Vec<serde_json::Value>,
    #[serde(default)]
    sns_configs: Vec<serde_json::Value>,
    #[serde(default)]
    telegram_configs: Vec<serde_json::Value>,
    #[serde(default)]
    discord_configs: Vec<serde_json::Value>,
    #[serde(default)]
    webex_configs: Vec<serde_json::Value>,
    #[serde(default)]
    msteams_configs: Vec<serde_json::Value>,
}

/// Alertmanager's `webhook_config`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookConfig {
    #[serde(default = "yes")]
    send_resolved: bool,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_file: Option<String>,
    #[serde(default)]
    max_alerts: u64,
}

/// Alertmanager's `slack_config` (the fields Tidemark sends).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlackConfig {
    #[serde(default)]
    send_resolved: bool,
    #[serde(default)]
    api_url: Option<String>,
    #[serde(default)]
    api_url_file: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    icon_emoji: Option<String>,
    #[serde(default)]
    icon_url: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

/// Alertmanager's `pagerduty_config` (Events API v2).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PagerdutyConfig {
    #[serde(default = "yes")]
    send_resolved: bool,
    #[serde(default)]
    routing_key: Option<String>,
    #[serde(default)]
    routing_key_file: Option<String>,
    /// Tidemark's: the routing key from this environment variable.
    #[serde(default)]
    routing_key_env: Option<String>,
    #[serde(default)]
    service_key: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    client_url: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    class: Option<String>,
    #[serde(default)]
    component: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// Alertmanager's `email_config` (the fields Tidemark sends with; of its
/// headers, `Subject`; `text` and `html` bodies as templates, each part
/// the default layout when not given).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailConfig {
    #[serde(default)]
    send_resolved: bool,
    to: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    smarthost: Option<String>,
    #[serde(default)]
    hello: Option<String>,
    #[serde(default)]
    auth_username: Option<String>,
    #[serde(default)]
    auth_password: Option<String>,
    #[serde(default)]
    auth_password_file: Option<String>,
    #[serde(default)]
    require_tls: Option<bool>,
    #[serde(default)]
    tls_config: TlsConfig,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    html: Option<String>,
}

/// Alertmanager's `tls_config` (the fields an SMTP connection uses).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsConfig {
    #[serde(default)]
    ca_file: Option<String>,
    #[serde(default)]
    server_name: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

fn yes() -> bool {
    true
}

/// Where a secret comes from. The value is read when the sink starts, so
/// that a validation error never shows it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Secret {
    /// Written in the configuration file (Alertmanager allows it).
    Inline(String),
    /// A file's content, trimmed.
    File(String),
    /// An environment variable's value.
    Env(String),
}

impl Secret {
    /// The value; errors name where it should have been, never the value.
    pub(crate) fn read(&self) -> Result<String, String> {
        match self {
            Secret::Inline(v) => Ok(v.clone()),
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("cannot read {path}: {}", e.kind())),
            Secret::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
            }
        }
    }
}

/// One integration of a receiver.
#[derive(Clone, Debug)]
pub(crate) enum Integration {
    Webhook {
        url: Secret,
        max_alerts: u64,
    },
    Slack {
        url: Secret,
        channel: Option<String>,
        username: Option<String>,
        icon_emoji: Option<String>,
        icon_url: Option<String>,
        title: Option<Text>,
        text: Option<Text>,
    },
    Pagerduty {
        routing_key: Secret,
        url: String,
        client: Option<String>,
        client_url: Option<String>,
        severity: String,
        class: Option<String>,
        component: Option<String>,
        group: Option<String>,
        description: Option<Text>,
    },
    Email(Box<Email>),
}

/// An email integration, checked.
#[derive(Clone, Debug)]
pub(crate) struct Email {
    pub(crate) to: Vec<lettre::message::Mailbox>,
    pub(crate) from: lettre::message::Mailbox,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) hello: String,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Secret>,
    pub(crate) require_tls: bool,
    pub(crate) ca_file: Option<String>,
    pub(crate) server_name: Option<String>,
    pub(crate) insecure_skip_verify: bool,
    pub(crate) subject: Option<Text>,
    /// The plain-text body's template.
    pub(crate) text: Option<Text>,
    /// The HTML body's template.
    pub(crate) html: Option<Text>,
}

impl Integration {
    /// Its kind, as named in metrics and logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Integration::Webhook { .. } => "webhook",
            Integration::Slack { .. } => "slack",
            Integration::Pagerduty { .. } => "pagerduty",
            Integration::Email(_) => "email",
        }
    }
}

/// A receiver's integration and whether it is told of resolutions.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) receiver: String,
    pub(crate) index: usize,
    pub(crate) send_resolved: bool,
    pub(crate) integration: Integration,
}

impl Target {
    /// `receiver/slack[0]`: how logs and errors name it.
    pub(crate) fn name(&self) -> String {
        format!(
            "{}/{}[{}]",
            self.receiver,
            self.integration.kind(),
            self.index
        )
    }
}

/// A validated `notify` sink.
#[derive(Clone, Debug)]
pub struct NotifySink {
    pub(crate) file: String,
    pub(crate) targets: Vec<Target>,
    /// Receivers with no integration Tidemark sends to (counted).
    pub(crate) receivers: Vec<String>,
    pub(crate) timeout: Duration,
    pub(crate) retry_for: Duration,
    pub(crate) max_age: Option<Duration>,
    pub(crate) max_per_minute: u32,
    pub(crate) log: Option<String>,
}

const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

impl NotifySinkConfig {
    /// Reads the configuration file and checks its receivers.
    pub fn validate(&self) -> Result<NotifySink, Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.log.as_deref().is_some_and(str::is_empty) {
            errors.push(ConfigError::field(
                "log",
                "log is empty (leave it out for none)",
            ));
        }
        let timeout = positive("timeout", &self.timeout, false, &mut errors);
        let retry_for = positive("retry_for", &self.retry_for, false, &mut errors);
        let max_age = positive("max_age", &self.max_age, true, &mut errors);
        let text = std::fs::read_to_string(&self.config).map_err(|e| {
            vec![ConfigError::field(
                "config",
                format!("cannot read {}: {}", self.config, e.kind()),
            )]
        })?;
        let root = tidemark_engine::yaml::parse(&text).map_err(|e| {
            vec![ConfigError::field(
                "config",
                format!(
                    "{}:{}:{}: {}",
                    self.config, e.pos.line, e.pos.column, e.message
                ),
            )]
        })?;
        let file: FileConfig = serde_json::from_value(root.to_json()).map_err(|e| {
            vec![ConfigError::field(
                "config",
                format!("{}: {}", self.config, without_content(&e.to_string())),
            )]
        })?;
        let defs = definitions(&self.config, &file.templates).map_err(|e| {
            vec![ConfigError::field(
                "config",
                format!("{}: templates: {e}", self.config),
            )]
        })?;
        let mut targets = Vec::new();
        for r in &file.receivers {
            receiver_targets(
                r,
                &file.global,
                &defs,
                &self.config,
                &mut targets,
                &mut errors,
            );
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let fallback = Duration::from_secs(60);
        Ok(NotifySink {
            file: self.config.clone(),
            targets,
            receivers: file.receivers.iter().map(|r| r.name.clone()).collect(),
            timeout: timeout.unwrap_or(fallback),
            retry_for: retry_for.unwrap_or(fallback),
            max_age,
            max_per_minute: self.max_per_minute,
            log: self.log.clone(),
        })
    }
}

/// serde's message without the value it quotes (it may be a secret).
fn without_content(message: &str) -> String {
    match message.find(": invalid") {
        Some(_) => message.split(':').next().unwrap_or(message).to_owned(),
        None => message.to_owned(),
    }
}

/// The named templates of the `templates:` files, in the order given
/// (each pattern's files sorted by name).
fn definitions(config: &str, patterns: &[String]) -> Result<Arc<str>, String> {
    let base = std::path::Path::new(config)
        .parent()
        .unwrap_or(std::path::Path::new("."));
    let mut out = String::new();
    for pattern in patterns {
        let path = base.join(pattern);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let files: Vec<std::path::PathBuf> = match name.split_once('*') {
            None => vec![path.clone()],
            Some((prefix, suffix)) => {
                let dir = path.parent().unwrap_or(base);
                let mut found: Vec<_> = std::fs::read_dir(dir)
                    .map_err(|e| format!("cannot list {}: {}", dir.display(), e.kind()))?
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                            n.len() >= prefix.len() + suffix.len()
                                && n.starts_with(prefix)
                                && n.ends_with(suffix)
                        })
                    })
                    .collect();
                found.sort();
                found
            }
        };
        for f in files {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| format!("cannot read {}: {}", f.display(), e.kind()))?;
            out.push_str(&text);
        }
    }
    Ok(Arc::from(out))
}

fn receiver_targets(
    r: &ReceiverConfig,
    global: &Global,
    defs: &Arc<str>,
    file: &str,
    out: &mut Vec<Target>,
    errors: &mut Vec<ConfigError>,
) {
    let mut error = |what: String| {
        errors.push(ConfigError::field(
            "config",
            format!("{file}: receiver {:?}: {what}", r.name),
        ))
    };
    for (kind, list) in [
        ("opsgenie_configs", r.opsgenie_configs.len()),
        ("victorops_configs", r.victorops_configs.len()),
        ("pushover_configs", r.pushover_configs.len()),
        ("wechat_configs", r.wechat_configs.len()),
        ("sns_configs", r.sns_configs.len()),
        ("telegram_configs", r.telegram_configs.len()),
        ("discord_configs", r.discord_configs.len()),
        ("webex_configs", r.webex_configs.len()),
        ("msteams_configs", r.msteams_configs.len()),
    ] {
        if list > 0 {
            error(format!(
                "{kind} are not supported yet (webhook, slack, pagerduty and email configs are); \
                 send these through Alertmanager with the alertmanager sink"
            ));
        }
    }
    // A field's template, checked now.
    let text = |at: String, t: &Option<String>| -> Result<Option<Text>, String> {
        t.as_ref()
            .map(|t| {
                Text::new(t, defs)
                    .map_err(|why| format!("{at}: the template does not parse: {why}"))
            })
            .transpose()
    };
    let target = |index, send_resolved, integration| Target {
        receiver: r.name.clone(),
        index,
        send_resolved,
        integration,
    };
    for (i, w) in r.webhook_configs.iter().enumerate() {
        match secret_url(&w.url, &w.url_file, None, None) {
            Ok(url) => out.push(target(
                i,
                w.send_resolved,
                Integration::Webhook {
                    url,
                    max_alerts: w.max_alerts,
                },
            )),
            Err(e) => error(format!("webhook_configs[{i}]: {e}")),
        }
    }
    for (i, s) in r.slack_configs.iter().enumerate() {
        let title = text(format!("slack_configs[{i}].title"), &s.title).unwrap_or_else(|e| {
            error(e);
            None
        });
        let body = text(format!("slack_configs[{i}].text"), &s.text).unwrap_or_else(|e| {
            error(e);
            None
        });
        match secret_url(
            &s.api_url,
            &s.api_url_file,
            global.slack_api_url.as_ref(),
            global.slack_api_url_file.as_ref(),
        ) {
            Ok(url) => out.push(target(
                i,
                s.send_resolved,
                Integration::Slack {
                    url,
                    channel: s.channel.clone(),
                    username: s.username.clone(),
                    icon_emoji: s.icon_emoji.clone(),
                    icon_url: s.icon_url.clone(),
                    title,
                    text: body,
                },
            )),
            Err(e) => error(format!("slack_configs[{i}]: {e}")),
        }
    }
    for (i, e) in r.email_configs.iter().enumerate() {
        let mut subject = None;
        for (header, value) in &e.headers {
            if header.eq_ignore_ascii_case("subject") {
                subject = text(
                    format!("email_configs[{i}].headers.Subject"),
                    &Some(value.clone()),
                )
                .unwrap_or_else(|e| {
                    error(e);
                    None
                });
            } else {
                error(format!(
                    "email_configs[{i}].headers: only Subject is supported, not {header:?}"
                ));
            }
        }
        let mut body = |field: &str, value: &Option<String>| {
            text(format!("email_configs[{i}].{field}"), value).unwrap_or_else(|e| {
                error(e);
                None
            })
        };
        let (plain, html) = (body("text", &e.text), body("html", &e.html));
        match email(e, global) {
            Ok(mut email) => out.push(target(i, e.send_resolved, {
                email.subject = subject;
                email.text = plain;
                email.html = html;
                Integration::Email(Box::new(email))
            })),
            Err(why) => error(format!("email_configs[{i}]: {why}")),
        }
    }
    for (i, p) in r.pagerduty_configs.iter().enumerate() {
        if p.service_key.is_some() {
            error(format!(
                "pagerduty_configs[{i}]: service_key (Events API v1) is not supported; use routing_key_file or routing_key_env (Events API v2)"
            ));
            continue;
        }
        let key = match (&p.routing_key, &p.routing_key_file, &p.routing_key_env) {
            (Some(k), None, None) => Secret::Inline(k.clone()),
            (None, Some(f), None) => Secret::File(f.clone()),
            (None, None, Some(e)) => Secret::Env(e.clone()),
            _ => {
                error(format!(
                    "pagerduty_configs[{i}]: exactly one of routing_key, routing_key_file and routing_key_env is needed"
                ));
                continue;
            }
        };
        let url = p
            .url
            .clone()
            .or_else(|| global.pagerduty_url.clone())
            .unwrap_or_else(|| PAGERDUTY_URL.into());
        let mut url_errors = Vec::new();
        check_url("url", &url, &mut url_errors);
        if !url_errors.is_empty() {
            error(format!("pagerduty_configs[{i}]: url is not an http(s) URL"));
            continue;
        }
        let description = text(
            format!("pagerduty_configs[{i}].description"),
            &p.description,
        )
        .unwrap_or_else(|e| {
            error(e);
            None
        });
        let severity = p.severity.clone().unwrap_or_else(|| "error".into());
        if !["critical", "error", "warning", "info"].contains(&severity.as_str()) {
            error(format!(
                "pagerduty_configs[{i}]: severity must be critical, error, warning or info"
            ));
            continue;
        }
        out.push(target(
            i,
            p.send_resolved,
            Integration::Pagerduty {
                routing_key: key,
                url,
                client: p.client.clone(),
                client_url: p.client_url.clone(),
                severity,
                class: p.class.clone(),
                component: p.component.clone(),
                group: p.group.clone(),
                description,
            },
        ));
    }
}

/// Checks an email integration, with the global SMTP defaults.
fn email(e: &EmailConfig, global: &Global) -> Result<Email, String> {
    use lettre::message::Mailbox;
    let parse = |what: &str, text: &str| -> Result<Mailbox, String> {
        text.trim()
            .parse::<Mailbox>()
            .map_err(|_| format!("{what} {text:?} is not an email address"))
    };
    let to =
        e.to.split(',')
            .filter(|t| !t.trim().is_empty())
            .map(|t| parse("to", t))
            .collect::<Result<Vec<_>, _>>()?;
    if to.is_empty() {
        return Err("to names no address".into());
    }
    let from = e
        .from
        .as_ref()
        .or(global.smtp_from.as_ref())
        .ok_or("no from (nor global smtp_from)")?;
    let from = parse("from", from)?;
    let smarthost = e
        .smarthost
        .as_ref()
        .or(global.smtp_smarthost.as_ref())
        .ok_or("no smarthost (nor global smtp_smarthost)")?;
    let (host, port) = smarthost
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_matches(['[', ']']).to_owned(),
                p.parse::<u16>().ok()?,
            ))
        })
        .filter(|(h, _)| !h.is_empty())
        .ok_or("smarthost must be host:port")?;
    let password = match (
        e.auth_password
            .as_ref()
            .or(global.smtp_auth_password.as_ref()),
        e.auth_password_file
            .as_ref()
            .or(global.smtp_auth_password_file.as_ref()),
    ) {
        (Some(_), Some(_)) => {
            return Err("at most one of auth_password and auth_password_file may be set".into());
        }
        (Some(p), None) => Some(Secret::Inline(p.clone())),
        (None, Some(f)) => Some(Secret::File(f.clone())),
        (None, None) => None,
    };
    let username = e
        .auth_username
        .clone()
        .or_else(|| global.smtp_auth_username.clone());
    if password.is_some() != username.is_some() {
        return Err("auth_username and a password go together".into());
    }
    Ok(Email {
        to,
        from,
        host,
        port,
        hello: e
            .hello
            .clone()
            .or_else(|| global.smtp_hello.clone())
            .unwrap_or_else(|| "localhost".into()),
        username,
        password,
        require_tls: e.require_tls.or(global.smtp_require_tls).unwrap_or(true),
        ca_file: e.tls_config.ca_file.clone(),
        server_name: e.tls_config.server_name.clone(),
        insecure_skip_verify: e.tls_config.insecure_skip_verify,
        subject: None,
        text: None,
        html: None,
    })
}

/// A URL given inline or in a file, with a global fallback.
fn secret_url(
    url: &Option<String>,
    file: &Option<String>,
    global: Option<&String>,
    global_file: Option<&String>,
) -> Result<Secret, String> {
    let secret = match (url, file) {
        (Some(_), Some(_)) => return Err("at most one of the URL and its _file may be set".into()),
        (Some(u), None) => Secret::Inline(u.clone()),
        (None, Some(f)) => Secret::File(f.clone()),
        (None, None) => match (global, global_file) {
            (Some(u), _) => Secret::Inline(u.clone()),
            (None, Some(f)) => Secret::File(f.clone()),
            (None, None) => return Err("no URL (nor a global default)".into()),
        },
    };
    if let Secret::Inline(u) = &secret {
        let mut errors = Vec::new();
        check_url("url", u, &mut errors);
        if !errors.is_empty() {
            return Err("the URL is not an http:// or https:// URL".into());
        }
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(yaml: &str) -> Result<NotifySink, Vec<ConfigError>> {
        let dir =
            std::env::temp_dir().join(format!("tidemark-notify-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{:x}.yml", tidemark_engine::time::now_millis()));
        std::fs::write(&file, yaml).unwrap();
        let c: NotifySinkConfig = serde_json::from_value(serde_json::json!({
            "config": file.display().to_string(),
            "max_per_minute": 30
        }))
        .unwrap();
        c.validate()
    }

    #[test]
    fn documented_receivers_parse_and_secrets_stay_out_of_errors() {
        let sink = validate(
            r#"
global: {slack_api_url: 'https://hooks.slack.com/services/T/B/secret', resolve_timeout: 5m}
route: {receiver: oncall}
receivers:
  - name: oncall
    webhook_configs: [{url: 'http://bridge:9000/hook', max_alerts: 10}]
    slack_configs: [{channel: '#ops', send_resolved: true}]
    pagerduty_configs: [{routing_key_env: PD_KEY, severity: critical}]
    email_configs: [{to: 'a@example.com', from: 't@example.com', smarthost: 'smtp:587'}]
"#,
        )
        .unwrap();
        let kinds: Vec<&str> = sink.targets.iter().map(|t| t.integration.kind()).collect();
        assert_eq!(kinds, ["webhook", "slack", "email", "pagerduty"]);
        assert!(sink.targets[1].send_resolved);
        assert!(!sink.targets[2].send_resolved);
        assert_eq!(sink.max_per_minute, 30);
        let errors = validate(
            r#"
route: {receiver: r}
receivers:
  - name: r
    slack_configs: [{api_url: 'not-a-url-but-a-secret'}]
    pagerduty_configs: [{service_key: 'v1-secret'}]
    email_configs: [{to: 'nobody'}]
"#,
        )
        .unwrap_err();
        let text: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text.iter().all(|t| !t.contains("secret")), "{text:?}");
    }
}
