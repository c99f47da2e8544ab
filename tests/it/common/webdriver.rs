//! A small W3C WebDriver client over `ureq`, enough to drive the web
//! dashboard in a real headless Chromium: start chromedriver, open a
//! session, find, click, type, run a script, take a screenshot.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::wait_until;

/// Where Debian's packages put the browser and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's `chromium-driver`.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The W3C name of an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether the browser tests can run; prints a notice and skips, or fails
/// under `TASKDECK_REQUIRE_BROWSER=1`.
pub fn browser_available(test: &str) -> bool {
    let found = [CHROMIUM, CHROMEDRIVER]
        .iter()
        .all(|path| std::path::Path::new(path).exists());
    if found {
        return true;
    }
    assert!(
        std::env::var("TASKDECK_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "chromium or chromedriver is missing, and TASKDECK_REQUIRE_BROWSER=1 requires {test} to run \
         (apt-get install -y chromium chromium-driver)"
    );
    eprintln!("skipping {test}: chromium and chromium-driver are not installed");
    false
}

/// A running chromedriver with one browser session; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    agent: ureq::Agent,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session
    /// with a `width` x `height` window.
    pub fn start(width: u32, height: u32) -> Self {
        let port = super::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver should start");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let root = format!("http://127.0.0.1:{port}");
        let up = wait_until(Duration::from_secs(20), || {
            agent
                .get(format!("{root}/status"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|status| status["value"]["ready"] == true)
        });
        assert!(up, "chromedriver did not answer on port {port}");
        let mut browser = Self {
            driver,
            base: root.clone(),
            agent,
        };
        let session = browser.call(
            "POST",
            "/session",
            json!({
                "capabilities": { "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--hide-scrollbars",
                            format!("--window-size={width},{height}"),
                        ],
                    },
                }},
            }),
        );
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"));
        browser.base = format!("{root}/session/{id}");
        // The window size counts the browser's frame: make the page's
        // viewport the size asked for.
        let frame = browser.execute(
            "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];",
            json!([]),
        );
        let extra = |i: usize| frame[i].as_u64().unwrap_or(0);
        browser.call(
            "POST",
            "/window/rect",
            json!({ "width": u64::from(width) + extra(0), "height": u64::from(height) + extra(1) }),
        );
        browser
    }

    /// One WebDriver command; its `value`, or a panic naming the error.
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let answer = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.post(&url).send_json(&body),
        };
        let mut answer = answer.unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let status = answer.status();
        let value: Value = answer
            .body_mut()
            .read_json()
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        assert!(
            status.is_success(),
            "webdriver {method} {path} failed ({status}): {}",
            value["value"]
        );
        value.get("value").cloned().unwrap_or(value)
    }

    /// Opens a URL and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    /// Runs a script (its body; `arguments` are given) and returns its value.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
    }

    /// The reference of the element `css` selects, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let url = format!("{}/element", self.base);
        let mut answer = self
            .agent
            .post(&url)
            .send_json(json!({ "using": "css selector", "value": css }))
            .ok()?;
        if !answer.status().is_success() {
            return None;
        }
        let value: Value = answer.body_mut().read_json().ok()?;
        value["value"][ELEMENT].as_str().map(str::to_owned)
    }

    /// Waits for `css` to select an element; its reference.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> String {
        let mut found = None;
        wait_until(timeout, || {
            found = self.find(css);
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("nothing matched {css:?} within {timeout:?}"))
    }

    /// Clicks the element `css` selects (waiting for it).
    pub fn click(&self, css: &str) {
        let element = self.wait_for(css, Duration::from_secs(20));
        self.call("POST", &format!("/element/{element}/click"), json!({}));
    }

    /// Types into the element `css` selects after clearing it.
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.wait_for(css, Duration::from_secs(20));
        self.call("POST", &format!("/element/{element}/clear"), json!({}));
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        );
    }

    /// The visible text of the element `css` selects, empty when none.
    pub fn text(&self, css: &str) -> String {
        self.execute(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            json!([css]),
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits until `script` returns true; panics after `timeout` with what
    /// `what` says, and the page's notice.
    pub fn wait_script(&self, what: &str, timeout: Duration, script: &str, args: Value) {
        let held = wait_until(timeout, || self.execute(script, args.clone()) == true);
        assert!(
            held,
            "{what} did not happen within {timeout:?}; notice: {:?}",
            self.text("#notice")
        );
    }

    /// A PNG screenshot of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let data = self.call("GET", "/screenshot", json!({}));
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("a base64 PNG")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.agent.delete(&self.base).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
