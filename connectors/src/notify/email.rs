//! Email over SMTP (the `lettre` crate): STARTTLS when the server offers
//! it (required unless `require_tls: false`), implicit TLS on port 465,
//! authentication, and a plain-text and an HTML body in one message.

use std::time::Duration;

use lettre::message::{Message, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{SmtpTransport, Transport};

use tidemark_engine::notify::{Notification, Status, label_set_string};
use tidemark_engine::time::format_millis;

use super::config::Email;
use super::receivers::{link, subject};
use super::service::Attempt;

/// An SMTP connection's settings, ready to send.
pub(crate) fn transport(
    email: &Email,
    password: Option<String>,
    timeout: Duration,
) -> Result<SmtpTransport, String> {
    let domain = email
        .server_name
        .clone()
        .unwrap_or_else(|| email.host.clone());
    let mut tls =
        TlsParameters::builder(domain).dangerous_accept_invalid_certs(email.insecure_skip_verify);
    if let Some(ca) = &email.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read {ca}: {}", e.kind()))?;
        let cert =
            Certificate::from_pem(&pem).map_err(|_| format!("{ca} holds no PEM certificate"))?;
        tls = tls.add_root_certificate(cert);
    }
    let tls = tls
        .build_rustls()
        .map_err(|e| format!("TLS settings: {e}"))?;
    let mode = if email.port == 465 {
        Tls::Wrapper(tls)
    } else if email.require_tls {
        Tls::Required(tls)
    } else {
        Tls::Opportunistic(tls)
    };
    let mut builder = SmtpTransport::builder_dangerous(&email.host)
        .port(email.port)
        .hello_name(ClientId::Domain(email.hello.clone()))
        .tls(mode)
        .timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&email.username, password) {
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    Ok(builder.build())
}

/// What a receiver's own templates rendered, each in place of the default.
#[derive(Default)]
pub(crate) struct Own {
    pub(crate) subject: Option<String>,
    pub(crate) text: Option<String>,
    pub(crate) html: Option<String>,
}

/// The message for a notification: Alertmanager's default subject, a
/// plain-text and an HTML body listing the alerts with a link back; each
/// replaced by the receiver's own where it has one.
pub(crate) fn message(email: &Email, n: &Notification, own: Own) -> Result<Message, String> {
    let mut builder = Message::builder()
        .from(email.from.clone())
        .subject(own.subject.unwrap_or_else(|| subject(n)));
    for to in &email.to {
        builder = builder.to(to.clone());
    }
    let (text, html) = bodies(n);
    let (text, html) = (own.text.unwrap_or(text), own.html.unwrap_or(html));
    builder
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| format!("cannot build the message: {e}"))
}

pub(crate) fn bodies(n: &Notification) -> (String, String) {
    let mut text = format!("{}\n", subject(n));
    let mut html = format!("<html><body><h2>{}</h2>", escape(&subject(n)));
    for (status, title) in [(Status::Firing, "Firing"), (Status::Resolved, "Resolved")] {
        let alerts: Vec<_> = n.alerts.iter().filter(|a| a.status == status).collect();
        if alerts.is_empty() {
            continue;
        }
        text.push_str(&format!("\n{title}:\n"));
        html.push_str(&format!("<h3>{title}</h3><ul>"));
        for a in alerts {
            let summary = a
                .annotations
                .get("summary")
                .or_else(|| a.annotations.get("description"))
                .cloned()
                .unwrap_or_default();
            let labels = label_set_string(&a.labels);
            let since = format_millis(a.starts_at);
            text.push_str(&format!(
                "- {summary}\n  Labels: {labels}\n  Since: {since}\n"
            ));
            html.push_str(&format!(
                "<li><b>{}</b><br>Labels: <code>{}</code><br>Since: {since}</li>",
                escape(&summary),
                escape(&labels)
            ));
        }
        html.push_str("</ul>");
    }
    let link = link(n);
    text.push_str(&format!("\n{link}\n"));
    html.push_str(&format!(
        "<p><a href=\"{}\">View in Tidemark</a></p></body></html>",
        escape(&link)
    ));
    (text, html)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Sends `message`; a permanent SMTP refusal (5xx: a wrong password, an
/// address the server refuses) is not retried.
pub(crate) fn send(transport: &SmtpTransport, message: &Message) -> Attempt {
    match transport.send(message) {
        Ok(_) => Attempt::Delivered,
        Err(e) if e.is_permanent() => Attempt::Rejected {
            status: e.status().map_or(0, u16::from),
            body: e.to_string(),
        },
        Err(e) => Attempt::Retry {
            reason: if e.is_timeout() {
                "timeout"
            } else if e.is_transient() {
                "server_error"
            } else {
                "unreachable"
            },
            detail: e.to_string(),
            after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_engine::notify::{LabelMap, NotifiedAlert, labels};

    #[test]
    fn default_bodies_list_the_alerts_with_a_link_and_escape_html() {
        let alert = |host: &str, status| NotifiedAlert {
            status,
            labels: labels(&[("alertname", "Down"), ("host", host)]),
            annotations: labels(&[("summary", &format!("<{host}> is down"))]),
            starts_at: 0,
            ends_at: None,
            generator_url: String::new(),
            fingerprint: String::new(),
        };
        let n = Notification {
            version: "4".into(),
            group_key: "{}:{}".into(),
            truncated_alerts: 0,
            status: Status::Firing,
            receiver: "mail".into(),
            group_labels: LabelMap::new(),
            common_labels: labels(&[("alertname", "Down")]),
            common_annotations: LabelMap::new(),
            external_url: "http://tidemark:8080".into(),
            alerts: vec![alert("a", Status::Firing), alert("b", Status::Resolved)],
            at: 0,
        };
        let (text, html) = bodies(&n);
        assert!(text.contains("Firing:\n- <a> is down"), "{text}");
        assert!(text.contains("Resolved:\n- <b> is down"), "{text}");
        assert!(
            text.contains("http://tidemark:8080/#/alerts?receiver=mail"),
            "{text}"
        );
        assert!(html.contains("<b>&lt;a&gt; is down</b>"), "{html}");
        assert!(!html.contains("<a> is down"), "{html}");
    }
}
