//! Every name sandgate writes or recognises, in one place: its labels, annotations and
//! object names (DESIGN.md §2, §4), the Kubernetes names it reads, its identity and its
//! defaults. The code that names an object and the code that recognises it (the
//! NetworkPolicy guard, the reconciler's watches) both call the functions here, so
//! renaming one side cannot silently blind the other.

use std::collections::BTreeMap;
use std::time::Duration;

/// The API group of sandgate's resources (the CRD derives spell it too; a test holds
/// them equal).
pub const GROUP: &str = "sandbox.gke.io";
/// The prefix of every label sandgate owns; such labels cannot change after creation.
pub const LABEL_PREFIX: &str = "sandbox.gke.io/";

/// Labels sandgate sets or reads on pods, Sandboxes and namespaces.
pub mod label {
    /// Marks a pod as a sandbox pod (any value); the default-deny policy selects it.
    pub const SANDBOX: &str = "sandbox.gke.io/sandbox";
    /// Value put on [`SANDBOX`] when the creator did not set it.
    pub const SANDBOX_DEFAULT_VALUE: &str = "true";
    /// The SandboxTemplate a pod or Sandbox was built from; the template's own
    /// NetworkPolicy selects it.
    pub const TEMPLATE: &str = "sandbox.gke.io/template";
    /// On a namespace: every pod in it is a sandbox pod when the value is [`ENFORCE_ON`].
    pub const ENFORCE: &str = "sandbox.gke.io/enforce";
    pub const ENFORCE_ON: &str = "true";
    /// On a Sandbox bound to a claim: the claim's name.
    pub const CLAIM: &str = "sandbox.gke.io/claim";
    /// On the nodes the gVisor RuntimeClass schedules onto (label and taint key).
    pub const RUNTIME_NODE: &str = "sandbox.gke.io/runtime";
    /// The well-known label that marks what manages an object.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// Its value on every object sandgate writes.
    pub const MANAGED_BY_SANDGATE: &str = "sandgate";
}

/// Annotations sandgate sets or reads.
pub mod annotation {
    /// On a Sandbox bound to a claim: how it was launched (`warm` or `cold`).
    pub const LAUNCH: &str = "sandbox.gke.io/launch";
    /// Static pods mirrored into the API by the kubelet carry this annotation.
    pub const MIRROR_POD: &str = "kubernetes.io/config.mirror";
    /// The legacy per-container AppArmor annotation (`.../<container>: unconfined`).
    pub const APPARMOR_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";
}

/// The audit (DESIGN.md §7c): the reports it writes, in the format Kyverno and
/// Kubewarden write (`wgpolicyk8s.io/v1alpha2`), and how it names itself in them.
pub mod audit {
    use std::time::Duration;

    /// The group and version of PolicyReport / ClusterPolicyReport.
    pub const REPORT_GROUP: &str = "wgpolicyk8s.io";
    pub const REPORT_VERSION: &str = "v1alpha2";
    pub const REPORT_KIND: &str = "PolicyReport";
    pub const REPORT_PLURAL: &str = "policyreports";
    pub const CLUSTER_REPORT_KIND: &str = "ClusterPolicyReport";
    pub const CLUSTER_REPORT_PLURAL: &str = "clusterpolicyreports";
    /// The name of sandgate's report in each namespace, and of its cluster report.
    pub const REPORT_NAME: &str = "sandgate";
    /// `results[].source` (what Policy Reporter groups by).
    pub const SOURCE: &str = "sandgate";
    /// `results[].policy` of the built-in rules (a Rego policy reports its own name).
    pub const BUILTIN_POLICY: &str = "sandgate";
    /// `results[].rule` of a resource that passes every rule.
    pub const PASS_RULE: &str = "admission";
    /// The requester the audit's requests name: it is not anyone allowed to write
    /// sandgate's objects, so nothing passes for who wrote it.
    pub const USER: &str = "sandgate-audit";
    /// On a report: a hash of its results, so an unchanged report is not rewritten.
    pub const HASH_ANNOTATION: &str = "sandbox.gke.io/audit-hash";
    /// On a report: how many results were left out to bound its size.
    pub const OMITTED_ANNOTATION: &str = "sandbox.gke.io/audit-omitted";
    /// The reason of the Warning event on an object the audit finds failing.
    pub const EVENT_REASON: &str = "AuditFailed";
    /// How often a full audit runs unless configured otherwise.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
    /// Apiserver requests per second the audit may make unless configured otherwise.
    pub const DEFAULT_QPS: u32 = 20;
    /// Results one report holds at most (failures first); the rest are counted only.
    pub const DEFAULT_MAX_RESULTS: usize = 500;
    /// Objects read per list request.
    pub const PAGE_SIZE: u32 = 500;
}

/// kubernetes-sigs/agent-sandbox, the upstream controller sandgate also governs.
pub mod upstream {
    /// The group of its `Sandbox`.
    pub const GROUP: &str = "agents.x-k8s.io";
    /// The group of its `SandboxTemplate`, `SandboxClaim` and `SandboxWarmPool`.
    pub const EXTENSIONS_GROUP: &str = "extensions.agents.x-k8s.io";
    /// The package segment of the policies that judge its kinds:
    /// `sandgate.agents.<kind>.<name>`, so they never meet sandgate's own kinds of the
    /// same name (`sandgate.sandboxtemplate.*` judges only `sandbox.gke.io`'s).
    pub const POLICY_SEGMENT: &str = "agents";

    /// Whether an API group is one of upstream's.
    pub fn is_group(group: &str) -> bool {
        group == GROUP || group == EXTENSIONS_GROUP
    }

    /// The prefix of the labels upstream's controller puts on its pods.
    pub const LABEL_PREFIX: &str = "agents.x-k8s.io/";
    /// On every pod of an upstream Sandbox (DESIGN.md §2, case 3): a hash of its name.
    pub const SANDBOX_NAME_HASH: &str = "agents.x-k8s.io/sandbox-name-hash";
    /// On a Sandbox: the pod upstream's controller takes for it (and deletes with it).
    pub const POD_NAME_ANNOTATION: &str = "agents.x-k8s.io/pod-name";

    /// The version sandgate reads upstream's objects in (v1alpha1 is served too,
    /// through conversion).
    pub const VERSION: &str = "v1beta1";
    /// The identity upstream's controller runs as when installed from its release
    /// manifests: the only writer of its labels and of [`POD_NAME_ANNOTATION`], and of
    /// the NetworkPolicies of managed templates, unless configured otherwise.
    pub const CONTROLLER: &str =
        "system:serviceaccount:agent-sandbox-system:agent-sandbox-controller";
    /// The largest `replicas` of one SandboxWarmPool unless configured otherwise
    /// (sandgate's own `poolConfig.size` cap is the same).
    pub const DEFAULT_MAX_WARM_POOL_REPLICAS: u32 = 50;
    /// `SandboxTemplate.spec.envVarsInjectionPolicy`: what a claim's `env` may do.
    pub const ENV_ALLOWED: &str = "Allowed";
    pub const ENV_OVERRIDES: &str = "Overrides";
    pub const ENV_DISALLOWED: &str = "Disallowed";

    /// Whether a label or annotation key is in upstream's domain (`agents.x-k8s.io/`
    /// or a subdomain of it, `extensions.agents.x-k8s.io/...`).
    pub fn is_upstream_key(key: &str) -> bool {
        key.split_once('/')
            .is_some_and(|(domain, _)| domain == GROUP || domain.ends_with(".agents.x-k8s.io"))
    }

    /// Whether a pod's labels make it one of upstream's sandbox pods.
    pub fn is_sandbox_pod(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
        labels.is_some_and(|l| l.contains_key(SANDBOX_NAME_HASH))
    }
}

/// Kubernetes names sandgate reads or points at, but does not own.
pub mod kubernetes {
    /// The label every namespace carries with its own name.
    pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
    /// Where cluster DNS runs, and the label its pods carry.
    pub const DNS_NAMESPACE: &str = "kube-system";
    pub const DNS_POD_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
    /// Prefix of the token volume the ServiceAccount admission plugin injects.
    pub const INJECTED_TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
    /// The type of a legacy, long-lived service-account token Secret.
    pub const SERVICE_ACCOUNT_TOKEN_SECRET_TYPE: &str = "kubernetes.io/service-account-token";
    /// The annotation such a Secret must carry: the ServiceAccount it is a token of.
    pub const SERVICE_ACCOUNT_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
    /// The cluster-admin group (may change sandgate's NetworkPolicies).
    pub const MASTERS_GROUP: &str = "system:masters";
    /// Controllers that delete sandgate's NetworkPolicies with their owners.
    pub const GARBAGE_COLLECTOR: &str =
        "system:serviceaccount:kube-system:generic-garbage-collector";
    pub const NAMESPACE_CONTROLLER: &str = "system:serviceaccount:kube-system:namespace-controller";
}

/// sandgate's own namespace in a cluster (deploy/namespace.yaml).
pub const NAMESPACE: &str = "sandgate-system";
/// The Service in front of the webhook (deploy/service.yaml).
pub const SERVICE: &str = "sandgate";
/// The DNS names the webhook's Service answers to in a cluster.
pub fn service_dns_names() -> [String; 4] {
    dns_names_of(SERVICE, NAMESPACE)
}
/// The DNS names a Service answers to in a cluster.
pub fn dns_names_of(service: &str, namespace: &str) -> [String; 4] {
    [
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}
/// Self-managed TLS (`serve --tls-mode=self`): the Secret the leader keeps the CA and
/// the serving certificate in, the keys it writes, and the webhook configurations whose
/// `caBundle` it keeps equal to the trusted CAs.
pub mod tls {
    use std::time::Duration;

    /// The Secret; the Lease of the replica that creates and rotates the certificates
    /// has the same name.
    pub const SECRET: &str = "sandgate-tls";
    /// The Mutating- and ValidatingWebhookConfiguration sandgate installs (deploy/webhooks.yaml).
    pub const WEBHOOK_CONFIGURATION: &str = "sandgate";
    /// Keys of the Secret: the trusted CAs (newest first), the signing CA's key, and the
    /// serving pair (the names cert-manager and `kubectl create secret tls` use).
    pub const CA_CERT: &str = "ca.crt";
    pub const CA_KEY: &str = "ca.key";
    pub const TLS_CERT: &str = "tls.crt";
    pub const TLS_KEY: &str = "tls.key";
    /// When the newest CA joined the trusted bundle, and when the serving certificate was
    /// issued (unix seconds): rotation waits a grace after each before the next step.
    pub const CA_TRUSTED_SINCE: &str = "sandbox.gke.io/tls-ca-trusted-since";
    pub const CERT_ISSUED_AT: &str = "sandbox.gke.io/tls-cert-issued-at";
    pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(5 * 365 * 86_400);
    pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(90 * 86_400);
    /// Between rotation steps: long enough for the apiserver to pick up a new caBundle
    /// and every replica to load a new pair (both watch, so seconds in practice).
    pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(5 * 60);
    pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(30);
}

/// Every metric's name starts with this and an underscore.
pub const METRICS_PREFIX: &str = "sandgate";

/// The identity sandgate runs as in-cluster (deploy/serviceaccount.yaml).
pub const SERVICE_ACCOUNT: &str = "system:serviceaccount:sandgate-system:sandgate";
/// The field manager of sandgate's server-side applies, and the event reporter.
pub const FIELD_MANAGER: &str = "sandgate";
/// The leader-election Lease of the reconciler replicas.
pub const LEASE_NAME: &str = "sandgate-reconciler";
/// The user named in the requests `sandgate check` builds offline.
pub const CHECK_USER: &str = "sandgate-check";

/// The reason of the Warning event (and of the condition) that names a denied sandbox
/// pod on its Sandbox and claim, sandgate's or upstream's.
pub const POD_DENIED_REASON: &str = "PodDenied";
/// The event reporter of the webhook (the reconciler reports as [`FIELD_MANAGER`]).
pub const WEBHOOK_REPORTER: &str = "sandgate-webhook";

/// The RuntimeClass sandbox pods run under unless configured otherwise.
pub const DEFAULT_RUNTIME_CLASS: &str = "gvisor";
/// The containerd handler that RuntimeClass must name (gVisor's runsc).
pub const DEFAULT_RUNTIME_HANDLER: &str = "runsc";
/// How often the live RuntimeClass is compared with the configuration.
pub const RUNTIME_CLASS_CHECK_EVERY: Duration = Duration::from_secs(30);
/// Namespaces left alone unless configured otherwise.
pub const DEFAULT_EXCLUDED_NAMESPACES: [&str; 2] = [kubernetes::DNS_NAMESPACE, NAMESPACE];
/// Deadline of one policy evaluation unless configured otherwise.
pub const DEFAULT_POLICY_DEADLINE: Duration = Duration::from_millis(100);
/// How long a scheduled pool pod may take to become Ready before it is replaced.
pub const DEFAULT_READY_GRACE: Duration = Duration::from_secs(180);
/// The longest lifetime a SandboxClaim may ask for (`spec.ttlSeconds`): a year.
pub const MAX_CLAIM_TTL_SECONDS: i64 = 365 * 24 * 3600;

/// The root of every policy package (`sandgate.<kind>.<name>`, DESIGN.md §5), and the
/// package under it that holds shared helpers rather than policies.
pub const POLICY_PACKAGE_ROOT: &str = "sandgate";
pub const POLICY_LIBRARY_PACKAGE: &str = "lib";

/// The most warm sandboxes one namespace may keep (sandgate's templates and
/// agent-sandbox's warm pools together) unless configured otherwise.
pub const DEFAULT_MAX_WARM_SANDBOXES_PER_NAMESPACE: u32 = 100;

/// Name of the per-namespace default-deny NetworkPolicy.
pub const DEFAULT_DENY_POLICY: &str = "sandgate-default-deny";
const TEMPLATE_POLICY_PREFIX: &str = "sandgate-template-";

/// Name of a template's own NetworkPolicy.
pub fn template_policy_name(template: &str) -> String {
    format!("{TEMPLATE_POLICY_PREFIX}{template}")
}

/// The template whose policy this name would be (`None`: not a template policy name).
pub fn template_of_policy(name: &str) -> Option<&str> {
    name.strip_prefix(TEMPLATE_POLICY_PREFIX)
}

/// Whether a NetworkPolicy name is one sandgate gives its policies.
pub fn is_sandgate_policy_name(name: &str) -> bool {
    name == DEFAULT_DENY_POLICY || name.starts_with(TEMPLATE_POLICY_PREFIX)
}

/// The labels on every object sandgate writes.
pub fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(
        label::MANAGED_BY.to_string(),
        label::MANAGED_BY_SANDGATE.to_string(),
    )])
}

/// Whether a label map marks its object as written by sandgate.
pub fn is_managed(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(label::MANAGED_BY))
        .map(String::as_str)
        == Some(label::MANAGED_BY_SANDGATE)
}

/// The label selector of the objects sandgate writes (for watches).
pub fn managed_selector() -> String {
    format!("{}={}", label::MANAGED_BY, label::MANAGED_BY_SANDGATE)
}

/// Whether a label map marks its owner as a sandbox pod: sandgate's labels, or
/// (when `upstream` support is on) upstream agent-sandbox's.
pub fn is_sandbox_labelled(labels: Option<&BTreeMap<String, String>>, upstream: bool) -> bool {
    labels.is_some_and(|l| has_sandbox_label(|k| l.contains_key(k), upstream))
}

/// The same test over any label map (`has` says whether a key is present).
pub fn has_sandbox_label(has: impl Fn(&str) -> bool, upstream: bool) -> bool {
    has(label::SANDBOX)
        || has(label::TEMPLATE)
        || (upstream && has(self::upstream::SANDBOX_NAME_HASH))
}

/// Whether a namespace's labels enforce sandboxing on every pod in it.
pub fn is_enforcing(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(label::ENFORCE))
        .map(String::as_str)
        == Some(label::ENFORCE_ON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_recognises_every_name_sandgate_gives() {
        assert!(is_sandgate_policy_name(DEFAULT_DENY_POLICY));
        assert!(is_sandgate_policy_name(&template_policy_name("python")));
        assert!(!is_sandgate_policy_name("allow-web"));
        assert!(is_managed(Some(&managed_labels())));
        assert_eq!(
            managed_selector(),
            format!("{}={}", label::MANAGED_BY, label::MANAGED_BY_SANDGATE)
        );
    }

    #[test]
    fn the_crds_live_in_the_contract_group() {
        use kube::Resource as _;
        assert_eq!(crate::crd::SandboxTemplate::group(&()), GROUP);
        assert_eq!(crate::crd::Sandbox::group(&()), GROUP);
        assert_eq!(crate::crd::SandboxClaim::group(&()), GROUP);
        assert!(label::SANDBOX.starts_with(LABEL_PREFIX));
        assert!(SERVICE_ACCOUNT.contains(NAMESPACE));
    }
}
