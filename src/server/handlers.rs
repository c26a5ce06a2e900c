//! The admission handler: I/O around the decision pipeline. It reads the body within a
//! size and time bound, parses the AdmissionReview, runs [`admission::admit`] (inline
//! when cheap, else on the blocking pool), performs the side effects the decision asks
//! for, and answers in admission.k8s.io/v1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
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

/// The apiserver waits at most this long for a webhook (`timeoutSeconds` is 1–30).
const MAX_DEADLINE: Duration = Duration::from_secs(30);
/// The deadline of a request that does not say (the apiserver's default timeout).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// When the request's answer stops mattering: the `timeout` the apiserver puts in the
/// query (`?timeout=5s`, the entry's `timeoutSeconds`), counted from `start`, at most
/// [`MAX_DEADLINE`]. A value that does not parse gets the default.
fn deadline(uri: &Uri, start: Instant) -> (Instant, Duration) {
    let asked = uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("timeout="))
        .and_then(parse_go_duration)
        .unwrap_or(DEFAULT_DEADLINE)
        .min(MAX_DEADLINE);
    (start + asked, asked)
}

/// A Go duration as the apiserver writes a timeout: `5s`, `1m0s`, `500ms`, `1.5s`.
fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let number: f64 = number.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "h" => number * 3600.0,
            "m" => number * 60.0,
            "s" => number,
            "ms" => number / 1e3,
            "us" | "µs" => number / 1e6,
            "ns" => number / 1e9,
            _ => return None,
        };
        total = total.checked_add(Duration::try_from_secs_f64(seconds).ok()?)?;
        rest = tail;
    }
    Some(total)
}

pub async fn admit(
    State(state): State<Arc<AppState>>,
    webhook: Webhook,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let (deadline, allowed_time) = deadline(&uri, start);
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
    let req = match parse(&state, &bytes).await {
        Ok(r) => r,
        Err(e) => {
            record("unknown".into(), "unknown", "error");
            tracing::warn!(webhook = webhook.as_str(), error = %e, "malformed admission request");
            return plain(StatusCode::BAD_REQUEST, format!("sandgate: {e}"));
        }
    };

    // Everything a request triggers stops at its deadline: the apiserver has stopped
    // waiting, and a hostile request must not keep the CPU or the apiserver busy after
    // that. (A client that goes away drops this future, which stops it the same way.)
    // The work on the blocking pool is bounded on its own (the analyses by their input
    // bounds, each policy by its deadline).
    let req = Arc::new(req);
    let judged = tokio::time::timeout_at(deadline.into(), async {
        let decision = decide(&state, webhook, req.clone(), bytes.len()).await;
        state.metrics.record_policy_runs(&decision.policy_runs);
        let decision = check_lookups(&state, decision).await;
        perform_effects(&state, decision).await
    })
    .await;
    let decision = judged.unwrap_or_else(|_| {
        state.metrics.deadline_exceeded.inc();
        pipeline::failed(
            &req,
            format!("not judged within the request's deadline ({allowed_time:?}); retry later"),
        )
    });

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

/// Parses the review: inline when small, on the blocking pool (under the same permits
/// as heavy evaluations) when large, so that parsing hostile megabytes never holds the
/// I/O threads that ordinary requests are answered on.
async fn parse(state: &AppState, bytes: &bytes::Bytes) -> Result<AdmissionRequest, String> {
    if bytes.len() <= INLINE_BYTES {
        return review::parse(bytes).map_err(|e| e.to_string());
    }
    let Ok(_permit) = state.eval_permits.acquire().await else {
        return Err("shutting down".into());
    };
    let bytes = bytes.clone();
    tokio::task::spawn_blocking(move || review::parse(&bytes).map_err(|e| e.to_string()))
        .await
        .unwrap_or_else(|e| Err(format!("parsing crashed: {e}")))
}

/// Runs the pipeline where it is cheapest: inline when no policy runs or the kind's
/// policies are cheap and the request small; otherwise on a blocking thread, at most one
/// per core at a time. A crash denies.
async fn decide(
    state: &AppState,
    webhook: Webhook,
    req: Arc<AdmissionRequest>,
    body_len: usize,
) -> Decision {
    let set = state.policies.get();
    let heavy = pipeline::policy_kind(webhook, &req, &state.config, &set)
        .is_some_and(|kind| body_len > INLINE_BYTES || set.typical_cost(&kind) > INLINE_COST);
    if !heavy {
        // Caught like a panic on the blocking pool: a crash denies with a reason rather
        // than dropping the connection.
        let run =
            std::panic::AssertUnwindSafe(|| admission::admit(webhook, &req, &state.config, &set));
        return std::panic::catch_unwind(run)
            .unwrap_or_else(|_| pipeline::failed(&req, "policy evaluation crashed"));
    }
    let Ok(_permit) = state.eval_permits.acquire().await else {
        return pipeline::failed(&req, "policy evaluation is shutting down");
    };
    let config = state.config.clone();
    let for_pool = req.clone();
    // A large request's cost is its own: it must not make its kind look slow.
    let set = if body_len > INLINE_BYTES {
        Arc::new(set.unrecorded())
    } else {
        set
    };
    tokio::task::spawn_blocking(move || admission::admit(webhook, &for_pool, &config, &set))
        .await
        .unwrap_or_else(|e| pipeline::failed(&req, format!("policy evaluation crashed: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_as_the_apiserver_writes_them() {
        for (text, want) in [
            ("5s", Duration::from_secs(5)),
            ("1m0s", Duration::from_secs(60)),
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("1h", Duration::from_secs(3600)),
        ] {
            assert_eq!(parse_go_duration(text), Some(want), "{text}");
        }
        for bad in [
            "",
            "5",
            "s",
            "5x",
            "-1s",
            "1e999s",
            "9999999999999999999999h",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_deadline_is_the_query_timeout_at_most_thirty_seconds() {
        let start = Instant::now();
        let at = |uri: &str| deadline(&uri.parse().expect("a URI"), start).1;
        assert_eq!(at("/validate?timeout=5s"), Duration::from_secs(5));
        assert_eq!(at("/validate?x=1&timeout=2s"), Duration::from_secs(2));
        assert_eq!(at("/validate"), DEFAULT_DEADLINE);
        assert_eq!(at("/validate?timeout=nonsense"), DEFAULT_DEADLINE);
        assert_eq!(at("/validate?timeout=1h"), MAX_DEADLINE);
    }
}
