//! `firerunner status`: the service's state in the terminal, from its API.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Arguments of `firerunner status`.
#[derive(clap::Args)]
pub struct Args {
    /// The service's base URL.
    #[arg(long, env = "FIRERUNNER_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The API's bearer token.
    #[arg(long, env = "FIRERUNNER_API_TOKEN", hide_env_values = true)]
    token: String,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
}

fn age(now: i64, then: i64) -> String {
    let secs = (now - then).max(0) / 1000;
    if secs < 120 {
        format!("{secs}s ago")
    } else {
        format!("{}m ago", secs / 60)
    }
}

/// Fetches `/api/status` and prints it.
pub fn run(args: Args) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    let status = runtime.block_on(fetch(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_summary(&status);
    let now = status["now_ms"].as_i64().unwrap_or_default();
    print_workers(&status, now);
    print_jobs(&status, now);
    Ok(ExitCode::SUCCESS)
}

/// The service's `/api/status` answer.
async fn fetch(args: &Args) -> Result<Value> {
    let url = format!("{}/api/status", args.url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&args.token)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let code = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("{url} did not answer JSON"))?;
    if !code.is_success() {
        bail!("{url}: {code}: {}", body["error"].as_str().unwrap_or("?"));
    }
    Ok(body)
}

/// The version, queue, this host's capacity and the deliveries.
fn print_summary(status: &Value) {
    let runs = &status["runs"];
    let capacity = &status["capacity"];
    println!(
        "firerunner {} · up {}s · store {}",
        status["version"].as_str().unwrap_or("?"),
        status["uptime_seconds"],
        status["database"].as_str().unwrap_or("?")
    );
    println!(
        "queue: {} queued, {} running, {} completed",
        runs["queued"], runs["running"], runs["completed"]
    );
    println!(
        "this host: {}/{} VMs ({} warm), {}/{} sessions, {}/{} runs",
        capacity["vms_running"],
        capacity["max_vms"],
        capacity["warm_ready"],
        capacity["sessions"],
        capacity["max_sessions"],
        capacity["runs"],
        capacity["max_runs"]
    );
    if let Some(deliveries) = status["deliveries"].as_object() {
        let parts: Vec<String> = deliveries.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!("deliveries: {}", parts.join(", "));
    }
}

/// The workers' table.
fn print_workers(status: &Value, now: i64) {
    println!(
        "\n{:<24} {:<20} {:>9} {:>8}  last heartbeat",
        "WORKER", "HOST", "RUNS", "MAX VMS"
    );
    for worker in status["workers"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:<20} {:>4}/{:<4} {:>8}  {}",
            worker["id"].as_str().unwrap_or("?"),
            worker["host"].as_str().unwrap_or("?"),
            worker["running"],
            worker["max_runs"],
            worker["max_vms"],
            age(now, worker["heartbeat_at"].as_i64().unwrap_or_default())
        );
    }
}

/// The running jobs.
fn print_jobs(status: &Value, now: i64) {
    let jobs = status["running_jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    println!("\n{} job(s) running", jobs.len());
    for job in jobs {
        println!(
            "  {} / {} on {} ({})",
            job["run_id"].as_str().unwrap_or("?"),
            job["name"].as_str().unwrap_or("?"),
            job["worker"].as_str().unwrap_or("?"),
            age(now, job["started_at"].as_i64().unwrap_or_default())
        );
    }
}
