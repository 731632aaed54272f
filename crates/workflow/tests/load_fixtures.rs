//! Golden tests for the loader: every `fixtures/invalid/NAME.yml` must produce
//! exactly the diagnostics in `NAME.expected`, and every `fixtures/valid/*.yml`
//! must load without any. Run with `UPDATE_GOLDEN=1` to rewrite the expected files.

use std::path::{Path, PathBuf};

use firerunner_workflow::load::parse_workflow;

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn label(path: &Path) -> String {
    let kind = path
        .parent()
        .and_then(Path::file_name)
        .unwrap()
        .to_string_lossy();
    format!("{kind}/{}", path.file_name().unwrap().to_string_lossy())
}

#[test]
fn invalid_files_report_every_problem_with_its_position() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for path in fixtures("invalid") {
        let source = std::fs::read_to_string(&path).unwrap();
        let got = match parse_workflow(&label(&path), &source) {
            Ok(_) => String::from("(no diagnostics)\n"),
            Err(d) => d.0.iter().map(|d| format!("{d}\n")).collect(),
        };
        let expected_path = path.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("missing {}", expected_path.display()));
        if got != expected {
            mismatches.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                path.display()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn valid_files_load_cleanly() {
    for path in fixtures("valid") {
        let source = std::fs::read_to_string(&path).unwrap();
        if let Err(d) = parse_workflow(&label(&path), &source) {
            panic!("{} should be valid:\n{d}", path.display());
        }
    }
}

#[test]
fn the_example_repository_workflow_is_valid() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo/.github/workflows/ci.yml");
    let source = std::fs::read_to_string(&path).unwrap();
    let wf = parse_workflow("ci.yml", &source).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        wf.jobs.keys().collect::<Vec<_>>(),
        ["prepare", "test", "package"]
    );
}
