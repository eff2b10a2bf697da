//! EMQX 5's LwM2M gateway paths, with EMQX's query parameters, shapes and status codes, so
//! scripts written against EMQX work unchanged:
//! `/api/v5/gateways/lwm2m/clients` (+ `/{clientid}`, `GET` and `DELETE`) and
//! `/api/v5/gateways/lwm2m/clients/{clientid}/{lookup|observe|read|write}`.
//!
//! `read`, `write` and `observe` answer 204 at once, as EMQX does; the device's response is
//! published on MQTT and kept for `lookup` (path and action) in a bounded table.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::clients::{paging, params, Params};
use super::extract::PathOf;
use super::{ApiError, AppState};
use crate::session::{ClientFilter, ClientInfo};

/// Command outcomes kept for `lookup`; the oldest go first. One per (client, path,
/// action) of commands sent through these paths, a few hundred bytes each.
const MAX_LOOKUPS: usize = 10_000;

/// How long the API waits for a device's answer to record it for `lookup`: past the
/// gateway's own CoAP timeout (~93 s), the command has been answered `coap_timeout`.
const LOOKUP_WAIT: Duration = Duration::from_secs(100);

/// What `lookup` is asked by: client id, path, action.
type LookupKey = (String, String, String);

/// The last outcome per (client, path, action).
#[derive(Debug, Default)]
pub(super) struct Lookups(Mutex<VecDeque<(LookupKey, Value)>>);

impl Lookups {
    fn put(&self, key: LookupKey, value: Value) {
        let Ok(mut table) = self.0.lock() else { return };
        table.retain(|(k, _)| *k != key);
        if table.len() >= MAX_LOOKUPS {
            table.pop_front();
        }
        table.push_back((key, value));
    }

    fn get(&self, key: &LookupKey) -> Option<Value> {
        let table = self.0.lock().ok()?;
        table.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }
}

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v5/gateways/lwm2m/clients", get(list))
        .route(
            "/api/v5/gateways/lwm2m/clients/:clientid",
            get(client).delete(kick),
        )
        .route(
            "/api/v5/gateways/lwm2m/clients/:clientid/lookup",
            get(lookup),
        )
        .route(
            "/api/v5/gateways/lwm2m/clients/:clientid/observe",
            post(observe),
        )
        .route("/api/v5/gateways/lwm2m/clients/:clientid/read", post(read))
        .route(
            "/api/v5/gateways/lwm2m/clients/:clientid/write",
            post(write),
        )
}

fn client_not_found() -> ApiError {
    ApiError::NotFound {
        code: "CLIENT_NOT_FOUND",
        message: "Client not found".into(),
    }
}

/// RFC 3339 time `secs_ago` seconds before now.
fn rfc3339_ago(secs_ago: u64) -> String {
    let at = SystemTime::now()
        .checked_sub(Duration::from_secs(secs_ago))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A client in EMQX's `lwm2m_client` shape.
fn emqx_client(node: &str, c: &ClientInfo) -> Value {
    let since = rfc3339_ago(c.registered_secs_ago);
    json!({
        "node": node,
        "clientid": c.endpoint_name,
        "username": null,
        "endpoint_name": c.endpoint_name,
        "lifetime": c.lifetime,
        "proto_name": "LwM2M",
        "proto_ver": c.lwm2m,
        "ip_address": c.address.ip().to_string(),
        "port": c.address.port(),
        "is_bridge": false,
        "connected": true,
        "connected_at": since,
        "created_at": since,
        "disconnected_at": null,
        "keepalive": c.lifetime,
        "clean_start": true,
        "expiry_interval": 0,
        "subscriptions_cnt": 0,
        "mqueue_len": c.queued_commands.unwrap_or(0),
        "inflight_cnt": usize::from(c.command_in_flight.unwrap_or(false)),
    })
}

async fn list(State(state): State<Arc<AppState>>, q: Params) -> Result<Response, ApiError> {
    let q = params(q)?;
    let (page, limit) = paging(&q).map_err(|_| ApiError::BadRequest {
        code: "INVALID_PARAMETER",
        message: "page_limit_invalid".into(),
    })?;
    let filter = ClientFilter {
        endpoint_name: q.get("endpoint_name").or(q.get("clientid")).cloned(),
        like: q
            .get("like_endpoint_name")
            .or(q.get("like_clientid"))
            .cloned(),
        ..ClientFilter::default()
    };
    let listing = state.shards.list(filter, page, limit).await?;
    let data: Vec<Value> = listing
        .items
        .iter()
        .map(|c| emqx_client(&state.node, c))
        .collect();
    let hasnext = page.saturating_mul(limit) < listing.total;
    Ok(Json(json!({
        "data": data,
        "meta": { "page": page, "limit": limit, "count": listing.total, "hasnext": hasnext },
    }))
    .into_response())
}

async fn client(
    State(state): State<Arc<AppState>>,
    PathOf(id): PathOf<String>,
) -> Result<Response, ApiError> {
    match state.shards.client(&id).await? {
        Some(c) => Ok(Json(emqx_client(&state.node, &c)).into_response()),
        None => Err(ApiError::NotFound {
            code: "RESOURCE_NOT_FOUND",
            message: "Client not found".into(),
        }),
    }
}

async fn kick(
    State(state): State<Arc<AppState>>,
    PathOf(id): PathOf<String>,
) -> Result<Response, ApiError> {
    if state.shards.deregister(&id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound {
            code: "RESOURCE_NOT_FOUND",
            message: "Client not found".into(),
        })
    }
}

fn required<'q>(q: &'q HashMap<String, String>, key: &str) -> Result<&'q str, ApiError> {
    q.get(key)
        .map(String::as_str)
        .ok_or_else(|| ApiError::bad(format!("missing query parameter {key}")))
}

async fn lookup(
    State(state): State<Arc<AppState>>,
    PathOf(id): PathOf<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let q = params(q)?;
    let (path, action) = (required(&q, "path")?, required(&q, "action")?);
    if state.shards.client(&id).await?.is_none() {
        return Err(client_not_found());
    }
    let key = (id.clone(), path.to_owned(), action.to_owned());
    let mut out = json!({ "clientid": id, "path": path, "action": action });
    match state.lookups.get(&key) {
        Some(data) => {
            out["code"] = data.get("code").cloned().unwrap_or(Value::Null);
            out["codeMsg"] = data.get("codeMsg").cloned().unwrap_or(Value::Null);
            if let Some(content) = data.get("content") {
                out["content"] = content.clone();
            }
        }
        None => {
            out["code"] = json!("6.01");
            out["codeMsg"] = json!("reply_not_received");
        }
    }
    Ok(Json(out).into_response())
}

/// Sends `data` as a `msg_type` command and, in the background, records the device's
/// answer for `lookup`. 204 as EMQX answers; 404 when no shard holds the client.
async fn send(
    state: Arc<AppState>,
    id: String,
    msg_type: &'static str,
    data: Value,
) -> Result<Response, ApiError> {
    let path = data
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let command = json!({ "msgType": msg_type, "data": data });
    let payload = serde_json::to_vec(&command).map_err(|e| ApiError::bad(e.to_string()))?;
    let Some(answer) = state.shards.command(&id, &payload, true).await? else {
        return Err(client_not_found());
    };
    if let Some(rx) = answer {
        let key = (id, path, msg_type.to_owned());
        tokio::spawn(async move {
            if let Ok(Ok(json)) = tokio::time::timeout(LOOKUP_WAIT, rx).await {
                if let Ok(mut v) = serde_json::from_slice::<Value>(&json) {
                    if let Some(data) = v.get_mut("data").map(Value::take) {
                        state.lookups.put(key, data);
                    }
                }
            }
        });
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn observe(
    State(state): State<Arc<AppState>>,
    PathOf(id): PathOf<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let q = params(q)?;
    let path = required(&q, "path")?.to_owned();
    let enable = match required(&q, "enable")? {
        "true" | "1" => true,
        "false" | "0" => false,
        v => {
            return Err(ApiError::bad(format!(
                "enable must be true or false, not {v:?}"
            )))
        }
    };
    let msg_type = if enable { "observe" } else { "cancel-observe" };
    send(state, id, msg_type, json!({ "path": path })).await
}

async fn read(
    State(state): State<Arc<AppState>>,
    PathOf(id): PathOf<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let q = params(q)?;
    let path = required(&q, "path")?.to_owned();
    send(state, id, "read", json!({ "path": path })).await
}

async fn write(
    State(state): State<Arc<AppState>>,
    PathOf(id): PathOf<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let q = params(q)?;
    let data = json!({
        "path": required(&q, "path")?,
        "type": required(&q, "type")?,
        "value": required(&q, "value")?,
    });
    send(state, id, "write", data).await
}
