//! The API's errors: how it fails to start, and what a request gets back when it fails —
//! always a status code with a JSON body `{"code": "...", "message": "..."}`.

use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Errors of the HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `api.bind` could not be bound.
    #[error("api.bind: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The API thread or its runtime could not start.
    #[error("cannot start the HTTP API: {0}")]
    Start(std::io::Error),
    /// No such client (or resource).
    #[error("{message}")]
    NotFound {
        /// The JSON `code`.
        code: &'static str,
        /// What was not found.
        message: String,
    },
    /// A parameter or the body is wrong.
    #[error("{message}")]
    BadRequest {
        /// The JSON `code`.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The body is longer than the API accepts.
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// The client did not send the body it announced in time.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// A token is configured and the request did not carry it.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// A shard did not take the request (stopped, or too busy).
    #[error("{0}")]
    Unavailable(String),
    /// The device did not answer in the time the caller waits.
    #[error("{0}")]
    Timeout(String),
}

impl ApiError {
    /// A 400 with `code` `BAD_REQUEST`.
    pub(super) fn bad(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code: "BAD_REQUEST",
            message: message.into(),
        }
    }

    /// A 404 for the client `ep`.
    pub(super) fn no_client(ep: &str) -> ApiError {
        ApiError::NotFound {
            code: "NOT_FOUND",
            message: format!("no client {ep:?} is registered"),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            ApiError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"),
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "TIMEOUT"),
            ApiError::Bind { .. } | ApiError::Start(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({ "code": code, "message": self.to_string() });
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
