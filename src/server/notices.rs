//! Denials named where users look ([`crate::admission::upstream::notice`]): a Warning
//! event `PodDenied` on the upstream Sandbox whose pod sandgate refused, and on the
//! SandboxClaim that owns that Sandbox. Published off the request path (the answer
//! never waits on it), at most once per owner a minute (the controller retries), and a
//! failure is only logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::DynamicObject;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::admission::upstream::notice::{self, Owner};
use crate::admission::{AdmissionRequest, Decision};
use crate::contract::{self, upstream};
use crate::resources::Kind;

/// Tells owners about denials of the pods made for them.
pub trait DenialNotices: Send + Sync {
    /// Called with every decision the webhook sends; cheap when nothing is to be said.
    fn decided(&self, req: &AdmissionRequest, decision: &Decision);
}

/// No cluster: nobody to tell.
pub struct NoNotices;

impl DenialNotices for NoNotices {
    fn decided(&self, _req: &AdmissionRequest, _decision: &Decision) {}
}

/// One notice per owner within this window.
const WINDOW: Duration = Duration::from_secs(60);
/// Owners remembered at most (a storm of distinct owners cannot grow memory).
const REMEMBERED: usize = 4096;
/// The longest note an event carries (the apiserver's limit is 1 KiB).
const NOTE_BYTES: usize = 1000;

pub struct KubeNotices {
    client: kube::Client,
    recorder: Recorder,
    recent: Mutex<HashMap<String, Instant>>,
}

impl KubeNotices {
    pub fn new(client: kube::Client) -> Self {
        let reporter = Reporter {
            controller: contract::WEBHOOK_REPORTER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `uid` has not been told within the window (and remember it now).
    fn first_in_window(&self, uid: &str) -> bool {
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent
            .get(uid)
            .is_some_and(|t| now.duration_since(*t) < WINDOW)
        {
            return false;
        }
        if recent.len() >= REMEMBERED {
            recent.retain(|_, t| now.duration_since(*t) < WINDOW);
            if recent.len() >= REMEMBERED {
                return false;
            }
        }
        recent.insert(uid.to_string(), now);
        true
    }
}

impl DenialNotices for KubeNotices {
    fn decided(&self, req: &AdmissionRequest, decision: &Decision) {
        let Some(sandbox) = notice::denied_pod_owner(req, decision) else {
            return;
        };
        if !self.first_in_window(&sandbox.uid) {
            return;
        }
        let Some(namespace) = req.namespace.clone() else {
            return;
        };
        let note = truncate(format!("sandgate refused its pod: {}", decision.message()));
        let client = self.client.clone();
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            publish(&recorder, &sandbox, &namespace, note.clone()).await;
            if let Some(claim) = claim_of(&client, &namespace, &sandbox).await {
                publish(&recorder, &claim, &namespace, note).await;
            }
        });
    }
}

/// The SandboxClaim that owns an upstream Sandbox, if any.
async fn claim_of(client: &kube::Client, namespace: &str, sandbox: &Owner) -> Option<Owner> {
    let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(
        client.clone(),
        namespace,
        &crate::facts::upstream_resource(Kind::UpstreamSandbox),
    );
    let sb = match api.get_opt(&sandbox.name).await {
        Ok(sb) => sb?,
        Err(e) => {
            tracing::warn!(error = %e, sandbox = %sandbox.name, "cannot read the denied pod's Sandbox");
            return None;
        }
    };
    let value = serde_json::to_value(sb).ok()?;
    notice::controller_owner(&value, upstream::EXTENSIONS_GROUP, "SandboxClaim")
}

async fn publish(recorder: &Recorder, owner: &Owner, namespace: &str, note: String) {
    let reference = ObjectReference {
        api_version: Some(owner.api_version.clone()),
        kind: Some(owner.kind.clone()),
        name: Some(owner.name.clone()),
        namespace: Some(namespace.to_string()),
        uid: Some(owner.uid.clone()),
        ..ObjectReference::default()
    };
    let ev = Event {
        type_: EventType::Warning,
        reason: contract::POD_DENIED_REASON.into(),
        note: Some(note),
        action: "Admit".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &reference).await {
        tracing::warn!(error = %e, owner = %owner.name, "cannot publish the denial event");
    }
}

/// `text` cut to [`NOTE_BYTES`] on a character boundary.
fn truncate(mut text: String) -> String {
    if text.len() > NOTE_BYTES {
        let mut end = NOTE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn notes_are_cut_on_a_character_boundary() {
        let long = "é".repeat(800);
        let cut = truncate(long);
        assert!(cut.len() <= super::NOTE_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short".into()), "short");
    }
}
