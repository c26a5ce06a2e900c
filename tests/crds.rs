//! The CRDs under deploy/crds/ are generated from the Rust types; this fails when they
//! drift. Regenerate with `cargo run -- crds --out-dir deploy/crds`.

mod common;

use sandgate::crd::{self, SandboxTemplate};

#[test]
fn deploy_crds_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crds");
    for c in crd::all() {
        let path = dir.join(crd::file_name(&c));
        let on_disk =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let generated = crd::to_yaml(std::slice::from_ref(&c)).unwrap();
        assert!(
            on_disk == generated,
            "{} drifted from the Rust types; run `cargo run -- crds --out-dir deploy/crds`",
            path.display()
        );
    }
}

#[test]
fn crd_names_and_shape() {
    let names: Vec<String> = crd::all()
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "sandboxclaims.sandbox.gke.io",
            "sandboxes.sandbox.gke.io",
            "sandboxtemplates.sandbox.gke.io"
        ]
    );
    for c in crd::all() {
        let v = &c.spec.versions[0];
        assert_eq!(v.name, "v1");
        assert!(v.served && v.storage);
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "status subresource"
        );
        assert!(
            v.additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.len() >= 4),
            "printer columns"
        );
        assert!(
            c.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty()),
            "short names"
        );
        // Client-side apply stores the object in a 256 KiB annotation.
        let size = serde_json::to_vec(&c).unwrap().len();
        assert!(
            size < 256 * 1024,
            "{} is {size} bytes",
            c.metadata.name.unwrap()
        );
        let schema = serde_json::to_value(v.schema.as_ref().unwrap()).unwrap();
        assert!(
            schema
                .pointer("/openAPIV3Schema/properties/spec/description")
                .is_some(),
            "kubectl explain needs descriptions"
        );
    }
}

#[test]
fn the_article_template_deserializes() {
    let t: SandboxTemplate =
        serde_json::from_value(common::article_template()).expect("article template");
    assert_eq!(t.metadata.name.as_deref(), Some("agent-execution-template"));
    assert_eq!(t.spec.runtime_class_name, "gvisor");
    assert_eq!(t.spec.pool_config.as_ref().map(|p| p.size), Some(5));
    let egress = t
        .spec
        .network_policy
        .as_ref()
        .and_then(|n| n.egress.as_ref())
        .expect("egress");
    assert_eq!(egress.len(), 1);
    let pod = t.spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.containers[0].image.as_deref(), Some("python:3.11-slim"));
}

#[test]
fn runtime_class_defaults_to_gvisor() {
    let t: SandboxTemplate = serde_json::from_value(serde_json::json!({
        "apiVersion": "sandbox.gke.io/v1", "kind": "SandboxTemplate",
        "metadata": {"name": "t"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap();
    assert_eq!(t.spec.runtime_class_name, "gvisor");
}
