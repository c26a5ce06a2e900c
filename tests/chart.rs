//! charts/sandgate: `helm lint --strict` in every mode, `helm template` of the defaults
//! equal to deploy/ object for object (Helm's own labels aside), and each switch doing
//! what values.yaml says. helm comes from the Go module proxy (scripts/build-helm.sh,
//! cached).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn helm() -> &'static PathBuf {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let o = Command::new("bash")
            .arg(root().join("scripts/build-helm.sh"))
            .output()
            .expect("scripts/build-helm.sh runs");
        assert!(
            o.status.success(),
            "scripts/build-helm.sh: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        PathBuf::from(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .last()
                .unwrap_or_default()
                .trim(),
        )
    })
}

fn run_helm(args: &[&str]) -> (bool, String, String) {
    let home = std::env::temp_dir().join(format!("sandgate-chart-{}", std::process::id()));
    let o = Command::new(helm())
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("helm runs");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

fn chart() -> String {
    root().join("charts/sandgate").display().to_string()
}

/// `helm template` with `--set` values, as parsed objects.
fn template(sets: &[&str]) -> Result<Vec<Value>, String> {
    let chart = chart();
    let mut args = vec![
        "template",
        "sandgate",
        chart.as_str(),
        "--namespace",
        "sandgate-system",
        "--include-crds",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, stdout, stderr) = run_helm(&args);
    if !ok {
        return Err(stderr);
    }
    Ok(docs(&stdout))
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .filter_map(|d| {
            let y = <serde_yaml::Value as serde::Deserialize>::deserialize(d).ok()?;
            let v: Value = serde_json::to_value(y).ok()?;
            (!v.is_null()).then_some(v)
        })
        .collect()
}

fn key(v: &Value) -> String {
    format!(
        "{}/{}/{}",
        v["kind"].as_str().unwrap_or_default(),
        v["metadata"]["namespace"].as_str().unwrap_or_default(),
        v["metadata"]["name"].as_str().unwrap_or_default()
    )
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// Helm's own labels and annotations (the config checksum, the RuntimeClass's hook) are
/// the only things deploy/ lacks; a
/// ConfigMap's YAML file is compared as YAML, not as text.
fn normalize(mut v: Value) -> Value {
    const HELM_LABELS: [&str; 4] = [
        "helm.sh/chart",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/version",
    ];
    for meta in ["/metadata", "/spec/template/metadata"] {
        if let Some(m) = v.pointer_mut(meta).and_then(Value::as_object_mut) {
            if let Some(labels) = m.get_mut("labels").and_then(Value::as_object_mut) {
                for l in HELM_LABELS {
                    labels.remove(l);
                }
            }
            if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
                a.retain(|k, _| !k.starts_with("checksum/") && !k.starts_with("helm.sh/"));
                if a.is_empty() {
                    m.remove("annotations");
                }
            }
        }
    }
    if v["kind"] == "ConfigMap"
        && let Some(data) = v.get_mut("data").and_then(Value::as_object_mut)
    {
        for (k, text) in data.iter_mut() {
            if k.ends_with(".yaml")
                && let Some(t) = text.as_str()
                && let Ok(y) = serde_yaml::from_str::<serde_yaml::Value>(t)
                && let Ok(parsed) = serde_json::to_value(y)
            {
                *text = parsed;
            }
        }
    }
    v
}

fn by_key(objects: Vec<Value>) -> BTreeMap<String, Value> {
    objects
        .into_iter()
        .map(|o| (key(&o), normalize(o)))
        .collect()
}

/// The objects `kubectl apply -k deploy/` applies (the Namespace aside: `helm install
/// --create-namespace` makes it).
fn deploy_objects() -> Vec<Value> {
    let k: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("deploy/kustomization.yaml")).expect("read"),
    )
    .expect("kustomization.yaml");
    k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
        .filter(|f| *f != "namespace.yaml")
        .flat_map(|f| docs(&std::fs::read_to_string(root().join("deploy").join(f)).expect(f)))
        .collect()
}

#[test]
fn the_chart_lints_strictly_in_every_mode() {
    let chart = chart();
    for sets in [
        vec![],
        vec!["tls.mode=cert-manager"],
        vec![
            "tls.mode=existingSecret",
            "tls.existingSecret.caBundle=Zm9v",
        ],
        vec!["upstreamAgentSandbox.enabled=false", "reconcile=false"],
        vec![
            "serviceMonitor.enabled=true",
            "podDisruptionBudget.enabled=false",
            "runtimeClass.create=false",
        ],
        vec!["policies.files.extra\\.rego=package sandgate.pod.extra"],
    ] {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        for s in &sets {
            args.extend(["--set", s]);
        }
        let (ok, stdout, stderr) = run_helm(&args);
        assert!(ok, "helm lint {sets:?}: {stdout}{stderr}");
    }
}

#[test]
fn the_charts_defaults_are_deploy_object_for_object() {
    let rendered = by_key(template(&[]).expect("helm template"));
    let mut expected = by_key(deploy_objects());
    // The CRDs come from the chart's crds/, which must be deploy/crds byte for byte.
    for entry in std::fs::read_dir(root().join("deploy/crds")).expect("deploy/crds") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_owned();
        let chart_copy = root().join("charts/sandgate/crds").join(&name);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            std::fs::read_to_string(&chart_copy).unwrap_or_default(),
            "{} differs from {} (run `sandgate crds --out-dir` for both)",
            chart_copy.display(),
            path.display()
        );
    }
    let rendered_keys: Vec<&String> = rendered.keys().collect();
    let expected_keys: Vec<&String> = expected.keys().collect();
    assert_eq!(
        rendered_keys, expected_keys,
        "the chart and deploy/ hold different objects"
    );
    for (k, want) in std::mem::take(&mut expected) {
        let got = &rendered[&k];
        assert!(
            *got == want,
            "{k} differs:\nchart:  {}\ndeploy: {}",
            serde_json::to_string(got).unwrap_or_default(),
            serde_json::to_string(&want).unwrap_or_default()
        );
    }
}

fn args_of(objects: &[Value]) -> Vec<String> {
    find(objects, "Deployment", "sandgate")["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

/// Every webhook entry of sandgate's two configurations.
fn webhook_entries(objects: &[Value]) -> Vec<Value> {
    [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ]
    .iter()
    .flat_map(|k| {
        find(objects, k, "sandgate")["webhooks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    })
    .collect()
}

fn ca_bundles(objects: &[Value]) -> Vec<Value> {
    webhook_entries(objects)
        .into_iter()
        .map(|w| w["clientConfig"]["caBundle"].clone())
        .collect()
}

#[test]
fn self_managed_tls_is_the_default_and_its_rbac_is_narrow() {
    let objects = template(&[]).expect("helm template");
    let args = args_of(&objects);
    assert!(args.contains(&"--tls-mode=self".to_string()), "{args:?}");
    assert!(ca_bundles(&objects).iter().all(Value::is_null));
    let role = find(&objects, "Role", "sandgate-leader-election");
    let rules = role["rules"].as_array().expect("rules");
    let secrets: Vec<&Value> = rules
        .iter()
        .filter(|r| r["resources"] == serde_json::json!(["secrets"]))
        .collect();
    // create cannot be limited by name; everything else is, to the one Secret.
    for r in &secrets {
        if r["verbs"] != serde_json::json!(["create"]) {
            assert_eq!(
                r["resourceNames"],
                serde_json::json!(["sandgate-tls"]),
                "{r}"
            );
        }
    }
    assert_eq!(secrets.len(), 2);
}

#[test]
fn cert_manager_mode_mounts_its_secret_and_has_the_ca_injected() {
    let objects = template(&["tls.mode=cert-manager"]).expect("helm template");
    let args = args_of(&objects);
    assert!(
        !args.iter().any(|a| a.starts_with("--tls-mode")),
        "{args:?}"
    );
    assert!(args.contains(&"--tls-cert=/etc/sandgate/tls/tls.crt".to_string()));
    let pod = &find(&objects, "Deployment", "sandgate")["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "sandgate-tls");
    for k in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        assert_eq!(
            find(&objects, k, "sandgate")["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "sandgate-system/sandgate-tls"
        );
    }
    // The Issuer and Certificate are deploy/certificate.yaml's.
    let shipped = by_key(docs(
        &std::fs::read_to_string(root().join("deploy/certificate.yaml")).expect("read"),
    ));
    let rendered = by_key(objects);
    for (k, want) in shipped {
        assert_eq!(rendered.get(&k), Some(&want), "{k}");
    }
    // No self-managed TLS rights in this mode.
    let role = &rendered["Role/sandgate-system/sandgate-leader-election"];
    assert!(!role.to_string().contains("secrets"), "{role}");
}

#[test]
fn an_existing_secret_needs_its_ca_and_gets_it_into_every_webhook() {
    let err = template(&["tls.mode=existingSecret"]).expect_err("no caBundle given");
    assert!(
        err.contains("tls.existingSecret.caBundle is required"),
        "{err}"
    );
    let objects = template(&[
        "tls.mode=existingSecret",
        "tls.existingSecret.caBundle=Zm9v",
    ])
    .expect("helm template");
    let bundles = ca_bundles(&objects);
    assert!(!bundles.is_empty());
    assert!(bundles.iter().all(|b| *b == "Zm9v"), "{bundles:?}");
    let err = template(&["tls.mode=letsencrypt"]).expect_err("an unknown mode");
    assert!(
        err.contains("tls.mode must be self, cert-manager or existingSecret"),
        "{err}"
    );
}

#[test]
fn the_upstream_switch_drops_its_webhook_entries_and_tells_the_config() {
    let names = |objects: &[Value]| -> Vec<String> {
        webhook_entries(objects)
            .into_iter()
            .filter_map(|w| w["name"].as_str().map(str::to_string))
            .collect()
    };
    let on = template(&[]).expect("helm template");
    let off = template(&["upstreamAgentSandbox.enabled=false"]).expect("helm template");
    assert!(names(&on).iter().any(|n| n.starts_with("upstream-")));
    assert!(
        !names(&off).iter().any(|n| n.starts_with("upstream-")),
        "{:?}",
        names(&off)
    );
    // Everything else stays.
    assert_eq!(
        names(&on)
            .into_iter()
            .filter(|n| !n.starts_with("upstream-"))
            .collect::<Vec<_>>(),
        names(&off)
    );
    let config = normalize(find(&off, "ConfigMap", "sandgate-config").clone());
    assert_eq!(
        config["data"]["config.yaml"]["upstreamAgentSandbox"]["enabled"],
        false
    );
}

#[test]
fn excluded_namespaces_reach_both_the_webhooks_and_the_config() {
    let objects = template(&["excludeNamespaces={ci-runners}"]).expect("helm template");
    let config = normalize(find(&objects, "ConfigMap", "sandgate-config").clone());
    assert_eq!(
        config["data"]["config.yaml"]["excludeNamespaces"],
        serde_json::json!(["kube-system", "sandgate-system", "ci-runners"])
    );
    let text = serde_json::to_string(find(&objects, "MutatingWebhookConfiguration", "sandgate"))
        .unwrap_or_default();
    assert!(text.contains(r#"["kube-system","sandgate-system","ci-runners"]"#));
}

#[test]
fn optional_parts_come_and_go_with_their_switches() {
    let on = template(&[
        "serviceMonitor.enabled=true",
        "policies.files.extra\\.rego=package sandgate.pod.extra",
    ])
    .expect("helm template");
    let monitor = find(&on, "ServiceMonitor", "sandgate");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let policies = find(&on, "ConfigMap", "sandgate-policies");
    assert_eq!(policies["data"]["extra.rego"], "package sandgate.pod.extra");
    let mounts = serde_json::to_string(
        &find(&on, "Deployment", "sandgate")["spec"]["template"]["spec"]["containers"][0]
            ["volumeMounts"],
    )
    .unwrap_or_default();
    assert!(mounts.contains("/etc/sandgate/policies"), "{mounts}");
    let off = template(&[
        "podDisruptionBudget.enabled=false",
        "runtimeClass.create=false",
    ])
    .expect("helm template");
    assert!(!off.iter().any(|o| o["kind"] == "PodDisruptionBudget"));
    assert!(!off.iter().any(|o| o["kind"] == "RuntimeClass"));
    assert!(!off.iter().any(|o| o["kind"] == "ServiceMonitor"));
}
