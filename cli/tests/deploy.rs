//! deploy/: Docker and Helm are not available here, so this checks what can
//! be checked: the compose file and the rendered Kubernetes manifests parse
//! and name the right ports, arguments and host list, and the server
//! configuration they carry is one `tidemark serve` accepts.

use std::path::Path;

use tidemark_pipelines::yaml::{Node, parse, parse_all};
use tidemark_server::config::ServerConfig;

fn deploy(file: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(file),
    )
    .unwrap()
}

fn json(node: &Node) -> serde_json::Value {
    node.to_json()
}

#[test]
fn compose_runs_tidemark_with_its_services() {
    let compose = json(&parse(&deploy("compose.yaml")).unwrap());
    let services = compose["services"].as_object().unwrap();
    for s in [
        "tidemark",
        "kafka",
        "timescaledb",
        "redis",
        "minio",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(s), "compose has no {s}");
    }
    // Grafana and the Prometheus beside it mount files that exist.
    for s in ["prometheus", "grafana"] {
        for volume in compose["services"][s]["volumes"].as_array().unwrap() {
            let host = volume.as_str().unwrap().split(':').next().unwrap();
            assert!(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../deploy")
                    .join(host)
                    .exists(),
                "{s} mounts {host}, which is not there"
            );
        }
    }
    let t = &compose["services"]["tidemark"];
    assert_eq!(t["command"][0], "serve");
    let ports: Vec<&str> = t["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(ports, vec!["8080:8080", "4317:4317"]);
    assert_eq!(t["build"]["dockerfile"], "deploy/Dockerfile");
    // It listens beyond loopback, so it requires a token: the token file
    // is a secret made from TIDEMARK_TOKEN, which compose insists on.
    let command: Vec<&str> = t["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = command
        .iter()
        .position(|a| *a == "--token-file")
        .expect("--token-file");
    assert_eq!(command[at + 1], "/run/secrets/tokens");
    assert_eq!(t["secrets"], serde_json::json!(["tokens"]));
    assert_eq!(
        compose["secrets"]["tokens"]["environment"],
        "TIDEMARK_TOKEN"
    );
    assert!(
        t["environment"]["TIDEMARK_TOKEN"]
            .as_str()
            .unwrap()
            .starts_with("${TIDEMARK_TOKEN:?")
    );
}

#[test]
fn the_dockerfile_builds_and_exposes_the_binary() {
    let d = deploy("Dockerfile");
    assert!(d.contains("cargo build --release --locked --bin tidemark"));
    assert!(d.lines().any(|l| l.trim() == "EXPOSE 8080 4317 2101"));
    assert!(d.contains("ENTRYPOINT [\"tidemark\"]"));
    assert!(d.contains("\"--token-file\", \"/etc/tidemark/tokens\"]"));
}

#[test]
fn kubernetes_manifests_run_a_timely_cluster_from_pod_ordinals() {
    let docs: Vec<serde_json::Value> = parse_all(&deploy("k8s/tidemark.yaml"))
        .unwrap()
        .iter()
        .map(json)
        .collect();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    let sts = find("StatefulSet", "demo-tidemark");
    let replicas = sts["spec"]["replicas"].as_u64().unwrap();
    assert_eq!(sts["spec"]["serviceName"], "demo-tidemark-peers");
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["args"],
        serde_json::json!(["serve", "--config", "/etc/tidemark/tidemark.yaml"])
    );
    let env = &container["env"][0];
    assert_eq!(env["name"], "TIDEMARK_PROCESS");
    assert_eq!(
        env["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.labels['apps.kubernetes.io/pod-index']"
    );
    let ports: Vec<(String, u64)> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        vec![
            ("http".into(), 8080),
            ("grpc".into(), 4317),
            ("timely".into(), 2101)
        ]
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");

    let service = find("Service", "demo-tidemark");
    let service_ports: Vec<u64> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(service_ports, vec![8080, 4317]);
    let peers = find("Service", "demo-tidemark-peers");
    assert_eq!(peers["spec"]["clusterIP"], "None");
    assert_eq!(peers["spec"]["publishNotReadyAddresses"], true);

    // The host file lists pod i as process i, on the timely port.
    let config = find("ConfigMap", "demo-tidemark");
    let hosts: Vec<&str> = config["data"]["hosts"].as_str().unwrap().lines().collect();
    assert_eq!(hosts.len() as u64, replicas);
    for (i, h) in hosts.iter().enumerate() {
        assert_eq!(
            *h,
            format!("demo-tidemark-{i}.demo-tidemark-peers.default.svc.cluster.local:2101")
        );
    }
    // The server configuration is one `tidemark serve` accepts.
    let dir = std::env::temp_dir().join(format!("tidemark-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tidemark.yaml");
    std::fs::write(&file, config["data"]["tidemark.yaml"].as_str().unwrap()).unwrap();
    let c = ServerConfig::load(&file).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        c.hostfile.as_deref(),
        Some(Path::new("/etc/tidemark/hosts"))
    );
    assert_eq!(c.http, Some("0.0.0.0:8080".parse().unwrap()));
    // Beyond loopback, so with tokens: the token file is the Secret's.
    assert_eq!(
        c.token_file.as_deref(),
        Some(Path::new("/etc/tidemark/secret/tokens"))
    );
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["name"] == "tokens" && m["mountPath"] == "/etc/tidemark/secret")
    );
    let volumes = sts["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["name"] == "tokens" && v["secret"]["secretName"] == "demo-tidemark-tokens")
    );
    // The chart makes the Secret itself when none is named: a random token,
    // kept across upgrades.
    let secret = deploy("helm/tidemark/templates/secret.yaml");
    assert!(secret.contains("{{- if not .Values.tokenSecret }}"));
    assert!(secret.contains("randAlphaNum 48"));
    assert!(secret.contains("lookup \"v1\" \"Secret\""));
    let statefulset = deploy("helm/tidemark/templates/statefulset.yaml");
    assert!(statefulset.contains("secretName: {{ include \"tidemark.tokenSecret\" . }}"));
    assert!(
        !statefulset.contains("if .Values.tokenSecret"),
        "the token is always mounted"
    );

    // The chart's defaults are what was rendered.
    let values = json(&parse(&deploy("helm/tidemark/values.yaml")).unwrap());
    assert_eq!(values["replicas"].as_u64(), Some(replicas));
    assert_eq!(
        values["ports"],
        serde_json::json!({"http": 8080, "grpc": 4317, "timely": 2101})
    );
    let chart = json(&parse(&deploy("helm/tidemark/Chart.yaml")).unwrap());
    assert_eq!(chart["name"], "tidemark");
}
