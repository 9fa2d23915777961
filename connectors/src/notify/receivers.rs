//! What each integration is sent: Alertmanager's webhook payload, a Slack
//! message laid out as Alertmanager's default Slack template lays it out,
//! and a PagerDuty Events API v2 event, each built from a notification.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use tidemark_engine::notify::{Notification, Status};

/// Alertmanager's default subject (`__subject`):
/// `[FIRING:2] GroupLabelValues (other common label values)`.
pub(crate) fn subject(n: &Notification) -> String {
    let (firing, _) = n.counts();
    let status = match n.status {
        Status::Firing => format!("FIRING:{firing}"),
        Status::Resolved => "RESOLVED".into(),
    };
    let group: Vec<&str> = n.group_labels.values().map(String::as_str).collect();
    let mut out = format!("[{status}] {}", group.join(" "));
    if n.common_labels.len() > n.group_labels.len() {
        let rest: Vec<&str> = n
            .common_labels
            .iter()
            .filter(|(k, _)| !n.group_labels.contains_key(*k))
            .map(|(_, v)| v.as_str())
            .collect();
        out.push_str(&format!(" ({})", rest.join(" ")));
    }
    out
}

/// Alertmanager's default link back: `<externalURL>/#/alerts?receiver=...`.
pub(crate) fn link(n: &Notification) -> String {
    let receiver: String = n
        .receiver
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            b => format!("%{b:02X}"),
        })
        .collect();
    format!("{}/#/alerts?receiver={receiver}", n.external_url)
}

/// The webhook payload: the notification itself (Alertmanager's version 4
/// fields), with at most `max_alerts` alerts (0: all).
pub(crate) fn webhook(n: &Notification, max_alerts: u64) -> Value {
    let mut n = n.clone();
    if max_alerts > 0 && n.alerts.len() as u64 > max_alerts {
        n.truncated_alerts = n.alerts.len() as u64 - max_alerts;
        n.alerts.truncate(max_alerts as usize);
    }
    serde_json::to_value(&n).unwrap_or(Value::Null)
}

/// One line per alert: its summary (or description) annotation, else
/// its labels.
pub(crate) fn alert_lines(n: &Notification) -> String {
    n.alerts
        .iter()
        .map(|a| {
            let what = a
                .annotations
                .get("summary")
                .or_else(|| a.annotations.get("description"))
                .cloned()
                .unwrap_or_else(|| tidemark_engine::notify::label_set_string(&a.labels));
            let status = match a.status {
                Status::Firing => "firing",
                Status::Resolved => "resolved",
            };
            format!("• [{status}] {what}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Slack's incoming-webhook message, in the layout of Alertmanager's
/// default Slack template (an attachment with the subject as title
/// linking back, `danger` or `good`), plus one line per alert; `own` are
/// the receiver's rendered `title` and `text`, in place of those.
pub(crate) fn slack(
    n: &Notification,
    channel: Option<&str>,
    username: Option<&str>,
    icon_emoji: Option<&str>,
    icon_url: Option<&str>,
    own: (Option<String>, Option<String>),
) -> Value {
    let title = own.0.unwrap_or_else(|| subject(n));
    let link = link(n);
    let mut message = json!({
        "username": username.unwrap_or("Tidemark"),
        "attachments": [{
            "title": title,
            "title_link": link,
            "text": own.1.unwrap_or_else(|| alert_lines(n)),
            "fallback": format!("{title} | {link}"),
            "color": if n.status == Status::Firing { "danger" } else { "good" },
            "mrkdwn_in": ["fallback", "pretext", "text"],
        }],
    });
    for (key, value) in [
        ("channel", channel),
        ("icon_emoji", icon_emoji),
        ("icon_url", icon_url),
    ] {
        if let Some(v) = value {
            message[key] = json!(v);
        }
    }
    message
}

/// PagerDuty's `dedup_key` for a group: the SHA-256 of its group key in
/// hex, as Alertmanager derives it, so an incident keeps its key for the
/// life of the group (and across a move from Alertmanager).
pub(crate) fn dedup_key(group_key: &str) -> String {
    Sha256::digest(group_key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a PagerDuty event carries besides the notification.
pub(crate) struct PagerdutyFields<'a> {
    pub(crate) routing_key: &'a str,
    pub(crate) client: Option<&'a str>,
    pub(crate) client_url: Option<&'a str>,
    pub(crate) severity: &'a str,
    pub(crate) class: Option<&'a str>,
    pub(crate) component: Option<&'a str>,
    pub(crate) group: Option<&'a str>,
    /// The receiver's rendered `description`, the event's summary.
    pub(crate) description: Option<String>,
}

/// A PagerDuty Events API v2 event: `trigger` while the group fires,
/// `resolve` once it is resolved.
pub(crate) fn pagerduty(n: &Notification, f: &PagerdutyFields<'_>) -> Value {
    let (firing, resolved) = n.counts();
    let action = match n.status {
        Status::Firing => "trigger",
        Status::Resolved => "resolve",
    };
    let mut summary = f.description.clone().unwrap_or_else(|| subject(n));
    if summary.len() > 1024 {
        let mut end = 1021;
        while !summary.is_char_boundary(end) {
            end -= 1;
        }
        summary.truncate(end);
        summary.push_str("...");
    }
    let mut event = json!({
        "routing_key": f.routing_key,
        "event_action": action,
        "dedup_key": dedup_key(&n.group_key),
    });
    if action == "trigger" {
        let mut payload = json!({
            "summary": summary,
            "source": f.client.unwrap_or("Tidemark"),
            "severity": f.severity,
            "custom_details": {
                "firing": alert_lines(n),
                "num_firing": firing.to_string(),
                "num_resolved": resolved.to_string(),
            },
        });
        for (key, value) in [
            ("class", f.class),
            ("component", f.component),
            ("group", f.group),
        ] {
            if let Some(v) = value {
                payload[key] = json!(v);
            }
        }
        event["payload"] = payload;
        event["client"] = json!(f.client.unwrap_or("Tidemark"));
        event["client_url"] = json!(f.client_url.map_or_else(|| link(n), str::to_owned));
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_engine::notify::labels;
    use tidemark_engine::notify::{LabelMap, NotifiedAlert};

    fn notification(status: Status) -> Notification {
        let alert = |host: &str, status| NotifiedAlert {
            status,
            labels: labels(&[("alertname", "Down"), ("host", host), ("env", "prod")]),
            annotations: labels(&[("summary", &format!("{host} is down"))]),
            starts_at: 0,
            ends_at: None,
            generator_url: String::new(),
            fingerprint: String::new(),
        };
        Notification {
            version: "4".into(),
            group_key: r#"{}:{alertname="Down"}"#.into(),
            truncated_alerts: 0,
            status,
            receiver: "on call".into(),
            group_labels: labels(&[("alertname", "Down")]),
            common_labels: labels(&[("alertname", "Down"), ("env", "prod")]),
            common_annotations: LabelMap::new(),
            external_url: "http://tidemark:8080".into(),
            alerts: vec![alert("a", status), alert("b", status)],
            at: 0,
        }
    }

    #[test]
    fn subjects_and_links_follow_alertmanagers_defaults() {
        let n = notification(Status::Firing);
        assert_eq!(subject(&n), "[FIRING:2] Down (prod)");
        assert_eq!(link(&n), "http://tidemark:8080/#/alerts?receiver=on+call");
        assert_eq!(
            subject(&notification(Status::Resolved)),
            "[RESOLVED] Down (prod)"
        );
    }

    #[test]
    fn pagerduty_events_keep_one_dedup_key_per_group() {
        let f = PagerdutyFields {
            routing_key: "k",
            client: None,
            client_url: None,
            severity: "critical",
            class: None,
            component: Some("db"),
            group: None,
            description: None,
        };
        let t = pagerduty(&notification(Status::Firing), &f);
        let r = pagerduty(&notification(Status::Resolved), &f);
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(r["event_action"], "resolve");
        assert_eq!(t["dedup_key"], r["dedup_key"]);
        assert_eq!(t["dedup_key"].as_str().unwrap().len(), 64);
        assert_eq!(t["payload"]["severity"], "critical");
        assert_eq!(t["payload"]["component"], "db");
        assert!(r.get("payload").is_none());
    }

    #[test]
    fn webhooks_truncate_to_max_alerts() {
        let v = webhook(&notification(Status::Firing), 1);
        assert_eq!(v["alerts"].as_array().unwrap().len(), 1);
        assert_eq!(v["truncatedAlerts"], 1);
        assert_eq!(v["version"], "4");
    }
}
