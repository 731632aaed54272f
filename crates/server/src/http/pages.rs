//! The dashboard: server-rendered HTML pages whose sections refresh
//! themselves from the live stream (`/events`, SSE) without reloading the
//! page: a changed section is fetched again as an HTML fragment; log lines
//! are appended as they come.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use firerunner_learning::{
    one_line, short_sha, CommandKnowledgeGraph, LearningCoordinator, LearningStats,
};

use crate::report::{human_duration, percent_encode, StepRecord};
use crate::state::AppState;
use crate::store::{JobRecord, RunRecord, RunState};

/// The dashboard's script and style, served as files: the pages carry no
/// inline script, so the Content-Security-Policy can forbid it.
pub(super) fn assets() -> Router<AppState> {
    Router::new()
        .route("/static/dashboard.js", get(script))
        .route("/static/dashboard.css", get(style))
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .merge(super::settings_pages::routes())
        .route("/", get(dashboard))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/jobs/{job}", get(job_page))
        .route("/learning", get(learning_page))
        .route("/fragments/{name}", get(fragment))
        .route("/fragments/run/{id}", get(run_fragment))
}

/// Escapes text for HTML.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1f2328}\
header{background:#24292f;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center}\
header a{color:#fff;text-decoration:none;font-weight:600}\
main{padding:16px 20px;display:grid;gap:16px}\
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px 16px}\
h2{font-size:15px;margin:0 0 8px}table{border-collapse:collapse;width:100%}\
td,th{text-align:left;padding:4px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}\
.success{color:#1a7f37}.failure{color:#cf222e}.cancelled,.skipped{color:#6e7781}.running,.queued{color:#9a6700}\
.meter{display:inline-block;min-width:180px}.live{font-size:12px;color:#6e7781}\
pre{background:#0d1117;color:#e6edf3;padding:12px;border-radius:6px;overflow:auto;max-height:70vh}\
.stderr{color:#ffa198}.runner{color:#8b949e}";

/// A page with the live-update script. `sections` maps SSE event kinds to
/// the sections to refetch.
pub(super) fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{title} · firerunner</title>\
         <meta name=viewport content='width=device-width'><link rel=stylesheet href='/static/dashboard.css'></head><body>\
         <header><a href='/'>firerunner</a><a href='/learning'>learning</a><a href='/settings'>secrets</a><span>{title}</span><span class=live id=live>connecting…</span></header>\
         <main>{body}</main><script src='/static/dashboard.js'></script></body></html>",
        title = escape(title),
    ))
}

/// Refetches `[data-fragment]` sections named in their `data-on` kinds, at
/// most every 300 ms each; updates capacity figures; appends log lines to
/// `#log` when its run and job match.
const SCRIPT: &str = r#"
const live=document.getElementById('live');
const pending=new Map();
function refresh(section){
  if(pending.has(section))return;
  pending.set(section,setTimeout(async()=>{
    pending.delete(section);
    const r=await fetch(section.dataset.fragment,{cache:'no-store'});
    if(r.ok){section.innerHTML=await r.text();}
  },300));
}
const source=new EventSource('/events');
source.onopen=()=>{live.textContent='live';live.dataset.state='open';};
source.onerror=()=>{live.textContent='reconnecting…';live.dataset.state='error';};
for(const kind of ['delivery','run','job','error','capacity']){
  source.addEventListener(kind,(e)=>{
    const data=JSON.parse(e.data);
    if(kind==='capacity'){
      for(const [k,v] of Object.entries(data)){
        const el=document.querySelector('[data-capacity="'+k+'"]');
        if(el)el.textContent=v;
      }
    }
    for(const section of document.querySelectorAll('[data-on~="'+kind+'"]')){
      const run=section.dataset.run;
      if(run&&data.run_id!==run&&data.id!==run)continue;
      refresh(section);
    }
  });
}
const log=document.getElementById('log');
if(log){
  source.addEventListener('log',(e)=>{
    const d=JSON.parse(e.data);
    if(d.run_id!==log.dataset.run||d.job!==log.dataset.job)return;
    const line=document.createElement('span');
    line.className=d.stream;
    line.textContent=d.text+'\n';
    log.appendChild(line);
    log.scrollTop=log.scrollHeight;
  });
}
"#;

pub(super) fn time(ms: i64) -> String {
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02} UTC")
}

fn result_cell(state: &str, conclusion: Option<&str>) -> String {
    let word = conclusion.unwrap_or(state);
    format!("<span class={word}>{}</span>", escape(word))
}

fn duration_between(start: Option<i64>, end: Option<i64>) -> String {
    match (start, end) {
        (Some(start), Some(end)) if end >= start => {
            human_duration(std::time::Duration::from_millis((end - start) as u64))
        }
        (Some(_), None) => "running".into(),
        _ => "–".into(),
    }
}

async fn dashboard(State(state): State<AppState>) -> Response {
    let mut body = String::new();
    for (name, title, on) in [
        ("health", "Service", "capacity error"),
        ("workers", "Hosts", "capacity run"),
        ("runs", "Runs", "run job"),
        ("deliveries", "Recent deliveries", "delivery"),
        ("errors", "Recent errors", "error"),
    ] {
        let inner = render_fragment(&state, name).await.unwrap_or_default();
        let _ = write!(
            body,
            "<section id={name} data-fragment='/fragments/{name}' data-on='{on}'><h2>{title}</h2><div>{inner}</div></section>"
        );
    }
    page("Dashboard", &body).into_response()
}

async fn fragment(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match render_fragment(&state, &name).await {
        Some(html) => {
            let title = match name.as_str() {
                "health" => "Service",
                "workers" => "Hosts",
                "runs" => "Runs",
                "deliveries" => "Recent deliveries",
                _ => "Recent errors",
            };
            Html(format!("<h2>{title}</h2><div>{html}</div>")).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such fragment").into_response(),
    }
}

async fn render_fragment(state: &AppState, name: &str) -> Option<String> {
    Some(match name {
        "health" => health_fragment(state).await,
        "workers" => workers_fragment(state).await,
        "runs" => runs_fragment(state).await,
        "deliveries" => deliveries_fragment(state).await,
        "errors" => errors_fragment(state).await,
        _ => return None,
    })
}

async fn health_fragment(state: &AppState) -> String {
    let mut out = String::new();
    let store = match state.store.ping().await {
        Ok(()) => format!(
            "ok ({})",
            if state.store.is_postgres() {
                "PostgreSQL"
            } else {
                "SQLite"
            }
        ),
        Err(err) => format!("<span class=failure>{}</span>", escape(&err.to_string())),
    };
    let counts = state.store.counts().await.unwrap_or_default();
    let c = state.capacity();
    let _ = write!(
        out,
        "<table><tr><th>Store</th><td>{store}</td><th>Uptime</th><td>{}</td></tr>\
         <tr><th>VMs</th><td class=meter><span data-capacity=vms_running>{}</span> / <span data-capacity=max_vms>{}</span> \
         (warm <span data-capacity=warm_ready>{}</span>)</td>\
         <th>Sessions</th><td class=meter><span data-capacity=sessions>{}</span> / <span data-capacity=max_sessions>{}</span></td></tr>\
         <tr><th>Runs here</th><td><span data-capacity=runs>{}</span> / <span data-capacity=max_runs>{}</span></td>\
         <th>Queue</th><td>{} queued, {} running, {} completed</td></tr></table>",
        human_duration(state.started.elapsed()),
        c.vms_running, c.max_vms, c.warm_ready, c.sessions, c.max_sessions, c.runs, c.max_runs,
        counts.queued, counts.running, counts.completed,
    );
    out
}

async fn workers_fragment(state: &AppState) -> String {
    let mut out = String::new();
    let now = crate::store::now_ms();
    let lease_ms = state.config.worker.lease_seconds as i64 * 1000;
    out.push_str("<table><tr><th>Worker</th><th>Host</th><th>Runs</th><th>VM limit</th><th>Last seen</th></tr>");
    for w in state.store.workers().await.unwrap_or_default() {
        let alive = now - w.heartbeat_at <= lease_ms;
        let _ =
            write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td class={}>{}s ago</td></tr>",
            escape(&w.id), escape(&w.host), w.running, w.max_runs, w.max_vms,
            if alive { "success" } else { "failure" },
            (now - w.heartbeat_at).max(0) / 1000
        );
    }
    out.push_str("</table>");
    out
}

async fn runs_fragment(state: &AppState) -> String {
    let mut out = String::new();
    out.push_str("<table><tr><th>Run</th><th>Repository</th><th>Workflow</th><th>Event</th><th>Commit</th><th>Result</th><th>Duration</th></tr>");
    for run in state.store.recent_runs(30).await.unwrap_or_default() {
        let _ = write!(
            out,
            "<tr data-run-row='{id}'><td><a href='/runs/{id}'>{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            escape(&run.run.repository), escape(&run.run.workflow_name), escape(&run.run.event),
            escape(&run.run.sha[..run.run.sha.len().min(7)]),
            result_cell(run.state.as_str(), run.conclusion.as_deref()),
            duration_between(run.started_at, run.finished_at),
            id = escape(&run.run.id),
        );
    }
    out.push_str("</table>");
    out
}

async fn deliveries_fragment(state: &AppState) -> String {
    let mut out = String::new();
    out.push_str("<table><tr><th>Received</th><th>Delivery</th><th>Event</th><th>Repository</th><th>State</th><th>Note</th></tr>");
    for d in state.store.recent_deliveries(20).await.unwrap_or_default() {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(d.received_at),
            escape(&d.delivery_id),
            escape(&d.event),
            escape(d.repository.as_deref().unwrap_or("")),
            escape(d.state.as_str()),
            escape(d.note.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</table>");
    out
}

async fn errors_fragment(state: &AppState) -> String {
    let mut out = String::new();
    out.push_str("<table><tr><th>When</th><th>Where</th><th>What</th></tr>");
    for e in state.store.recent_errors(10).await.unwrap_or_default() {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=failure>{}</td></tr>",
            time(e.at),
            escape(&e.source),
            escape(&e.message)
        );
    }
    out.push_str("</table>");
    out
}

fn run_details(run: &RunRecord, jobs: &[JobRecord], deployments: &str) -> String {
    let mut out = format!(
        "<h2>{} · {}</h2><table><tr><th>Repository</th><td>{}</td><th>Commit</th><td><code>{}</code></td></tr>\
         <tr><th>Event</th><td>{} ({})</td><th>Result</th><td id=run-result>{}</td></tr>\
         <tr><th>Attempts</th><td>{}</td><th>Note</th><td>{}</td></tr></table>\
         {deployments}<h2>Jobs</h2><table><tr><th>Job</th><th>Result</th><th>Duration</th><th>Environment</th><th>Steps</th></tr>",
        escape(&run.run.workflow_name),
        escape(&run.run.id),
        escape(&run.run.repository),
        escape(&run.run.sha),
        escape(&run.run.event),
        escape(&run.run.git_ref),
        result_cell(run.state.as_str(), run.conclusion.as_deref()),
        run.attempts,
        escape(run.note.as_deref().unwrap_or("")),
    );
    for job in jobs {
        let steps: Vec<StepRecord> = serde_json::from_str(&job.steps).unwrap_or_default();
        let steps = steps
            .iter()
            .map(|s| {
                format!(
                    "<span class={}>{}</span>",
                    escape(&s.conclusion),
                    escape(&s.name)
                )
            })
            .collect::<Vec<_>>()
            .join(" · ");
        let _ = write!(
            out,
            "<tr><td><a href='/runs/{}/jobs/{}'>{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{steps}</td></tr>",
            escape(&run.run.id),
            percent_encode(&job.name),
            escape(&job.name),
            result_cell(job.state.as_str(), job.conclusion.as_deref()),
            duration_between(job.started_at, job.finished_at),
            environment_cell(job),
        );
    }
    out.push_str("</table>");
    out
}

/// A job's environment, linked to its URL once it reported one.
fn environment_cell(job: &JobRecord) -> String {
    let Some(environment) = &job.environment else {
        return String::new();
    };
    match job
        .environment_url
        .as_deref()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
    {
        Some(url) => format!(
            "<a href='{}' rel=noreferrer>{}</a>",
            escape(url),
            escape(environment)
        ),
        None => escape(environment),
    }
}

/// The run's deployments (environments waiting for, or given, approval).
async fn deployments(state: &AppState, id: &str, headers: &HeaderMap) -> String {
    let approvals = state.store.approvals(Some(id)).await.unwrap_or_default();
    if approvals.is_empty() {
        return String::new();
    }
    let csrf = super::settings_pages::csrf_field(headers);
    format!(
        "<h2>Deployments</h2>{}",
        super::settings_pages::approvals_table(&approvals, &csrf)
    )
}

async fn load_run(state: &AppState, id: &str) -> Result<(RunRecord, Vec<JobRecord>), Response> {
    match state.store.run(id).await {
        Ok(Some(run)) => {
            let jobs = state.store.jobs(id).await.unwrap_or_default();
            Ok((run, jobs))
        }
        Ok(None) => Err((
            StatusCode::NOT_FOUND,
            page(
                "Not found",
                &format!("<section>No run {}</section>", escape(id)),
            ),
        )
            .into_response()),
        Err(err) => Err((StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response()),
    }
}

async fn run_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let deployments = deployments(&state, &id, &headers).await;
    match load_run(&state, &id).await {
        Ok((run, jobs)) => page(
            &format!("Run {}", run.run.id),
            &format!(
                "<section id=run data-fragment='/fragments/run/{id}' data-on='run job' data-run='{id}'>{}</section>",
                run_details(&run, &jobs, &deployments),
                id = escape(&run.run.id)
            ),
        )
        .into_response(),
        Err(response) => response,
    }
}

async fn run_fragment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let deployments = deployments(&state, &id, &headers).await;
    match load_run(&state, &id).await {
        Ok((run, jobs)) => Html(run_details(&run, &jobs, &deployments)).into_response(),
        Err(response) => response,
    }
}

async fn job_page(
    State(state): State<AppState>,
    Path((id, job)): Path<(String, String)>,
) -> Response {
    let (run, jobs) = match load_run(&state, &id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let record = jobs.iter().find(|j| j.name == job);
    let log = log_html(&state, &id, &job).await;
    let summary = record.map(|r| r.summary.as_str()).unwrap_or("");
    let summary = if summary.trim().is_empty() {
        String::new()
    } else {
        format!(
            "<section><h2>Step summary</h2><pre>{}</pre></section>",
            escape(summary)
        )
    };
    page(
        &format!("{} / {}", run.run.workflow_name, job),
        &format!(
            "<section><h2><a href='/runs/{rid}'>{wf}</a> / {job} · {}</h2>\
             <pre id=log data-run='{rid}' data-job='{job}'>{log}</pre></section>{summary}",
            result_cell(
                // A job not started yet waits with its run.
                record.map_or(RunState::Queued.as_str(), |r| r.state.as_str()),
                record.and_then(|r| r.conclusion.as_deref())
            ),
            rid = escape(&run.run.id),
            wf = escape(&run.run.workflow_name),
            job = escape(&job),
        ),
    )
    .into_response()
}

/// A job's log lines as HTML, or why there are none.
async fn log_html(state: &AppState, id: &str, job: &str) -> String {
    let mut log = String::new();
    match state.job_log(id, job).await {
        Ok(Some(lines)) => {
            for line in lines {
                let class = match line.stream {
                    firerunner_engine::logs::LogStream::Stdout => "stdout",
                    firerunner_engine::logs::LogStream::Stderr => "stderr",
                    firerunner_engine::logs::LogStream::Runner => "runner",
                };
                let _ = writeln!(log, "<span class={class}>{}</span>", escape(&line.text));
            }
        }
        Ok(None) => log.push_str("<span class=runner>(no log yet: the job runs on another host; it shows here when it ends)</span>\n"),
        Err(err) => {
            let _ = writeln!(log, "<span class=stderr>(the log cannot be read: {})</span>", escape(&err));
        }
    }
    log
}

/// Rows shown per table of the learning page.
const LEARNING_ROWS: usize = 50;

/// Writes a table with `head` cells and escaped `rows`, or a line saying it is empty.
fn table(out: &mut String, title: &str, head: &[&str], rows: Vec<Vec<String>>) {
    let _ = write!(out, "<section><h2>{}</h2>", escape(title));
    if rows.is_empty() {
        out.push_str("<p>nothing yet</p></section>");
        return;
    }
    out.push_str("<table><tr>");
    for cell in head {
        let _ = write!(out, "<th>{}</th>", escape(cell));
    }
    out.push_str("</tr>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(&cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table></section>");
}

/// `GET /learning`: what the knowledge graph holds (commands, sequences,
/// failure clusters), the lessons and the flaky steps.
async fn learning_page(State(state): State<AppState>) -> Response {
    let Some(learning) = &state.learning else {
        return page(
            "Learning",
            "<section><h2>Learning is off</h2><p>Set <code>[learning] enabled = true</code>.</p></section>",
        )
        .into_response();
    };
    let mut body = String::new();
    table(
        &mut body,
        "Totals",
        &[
            "steps passed",
            "steps failed",
            "success patterns",
            "failure patterns",
            "lessons",
            "flaky steps",
        ],
        vec![totals_row(learning.stats())],
    );
    table(
        &mut body,
        "Lessons",
        &["failure", "where", "times", "state"],
        lesson_rows(learning),
    );
    table(
        &mut body,
        "Flaky steps (passed and failed at one commit)",
        &["step", "command", "commits", "latest"],
        flaky_rows(learning),
    );
    graph_tables(&mut body, learning);
    page("Learning", &body).into_response()
}

/// The knowledge graph's tables: failure clusters, commands, sequences.
fn graph_tables(body: &mut String, learning: &LearningCoordinator) {
    let (commands, sequences, clusters) = learning.with_graph(|graph| {
        (
            command_rows(graph),
            sequence_rows(graph),
            cluster_rows(graph),
        )
    });
    table(
        body,
        "Failure clusters",
        &["signature", "command", "times"],
        clusters,
    );
    table(
        body,
        "Commands",
        &["normalised command", "concepts", "passed", "failed"],
        commands,
    );
    table(
        body,
        "Sequences (one command, then the next, both passing)",
        &["command", "then", "times"],
        sequences,
    );
}

fn totals_row(stats: LearningStats) -> Vec<String> {
    vec![
        stats.successes.to_string(),
        stats.failures.to_string(),
        stats.unique_success_patterns.to_string(),
        stats.unique_failure_patterns.to_string(),
        stats.lessons.to_string(),
        stats.flaky_steps.to_string(),
    ]
}

fn lesson_rows(learning: &LearningCoordinator) -> Vec<Vec<String>> {
    learning
        .lessons()
        .into_iter()
        .take(LEARNING_ROWS)
        .map(|lesson| {
            vec![
                one_line(&lesson.signature.text, 120),
                lesson.location.to_string(),
                lesson.count.to_string(),
                lesson.status().to_string(),
            ]
        })
        .collect()
}

fn flaky_rows(learning: &LearningCoordinator) -> Vec<Vec<String>> {
    learning
        .flaky_steps()
        .into_iter()
        .take(LEARNING_ROWS)
        .map(|step| {
            vec![
                step.location.to_string(),
                one_line(&step.command, 80),
                step.flaky_commits.to_string(),
                short_sha(&step.last_commit_sha).to_string(),
            ]
        })
        .collect()
}

/// The most used commands first.
fn command_rows(graph: &CommandKnowledgeGraph) -> Vec<Vec<String>> {
    let mut nodes: Vec<_> = graph.nodes().collect();
    nodes.sort_by(|a, b| {
        (b.successes + b.failures)
            .cmp(&(a.successes + a.failures))
            .then_with(|| a.command.cmp(&b.command))
    });
    nodes
        .into_iter()
        .take(LEARNING_ROWS)
        .map(|node| {
            let concepts: Vec<&str> = node.concepts.iter().map(|c| c.as_str()).collect();
            vec![
                one_line(&node.command, 80),
                concepts.join(", "),
                node.successes.to_string(),
                node.failures.to_string(),
            ]
        })
        .collect()
}

fn sequence_rows(graph: &CommandKnowledgeGraph) -> Vec<Vec<String>> {
    graph
        .sequences()
        .into_iter()
        .take(LEARNING_ROWS)
        .map(|(from, to, count)| vec![one_line(&from, 60), one_line(&to, 60), count.to_string()])
        .collect()
}

fn cluster_rows(graph: &CommandKnowledgeGraph) -> Vec<Vec<String>> {
    graph
        .failing_signatures()
        .into_iter()
        .take(LEARNING_ROWS)
        .map(|f| {
            vec![
                one_line(&f.signature.text, 120),
                one_line(&f.command, 60),
                f.count.to_string(),
            ]
        })
        .collect()
}
