//! Human-readable reports. (`--output json` serialises the same results.)

use std::fmt::Write as _;

use crate::check::{Report, Verdict};
use crate::policy::testing::{Status, Summary, TestResult};

/// `sandgate check`'s text report.
pub fn check_report(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.results {
        let tag = match f.verdict {
            Verdict::Pass => "PASS ",
            Verdict::Deny => "DENY ",
            Verdict::Skip => "SKIP ",
            Verdict::Error => "ERROR",
        };
        let object = match (&f.namespace, f.kind.is_empty()) {
            (_, true) => String::new(),
            (Some(ns), false) => format!("{} {ns}/{}", f.kind, f.name),
            (None, false) => format!("{} {}", f.kind, f.name),
        };
        let _ = writeln!(out, "{tag} {object}  ({})", f.source);
        for v in &f.violations {
            let _ = writeln!(out, "      [{}] {}: {}", v.rule, v.field, v.message);
        }
        for w in &f.warnings {
            let _ = writeln!(out, "      warning: {w}");
        }
        if let Some(note) = &f.note {
            let _ = writeln!(out, "      {note}");
        }
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "{} objects: {} passed, {} denied, {} skipped, {} errors",
        s.objects, s.passed, s.denied, s.skipped, s.errors
    );
    out
}

/// `sandgate policy test`'s text report, like `opa test`'s: failures (and with
/// `verbose` passes too) grouped by file, then the totals.
pub fn policy_tests(results: &[TestResult], summary: &Summary, verbose: bool) -> String {
    let mut out = String::new();
    let mut file = "";
    for r in results {
        if r.status == Status::Pass && !verbose {
            continue;
        }
        if r.file != file {
            let _ = writeln!(out, "{}:", r.file);
            file = &r.file;
        }
        let tag = match r.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Error => "ERROR",
        };
        let _ = writeln!(
            out,
            "  {tag}  data.{}.{} ({}µs)",
            r.package,
            r.name,
            r.duration.as_micros()
        );
        if let Some(e) = &r.error {
            let _ = writeln!(out, "        {e}");
        }
    }
    let _ = writeln!(out, "{}", "-".repeat(60));
    let _ = writeln!(
        out,
        "{} passed, {} failed",
        summary.passed,
        summary.failed + summary.errors
    );
    out
}

/// `sandgate audit`'s text report: objects that need attention (all with `verbose`),
/// each result under its object, then the totals.
pub fn audit_listing(listing: &crate::audit::report::Listing, verbose: bool) -> String {
    use crate::audit::view::Verdict as V;
    let mut out = String::new();
    for j in &listing.results {
        let worst = j.worst();
        let warned = j.outcomes.iter().any(|o| o.result == V::Warn);
        if worst == V::Pass && !warned && !verbose {
            continue;
        }
        let tag = match worst {
            V::Fail => "FAIL ",
            V::Error => "ERROR",
            V::Warn => "WARN ",
            V::Pass if warned => "WARN ",
            V::Pass => "PASS ",
        };
        let _ = writeln!(out, "{tag} {}", j.resource.describe());
        for o in j.outcomes.iter().filter(|o| o.result != V::Pass) {
            let what = match &o.field {
                Some(f) => format!("[{}] {f}: {}", o.rule, o.message),
                None => format!("[{} {}] {}", o.policy, o.rule, o.message),
            };
            let _ = writeln!(out, "      {}: {what}", o.result.as_str());
        }
    }
    let s = &listing.summary;
    let _ = writeln!(
        out,
        "{} objects in {} namespaces: {} failing, {} errors; results {} pass, {} fail, {} warn, {} error ({} apiserver requests, {:.2} s)",
        s.objects,
        s.namespaces,
        s.failing,
        s.errors,
        s.results.pass,
        s.results.fail,
        s.results.warn,
        s.results.error,
        s.api_requests,
        s.seconds
    );
    out
}
