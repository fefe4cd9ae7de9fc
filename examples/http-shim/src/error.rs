//! Every error answer of the shim: the contract's `ErrorResponseDto`, built in one place.
//!
//! The status code decides the `detailCode`; the text says what to fix. Each answer carries a
//! fresh `trackingId` that is also logged, so an operator can find the request behind a report.
//! The contract gives 401 and 429 a different body (`{"error": ...}` and `{"message": ...}`); the
//! shim sends the `ErrorResponseDto` fields *and* that field, so both readings of the contract
//! parse the answer.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jitflow_core::lifecycle::{PolicyRejection, RejectionKind};
use serde::Serialize;
use utoipa::ToSchema;

/// The longest error text sent back, in characters; longer texts (which quote client input) are
/// cut, so a hostile request cannot make a huge answer or log line.
pub const MAX_ERROR_TEXT: usize = 512;

/// Seconds a client is told to wait after the engine's queue was full (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 1;

/// One localized message of an error (the contract's `ErrorMessageDto`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorMessageDto {
    /// The locale of `text`: always `en-US`.
    pub locale: String,
    /// How the locale was chosen: always `DEFAULT`.
    pub locale_origin: String,
    /// What went wrong and what to fix.
    pub text: String,
}

/// The contract's `ErrorResponseDto`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponseDto {
    /// The status and its meaning, e.g. `400.1 Bad Request Content`.
    pub detail_code: String,
    /// A random id, also logged with the error.
    pub tracking_id: String,
    /// One message.
    pub messages: Vec<ErrorMessageDto>,
    /// Always empty: the message says it all.
    pub causes: Vec<ErrorMessageDto>,
    /// The 401 body of the contract (`{"error": ...}`): the same text, on 401 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The 429 body of the contract (`{"message": ...}`): the same text, on 429 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The error answers every authenticated endpoint may give, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "a response set for the OpenAPI document only")]
pub enum Errors {
    /// 400.
    #[response(
        status = 400,
        description = "Malformed body, path or value; see the message."
    )]
    BadRequest(ErrorResponseDto),
    /// 401.
    #[response(
        status = 401,
        description = "No token, or one that does not verify or has expired."
    )]
    Unauthorized(ErrorResponseDto),
    /// 403.
    #[response(
        status = 403,
        description = "The token lacks a scope or user level the endpoint needs."
    )]
    Forbidden(ErrorResponseDto),
    /// 404.
    #[response(
        status = 404,
        description = "No such connection or policy for this caller."
    )]
    NotFound(ErrorResponseDto),
    /// 409.
    #[response(
        status = 409,
        description = "The connection's type or state forbids it."
    )]
    Conflict(ErrorResponseDto),
    /// 413.
    #[response(
        status = 413,
        description = "The body is larger than the endpoint accepts."
    )]
    TooLarge(ErrorResponseDto),
    /// 415.
    #[response(status = 415, description = "The body is not declared as JSON.")]
    NotJson(ErrorResponseDto),
    /// 429.
    #[response(
        status = 429,
        description = "The engine's queue is full; retry after `Retry-After` seconds."
    )]
    Busy(ErrorResponseDto),
    /// 500.
    #[response(
        status = 500,
        description = "Internal fault; the tracking id is in the server's log."
    )]
    Internal(ErrorResponseDto),
    /// 503.
    #[response(
        status = 503,
        description = "The engine stopped, or the request timed out."
    )]
    Unavailable(ErrorResponseDto),
}

/// An error answer: a status and a text. Converts into the `ErrorResponseDto` response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {text}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The message for the client.
    pub text: String,
    /// The status the error had before [`ApiError::as_bad_request`] made it a 400 (an
    /// operation that does not declare it); shown in the `detailCode`.
    pub natural: Option<StatusCode>,
    /// For a 503 of a partition another node serves: that node, sent in the
    /// [`OWNER_HEADER`] and [`OWNER_ADDRESS_HEADER`] headers.
    pub owner: Option<Box<Owner>>,
}

/// The node serving a tenant's partition, named in a 503 of a node that does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Its node id.
    pub node: String,
    /// The address it advertises (`--advertise`).
    pub address: String,
}

/// The header naming the node that serves the request's tenant.
pub const OWNER_HEADER: &str = "jitflow-owner";
/// The header giving that node's advertised address.
pub const OWNER_ADDRESS_HEADER: &str = "jitflow-owner-address";

/// What a response rendered from an [`ApiError`] carries in its extensions, so that
/// [`crate::deviations::conform`] can answer the same error with another status and the same
/// tracking id.
#[derive(Debug, Clone)]
struct Rendered {
    error: ApiError,
    tracking_id: String,
}

impl ApiError {
    /// An error with this status and text (cut to [`MAX_ERROR_TEXT`] characters).
    pub fn new(status: StatusCode, text: impl Into<String>) -> ApiError {
        let mut text = text.into();
        if let Some((cut, _)) = text.char_indices().nth(MAX_ERROR_TEXT) {
            text.truncate(cut);
            text.push('…');
        }
        ApiError {
            status,
            text,
            natural: None,
            owner: None,
        }
    }

    /// 503: another node serves the tenant's partition; `owner` names it in headers.
    pub fn not_owner(text: impl Into<String>, owner: Owner) -> ApiError {
        ApiError {
            owner: Some(Box::new(owner)),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, text)
        }
    }

    /// 400: the request is malformed or out of bounds.
    pub fn bad_request(text: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, text)
    }

    /// 401: no token, or a token that does not verify.
    pub fn unauthorized(text: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, text)
    }

    /// 403: the token lacks a scope or user level the endpoint needs.
    pub fn forbidden(text: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, text)
    }

    /// 404: no such thing for this caller.
    pub fn not_found(text: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, text)
    }

    /// 500: a fault of the server; the text is logged, the client sees a generic one.
    pub fn internal(text: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, text)
    }

    /// The same error as a 400, for an operation that does not declare its status: the
    /// `detailCode` keeps the status (`400.1.404 Not Found`), the message is unchanged.
    pub fn as_bad_request(self) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            natural: Some(self.natural.unwrap_or(self.status)),
            text: self.text,
            owner: self.owner,
        }
    }

    /// The contract's `detailCode` for this error.
    fn detail_code(&self) -> String {
        if let Some(natural) = self.natural {
            return format!(
                "400.1.{} {}",
                natural.as_u16(),
                natural.canonical_reason().unwrap_or("Bad Request Content")
            );
        }
        let status = self.status;
        match status.as_u16() {
            400 => "400.1 Bad Request Content".to_owned(),
            401 => "401 Unauthorized".to_owned(),
            403 => "403 Forbidden".to_owned(),
            404 => "404 Not found".to_owned(),
            500 => "500.0 Internal Fault".to_owned(),
            code => format!(
                "{code} {}",
                status.canonical_reason().unwrap_or("Unknown Status")
            ),
        }
    }

    /// The body this error is sent as, with a fresh tracking id.
    pub fn dto(&self) -> ErrorResponseDto {
        self.dto_with(uuid::Uuid::new_v4().simple().to_string())
    }

    fn dto_with(&self, tracking_id: String) -> ErrorResponseDto {
        // A server fault's details stay in the log.
        let text =
            if self.status.is_server_error() && self.status != StatusCode::SERVICE_UNAVAILABLE {
                "An internal fault occurred.".to_owned()
            } else {
                self.text.clone()
            };
        ErrorResponseDto {
            detail_code: self.detail_code(),
            tracking_id,
            messages: vec![ErrorMessageDto {
                locale: "en-US".to_owned(),
                locale_origin: "DEFAULT".to_owned(),
                text: text.clone(),
            }],
            causes: Vec::new(),
            error: (self.status == StatusCode::UNAUTHORIZED).then(|| text.clone()),
            message: (self.status == StatusCode::TOO_MANY_REQUESTS).then_some(text),
        }
    }
}

impl ApiError {
    /// The response of this error with `tracking_id` (not logged: [`IntoResponse`] logs).
    pub(crate) fn response(self, tracking_id: String) -> Response {
        let dto = self.dto_with(tracking_id.clone());
        let status = self.status;
        let mut response = (status, axum::Json(dto)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if let Some(owner) = &self.owner {
            // Node ids and addresses are bounded and set by the operator; one that is not a
            // valid header value is left to the message.
            let headers = response.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&owner.node) {
                headers.insert(OWNER_HEADER, v);
            }
            if let Ok(v) = HeaderValue::from_str(&owner.address) {
                headers.insert(OWNER_ADDRESS_HEADER, v);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(Rendered {
            error: self,
            tracking_id,
        });
        response
    }

    /// The error and tracking id a response was rendered from, if it was.
    pub(crate) fn rendered(response: &Response) -> Option<(ApiError, String)> {
        response
            .extensions()
            .get::<Rendered>()
            .map(|r| (r.error.clone(), r.tracking_id.clone()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let tracking_id = uuid::Uuid::new_v4().simple().to_string();
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, %tracking_id, error = %self.text, "request failed");
        } else {
            tracing::info!(status = %self.status, %tracking_id, error = %self.text, "request refused");
        }
        self.response(tracking_id)
    }
}

impl ApiError {
    /// The answer to a refusal of class `kind` (a connection's or a request item's).
    fn of_kind(kind: RejectionKind, text: String) -> ApiError {
        match kind {
            RejectionKind::NotFound => ApiError::not_found(text),
            RejectionKind::Invalid => ApiError::bad_request(text),
            RejectionKind::Conflict => ApiError::new(StatusCode::CONFLICT, text),
            RejectionKind::Forbidden => ApiError::new(StatusCode::FORBIDDEN, text),
            // A client's command is never stale; if it is, the engine is confused.
            RejectionKind::Stale => ApiError::internal(text),
        }
    }
}

impl From<jitflow::Error> for ApiError {
    /// The engine's refusals: not found 404, invalid 400, conflict 409 (as the core classifies
    /// them; forbidden 403), a malformed patch or query 400, a full queue 429, an engine that cannot write now (a failed commit, healing) or is stopping 503 with `Retry-After`, and storage faults 500.
    fn from(e: jitflow::Error) -> ApiError {
        let text = e.to_string();
        match e {
            jitflow::Error::Rejected(r) => ApiError::of_kind(r.kind(), text),
            jitflow::Error::RequestRejected(r) => ApiError::of_kind(r.kind(), text),
            jitflow::Error::Forbidden(_) => ApiError::forbidden(text),
            jitflow::Error::NotFound(_) => ApiError::not_found(text),
            jitflow::Error::PolicyRejected(r) => match r {
                PolicyRejection::NotFound => ApiError::not_found(text),
                PolicyRejection::VersionConflict { .. } => {
                    ApiError::new(StatusCode::CONFLICT, text)
                }
                // Invalid, and variants added later: the client's change is at fault.
                _ => ApiError::bad_request(text),
            },
            jitflow::Error::IdempotencyConflict(_) => ApiError::new(StatusCode::CONFLICT, text),
            jitflow::Error::Busy(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, text),
            jitflow::Error::Invalid(_)
            | jitflow::Error::Patch(_)
            | jitflow::Error::Query(_)
            | jitflow::Error::RequestConfig(_) => ApiError::bad_request(text),
            // The engine cannot write now (it heals by itself), a commit's outcome is unknown
            // (retry with the same idempotency key), or it is stopping: retry later.
            jitflow::Error::Stopped
            | jitflow::Error::Unavailable(_)
            | jitflow::Error::OutcomeUnknown(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, text)
            }
            // Storage, and variants added later.
            _ => ApiError::internal(text),
        }
    }
}
