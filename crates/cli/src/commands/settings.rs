//! `firerunner secrets`, `firerunner vars` and `firerunner environments`:
//! what a team sets for its runs, through the running service's API (the
//! same `--url` and `--token` as `firerunner status`). A secret's value is
//! read from standard input or `--file`, never from the command line, and
//! the service never shows it again.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// Where the service is.
#[derive(clap::Args)]
pub struct Connection {
    /// The service's base URL.
    #[arg(long, env = "FIRERUNNER_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The API's bearer token.
    #[arg(long, env = "FIRERUNNER_API_TOKEN", hide_env_values = true)]
    token: String,
}

/// The scope a secret or variable lives in.
#[derive(clap::Args)]
pub struct ScopeArgs {
    /// An organization's (every repository of the owner).
    #[arg(long, conflicts_with_all = ["repo", "env"], required_unless_present = "repo")]
    org: Option<String>,
    /// A repository's (`owner/name`).
    #[arg(long)]
    repo: Option<String>,
    /// With --repo: one environment's of the repository.
    #[arg(long, requires = "repo")]
    env: Option<String>,
}

impl ScopeArgs {
    fn query(&self) -> Vec<(&'static str, &str)> {
        let mut query = Vec::new();
        query.extend(self.org.as_deref().map(|o| ("organization", o)));
        query.extend(self.repo.as_deref().map(|r| ("repository", r)));
        query.extend(self.env.as_deref().map(|e| ("environment", e)));
        query
    }
}

/// Arguments of `firerunner secrets`.
#[derive(clap::Args)]
pub struct SecretsArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: SecretsCommand,
}

#[derive(clap::Subcommand)]
enum SecretsCommand {
    /// Set a secret; its value is read from standard input (or --file).
    Set {
        /// Its name (letters, digits, underscores; not GITHUB_*).
        name: String,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Read the value from this file instead of standard input.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// List the secrets' names, scopes and dates (never their values).
    List {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret.
    Rm {
        /// Its name.
        name: String,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Seal every secret again with secrets.key (secrets.previous_key still set).
    RotateKey,
}

/// Arguments of `firerunner vars`.
#[derive(clap::Args)]
pub struct VarsArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: VarsCommand,
}

#[derive(clap::Subcommand)]
enum VarsCommand {
    /// Set a variable (`vars.NAME`); the value from --value, --file or standard input.
    Set {
        /// Its name.
        name: String,
        #[command(flatten)]
        scope: ScopeArgs,
        /// The value (variables are not secret).
        #[arg(long, conflicts_with = "file")]
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// List firerunner's own variables with their values.
    List {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a variable.
    Rm {
        /// Its name.
        name: String,
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

/// Arguments of `firerunner environments`.
#[derive(clap::Args)]
pub struct EnvironmentsArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: EnvironmentsCommand,
}

#[derive(clap::Subcommand)]
enum EnvironmentsCommand {
    /// Set an environment's protection rules (replacing its old ones).
    Set {
        /// The environment's name.
        name: String,
        /// Its repository (`owner/name`).
        #[arg(long)]
        repo: String,
        /// A branch name pattern that may deploy (repeatable; none and no --tag: every ref).
        #[arg(long = "branch")]
        branches: Vec<String>,
        /// A tag name pattern that may deploy (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// A GitHub login of whom one must approve each run's jobs (repeatable).
        #[arg(long = "reviewer")]
        reviewers: Vec<String>,
    },
    /// List the environments' rules and the deployments waiting for approval.
    List {
        /// Only this repository's.
        #[arg(long)]
        repo: Option<String>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an environment's rules.
    Rm {
        /// The environment's name.
        name: String,
        /// Its repository.
        #[arg(long)]
        repo: String,
    },
    /// Approve (or --reject) a run's waiting deployment to an environment.
    Approve {
        /// The run's id.
        run: String,
        /// The environment.
        environment: String,
        /// Reject instead.
        #[arg(long)]
        reject: bool,
    },
}

/// One API call; the answer's JSON (`Null` for 204), or its error.
fn call(
    connection: &Connection,
    method: reqwest::Method,
    path: &str,
    query: &[(&str, &str)],
    body: Option<Value>,
) -> Result<Value> {
    let url = format!("{}/api{path}", connection.url.trim_end_matches('/'));
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut request = reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(&connection.token)
            .query(query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let code = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("reading {url}"))?;
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !code.is_success() {
            let message = body["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| body.to_string());
            bail!("{code}: {message}");
        }
        Ok(body)
    })
}

/// A name as a path segment.
fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A value from `file`, or from standard input; one final newline is dropped.
fn read_value(name: &str, file: Option<&PathBuf>) -> Result<String> {
    let mut text = match file {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("value of {name} (then Ctrl-D):");
            }
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input")?;
            text
        }
    };
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// `PUT /api/{kind}s/{name}` with the value; prints what was set.
fn set(
    connection: &Connection,
    kind: &str,
    name: &str,
    scope: &ScopeArgs,
    value: String,
) -> Result<()> {
    let path = format!("/{kind}s/{}", segment(name));
    let body = Some(json!({ "value": value }));
    let answer = call(
        connection,
        reqwest::Method::PUT,
        &path,
        &scope.query(),
        body,
    )?;
    let (name, scope) = (
        answer["name"].as_str().unwrap_or(name),
        answer["scope"].as_str().unwrap_or("?"),
    );
    let noun = if kind == "secret" {
        "secret"
    } else {
        "variable"
    };
    println!("set {noun} {name} in {scope}");
    Ok(())
}

/// `DELETE` of `path` with `query`; prints `done`.
fn remove(connection: &Connection, path: &str, query: &[(&str, &str)], done: &str) -> Result<()> {
    call(connection, reqwest::Method::DELETE, path, query, None)?;
    println!("{done}");
    Ok(())
}

/// `POST /api/secrets/rotate-key`; fails when a secret opened with neither key.
fn rotate_key(connection: &Connection) -> Result<ExitCode> {
    let answer = call(
        connection,
        reqwest::Method::POST,
        "/secrets/rotate-key",
        &[],
        None,
    )?;
    println!(
        "{} secret(s) sealed again, {} already under key {}",
        answer["resealed"],
        answer["current"],
        answer["key_id"].as_str().unwrap_or("?")
    );
    let unreadable = answer["unreadable"].as_array().cloned().unwrap_or_default();
    for problem in &unreadable {
        eprintln!("not readable: {}", problem.as_str().unwrap_or("?"));
    }
    Ok(if unreadable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs `firerunner secrets`.
pub fn run_secrets(args: SecretsArgs) -> Result<ExitCode> {
    let connection = &args.connection;
    match args.command {
        SecretsCommand::Set { name, scope, file } => {
            let value = read_value(&name, file.as_ref())?;
            set(connection, "secret", &name, &scope, value)?;
        }
        SecretsCommand::List { json } => {
            let list = call(connection, reqwest::Method::GET, "/secrets", &[], None)?;
            print_list(
                &list,
                json,
                &["level", "scope", "name", "updated_at", "key_id"],
            );
        }
        SecretsCommand::Rm { name, scope } => {
            let path = format!("/secrets/{}", segment(&name));
            remove(
                connection,
                &path,
                &scope.query(),
                &format!("removed secret {name}"),
            )?;
        }
        SecretsCommand::RotateKey => return rotate_key(connection),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `firerunner vars`.
pub fn run_vars(args: VarsArgs) -> Result<ExitCode> {
    let connection = &args.connection;
    match args.command {
        VarsCommand::Set {
            name,
            scope,
            value,
            file,
        } => {
            let value = match value {
                Some(value) => value,
                None => read_value(&name, file.as_ref())?,
            };
            set(connection, "variable", &name, &scope, value)?;
        }
        VarsCommand::List { json } => {
            let list = call(connection, reqwest::Method::GET, "/variables", &[], None)?;
            print_list(&list, json, &["level", "scope", "name", "value"]);
        }
        VarsCommand::Rm { name, scope } => {
            let path = format!("/variables/{}", segment(&name));
            remove(
                connection,
                &path,
                &scope.query(),
                &format!("removed variable {name}"),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the environments' rules, then the deployments waiting for approval.
fn list_environments(connection: &Connection, repo: Option<&str>, json: bool) -> Result<()> {
    let query: Vec<(&str, &str)> = repo.map(|r| ("repository", r)).into_iter().collect();
    let list = call(
        connection,
        reqwest::Method::GET,
        "/environments",
        &query,
        None,
    )?;
    print_list(
        &list,
        json,
        &["repository", "name", "branches", "tags", "reviewers"],
    );
    let waiting = call(connection, reqwest::Method::GET, "/approvals", &[], None)?;
    if !json && waiting.as_array().is_some_and(|w| !w.is_empty()) {
        println!("\nwaiting for approval:");
        print_list(
            &waiting,
            false,
            &["run_id", "environment", "jobs", "reviewers"],
        );
    }
    Ok(())
}

/// Approves or rejects run `run`'s waiting deployment to `environment`.
fn approve(connection: &Connection, run: &str, environment: &str, reject: bool) -> Result<()> {
    let decision = if reject { "reject" } else { "approve" };
    let body = json!({ "environment": environment, "decision": decision });
    let path = format!("/runs/{}/approvals", segment(run));
    let answer = call(connection, reqwest::Method::POST, &path, &[], Some(body))?;
    println!(
        "run {run}: {environment} {}",
        answer["state"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// Runs `firerunner environments`.
pub fn run_environments(args: EnvironmentsArgs) -> Result<ExitCode> {
    let connection = &args.connection;
    match args.command {
        EnvironmentsCommand::Set {
            name,
            repo,
            branches,
            tags,
            reviewers,
        } => {
            let body = json!({ "branches": branches, "tags": tags, "reviewers": reviewers });
            let path = format!("/environments/{}", segment(&name));
            call(
                connection,
                reqwest::Method::PUT,
                &path,
                &[("repository", &repo)],
                Some(body),
            )?;
            println!("set environment {name} of {repo}");
        }
        EnvironmentsCommand::List { repo, json } => {
            list_environments(connection, repo.as_deref(), json)?
        }
        EnvironmentsCommand::Rm { name, repo } => {
            let path = format!("/environments/{}", segment(&name));
            let done = format!("removed environment {name} of {repo}");
            remove(connection, &path, &[("repository", &repo)], &done)?;
        }
        EnvironmentsCommand::Approve {
            run,
            environment,
            reject,
        } => approve(connection, &run, &environment, reject)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a JSON list as columns of `fields` (lists joined with commas), or raw.
fn print_list(list: &Value, json: bool, fields: &[&str]) {
    if json {
        println!("{}", serde_json::to_string_pretty(list).unwrap_or_default());
        return;
    }
    let items = list.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("(none)");
        return;
    }
    println!("{}", fields.join("\t"));
    for item in items {
        let cells: Vec<String> = fields
            .iter()
            .map(|field| match &item[*field] {
                Value::String(text) => text.clone(),
                Value::Array(list) => list
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            })
            .collect();
        println!("{}", cells.join("\t"));
    }
}
