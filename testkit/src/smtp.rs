//! A real SMTP server for tests: Python's `aiosmtpd` (Debian's
//! `python3-aiosmtpd`, installed by deploy/test.sh) with STARTTLS required
//! and authentication (one user) allowed only over TLS. Each message that
//! arrives is written to a directory, in arrival order.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const SERVER: &str = r#"
import os, ssl, sys, threading
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, outdir, cert, key, user, password = sys.argv[1:7]

class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(outdir) if f.endswith(".eml")])
        path = os.path.join(outdir, "%04d.eml" % n)
        with open(path + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(path + ".tmp", path)
        return "250 OK"

def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login.decode() == user
          and auth_data.password.decode() == password)
    if not ok:
        with open(os.path.join(outdir, "auth-failures"), "a") as f:
            f.write("x\n")
    return AuthResult(success=ok, handled=False)

context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
controller = Controller(Handler(), hostname="127.0.0.1", port=int(port),
                        tls_context=context, require_starttls=True,
                        auth_require_tls=True, auth_required=True,
                        authenticator=authenticate)
controller.start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// The server, stopped when dropped.
pub struct SmtpServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl SmtpServer {
    /// Starts the server with the certificate and key (PEM files) for
    /// STARTTLS and one user; messages go to `dir/mail`.
    pub fn start(dir: &Path, cert: &Path, key: &Path, user: &str, password: &str) -> SmtpServer {
        let python = Path::new("/usr/bin/python3");
        let check = Command::new(python)
            .args(["-c", "import aiosmtpd"])
            .output();
        assert!(
            check.is_ok_and(|o| o.status.success()),
            "Python's aiosmtpd is missing: run ./deploy/test.sh, which installs Debian's python3-aiosmtpd"
        );
        let mail = dir.join("mail");
        std::fs::create_dir_all(&mail).unwrap();
        let script = dir.join("smtp_server.py");
        std::fs::write(&script, SERVER).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(python)
            .arg(&script)
            .arg(port.to_string())
            .arg(&mail)
            .arg(cert)
            .arg(key)
            .args([user, password])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("smtp.log")).unwrap())
            .spawn()
            .expect("python3 starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "the SMTP server did not start; see {}",
            dir.join("smtp.log").display()
        );
        SmtpServer {
            child,
            port,
            dir: mail,
        }
    }

    /// Every message received so far, raw, in arrival order.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect()
    }
}

impl SmtpServer {
    /// How many logins it refused.
    pub fn auth_failures(&self) -> usize {
        std::fs::read_to_string(self.dir.join("auth-failures"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
