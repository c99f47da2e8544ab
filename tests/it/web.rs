//! The web dashboard in a real headless Chromium, driven over WebDriver,
//! against a real `taskdeck serve`. Skipped (with a notice) without
//! chromium and chromium-driver, unless `TASKDECK_REQUIRE_BROWSER=1`.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use taskdeck::client::Client;

use crate::common::broker::{Proc, serve_local};
use crate::common::wait_until;
use crate::common::webdriver::{Browser, browser_available};

const WAIT: Duration = Duration::from_secs(30);

/// A server, its secret, and a browser at 1280x800.
struct Setup {
    _dir: tempfile::TempDir,
    _proc: Proc,
    client: Client,
    url: String,
    secret: String,
    browser: Browser,
}

fn setup(test: &str, extra: &[&str]) -> Option<Setup> {
    if !browser_available(test) {
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (proc, client, _) = serve_local(dir.path(), extra);
    let url = client.url().to_owned();
    let secret = secret_of(dir.path());
    let browser = Browser::start(1280, 800);
    Some(Setup {
        _dir: dir,
        _proc: proc,
        client,
        url,
        secret,
        browser,
    })
}

fn secret_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("secret"))
        .expect("serve keeps its secret in the data directory")
        .trim()
        .to_owned()
}

impl Setup {
    /// Opens the dashboard with the secret in the fragment.
    fn open(&self) {
        self.browser
            .goto(&format!("{}/#token={}", self.url, self.secret));
        self.browser.wait_script(
            "the page connected",
            WAIT,
            "return document.getElementById('link').classList.contains('live');",
            json!([]),
        );
    }

    fn submit(&self, task: Value) -> u64 {
        self.client.submit(&task).expect("submit")
    }

    fn status(&self, id: u64) -> String {
        self.client
            .list("limit=1000")
            .ok()
            .and_then(|answer| {
                answer["tasks"].as_array().and_then(|tasks| {
                    tasks
                        .iter()
                        .find(|t| t["id"] == id)
                        .and_then(|t| t["status"].as_str().map(str::to_owned))
                })
            })
            .unwrap_or_default()
    }

    /// Waits until the row of task `id` shows `status`.
    fn wait_row_status(&self, id: u64, status: &str) {
        self.browser.wait_script(
            &format!("task {id}'s row showing {status}"),
            WAIT,
            "const row = document.querySelector(`#task-rows tr[data-id=\"${arguments[0]}\"]`); \
             return !!row && row.dataset.status === arguments[1];",
            json!([id, status]),
        );
    }

    fn row_ids(&self) -> Vec<u64> {
        self.browser
            .execute(
                "return [...document.querySelectorAll('#task-rows tr')].map(r => Number(r.dataset.id));",
                json!([]),
            )
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    }
}

#[test]
fn the_page_loads_without_a_secret_and_shows_existing_tasks() {
    let Some(s) = setup("web::the_page_loads", &["--workers", "0"]) else {
        return;
    };
    let ids: Vec<u64> = (0..3)
        .map(|n| s.submit(json!({ "task": "sleep", "args": [1000 + n] })))
        .collect();
    s.open();
    wait_until(WAIT, || s.row_ids().len() == 3);
    assert_eq!(s.row_ids(), ids.iter().rev().copied().collect::<Vec<_>>());
    let row = s.browser.text("#task-rows tr");
    assert!(
        row.contains("sleep") && row.contains("1002") && row.contains("queued"),
        "{row}"
    );
    // The secret left the address bar and stays in the tab.
    let hash = s.browser.execute("return location.hash;", json!([]));
    assert_eq!(hash, "");
    let kept = s.browser.execute(
        "return sessionStorage.getItem('taskdeck.token');",
        json!([]),
    );
    assert_eq!(kept, s.secret.as_str());
}

#[test]
fn reloading_the_page_again_and_again_keeps_it_live() {
    let Some(s) = setup("web::reloading", &["--workers", "0"]) else {
        return;
    };
    let id = s.submit(json!({ "task": "sleep", "args": [1000] }));
    // The browser has six connections to a server: a page it left must not
    // keep its event stream open, or the seventh load waits for a minute.
    for load in 0..8 {
        s.browser.goto("about:blank");
        s.open();
        assert!(
            wait_until(WAIT, || s.row_ids() == [id]),
            "load {load} shows the task"
        );
    }
}

#[test]
fn the_page_asks_for_the_secret_and_says_when_it_is_wrong() {
    let Some(s) = setup("web::the_page_asks_for_the_secret", &["--workers", "0"]) else {
        return;
    };
    let id = s.submit(json!({ "task": "sleep", "args": [1000] }));
    s.browser.goto(&format!("{}/", s.url));
    s.browser.wait_script(
        "the secret dialog opening",
        WAIT,
        "return document.getElementById('token-dialog').open;",
        json!([]),
    );
    s.browser.type_into("#token-input", "not-the-secret");
    s.browser.click("#token-save");
    s.browser.wait_script(
        "the refusal shown",
        WAIT,
        "const e = document.getElementById('token-error'); \
         return document.getElementById('token-dialog').open && !e.hidden && e.textContent.includes('refused');",
        json!([]),
    );
    s.browser.type_into("#token-input", &s.secret);
    s.browser.click("#token-save");
    s.wait_row_status(id, "queued");
}

#[test]
fn one_button_submits_a_random_mock_task() {
    let Some(s) = setup("web::one_button", &["--workers", "0"]) else {
        return;
    };
    s.open();
    s.browser.click("#create-random");
    s.browser.wait_script(
        "a mock task row",
        WAIT,
        "return [...document.querySelectorAll('#task-rows tr')].some(r => /mock_(ml|cv)_task/.test(r.innerText));",
        json!([]),
    );
    let listed = s.client.list("limit=10").expect("list");
    let task = &listed["tasks"][0];
    let name = task["task"].as_str().unwrap_or_default();
    assert!(name == "mock_ml_task" || name == "mock_cv_task", "{task}");
    assert!(
        task["args"][0].as_u64().is_some_and(|ms| ms >= 1000),
        "{task}"
    );
    assert!(s.browser.text("#notice").contains("Submitted task"));
}

#[test]
fn a_task_finishing_changes_its_row_live() {
    let Some(s) = setup("web::live", &["--workers", "1"]) else {
        return;
    };
    s.open();
    s.browser
        .execute("window.loadedOnce = true; return true;", json!([]));
    let id = s.submit(json!({ "task": "sleep", "args": [1500] }));
    s.wait_row_status(id, "running");
    s.wait_row_status(id, "completed");
    let took = s
        .browser
        .text(&format!("#task-rows tr[data-id=\"{id}\"] .took"));
    assert!(took.ends_with(" s"), "the time it took: {took:?}");
    assert_eq!(
        s.browser
            .execute("return window.loadedOnce === true;", json!([])),
        true,
        "the page must not have reloaded"
    );
}

#[test]
fn removing_queued_tasks_with_the_buttons() {
    let Some(s) = setup("web::remove", &["--workers", "0"]) else {
        return;
    };
    let first = s.submit(json!({ "task": "sleep", "args": [1000] }));
    let second = s.submit(json!({ "task": "sleep", "args": [2000] }));
    s.open();
    s.wait_row_status(first, "queued");
    // The row's own button.
    s.browser
        .click(&format!("#task-rows tr[data-id=\"{first}\"] button.remove"));
    s.wait_row_status(first, "cancelled");
    assert_eq!(s.status(first), "cancelled");
    // Select a row, then "Remove selected".
    s.browser.click(&format!(
        "#task-rows tr[data-id=\"{second}\"] td:nth-child(2)"
    ));
    s.browser.wait_script(
        "the details of the selected task",
        WAIT,
        "return !document.getElementById('details').hidden && \
                !document.getElementById('remove-selected').disabled;",
        json!([]),
    );
    s.browser.click("#remove-selected");
    s.wait_row_status(second, "cancelled");
    assert_eq!(s.status(second), "cancelled");
    assert!(s.browser.text("#notice").contains("removed from the queue"));
}

#[test]
fn bad_input_in_the_create_form_is_shown_inline() {
    let Some(s) = setup("web::bad_input", &["--workers", "0"]) else {
        return;
    };
    s.open();
    s.browser.click("#open-create");
    s.browser.execute(
        "const select = document.getElementById('create-task'); select.value = 'sleep'; \
         select.dispatchEvent(new Event('change')); return true;",
        json!([]),
    );
    s.browser
        .type_into("#create-params input[name=\"ms\"]", "soon");
    s.browser.click("#create-submit");
    s.browser.wait_script(
        "the server's refusal inline",
        WAIT,
        "const e = document.getElementById('create-error'); return !e.hidden && e.textContent.includes('ms');",
        json!([]),
    );
    assert!(
        s.client.list("limit=5").expect("list")["tasks"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    // A good value goes through, and the dialog closes.
    s.browser
        .type_into("#create-params input[name=\"ms\"]", "1500");
    s.browser.click("#create-submit");
    s.browser.wait_script(
        "the dialog closing",
        WAIT,
        "return !document.getElementById('create-dialog').open;",
        json!([]),
    );
    s.wait_row_status(1, "queued");
}

#[test]
fn sorting_and_paging_happen_on_the_server() {
    let Some(s) = setup("web::sort_and_paging", &["--workers", "0"]) else {
        return;
    };
    let tasks: Vec<Value> = (0..120u64)
        .map(|n| json!({ "task": "sleep", "args": [1000 + n], "priority": (n * 7) % 10 }))
        .collect();
    s.client.submit_batch(&tasks).expect("batch");
    s.open();
    s.browser.wait_script(
        "the first page",
        WAIT,
        "return document.getElementById('page-info').textContent.includes('of 120');",
        json!([]),
    );
    assert_eq!(s.row_ids().len(), 50);
    assert_eq!(s.row_ids().first(), Some(&120));
    s.browser.click("#page-next");
    s.browser.wait_script(
        "the second page",
        WAIT,
        "return document.getElementById('page-info').textContent.startsWith('51');",
        json!([]),
    );
    assert_eq!(s.row_ids().first(), Some(&70));
    // Sorting goes back to the first page, in the server's order.
    s.browser.click("th[data-sort=\"priority\"]");
    let expected: Vec<u64> = s
        .client
        .list("limit=50&sort=priority&order=desc")
        .expect("list")["tasks"]
        .as_array()
        .map(|tasks| tasks.iter().filter_map(|t| t["id"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(expected.len(), 50);
    assert!(
        wait_until(WAIT, || s.row_ids() == expected),
        "{:?}",
        s.row_ids()
    );
    s.browser.click("th[data-sort=\"priority\"]");
    let ascending: Vec<u64> = s
        .client
        .list("limit=50&sort=priority&order=asc")
        .expect("list")["tasks"]
        .as_array()
        .map(|tasks| tasks.iter().filter_map(|t| t["id"].as_u64()).collect())
        .unwrap_or_default();
    assert!(
        wait_until(WAIT, || s.row_ids() == ascending),
        "{:?}",
        s.row_ids()
    );
    // A filter is applied by the server too.
    s.client.cancel(5).expect("cancel");
    s.browser.execute(
        "const f = document.getElementById('filter-status'); f.value = 'cancelled'; \
         f.dispatchEvent(new Event('change')); return true;",
        json!([]),
    );
    assert!(wait_until(WAIT, || s.row_ids() == [5]), "{:?}", s.row_ids());
}

/// The parts of the dashboard that need no browser: its files over a real
/// socket without the secret, the list's sort and total, the one-click
/// route, and `taskdeck dashboard`'s link.
#[test]
fn the_files_sorting_and_the_link_over_a_real_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_proc, client, addr) = serve_local(dir.path(), &["--workers", "0"]);
    let secret = secret_of(dir.path());
    let plain = |target: &str| {
        crate::common::raw_http(
            addr,
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    };
    let page = plain("/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("Content-Security-Policy: default-src 'none'"));
    assert!(page.contains("<title>Taskdeck</title>"));
    assert!(plain("/web/app.js").starts_with("HTTP/1.1 200"));
    for closed in ["/web/other.js", "/api/v1/tasks", "/api/v1/task-types"] {
        assert!(plain(closed).starts_with("HTTP/1.1 401"), "{closed}");
    }

    let tasks: Vec<Value> = (0..30u64)
        .map(|n| json!({ "task": "sleep", "args": [1000 + n], "priority": (n * 3) % 10 }))
        .collect();
    client.submit_batch(&tasks).expect("batch");
    let example = ureq::post(format!("{}/api/v1/tasks/example", client.url()))
        .header("Authorization", &format!("Bearer {secret}"))
        .send_empty()
        .expect("the one-click task")
        .body_mut()
        .read_json::<Value>()
        .expect("JSON");
    assert_eq!(example["id"], 31);
    let list = |query: &str| client.list(query).expect(query);
    let by_priority = list("sort=priority&order=desc&limit=5&offset=0");
    assert_eq!(by_priority["total"], 31);
    assert_eq!(by_priority["count"], 5);
    let priorities: Vec<u64> = by_priority["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .filter_map(|t| t["priority"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(priorities, [9, 9, 9, 8, 8]);
    let by_task = list("sort=task&order=asc&limit=1");
    assert!(
        by_task["tasks"][0]["task"]
            .as_str()
            .is_some_and(|t| t.starts_with("mock_"))
    );
    assert_eq!(list("status=queued&limit=1")["total"], 31);
    assert_eq!(list("task=sleep&limit=1")["total"], 30);
    let refused = ureq::get(format!("{}/api/v1/tasks?sort=colour", client.url()))
        .header("Authorization", &format!("Bearer {secret}"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .expect("an answer");
    assert_eq!(refused.status(), 400);

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_taskdeck"))
        .args(["dashboard", "--url", client.url()])
        .env_remove("TASKDECK_TOKEN")
        .env("TASKDECK_DATA_DIR", dir.path())
        .output()
        .expect("taskdeck dashboard");
    assert!(output.status.success());
    let link = String::from_utf8_lossy(&output.stdout);
    assert_eq!(link.trim(), format!("{}/#token={secret}", client.url()));
}

/// Not a check: makes a busy dashboard and saves its screenshot to
/// `TASKDECK_SCREENSHOT` (default `target/dashboard.png`).
/// `cargo test --test it web::screenshot -- --ignored`
#[test]
#[ignore = "writes a screenshot; run by hand"]
fn screenshot() {
    let Some(s) = setup("web::screenshot", &["--workers", "3"]) else {
        return;
    };
    let mut tasks = vec![
        json!({ "task": "sleep", "args": [300] }),
        json!({ "task": "fail", "args": [5], "max_retries": 0 }),
        json!({ "task": "sleep", "args": [800], "priority": 7 }),
        json!({ "task": "noop", "args": ["resnet50", 3] }),
        json!({ "task": "sleep", "args": [600] }),
    ];
    tasks.extend(
        (0..3).map(
            |n| json!({ "task": "mock_ml_task", "args": [900 + n * 200, "Gradient Boosting"] }),
        ),
    );
    s.client.submit_batch(&tasks).expect("batch");
    assert!(wait_until(WAIT, || s.status(8) == "completed"));
    let cancelled = s.submit(json!({ "task": "sleep", "args": [60_000] }));
    let long: Vec<Value> = [
        ("mock_ml_task", "Random Forest", 40_000),
        ("mock_cv_task", "Object Detection", 35_000),
        ("mock_ml_task", "K-Means Clustering", 30_000),
        ("mock_cv_task", "Image Segmentation", 25_000),
        ("mock_ml_task", "Principal Component Analysis (PCA)", 20_000),
        ("mock_cv_task", "Facial Recognition", 18_000),
        ("mock_ml_task", "Support Vector Machines (SVM)", 15_000),
        ("mock_cv_task", "Background Subtraction", 12_000),
    ]
    .iter()
    .enumerate()
    .map(|(n, (task, what, ms))| json!({ "task": task, "args": [ms, what], "priority": 3 + n % 6 }))
    .collect();
    s.client.cancel(cancelled).expect("cancel");
    s.client.submit_batch(&long).expect("batch");
    s.open();
    s.browser.click("#window button[data-minutes=\"1\"]");
    // The charts need time to pass to show some history.
    std::thread::sleep(Duration::from_secs(15));
    let running = s.client.list("status=running&limit=1").expect("list")["tasks"][0]["id"]
        .as_u64()
        .expect("a running task");
    s.browser.click(&format!(
        "#task-rows tr[data-id=\"{running}\"] td:nth-child(2)"
    ));
    std::thread::sleep(Duration::from_secs(2));
    let png = s.browser.screenshot();
    let path = std::env::var("TASKDECK_SCREENSHOT")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/dashboard.png").into());
    std::fs::write(&path, png).expect("write the screenshot");
    eprintln!("wrote {path}");
}

/// Not a check: the numbers in docs/BENCHMARKS.md. With 100,000 tasks in
/// the server named by `TASKDECK_BIN` (a release build), the page's time
/// from navigation start to the task table showing rows (the page's
/// `tasks-rendered` mark), and `GET /api/v1/tasks` per sort, medians.
/// `TASKDECK_BIN=target/release/taskdeck cargo test --release --test it web::first_render -- --ignored --nocapture`
#[test]
#[ignore = "a benchmark; run by hand"]
fn first_render_with_100k_tasks() {
    if !browser_available("web::first_render") {
        return;
    }
    let binary =
        std::env::var("TASKDECK_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_taskdeck").into());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = std::process::Command::new(&binary);
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("TASKDECK_TOKEN");
    let proc = Proc::spawn(command);
    let url = proc.listening_url();
    let client = Client::new(&url, None, Duration::from_secs(120));
    let batch: Vec<Value> = (0..10_000u64)
        .map(|n| json!({ "task": "sleep", "args": [1000 + n % 5000], "priority": n % 10 }))
        .collect();
    for _ in 0..10 {
        client.submit_batch(&batch).expect("batch");
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for query in [
        "limit=50",
        "limit=50&sort=priority",
        "limit=50&sort=duration",
        "limit=50&sort=task&order=asc",
        "limit=50&sort=status&offset=50000",
        "limit=50&status=queued&sort=priority",
    ] {
        let times: Vec<f64> = (0..21)
            .map(|_| {
                let started = std::time::Instant::now();
                let answer = client.list(query).expect(query);
                assert_eq!(answer["total"], 100_000);
                started.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        println!("GET /api/v1/tasks?{query}: median {:.2} ms", median(times));
    }
    let secret = secret_of(dir.path());
    let browser = Browser::start(1280, 800);
    let mut renders = Vec::new();
    for _ in 0..7 {
        browser.goto("about:blank");
        browser.goto(&format!("{url}/#token={secret}"));
        let mut mark = Value::Null;
        wait_until(WAIT, || {
            mark = browser.execute(
                "const m = performance.getEntriesByName('tasks-rendered')[0]; return m ? m.startTime : null;",
                json!([]),
            );
            !mark.is_null()
        });
        renders.push(mark.as_f64().expect("the page showed rows"));
    }
    println!(
        "time to first render: {renders:?} ms, median {:.0} ms",
        median(renders.clone())
    );
    let weight: Vec<Value> = browser
        .execute(
            "return performance.getEntriesByType('resource').concat(performance.getEntriesByType('navigation')) \
             .filter(e => !e.name.includes('/api/')).map(e => [e.name, e.decodedBodySize]);",
            json!([]),
        )
        .as_array()
        .cloned()
        .unwrap_or_default();
    println!("page files: {weight:?}");
}
