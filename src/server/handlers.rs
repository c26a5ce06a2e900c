//! Request handlers. The admission handler reads the body within a size and time
//! bound, parses the AdmissionReview, asks the pure decision code, performs the
//! decision's side effects (never on dry-run) and answers in admission.k8s.io/v1.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

use super::metrics::{PolicyLabels, RequestLabels, WebhookLabels};
use super::{AppState, MAX_BODY_BYTES};
use crate::admission::{self, AdmissionRequest, Decision, Effect, Violation, Webhook, review};
use crate::policy::PolicySet;

fn plain(status: StatusCode, text: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn read_body(
    headers: &HeaderMap,
    body: Body,
    timeout: std::time::Duration,
) -> Result<bytes::Bytes, Response> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let collect = Limited::new(body, MAX_BODY_BYTES).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(plain(
            StatusCode::REQUEST_TIMEOUT,
            format!("sandgate: request body not received within {timeout:?}"),
        )),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(plain(
            StatusCode::BAD_REQUEST,
            format!("sandgate: cannot read request body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

fn too_large() -> Response {
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "sandgate: request body exceeds the {} MiB limit",
            MAX_BODY_BYTES / (1024 * 1024)
        ),
    )
}

pub async fn admit(
    State(state): State<Arc<AppState>>,
    webhook: Webhook,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let record = |kind: String, operation: &'static str, decision: &'static str| {
        state
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                webhook: webhook.as_str(),
                kind,
                operation,
                decision,
            })
            .inc();
        state
            .metrics
            .duration
            .get_or_create(&WebhookLabels {
                webhook: webhook.as_str(),
            })
            .observe(start.elapsed().as_secs_f64());
    };

    let bytes = match read_body(&headers, body, state.body_timeout).await {
        Ok(b) => b,
        Err(resp) => {
            record("unknown".into(), "unknown", "error");
            return resp;
        }
    };
    let req = match review::parse(&bytes) {
        Ok(r) => r,
        Err(e) => {
            record("unknown".into(), "unknown", "error");
            tracing::warn!(webhook = webhook.as_str(), error = %e, "malformed admission request");
            return plain(StatusCode::BAD_REQUEST, format!("sandgate: {e}"));
        }
    };

    let mut decision = admission::decide(webhook, &req, &state.config);
    let kind = admission::policy_kind(&req);
    if admission::policies_apply(webhook, &req, &state.config, &decision) {
        let set = state.policies.get();
        if set.judges(&kind) {
            evaluate_policies(&state, set, &req, &kind, bytes.len(), &mut decision).await;
        }
    }
    if decision.allowed
        && !req.is_dry_run()
        && let Err(v) = perform_effects(&state, &decision.effects).await
    {
        decision = Decision::deny(std::mem::take(&mut decision.subject), vec![v]);
    }

    let label = decision.label();
    record(req.kind.kind.clone(), req.operation.as_str(), label);
    if !decision.allowed {
        tracing::info!(
            uid = %req.uid,
            webhook = webhook.as_str(),
            operation = req.operation.as_str(),
            message = %decision.message(),
            "denied"
        );
    } else {
        tracing::debug!(uid = %req.uid, webhook = webhook.as_str(), decision = label, "admitted");
    }
    axum::Json(review::encode(&req.uid, &decision)).into_response()
}

/// Evaluations expected to take less than this run on the I/O thread that received
/// the request: handing them to the blocking pool cost more than evaluating them
/// (pod /validate at 64 connections: 15.5k/s through the pool, 25k/s inline).
const INLINE_COST: std::time::Duration = std::time::Duration::from_micros(500);
/// Requests larger than this always go to the blocking pool: evaluation time grows
/// with the object, and a large one must not stall the I/O threads.
const INLINE_BYTES: usize = 64 * 1024;

/// Runs the policies of `kind` and folds their verdict into the decision. Cheap
/// evaluations of small requests run inline; the others on a blocking thread, at most
/// one per core at a time. Anything that goes wrong denies.
async fn evaluate_policies(
    state: &AppState,
    set: Arc<PolicySet>,
    req: &AdmissionRequest,
    kind: &str,
    body_len: usize,
    decision: &mut Decision,
) {
    let who = admission::subject(kind, req);
    let fail = |decision: &mut Decision, why: String| {
        *decision = Decision::deny(
            who.clone(),
            vec![Violation::new("internal", "policies", why)],
        );
    };
    let review = match serde_json::to_value(req) {
        Ok(v) => v,
        Err(e) => return fail(decision, format!("cannot build the policy input: {e}")),
    };
    let outcome = if body_len <= INLINE_BYTES && set.typical_cost(kind) <= INLINE_COST {
        // Caught like a panic on the blocking pool: a crash denies with a reason
        // rather than dropping the connection.
        let run = std::panic::AssertUnwindSafe(|| set.evaluate(kind, &review));
        match std::panic::catch_unwind(run) {
            Ok(o) => o,
            Err(_) => return fail(decision, "policy evaluation crashed".into()),
        }
    } else {
        let Ok(_permit) = state.eval_permits.acquire().await else {
            return fail(decision, "policy evaluation is shutting down".into());
        };
        let kind_owned = kind.to_string();
        match tokio::task::spawn_blocking(move || set.evaluate(&kind_owned, &review)).await {
            Ok(o) => o,
            Err(e) => return fail(decision, format!("policy evaluation crashed: {e}")),
        }
    };
    for (policy, denied, took) in &outcome.timings {
        let labels = PolicyLabels {
            policy: policy.clone(),
        };
        state
            .metrics
            .policy_evaluations
            .get_or_create(&labels)
            .inc();
        state
            .metrics
            .policy_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if *denied {
            state.metrics.policy_denials.get_or_create(&labels).inc();
        }
    }
    admission::merge_policies(decision, outcome, &who);
}

/// Side effects the decision asked for; any failure denies the pod (fail closed).
async fn perform_effects(state: &AppState, effects: &[Effect]) -> Result<(), Violation> {
    for effect in effects {
        match effect {
            Effect::EnsureDefaultDeny { namespace } => {
                if let Err(e) = state.default_deny.ensure(namespace).await {
                    state.metrics.side_effect_errors.inc();
                    tracing::error!(error = %e, "default-deny NetworkPolicy not ensured; denying");
                    return Err(Violation::new(
                        "network-policy",
                        "metadata.namespace",
                        format!(
                            "the namespace's default-deny NetworkPolicy could not be ensured ({e}); retry later"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.readiness.check() {
        Ok(()) => plain(StatusCode::OK, "ok".into()),
        Err(reasons) => plain(StatusCode::SERVICE_UNAVAILABLE, reasons.join("\n")),
    }
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
