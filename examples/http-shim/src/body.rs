//! Request extractors whose every refusal is an [`ApiError`]: JSON bodies, path segments and
//! query strings. axum's own extractors answer with plain text; these answer with the contract's
//! `ErrorResponseDto`, 400 for anything malformed and 413 for a body over the route's limit.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body, read but not yet parsed: handlers check the caller's rights first, then call
/// [`JsonBody::parse`], so a caller without rights learns nothing from validation. The content type must be `application/json` or a `+json` type
/// (`application/json-patch+json` included), or absent; any other type is refused with 415.
#[derive(Debug, Clone)]
pub struct JsonBody(pub Bytes);

impl JsonBody {
    /// Parses a body that must be a JSON object into `T` (400 naming the problem).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        object(parse(&self.0)?)
    }

    /// Parses a body that must be a JSON array of objects into a list of `T`.
    pub fn parse_list<T: DeserializeOwned>(&self) -> Result<Vec<T>, ApiError> {
        let serde_json::Value::Array(items) = parse(&self.0)? else {
            return Err(ApiError::bad_request("the body must be a JSON array"));
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                object(item).map_err(|e| ApiError::bad_request(format!("item {i}: {}", e.text)))
            })
            .collect()
    }
}

/// `T` from a JSON value that must be an object. serde's derive also accepts an array of the
/// fields in order for a struct; the contract does not, so this refuses it.
pub fn object<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request(format!("the body does not match the request schema: {e}"))
    })
}

/// Whether the request says its body is JSON.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses JSON text into `T`, naming the problem and its place.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "the body is not valid JSON"
            }
            serde_json::error::Category::Data => "the body does not match the request schema",
            serde_json::error::Category::Io => "the body could not be read",
        };
        ApiError::bad_request(format!("{what}: {e}"))
    })
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be JSON: send `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the body is larger than this endpoint accepts",
                )
            } else {
                ApiError::bad_request(format!("the body could not be read: {e}"))
            }
        })?;
        Ok(JsonBody(bytes))
    }
}

/// One path segment, as text (parsed by the handler, which knows what it should be).
#[derive(Debug, Clone)]
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| Segment(p.0))
            .map_err(|e| ApiError::bad_request(format!("invalid path: {e}")))
    }
}
