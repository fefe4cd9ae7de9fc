//! Request extractors whose every refusal is an [`ApiError`]: JSON bodies, path segments and
//! query strings. axum's own extractors answer with plain text; these answer with the contract's
//! `ErrorResponseDto`, 400 for anything malformed and 413 for a body over the route's limit
//! (a vendor operation, which declares no 413 or 415, answers those as 400: see
//! [`crate::deviations`]).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

mod strict;

pub use strict::nullable;

/// The longest query string read, in bytes (a `filters` and a `searchAfter` of the longest
/// allowed length, percent-encoded, fit).
pub const MAX_QUERY_LEN: usize = 32 * 1024;
/// The most parameters one query string may hold.
pub const MAX_PARAMS: usize = 16;

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

/// `T` from a JSON value that must be an object, read strictly (`body/strict.rs`: no struct from an
/// array, no `null` for a field that is not [`nullable`]).
pub fn object<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    // Through serde_path_to_error, so that the message names the field that did not match.
    serde_path_to_error::deserialize(strict::Strict::new(value)).map_err(|e| {
        let path = e.path().to_string();
        let e = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("the body does not match the request schema: {e}"))
        } else {
            ApiError::bad_request(format!(
                "the body does not match the request schema at {path}: {e}"
            ))
        }
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

/// The query string's parameters, decoded, in order. Handlers read them from the request's URI
/// after checking the caller's rights, and accept only the names they know ([`Params::only`]),
/// each at most once, so a misspelt or repeated parameter is a 400 rather than silently ignored.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The parameters of a request's URI.
    pub fn from_uri(uri: &axum::http::Uri) -> Result<Params, ApiError> {
        let Some(query) = uri.query().filter(|q| !q.is_empty()) else {
            return Ok(Params::default());
        };
        if query.len() > MAX_QUERY_LEN {
            return Err(ApiError::bad_request(format!(
                "the query string is {} bytes, more than the {MAX_QUERY_LEN} allowed",
                query.len()
            )));
        }
        // axum's form decoder: percent- and `+`-decoding, pairs in order.
        let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?
            .0;
        if pairs.len() > MAX_PARAMS {
            return Err(ApiError::bad_request(format!(
                "the query string holds {} parameters, more than the {MAX_PARAMS} allowed",
                pairs.len()
            )));
        }
        Ok(Params(pairs))
    }

    /// `Ok` when every parameter is one of `allowed` and none is repeated; 400 naming the
    /// first that is not.
    pub fn only(&self, allowed: &[&str]) -> Result<&Params, ApiError> {
        for (i, (name, _)) in self.0.iter().enumerate() {
            let shown: String = name.chars().take(64).collect();
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{shown}`; this endpoint takes {}",
                    allowed.join(", ")
                )));
            }
            if self.0[..i].iter().any(|(n, _)| n == name) {
                return Err(ApiError::bad_request(format!(
                    "the query parameter `{shown}` is given more than once"
                )));
            }
        }
        Ok(self)
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or 400 saying it is required.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| {
            ApiError::bad_request(format!("the query parameter `{name}` is required"))
        })
    }
}
