//! Runs every case of GitHub's expression test data (`../shared/conformance/expressions`)
//! and fails unless all pass. Prints `conformance: N passed, M failed`.
//!
//! The folder comes from `FIRERUNNER_CONFORMANCE_DIR`, else from `shared/`
//! beside the repository.

use std::path::PathBuf;
use std::process::ExitCode;

use firerunner_workflow::expr::{self, EvalContext, ExprErrorKind};
use firerunner_workflow::Value;

fn conformance_dir() -> PathBuf {
    match std::env::var_os("FIRERUNNER_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/conformance/expressions"),
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "Null",
        Value::Bool(_) => "Boolean",
        Value::Number(_) => "Number",
        Value::String(_) => "String",
        Value::Array(_) => "Array",
        Value::Object(_) => "Object",
    }
}

fn run_case(case: &serde_json::Value) -> Result<(), String> {
    let source = case["expr"].as_str().ok_or("case without 'expr'")?;
    let contexts = match case.get("contexts").cloned().map(Value::from) {
        Some(Value::Object(o)) => o,
        _ => Default::default(),
    };
    let names: Vec<String> = contexts.iter().map(|(k, _)| k.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let ctx = EvalContext {
        contexts,
        ..EvalContext::default()
    };
    let outcome = expr::parse(source, &names).and_then(|e| expr::evaluate(&e, &ctx));
    match (outcome, case.get("result"), case.get("err")) {
        (Ok(got), Some(want), _) => {
            let want_kind = want["kind"].as_str().unwrap_or("");
            let want_value = Value::from(want["value"].clone());
            if kind_name(&got) == want_kind && got.same_value(&want_value) {
                Ok(())
            } else {
                Err(format!(
                    "expected {want_kind} {want_value:?}, got {} {got:?}",
                    kind_name(&got)
                ))
            }
        }
        (Err(err), None, Some(want)) => {
            let want_kind = want["kind"].as_str().unwrap_or("");
            let got_kind = match err.kind {
                ExprErrorKind::Lexing => "lexing",
                ExprErrorKind::Parsing => "parsing",
                ExprErrorKind::Evaluation => "evaluation",
            };
            let want_text = want["value"].as_str().unwrap_or("");
            if got_kind == want_kind && err.message.contains(want_text) {
                Ok(())
            } else {
                Err(format!("expected {want_kind} error containing {want_text:?}, got {got_kind} error {:?}", err.message))
            }
        }
        (Ok(got), None, Some(want)) => Err(format!("expected error {want}, got {got:?}")),
        (Err(err), Some(want), _) => Err(format!("expected {want}, got error {:?}", err.message)),
        _ => Err("case has neither 'result' nor 'err'".into()),
    }
}

fn main() -> ExitCode {
    let dir = conformance_dir();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect(),
        Err(err) => {
            eprintln!(
                "conformance: cannot read {}: {err} (set FIRERUNNER_CONFORMANCE_DIR)",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    files.sort();
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable conformance file");
        let groups: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).expect("valid conformance JSON");
        for (group, cases) in groups {
            for case in cases.as_array().into_iter().flatten() {
                match run_case(case) {
                    Ok(()) => passed += 1,
                    Err(why) => {
                        failed += 1;
                        println!(
                            "FAIL {} [{group}] {:?}: {why}",
                            file.file_name().unwrap_or_default().to_string_lossy(),
                            case["expr"].as_str().unwrap_or("")
                        );
                    }
                }
            }
        }
    }
    println!("conformance: {passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
