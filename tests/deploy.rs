//! deploy/ is what users apply: every object must be a well-formed Kubernetes object
//! (checked by a strict round-trip through the official types: an unknown or misplaced
//! field would be lost and fail the comparison), and the webhook configurations must
//! keep the promises of DESIGN.md §2.

use std::path::Path;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde_json::to_value(<serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap())
                .unwrap()
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The objects `kubectl apply -k deploy/` applies, in kustomization order.
fn kustomized() -> Vec<Value> {
    let k = &docs(&root().join("deploy/kustomization.yaml"))[0];
    k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| docs(&root().join("deploy").join(r.as_str().unwrap())))
        .collect()
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Value {
    let typed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"));
    let mut out = serde_json::to_value(typed).unwrap();
    strip_nulls(&mut out);
    out
}

fn check_strict(v: &Value) {
    let kind = v["kind"].as_str().unwrap_or_default();
    let back = match kind {
        "Namespace" => roundtrip::<Namespace>(v),
        "ServiceAccount" => roundtrip::<ServiceAccount>(v),
        "ClusterRole" => roundtrip::<ClusterRole>(v),
        "ClusterRoleBinding" => roundtrip::<ClusterRoleBinding>(v),
        "Role" => roundtrip::<Role>(v),
        "RoleBinding" => roundtrip::<RoleBinding>(v),
        "ConfigMap" => roundtrip::<ConfigMap>(v),
        "Service" => roundtrip::<Service>(v),
        "Deployment" => roundtrip::<Deployment>(v),
        "PodDisruptionBudget" => roundtrip::<PodDisruptionBudget>(v),
        "RuntimeClass" => roundtrip::<RuntimeClass>(v),
        "MutatingWebhookConfiguration" => roundtrip::<MutatingWebhookConfiguration>(v),
        "ValidatingWebhookConfiguration" => roundtrip::<ValidatingWebhookConfiguration>(v),
        "CustomResourceDefinition" => roundtrip::<CustomResourceDefinition>(v),
        "Pod" => roundtrip::<Pod>(v),
        other => panic!("deploy/ holds an unexpected kind {other:?}"),
    };
    assert_eq!(
        &back, v,
        "{kind} {} has fields its type does not know",
        v["metadata"]["name"]
    );
}

#[test]
fn every_deploy_object_is_well_formed() {
    let objects = kustomized();
    assert!(objects.len() >= 15, "{} objects", objects.len());
    for o in &objects {
        check_strict(o);
    }
    for entry in std::fs::read_dir(root().join("deploy/examples")).unwrap() {
        for o in docs(&entry.unwrap().path()) {
            if o["kind"] != "SandboxTemplate" {
                check_strict(&o);
            }
        }
    }
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/"))
}

#[test]
fn webhooks_fail_closed_and_are_scoped_to_sandbox_pods() {
    let objects = kustomized();
    let mutating: MutatingWebhookConfiguration =
        serde_json::from_value(find(&objects, "MutatingWebhookConfiguration").clone()).unwrap();
    let validating: ValidatingWebhookConfiguration =
        serde_json::from_value(find(&objects, "ValidatingWebhookConfiguration").clone()).unwrap();

    let mut entries: Vec<(String, Value)> = Vec::new();
    for w in mutating.webhooks.unwrap_or_default() {
        assert_eq!(
            w.client_config
                .service
                .as_ref()
                .and_then(|s| s.path.as_deref()),
            Some("/mutate")
        );
        assert_eq!(w.reinvocation_policy.as_deref(), Some("IfNeeded"));
        entries.push((w.name.clone(), serde_json::to_value(&w).unwrap()));
    }
    for w in validating.webhooks.unwrap_or_default() {
        assert_eq!(
            w.client_config
                .service
                .as_ref()
                .and_then(|s| s.path.as_deref()),
            Some("/validate")
        );
        entries.push((w.name.clone(), serde_json::to_value(&w).unwrap()));
    }
    let pod_entries: Vec<_> = entries
        .iter()
        .filter(|(_, w)| {
            w["rules"].as_array().unwrap().iter().any(|r| {
                r["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == "pods")
            })
        })
        .collect();
    assert!(pod_entries.len() >= 4, "pod entries in both configurations");

    for (name, w) in &entries {
        // The entries that may fail open: NetworkPolicies and token Secrets outside
        // enforced namespaces (the rest of the cluster), and then only briefly.
        let outside_enforced = w["namespaceSelector"]["matchExpressions"]
            .as_array()
            .is_some_and(|a| {
                a.iter().any(|e| {
                    e["key"] == "sandbox.gke.io/enforce"
                        && e["operator"] == "NotIn"
                        && e["values"] == serde_json::json!(["true"])
                })
            });
        let only_rest_of_cluster_kinds = w["rules"].as_array().unwrap().iter().all(|r| {
            r["resources"] == serde_json::json!(["networkpolicies"])
                || r["resources"] == serde_json::json!(["secrets"])
        });
        if w["failurePolicy"] == "Ignore" {
            assert!(
                outside_enforced && only_rest_of_cluster_kinds,
                "{name}: only NetworkPolicies and Secrets outside enforced namespaces may fail open"
            );
            assert!(w["timeoutSeconds"].as_i64().unwrap() <= 2, "{name}");
        } else {
            assert_eq!(
                w["failurePolicy"], "Fail",
                "{name}: sandbox objects fail closed"
            );
        }
        assert!(
            w["sideEffects"] == "NoneOnDryRun" || w["sideEffects"] == "None",
            "{name}: no side effect on dry run"
        );
        assert!(w["timeoutSeconds"].as_i64().unwrap() <= 5, "{name}");
        assert_eq!(
            w["admissionReviewVersions"],
            serde_json::json!(["v1"]),
            "{name}"
        );
        let cluster_scoped = w["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["scope"] == "Cluster");
        if cluster_scoped {
            // No namespace to exclude: the apiserver's own condition keeps every other
            // object of the kind away from sandgate.
            assert!(
                w["matchConditions"]
                    .as_array()
                    .is_some_and(|c| !c.is_empty()),
                "{name}: a cluster-scoped entry is narrowed by matchConditions"
            );
            continue;
        }
        let ns_sel = w["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap();
        assert!(
            ns_sel
                .iter()
                .any(|e| e["key"] == "kubernetes.io/metadata.name"
                    && e["operator"] == "NotIn"
                    && e["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| v == "kube-system")
                    && e["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| v == "sandgate-system")),
            "{name}: kube-system and sandgate-system excluded"
        );
        for r in w["rules"].as_array().unwrap() {
            let ops = r["operations"].as_array().unwrap();
            assert!(
                ops.iter().any(|o| o == "CREATE") && ops.iter().any(|o| o == "UPDATE"),
                "{name}"
            );
        }
    }
    for (name, w) in &pod_entries {
        let res = w["rules"][0]["resources"].as_array().unwrap();
        for sub in ["pods", "pods/ephemeralcontainers", "pods/resize"] {
            assert!(res.iter().any(|r| r == sub), "{name} must cover {sub}");
        }
        // Either the namespace is enforced, or the pod carries a sandbox label.
        let by_ns = w["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["key"] == "sandbox.gke.io/enforce" && e["operator"] == "In");
        let by_label = w["objectSelector"]["matchExpressions"]
            .as_array()
            .is_some_and(|a| {
                a.iter().any(|e| {
                    (e["key"] == "sandbox.gke.io/sandbox"
                        || e["key"] == "sandbox.gke.io/template"
                        || e["key"] == "agents.x-k8s.io/sandbox-name-hash")
                        && e["operator"] == "Exists"
                })
            });
        assert!(by_ns ^ by_label, "{name}: scoped by namespace or by label");
    }
    assert!(
        entries.iter().any(|(_, w)| w["rules"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "sandboxtemplates")),
        "SandboxTemplates are validated at apply time"
    );
    // Other NetworkPolicies in enforced namespaces reach sandgate and fail closed.
    assert!(
        entries.iter().any(|(_, w)| {
            w["rules"][0]["resources"] == serde_json::json!(["networkpolicies"])
                && w["failurePolicy"] == "Fail"
                && w["objectSelector"]["matchExpressions"][0]["operator"] == "NotIn"
                && w["namespaceSelector"]["matchExpressions"][0]["key"] == "sandbox.gke.io/enforce"
                && w["namespaceSelector"]["matchExpressions"][0]["operator"] == "In"
        }),
        "egress widening is judged in enforced namespaces, failing closed"
    );
}

#[test]
fn the_deployment_is_hardened_and_highly_available() {
    let objects = kustomized();
    let d: Deployment = serde_json::from_value(find(&objects, "Deployment").clone()).unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert!(c.liveness_probe.is_some() && c.readiness_probe.is_some());
    assert!(
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_some()
    );

    let rc: RuntimeClass = serde_json::from_value(find(&objects, "RuntimeClass").clone()).unwrap();
    assert_eq!(rc.metadata.name.as_deref(), Some("gvisor"));
    assert_eq!(rc.handler, "runsc");
    let sched = rc.scheduling.unwrap();
    assert_eq!(
        sched.node_selector.unwrap()["sandbox.gke.io/runtime"],
        "gvisor"
    );
    assert!(
        sched
            .tolerations
            .unwrap()
            .iter()
            .any(|t| t.key.as_deref() == Some("sandbox.gke.io/runtime"))
    );

    // The shipped configuration is one sandgate accepts.
    let cm: ConfigMap = serde_json::from_value(find(&objects, "ConfigMap").clone()).unwrap();
    let text = &cm.data.unwrap()["config.yaml"];
    let file: sandgate::config::ConfigFile = serde_yaml::from_str(text).unwrap();
    let cfg = sandgate::config::Config::build(file, Default::default()).unwrap();
    assert_eq!(
        cfg,
        sandgate::config::Config::default(),
        "the shipped config spells out the defaults"
    );
}

#[test]
fn rbac_has_no_wildcards() {
    for o in kustomized()
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        for rule in o["rules"].as_array().unwrap() {
            for field in ["apiGroups", "resources", "verbs"] {
                assert!(
                    !rule[field].as_array().unwrap().iter().any(|v| v == "*"),
                    "{} has a wildcard in {field}",
                    o["metadata"]["name"]
                );
            }
        }
    }
}

/// Every field of `value` is declared by `schema` (an OpenAPI v3 structural schema);
/// `metadata` is the apiserver's, not the CRD's.
fn declared(value: &Value, schema: &Value, path: &str) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                let here = format!("{path}.{k}");
                if here == ".metadata" {
                    continue;
                }
                let sub = schema["properties"]
                    .get(k)
                    .or_else(|| schema.get("additionalProperties"))
                    .unwrap_or_else(|| panic!("{here} is not in the CRD's schema"));
                declared(v, sub, &here);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                declared(v, &schema["items"], &format!("{path}[{i}]"));
            }
        }
        _ => {
            if let Some(allowed) = schema["enum"].as_array() {
                assert!(
                    allowed.contains(value),
                    "{path} = {value} is not in {allowed:?}"
                );
            }
        }
    }
}

#[test]
fn the_policy_report_crds_declare_every_field_the_audit_writes() {
    use sandgate::audit::report;
    use sandgate::audit::view::{Judged, Outcome, ResourceRef, Verdict};
    let crds = docs(&root().join("deploy/policy-reports.yaml"));
    assert_eq!(crds.len(), 2);
    for c in &crds {
        check_strict(c);
        assert_eq!(c["spec"]["group"], "wgpolicyk8s.io");
        assert_eq!(c["spec"]["versions"][0]["name"], "v1alpha2");
    }
    // Installed only if absent (another tool's copy must not be replaced): not in the
    // kustomization.
    assert!(
        !kustomized()
            .iter()
            .any(|o| o["spec"]["group"] == "wgpolicyk8s.io"),
        "the report CRDs must stay out of kustomization.yaml"
    );
    let pod = ResourceRef {
        kind: "Pod".into(),
        api_version: "v1".into(),
        namespace: Some("ns".into()),
        name: "p".into(),
        uid: "u".into(),
    };
    let judged = vec![
        Judged {
            resource: pod.clone(),
            outcomes: vec![
                Outcome::builtin(
                    Verdict::Fail,
                    "privileged",
                    Some("spec.containers[0].securityContext.privileged".into()),
                    "is true".into(),
                ),
                Outcome {
                    result: Verdict::Warn,
                    policy: "pod.run_as_non_root".into(),
                    rule: "warn".into(),
                    field: None,
                    message: "may run as root".into(),
                },
            ],
        },
        Judged {
            resource: ResourceRef {
                name: "q".into(),
                ..pod
            },
            outcomes: vec![Outcome::builtin(
                Verdict::Pass,
                "admission",
                None,
                "ok".into(),
            )],
        },
    ];
    for (ns, crd) in [(Some("ns"), &crds[0]), (None, &crds[1])] {
        let r = report::build(ns, &judged, 10, 1);
        assert_eq!(r.object["kind"], crd["spec"]["names"]["kind"]);
        declared(
            &r.object,
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            "",
        );
    }
}

/// Whether a label selector (matchLabels / matchExpressions, as JSON) selects `labels`.
fn selects(selector: &Value, labels: &std::collections::BTreeMap<&str, &str>) -> bool {
    let by_label = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k.as_str()).copied() == v.as_str());
    let by_expr = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let got = labels.get(key).copied();
            match e["operator"].as_str().unwrap_or_default() {
                "In" => got.is_some_and(|v| values.contains(&v)),
                "NotIn" => !got.is_some_and(|v| values.contains(&v)),
                "Exists" => got.is_some(),
                "DoesNotExist" => got.is_none(),
                other => panic!("unknown operator {other}"),
            }
        });
    by_label && by_expr
}

/// DESIGN.md §2 through the shipped selectors: every sandbox pod (enforced namespace,
/// sandgate's labels, or upstream agent-sandbox's) is sent exactly once to each
/// webhook on CREATE, and no other pod ever is.
#[test]
fn every_sandbox_pod_reaches_each_webhook_exactly_once_and_no_other_pod_does() {
    let objects = kustomized();
    let keys = [
        "sandbox.gke.io/sandbox",
        "sandbox.gke.io/template",
        "agents.x-k8s.io/sandbox-name-hash",
    ];
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let pod_entries: Vec<Value> = find(&objects, kind)["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| {
                w["rules"][0]["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r == "pods")
            })
            .cloned()
            .collect();
        for namespace in ["agents", "kube-system", "sandgate-system"] {
            for enforced in [false, true] {
                for mask in 0..8u8 {
                    let mut ns = std::collections::BTreeMap::from([(
                        "kubernetes.io/metadata.name",
                        namespace,
                    )]);
                    if enforced {
                        ns.insert("sandbox.gke.io/enforce", "true");
                    }
                    let pod: std::collections::BTreeMap<&str, &str> = keys
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << i) != 0)
                        .map(|(_, k)| (*k, "x"))
                        .collect();
                    let sent = pod_entries
                        .iter()
                        .filter(|w| {
                            selects(&w["namespaceSelector"], &ns)
                                && selects(&w["objectSelector"], &pod)
                        })
                        .count();
                    let excluded = namespace != "agents";
                    let sandbox = !excluded && (enforced || mask != 0);
                    assert_eq!(
                        sent,
                        usize::from(sandbox),
                        "{kind}: namespace {namespace} enforced={enforced}, pod labels {pod:?}"
                    );
                }
            }
        }
    }
}

/// Whether one webhook entry's rules send a write of `group`/`resource` (`pods`,
/// `sandboxwarmpools/scale`) to sandgate.
fn rules_match(webhook: &Value, group: &str, resource: &str) -> bool {
    webhook["rules"].as_array().into_iter().flatten().any(|r| {
        let has = |field: &str, want: &str| {
            r[field]
                .as_array()
                .is_some_and(|l| l.iter().any(|v| v == want || v == "*"))
        };
        has("apiGroups", group) && has("resources", resource)
    })
}

/// Upstream support, through the shipped configurations: every upstream object sandgate
/// judges is sent to `/validate`; deleting the `upstream-*` entries (the documented way
/// to turn it off) leaves no entry that any upstream object, or a pod labelled only by
/// upstream outside enforced namespaces, reaches.
#[test]
fn upstream_objects_reach_sandgate_only_through_the_upstream_entries() {
    let objects = kustomized();
    let upstream_writes = [
        ("agents.x-k8s.io", "sandboxes"),
        ("extensions.agents.x-k8s.io", "sandboxtemplates"),
        ("extensions.agents.x-k8s.io", "sandboxclaims"),
        ("extensions.agents.x-k8s.io", "sandboxwarmpools"),
        ("extensions.agents.x-k8s.io", "sandboxwarmpools/scale"),
    ];
    let validating = find(&objects, "ValidatingWebhookConfiguration")["webhooks"]
        .as_array()
        .unwrap()
        .clone();
    for (group, resource) in upstream_writes {
        assert!(
            validating.iter().any(|w| rules_match(w, group, resource)),
            "{group}/{resource} is never sent to /validate"
        );
    }
    let ns = std::collections::BTreeMap::from([("kubernetes.io/metadata.name", "agents")]);
    let upstream_pod =
        std::collections::BTreeMap::from([("agents.x-k8s.io/sandbox-name-hash", "x")]);
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let entries = find(&objects, kind)["webhooks"].as_array().unwrap().clone();
        let (upstream, rest): (Vec<Value>, Vec<Value>) = entries
            .into_iter()
            .partition(|w| w["name"].as_str().unwrap().starts_with("upstream-"));
        assert!(!upstream.is_empty(), "{kind} has no upstream entries");
        for w in &rest {
            for (group, resource) in upstream_writes {
                assert!(
                    !rules_match(w, group, resource),
                    "{kind} {}: sends {group}/{resource} with upstream support off",
                    w["name"]
                );
            }
            let pod_sent = rules_match(w, "", "pods")
                && selects(&w["namespaceSelector"], &ns)
                && selects(&w["objectSelector"], &upstream_pod);
            assert!(!pod_sent, "{kind} {}: sends upstream's pods", w["name"]);
        }
    }
}

/// The shipped ConfigMap spells out the built-in defaults, and parses.
#[test]
fn the_shipped_configuration_is_valid_and_is_the_defaults() {
    let objects = kustomized();
    let text = find(&objects, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .expect("config.yaml in the ConfigMap")
        .to_string();
    let file: sandgate::config::ConfigFile = serde_yaml::from_str(&text).unwrap();
    let cfg = sandgate::config::Config::build(file, Default::default()).unwrap();
    assert_eq!(cfg, sandgate::config::Config::default());
}

/// The arguments deploy/ passes are ones `sandgate` accepts (a typo would crash-loop
/// every replica), and they ask for self-managed TLS with the probes on their own port.
#[test]
fn the_deployments_arguments_parse_and_ask_for_self_managed_tls() {
    use clap::Parser as _;
    let objects = kustomized();
    let d = find(&objects, "Deployment");
    let args: Vec<String> = d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let cli = sandgate::cli::Cli::try_parse_from(
        std::iter::once("sandgate".to_string()).chain(args.clone()),
    )
    .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let sandgate::cli::Command::Serve(serve) = cli.command else {
        panic!("not serve: {args:?}")
    };
    assert_eq!(serve.tls_mode, sandgate::cli::TlsMode::SelfManaged);
    assert_eq!(serve.self_tls.tls_secret, "sandgate-tls");
    assert!(serve.probe_addr.is_some() && serve.reconcile);
    let probe = &d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"];
    assert_eq!(probe["port"], "metrics");
}
