//! The elected replica's side of self-managed TLS: on a Lease named after the Secret, read the
//! Secret, let [`authority::plan`] decide, write the result (every write carries the
//! resourceVersion it read), and keep the `caBundle` of sandgate's own webhook
//! configurations equal to the trusted CAs — also after something else (a `helm
//! upgrade`, a hand edit) reset it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::PostParams;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::authority::{self, CertError, Lifetimes, Material, Step, Unusable};
use crate::contract;
use crate::metrics::Registry;
use crate::reconcile::lease::Elector;

/// What the manager keeps, and where.
#[derive(Debug, Clone)]
pub struct Settings {
    pub namespace: String,
    pub secret: String,
    /// The Service the apiserver calls (the certificate names it; the Secret is owned by
    /// it, so uninstalling the Service removes the Secret).
    pub service: String,
    /// The Mutating- and ValidatingWebhookConfiguration whose `caBundle` it writes.
    pub webhook_configuration: String,
    /// More names (DNS or IP) for the serving certificate.
    pub extra_names: Vec<String>,
    pub lifetimes: Lifetimes,
    pub identity: String,
    pub lease_duration: Duration,
    /// How often the Secret and the webhook configurations are compared with what they
    /// must be.
    pub check_every: Duration,
}

impl Settings {
    /// The names the serving certificate must hold: the Service's, then the extra ones.
    pub fn names(&self) -> Vec<String> {
        contract::dns_names_of(&self.service, &self.namespace)
            .into_iter()
            .chain(self.extra_names.iter().cloned())
            .map(|n| authority::canonical(&n))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("apiserver: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Cert(#[from] CertError),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    pub ca_expiry: Gauge,
    pub steps: Family<StepLabels, Counter>,
    pub errors: Counter,
    pub leader: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let registry = registry.component();
        let ca_expiry = Gauge::default();
        registry.register(
            "tls_ca_expiry_timestamp_seconds",
            "Expiry of the signing CA of self-managed TLS (unix time; set by the leader)",
            ca_expiry.clone(),
        );
        let steps = Family::<StepLabels, Counter>::default();
        registry.register(
            "tls_rotations",
            "Self-managed TLS steps taken (create, rotate_ca, reissue, trim)",
            steps.clone(),
        );
        let errors = Counter::default();
        registry.register(
            "tls_manager_errors",
            "Self-managed TLS rounds that failed (the next round retries)",
            errors.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "tls_manager_leader",
            "1 while this replica manages the TLS Secret",
            leader.clone(),
        );
        Self {
            ca_expiry,
            steps,
            errors,
            leader,
        }
    }
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Create(_) => "create",
        Step::RotateCa => "rotate_ca",
        Step::Reissue(_) => "reissue",
        Step::Trim => "trim",
        Step::Keep { .. } => "keep",
    }
}

/// Runs until `stop` turns true: campaigns for the Lease and, while holding it, keeps
/// the Secret and the `caBundle`s right. Gives the Lease up on stop.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    metrics: Metrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    // The Lease is named after the Secret it guards.
    let elector = Elector::new(
        leases,
        &settings.secret,
        &settings.identity,
        settings.lease_duration,
    );
    let every = settings
        .check_every
        .min(settings.lease_duration / 3)
        .max(Duration::from_millis(200));
    let mut leading = false;
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(now_leading) => {
                if now_leading != leading {
                    tracing::info!(identity = %settings.identity, leading = now_leading, "TLS manager lease");
                }
                leading = now_leading;
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS manager lease: cannot reach the apiserver");
                leading = false;
            }
        }
        metrics.leader.set(i64::from(leading));
        if leading && let Err(e) = reconcile(&client, &settings, &metrics).await {
            metrics.errors.inc();
            tracing::warn!(error = %e, "self-managed TLS: round failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    if leading {
        elector.release().await;
    }
}

fn secret_material(secret: Option<&Secret>, names: &[String]) -> Result<Material, Unusable> {
    let secret = secret.ok_or_else(|| "no Secret yet".to_string())?;
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    authority::parse(&data, &annotations, names)
}

/// One round. A new CA reaches the webhooks' caBundle before the Secret (where the
/// rotation grace starts): a round whose bundle write fails writes no Secret, so the
/// grace never runs while the apiserver does not yet trust the new CA.
pub async fn reconcile(
    client: &kube::Client,
    settings: &Settings,
    metrics: &Metrics,
) -> Result<(), ManageError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let names = settings.names();
    let existing = api.get_opt(&settings.secret).await?;
    let mut material = secret_material(existing.as_ref(), &names);
    let now = crate::server::tls::now();
    let mut steps = Vec::new();
    // Steps that follow one another at once (a Create never needs another round).
    for _ in 0..4 {
        let step = authority::plan(&material, now, &settings.lifetimes);
        let Some(next) = authority::apply(&step, &material, &names, now, &settings.lifetimes)?
        else {
            break;
        };
        steps.push(step);
        material = Ok(next);
    }
    let Ok(material) = material else {
        return Ok(());
    };
    let owner = service_owner(client, settings).await?;
    let owner_stale = owner.as_ref().is_some_and(|o| {
        existing
            .as_ref()
            .and_then(|s| s.metadata.owner_references.as_ref())
            .is_none_or(|refs| !refs.iter().any(|r| r.uid == o.uid))
    });
    let in_bundles =
        ensure_bundles(client, &settings.webhook_configuration, &material.bundle()).await?;
    if steps.contains(&Step::RotateCa) && !in_bundles {
        tracing::warn!(
            name = %settings.webhook_configuration,
            "self-managed TLS: a new CA is due but the webhook configurations are missing; not rotating"
        );
        return Ok(());
    }
    if !steps.is_empty() || owner_stale {
        write_secret(client, settings, existing, &material, owner).await?;
    }
    for step in &steps {
        match step {
            Step::Create(why) => {
                tracing::info!(secret = %settings.secret, reason = %why, "self-managed TLS: new CA and serving certificate")
            }
            Step::Reissue(why) => {
                tracing::info!(secret = %settings.secret, reason = %why, "self-managed TLS: serving certificate reissued")
            }
            Step::RotateCa => {
                tracing::info!(secret = %settings.secret, "self-managed TLS: new CA joins the bundle")
            }
            Step::Trim => {
                tracing::info!(secret = %settings.secret, "self-managed TLS: retired CA left the bundle")
            }
            Step::Keep { .. } => {}
        }
        metrics
            .steps
            .get_or_create(&StepLabels {
                step: step_name(step),
            })
            .inc();
    }
    metrics.ca_expiry.set(material.cas[0].not_after);
    Ok(())
}

/// The Service as the Secret's owner, when it exists.
async fn service_owner(
    client: &kube::Client,
    settings: &Settings,
) -> Result<Option<OwnerReference>, kube::Error> {
    let services: Api<Service> = Api::namespaced(client.clone(), &settings.namespace);
    Ok(services.get_opt(&settings.service).await?.and_then(|s| {
        Some(OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: s.metadata.name?,
            uid: s.metadata.uid?,
            ..OwnerReference::default()
        })
    }))
}

async fn write_secret(
    client: &kube::Client,
    settings: &Settings,
    existing: Option<Secret>,
    material: &Material,
    owner: Option<OwnerReference>,
) -> Result<(), kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let data = material
        .data()
        .into_iter()
        .map(|(k, v)| (k, ByteString(v)))
        .collect();
    match existing {
        None => {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(settings.secret.clone()),
                    namespace: Some(settings.namespace.clone()),
                    labels: Some(BTreeMap::from([(
                        contract::label::MANAGED_BY.to_string(),
                        contract::label::MANAGED_BY_SANDGATE.to_string(),
                    )])),
                    annotations: Some(material.annotations()),
                    owner_references: owner.map(|o| vec![o]),
                    ..ObjectMeta::default()
                },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(data),
                ..Secret::default()
            };
            api.create(&PostParams::default(), &secret).await?;
        }
        Some(mut secret) => {
            secret
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .extend(material.annotations());
            // A Service re-created (a reinstall) has a new uid: own the Secret by it, or
            // the garbage collector removes the Secret in use.
            if let Some(owner) = owner {
                let refs = secret
                    .metadata
                    .owner_references
                    .get_or_insert_with(Vec::new);
                refs.retain(|r| !(r.kind == "Service" && r.api_version == "v1"));
                refs.push(owner);
            }
            secret.data = Some(data);
            // The resourceVersion read above: a replica that lost the race gets 409.
            api.replace(&settings.secret, &PostParams::default(), &secret)
                .await?;
        }
    }
    Ok(())
}

/// Writes `bundle` into every webhook of sandgate's two configurations (a missing one is
/// skipped: it may not be installed yet, or this install has no such kind).
/// Returns whether both configurations exist (and now hold `bundle`).
async fn ensure_bundles(
    client: &kube::Client,
    name: &str,
    bundle: &str,
) -> Result<bool, kube::Error> {
    let want = ByteString(bundle.as_bytes().to_vec());
    let mutating = ensure_bundle(
        Api::<MutatingWebhookConfiguration>::all(client.clone()),
        name,
        |c| set_bundles(&mut c.webhooks, &want, |w| &mut w.client_config.ca_bundle),
    )
    .await?;
    let validating = ensure_bundle(
        Api::<ValidatingWebhookConfiguration>::all(client.clone()),
        name,
        |c| set_bundles(&mut c.webhooks, &want, |w| &mut w.client_config.ca_bundle),
    )
    .await?;
    Ok(mutating && validating)
}

/// Sets `want` in every webhook entry (`bundle` finds an entry's caBundle: the two
/// configurations' entry types differ); whether any changed.
fn set_bundles<W>(
    webhooks: &mut Option<Vec<W>>,
    want: &ByteString,
    bundle: fn(&mut W) -> &mut Option<ByteString>,
) -> bool {
    let mut changed = false;
    for w in webhooks.iter_mut().flatten() {
        changed |= set_bundle(bundle(w), want);
    }
    changed
}

fn set_bundle(current: &mut Option<ByteString>, want: &ByteString) -> bool {
    if current.as_ref() == Some(want) {
        return false;
    }
    *current = Some(want.clone());
    true
}

async fn ensure_bundle<K>(
    api: Api<K>,
    name: &str,
    set: impl Fn(&mut K) -> bool,
) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + std::fmt::Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let Some(mut config) = api.get_opt(name).await? else {
        tracing::debug!(
            name,
            "webhook configuration not found; caBundle not written"
        );
        return Ok(false);
    };
    if set(&mut config) {
        api.replace(name, &PostParams::default(), &config).await?;
        tracing::info!(name, kind = %K::kind(&K::DynamicType::default()), "caBundle written");
    }
    Ok(true)
}
