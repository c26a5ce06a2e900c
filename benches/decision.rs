//! In-process decision time (DESIGN.md §7: mutate + validate of a typical sandbox pod,
//! p99 under 200 µs on one core). Criterion gives the mean and spread; a second pass
//! times single decisions to report p50/p99, which Criterion does not.
//!
//! Run: cargo bench --bench decision

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use sandgate::admission::{Webhook, admit, builtin, review};
use sandgate::config::Config;
use sandgate::policy::PolicySet;

// The binary's allocator, so these numbers are the server's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ARTICLE_POD: &[u8] = include_bytes!("../tests/fixtures/article-pod-review.json");

fn template_review() -> Vec<u8> {
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(include_str!("../deploy/examples/sandbox-template.yaml")).unwrap();
    let object = serde_json::to_value(yaml).unwrap();
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "bench", "operation": "CREATE", "namespace": "default", "name": "agent-execution-template",
            "kind": {"group": "sandbox.gke.io", "version": "v1", "kind": "SandboxTemplate"},
            "resource": {"group": "sandbox.gke.io", "version": "v1", "resource": "sandboxtemplates"},
            "object": object
        }
    }))
    .unwrap()
}

/// Body in, response bytes out: what one webhook call costs apart from HTTP and TLS.
fn full(webhook: Webhook, body: &[u8], cfg: &Config) -> Vec<u8> {
    let req = review::parse(body).expect("valid review");
    let decision = builtin(webhook, &req, cfg);
    serde_json::to_vec(&review::encode(&req.uid, &decision)).unwrap()
}

/// The same with the Rego policies (they run at /validate).
fn full_with(webhook: Webhook, body: &[u8], cfg: &Config, policies: &PolicySet) -> Vec<u8> {
    let req = review::parse(body).expect("valid review");
    let decision = admit(webhook, &req, cfg, policies);
    serde_json::to_vec(&review::encode(&req.uid, &decision)).unwrap()
}

fn shipped() -> PolicySet {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    PolicySet::load_dir(&dir, std::time::Duration::from_millis(100)).expect("shipped policies")
}

/// The pod as stored after mutation, for the validating call.
fn mutated_review(cfg: &Config) -> Vec<u8> {
    let mut review: serde_json::Value = serde_json::from_slice(ARTICLE_POD).unwrap();
    let req = review::parse(ARTICLE_POD).unwrap();
    let d = builtin(Webhook::Mutate, &req, cfg);
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &d.patch.unwrap().0).unwrap();
    review["request"]["object"] = pod;
    serde_json::to_vec(&review).unwrap()
}

fn benches(c: &mut Criterion) {
    let cfg = Config::default();
    let stored = mutated_review(&cfg);
    let template = template_review();
    c.bench_function("pod mutate (parse+decide+encode)", |b| {
        b.iter(|| full(Webhook::Mutate, black_box(ARTICLE_POD), &cfg))
    });
    c.bench_function("pod validate (parse+decide+encode)", |b| {
        b.iter(|| full(Webhook::Validate, black_box(&stored), &cfg))
    });
    c.bench_function("sandboxtemplate validate", |b| {
        b.iter(|| full(Webhook::Validate, black_box(&template), &cfg))
    });
    // The parts: built-in rules on a typed pod, patch building, policy evaluation.
    let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(
        serde_json::from_slice::<serde_json::Value>(ARTICLE_POD).unwrap()["request"]["object"]
            .clone(),
    )
    .unwrap();
    c.bench_function("part: built-in mutation + rules (typed pod)", |b| {
        b.iter(|| {
            let mut p = black_box(&typed).clone();
            sandgate::admission::mutate::pod(&mut p, &cfg);
            sandgate::admission::validate::pod(
                &p,
                &cfg,
                sandgate::admission::validate::Change::Create,
            )
        })
    });
    let mut after = typed.clone();
    sandgate::admission::mutate::pod(&mut after, &cfg);
    c.bench_function("part: patch building (diff + base64)", |b| {
        b.iter(|| {
            let patch = json_patch::diff(
                &serde_json::to_value(black_box(&typed)).unwrap(),
                &serde_json::to_value(black_box(&after)).unwrap(),
            );
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                serde_json::to_vec(&patch).unwrap(),
            )
        })
    });
    let policies = shipped();
    let input =
        |body: &[u8]| serde_json::from_slice::<serde_json::Value>(body).unwrap()["request"].clone();
    let (pod_input, template_input) = (input(&stored), input(&template));
    c.bench_function("part: policy evaluation, pod (2 policies)", |b| {
        b.iter(|| policies.evaluate("pod", black_box(&pod_input)))
    });
    c.bench_function("part: policy evaluation, template (6 policies)", |b| {
        b.iter(|| policies.evaluate("sandboxtemplate", black_box(&template_input)))
    });
    c.bench_function("pod validate + shipped policies", |b| {
        b.iter(|| full_with(Webhook::Validate, black_box(&stored), &cfg, &policies))
    });
    c.bench_function("sandboxtemplate validate + shipped policies", |b| {
        b.iter(|| full_with(Webhook::Validate, black_box(&template), &cfg, &policies))
    });
}

fn percentiles() {
    let cfg = Config::default();
    let stored = mutated_review(&cfg);
    let policies = shipped();
    let empty = PolicySet::empty();
    for (label, set) in [
        ("built-in rules", &empty),
        ("built-in rules + shipped policies", &policies),
    ] {
        let mut samples: Vec<Duration> = Vec::with_capacity(50_000);
        for _ in 0..2_000 {
            full_with(Webhook::Mutate, ARTICLE_POD, &cfg, set);
        }
        for _ in 0..50_000 {
            let t = Instant::now();
            black_box(full_with(
                Webhook::Mutate,
                black_box(ARTICLE_POD),
                &cfg,
                set,
            ));
            black_box(full_with(Webhook::Validate, black_box(&stored), &cfg, set));
            samples.push(t.elapsed());
        }
        samples.sort();
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
        println!(
            "typical sandbox pod, mutate + validate, {label}, 50000 samples: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
            at(0.50),
            at(0.90),
            at(0.99),
            samples[samples.len() - 1]
        );
    }
}

/// A SandboxTemplate review whose egress names `cidrs` CIDRs, the worst arrangement
/// for the egress analysis: one block with every other CIDR an exception inside it.
fn hostile_template(cidrs: usize) -> Vec<u8> {
    let except: Vec<String> = (1..cidrs)
        .map(|i| format!("10.{}.{}.{}/32", i / 65536 % 256, i / 256 % 256, i % 256))
        .collect();
    let mut review: serde_json::Value = serde_json::from_slice(&template_review()).unwrap();
    review["request"]["object"]["spec"]["networkPolicy"] = serde_json::json!({
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": except}}]}]
    });
    if std::env::var("WITH_INGRESS").is_ok() {
        let from: Vec<serde_json::Value> = (0..cidrs)
            .map(|i| serde_json::json!({"ipBlock": {"cidr": format!("11.{}.{}.0/24", i / 256 % 256, i % 256)}}))
            .collect();
        review["request"]["object"]["spec"]["networkPolicy"]["ingress"] =
            serde_json::json!([{"from": from}]);
    }
    serde_json::to_vec(&review).unwrap()
}

/// The worst reviews the egress analysis can be given: at the bound (judged) and just
/// over it (refused), built-in rules alone and with the shipped policies.
fn worst_case() {
    let cfg = Config::default();
    let policies = shipped();
    let empty = PolicySet::empty();
    let bound = sandgate::admission::egress::MAX_CIDRS;
    for (cidrs, what) in [
        (bound, "at the bound, judged"),
        (bound + 1, "over the bound, refused"),
    ] {
        let body = hostile_template(cidrs);
        for (label, set) in [
            ("built-in rules", &empty),
            ("with shipped policies", &policies),
        ] {
            let mut samples: Vec<Duration> = (0..30)
                .map(|_| {
                    let t = Instant::now();
                    black_box(full_with(Webhook::Validate, black_box(&body), &cfg, set));
                    t.elapsed()
                })
                .collect();
            samples.sort();
            println!(
                "hostile template, {cidrs} CIDRs ({what}, {} KiB), {label}, 30 samples: p50 {:?}  max {:?}",
                body.len() / 1024,
                samples[samples.len() / 2],
                samples[samples.len() - 1]
            );
        }
    }
}

fn main() {
    // SANDGATE_BENCH=worst-case: only the hostile inputs (quick, for BENCHMARKS.md).
    if std::env::var("SANDGATE_BENCH").as_deref() == Ok("worst-case") {
        worst_case();
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    // `cargo test --benches` runs this binary in test mode: skip the long pass there.
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        percentiles();
        worst_case();
    }
}
