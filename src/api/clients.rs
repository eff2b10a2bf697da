//! `/api/v1/clients`: the clients of every shard, one client's details, deregistering one,
//! and commands with the MQTT command topic's JSON.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::extract::PathOf;
use super::{ApiError, AppState, MAX_BODY};
use crate::dtls::Security;
use crate::session::ClientFilter;
use crate::translate::Operation;

/// Clients per page unless `limit` says otherwise.
pub(super) const DEFAULT_LIMIT: usize = 100;

/// Most clients per page: a page of 1000 is ~0.5 MB of JSON and a few ms of one shard's
/// time; more would make single requests long stalls for the API thread and the shard.
pub(super) const MAX_LIMIT: usize = 1000;

/// How long a client may take to send a command's body once its headers are in: a few
/// KiB need milliseconds, and a connection held open by a body that never comes is closed.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest `wait` a command request may ask for: beyond, a held HTTP connection costs
/// more than polling MQTT does.
const MAX_WAIT: Duration = Duration::from_secs(60);

pub(super) type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/clients", get(list))
        .route("/api/v1/clients/:ep", get(client).delete(deregister))
        .route("/api/v1/clients/:ep/:op", post(command))
}

/// The query parameters, or a 400.
pub(super) fn params(q: Params) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad(format!("bad query string: {e}")))
}

/// `page` (1-based) and `limit` (1..=[`MAX_LIMIT`]).
pub(super) fn paging(q: &HashMap<String, String>) -> Result<(usize, usize), ApiError> {
    let number = |key: &str, default: usize, max: usize| -> Result<usize, ApiError> {
        match q.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| ApiError::BadRequest {
                    code: "INVALID_PARAMETER",
                    message: format!("{key} must be an integer from 1 to {max}, not {v:?}"),
                }),
        }
    };
    Ok((
        number("page", 1, usize::MAX)?,
        number("limit", DEFAULT_LIMIT, MAX_LIMIT)?,
    ))
}

fn filter(q: &HashMap<String, String>) -> Result<ClientFilter, ApiError> {
    let security = match q.get("security").map(String::as_str) {
        None => None,
        Some("none") => Some(Security::None),
        Some("psk") => Some(Security::Psk),
        Some("x509") => Some(Security::X509),
        Some(v) => {
            return Err(ApiError::bad(format!(
                "security must be none, psk or x509, not {v:?}"
            )))
        }
    };
    let queue_mode = match q.get("queue_mode").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(v) => {
            return Err(ApiError::bad(format!(
                "queue_mode must be true or false, not {v:?}"
            )))
        }
    };
    Ok(ClientFilter {
        endpoint_name: q.get("endpoint_name").cloned(),
        like: q.get("like").cloned(),
        security,
        queue_mode,
    })
}

async fn list(State(state): State<Arc<AppState>>, q: Params) -> Result<Response, ApiError> {
    let q = params(q)?;
    let (page, limit) = paging(&q)?;
    let filter = filter(&q)?;
    let listing = state.shards.list(filter, page, limit).await?;
    Ok(Json(serde_json::json!({
        "data": listing.items,
        "meta": { "page": page, "limit": limit, "count": listing.total },
    }))
    .into_response())
}

async fn client(
    State(state): State<Arc<AppState>>,
    PathOf(ep): PathOf<String>,
) -> Result<Response, ApiError> {
    match state.shards.client(&ep).await? {
        Some(info) => Ok(Json(info).into_response()),
        None => Err(ApiError::no_client(&ep)),
    }
}

async fn deregister(
    State(state): State<Arc<AppState>>,
    PathOf(ep): PathOf<String>,
) -> Result<Response, ApiError> {
    if state.shards.deregister(&ep).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::no_client(&ep))
    }
}

/// The body, or 413 beyond [`MAX_BODY`] (at once when its `Content-Length` says so), or
/// 408 when it has not arrived within [`BODY_TIMEOUT`].
async fn read_body(headers: &HeaderMap, mut body: Body) -> Result<Bytes, ApiError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::TooLarge(MAX_BODY));
    }
    let read = async {
        let mut buf = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|_| ApiError::bad("cannot read the request body"))?;
            if buf.len() + chunk.len() > MAX_BODY {
                return Err(ApiError::TooLarge(MAX_BODY));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or(Err(ApiError::BodyTimeout(BODY_TIMEOUT)))
}

/// `POST /api/v1/clients/{ep}/commands` with a command as the MQTT command topic takes
/// it, or `POST /api/v1/clients/{ep}/{msgType}` (`read`, `write`, `observe`, ...) with the
/// same JSON, whose `msgType` may then be left out.
async fn command(
    State(state): State<Arc<AppState>>,
    PathOf((ep, op)): PathOf<(String, String)>,
    q: Params,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let q = params(q)?;
    let (parts, body) = request.into_parts();
    let payload = read_body(&parts.headers, body).await?;
    let wait = match q.get("wait") {
        None => None,
        Some(w) => Some(
            humantime::parse_duration(w)
                .ok()
                .filter(|d| *d <= MAX_WAIT)
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "wait must be a duration up to {MAX_WAIT:?}, like 5s, not {w:?}"
                    ))
                })?,
        ),
    };
    let mut command = match serde_json::from_slice::<serde_json::Value>(&payload) {
        Ok(serde_json::Value::Object(command)) => command,
        Ok(_) => return Err(ApiError::bad("the command must be a JSON object")),
        Err(e) => return Err(ApiError::bad(format!("the command is not JSON: {e}"))),
    };
    let payload = if op == "commands" {
        match command.get("msgType").and_then(serde_json::Value::as_str) {
            Some(t) if Operation::parse(t).is_some() => payload,
            Some(t) => return Err(ApiError::bad(format!("unknown msgType {t:?}"))),
            None => return Err(ApiError::bad("the command needs a string msgType")),
        }
    } else if Operation::parse(&op).is_none() {
        return Err(ApiError::NotFound {
            code: "NOT_FOUND",
            message: format!("no operation {op:?}: POST .../commands or .../<msgType>"),
        });
    } else {
        match command.get("msgType") {
            None => {
                command.insert("msgType".into(), op.clone().into());
            }
            Some(t) if *t == *op => {}
            Some(t) => {
                return Err(ApiError::bad(format!(
                    "msgType {t} in the body does not match the path's {op:?}"
                )))
            }
        }
        serde_json::to_vec(&command)
            .map_err(|e| ApiError::bad(e.to_string()))?
            .into()
    };
    let Some(answer) = state.shards.command(&ep, &payload, wait.is_some()).await? else {
        return Err(ApiError::no_client(&ep));
    };
    let (Some(rx), Some(wait)) = (answer, wait) else {
        return Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "status": "accepted" })),
        )
            .into_response());
    };
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(json)) => Ok((
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response()),
        Ok(Err(_)) => Err(ApiError::Timeout(
            "the command's outcome was lost (the endpoint moved to another shard); it is published on MQTT".into(),
        )),
        Err(_) => Err(ApiError::Timeout(format!(
            "no response within {wait:?}; it will still be published on MQTT"
        ))),
    }
}
