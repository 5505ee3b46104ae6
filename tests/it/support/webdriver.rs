//! A headless Chromium driven over W3C WebDriver: Debian's chromedriver on a free loopback
//! port (`make browser` installs both), spoken to with the suite's own reqwest. The handful of
//! commands the console's browser test needs, each an HTTP call.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The key a WebDriver element reference is named by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// An element found on the current page.
pub struct Element(String);

impl Browser {
    /// chromedriver on a free port, and a headless Chromium session with a fresh profile and
    /// no background networking (without those flags it keeps calling Google's services).
    pub async fn start() -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists(),
            "{CHROMEDRIVER} is missing: run `make browser` (infra/scripts/browser)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let profile = tempfile::tempdir().expect("profile dir");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => body(r).await["value"]["ready"] == true,
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver not ready in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let mut browser = Self {
            driver,
            port,
            session: String::new(),
            http,
            _profile: profile,
        };
        let created = browser
            .call(reqwest::Method::POST, "/session", Some(caps))
            .await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_owned();
        browser
    }

    /// One command; its `value`, or a panic naming the WebDriver error.
    async fn call(&self, method: reqwest::Method, path: &str, payload: Option<Value>) -> Value {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let mut req = self.http.request(method, &url);
        if let Some(p) = payload {
            req = req
                .header("content-type", "application/json")
                .body(p.to_string());
        }
        let answer = body(req.send().await.expect("chromedriver answers")).await;
        if let Some(error) = answer["value"]["error"].as_str() {
            panic!("webdriver {path}: {error}: {}", answer["value"]["message"]);
        }
        answer["value"].clone()
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            &self.at("/url"),
            Some(json!({"url": url})),
        )
        .await;
    }

    pub async fn url(&self) -> String {
        let v = self
            .call(reqwest::Method::GET, &self.at("/url"), None)
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    pub async fn source(&self) -> String {
        let v = self
            .call(reqwest::Method::GET, &self.at("/source"), None)
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// The elements `css` selects on the current page (none: empty).
    pub async fn all(&self, css: &str) -> Vec<Element> {
        let found = self
            .call(
                reqwest::Method::POST,
                &self.at("/elements"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str())
                    .map(|id| Element(id.to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first element `css` selects, waiting (bounded) for the page to have one.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.all(css).await.into_iter().next() {
                return e;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "no {css} on {} within 10 s:\n{}",
                    self.url().await,
                    self.source().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Click a link or a submit button and wait (bounded) for the browser to be on the next
    /// page: chromedriver may answer a click before the navigation it starts has committed.
    pub async fn follow(&self, e: &Element) {
        let before = self.url().await;
        self.click(e).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.url().await == before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "still on {before} 10 s after the click"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, e: &Element) {
        let path = self.at(&format!("/element/{}/click", e.0));
        self.call(reqwest::Method::POST, &path, Some(json!({})))
            .await;
    }

    pub async fn type_into(&self, e: &Element, text: &str) {
        let path = self.at(&format!("/element/{}/value", e.0));
        self.call(reqwest::Method::POST, &path, Some(json!({"text": text})))
            .await;
    }

    pub async fn text(&self, e: &Element) -> String {
        let path = self.at(&format!("/element/{}/text", e.0));
        let v = self.call(reqwest::Method::GET, &path, None).await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// The text of the one element `css` selects.
    pub async fn text_of(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.text(&e).await
    }
}

async fn body(r: reqwest::Response) -> Value {
    let bytes = r.bytes().await.expect("chromedriver body");
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

impl Drop for Browser {
    /// Ends the session (chromedriver then quits Chromium: killing chromedriver alone would
    /// leave it running), then stops chromedriver. Blocking, with a plain HTTP/1.1 DELETE,
    /// since a drop cannot await.
    fn drop(&mut self) {
        if !self.session.is_empty() {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    s,
                    "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.session, self.port
                );
                // chromedriver answers once Chromium has quit, and keeps the connection open
                // after: read up to the end of the answer's head, not to a close.
                let (mut got, mut chunk) = (Vec::new(), [0u8; 1024]);
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&chunk[..n]),
                    }
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
