//! Validates workflow files given as arguments and prints every diagnostic
//! (a quick check of real-world files without building the whole CLI).

fn main() {
    let mut failed = 0usize;
    let mut files = 0usize;
    for path in std::env::args().skip(1) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("{path}: cannot read");
            continue;
        };
        files += 1;
        if let Err(diagnostics) = firerunner_workflow::load::parse_workflow(&path, &text) {
            failed += 1;
            for d in &diagnostics.0 {
                println!("{d}");
            }
        }
    }
    eprintln!("{files} files, {failed} rejected");
}
