//! The page at `/` in a real headless browser (Debian's chromium, installed by `cargo xtask
//! setup`), driven over the DevTools protocol: a picture is chosen in the image input and
//! text typed, Predict is clicked, the prediction and its bars appear, and a screenshot of
//! the page is not blank. `FUSION_PAGE_SCREENSHOT=FILE` keeps the screenshot.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::{BufRead, BufReader},
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine;
use common::{records, send, trained};
use fusion_serve::{Access, BatchOptions, Batcher, Metrics};
use tungstenite::{Message, WebSocket, stream::MaybeTlsStream};

/// The browser, killed when dropped.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One DevTools session with a page.
struct Page {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next: u64,
}

impl Page {
    /// Sends `method` and waits for its answer (events in between are skipped).
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next += 1;
        let id = self.next;
        let message = serde_json::json!({"id": id, "method": method, "params": params});
        self.socket.send(Message::text(message.to_string())).unwrap();
        loop {
            let Message::Text(text) = self.socket.read().unwrap() else {
                continue;
            };
            let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression.
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        let result = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy.
    fn wait_for(&mut self, expression: &str, what: &str) {
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if self.eval(&format!("!!({expression})")) == true {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let body = self.eval("document.body.innerText");
        panic!("{what} did not happen; the page shows:\n{body}");
    }
}

fn chromium() -> String {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return name.to_string();
        }
    }
    panic!("no chromium to try the page in: `cargo xtask setup` installs it (Debian package chromium)");
}

/// Starts headless chromium with DevTools on a free port; returns it and the browser's
/// DevTools address.
fn launch(profile: &std::path::Path) -> (Browser, String) {
    let mut child = Command::new(chromium())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=900,1000",
            &format!("--user-data-dir={}", profile.display()),
            "about:blank",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let browser = Browser(child);
    for line in stderr.lines() {
        let line = line.unwrap();
        if let Some(url) = line.strip_prefix("DevTools listening on ws://") {
            let host = url.split('/').next().unwrap().to_string();
            // Keep draining stderr so the browser never blocks on a full pipe.
            return (browser, host);
        }
    }
    panic!("chromium exited without opening DevTools");
}

#[test]
fn the_page_predicts_an_uploaded_picture_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let (run, _) = trained(dir.path(), "classification");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let predictor = fusion_run::Predictor::load(&run, tch::Device::Cpu).unwrap();
    let batcher = Batcher::start(predictor, BatchOptions::default(), Arc::new(Metrics::default())).unwrap();
    let app = fusion_serve::router(batcher, Access::default(), fusion_serve::Bodies::default());
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, app).await });
    assert_eq!(send(addr, "GET", "/healthz", &[], b"").unwrap().status, 200);

    let (_browser, devtools) = launch(&dir.path().join("profile"));
    let target: serde_json::Value = {
        let devtools: std::net::SocketAddr = devtools.parse().unwrap();
        let answer = send(devtools, "PUT", "/json/new?about:blank", &[], b"").unwrap();
        serde_json::from_str(&answer.body).unwrap()
    };
    let (socket, _) = tungstenite::connect(target["webSocketDebuggerUrl"].as_str().unwrap()).unwrap();
    let mut page = Page { socket, next: 0 };
    page.call("Page.navigate", serde_json::json!({"url": format!("http://{addr}/")}));
    page.wait_for("document.querySelector('input[name=image]')", "the signature's inputs");
    // One input per modality of the run.
    assert_eq!(page.eval("document.querySelectorAll('#inputs fieldset').length"), 3);
    // The browser takes a plain absolute path (no `..`).
    let picture = std::path::Path::new(records("classification", 1)[1]["image"].as_str().unwrap())
        .canonicalize()
        .unwrap();
    let document = page.call("DOM.getDocument", serde_json::json!({}));
    let input = page.call(
        "DOM.querySelector",
        serde_json::json!({"nodeId": document["root"]["nodeId"], "selector": "input[name=image]"}),
    );
    page.call(
        "DOM.setFileInputFiles",
        serde_json::json!({"files": [picture], "nodeId": input["nodeId"]}),
    );
    page.eval("document.querySelector('textarea[name=text]').value = 'the seven'");
    page.eval("document.getElementById('go').click()");
    page.wait_for("document.getElementById('prediction')", "a prediction");
    let shown = page
        .eval("document.getElementById('prediction').innerText")
        .as_str()
        .unwrap()
        .to_string();
    assert!(shown.contains("with probability"), "{shown}");
    assert!(shown.contains("missing: audio"), "{shown}");
    assert!(page.eval("document.getElementById('error')").is_null());
    // Ten probability bars and one contribution bar per modality.
    assert_eq!(page.eval("document.querySelectorAll('.track').length"), 13);
    let shot = page.call("Page.captureScreenshot", serde_json::json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    if let Some(path) = std::env::var_os("FUSION_PAGE_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }
    let picture = image::load_from_memory(&png).unwrap().to_rgb8();
    let colours: std::collections::HashSet<[u8; 3]> = picture.pixels().map(|p| p.0).collect();
    let background = picture.get_pixel(0, 0).0;
    let drawn = picture.pixels().filter(|p| p.0 != background).count();
    assert!(colours.len() > 20, "{} colours: a blank screenshot", colours.len());
    assert!(
        drawn * 50 > picture.len() / 3,
        "{drawn} pixels differ from the background"
    );
}
