//! Extractors whose rejections are the API's JSON errors rather than axum's plain text.

use axum::async_trait;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

/// The path parameters, as [`Path`], or a 400 `BAD_REQUEST` (a name that is not UTF-8
/// once percent-decoded, say).
#[derive(Debug)]
pub(super) struct PathOf<T>(pub T);

#[async_trait]
impl<S, T> FromRequestParts<S> for PathOf<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(PathOf(v)),
            Err(e) => Err(ApiError::bad(e.body_text())),
        }
    }
}
