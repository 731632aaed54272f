//! The dashboard in a real browser (headless Chromium over the DevTools
//! protocol): it shows deliveries, runs and jobs as they happen, from the
//! live stream, without reloading the page, and streams a job's log lines.

#[path = "support/browser.rs"]
mod browser;
#[path = "support/service.rs"]
mod service;

use std::time::Duration;

use browser::Browser;
use firerunner_engine::logs::{LogLine, LogStream};
use serde_json::json;
use service::{fixture, Service, REPO};

const CI: &str = "name: CI
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: make
  unit-fail:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - run: make test
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_updates_itself_and_streams_logs() {
    let service = Service::start(|_| {}).await;
    let sha = "8888888888888888888888888888888888888888";
    service
        .github
        .add_file(REPO, sha, ".github/workflows/ci.yml", CI);
    let mut browser = Browser::launch().await;
    // Signed out, the dashboard sends the browser to the sign-in form.
    browser.navigate(&format!("{}/", service.url)).await;
    browser
        .wait_for("location.pathname === '/login'", Duration::from_secs(20))
        .await;
    browser
        .evaluate(&format!(
            "document.querySelector('input[name=token]').value = '{}';              document.querySelector('form').submit()",
            service::API_TOKEN
        ))
        .await;
    browser
        .wait_for(
            "location.pathname === '/' && !!document.getElementById('live')",
            Duration::from_secs(20),
        )
        .await;
    browser.navigate(&format!("{}/", service.url)).await;
    assert_eq!(
        browser
            .evaluate("document.querySelectorAll('script:not([src]), style').length")
            .await,
        json!(0),
        "no inline script or style: the CSP forbids them"
    );
    browser.evaluate("window.__marker = 'same page'").await;
    browser
        .wait_for(
            "document.getElementById('live').dataset.state === 'open'",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        browser
            .evaluate("document.querySelector('[data-capacity=max_runs]').textContent")
            .await,
        json!("4")
    );

    let mut payload = fixture("push");
    payload["after"] = json!(sha);
    let (status, _) = service.webhook("push", "d-browser-1", &payload).await;
    assert_eq!(status, 202);
    browser
        .wait_for(
            "document.getElementById('deliveries').innerText.includes('d-browser-1')",
            Duration::from_secs(20),
        )
        .await;
    browser
        .wait_for(
            "document.getElementById('runs').innerText.includes('CI') && \
             document.getElementById('runs').innerText.includes('failure')",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        browser.evaluate("window.__marker").await,
        json!("same page"),
        "updated in place, not reloaded"
    );

    // A run's page lists its jobs; a job's page streams its log lines as they come.
    let run = service.state.store.recent_runs(1).await.unwrap().remove(0);
    browser
        .navigate(&format!("{}/runs/{}", service.url, run.run.id))
        .await;
    let text = browser.evaluate("document.body.innerText").await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("unit-fail") && text.contains("Run tests"),
        "{text}"
    );
    browser
        .navigate(&format!("{}/runs/{}/jobs/build", service.url, run.run.id))
        .await;
    browser
        .wait_for(
            "document.getElementById('live').dataset.state === 'open'",
            Duration::from_secs(20),
        )
        .await;
    let mut writer = service.state.logs.job_writer(&run.run.id, "build").unwrap();
    for i in 0..3 {
        writer
            .write(LogLine::now(
                &run.run.id,
                "build",
                1,
                LogStream::Stdout,
                format!("line {i} from the job"),
            ))
            .unwrap();
    }
    browser
        .wait_for(
            "document.getElementById('log').innerText.includes('line 2 from the job')",
            Duration::from_secs(20),
        )
        .await;
    let log = browser
        .evaluate("document.getElementById('log').innerText")
        .await;
    let log = log.as_str().unwrap();
    assert!(
        log.find("line 0").unwrap() < log.find("line 2").unwrap(),
        "{log}"
    );
    service.stop().await;
}
