//! Benchmark: parse + validate + plan the workflow corpus (`bench/corpus`) and
//! parse + evaluate 10,000 generated expressions, then run GitHub's TypeScript
//! packages (`bench/js`) on the same inputs and print one side-by-side table.
//!
//! `cargo bench -p firerunner-workflow --bench workflow [-- ITERATIONS]`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use firerunner_workflow::expr::{self, EvalContext, ALL_CONTEXTS};
use firerunner_workflow::load::parse_workflow;
use firerunner_workflow::plan::{plan_workflow, PlanContext};
use firerunner_workflow::Value;
use serde_json::json;

/// The allocator the `firerunner` binary uses, so the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXPRESSIONS: usize = 10_000;

/// A small deterministic generator (SplitMix64), so both sides see the same expressions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn contexts() -> serde_json::Value {
    json!({
        "github": {
            "event_name": "pull_request", "ref": "refs/pull/42/merge", "ref_name": "42/merge",
            "sha": "ec26c3e57ca3a959ca5aad62de7213c562f8c821", "repository": "octo-org/octo-repo",
            "actor": "monalisa", "run_id": 1234567890, "run_number": 77, "workflow": "CI",
            "event": {
                "action": "synchronize", "number": 42,
                "pull_request": {
                    "number": 42, "draft": false, "title": "Add the thing [skip docs]",
                    "labels": [{"name": "bug"}, {"name": "size/M"}, {"name": "ci:full"}],
                    "base": {"ref": "main"}, "head": {"ref": "feature/thing"}
                },
                "head_commit": {"message": "Fix the build\n\nSigned-off-by: Mona"}
            }
        },
        "env": {"CI": "true", "TOOL": "rust", "RETRIES": "3", "TARGET": "x86_64-unknown-linux-gnu", "EMPTY": ""},
        "matrix": {"os": "ubuntu-latest", "version": 18, "experimental": false, "features": ["a", "b"]},
        "needs": {
            "build": {"result": "success", "outputs": {"matrix": "{\"os\":[\"a\",\"b\"]}", "version": "1.2.3", "count": "7"}},
            "lint": {"result": "failure", "outputs": {}}
        },
        "steps": {
            "test": {"outcome": "failure", "conclusion": "success", "outputs": {"passed": "120", "failed": "0"}},
            "cache": {"outcome": "success", "conclusion": "success", "outputs": {"cache-hit": "true"}}
        },
        "runner": {"os": "Linux", "arch": "X64", "temp": "/tmp"},
        "inputs": {"channel": "beta", "dry-run": true, "count": 3},
        "vars": {"REGION": "eu-west-1", "FEATURE_FLAGS": "[\"x\",\"y\"]"}
    })
}

fn generate_expressions() -> Vec<String> {
    let mut rng = Rng(0x5EED);
    let paths = [
        "github.event_name",
        "github.ref",
        "github.ref_name",
        "github.sha",
        "github.actor",
        "github.event.pull_request.number",
        "github.event.pull_request.draft",
        "github.event.action",
        "github.event.pull_request.base.ref",
        "github.event.head_commit.message",
        "env.CI",
        "env.TOOL",
        "env.RETRIES",
        "env.EMPTY",
        "matrix.os",
        "matrix.version",
        "matrix.experimental",
        "needs.build.result",
        "needs.build.outputs.version",
        "needs.build.outputs.count",
        "needs.lint.result",
        "steps.test.outcome",
        "steps.test.outputs.passed",
        "steps.cache.outputs.cache-hit",
        "runner.os",
        "inputs.channel",
        "inputs.dry-run",
        "inputs.count",
        "vars.REGION",
        "github.run_number",
    ];
    let literals = [
        "'main'",
        "'push'",
        "'success'",
        "'true'",
        "true",
        "false",
        "0",
        "1",
        "3",
        "18",
        "'Linux'",
        "null",
        "'1.2.3'",
        "''",
        "0x10",
        "'  3 '",
    ];
    let ops = ["==", "!=", "<", "<=", ">", ">="];
    let texts = [
        "'skip'",
        "'ci'",
        "'bug'",
        "'Fix'",
        "'refs/'",
        "'feature'",
        "'42'",
    ];
    (0..EXPRESSIONS)
        .map(|i| {
            let p = rng.pick(&paths);
            let q = rng.pick(&paths);
            let l = rng.pick(&literals);
            let o = rng.pick(&ops);
            let t = rng.pick(&texts);
            match i % 16 {
                0 => format!("{p} {o} {l}"),
                1 => format!("{p} {o} {l} && {q} != {l}"),
                2 => format!("contains({p}, {t}) || startsWith({q}, {t})"),
                3 => format!("!({p} {o} {q}) && ({q} || {l})"),
                4 => format!("format('{{0}}-{{1}} ({{2}})', {p}, {q}, {l})"),
                5 => format!("contains(github.event.pull_request.labels.*.name, {t})"),
                6 => "join(github.event.pull_request.labels.*.name, ', ')".to_string(),
                7 => format!("fromJSON(needs.build.outputs.matrix).os[{}]", i % 3),
                8 => format!("toJSON(matrix.features) == toJSON({p})"),
                9 => format!("endsWith({p}, {t}) && {q} {o} {l} || {p} {o} {q}"),
                10 => format!("github.event.pull_request.labels[{}].name {o} {t}", i % 4),
                11 => format!("{p} && {q} || {l}"),
                12 => format!("(({p} {o} {l}) == ({q} {o} {l})) != false"),
                13 => format!("case({p} {o} {l}, {q}, {l})"),
                14 => format!("fromJSON(vars.FEATURE_FLAGS)[0] == 'x' && contains(fromJSON(vars.FEATURE_FLAGS), {t})"),
                _ => p.to_string(),
            }
        })
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn time(iterations: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..iterations)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

struct Peer {
    workflow_ms: f64,
    expression_ms: f64,
    agree: usize,
    disagree: Vec<String>,
    workflow_errors: usize,
}

fn run_peer(
    root: &Path,
    corpus: &Path,
    expressions_file: &Path,
    iterations: usize,
    ours: &[Option<Value>],
    exprs: &[String],
) -> Result<Peer, String> {
    let js = root.join("bench/js");
    if !js.join("node_modules").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&js)
            .status()
            .map_err(|e| format!("npm is not available ({e})"))?;
        if !status.success() {
            return Err("npm ci failed in bench/js".into());
        }
    }
    let out = Command::new("node")
        .arg("bench.mjs")
        .arg(corpus)
        .arg(expressions_file)
        .arg(iterations.to_string())
        .current_dir(&js)
        .output()
        .map_err(|e| format!("node is not available ({e})"))?;
    if !out.status.success() {
        return Err(format!(
            "node bench.mjs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("bad peer output: {e}"))?;
    let results = report["results"].as_array().cloned().unwrap_or_default();
    let mut agree = 0;
    let mut disagree = Vec::new();
    for ((theirs, ours), source) in results.iter().zip(ours).zip(exprs) {
        let theirs = theirs.as_str().unwrap_or("error");
        let theirs = (theirs != "error")
            .then(|| {
                serde_json::from_str::<serde_json::Value>(theirs)
                    .map(Value::from)
                    .ok()
            })
            .flatten();
        let equal = match (&theirs, ours) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same_value(b),
            _ => false,
        };
        if equal {
            agree += 1;
        } else if disagree.len() < 5 {
            disagree.push(format!(
                "{source}: firerunner {ours:?}, @actions/expressions {theirs:?}"
            ));
        }
    }
    Ok(Peer {
        workflow_ms: report["workflow_ms"].as_f64().unwrap_or(f64::NAN),
        expression_ms: report["expression_ms"].as_f64().unwrap_or(f64::NAN),
        agree,
        disagree,
        workflow_errors: report["workflow_errors"].as_array().map_or(0, Vec::len),
    })
}

fn main() {
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root");
    let corpus = root.join("bench/corpus");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&corpus)
        .expect("bench/corpus exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();

    let exprs = generate_expressions();
    let contexts = contexts();
    let expressions_file = root.join("target/bench-expressions.json");
    std::fs::create_dir_all(root.join("target")).ok();
    std::fs::write(
        &expressions_file,
        serde_json::to_vec(&json!({"contexts": contexts, "expressions": exprs})).unwrap(),
    )
    .expect("write expressions");
    let Value::Object(ctx_object) = Value::from(contexts) else {
        unreachable!()
    };
    let ctx = EvalContext {
        contexts: ctx_object,
        ..EvalContext::default()
    };

    for (name, source) in &files {
        let wf =
            parse_workflow(name, source).unwrap_or_else(|d| panic!("corpus file rejected:\n{d}"));
        plan_workflow(&wf, &PlanContext::default()).unwrap_or_else(|e| panic!("{e}"));
    }
    let plan_ctx = PlanContext::default();
    let workflow_ms = time(iterations, || {
        for (name, source) in &files {
            let wf = parse_workflow(name, source).expect("valid");
            std::hint::black_box(plan_workflow(&wf, &plan_ctx).expect("plans"));
        }
    });
    let evaluate_all = || -> Vec<Option<Value>> {
        exprs
            .iter()
            .map(|e| {
                expr::parse(e, ALL_CONTEXTS)
                    .and_then(|p| expr::evaluate(&p, &ctx))
                    .ok()
            })
            .collect()
    };
    let ours = evaluate_all();
    let expression_ms = time(iterations, || {
        std::hint::black_box(evaluate_all());
    });

    let bytes: usize = files.iter().map(|(_, s)| s.len()).sum();
    println!(
        "workflow benchmark: {} files ({} KiB), {} expressions, median of {iterations} runs",
        files.len(),
        bytes / 1024,
        exprs.len()
    );
    let peer = run_peer(&root, &corpus, &expressions_file, iterations, &ours, &exprs);
    println!();
    println!("| workload | firerunner (Rust) | @actions/* (TypeScript, node) | speed-up |");
    println!("| --- | ---: | ---: | ---: |");
    let row = |name: &str, ours: f64, theirs: Option<f64>| match theirs {
        Some(t) => println!("| {name} | {ours:.2} ms | {t:.2} ms | {:.1}x |", t / ours),
        None => println!("| {name} | {ours:.2} ms | n/a | n/a |"),
    };
    match &peer {
        Ok(p) => {
            row(
                "parse + validate + plan 60 workflows",
                workflow_ms,
                Some(p.workflow_ms),
            );
            row(
                "parse + evaluate 10,000 expressions",
                expression_ms,
                Some(p.expression_ms),
            );
            println!();
            println!(
                "@actions/workflow-parser errors on the corpus: {}",
                p.workflow_errors
            );
            println!(
                "expression results that agree with @actions/expressions: {} of {}",
                p.agree,
                exprs.len()
            );
            for d in &p.disagree {
                println!("  differs: {d}");
            }
        }
        Err(why) => {
            row("parse + validate + plan 60 workflows", workflow_ms, None);
            row("parse + evaluate 10,000 expressions", expression_ms, None);
            println!();
            println!("peer column absent: {why}");
        }
    }
}
