//! Label and annotation keys that form sandgate's contract with users (DESIGN.md §2).

/// Marks a pod as a sandbox pod (any value). Selected by the default-deny NetworkPolicy.
pub const SANDBOX: &str = "sandbox.gke.io/sandbox";
/// The SandboxTemplate a pod was built from. Selected by the template's NetworkPolicy.
pub const TEMPLATE: &str = "sandbox.gke.io/template";
/// On a namespace: every pod in it is a sandbox pod.
pub const ENFORCE: &str = "sandbox.gke.io/enforce";
/// The prefix of every label sandgate owns; such labels cannot be changed after creation.
pub const PREFIX: &str = "sandbox.gke.io/";
/// Static pods mirrored into the API by the kubelet carry this annotation.
pub const MIRROR_POD: &str = "kubernetes.io/config.mirror";
/// Value put on [`SANDBOX`] when the creator did not set it.
pub const SANDBOX_DEFAULT_VALUE: &str = "true";

/// Whether a label map marks its owner as a sandbox pod.
pub fn is_sandbox_labelled(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    labels.is_some_and(|l| l.contains_key(SANDBOX) || l.contains_key(TEMPLATE))
}
