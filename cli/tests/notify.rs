//! Notifications end to end: an `alert` transform's alerts sent to a real
//! Alertmanager (Debian's `prometheus-alertmanager`) by the
//! `alertmanager` sink, and Tidemark's own notifier (`route` transform,
//! `notify` sink) paging local stand-ins for a webhook receiver, Slack and
//! PagerDuty that check each request against the service's documented
//! payload and answer with its real status codes and bodies.

use tidemark_testkit as common;

use std::path::Path;
use std::time::Duration;

use common::alertmanager::Alertmanager;
use common::http::{Received, Recorder};
use common::{run_text, temp_dir};

const STEP: i64 = 15_000;

/// `up` of two instances every 15 s for 20 minutes ending now: up, down
/// from minute 5, and (with `recover`) up again from minute 15.
fn write_input(path: &Path, recover: bool) -> i64 {
    let now = tidemark_engine::time::now_millis();
    let t0 = (now - 20 * 60_000) / STEP * STEP;
    let mut text = String::new();
    for i in 0..80 {
        let t = t0 + i * STEP;
        let minute = i * STEP / 60_000;
        let up = if minute < 5 || (recover && minute >= 15) {
            1
        } else {
            0
        };
        for instance in ["a", "b"] {
            text.push_str(&format!(
                "{{\"name\":\"up\",\"labels\":{{\"job\":\"api\",\"instance\":\"{instance}\"}},\"timestamp\":{t},\"value\":{up}}}\n"
            ));
        }
    }
    std::fs::write(path, text).unwrap();
    t0
}

const RULES: &str = r#"
groups:
  - name: api
    rules:
      - alert: ApiDown
        expr: up == 0
        for: 1m
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.job }} {{ $labels.instance }} is down"
"#;

fn pipeline(dir: &Path, input: &Path, transforms: &str, sinks: &str) -> String {
    let rules = dir.join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    format!(
        "name: notify\nsources:\n  in: {{type: file, path: {}}}\ntransforms:\n  rules: {{type: alert, inputs: [in], rules: {}, interval: 15s}}\n{transforms}sinks:\n{sinks}",
        input.display(),
        rules.display()
    )
}

/// Runs the whole history (recovery included) through an `alert`
/// transform, a `route` transform and a `notify` sink, both reading the
/// Alertmanager configuration `am_yml`; `settings` are the sink's extra
/// fields. The input is written once per directory, so that runs in one
/// directory replay the same samples.
fn run_notifier(
    dir: &Path,
    am_yml: &str,
    settings: &str,
    workers: usize,
) -> tidemark_pipelines::run::RunReport {
    let file = dir.join("alertmanager.yml");
    std::fs::write(&file, am_yml).unwrap();
    let input = dir.join("in.jsonl");
    if !input.exists() {
        write_input(&input, true);
    }
    let transforms = format!(
        "  page: {{type: route, inputs: [rules.alerts], config: {}, external_url: 'http://tidemark.test'}}\n",
        file.display()
    );
    let sinks = format!(
        "  out: {{type: notify, inputs: [page], config: {}, {settings}}}\n",
        file.display()
    );
    run_text(&pipeline(dir, &input, &transforms, &sinks), workers)
}

fn label<'a>(alert: &'a serde_json::Value, name: &str) -> &'a str {
    alert["labels"][name].as_str().unwrap_or("")
}

#[test]
fn a_real_alertmanager_gets_alerts_and_their_resolution() {
    let dir = temp_dir("notify-am");
    let hook = Recorder::start(|_, _| (200, vec![], String::new()));
    let am = Alertmanager::start(
        &dir.join("am"),
        &format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs: [{{url: '{}/am', send_resolved: true}}]\n",
            hook.url
        ),
    );
    let input = dir.join("in.jsonl");
    write_input(&input, false);
    let sinks = format!(
        "  am: {{type: alertmanager, inputs: [rules.alerts], url: '{}'}}\n",
        am.url
    );
    let report = run_text(&pipeline(&dir, &input, "", &sinks), 2);
    assert_eq!(report.errors, 0);

    // Alertmanager holds both instances, firing, with labels and
    // annotations as the rule gave them.
    let mut alerts = am.alerts();
    alerts.sort_by_key(|a| label(a, "instance").to_owned());
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    for (a, instance) in alerts.iter().zip(["a", "b"]) {
        assert_eq!(label(a, "alertname"), "ApiDown");
        assert_eq!(label(a, "severity"), "page");
        assert_eq!(label(a, "instance"), instance);
        assert_eq!(
            a["annotations"]["summary"],
            format!("api {instance} is down")
        );
        assert_eq!(a["status"]["state"], "active");
        assert!(a["generatorURL"].as_str().unwrap().contains("up"), "{a}");
    }
    // ... and its own webhook receiver delivers them. The two workers post
    // their alerts separately; when the second comes after Alertmanager's
    // group_wait the group is notified twice (one alert, then both), so
    // wait for the notification that holds both.
    let got = hook.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].json["status"], "firing", "{:#?}", got[0].json);
    common::server::wait_until("a notification of both firing alerts", || {
        hook.received().iter().any(|r| {
            r.json["status"] == "firing" && r.json["alerts"].as_array().map(Vec::len) == Some(2)
        })
    });

    // The whole history, recovery included: the alerts resolve.
    write_input(&input, true);
    let report = run_text(&pipeline(&dir, &input, "", &sinks), 1);
    assert_eq!(report.errors, 0);
    let resolved = (0..200).find_map(|_| {
        let got = hook.received();
        if got.iter().any(|r| r.json["status"] == "resolved") {
            return Some(got);
        }
        std::thread::sleep(Duration::from_millis(100));
        None
    });
    let got = resolved.expect("Alertmanager's webhook never told of the resolution");
    let last = got
        .iter()
        .rfind(|r| r.json["status"] == "resolved")
        .unwrap();
    assert!(
        last.json["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status"] == "resolved")
    );
    assert!(am.alerts().iter().all(|a| a["status"]["state"] != "active"));
}

/// With a notification log, a replay of the same input (a restart that
/// reads Kafka again, a rerun of a file) pages nobody twice; without one,
/// it pages again.
#[test]
fn a_notification_log_makes_a_replay_page_nobody_twice() {
    let dir = temp_dir("notify-log");
    let hook = Recorder::start(|_, _| (200, vec![], String::new()));
    let am_yml = format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\nreceivers:\n  - name: hook\n    webhook_configs: [{{url: '{}/hook'}}]\n",
        hook.url
    );
    let settings = format!("log: {}", dir.join("nflog.jsonl").display());
    let report = run_notifier(&dir, &am_yml, &settings, 1);
    assert_eq!(report.errors, 0);
    assert_eq!(hook.received().len(), 2, "firing, then resolved");
    run_notifier(&dir, &am_yml, &settings, 2);
    assert_eq!(hook.received().len(), 2, "the replay sent again");
    run_notifier(&dir, &am_yml, "retry_for: 1m", 1);
    assert_eq!(
        hook.received().len(),
        4,
        "without a log, a replay pages again"
    );
}

/// PagerDuty's answers (Events API v2 documentation).
const PD_OK: &str = r#"{"status":"success","message":"Event processed","dedup_key":"x"}"#;
const PD_INVALID: &str = r#"{"status":"invalid event","message":"Event object is invalid","errors":["Length of 'routing_key' is incorrect (should be 32 characters)"]}"#;

fn check_pagerduty(r: &Received, key: &str) {
    let e = &r.json;
    assert_eq!(r.path, "/v2/enqueue");
    assert_eq!(e["routing_key"], key);
    let action = e["event_action"].as_str().unwrap();
    assert!(["trigger", "resolve"].contains(&action), "{e}");
    assert_eq!(e["dedup_key"].as_str().unwrap().len(), 64);
    if action == "trigger" {
        let p = &e["payload"];
        assert!(
            p["summary"]
                .as_str()
                .is_some_and(|s| !s.is_empty() && s.len() <= 1024)
        );
        assert!(p["source"].as_str().is_some_and(|s| !s.is_empty()));
        assert_eq!(p["severity"], "critical");
    }
}

#[test]
fn tidemarks_notifier_pages_webhook_slack_and_pagerduty() {
    let dir = temp_dir("notify-own");
    // The webhook is rate limited once, then takes everything.
    let hook = Recorder::start(|n, _| {
        if n == 0 {
            (
                429,
                vec![("Retry-After".into(), "1".into())],
                "slow down".into(),
            )
        } else {
            (200, vec![], String::new())
        }
    });
    let slack = Recorder::start(|_, _| (200, vec![], "ok".into()));
    let pd = Recorder::start(|_, _| (202, vec![], PD_OK.into()));
    let pd_bad = Recorder::start(|_, _| (400, vec![], PD_INVALID.into()));
    let key = "0123456789abcdef0123456789abcdef";
    let key_file = dir.join("pd.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    // A second Slack integration with its own title and text, from a
    // named template in a `templates:` file.
    std::fs::write(
        dir.join("custom.tmpl"),
        r#"{{ define "custom.title" }}{{ .Status | toUpper }}: {{ .CommonLabels.alertname }}{{ end }}"#,
    )
    .unwrap();
    let am_yml = format!(
        r#"
global:
  slack_api_url: '{slack}/services/T0/B0/secret'
templates: ['*.tmpl']
route:
  receiver: nobody
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  routes:
    - matchers: [severity="page"]
      receiver: oncall
receivers:
  - name: nobody
  - name: oncall
    webhook_configs: [{{url: '{hook}/hook'}}]
    slack_configs:
      - channel: '#ops'
      - channel: '#custom'
        title: '{{{{ template "custom.title" . }}}}'
        text: '{{{{ range .Alerts }}}}{{{{ .Annotations.summary }}}};{{{{ end }}}}'
    pagerduty_configs:
      - routing_key_file: '{key_file}'
        url: '{pd}/v2/enqueue'
        severity: critical
      - routing_key: short
        url: '{pd_bad}/v2/enqueue'
        severity: critical
"#,
        slack = slack.url,
        hook = hook.url,
        pd = pd.url,
        pd_bad = pd_bad.url,
        key_file = key_file.display()
    );
    let report = run_notifier(&dir, &am_yml, "retry_for: 10m", 2);

    // Webhook: Alertmanager's payload, firing (asked again after the 429)
    // then resolved.
    let hooks = hook.received();
    let statuses: Vec<&str> = hooks
        .iter()
        .map(|r| r.json["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["firing", "firing", "resolved"], "{hooks:#?}");
    let firing = &hooks[1].json;
    assert_eq!(firing["version"], "4");
    assert_eq!(firing["receiver"], "oncall");
    assert_eq!(
        firing["groupKey"],
        r#"{}/{severity="page"}:{alertname="ApiDown"}"#
    );
    assert_eq!(firing["groupLabels"]["alertname"], "ApiDown");
    assert_eq!(firing["commonLabels"]["severity"], "page");
    assert_eq!(firing["externalURL"], "http://tidemark.test");
    let alerts = firing["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    for a in alerts {
        assert_eq!(a["status"], "firing");
        assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
        assert!(tidemark_engine::time::parse_rfc3339(a["startsAt"].as_str().unwrap()).is_ok());
        assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);
    }
    // Slack: one message each (no resolutions by default), in
    // Alertmanager's default layout, or with the receiver's own title and
    // text.
    let mut slacks = slack.received();
    assert_eq!(slacks.len(), 2, "{slacks:#?}");
    slacks.sort_by_key(|s| s.json["channel"].as_str().unwrap().to_owned());
    let own = &slacks[0].json["attachments"][0];
    assert_eq!(slacks[0].json["channel"], "#custom");
    assert_eq!(own["title"], "FIRING: ApiDown");
    let text = own["text"].as_str().unwrap();
    assert!(
        text.contains("api a is down;") && text.contains("api b is down;"),
        "{text}"
    );
    let slacks = &slacks[1..];
    assert_eq!(slacks[0].path, "/services/T0/B0/secret");
    let att = &slacks[0].json["attachments"][0];
    assert_eq!(slacks[0].json["channel"], "#ops");
    assert_eq!(att["title"], "[FIRING:2] ApiDown (api page)");
    assert_eq!(att["color"], "danger");
    assert_eq!(
        att["title_link"],
        "http://tidemark.test/#/alerts?receiver=oncall"
    );
    assert!(att["text"].as_str().unwrap().contains("api a is down"));
    // PagerDuty: trigger then resolve, one dedup key for the group.
    let events = pd.received();
    assert_eq!(events.len(), 2, "{events:#?}");
    for e in &events {
        check_pagerduty(e, key);
    }
    assert_eq!(events[0].json["event_action"], "trigger");
    assert_eq!(events[1].json["event_action"], "resolve");
    assert_eq!(events[0].json["dedup_key"], events[1].json["dedup_key"]);
    // A rejected event (400) is not retried, and counts as an error.
    assert_eq!(pd_bad.received().len(), 2);
    assert_eq!(report.errors, 2);
}

#[test]
fn email_goes_through_a_real_smtp_server_with_starttls_and_auth() {
    let dir = temp_dir("notify-email");
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, keyfile) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, key.cert.pem()).unwrap();
    std::fs::write(&keyfile, key.signing_key.serialize_pem()).unwrap();
    let smtp = common::smtp::SmtpServer::start(&dir, &cert, &keyfile, "pager", "s3cret");
    let password_file = dir.join("smtp.pass");
    std::fs::write(&password_file, "s3cret\n").unwrap();
    let am_yml = format!(
        r#"
global:
  smtp_from: 'Tidemark <tidemark@example.com>'
  smtp_smarthost: '127.0.0.1:{port}'
  smtp_auth_username: pager
route:
  receiver: mail
  group_by: [alertname]
receivers:
  - name: mail
    email_configs:
      - to: 'oncall@example.com, lead@example.com'
        send_resolved: true
        auth_password_file: '{password}'
        tls_config: {{ca_file: '{cert}', server_name: localhost}}
        text: 'Own text: {{{{ .Status | toUpper }}}} for {{{{ .CommonLabels.alertname }}}}'
        html: '<p>{{{{ .CommonLabels.alertname }}}} is {{{{ .Status }}}}</p>'

      - to: 'oncall@example.com'
        auth_password: wrong
        tls_config: {{ca_file: '{cert}', server_name: localhost}}
"#,
        port = smtp.port,
        password = password_file.display(),
        cert = cert.display()
    );
    let report = run_notifier(&dir, &am_yml, "retry_for: 5s", 1);
    let mail = smtp.messages();
    assert_eq!(mail.len(), 2, "{mail:#?}");
    assert!(
        mail[0].contains("Subject: [FIRING:2] ApiDown (api page)"),
        "{}",
        mail[0]
    );
    assert!(
        mail[0].contains("To: oncall@example.com, lead@example.com"),
        "{}",
        mail[0]
    );
    assert!(mail[0].contains("text/plain") && mail[0].contains("text/html"));
    // The receiver's own bodies (text and html templates).
    assert!(
        mail[0].contains("Own text: FIRING for ApiDown"),
        "{}",
        mail[0]
    );
    assert!(mail[0].contains("<p>ApiDown is firing</p>"), "{}", mail[0]);
    assert!(
        mail[1].contains("Own text: RESOLVED for ApiDown"),
        "{}",
        mail[1]
    );
    assert!(
        mail[1].contains("Subject: [RESOLVED] ApiDown (api page)"),
        "{}",
        mail[1]
    );
    // The wrong password is refused (535) once per notification (the
    // resolution is not sent to it: send_resolved is false by default),
    // not retried, and counted.
    assert_eq!(smtp.auth_failures(), 1);
    assert_eq!(report.errors, 1);
}

/// Silences through Alertmanager's API v2 on `tidemark serve`, made,
/// listed and expired with `amtool` itself: while one lasts, the alerts
/// it matches are left out of notifications (and counted).
#[test]
fn amtool_silences_mute_tidemarks_notifications() {
    use common::server::Server;
    use std::process::Command;

    let dir = temp_dir("notify-silence");
    let hook = Recorder::start(|_, _| (200, vec![], String::new()));
    let server = Server::start(&[], 0);
    let amtool = |args: &[&str]| -> String {
        let out = Command::new(common::amtool::amtool())
            .args(args)
            .arg(format!("--alertmanager.url={}", server.url))
            .output()
            .expect("amtool runs");
        assert!(
            out.status.success(),
            "amtool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let id = amtool(&[
        "silence",
        "add",
        "alertname=ApiDown",
        "instance=~a|c",
        "--author=test",
        "--comment=maintenance",
        "--duration=1h",
    ]);
    assert!(!id.is_empty());
    let listed: serde_json::Value =
        serde_json::from_str(&amtool(&["silence", "query", "-o", "json"])).unwrap();
    assert_eq!(listed[0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed[0]["status"]["state"], "active");
    assert_eq!(listed[0]["createdBy"], "test");
    // `tidemark silence` is a client of the same API.
    let tidemark = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .arg("silence")
            .args(args)
            .args(["--server", &server.url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let other = tidemark(&["add", "alertname=Other", "--comment", "cli", "-d", "30m"]);
    let both: serde_json::Value =
        serde_json::from_str(&amtool(&["silence", "query", "-o", "json"])).unwrap();
    assert_eq!(both.as_array().unwrap().len(), 2, "{both}");
    let table = tidemark(&["list"]);
    assert!(
        table.contains(&other) && table.contains(r#"alertname="Other""#),
        "{table}"
    );
    tidemark(&["expire", &other]);
    assert!(!tidemark(&["list"]).contains(&other));

    let am_yml = dir.join("alertmanager.yml");
    std::fs::write(
        &am_yml,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\nreceivers:\n  - name: hook\n    webhook_configs: [{{url: '{}/hook'}}]\n",
            hook.url
        ),
    )
    .unwrap();
    let input = dir.join("in.jsonl");
    write_input(&input, true);
    let transforms = format!(
        "  page: {{type: route, inputs: [rules.alerts], config: {}}}\n",
        am_yml.display()
    );
    let sinks = format!(
        "  out: {{type: notify, inputs: [page], config: {}}}\n",
        am_yml.display()
    );
    let (status, body) = server
        .request(
            "POST",
            "/api/v1/pipelines",
            Some(&pipeline(&dir, &input, &transforms, &sinks)),
        )
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let got = hook.wait_for(2, Duration::from_secs(30));
    assert_eq!(got.len(), 2, "{got:#?}");
    for r in &got {
        let instances: Vec<&str> = r.json["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| label(a, "instance"))
            .collect();
        assert_eq!(instances, ["b"], "{:#}", r.json);
    }
    let (_, recent) = server.json("GET", "/api/v1/notifications", None);
    let recent = recent["data"]["notifications"].as_array().unwrap().clone();
    assert_eq!(recent.len(), 2, "{recent:#?}");
    // Newest first: the resolution, then the firing notification.
    assert_eq!(recent[0]["status"], "resolved");
    assert_eq!(recent[1]["title"], "[FIRING:1] ApiDown (b api page)");
    assert!(
        recent
            .iter()
            .all(|n| n["outcome"] == "sent" && n["target"] == "hook/webhook[0]")
    );
    let (_, metrics) = server.request("GET", "/metrics", None).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tidemark_component_dropped_total")
                && l.contains("reason=\"silenced\"")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tidemark_notifications_total")
                && l.contains("receiver=\"hook\",outcome=\"sent\"")),
        "{metrics}"
    );

    amtool(&["silence", "expire", &id]);
    let listed: serde_json::Value =
        serde_json::from_str(&amtool(&["silence", "query", "--expired", "-o", "json"])).unwrap();
    assert_eq!(listed[0]["status"]["state"], "expired", "{listed}");
    assert!(server.stop().success());
}
