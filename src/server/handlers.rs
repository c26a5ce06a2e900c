//! The admission handler: I/O around the decision pipeline. It reads the body within a
//! size and time bound, parses the AdmissionReview, runs [`admission::admit`] (inline
//! when cheap, else on the blocking pool), performs the side effects the decision asks
//! for, and answers in admission.k8s.io/v1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

use super::metrics::{RequestLabels, WebhookLabels};
use super::{AppState, MAX_BODY_BYTES};
use crate::admission::{self, AdmissionRequest, Decision, Effect, Webhook, pipeline, review};
use crate::facts;

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
    timeout: Duration,
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

    let (req, decision) = decide(&state, webhook, req, bytes.len()).await;
    state.metrics.record_policy_runs(&decision.policy_runs);
    let decision = check_lookups(&state, decision).await;
    let decision = perform_effects(&state, decision).await;

    state.notices.decided(&req, &decision);
    let label = decision.label();
    record(req.kind.kind.clone(), req.operation.as_str(), label);
    if !decision.allowed {
        state.metrics.record_denial(&req.kind.kind, &decision);
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

/// Pipelines expected to take less than this run on the I/O thread that received the
/// request: handing them to the blocking pool cost more than running them (pod
/// /validate at 64 connections: 15.5k/s through the pool, 25k/s inline).
const INLINE_COST: Duration = Duration::from_micros(500);
/// Requests larger than this go to the blocking pool when policies judge them:
/// evaluation time grows with the object, and a large one must not stall the I/O
/// threads.
const INLINE_BYTES: usize = 64 * 1024;

/// Runs the pipeline where it is cheapest: inline when no policy runs or the kind's
/// policies are cheap and the request small; otherwise on a blocking thread, at most one
/// per core at a time. A crash denies.
async fn decide(
    state: &AppState,
    webhook: Webhook,
    req: AdmissionRequest,
    body_len: usize,
) -> (AdmissionRequest, Decision) {
    let set = state.policies.get();
    let heavy = pipeline::policy_kind(webhook, &req, &state.config, &set)
        .is_some_and(|kind| body_len > INLINE_BYTES || set.typical_cost(&kind) > INLINE_COST);
    if !heavy {
        // Caught like a panic on the blocking pool: a crash denies with a reason rather
        // than dropping the connection.
        let run =
            std::panic::AssertUnwindSafe(|| admission::admit(webhook, &req, &state.config, &set));
        let decision = std::panic::catch_unwind(run)
            .unwrap_or_else(|_| pipeline::failed(&req, "policy evaluation crashed"));
        return (req, decision);
    }
    let Ok(_permit) = state.eval_permits.acquire().await else {
        let decision = pipeline::failed(&req, "policy evaluation is shutting down");
        return (req, decision);
    };
    let config = state.config.clone();
    let shared = Arc::new(req);
    let for_pool = shared.clone();
    let result =
        tokio::task::spawn_blocking(move || admission::admit(webhook, &for_pool, &config, &set))
            .await;
    let req = Arc::try_unwrap(shared).unwrap_or_else(|shared| (*shared).clone());
    let decision = result
        .unwrap_or_else(|e| pipeline::failed(&req, format!("policy evaluation crashed: {e}")));
    (req, decision)
}

/// Checks the cluster facts the decision depends on ([`facts::resolve`]).
async fn check_lookups(state: &AppState, decision: Decision) -> Decision {
    facts::resolve(state.facts.as_ref(), decision).await
}

/// Performs the decision's side effects (the pipeline leaves them only on admitted
/// requests that are not dry runs); any failure denies the request (fail closed).
async fn perform_effects(state: &AppState, decision: Decision) -> Decision {
    for effect in &decision.effects {
        let result = match effect {
            Effect::EnsureDefaultDeny { namespace } => state.default_deny.ensure(namespace).await,
        };
        if let Err(e) = result {
            state.metrics.side_effect_errors.inc();
            tracing::error!(error = %e, "side effect failed; denying");
            let violation = effect.failed(&e);
            return decision.fail(violation);
        }
    }
    decision
}
