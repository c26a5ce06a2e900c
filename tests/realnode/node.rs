//! One real Kubernetes node for the test suite, beside the test control plane: Debian's
//! containerd with gVisor's runsc (systrap platform) as the `runsc` handler and runc as
//! the default, a kubelet v1.35.4, bridge CNI on a bridge of its own, and kube-router's
//! firewall as the NetworkPolicy engine. The facts of this kind of machine that shape it
//! (cgroup v1, no negative oom_score_adj, no nft queue, a node IP that cannot be
//! loopback) are in the README's "The real node" section and in the patch notes of
//! `gvisor/patch.py`; the binaries and images
//! come from `scripts/build-node.sh` (cached by its inputs).
//!
//! Everything it changes on the machine is undone by `teardown.sh`, which the harness's
//! watchdog runs when the test binary exits however it exits; a node left behind by a
//! killed watchdog is taken down by the next start. Only one real node runs at a time
//! (a lock), since the bridge, the pod network and the kubelet's fixed paths are
//! machine-wide.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{NodeContext, REAL_NODE};

/// The node's bridge and pod network (the only addresses its tests talk to).
pub const BRIDGE: &str = "sgnode0";
pub const POD_CIDR: &str = "10.244.0.0/24";
/// The bridge's address: the pods' gateway and the node's IP (the kubelet refuses
/// a loopback node IP).
pub const GATEWAY: &str = "10.244.0.1";
/// Which node is active, so a later start can take a stale one down.
const ACTIVE: &str = "/run/sandgate-node.dir";
/// Sysctls the kubelet (and the bridge) change; restored at teardown.
const SYSCTLS: [&str; 8] = [
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether a real node can start here. Where it cannot, says why and the caller skips;
/// under `SANDGATE_REQUIRE_REAL_NODE=1` (CI) that fails the test instead.
pub fn can_start() -> bool {
    let Some(why) = unavailable() else {
        return true;
    };
    assert!(
        std::env::var_os("SANDGATE_REQUIRE_REAL_NODE").is_none(),
        "the real node is required (SANDGATE_REQUIRE_REAL_NODE) but cannot start: {why}"
    );
    // Written past libtest's capture, so a passing run still shows it.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED (no real node): {why}");
    false
}

/// Why a real node cannot start here, if it cannot: checked before anything is built
/// or changed.
pub fn unavailable() -> Option<String> {
    if !cfg!(target_os = "linux") {
        return Some("a real node needs Linux".into());
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Some("a real node needs root (it runs containerd and a kubelet)".into());
    }
    for tool in [
        "containerd",
        "ctr",
        "iptables",
        "ipset",
        "ip",
        "debootstrap",
        "gcc",
    ] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "{tool} is not installed (apt-get install containerd containernetworking-plugins iptables ipset iproute2 debootstrap gcc libc6-dev)"
            ));
        }
    }
    if !Path::new("/usr/lib/cni/bridge").exists() {
        return Some(
            "the CNI plugins are not installed (apt-get install containernetworking-plugins)"
                .into(),
        );
    }
    None
}

/// The node's binaries and images, built or reused.
fn build() -> Result<PathBuf, String> {
    eprintln!("real node: building or reusing its binaries and images (first build: ~15 min)...");
    crate::harness::built_by("scripts/build-node.sh")
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let o = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if o.status.success() {
        Ok(o)
    } else {
        Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

fn sh(script: &str) -> Result<Output, String> {
    run(Command::new("bash").arg("-c").arg(script))
}

/// Starts a node process, its output in `logs/<name>.log`, its pid for the teardown.
fn spawn(dir: &Path, name: &str, cmd: &mut Command) -> Result<u32, String> {
    let log = std::fs::File::create(dir.join("logs").join(format!("{name}.log")))
        .map_err(|e| e.to_string())?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let pid = child.id();
    write(
        &dir.join("pids").join(format!("{name}.pid")),
        &pid.to_string(),
    )?;
    // The teardown owns it from here (by pid).
    std::mem::forget(child);
    Ok(pid)
}

fn tail(dir: &Path, name: &str) -> String {
    let text =
        std::fs::read_to_string(dir.join("logs").join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

fn running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn wait_for(
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let start = Instant::now();
    while !ok()? {
        if start.elapsed() > timeout {
            return Err(format!("{what}: not ready after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

/// Takes a node left behind by an earlier run down (its watchdog was killed).
fn take_down_stale() {
    let Ok(stale) = std::fs::read_to_string(ACTIVE) else {
        return;
    };
    let stale = stale.trim();
    eprintln!("real node: taking down a node left by an earlier run ({stale})");
    // Its watchdog, if it has not started yet, then finds no teardown to run.
    let _ = std::fs::remove_file(Path::new(stale).join("teardown"));
    let _ = Command::new("bash")
        .arg(root().join("tests/realnode/teardown.sh"))
        .args([stale, BRIDGE])
        .status();
    // The previous test binary's watchdog may be tearing the same node down right now
    // (it starts when that binary exits): wait for it, so it cannot remove the bridge
    // this node is about to make.
    let pattern = format!("teardown.sh {stale} ");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120)
        && Command::new("pgrep")
            .args(["-f", &pattern])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    {
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = std::fs::remove_file(ACTIVE);
}

/// Brings the node up against the control plane in `ctx`: returns once the Node is
/// Ready, kube-router enforces NetworkPolicies and the images are imported.
pub fn start(ctx: &NodeContext) -> Result<(), String> {
    let cache = build()?;
    let bin = cache.join("bin");
    let dir = ctx.dir;
    take_down_stale();
    // From here on, whatever happens, the watchdog runs the teardown.
    write(&dir.join("node-bin"), &bin.display().to_string())?;
    write(
        &dir.join("teardown"),
        &format!(
            "#!/bin/sh\nexec bash '{}' '{}' '{BRIDGE}'\n",
            root().join("tests/realnode/teardown.sh").display(),
            dir.display()
        ),
    )?;
    sh(&format!("chmod +x '{}/teardown'", dir.display()))?;
    write(Path::new(ACTIVE), &dir.display().to_string())?;

    // Sysctls as they were, then the ones the pod network needs.
    let mut saved = String::new();
    for key in SYSCTLS {
        if let Ok(o) = sh(&format!("sysctl -n {key}")) {
            saved.push_str(&format!(
                "{key}={}\n",
                String::from_utf8_lossy(&o.stdout).trim()
            ));
        }
    }
    write(&dir.join("sysctl.orig"), &saved)?;
    // Machine-wide directories the node's components create when missing.
    if !Path::new("/run/netns").exists() {
        write(&dir.join("created-run-netns"), "")?;
    }
    sh("sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.ipv4.ip_forward=1")
        .map_err(|e| format!("bridge netfilter: {e}"))?;
    // The bridge first: the kubelet needs the node IP on an interface.
    sh(&format!(
        "ip link show {BRIDGE} >/dev/null 2>&1 || {{ ip link add {BRIDGE} type bridge && ip addr add {GATEWAY}/24 dev {BRIDGE}; }}; ip link set {BRIDGE} up"
    ))?;

    let containerd_dir = dir.join("containerd");
    let cni_dir = dir.join("cni");
    for d in [
        &containerd_dir,
        &cni_dir.join("net.d"),
        &dir.join("kubelet"),
        &dir.join("pod-logs"),
    ] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    let sock = containerd_dir.join("containerd.sock");
    write(
        &containerd_dir.join("runsc.toml"),
        &format!(
            "binary_name = \"{runsc}\"\nroot = \"{root}\"\n[runsc_config]\n  # systrap (the default): the KVM platform hangs on this VM's /dev/kvm.\n",
            runsc = bin.join("runsc").display(),
            root = containerd_dir.join("runsc-root").display()
        ),
    )?;
    write(
        &containerd_dir.join("config.toml"),
        &format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # This VM refuses negative oom_score_adj even to root.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]
      runtime_type = "io.containerd.runsc.v1"
      pod_annotations = ["dev.gvisor.*"]
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc.options]
        TypeUrl = "io.containerd.runsc.v1.options"
        ConfigPath = "{d}/runsc.toml"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}/net.d"
"#,
            d = containerd_dir.display(),
            sock = sock.display(),
            cni = cni_dir.display()
        ),
    )?;
    write(
        &cni_dir.join("net.d/10-sandgate-node.conflist"),
        &serde_json::json!({
            "cniVersion": "0.4.0", "name": "sandgate-node",
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": false, "hairpinMode": true,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": cni_dir.join("ipam").display().to_string()}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        })
        .to_string(),
    )?;

    // containerd finds containerd-shim-runsc-v1 on its PATH.
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let containerd = spawn(
        dir,
        "containerd",
        Command::new("containerd")
            .arg("--config")
            .arg(containerd_dir.join("config.toml"))
            .env("PATH", &path),
    )?;
    wait_for("containerd", Duration::from_secs(30), || {
        if !running(containerd) {
            return Err(format!("containerd exited:\n{}", tail(dir, "containerd")));
        }
        Ok(sock.exists())
    })?;
    let images = cache.join("images");
    for image in ["pause.tar", "python.tar"] {
        run(Command::new("ctr")
            .arg("--address")
            .arg(&sock)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(images.join(image)))
        .map_err(|e| format!("importing {image}: {e}"))?;
    }

    // The kubelet: cgroup v1 needs failCgroupV1 false and the cgroupfs driver.
    write(&dir.join("resolv.conf"), &format!("nameserver {GATEWAY}\n"))?;
    let kubelet_port = free_port();
    write(
        &dir.join("kubelet-config.yaml"),
        &format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://{sock}
address: {GATEWAY}
port: {kubelet_port}
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: AlwaysAllow}}
clusterDomain: cluster.local
resolvConf: {d}/resolv.conf
podLogsDir: {d}/pod-logs
serializeImagePulls: false
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 4s
registerWithTaints:
- {{key: sandbox.gke.io/runtime, value: gvisor, effect: NoSchedule}}
"#,
            sock = sock.display(),
            ca = ctx.ca.display(),
            d = dir.display()
        ),
    )?;
    let kubelet = spawn(
        dir,
        "kubelet",
        Command::new(bin.join("kubelet"))
            .arg(format!(
                "--config={}",
                dir.join("kubelet-config.yaml").display()
            ))
            .arg(format!("--kubeconfig={}", ctx.node_kubeconfig.display()))
            .arg(format!("--root-dir={}", dir.join("kubelet").display()))
            .arg(format!("--cert-dir={}", dir.join("kubelet/pki").display()))
            .arg(format!("--hostname-override={REAL_NODE}"))
            .arg(format!("--node-ip={GATEWAY}"))
            .arg("--node-labels=sandbox.gke.io/runtime=gvisor")
            .env("PATH", &path),
    )?;
    let kubectl = ctx.kubectl;
    wait_for("the kubelet's Node Ready", Duration::from_secs(120), || {
        if !running(kubelet) {
            return Err(format!("the kubelet exited:\n{}", tail(dir, "kubelet")));
        }
        let o = kubectl(&[
            "get",
            "node",
            REAL_NODE,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        Ok(String::from_utf8_lossy(&o.stdout).trim() == "True")
    })?;

    // kube-router's firewall exits unless the Node already exists.
    let router = spawn(
        dir,
        "kube-router",
        Command::new(bin.join("kube-router")).args([
            &format!("--kubeconfig={}", ctx.admin_kubeconfig.display()),
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--enable-cni=false",
            "--enable-pod-egress=false",
            &format!("--hostname-override={REAL_NODE}"),
            "--health-port=0",
            "--metrics-port=0",
            "--service-cluster-ip-range=10.0.0.0/24",
        ]),
    )?;
    wait_for("kube-router's firewall", Duration::from_secs(60), || {
        if !running(router) {
            return Err(format!("kube-router exited:\n{}", tail(dir, "kube-router")));
        }
        let o = sh("iptables -S 2>/dev/null | grep -c KUBE-ROUTER || true")?;
        Ok(String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<u32>()
            .unwrap_or(0)
            > 0)
    })?;
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(10250)
}

/// Imports an image archive into the node's containerd, where the kubelet finds it
/// (`imagePullPolicy: Never`: no registry exists here). Used by tests/install.
#[allow(dead_code)]
pub fn import_image(cluster_dir: &Path, archive: &Path) -> Result<(), String> {
    let sock = cluster_dir.join("containerd").join("containerd.sock");
    run(Command::new("ctr")
        .arg("--address")
        .arg(&sock)
        .args(["-n", "k8s.io", "images", "import"])
        .arg(archive))
    .map(|_| ())
}

/// Forwards `listen` (an address on the node's bridge) to the apiserver on loopback, so
/// pods reach it as a cluster's pods reach `kubernetes.default` (there is no Service
/// proxy). Threads, one per connection, for the life of the test binary.
#[allow(dead_code)]
pub fn forward_to_apiserver(listen: &str, api_port: u16) -> Result<(), String> {
    let listener =
        std::net::TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    std::thread::spawn(move || {
        for inbound in listener.incoming().flatten() {
            let Ok(outbound) = std::net::TcpStream::connect(("127.0.0.1", api_port)) else {
                continue;
            };
            let (Ok(mut a), Ok(mut b)) = (inbound.try_clone(), outbound.try_clone()) else {
                continue;
            };
            let (mut inbound, mut outbound) = (inbound, outbound);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut outbound);
                let _ = outbound.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut b, &mut inbound);
                let _ = inbound.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    Ok(())
}
