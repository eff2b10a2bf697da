//! The HTTP management API, health endpoints and Prometheus metrics (SPEC §8), served off
//! the data path: axum on a current-thread tokio runtime in a thread of its own. Shards
//! are asked over their control channels ([`crate::runtime::control`]); nothing here
//! touches a shard's state directly.
//!
//! - `clients`: `/api/v1/clients` — listing, details, deregistration, commands.
//! - `emqx`: EMQX 5's LwM2M gateway paths under `/api/v5/gateways/lwm2m/`.
//! - `metrics`: `/metrics`, gathered from per-shard snapshots at each scrape.

mod clients;
mod emqx;
mod error;
mod extract;
mod listener;
mod metrics;
mod shards;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

pub use error::ApiError;

use crate::config::Secret;
use crate::runtime::control::Control;
use shards::Shards;

/// Largest request body accepted (413 beyond): a command JSON is at most a few KiB; a
/// write of a large opaque value still fits.
pub const MAX_BODY: usize = 256 << 10;

/// How long a client may take to send a request's headers before its connection is
/// closed, so idle or trickling connections cannot pile up.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long open requests (a command waiting for its device) may go on after a stop.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// What every handler shares.
#[derive(Debug)]
struct AppState {
    shards: Shards,
    token: Option<Secret>,
    node: String,
    started: Instant,
    lookups: emqx::Lookups,
}

/// The running API server.
#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiServer {
    /// Binds `bind` and serves the API on a thread of its own, asking the shards through
    /// `shards` (one control sender per shard, in shard order).
    pub fn start(
        bind: SocketAddr,
        token: Option<Secret>,
        shards: Vec<flume::Sender<Control>>,
        node: String,
    ) -> Result<ApiServer, ApiError> {
        let listener = std::net::TcpListener::bind(bind)
            .map_err(|source| ApiError::Bind { addr: bind, source })?;
        listener.set_nonblocking(true).map_err(ApiError::Start)?;
        let addr = listener.local_addr().map_err(ApiError::Start)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ApiError::Start)?;
        let state = Arc::new(AppState {
            shards: Shards::new(shards),
            token,
            node,
            started: Instant::now(),
            lookups: emqx::Lookups::default(),
        });
        let (shutdown, mut stopped) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            tracing::error!(%addr, "HTTP API not started: {e}");
                            return;
                        }
                    };
                    let server = axum::Server::builder(listener::incoming(listener))
                        .http1_header_read_timeout(HEADER_TIMEOUT);
                    let app = router(state).into_make_service_with_connect_info::<listener::Busy>();
                    let mut grace = stopped.clone();
                    let serving = server.serve(app).with_graceful_shutdown(async move {
                        let _ = stopped.changed().await;
                    });
                    // Requests still open STOP_GRACE after the stop are cut off.
                    let cut = async move {
                        let _ = grace.changed().await;
                        tokio::time::sleep(STOP_GRACE).await;
                        Ok(())
                    };
                    if let Err(e) = futures_lite::future::or(serving, cut).await {
                        tracing::error!(%addr, "HTTP API stopped: {e}");
                    }
                });
            })
            .map_err(ApiError::Start)?;
        tracing::info!(%addr, "HTTP API listening");
        Ok(ApiServer {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: open requests get [`STOP_GRACE`] to finish.
    pub fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!("the HTTP API thread panicked");
            }
        }
    }
}

fn router(state: Arc<AppState>) -> Router {
    let guarded = Router::new()
        .merge(clients::routes())
        .merge(emqx::routes())
        .route("/metrics", get(metrics::metrics))
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(in_progress))
        .with_state(state)
}

/// Marks the connection busy while the request is handled, so its idle timeout does not
/// cut off a command waiting for its device (see [`listener::Busy`]).
async fn in_progress<B>(request: Request<B>, next: Next<B>) -> Response {
    let busy = request
        .extensions()
        .get::<axum::extract::ConnectInfo<listener::Busy>>()
        .map(|info| info.0.enter());
    let response = next.run(request).await;
    drop(busy);
    response
}

/// Lets a request through when no token is configured or it carries `Bearer <token>`.
async fn authorize<B>(
    State(state): State<Arc<AppState>>,
    request: Request<B>,
    next: Next<B>,
) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| {
            use subtle::ConstantTimeEq;
            bool::from(g.as_bytes().ct_eq(token.expose().as_bytes()))
        });
        if !ok {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "NOT_FOUND",
        message: "no such endpoint".into(),
    }
}

/// 200 while the process serves HTTP.
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "up" }))
}

/// 200 when every shard answers (so has restored its registrations and runs) and every
/// shard's broker connection is up; 503 with the reason otherwise.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let reason = match state.shards.snapshots().await {
        Err(e) => Some(e.to_string()),
        Ok(snaps) => {
            let down: Vec<usize> = snaps
                .iter()
                .filter(|s| !s.connected)
                .map(|s| s.shard)
                .collect();
            (!down.is_empty()).then(|| format!("shards {down:?} are not connected to the broker"))
        }
    };
    match reason {
        None => Json(serde_json::json!({
            "status": "ready",
            "shards": state.shards.len(),
            "node": state.node,
            "uptime_secs": state.started.elapsed().as_secs(),
        }))
        .into_response(),
        Some(message) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "code": "NOT_READY", "message": message })),
        )
            .into_response(),
    }
}
