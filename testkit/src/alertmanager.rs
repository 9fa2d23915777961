//! A real Alertmanager (Debian's `prometheus-alertmanager`) started on a
//! free port for a test.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::amtool::tool;

/// A real Alertmanager, stopped when dropped.
pub struct Alertmanager {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Alertmanager {
    /// Starts `prometheus-alertmanager` with `config` (YAML text), its data
    /// in `dir`, on a free port (clustering off), and waits until it is
    /// ready.
    pub fn start(dir: &Path, config: &str) -> Alertmanager {
        std::fs::create_dir_all(dir).unwrap();
        let file = dir.join("alertmanager.yml");
        std::fs::write(&file, config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(tool("/usr/bin/prometheus-alertmanager"))
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("alertmanager.log")).unwrap())
            .spawn()
            .expect("prometheus-alertmanager starts");
        let am = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let ready = format!("{}/-/ready", am.url);
        for _ in 0..200 {
            if ureq::get(&ready).call().is_ok() {
                return am;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "Alertmanager did not become ready; see {}",
            dir.join("alertmanager.log").display()
        );
    }

    /// `GET /api/v2/alerts`: every alert it holds (active, silenced,
    /// inhibited, unprocessed).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let body = ureq::get(format!("{}/api/v2/alerts", self.url))
            .call()
            .expect("GET /api/v2/alerts")
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
