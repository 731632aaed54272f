//! Loads arbitrary text as a workflow file, then plans what loads.
#![no_main]

use firerunner_workflow::load::parse_workflow;
use firerunner_workflow::plan::{plan_workflow, PlanContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(workflow) = parse_workflow("fuzz.yml", text) {
        let _ = plan_workflow(&workflow, &PlanContext::default());
    }
});
