//! A real control plane for the end-to-end tests: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok (fake gVisor nodes) on loopback,
//! with sandgate's webhook running in process and registered exactly as in `deploy/`
//! (same selectors and rules; `clientConfig.url` and `caBundle` instead of the Service).
//!
//! One control plane per test binary, started on first use. Every process it starts is
//! recorded in a pid directory watched by a small watchdog process, which kills them
//! and removes the temporary directory when the test binary exits, even on a panic or
//! an abort. Startup failures name the component and show the end of its log.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sandgate::app::{self, App, PolicySource, Settings};
use sandgate::config::Config;
use sandgate::server::{ServeOptions, devcerts, tls};
use serde_json::{Value, json};

/// The shared reconciler's full-audit interval (short, so tests see a sweep soon).
pub const SHARED_AUDIT_INTERVAL: &str = "--audit-interval=10";

/// The user of [`Cluster::user_kubeconfig`].
pub const PLAIN_USER: &str = "e2e-user";
/// The name of the real node, when there is one (its kubelet's identity).
pub const REAL_NODE: &str = "sandgate-node";

/// What runs the pods: kwok's fake nodes, or one real node brought up by `start`.
#[derive(Clone, Copy)]
pub enum Nodes {
    Kwok,
    // Constructed by the real-node test binary (tests/realnode), which shares this file.
    #[allow(dead_code)]
    Real(fn(&NodeContext) -> Result<(), String>),
    /// A real node and a cluster without sandgate: no CRDs, RuntimeClass, RBAC,
    /// webhook registration or reconciler (tests/install puts them there with Helm).
    #[allow(dead_code)]
    Bare(fn(&NodeContext) -> Result<(), String>),
}

/// What a real node needs from the control plane.
#[allow(dead_code)] // read by tests/realnode
pub struct NodeContext<'a> {
    /// The test bed's directory (logs/, pids/; removed at exit).
    pub dir: &'a Path,
    /// kubectl as the admin.
    pub kubectl: &'a dyn Fn(&[&str]) -> Output,
    /// The admin's kubeconfig (kube-router's).
    pub admin_kubeconfig: &'a Path,
    /// The kubelet's kubeconfig (user `system:node:<REAL_NODE>`).
    pub node_kubeconfig: &'a Path,
    /// The CA of every client certificate.
    pub ca: &'a Path,
}

pub struct Cluster {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    pub reconciler_kubeconfig: PathBuf,
    /// Authenticates as [`PLAIN_USER`], who has only the RBAC a test grants.
    pub user_kubeconfig: PathBuf,
    /// Authenticates as agent-sandbox's controller (its ServiceAccount's name).
    #[allow(dead_code)] // used by the upstream tests of tests/e2e
    pub upstream_kubeconfig: PathBuf,
    dir: PathBuf,
    /// The shared reconciler process and its probe port.
    reconciler: Mutex<Option<(Child, u16)>>,
    webhook: Mutex<Webhook>,
    /// Tests take it shared; a test that stops the webhook takes it exclusively.
    pub gate: RwLock<()>,
    /// The apiserver's port on 127.0.0.1.
    #[allow(dead_code)]
    pub api_port: u16,
}

/// sandgate's webhook, in process, started through the same `App` as `main`.
struct Webhook {
    runtime: tokio::runtime::Runtime,
    app: App,
    running: Option<app::Running>,
    addr: SocketAddr,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The shared control plane with kwok's nodes; the first caller starts it.
pub fn cluster() -> &'static Cluster {
    cluster_with(Nodes::Kwok)
}

/// The shared control plane; the first caller starts it with `nodes` (one kind per
/// test binary).
pub fn cluster_with(nodes: Nodes) -> &'static Cluster {
    match CLUSTER.get_or_init(|| {
        start(nodes).map_err(|e| format!("test control plane failed to start:\n{e}"))
    }) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Where the control-plane binaries are: KUBEBUILDER_ASSETS when it holds
/// kube-apiserver, else the cache the build script fills (building on first use).
fn binaries() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("KUBEBUILDER_ASSETS") {
        let dir = PathBuf::from(dir);
        if dir.join("kube-apiserver").is_file() {
            return Ok(dir);
        }
    }
    let script = root().join("scripts/build-controlplane.sh");
    eprintln!("control plane: building or reusing the binaries (first build: several minutes)...");
    let status = Command::new("bash")
        .arg(&script)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!("{} failed ({status})", script.display()));
    }
    let out = Command::new("bash")
        .arg(&script)
        .arg("--print-dir")
        .output()
        .map_err(|e| e.to_string())?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A binary from the control-plane directory, or next to it (KUBEBUILDER_ASSETS may hold
/// only kube-apiserver and etcd; the rest then comes from the build script's cache).
fn find(bin: &Path, name: &str) -> Result<PathBuf, String> {
    let p = bin.join(name);
    if p.is_file() {
        return Ok(p);
    }
    if name == "etcd" {
        return etcd_bin_vendored::etcd_bin_path()
            .map(Path::to_path_buf)
            .map_err(|e| e.to_string());
    }
    let cached = binaries_from_script()?;
    let p = cached.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{name} not found in {} nor {}",
            bin.display(),
            cached.display()
        ))
    }
}

fn binaries_from_script() -> Result<PathBuf, String> {
    built_by("scripts/build-controlplane.sh")
}

/// Runs a build script of ours (`scripts/build-*.sh`: build or reuse, cached by inputs)
/// and returns the directory it prints with `--print-dir`.
pub fn built_by(script: &str) -> Result<PathBuf, String> {
    let script = root().join(script);
    let status = Command::new("bash")
        .arg(&script)
        .env_remove("KUBEBUILDER_ASSETS")
        .status()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!("{} failed ({status})", script.display()));
    }
    let out = Command::new("bash")
        .arg(&script)
        .arg("--print-dir")
        .env_remove("KUBEBUILDER_ASSETS")
        .output()
        .map_err(|e| e.to_string())?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

struct Pki {
    files: PathBuf,
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// CA, apiserver serving certificate, admin client certificate, service-account keys.
fn pki(dir: &Path) -> Result<Pki, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let e = |e: rcgen::Error| e.to_string();
    let now = time::OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "sandgate-e2e-ca");
    ca.not_before = now - time::Duration::days(1);
    ca.not_after = now + time::Duration::days(30);
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let issuer = Issuer::new(ca, ca_key);

    let serving_key = KeyPair::generate().map_err(e)?;
    let mut serving = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "kubernetes.default.svc".to_string(),
        // The real node's gateway, where its pods reach the apiserver (tests/install).
        "10.244.0.1".to_string(),
    ])
    .map_err(e)?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving.not_before = now - time::Duration::days(1);
    serving.not_after = now + time::Duration::days(30);
    let serving_cert = serving.signed_by(&serving_key, &issuer).map_err(e)?;

    // A client certificate for a user (the common name) in some groups.
    let client = |name: &str, groups: &[&str]| -> Result<(String, String), String> {
        let key = KeyPair::generate().map_err(e)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        params.distinguished_name.push(DnType::CommonName, name);
        for g in groups {
            params.distinguished_name.push(DnType::OrganizationName, *g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        let cert = params.signed_by(&key, &issuer).map_err(e)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let clients = [
        ("admin", client("e2e-admin", &["system:masters"])?),
        // The reconciler authenticates as sandgate's ServiceAccount would in a cluster,
        // so deploy/rbac.yaml grants exactly what it gets and the webhook's
        // template-label rule sees the production identity.
        (
            "reconciler",
            client(sandgate::config::SANDGATE_SERVICE_ACCOUNT, &[])?,
        ),
        // A namespace-admin-like user with no group, for tests of what a non-admin may do.
        ("user", client(PLAIN_USER, &[])?),
        // The real node's kubelet, as the Node authorizer knows nodes.
        (
            "node",
            client(&format!("system:node:{REAL_NODE}"), &["system:nodes"])?,
        ),
        // kubernetes-sigs/agent-sandbox's controller, as its ServiceAccount (the identity
        // sandgate's configuration trusts for upstream's labels and policies).
        (
            "agent-sandbox",
            client(
                sandgate::contract::upstream::CONTROLLER,
                &[
                    "system:serviceaccounts",
                    "system:serviceaccounts:agent-sandbox-system",
                ],
            )?,
        ),
    ];

    let sa_key = KeyPair::generate().map_err(e)?;
    let files = dir.join("pki");
    std::fs::create_dir_all(&files).map_err(|e| e.to_string())?;
    write(&files.join("ca.crt"), &ca_cert.pem())?;
    write(&files.join("apiserver.crt"), &serving_cert.pem())?;
    write(&files.join("apiserver.key"), &serving_key.serialize_pem())?;
    for (name, (cert, key)) in &clients {
        write(&files.join(format!("{name}.crt")), cert)?;
        write(&files.join(format!("{name}.key")), key)?;
    }
    write(&files.join("sa.key"), &sa_key.serialize_pem())?;
    write(&files.join("sa.pub"), &sa_key.public_key_pem())?;
    Ok(Pki { files })
}

/// An admin kubeconfig (client certificate in system:masters), for kubectl too.
fn write_kubeconfig(path: &Path, server: &str, pki: &Pki) -> Result<(), String> {
    write_kubeconfig_for(path, server, pki, "admin")
}

/// A kubeconfig authenticating with `<user>.crt` / `<user>.key`.
fn write_kubeconfig_for(path: &Path, server: &str, pki: &Pki, user: &str) -> Result<(), String> {
    let b64 = |p: &str| -> Result<String, String> {
        let bytes = std::fs::read(pki.files.join(p)).map_err(|e| e.to_string())?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: admin}}\ncurrent-context: e2e\n",
        b64("ca.crt")?,
        b64(&format!("{user}.crt"))?,
        b64(&format!("{user}.key"))?
    );
    write(path, &text)
}

/// Starts a component with its output in `<dir>/logs/<name>.log` and its pid recorded
/// for the watchdog.
fn spawn(dir: &Path, name: &str, bin: &Path, args: &[String]) -> Result<Child, String> {
    let log_path = dir.join("logs").join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {name} ({}): {e}", bin.display()))?;
    write(
        &dir.join("pids").join(format!("{name}.pid")),
        &child.id().to_string(),
    )?;
    Ok(child)
}

/// Once this process is gone: runs `<dir>/teardown` if a real node wrote one, kills
/// everything in `<dir>/pids` and removes `dir`.
fn watchdog(dir: &Path) -> Result<(), String> {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
         [ -x '{d}'/teardown ] && '{d}'/teardown >'{d}'/teardown.log 2>&1; \
         for f in '{d}'/pids/*.pid; do [ -f \"$f\" ] && kill $(cat \"$f\") 2>/dev/null; done; sleep 1; \
         for f in '{d}'/pids/*.pid; do [ -f \"$f\" ] && kill -9 $(cat \"$f\") 2>/dev/null; done; \
         rm -rf '{d}'",
        pid = std::process::id(),
        d = dir.display()
    );
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("cannot start the watchdog: {e}"))
}

fn wait_until(
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if ok()? {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(format!("{what}: not ready after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Fails with the component's log tail when it has exited.
fn alive(child: &mut Child, name: &str, dir: &Path) -> Result<(), String> {
    if let Ok(Some(status)) = child.try_wait() {
        return Err(format!(
            "{name} exited ({status}); last lines of its log:\n{}",
            tail(&dir.join("logs").join(format!("{name}.log")), 30)
        ));
    }
    Ok(())
}

fn start(nodes: Nodes) -> Result<Cluster, String> {
    let bin = binaries()?;
    let dir = std::env::temp_dir().join(format!("sandgate-e2e-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir.join("pids")).map_err(|e| e.to_string())?;
    watchdog(&dir)?;
    let pki = pki(&dir)?;
    let p = |f: &str| pki.files.join(f).display().to_string();

    // etcd
    let (client_port, peer_port) = (free_port(), free_port());
    let etcd_url = format!("http://127.0.0.1:{client_port}");
    let mut etcd = spawn(
        &dir,
        "etcd",
        &find(&bin, "etcd")?,
        &[
            "--name=e2e".into(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=e2e=http://127.0.0.1:{peer_port}"),
            "--initial-cluster-state=new".into(),
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ],
    )?;
    wait_until("etcd", Duration::from_secs(30), || {
        alive(&mut etcd, "etcd", &dir)?;
        Ok(std::net::TcpStream::connect(("127.0.0.1", client_port)).is_ok())
    })?;

    // kube-apiserver
    let api_port = free_port();
    let server = format!("https://127.0.0.1:{api_port}");
    let mut apiserver = spawn(
        &dir,
        "kube-apiserver",
        &find(&bin, "kube-apiserver")?,
        &[
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--authorization-mode=Node,RBAC".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--endpoint-reconciler-type=none".into(),
            "--allow-privileged=true".into(),
            // exec and logs on a real node: the apiserver calls its kubelet as the admin.
            format!("--kubelet-client-certificate={}", p("admin.crt")),
            format!("--kubelet-client-key={}", p("admin.key")),
            "--kubelet-preferred-address-types=InternalIP".into(),
            // Webhooks behind a Service are called at an endpoint's address: there is
            // no Service proxy on the host (tests/install calls sandgate that way).
            "--enable-aggregator-routing=true".into(),
        ],
    )?;
    let kubeconfig = dir.join("kubeconfig");
    write_kubeconfig(&kubeconfig, &server, &pki)?;
    let kubectl_bin = find(&bin, "kubectl")?;
    let kc = |args: &[&str]| -> Output {
        Command::new(&kubectl_bin)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args)
            .output()
            .expect("kubectl runs")
    };
    wait_until("kube-apiserver", Duration::from_secs(60), || {
        alive(&mut apiserver, "kube-apiserver", &dir)?;
        Ok(kc(&["get", "--raw", "/readyz"]).status.success())
    })?;

    // controller-manager, scheduler, kwok
    let kcfg = format!("--kubeconfig={}", kubeconfig.display());
    let mut cm = spawn(
        &dir,
        "kube-controller-manager",
        &find(&bin, "kube-controller-manager")?,
        &[
            kcfg.clone(),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            "--leader-elect=false".into(),
            format!("--service-account-private-key-file={}", p("sa.key")),
            format!("--root-ca-file={}", p("ca.crt")),
            // The default 20 QPS would make the garbage collector, not sandgate, the
            // bottleneck of the claim benchmark.
            "--kube-api-qps=500".into(),
            "--kube-api-burst=1000".into(),
            // A real node's pod network (its CNI and kube-router read the node's CIDR).
            "--allocate-node-cidrs=true".into(),
            "--cluster-cidr=10.244.0.0/16".into(),
            "--node-cidr-mask-size=24".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
        ],
    )?;
    let mut sched = spawn(
        &dir,
        "kube-scheduler",
        &find(&bin, "kube-scheduler")?,
        &[
            kcfg.clone(),
            format!("--authentication-kubeconfig={}", kubeconfig.display()),
            format!("--authorization-kubeconfig={}", kubeconfig.display()),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            "--leader-elect=false".into(),
            "--kube-api-qps=500".into(),
            "--kube-api-burst=1000".into(),
        ],
    )?;
    let bare = matches!(nodes, Nodes::Bare(_));
    let mut kwok = if matches!(nodes, Nodes::Real(_) | Nodes::Bare(_)) {
        None
    } else {
        Some(spawn_kwok(&dir, &bin, &kcfg)?)
    };

    // The API sandgate ships, the RuntimeClass, and the nodes.
    let apply = |args: &[&str], what: &str| -> Result<(), String> {
        let o = kc(args);
        if o.status.success() {
            Ok(())
        } else {
            Err(format!("{what}: {}", String::from_utf8_lossy(&o.stderr)))
        }
    };
    if !bare {
        let crds = root().join("deploy/crds").display().to_string();
        apply(
            &["apply", "--server-side", "-f", &crds],
            "applying deploy/crds",
        )?;
        // `kubectl wait` errors while a CRD has no conditions yet: poll it instead.
        wait_until("CRDs established", Duration::from_secs(60), || {
            Ok(kc(&[
                "wait",
                "--for=condition=Established",
                "--timeout=5s",
                "crd/sandboxtemplates.sandbox.gke.io",
                "crd/sandboxes.sandbox.gke.io",
                "crd/sandboxclaims.sandbox.gke.io",
            ])
            .status
            .success())
        })?;
        let rc = root()
            .join("deploy/runtimeclass.yaml")
            .display()
            .to_string();
        apply(&["apply", "-f", &rc], "applying deploy/runtimeclass.yaml")?;
    }
    // A plain runc class as many clusters have, so a pod asking for it reaches sandgate
    // instead of being refused by the RuntimeClass admission plugin for not existing.
    let runc = r#"{"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "runc"}, "handler": "runc"}"#;
    let runc_path = dir.join("runc.json");
    write(&runc_path, runc)?;
    apply(
        &["apply", "-f", &runc_path.display().to_string()],
        "creating RuntimeClass runc",
    )?;
    wait_until("default ServiceAccount", Duration::from_secs(60), || {
        alive(&mut cm, "kube-controller-manager", &dir)?;
        alive(&mut sched, "kube-scheduler", &dir)?;
        Ok(kc(&["get", "serviceaccount", "default", "-n", "default"])
            .status
            .success())
    })?;
    match (nodes, kwok.as_mut()) {
        (Nodes::Real(start_node) | Nodes::Bare(start_node), _) => {
            let node_kubeconfig = dir.join("node.kubeconfig");
            write_kubeconfig_for(&node_kubeconfig, &server, &pki, "node")?;
            start_node(&NodeContext {
                dir: &dir,
                kubectl: &kc,
                admin_kubeconfig: &kubeconfig,
                node_kubeconfig: &node_kubeconfig,
                ca: &pki.files.join("ca.crt"),
            })
            .map_err(|e| format!("the real node: {e}"))?;
        }
        (Nodes::Kwok, Some(kwok)) => {
            let nodes = dir.join("nodes.json");
            write(
                &nodes,
                &serde_json::to_string(&nodes_list()).map_err(|e| e.to_string())?,
            )?;
            apply(
                &["apply", "-f", &nodes.display().to_string()],
                "creating kwok nodes",
            )?;
            wait_until("kwok nodes", Duration::from_secs(60), || {
                alive(kwok, "kwok", &dir)?;
                let o = kc(&[
                    "get",
                    "nodes",
                    "-o",
                    "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
                ]);
                let text = String::from_utf8_lossy(&o.stdout).to_string();
                Ok(text.split_whitespace().filter(|s| *s == "True").count() == 3)
            })?;
        }
        (Nodes::Kwok, None) => return Err("kwok did not start".into()),
    }

    // sandgate, in process, registered like deploy/webhooks.yaml (a bare cluster starts
    // it unregistered).
    let webhook = start_webhook(&dir, &kubeconfig)?;
    if !bare {
        let registration = webhook_configurations(webhook.addr, &webhook_ca(&dir)?)?;
        let reg_path = dir.join("webhooks.json");
        write(&reg_path, &registration)?;
        apply(
            &["apply", "-f", &reg_path.display().to_string()],
            "registering the webhooks",
        )?;
    }

    // The reconciler's namespace, identity and RBAC exactly as deploy/ ships them, and
    // the PolicyReport CRDs its audit writes (installed as the README says: if absent).
    let reports = root()
        .join("deploy/policy-reports.yaml")
        .display()
        .to_string();
    apply(
        &["create", "-f", &reports],
        "installing the PolicyReport CRDs",
    )?;
    for f in ["namespace.yaml", "serviceaccount.yaml", "rbac.yaml"] {
        if bare {
            break;
        }
        let path = root().join("deploy").join(f).display().to_string();
        apply(&["apply", "-f", &path], &format!("applying deploy/{f}"))?;
    }
    let reconciler_kubeconfig = dir.join("reconciler.kubeconfig");
    write_kubeconfig_for(&reconciler_kubeconfig, &server, &pki, "reconciler")?;
    let user_kubeconfig = dir.join("user.kubeconfig");
    write_kubeconfig_for(&user_kubeconfig, &server, &pki, "user")?;
    let upstream_kubeconfig = dir.join("agent-sandbox.kubeconfig");
    write_kubeconfig_for(&upstream_kubeconfig, &server, &pki, "agent-sandbox")?;

    // Children are owned by the watchdog from here on.
    std::mem::forget((etcd, apiserver, cm, sched, kwok));
    let cluster = Cluster {
        bin: kubectl_bin.parent().map(Path::to_path_buf).unwrap_or(bin),
        kubeconfig,
        reconciler_kubeconfig,
        user_kubeconfig,
        upstream_kubeconfig,
        dir: dir.clone(),
        reconciler: Mutex::new(None),
        webhook: Mutex::new(webhook),
        gate: RwLock::new(()),
        api_port,
    };
    if !bare {
        cluster.start_reconciler();
    }
    Ok(cluster)
}

/// kwok, managing the fake nodes of [`nodes_list`].
fn spawn_kwok(dir: &Path, bin: &Path, kcfg: &str) -> Result<Child, String> {
    spawn(
        dir,
        "kwok",
        &find(bin, "kwok")?,
        &[
            kcfg.to_string(),
            "-c".into(),
            root()
                .join("tests/controlplane/kwok/stages.yaml")
                .display()
                .to_string(),
            // More pod stages at a time than kwok's default 4 (about 8 pods Ready/s),
            // so pool refills measure sandgate, not kwok.
            "-c".into(),
            root()
                .join("tests/controlplane/kwok/config.yaml")
                .display()
                .to_string(),
            "--manage-all-nodes=false".into(),
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
            "--node-lease-duration-seconds=40".into(),
            "--server-address=127.0.0.1:0".into(),
            "--cidr=10.244.0.0/24".into(),
            "--node-ip=127.0.0.1".into(),
        ],
    )
}

/// Two fake gVisor nodes (labelled and tainted like deploy/runtimeclass.yaml expects)
/// and one plain node for pods outside sandbox scope.
fn nodes_list() -> Value {
    let node = |name: &str, gvisor: bool| {
        let mut n = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kwok"}
            },
            "spec": {},
            "status": {
                "allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "2000", "ephemeral-storage": "20Ti"},
                "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "2000", "ephemeral-storage": "20Ti"},
                "phase": "Running"
            }
        });
        if gvisor {
            n["metadata"]["labels"]["sandbox.gke.io/runtime"] = json!("gvisor");
            n["spec"]["taints"] = json!([{"key": "sandbox.gke.io/runtime", "value": "gvisor", "effect": "NoSchedule"}]);
        }
        n
    };
    json!({"apiVersion": "v1", "kind": "List", "items": [node("gvisor-1", true), node("gvisor-2", true), node("plain-1", false)]})
}

fn webhook_ca(dir: &Path) -> Result<String, String> {
    std::fs::read_to_string(devcerts::DevCerts::in_dir(&dir.join("webhook-certs")).ca_cert)
        .map_err(|e| e.to_string())
}

fn start_webhook(dir: &Path, kubeconfig: &Path) -> Result<Webhook, String> {
    let (certs, _) = devcerts::ensure(&dir.join("webhook-certs")).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // A fixed port, so a restarted webhook comes back where the apiserver calls it.
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let settings = Settings {
        config: Config::default(),
        policies: PolicySource::Dir {
            dir: root().join("policies"),
            deadline: Duration::from_millis(100),
        },
        webhook: Some(ServeOptions {
            addr,
            probe_addr: None,
            certs: tls::CertSource::Files(certs.serving),
            shutdown_grace: Duration::from_secs(2),
            cert_poll: Duration::from_secs(60),
            policy_poll: Duration::from_secs(60),
        }),
        probe_addr: None,
        reconciler: None,
        runtime_check_every: Duration::from_millis(500),
        shutdown_delay: Duration::ZERO,
    };
    let kubeconfig = kubeconfig.to_path_buf();
    let (app, running) = runtime.block_on(async move {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).map_err(|e| e.to_string())?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
        let app = App::new(settings, Some(client)).map_err(|e| e.to_string())?;
        let running = app
            .start()
            .await
            .map_err(|e| format!("sandgate webhook: {e}"))?;
        Ok::<_, String>((app, running))
    })?;
    Ok(Webhook {
        runtime,
        app,
        running: Some(running),
        addr,
    })
}

/// deploy/webhooks.yaml with each service reference replaced by the in-process URL.
fn webhook_configurations(addr: SocketAddr, ca_pem: &str) -> Result<String, String> {
    let text =
        std::fs::read_to_string(root().join("deploy/webhooks.yaml")).map_err(|e| e.to_string())?;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut items = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let y = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
            .map_err(|e| e.to_string())?;
        let mut v: Value = serde_json::to_value(y).map_err(|e| e.to_string())?;
        if v.is_null() {
            continue;
        }
        if let Some(a) = v["metadata"]
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            a.remove("cert-manager.io/inject-ca-from");
        }
        for w in v["webhooks"]
            .as_array_mut()
            .ok_or("webhooks.yaml without webhooks")?
        {
            let path = w["clientConfig"]["service"]["path"]
                .as_str()
                .ok_or("a webhook without a service path")?
                .to_string();
            w["clientConfig"] = json!({"url": format!("https://{addr}{path}"), "caBundle": ca});
        }
        items.push(v);
    }
    serde_json::to_string(&json!({"apiVersion": "v1", "kind": "List", "items": items}))
        .map_err(|e| e.to_string())
}

/// The sandgate binary: Cargo names it to tests and benchmarks; an example (the
/// hand-run test bed) finds it beside itself in the target directory.
fn sandgate_exe() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_sandgate") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("sandgate")))
        .unwrap_or_else(|| PathBuf::from("sandgate"))
}

/// A `sandgate reconcile` process as the sandgate identity, its pid recorded for the
/// watchdog. Returns the child and its probe port.
pub fn spawn_reconciler(c: &Cluster, name: &str, extra: &[&str]) -> (Child, u16) {
    let port = free_port();
    let mut args = vec![
        "reconcile".to_string(),
        format!("--probe-addr=127.0.0.1:{port}"),
        "--lease-duration=3".to_string(),
        "--ready-grace=60".to_string(),
        format!("--identity={name}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    (
        spawn_sandgate(c, name, &args, &c.reconciler_kubeconfig),
        port,
    )
}

/// kubernetes-sigs/agent-sandbox's own controller (`bin`, built from its Go module),
/// with its extensions (templates, claims, warm pools), as its ServiceAccount, logging
/// to `logs/agent-sandbox.log`, its pid recorded for the watchdog.
#[allow(dead_code)] // used by the upstream tests of tests/e2e
pub fn spawn_upstream_controller(c: &Cluster, bin: &Path) -> Result<Child, String> {
    let args = [
        "--extensions".to_string(),
        "--leader-elect=false".to_string(),
        format!("--metrics-bind-address=127.0.0.1:{}", free_port()),
        format!("--health-probe-bind-address=127.0.0.1:{}", free_port()),
        format!("--kubeconfig={}", c.upstream_kubeconfig.display()),
    ];
    spawn(&c.dir, "agent-sandbox", bin, &args)
}

/// A sandgate process with `args`, talking to the cluster through `kubeconfig`, logging
/// to `logs/<name>.log`, its pid recorded for the watchdog.
pub fn spawn_sandgate(c: &Cluster, name: &str, args: &[String], kubeconfig: &Path) -> Child {
    let log_path = c.dir.join("logs").join(format!("{name}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("log file");
    let child = Command::new(sandgate_exe())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("SANDGATE_E2E_RECONCILER_LOG").unwrap_or_else(|_| "info".into()),
        )
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("sandgate starts");
    let _ = std::fs::write(
        c.dir.join("pids").join(format!("{name}.pid")),
        child.id().to_string(),
    );
    child
}

/// GET over plain HTTP on loopback; the body of a 200, else None.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

impl Cluster {
    /// Starts the shared reconciler (if not running).
    pub fn start_reconciler(&self) {
        let mut r = self.reconciler.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(spawn_reconciler(
                self,
                "reconciler",
                &[SHARED_AUDIT_INTERVAL],
            ));
        }
    }

    /// The shared reconciler's probe port (its /metrics), while it runs.
    #[allow(dead_code)] // used by the e2e binary, not by every user of this file
    pub fn reconciler_port(&self) -> Option<u16> {
        let r = self.reconciler.lock().unwrap_or_else(|e| e.into_inner());
        r.as_ref().map(|(_, port)| *port)
    }

    /// The shared reconciler's process id (benchmarks read its peak memory).
    #[allow(dead_code)]
    pub fn reconciler_pid(&self) -> Option<u32> {
        let r = self.reconciler.lock().unwrap_or_else(|e| e.into_inner());
        r.as_ref().map(|(child, _)| child.id())
    }

    /// Kills the shared reconciler (SIGKILL: no graceful lease release).
    pub fn kill_reconciler(&self) {
        let mut r = self.reconciler.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((mut child, _)) = r.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The test bed's directory (the real node keeps its containerd under it).
    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a process of the test bed logs.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    /// Log of a reconciler process, for failure messages.
    pub fn reconciler_log(&self, name: &str) -> String {
        let text = tail(&self.dir.join("logs").join(format!("{name}.log")), 4000);
        if std::env::var("SANDGATE_E2E_RECONCILER_LOG").is_ok() {
            let _ = std::fs::write("/tmp/reconciler-debug.log", &text);
        }
        text.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("leader"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs kubectl as the admin and returns its output.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// Runs kubectl as [`PLAIN_USER`].
    pub fn kubectl_as_user(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write as _;
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.user_kubeconfig.display()))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        drop(pipe);
        child.wait_with_output().expect("kubectl output")
    }

    /// The in-process webhook's readiness (what its /readyz answers).
    pub fn webhook_ready(&self) -> Result<(), Vec<String>> {
        let w = self.webhook.lock().unwrap_or_else(|e| e.into_inner());
        w.app.readiness().check()
    }

    /// One metric of the in-process webhook (the first sample of that name).
    pub fn webhook_metric(&self, name: &str) -> Option<f64> {
        let w = self.webhook.lock().unwrap_or_else(|e| e.into_inner());
        w.app
            .metrics_text()
            .lines()
            .find(|l| l.split(['{', ' ']).next() == Some(name))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write as _;
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        drop(pipe);
        child.wait_with_output().expect("kubectl output")
    }

    /// Admission requests for objects of `kind` the webhook has answered so far (by
    /// kind: the shared reconciler may be creating pool pods meanwhile).
    pub fn webhook_requests(&self, kind: &str) -> u64 {
        let w = self.webhook.lock().unwrap_or_else(|e| e.into_inner());
        let label = format!("kind=\"{kind}\"");
        w.app
            .metrics_text()
            .lines()
            .filter(|l| l.starts_with("sandgate_admission_requests_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Stops the webhook (the apiserver then cannot reach it).
    pub fn stop_webhook(&self) {
        let mut w = self.webhook.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = w.running.take() {
            w.runtime
                .block_on(running.shutdown())
                .expect("webhook stops");
        }
    }

    /// Starts it again on the same address.
    pub fn restart_webhook(&self) {
        let mut w = self.webhook.lock().unwrap_or_else(|e| e.into_inner());
        if w.running.is_none() {
            let running = w
                .runtime
                .block_on(w.app.start())
                .expect("webhook restarts on its address");
            w.running = Some(running);
        }
    }
}
