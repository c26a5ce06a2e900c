//! Every input the fuzz targets (`fuzz/`, `scripts/fuzz.sh`) ever failed on, replayed
//! with the target's own check: `tests/fuzz_regressions/<target>-<what>.json`.

#[path = "../fuzz/checks/admission_body.rs"]
mod admission_body;

use std::path::Path;

use sandgate::config::Config;
use sandgate::policy::PolicySet;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut found: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("tests/fuzz_regressions")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{target}-")))
        })
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(&p).expect("readable"),
            )
        })
        .collect();
    found.sort();
    found
}

#[test]
fn admission_bodies_that_once_failed_pass() {
    let policies = PolicySet::load_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        std::time::Duration::from_secs(5),
    )
    .expect("shipped policies load");
    let all = inputs("admission_body");
    assert!(!all.is_empty(), "the regression inputs are there");
    for (name, data) in all {
        eprintln!("replaying {name}");
        admission_body::check(&data, &Config::default(), &policies);
    }
}
