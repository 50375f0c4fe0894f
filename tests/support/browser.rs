//! A real Chromium for the page's tests: Debian's `chromium` driven through `chromedriver`
//! (WebDriver, with fantoccini), one browser at a time with a fresh profile.

pub mod proxy;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use tempfile::TempDir;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long the page may take to reach any state a test waits for.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(20);
/// WebDriver's key codes, typed as characters.
pub const ENTER: &str = "\u{e007}";
pub const SHIFT: &str = "\u{e008}";
pub const ESCAPE: &str = "\u{e00c}";
/// "Release all modifier keys".
pub const RELEASE_MODIFIERS: &str = "\u{e000}";

/// Without the networking flags Chromium's background connections fail on these machines and
/// stall it; without a fresh profile one test's cache would serve the next.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
];

/// Browsers run one at a time: each is a handful of processes on a small machine.
static ONE_BROWSER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
    _profile: TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Browser {
    /// A browser, or `None` (with a SKIPPED line) when Chromium is not installed outside CI.
    pub async fn start(test: &str) -> Option<Self> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            assert!(
                !super::in_ci(),
                "{test}: {CHROMIUM} and {CHROMEDRIVER} are required in CI: apt-get install chromium chromium-driver"
            );
            eprintln!("SKIPPED {test}: chromium/chromedriver not installed");
            return None;
        }
        let turn = ONE_BROWSER_AT_A_TIME.lock().await;
        let port = free_port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // Its own process group, so that Drop ends Chromium with it even after a panic.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        wait_for_port(port).await;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|flag| (*flag).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let Value::Object(capabilities) = capabilities else { unreachable!("an object literal") };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Some(Self { client, driver, _profile: profile, _turn: turn })
    }

    /// Loads the page from `addr` and waits until its socket is connected.
    pub async fn open_page(&self, addr: SocketAddr) {
        self.client.goto(&format!("http://{addr}/")).await.expect("load the page");
        self.wait_js("the socket connects", "document.getElementById('status').dataset.state === 'open'").await;
    }

    /// The value of a JavaScript expression.
    pub async fn js(&self, expression: &str) -> Value {
        self.client.execute(&format!("return ({expression});"), vec![]).await.expect("script runs")
    }

    /// Polls a JavaScript expression until it is truthy and returns its value.
    pub async fn wait_js(&self, what: &str, expression: &str) -> Value {
        let waited = poll(what, async || {
            let value = self.js(expression).await;
            let falsy = matches!(&value, Value::Null | Value::Bool(false)) || value == json!(0) || value == json!("");
            (!falsy).then_some(value)
        });
        match tokio::time::timeout(PAGE_TIMEOUT, waited).await {
            Ok(value) => value,
            Err(_) => {
                let transcript = self.js("document.getElementById('transcripts').innerText").await;
                panic!("timed out waiting until {what} ({expression}); the page shows:\n{transcript}");
            }
        }
    }

    /// Types a message and presses Enter.
    pub async fn send_message(&self, text: &str) {
        self.type_message(&format!("{text}{ENTER}")).await;
    }

    /// Types into the message field (WebDriver key codes included: `\u{e007}` is Enter).
    pub async fn type_message(&self, keys: &str) {
        let input = self.client.find(fantoccini::Locator::Id("input")).await.expect("#input");
        input.send_keys(keys).await.expect("type");
    }

    pub async fn click(&self, selector: &str) {
        self.client.find(fantoccini::Locator::Css(selector)).await.expect(selector).click().await.expect("click");
    }

    /// Writes a PNG of a `width`×`height` viewport to `target/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str, width: u32, height: u32) -> PathBuf {
        self.client.set_window_size(width, height).await.expect("resize");
        // The window's size includes whatever frame the browser draws: grow it by the difference.
        let inner = self.js("[window.innerWidth, window.innerHeight]").await;
        let inner_size = |index: usize| inner[index].as_u64().expect("a size") as u32;
        let (extra_width, extra_height) = (width.saturating_sub(inner_size(0)), height.saturating_sub(inner_size(1)));
        self.client.set_window_size(width + extra_width, height + extra_height).await.expect("resize");
        // Let transitions the new layout started finish, and the result be painted.
        self.client
            .execute_async(
                "const done = arguments[0]; Promise.all(document.getAnimations().map(a => a.finished)).then(() => requestAnimationFrame(() => requestAnimationFrame(done)))",
                vec![],
            )
            .await
            .expect("the layout settles");
        assert_eq!(self.js("[window.innerWidth, window.innerHeight]").await, json!([width, height]), "viewport size");
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// The console messages since the last call (chromedriver's browser log).
    pub async fn console(&self) -> Vec<Value> {
        match self.client.issue_cmd(BrowserLog).await.expect("read the browser log") {
            Value::Array(entries) => entries,
            other => panic!("the browser log is a list: {other}"),
        }
    }

    /// Ends the session (Chromium exits); dropping `self` then ends chromedriver.
    pub async fn close(self) {
        self.client.clone().close().await.expect("end the session");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            // SAFETY: kill(2) on the process group this test started; no memory is involved.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
    }
}

/// chromedriver's log endpoint, which WebDriver itself lacks.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

/// Checks `condition` every 50 ms until it yields a value; panics after [`PAGE_TIMEOUT`].
pub async fn poll<T>(what: &str, mut condition: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PAGE_TIMEOUT;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn wait_for_port(port: u16) {
    poll("chromedriver listens", async || tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()).await;
}
