//! The access-request-approvals contract (issue 7): approve, reject, forward and bulk approve
//! an approval, the pending and completed approvals, the approval summary, and the approvers
//! of a request.
//!
//! An approval id names one request item's approval (see
//! [`jitflow_core::request::approval_id`]). A USER may decide only the approvals it is an
//! approver of (the engine refuses the rest with 403); an ORG_ADMIN may decide any.
//!
//! `forward` hands the approval to `newOwnerId` (202): the forwarding approver's place goes to
//! the new owner (an ORG_ADMIN who is not an approver hands over the whole approval). Refused
//! with 400 for a bad body, an approval no longer pending, a new owner who is already an
//! approver (the caller included), the identity the access is for or its requester (no
//! self-review), or after [`MAX_FORWARDS`](jitflow_core::request::item::MAX_FORWARDS) forwards;
//! 403 when the caller is neither an approver nor an ORG_ADMIN; 404 for an unknown approval.
//! Every pending and completed approval row shows its `forwardHistory`.
//!
//! # Limits
//!
//! | what | bound |
//! |---|---|
//! | ids of bulk approve | 50 ([`MAX_BULK_IDS`](jitflow_core::request::submit::MAX_BULK_IDS)) |
//! | a comment | [`MAX_COMMENT_LEN`](jitflow_core::request::submit::MAX_COMMENT_LEN) characters (checked by the core) |
//! | `newOwnerId`, forward `comment` | 1..=255 characters (the contract's) |
//! | forwards of one approval | [`MAX_FORWARDS`](jitflow_core::request::item::MAX_FORWARDS) (10) |
//! | a page | 250 rows |

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jitflow::query::Query;
use jitflow::request_lists::Approvals;
use jitflow_core::id::{AccessRequestId, ApprovalId, IdentityId};
use jitflow_core::lifecycle::Actor;
use jitflow_core::request::{ApprovalRow, Bulk, Forward, Item, validate_bulk};
use jitflow_core::time::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::AppState;
use crate::access_requests::{
    PageParams, Params, bulk_response, client_metadata, comment_dto, identity_ref, instant,
    maybe_instant, page_response, requested_object, requester_comment, rights,
};
use crate::auth::{self, Principal};
use crate::body::{JsonBody, Segment};
use crate::error::{ApiError, Errors};

/// The longest `newOwnerId` and forward `comment`: the contract's 255.
pub const MAX_FORWARD_TEXT: usize = 255;

/// `CommentDto` as a body: `created` and `author` are the server's and are ignored.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommentBody {
    /// The comment.
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub comment: Option<String>,
    /// Ignored (set by the server).
    pub created: Option<String>,
    /// Ignored (set by the server).
    pub author: Option<serde_json::Value>,
}

/// Body of `POST /access-request-approvals/v1/bulk-approve`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkApproveBody {
    /// 1 to 50 approval ids.
    pub approval_ids: Vec<String>,
    /// The approvers' comment. Required by the contract; jitflow does not record it on bulk
    /// approvals.
    pub comment: String,
}

/// Body of `POST /access-request-approvals/v1/{approvalId}/forward`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardBody {
    /// The new owner.
    pub new_owner_id: String,
    /// Why.
    pub comment: String,
}

fn approval(segment: &str) -> Result<ApprovalId, ApiError> {
    ApprovalId::parse(segment).map_err(|e| ApiError::bad_request(format!("approvalId: {e}")))
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
}

/// Approves an approval.
#[utoipa::path(
    post,
    path = "/access-request-approvals/v1/{approvalId}/approve",
    tag = "Access Request Approvals",
    operation_id = "approveAccessRequestV1",
    params(("approvalId" = String, Path, description = "The approval id.")),
    request_body(content = Option<CommentBody>, description = "Optional.", content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: the approval is durable.", content_type = "application/json"),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request-approvals:manage"]))
)]
pub async fn approve(
    State(state): State<AppState>,
    principal: Principal,
    Segment(id): Segment,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::APPROVALS_MANAGE)?;
    let id = approval(&id)?;
    // The body is optional here.
    let body: CommentBody = if body.0.is_empty() {
        CommentBody::default()
    } else {
        body.parse()?
    };
    state
        .engine(&principal.caller.tenant)?
        .approve(&principal.caller, rights(&principal), id, body.comment)
        .await?;
    Ok(accepted())
}

/// Rejects an approval.
#[utoipa::path(
    post,
    path = "/access-request-approvals/v1/{approvalId}/reject",
    tag = "Access Request Approvals",
    operation_id = "rejectAccessRequestV1",
    params(("approvalId" = String, Path, description = "The approval id.")),
    request_body = CommentBody,
    responses(
        (status = 202, description = "Accepted: the rejection is durable.", content_type = "application/json"),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request-approvals:manage"]))
)]
pub async fn reject(
    State(state): State<AppState>,
    principal: Principal,
    Segment(id): Segment,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::APPROVALS_MANAGE)?;
    let id = approval(&id)?;
    let body: CommentBody = body.parse()?;
    state
        .engine(&principal.caller.tenant)?
        .reject(&principal.caller, rights(&principal), id, body.comment)
        .await?;
    Ok(accepted())
}

/// Forwards an approval to a new owner (see the module documentation).
#[utoipa::path(
    post,
    path = "/access-request-approvals/v1/{approvalId}/forward",
    tag = "Access Request Approvals",
    operation_id = "forwardAccessRequestV1",
    params(("approvalId" = String, Path, description = "The approval id.")),
    request_body = ForwardBody,
    responses(
        (status = 202, description = "Accepted: the forward is durable.", content_type = "application/json"),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request-approvals:manage"]))
)]
pub async fn forward(
    State(state): State<AppState>,
    principal: Principal,
    Segment(id): Segment,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::APPROVALS_MANAGE)?;
    let id = approval(&id)?;
    let body: ForwardBody = body.parse()?;
    for (field, text) in [
        ("newOwnerId", &body.new_owner_id),
        ("comment", &body.comment),
    ] {
        let n = text.chars().count();
        if !(1..=MAX_FORWARD_TEXT).contains(&n) {
            return Err(ApiError::bad_request(format!(
                "{field} must be 1..={MAX_FORWARD_TEXT} characters; it is {n}"
            )));
        }
    }
    let new_owner = IdentityId::parse(&body.new_owner_id)
        .map_err(|e| ApiError::bad_request(format!("newOwnerId: {e}")))?;
    state
        .engine(&principal.caller.tenant)?
        .forward_approval(
            &principal.caller,
            rights(&principal),
            id,
            new_owner,
            body.comment,
        )
        .await?;
    Ok(accepted())
}

/// Approves up to 50 approvals, each on its own.
#[utoipa::path(
    post,
    path = "/access-request-approvals/v1/bulk-approve",
    tag = "Access Requests",
    operation_id = "approveBulkAccessRequestV1",
    request_body = BulkApproveBody,
    responses(
        (status = 202, description = "Accepted: one result per id, in order (`results`).", content_type = "application/json"),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request:manage"]))
)]
pub async fn bulk_approve(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::APPROVAL_BULK_APPROVE)?;
    let body: BulkApproveBody = body.parse()?;
    validate_bulk(Bulk::Approve, body.approval_ids.len())
        .map_err(|e| ApiError::bad_request(format!("approvalIds: {e}")))?;
    let ids = body
        .approval_ids
        .iter()
        .enumerate()
        .map(|(i, t)| {
            ApprovalId::parse(t)
                .map_err(|e| ApiError::bad_request(format!("approvalIds[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let results = state
        .engine(&principal.caller.tenant)?
        .bulk_approve(&principal.caller, rights(&principal), &ids)
        .await?;
    Ok(bulk_response(&body.approval_ids, results))
}

// ---------------------------------------------------------------------------------------------
// Lists.

/// The fields a pending and a completed approval share.
fn approval_fields(item: &Item, owner: &IdentityId) -> serde_json::Map<String, Value> {
    let spec = &item.spec;
    let row = json!({
        "id": item.approval.id.to_string(),
        "accessRequestId": spec.request.to_string(),
        "name": spec.object.id.as_str(),
        "created": instant(item.created),
        "modified": instant(item.modified),
        "requestCreated": instant(item.created),
        "requestType": spec.request_type.as_str(),
        "identityType": "HUMAN",
        "requester": identity_ref(&spec.requester),
        "requestedFor": identity_ref(&spec.requested_for),
        "owner": identity_ref(owner),
        "requestedObject": requested_object(item),
        "requesterComment": requester_comment(item),
        "previousReviewersComments": [],
        "forwardHistory": item.forwards.iter().map(forward_history).collect::<Vec<_>>(),
        "commentRequiredWhenRejected": false,
        "removeDate": maybe_instant(spec.remove_date),
        "removeDateUpdateRequested": false,
        "currentRemoveDate": maybe_instant(spec.remove_date),
        "startDate": maybe_instant(spec.start_date),
        "startUpdateRequested": false,
        "currentStartDate": maybe_instant(spec.start_date),
        "sodViolationContext": null,
        "clientMetadata": client_metadata(item),
        "requestedAccounts": null,
        "privilegeLevel": null,
        "maxPermittedAccessDuration": null,
    });
    let mut map = match row {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object literal is an object"),
    };
    // Dates the item has not: absent, since the contract's strings are not nullable.
    for key in [
        "removeDate",
        "currentRemoveDate",
        "startDate",
        "currentStartDate",
    ] {
        if map.get(key) == Some(&Value::Null) {
            map.remove(key);
        }
    }
    map
}

/// One forward as the contract's `ApprovalForwardHistory`. jitflow knows no display names, so
/// names are ids; an admin who took the approval from several approvers shows them all,
/// comma-separated, as the old approver.
fn forward_history(f: &Forward) -> Value {
    let old: Vec<&str> = f.from.iter().map(IdentityId::as_str).collect();
    json!({
        "oldApproverName": old.join(", "),
        "newApproverName": f.to.as_str(),
        "comment": f.comment,
        "modified": instant(f.at),
        "forwarderName": match &f.by {
            Actor::Identity(i) => Value::String(i.as_str().to_owned()),
            Actor::System => Value::Null,
        },
        "reassignmentType": f.reassignment.as_str(),
    })
}

/// A pending approval (`PendingApproval`).
fn pending_row(row: &ApprovalRow, owner: &IdentityId) -> Value {
    // No `actionInProcess`: jitflow decides an approval in one step, so none is ever in
    // process, and the contract's enum has no null.
    Value::Object(approval_fields(&row.0, owner))
}

/// A completed approval (`CompletedApproval`).
fn completed_row(row: &ApprovalRow, owner: &IdentityId) -> Value {
    let item = &row.0;
    let a = &item.approval;
    let mut fields = approval_fields(item, owner);
    fields.remove("accessRequestId");
    let decided_at = a.decided_at.unwrap_or(item.modified);
    let reviewer = a.decided_by.as_ref();
    fields.insert(
        "reviewedBy".to_owned(),
        reviewer.map_or(Value::Null, crate::access_requests::actor_ref),
    );
    fields.insert(
        "reviewerComment".to_owned(),
        reviewer.map_or(Value::Null, |by| {
            comment_dto(a.comment.as_deref(), decided_at, by)
        }),
    );
    fields.insert("state".to_owned(), json!(a.state.completed_str()));
    fields.insert("preApprovalTriggerResult".to_owned(), Value::Null);
    Value::Object(fields)
}

const APPROVAL_PARAMS: &[&str] = &["owner-id", "limit", "offset", "count", "filters", "sorters"];

/// The parameters of the approval lists, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "a parameter list for the OpenAPI document only")]
pub struct ApprovalParams {
    /// The approver (default: the caller; another identity needs ORG_ADMIN).
    #[param(rename = "owner-id")]
    owner_id: Option<String>,
}

async fn approval_list(
    state: AppState,
    principal: Principal,
    uri: axum::http::Uri,
    which: Approvals,
) -> Result<Response, ApiError> {
    principal.require(auth::APPROVALS_READ)?;
    let params = Params::new(&uri, APPROVAL_PARAMS)?;
    let owner = params
        .identity("owner-id", &principal)?
        .unwrap_or_else(|| principal.identity.clone());
    let collection = match which {
        Approvals::Pending => jitflow::query::PENDING_APPROVALS,
        Approvals::Completed => jitflow::query::COMPLETED_APPROVALS,
    };
    let query = params.query(collection)?;
    let rights = rights(&principal);
    let who = owner.clone();
    let page = crate::list::blocking(&state.engine(&principal.caller.tenant)?, move |engine| {
        engine.approvals(&principal.caller, rights, which, Some(&who), &query)
    })
    .await?;
    Ok(match which {
        Approvals::Pending => page_response(page, |r| pending_row(r, &owner)),
        Approvals::Completed => page_response(page, |r| completed_row(r, &owner)),
    })
}

/// The approvals waiting for the owner.
#[utoipa::path(
    get,
    path = "/access-request-approvals/v1/pending",
    tag = "Access Request Approvals",
    operation_id = "listPendingApprovalsV1",
    params(ApprovalParams, PageParams),
    responses(
        (status = 200, description = "`PendingApproval` rows.", content_type = "application/json"),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request-approvals:read"]))
)]
pub async fn pending(
    State(state): State<AppState>,
    principal: Principal,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    approval_list(state, principal, uri, Approvals::Pending).await
}

/// The approvals the owner had that are no longer pending.
#[utoipa::path(
    get,
    path = "/access-request-approvals/v1/completed",
    tag = "Access Request Approvals",
    operation_id = "listCompletedApprovalsV1",
    params(ApprovalParams, PageParams),
    responses(
        (status = 200, description = "`CompletedApproval` rows.", content_type = "application/json"),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request-approvals:read"]))
)]
pub async fn completed(
    State(state): State<AppState>,
    principal: Principal,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    approval_list(state, principal, uri, Approvals::Completed).await
}

/// The parameters of the approval summary, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "a parameter list for the OpenAPI document only")]
pub struct SummaryParams {
    /// The approver (default: the caller; another identity needs ORG_ADMIN).
    #[param(rename = "owner-id")]
    owner_id: Option<String>,
    /// Count only approvals decided (or, pending, created) from this RFC 3339 instant on.
    #[param(rename = "from-date")]
    from_date: Option<String>,
}

/// How many approvals of the owner are pending, approved and rejected.
#[utoipa::path(
    get,
    path = "/access-request-approvals/v1/approval-summary",
    tag = "Access Request Approvals",
    operation_id = "getAccessRequestApprovalSummaryV1",
    params(SummaryParams),
    responses(
        (status = 200, description = "`ApprovalSummary`.", content_type = "application/json"),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request-approvals:read"]))
)]
pub async fn summary(
    State(state): State<AppState>,
    principal: Principal,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    principal.require(auth::APPROVALS_READ)?;
    let params = Params::new(&uri, &["owner-id", "from-date"])?;
    let owner = params.identity("owner-id", &principal)?;
    let from = params
        .get("from-date")
        .map(|t| {
            Timestamp::parse_rfc3339(t)
                .map_err(|_| ApiError::bad_request("from-date must be an RFC 3339 UTC date-time"))
        })
        .transpose()?;
    let rights = rights(&principal);
    let s = crate::list::blocking(&state.engine(&principal.caller.tenant)?, move |engine| {
        engine.approval_summary(&principal.caller, rights, owner.as_ref(), from)
    })
    .await?;
    Ok(
        Json(json!({"pending": s.pending, "approved": s.approved, "rejected": s.rejected}))
            .into_response(),
    )
}

/// The parameters of the approvers list, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "a parameter list for the OpenAPI document only")]
pub struct ApproversParams {
    /// 0..=250, default 250.
    limit: Option<u32>,
    /// 0..=10000.
    offset: Option<u32>,
    /// `true` sets `X-Total-Count`.
    count: Option<bool>,
}

/// The identities that may still decide on a request.
#[utoipa::path(
    get,
    path = "/access-request-approvals/v1/{accessRequestId}/approvers",
    tag = "Access Request Approvals",
    operation_id = "listAccessRequestApproversV1",
    params(("accessRequestId" = String, Path, description = "The access request id."), ApproversParams),
    responses(
        (status = 200, description = "`AccessRequestApproversListResponse` rows.", content_type = "application/json"),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request-administration:read"]))
)]
pub async fn approvers(
    State(state): State<AppState>,
    principal: Principal,
    Segment(id): Segment,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    principal.require(auth::REQUEST_ADMINISTRATION_READ)?;
    let request = AccessRequestId::parse(&id)
        .map_err(|e| ApiError::bad_request(format!("accessRequestId: {e}")))?;
    let params = Params::new(&uri, &["limit", "offset", "count"])?;
    // The paging parameters are checked as every list's are.
    let query: Query = params.query(jitflow::query::PENDING_APPROVALS)?;
    let all = state.engine(&principal.caller.tenant)?.request_approvers(
        &principal.caller,
        rights(&principal),
        request,
    )?;
    let total = all.len() as u64;
    let items = all
        .into_iter()
        .skip(query.offset)
        .take(query.limit)
        .collect();
    let page = jitflow::query::Page {
        items,
        total: query.count.then_some(total),
    };
    Ok(page_response(page, |(who, approval)| {
        // No `email`: jitflow knows none, and the contract's string is not nullable.
        json!({
            "id": who.as_str(),
            "name": who.as_str(),
            "approvalId": approval.to_string(),
            "type": "IDENTITY",
        })
    }))
}
