//! The live sandbox RuntimeClass, compared with the configuration: the webhook admits
//! pods under the class *name*, so if the class of that name is missing or names another
//! handler, pods would run without gVisor. The webhook then reports itself not ready
//! (its Service loses its endpoints and sandbox pods fail closed) and
//! `sandgate_runtime_class_ok` drops to 0.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::node::v1::RuntimeClass;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Registry;
use crate::server::Readiness;

/// The readiness component this check reports as.
const COMPONENT: &str = "runtime-class";

/// Registers the gauge; 1 until a check says otherwise.
pub fn register(registry: &mut Registry) -> Gauge {
    let ok = Gauge::default();
    ok.set(1);
    registry.component().register(
        "runtime_class_ok",
        "1 when the sandbox RuntimeClass exists and names the configured handler",
        ok.clone(),
    );
    ok
}

/// What the check concludes from one read of the class.
pub fn verdict(class: Option<&RuntimeClass>, name: &str, handler: &str) -> Result<(), String> {
    match class {
        None => Err(format!(
            "RuntimeClass {name:?} does not exist; sandbox pods cannot run under it"
        )),
        Some(rc) if rc.handler != handler => Err(format!(
            "RuntimeClass {name:?} names handler {:?}, not {handler:?}: pods admitted under it would run without the sandbox",
            rc.handler
        )),
        Some(_) => Ok(()),
    }
}

/// Checks every `every` until the task is dropped. A read that fails (the apiserver
/// unreachable) keeps the last verdict: only a seen mismatch takes readiness down.
pub async fn watch(
    client: kube::Client,
    name: String,
    handler: String,
    readiness: Arc<Readiness>,
    ok: Gauge,
    every: Duration,
) {
    let api: kube::Api<RuntimeClass> = kube::Api::all(client);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let class = match api.get_opt(&name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, runtime_class = %name, "cannot read the sandbox RuntimeClass");
                continue;
            }
        };
        match verdict(class.as_ref(), &name, &handler) {
            Ok(()) => {
                ok.set(1);
                readiness.set_problem(COMPONENT, None);
            }
            Err(problem) => {
                if ok.get() == 1 {
                    tracing::error!(%problem, "sandbox RuntimeClass mismatch; not ready");
                }
                ok.set(0);
                readiness.set_problem(COMPONENT, Some(problem));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_swapped_class_is_a_problem() {
        let rc = |handler: &str| -> RuntimeClass {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                "metadata": {"name": "gvisor"}, "handler": handler
            }))
            .unwrap()
        };
        assert!(verdict(Some(&rc("runsc")), "gvisor", "runsc").is_ok());
        assert!(
            verdict(Some(&rc("runc")), "gvisor", "runsc")
                .unwrap_err()
                .contains("runc")
        );
        assert!(verdict(None, "gvisor", "runsc").is_err());
    }
}
