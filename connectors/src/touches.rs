//! What connectors touch outside the process, declared through
//! `SourceSpec::touches` and `SinkSpec::touches`: helpers that read hosts
//! out of the addresses connectors are given.

use tidemark_engine::spec::{Resource, ResourceKind};

/// `host:port` (or `[v6]:port`, or `host` with `default_port`) as a
/// connection, named by `field`. `None` if it does not parse: the
/// connector's own validation reports that.
pub(crate) fn host_port(field: Vec<String>, text: &str, default_port: u16) -> Option<Resource> {
    let text = text.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (host.to_owned(), port)
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), port.parse().ok()?),
            None => (text.to_owned(), default_port),
        }
    };
    (!host.is_empty()).then_some(Resource {
        field,
        kind: ResourceKind::Connect { host, port },
    })
}

/// The host of a URL (`scheme://[user[:pass]@]host[:port][/...]`), with
/// `default_port` when it names none. A URL whose host cannot be read is
/// still declared (as a host no rule matches but `*`), so that nothing
/// connects unchecked.
pub(crate) fn url(field: &str, text: &str, default_port: u16) -> Resource {
    let authority = text
        .split_once("://")
        .map_or(text, |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    host_port(vec![field.to_owned()], authority, default_port).unwrap_or_else(|| {
        Resource::new(
            field,
            ResourceKind::Connect {
                host: text.to_owned(),
                port: 0,
            },
        )
    })
}

/// Every broker of a comma-separated list.
pub(crate) fn brokers(field: Vec<String>, list: &str) -> Vec<Resource> {
    list.split(',')
        .filter(|b| !b.trim().is_empty())
        .filter_map(|b| host_port(field.clone(), b, 9092))
        .collect()
}

/// librdkafka properties that name a file the client reads.
const KAFKA_FILES: [&str; 7] = [
    "ssl.key.location",
    "ssl.certificate.location",
    "ssl.ca.location",
    "ssl.crl.location",
    "ssl.keystore.location",
    "sasl.kerberos.keytab",
    "sasl.oauthbearer.assertion.private.key.file",
];

/// librdkafka properties that run a program or load a library.
const KAFKA_EXEC: [&str; 4] = [
    "plugin.library.paths",
    "sasl.kerberos.kinit.cmd",
    "ssl.engine.location",
    "ssl.providers",
];

/// What the librdkafka `options` of a Kafka source or sink touch: files
/// they read, brokers they name, programs they run.
pub(crate) fn kafka_options(options: &std::collections::BTreeMap<String, String>) -> Vec<Resource> {
    let mut out = Vec::new();
    for (key, value) in options {
        let field = vec!["options".to_owned(), key.clone()];
        if KAFKA_FILES.contains(&key.as_str()) {
            out.push(Resource {
                field,
                kind: ResourceKind::ReadFile(value.into()),
            });
        } else if KAFKA_EXEC.contains(&key.as_str()) {
            out.push(Resource {
                field,
                kind: ResourceKind::Exec(format!("librdkafka's {key}")),
            });
        } else if key == "bootstrap.servers" || key == "metadata.broker.list" {
            out.extend(brokers(field, value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(r: Option<Resource>) -> Option<(String, u16)> {
        match r?.kind {
            ResourceKind::Connect { host, port } => Some((host, port)),
            _ => None,
        }
    }

    #[test]
    fn hosts_are_read_from_every_address_form() {
        let f = || vec!["brokers".to_owned()];
        assert_eq!(
            connect(host_port(f(), "kafka:9093", 1)),
            Some(("kafka".into(), 9093))
        );
        assert_eq!(
            connect(host_port(f(), "[::1]:9093", 1)),
            Some(("::1".into(), 9093))
        );
        assert_eq!(
            connect(host_port(f(), "kafka", 9092)),
            Some(("kafka".into(), 9092))
        );
        assert_eq!(connect(host_port(f(), "kafka:x", 9092)), None);
        assert_eq!(
            connect(Some(url("url", "http://u:p@s3.internal/bucket", 80))),
            Some(("s3.internal".into(), 80))
        );
        assert_eq!(
            connect(Some(url("url", "redis://:sec@ret@[::1]:6380/0", 6379))),
            Some(("::1".into(), 6380))
        );
        assert_eq!(
            connect(Some(url("url", "redis+unix:///run/redis.sock", 6379))),
            Some(("redis+unix:///run/redis.sock".into(), 0))
        );
        assert_eq!(brokers(f(), "a:1, b:2,").len(), 2);
        let options = [
            ("ssl.ca.location".to_owned(), "/etc/ca.pem".to_owned()),
            ("plugin.library.paths".to_owned(), "/tmp/x.so".to_owned()),
            ("linger.ms".to_owned(), "5".to_owned()),
        ]
        .into_iter()
        .collect();
        let touched = kafka_options(&options);
        assert_eq!(touched.len(), 2);
        assert_eq!(touched[1].field, ["options", "ssl.ca.location"]);
    }
}
