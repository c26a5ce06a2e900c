//! PersistentVolumeClaims a sandbox pod mounts. A claim is only a name: what reaches the
//! pod is the PersistentVolume it is bound to, and a tenant may bind a claim to any
//! pre-made volume by naming it (`volumeName`) or by matching it (`storageClassName: ""`,
//! a `selector`). A `hostPath` or `local` volume is the node's disk, an NFS or other
//! network volume a remote server mounted by the node outside the sandbox's egress
//! policy: host or network access in disguise. So every claim a sandbox pod mounts must
//! exist, and the volume it is bound to, or names, must be of a kind that stays inside
//! the pod: a CSI volume (provisioned by the cluster's drivers, the way a StorageClass
//! gives tenants storage) or a cloud block disk. A claim not yet bound that a
//! provisioner will satisfy passes; one that can only be bound to a pre-made volume is
//! refused until it is bound. The audit judges the bindings of running pods again.

use k8s_openapi::api::core::v1::PodSpec;
use serde_json::Value;

use super::{ObjectRef, Rule, Violation};

/// PersistentVolume sources that keep the data inside the pod: CSI (the cluster's own
/// drivers) and cloud block disks attached to the node for this volume alone.
const INSIDE_SOURCES: [&str; 6] = [
    "csi",
    "awsElasticBlockStore",
    "gcePersistentDisk",
    "azureDisk",
    "cinder",
    "vsphereVolume",
];

/// PersistentVolume spec fields that are not its source.
const NOT_SOURCES: [&str; 9] = [
    "accessModes",
    "capacity",
    "claimRef",
    "mountOptions",
    "nodeAffinity",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "volumeMode",
    "volumeAttributesClassName",
];

/// Every claim the pod mounts, and where.
pub fn claim_refs(spec: &PodSpec, prefix: &str) -> Vec<ObjectRef> {
    spec.volumes
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, v)| {
            let claim = v.persistent_volume_claim.as_ref()?;
            Some(ObjectRef {
                name: claim.claim_name.clone(),
                field: format!("{prefix}.volumes[{i}].persistentVolumeClaim"),
            })
        })
        .collect()
}

/// What a claim stands for, as far as the cluster has decided.
pub enum Binding<'a> {
    /// Bound, or named by `volumeName`: the volume's name.
    Volume(&'a str),
    /// Not bound, and a provisioner will make its volume.
    Provisioned,
    /// Not bound, and only a pre-made volume can satisfy it.
    PreMade,
}

/// Where a stored claim leads, before its volume is read.
pub fn binding(claim: &Value) -> Binding<'_> {
    let spec = claim.get("spec");
    if let Some(volume) = spec
        .and_then(|s| s.get("volumeName"))
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
    {
        return Binding::Volume(volume);
    }
    let no_class = spec
        .and_then(|s| s.get("storageClassName"))
        .and_then(Value::as_str)
        == Some("");
    let selects = spec
        .and_then(|s| s.get("selector"))
        .is_some_and(|s| !s.is_null());
    if no_class || selects {
        Binding::PreMade
    } else {
        Binding::Provisioned
    }
}

/// The violation, if any, of one claim: `claim` as stored (`None`: missing) and, when
/// it names a volume, that volume (`None`: missing).
pub fn judge(r: &ObjectRef, claim: Option<&Value>, volume: Option<&Value>) -> Option<Violation> {
    let refuse = |rule: Rule, why: String| {
        Some(Violation::new(
            rule,
            r.field.clone(),
            format!("claim {:?} {why}", r.name),
        ))
    };
    let Some(claim) = claim else {
        return refuse(
            Rule::VolumeTypes,
            "does not exist, so what it will be bound to cannot be judged; create it first".into(),
        );
    };
    match binding(claim) {
        Binding::Provisioned => None,
        Binding::PreMade => refuse(
            Rule::VolumeTypes,
            "is not bound and can only be bound to a pre-made PersistentVolume (storageClassName \"\" or a selector), which may be the node's disk or a network share; bind it first, or name a StorageClass that provisions volumes".into(),
        ),
        Binding::Volume(name) => {
            let Some(volume) = volume else {
                return refuse(
                    Rule::VolumeTypes,
                    format!("is bound to PersistentVolume {name:?}, which does not exist; it cannot be judged"),
                );
            };
            let source = source_kind(volume);
            match source.as_deref() {
                Some(s) if INSIDE_SOURCES.contains(&s) => None,
                Some(s @ ("hostPath" | "local")) => refuse(
                    Rule::HostPath,
                    format!("is bound to PersistentVolume {name:?}, a {s} volume: the node's own disk"),
                ),
                Some(s) => refuse(
                    Rule::VolumeTypes,
                    format!(
                        "is bound to PersistentVolume {name:?}, a {s} volume: storage the node mounts outside the sandbox (a network share reaches its server whatever the egress policy); sandbox volumes are CSI or cloud disks ({})",
                        INSIDE_SOURCES.join(", ")
                    ),
                ),
                None => refuse(
                    Rule::VolumeTypes,
                    format!("is bound to PersistentVolume {name:?}, whose source sandgate does not know; it cannot be judged"),
                ),
            }
        }
    }
}

/// The source of a PersistentVolume: its one spec field that is not a property (`None`:
/// none, or more than one, which the apiserver refuses).
fn source_kind(volume: &Value) -> Option<String> {
    let spec = volume.get("spec")?.as_object()?;
    let mut sources = spec
        .iter()
        .filter(|(k, v)| !NOT_SOURCES.contains(&k.as_str()) && !v.is_null())
        .map(|(k, _)| k.clone());
    let first = sources.next()?;
    sources.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r() -> ObjectRef {
        ObjectRef {
            name: "data".into(),
            field: "spec.volumes[0].persistentVolumeClaim".into(),
        }
    }

    fn pv(source: Value) -> Value {
        let mut spec = json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                              "persistentVolumeReclaimPolicy": "Retain", "storageClassName": ""});
        if let (Some(s), Some(src)) = (spec.as_object_mut(), source.as_object()) {
            s.extend(src.clone());
        }
        json!({"metadata": {"name": "pv"}, "spec": spec})
    }

    fn judged(claim: Value, volume: Option<Value>) -> Option<Violation> {
        judge(&r(), Some(&claim), volume.as_ref())
    }

    #[test]
    fn a_claim_bound_to_host_or_network_storage_is_refused_and_csi_passes() {
        let bound = json!({"spec": {"volumeName": "pv"}});
        for (source, rule) in [
            (json!({"hostPath": {"path": "/"}}), Rule::HostPath),
            (json!({"local": {"path": "/mnt/disks/1"}}), Rule::HostPath),
            (
                json!({"nfs": {"server": "10.0.0.1", "path": "/"}}),
                Rule::VolumeTypes,
            ),
            (
                json!({"iscsi": {"targetPortal": "10.0.0.1:3260", "iqn": "x", "lun": 0}}),
                Rule::VolumeTypes,
            ),
            (
                json!({"cephfs": {"monitors": ["10.0.0.1"]}}),
                Rule::VolumeTypes,
            ),
            (
                json!({"azureFile": {"secretName": "s", "shareName": "x"}}),
                Rule::VolumeTypes,
            ),
            (json!({"flexVolume": {"driver": "x"}}), Rule::VolumeTypes),
            (json!({"someFutureSource": {}}), Rule::VolumeTypes),
            (json!({}), Rule::VolumeTypes),
        ] {
            let v = judged(bound.clone(), Some(pv(source.clone())));
            assert_eq!(v.map(|v| v.rule), Some(rule), "{source}");
        }
        for source in [
            json!({"csi": {"driver": "pd.csi.storage.gke.io", "volumeHandle": "h"}}),
            json!({"gcePersistentDisk": {"pdName": "d"}}),
            json!({"awsElasticBlockStore": {"volumeID": "v"}}),
        ] {
            assert!(
                judged(bound.clone(), Some(pv(source.clone()))).is_none(),
                "{source}"
            );
        }
        // The volume named does not exist: refused, it cannot be judged.
        assert!(judged(bound, None).is_some());
    }

    #[test]
    fn an_unbound_claim_passes_only_when_a_provisioner_makes_its_volume() {
        for claim in [
            json!({"spec": {"storageClassName": ""}}),
            json!({"spec": {"storageClassName": "standard", "selector": {"matchLabels": {"kind": "host"}}}}),
        ] {
            assert!(judged(claim.clone(), None).is_some(), "{claim}");
        }
        for claim in [
            json!({"spec": {}}),
            json!({"spec": {"storageClassName": "standard"}}),
        ] {
            assert!(judged(claim.clone(), None).is_none(), "{claim}");
        }
        // Missing altogether: refused.
        assert!(judge(&r(), None, None).is_some());
    }
}
