//! Self-managed TLS against the real apiserver: `sandgate serve --tls-mode=self` makes
//! its CA and serving pair, writes the caBundle the apiserver then trusts, and rotates
//! the CA and the certificate (short lifetimes here) while the apiserver keeps calling it
//! with not one failed call; the Secret goes when its Service does.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{cluster, free_port, http_get, spawn_sandgate};
use crate::{out, wait};

const NAME: &str = "e2e-selftls";
const NS: &str = "sandgate-system";

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What one labelled ConfigMap create (server-side dry run, through both webhooks)
/// answered: None when admitted.
fn admitted(c: &crate::harness::Cluster, i: usize) -> Option<String> {
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("selftls-{i}"), "namespace": "default",
                     "labels": {NAME: "yes"}},
    });
    let o = c.kubectl_stdin(
        &["create", "--dry-run=server", "-f", "-"],
        Some(&cm.to_string()),
    );
    (!o.status.success()).then(|| out(&o))
}

#[test]
fn self_managed_tls_writes_the_ca_bundle_and_rotates_without_a_failed_call() {
    let c = cluster();
    let port = free_port();
    let probe = free_port();
    // The Service the certificate names and the Secret is owned by.
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {"ports": [{"port": 443, "targetPort": port}]},
    });
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&svc.to_string()));
    assert!(o.status.success(), "{}", out(&o));
    // Both kinds of configuration, calling this process, without a caBundle: until
    // sandgate writes one, every labelled ConfigMap is refused (failurePolicy Fail).
    let hook = |path: &str| {
        json!({
            "name": format!("{}.{NAME}.sandbox.gke.io", &path[1..]),
            "clientConfig": {"url": format!("https://127.0.0.1:{port}{path}")},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["configmaps"]}],
            "objectSelector": {"matchLabels": {NAME: "yes"}},
            "failurePolicy": "Fail", "sideEffects": "None",
            "admissionReviewVersions": ["v1"], "timeoutSeconds": 5,
        })
    };
    let configs = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": NAME}, "webhooks": [hook("/mutate")]},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": {"name": NAME}, "webhooks": [hook("/validate")]},
    ]});
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&configs.to_string()));
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        admitted(c, 0).is_some(),
        "without a caBundle the apiserver cannot call sandgate"
    );

    // CA 60 s (a new one joins after 40 s), certificate 24 s (reissued after 16 s),
    // 3 s between rotation steps.
    let args: Vec<String> = [
        "serve".to_string(),
        format!("--addr=127.0.0.1:{port}"),
        format!("--probe-addr=127.0.0.1:{probe}"),
        "--tls-mode=self".into(),
        format!("--tls-namespace={NS}"),
        format!("--tls-secret={NAME}"),
        format!("--tls-service={NAME}"),
        format!("--webhook-configuration={NAME}"),
        "--tls-extra-name=127.0.0.1".into(),
        "--tls-ca-validity=60".into(),
        "--tls-cert-validity=24".into(),
        "--tls-rotation-grace=3".into(),
        "--tls-check-every=1".into(),
        "--lease-duration=3".into(),
        "--identity=selftls".into(),
        "--shutdown-grace=1".into(),
    ]
    .into();
    let mut child = spawn_sandgate(c, NAME, &args, &c.kubeconfig);
    let log = || std::fs::read_to_string(c.log_path(NAME)).unwrap_or_default();

    wait(
        "sandgate writes both caBundles",
        Duration::from_secs(60),
        || {
            [
                "mutatingwebhookconfiguration",
                "validatingwebhookconfiguration",
            ]
            .iter()
            .all(|kind| {
                let o = c.kubectl(&[
                    "get",
                    kind,
                    NAME,
                    "-o",
                    "jsonpath={.webhooks[0].clientConfig.caBundle}",
                ]);
                !String::from_utf8_lossy(&o.stdout).trim().is_empty()
            })
        },
    );
    wait(
        "the apiserver admits through sandgate",
        Duration::from_secs(30),
        || admitted(c, 1).is_none(),
    );
    let secret: Value = serde_json::from_slice(
        &c.kubectl(&["get", "secret", NAME, "-n", NS, "-o", "json"])
            .stdout,
    )
    .expect("the Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    for key in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(secret["data"][key].is_string(), "{key} missing: {secret}");
    }
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "Service");

    // Calls all through a CA rotation: one every ~150 ms for 60 s.
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut calls = 0;
    while start.elapsed() < Duration::from_secs(60) {
        calls += 1;
        if let Some(e) = admitted(c, calls + 1) {
            failures.push(format!("{:?}: {e}", start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let metrics = http_get(probe, "/metrics").unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed during rotation: {failures:?}\n{}",
        failures.len(),
        log()
    );
    for (step, at_least) in [("rotate_ca", 1.0), ("reissue", 2.0), ("trim", 1.0)] {
        let n = metric(
            &metrics,
            &format!("sandgate_tls_rotations_total{{step=\"{step}\"}}"),
        );
        assert!(
            n >= at_least,
            "{step}: {n} (< {at_least})\n{metrics}\n{}",
            log()
        );
    }
    assert!(
        metric(
            &metrics,
            "sandgate_certificate_reloads_total{result=\"ok\"}"
        ) >= 2.0
    );
    assert_eq!(metric(&metrics, "sandgate_tls_manager_leader"), 1.0);

    // Uninstalling the Service takes the Secret with it (garbage collection).
    let o = c.kubectl(&["delete", "service", NAME, "-n", NS]);
    assert!(o.status.success(), "{}", out(&o));
    wait(
        "the Secret follows its Service",
        Duration::from_secs(60),
        || {
            !c.kubectl(&["get", "secret", NAME, "-n", NS])
                .status
                .success()
        },
    );
    let _ = c.kubectl(&[
        "delete",
        "mutatingwebhookconfiguration,validatingwebhookconfiguration",
        NAME,
    ]);
    let _ = c.kubectl(&["delete", "lease", NAME, "-n", NS]);
}
