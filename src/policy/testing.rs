//! `sandgate policy test`: runs the `test_*` rules of `*_test.rego` files with the
//! policies and data of the same directory, the way `opa test` does.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{PolicyError, list, read_data};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Error,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TestResult {
    pub file: String,
    pub package: String,
    pub name: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(rename = "duration_us")]
    #[serde(serialize_with = "micros")]
    pub duration: Duration,
}

fn micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Names of the test rules a module defines: `test_...` at the start of a line.
fn test_names(rego: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in rego.lines() {
        if !line.starts_with("test_") {
            continue;
        }
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Runs every test under `dir`.
pub fn run(dir: &Path) -> Result<Vec<TestResult>, PolicyError> {
    let files = list(dir)?;
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(false);
    for d in &files.data {
        engine
            .add_data(regorus::Value::from(read_data(d)?))
            .map_err(|e| PolicyError::Prepare(format!("data: {e}")))?;
    }
    let mut tests = Vec::new();
    for p in files.policies.iter().chain(&files.tests) {
        let rego = std::fs::read_to_string(p).map_err(|e| PolicyError::Read {
            path: p.display().to_string(),
            reason: e.to_string(),
        })?;
        let package = engine
            .add_policy(p.display().to_string(), rego.clone())
            .map_err(|e| PolicyError::Compile(e.to_string()))?;
        if files.tests.contains(p) {
            for name in test_names(&rego) {
                tests.push((p.display().to_string(), package.clone(), name));
            }
        }
    }
    engine
        .eval_query("true".to_string(), false)
        .map_err(|e| PolicyError::Prepare(e.to_string()))?;

    let mut results = Vec::new();
    for (file, package, name) in tests {
        let start = Instant::now();
        let mut e = engine.clone();
        let (status, error) = match e.eval_rule(format!("{package}.{name}")) {
            Ok(regorus::Value::Bool(true)) => (Status::Pass, None),
            Ok(regorus::Value::Undefined) => (Status::Fail, None),
            Ok(other) => (
                Status::Fail,
                Some(format!(
                    "evaluated to {}",
                    serde_json::to_string(&other).unwrap_or_default()
                )),
            ),
            Err(err) => (Status::Error, Some(err.to_string())),
        };
        results.push(TestResult {
            file,
            package: package.trim_start_matches("data.").to_string(),
            name,
            status,
            error,
            duration: start.elapsed(),
        });
    }
    Ok(results)
}

/// Counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
}

impl Summary {
    pub fn of(results: &[TestResult]) -> Self {
        let count = |s: Status| results.iter().filter(|r| r.status == s).count();
        Self {
            passed: count(Status::Pass),
            failed: count(Status::Fail),
            errors: count(Status::Error),
        }
    }

    /// 0 all passed, 1 any failure or error (as `opa test`).
    pub fn exit_code(&self) -> u8 {
        u8::from(self.failed + self.errors > 0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_test_rules() {
        let rego = "package p\n\ntest_a if { true }\ntest_a if { 1 == 1 }\n  test_indented if { true }\ntest_b := true\nhelper if { true }\n";
        assert_eq!(super::test_names(rego), vec!["test_a", "test_b"]);
    }
}
