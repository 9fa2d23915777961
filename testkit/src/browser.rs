//! Headless Chromium driven over WebDriver (chromedriver, with the
//! fantoccini client), for the dashboard tests. deploy/test.sh installs
//! Debian's `chromium` and `chromium-driver`.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

/// A chromedriver process and a browser session on it; both end on drop,
/// the browser too when a failing test never reaches [`Browser::close`].
pub struct Browser {
    driver: Child,
    profile: std::path::PathBuf,
    pub client: Client,
}

impl Browser {
    pub async fn start() -> Browser {
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start chromedriver ({e}): run deploy/test.sh, which installs \
                     Debian's chromium and chromium-driver, or apt-get install them"
                )
            });
        // "ChromeDriver was started successfully on port N."
        let mut lines = std::io::BufReader::new(driver.stdout.take().unwrap()).lines();
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.split("successfully on port ")
                    .nth(1)
                    .and_then(|p| p.trim_end_matches('.').trim().parse::<u16>().ok())
            })
            .expect("chromedriver did not report its port");
        std::thread::spawn(move || lines.for_each(drop));
        // A profile of its own, by which a leftover browser is found.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let profile = std::env::temp_dir().join(format!(
            "tidemark-chromium-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-background-networking",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--window-size=1200,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::native()
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("cannot open a Chromium session: {e}"));
        Browser {
            driver,
            profile,
            client,
        }
    }

    /// Evaluates a JavaScript expression in the page.
    pub async fn eval(&self, expression: &str) -> Value {
        self.client
            .execute(&format!("return ({expression});"), vec![])
            .await
            .unwrap_or_else(|e| panic!("{expression}: {e}"))
    }

    /// Waits until a JavaScript expression is true; panics with `what` and
    /// the page's status line after `timeout`.
    pub async fn wait_for(&self, expression: &str, timeout: Duration, what: &str) {
        let start = Instant::now();
        loop {
            if self.eval(expression).await == Value::Bool(true) {
                return;
            }
            if start.elapsed() > timeout {
                let status = self
                    .eval("document.getElementById('status').innerText + ' | ' + document.getElementById('message').innerText")
                    .await;
                panic!("{what}: not within {timeout:?}; the page says: {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Killing chromedriver leaves the browser it started running.
        let _ = Command::new("pkill")
            .args(["-f", "--"])
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .status();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
