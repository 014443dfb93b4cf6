//! The daemon's HTTP endpoints: webhooks, health, readiness, status and metrics.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::webhook::{self, Event, HookError, Provider};
use super::{Shared, Trigger};

/// The largest webhook body accepted (GitHub caps payloads at 25 MB, but push payloads
/// of a config repository are far smaller); larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/hooks/{provider}", post(hook))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_large))
        .with_state(shared)
}

/// Refuses a body whose declared length is over the limit before reading any of it
/// (`DefaultBodyLimit` still stops chunked bodies that grow past it).
async fn refuse_large(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        );
    }
    next.run(req).await
}

fn reply(code: StatusCode, text: impl Into<String>) -> Response {
    let mut t = text.into();
    t.push('\n');
    (code, t).into_response()
}

async fn hook(
    State(shared): State<Arc<Shared>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(p) = Provider::parse(&provider) else {
        return reply(
            StatusCode::NOT_FOUND,
            format!("unknown provider {provider:?}: use github, gitea, forgejo, gitlab or generic"),
        );
    };
    let m = &shared.metrics;
    let Some(secret) = &shared.webhook_secret else {
        m.webhook(p.label(), "disabled");
        return reply(
            StatusCode::FORBIDDEN,
            "webhooks are disabled: start the daemon with --webhook-secret-file",
        );
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(e) = webhook::verify(p, header, &body, secret.expose()) {
        m.webhook(p.label(), "unauthorized");
        tracing::warn!(provider = p.label(), error = %e, "webhook refused");
        return reply(StatusCode::UNAUTHORIZED, e.to_string());
    }
    let delivery = match webhook::parse(p, header, &body) {
        Ok(d) => d,
        Err(e @ (HookError::BadRequest(_) | HookError::Unauthorized(_))) => {
            m.webhook(p.label(), "bad_request");
            return reply(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    if let Some(id) = &delivery.id {
        if !super::lock(&shared.deliveries).first_time(id) {
            m.webhook(p.label(), "duplicate");
            return reply(
                StatusCode::OK,
                format!("delivery {id} was already received; ignored"),
            );
        }
    }
    match delivery.event {
        Event::Ping => {
            m.webhook(p.label(), "ping");
            reply(StatusCode::OK, "pong")
        }
        Event::Other(kind) => {
            m.webhook(p.label(), "ignored");
            reply(
                StatusCode::OK,
                format!("ignored event {kind:?}: only pushes trigger a fetch"),
            )
        }
        Event::Push { git_ref } => {
            let watched = format!("refs/heads/{}", shared.branch);
            match git_ref {
                Some(r) if r != watched => {
                    m.webhook(p.label(), "ignored");
                    reply(
                        StatusCode::OK,
                        format!("ignored push to {r}: watching {watched}"),
                    )
                }
                _ => {
                    m.webhook(p.label(), "accepted");
                    tracing::info!(
                        provider = p.label(),
                        delivery = delivery.id.as_deref().unwrap_or("-"),
                        "push received; fetching"
                    );
                    shared.trigger(Trigger::Fetch);
                    reply(StatusCode::ACCEPTED, "accepted: fetching")
                }
            }
        }
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready() {
        let role = if shared.is_leader() {
            "leader"
        } else {
            "standby"
        };
        reply(StatusCode::OK, format!("ready ({role})"))
    } else {
        let st = shared.status();
        let why = if st.redis != "ok" {
            "Redis is not reachable"
        } else {
            "no valid revision read yet (the cluster is unknown)"
        };
        reply(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}"))
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.status()).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}
