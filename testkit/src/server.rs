//! Running `tidemark serve` in tests: start, wait until ready, call, stop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads the server's log until both listeners are reported (or the log
/// ends), then keeps copying it to this test's output in the background.
pub fn listening(stderr: std::process::ChildStderr) -> (Option<u16>, Option<u16>) {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(stderr).lines();
    let port_of = |line: &str, key: &str| {
        let at = line.find(key)? + key.len();
        let addr = line[at..].split_whitespace().next()?;
        addr.rsplit(':').next()?.parse::<u16>().ok()
    };
    let (mut http, mut grpc) = (None, None);
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        eprintln!("{line}");
        if line.contains("Listening.") {
            http = http.or(port_of(&line, " http="));
            grpc = grpc.or(port_of(&line, " grpc="));
        }
        if http.is_some() && grpc.is_some() {
            break;
        }
    }
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("{line}");
        }
    });
    (http, grpc)
}

fn bearer<B>(request: ureq::RequestBuilder<B>, token: Option<&str>) -> ureq::RequestBuilder<B> {
    match token {
        Some(t) => request.header("authorization", format!("Bearer {t}")),
        None => request,
    }
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub grpc: u16,
    /// Sent as a bearer token by [`Server::request`], if set.
    pub token: Option<String>,
}

impl Server {
    /// Starts `tidemark serve`. `port` 0 lets the system choose the HTTP
    /// port (the gRPC port always is), and the addresses are read back from
    /// the server's "Listening." log lines: a port picked beforehand could
    /// be taken by another test before the server binds it.
    /// What tests' pipelines may touch ([`open_access`]) is allowed.
    pub fn start(args: &[&str], port: u16) -> Server {
        Server::start_with_env(args, port, &[])
    }

    /// As [`Server::start`], with these environment variables set.
    pub fn start_with_env(args: &[&str], port: u16, env: &[(String, String)]) -> Server {
        let mut child = Command::new(crate::tidemark_bin())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("serve")
            .args(["--http", &format!("127.0.0.1:{port}")])
            .args(["--grpc", "127.0.0.1:0"])
            .args(open_access())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (http, grpc) = listening(child.stderr.take().unwrap());
        let (Some(http), Some(grpc)) = (http, grpc) else {
            let status = child.wait().unwrap();
            panic!("server exited ({status}) before listening; its log is above");
        };
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{http}"),
            grpc,
            token: None,
        };
        server.wait_ready();
        server
    }

    /// Starts the processes of a cluster (`tidemark serve` with
    /// `--hostfile hosts --process i`, and `args[i]`): all are spawned
    /// before any is waited for, since each waits for the others to
    /// connect before it listens.
    pub fn start_cluster(hosts: &Path, args: &[Vec<String>]) -> Vec<Server> {
        let children: Vec<Child> = args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                Command::new(crate::tidemark_bin())
                    .arg("serve")
                    .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
                    .args(["--hostfile", hosts.to_str().unwrap()])
                    .args(["--process", &i.to_string()])
                    .args(open_access())
                    .args(a)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let waits: Vec<_> = children
            .into_iter()
            .map(|mut child| {
                let stderr = child.stderr.take().unwrap();
                (child, std::thread::spawn(move || listening(stderr)))
            })
            .collect();
        let servers: Vec<Server> = waits
            .into_iter()
            .enumerate()
            .map(|(i, (mut child, wait))| {
                let (Some(http), Some(grpc)) = wait.join().unwrap() else {
                    let status = child.wait().unwrap();
                    panic!("process {i} exited ({status}) before listening; its log is above");
                };
                Server {
                    child,
                    url: format!("http://127.0.0.1:{http}"),
                    grpc,
                    token: None,
                }
            })
            .collect();
        for s in &servers {
            s.wait_ready();
        }
        servers
    }

    /// Starts `tidemark serve` with one token (in a token file under
    /// `dir`), which [`Server::request`] then sends.
    pub fn start_with_token(dir: &Path, token: &str) -> Server {
        let file = dir.join("tokens");
        std::fs::write(&file, format!("{token}\n")).unwrap();
        let mut server = Server::start(&["--token-file", file.to_str().unwrap()], 0);
        server.token = Some(token.to_owned());
        server
    }

    pub fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok((200, _)) = self.request("GET", "/readyz", None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server at {} did not become ready", self.url);
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), ureq::Error> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}{path}", self.url);
        let token = self.token.as_deref();
        let mut response = match (method, body) {
            ("POST", Some(b)) => bearer(agent.post(&url), token)
                .header("content-type", "application/yaml")
                .send(b)?,
            ("DELETE", _) => bearer(agent.delete(&url), token).call()?,
            _ => bearer(agent.get(&url), token).call()?,
        };
        let status = response.status().as_u16();
        Ok((status, response.body_mut().read_to_string()?))
    }

    /// The names of the pipelines the server lists (to a caller without a
    /// token, or with [`Server::token`]).
    pub fn pipeline_names(&self) -> Vec<String> {
        let (_, list) = self.json("GET", "/api/v1/pipelines", None);
        list["pipelines"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (status, text) = self.request(method, path, body).unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `kill -9`: nothing is flushed or saved on the way out.
    pub fn kill_hard(mut self) {
        Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .unwrap();
        let _ = self.child.wait();
    }

    pub fn stop(self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.wait_exit()
    }

    pub fn wait_exit(mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The `serve` flags of a checkpointed server: `workers` workers, `data`
/// as its data directory, a checkpoint every 500 ms.
pub fn checkpointed(data: &Path, workers: &str) -> Vec<String> {
    [
        "--workers",
        workers,
        "--data-dir",
        data.to_str().unwrap(),
        "--checkpoint-interval",
        "500ms",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The `serve` flags that let tests' pipelines touch what they need: the
/// system's temporary directory, where tests keep their files (read,
/// written, replaced), and services on 127.0.0.1.
pub fn open_access() -> Vec<String> {
    let tmp = std::env::temp_dir().display().to_string();
    [
        "--allow-read-dir",
        &tmp,
        "--allow-write-dir",
        &tmp,
        "--allow-replace-dir",
        &tmp,
        "--allow-host",
        "127.0.0.1",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A generator, a window by region and a `file` sink that replaces
/// `output` if it exists (`append: false`).
pub fn pipeline(name: &str, rate: u32, output: &Path) -> String {
    format!(
        r#"name: {name}
sources:
  gen:
    type: generator
    series: 50
    interval: 1s
    start: 2026-01-01T00:00:00Z
    rate: {rate}
    seed: 1
transforms:
  w:
    type: window
    inputs: [gen]
    window: {{tumbling: 10s}}
    by: [region]
    aggregates: [count, avg]
sinks:
  out:
    type: file
    inputs: [w]
    path: {}
    append: false
"#,
        output.display()
    )
}

pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A program on `PATH`.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
