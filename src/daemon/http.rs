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

/// How long a client may take to send a request's headers before the connection is closed
/// (a slow-loris client cannot hold a connection open by sending nothing).
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Connections served at once; further clients wait in the listen backlog until one
/// closes, so a flood cannot exhaust file descriptors or memory.
pub const MAX_CONNECTIONS: usize = 256;
/// The longest a single connection (with keep-alive, all its requests) may live.
pub const CONNECTION_MAX_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves `app` on `listener` until `shutdown` resolves: HTTP/1.1 with a header read
/// timeout, at most [`MAX_CONNECTIONS`] connections and a lifetime per connection.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let service = hyper_util::service::TowerToHyperService::new(app);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = service.clone();
        tokio::spawn(async move {
            let _slot = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_MAX_LIFETIME, conn).await;
        });
    }
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/hooks/{provider}", post(hook))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/ping/{token}", post(ping).get(ping))
        .route("/ping/{token}/{signal}", post(ping_signal).get(ping_signal))
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
        let why = if st.redis == "ok" {
            "no valid revision read yet (the cluster is unknown)"
        } else {
            "Redis is not reachable"
        };
        reply(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}"))
    }
}

async fn ping(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    check_in(shared, token, String::new(), &headers, body).await
}

async fn ping_signal(
    State(shared): State<Arc<Shared>>,
    Path((token, signal)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    check_in(shared, token, signal, &headers, body).await
}

/// `/ping/<token>[/start|/fail]`: records a check-in of the check the token belongs to
/// (docs/runs.md#check-ins). Unknown tokens get 404, whatever their shape.
async fn check_in(
    shared: Arc<Shared>,
    token: String,
    signal: String,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    use crate::runs::checkin;
    let Some(signal) = checkin::Signal::parse(&signal) else {
        return reply(
            StatusCode::NOT_FOUND,
            "unknown signal: use /start, /fail or none",
        );
    };
    if !checkin::well_formed(&token) {
        return reply(StatusCode::NOT_FOUND, "unknown check");
    }
    if body.len() > checkin::MAX_PING_BODY {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a ping body is at most {} bytes", checkin::MAX_PING_BODY),
        );
    }
    let hash = checkin::token_hash(&token);
    if !shared.allow_ping(&hash) {
        return reply(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "at most {} pings a minute per check",
                checkin::PINGS_PER_MINUTE
            ),
        );
    }
    let Some(cluster) = shared.cluster.get().cloned() else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid revision read yet",
        );
    };
    let agent: String = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("a client")
        .chars()
        .filter(|c| !c.is_control())
        .take(60)
        .collect();
    let url = shared.redis.clone();
    let done = tokio::task::spawn_blocking(move || -> Result<Option<String>, String> {
        let mut store = crate::state::Store::connect(&url, &cluster).map_err(|e| e.to_string())?;
        let Some(check) = store.check_of_token(&hash).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let now = crate::state::runs::epoch_secs(chrono::Utc::now());
        checkin::record(&mut store, &check, signal, &body, &agent, now)
            .map_err(|e| e.to_string())?;
        Ok(Some(check))
    })
    .await;
    match done {
        Ok(Ok(Some(check))) => {
            tracing::info!(check = %check, signal = ?signal, "check-in");
            reply(StatusCode::OK, "OK")
        }
        Ok(Ok(None)) => reply(StatusCode::NOT_FOUND, "unknown check"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "recording a check-in failed");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot record the check-in now",
            )
        }
        Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
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
