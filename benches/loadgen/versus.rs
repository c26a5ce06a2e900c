//! sandgate and OPA side by side: the same policy files served by both over HTTPS, the
//! benchmark's workloads, and the agreement check that must pass before any speed
//! comparison counts. Used by `benches/compare.rs` and `tests/opa_webhook.rs`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Request, bodies};

/// Where OPA serves the adapter (`bench/opa/webhook.rego`) on its v0 data API.
pub const OPA_PREFIX: &str = "/v0/data/sandgate_opa";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct Workload {
    pub name: &'static str,
    pub label: &'static str,
    /// (webhook, review): webhook is "mutate" or "validate".
    pub calls: Vec<(&'static str, Value)>,
}

pub fn workloads() -> Vec<Workload> {
    let pod = bodies::pod();
    let denied = bodies::denied_pod();
    vec![
        Workload {
            name: "pod",
            label: "typical sandbox pod (mutate + validate)",
            calls: vec![("mutate", pod.clone()), ("validate", bodies::mutated(&pod))],
        },
        Workload {
            name: "template",
            label: "SandboxTemplate, 6 policies (validate)",
            calls: vec![("validate", bodies::template())],
        },
        Workload {
            name: "denied",
            label: "denied pod (mutate + validate, denied by pod.images)",
            calls: vec![
                ("mutate", denied.clone()),
                ("validate", bodies::mutated(&denied)),
            ],
        },
    ]
}

pub fn requests(w: &Workload, opa: bool) -> Vec<Request> {
    w.calls
        .iter()
        .map(|(hook, review)| Request {
            path: if opa {
                format!("{OPA_PREFIX}/{hook}")
            } else {
                format!("/{hook}")
            },
            body: serde_json::to_vec(review).expect("serialisable"),
        })
        .collect()
}

/// A copy of the shipped policies (tests left out) with the benchmark's one setting.
fn policy_dir(into: &Path) {
    let src = root().join("policies");
    let files = sandgate::policy::list(&src).expect("policies");
    for f in files.policies.iter().chain(&files.data) {
        let rel = f.strip_prefix(&src).expect("under policies/");
        let dest = into.join(rel);
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(f, &dest).expect("copy policy");
    }
    let settings = into.join("settings.yaml");
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&settings).expect("settings"))
            .expect("settings YAML");
    doc["settings"]["allowedRegistries"] = serde_yaml::to_value(["docker.io"]).expect("yaml");
    std::fs::write(&settings, serde_yaml::to_string(&doc).expect("yaml")).expect("write");
}

fn spawn(cmd: &mut Command, what: &str) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"))
}

/// One request on its own connection; the parsed JSON answer.
pub async fn once(addr: &str, tls: &tokio_rustls::TlsConnector, path: &str, body: &[u8]) -> Value {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut s = tls.connect(name, tcp).await.expect("TLS");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    let (headers, payload) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(headers.starts_with("HTTP/1.1 200"), "{path}: {headers}");
    serde_json::from_str(payload).unwrap_or_else(|e| panic!("{path}: {e}: {payload}"))
}

/// What must agree: the verdict, its message and warnings, and the object after the patch.
pub fn answer(resp: &Value, review: &Value) -> Value {
    let r = &resp["response"];
    let mut object = review["request"]["object"].clone();
    if let Some(p) = r["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(p)
            .expect("base64 patch");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("JSONPatch");
        json_patch::patch(&mut object, &patch).expect("patch applies");
    }
    json!({"uid": r["uid"], "allowed": r["allowed"], "message": r["status"]["message"],
           "warnings": r.get("warnings").cloned().unwrap_or(json!([])), "object": object})
}

/// Both servers, on loopback with the same certificate, killed on drop.
pub struct Servers {
    pub sandgate: Child,
    pub opa: Child,
    pub sandgate_addr: String,
    pub opa_addr: String,
    pub tls: tokio_rustls::TlsConnector,
    _dir: tempfile::TempDir,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for c in [&mut self.sandgate, &mut self.opa] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Servers {
    /// Starts `sandgate serve --dev` and `opa run --server` on the benchmark's copy of
    /// the shipped policies, and waits until both listen.
    pub fn start(sandgate: &Path, opa: &Path) -> Servers {
        let dir = tempfile::tempdir().expect("temp dir");
        let policies = dir.path().join("policies");
        policy_dir(&policies);
        let certs = dir.path().join("certs");
        let sandgate_addr = format!("127.0.0.1:{}", super::free_port());
        let probes = format!("127.0.0.1:{}", super::free_port());
        let sg = spawn(
            Command::new(sandgate)
                .args(["serve", "--dev", "--addr", &sandgate_addr])
                .args(["--probe-addr", &probes])
                .arg("--certs-dir")
                .arg(&certs)
                .arg("--policies")
                .arg(&policies)
                .env("RUST_LOG", "warn"),
            "sandgate",
        );
        super::wait_listening(&sandgate_addr, "sandgate");
        let opa_addr = format!("127.0.0.1:{}", super::free_port());
        let op = spawn(
            Command::new(opa)
                .args(["run", "--server", "--addr", &opa_addr])
                .args(["--log-level", "error", "--skip-version-check"])
                .args(["--ignore", "*_test.rego"])
                .arg("--tls-cert-file")
                .arg(certs.join("tls.crt"))
                .arg("--tls-private-key-file")
                .arg(certs.join("tls.key"))
                .arg(&policies)
                .arg(root().join("bench/opa/webhook.rego")),
            "opa",
        );
        let servers = Servers {
            sandgate: sg,
            opa: op,
            sandgate_addr,
            opa_addr,
            tls: super::connector(&certs.join("ca.crt")),
            _dir: dir,
        };
        super::wait_listening(&servers.opa_addr, "opa");
        servers
    }

    /// Sends `review` to both servers' `hook` ("mutate" or "validate") and fails
    /// unless the answers agree; returns the (normalised) answer.
    pub async fn agree(&self, hook: &str, review: &Value) -> Value {
        let body = serde_json::to_vec(review).expect("serialisable");
        let ours = once(&self.sandgate_addr, &self.tls, &format!("/{hook}"), &body).await;
        let path = format!("{OPA_PREFIX}/{hook}");
        let theirs = once(&self.opa_addr, &self.tls, &path, &body).await;
        let (a, b) = (answer(&ours, review), answer(&theirs, review));
        assert_eq!(a, b, "/{hook}: sandgate and OPA disagree on {review}");
        a
    }
}
