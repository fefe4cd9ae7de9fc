//! The access-requests contract (issue 7): `POST /access-requests/v1` (submit),
//! `/cancel`, `/bulk-cancel`, `/close`, `/accounts-selection`, and the request lists `GET /access-request-status/v1`
//! and `GET /access-request-administration/v1`, and an identity's entitlement details
//! `GET /revocable-objects/v1`. The approvals are in [`crate::approvals`].
//!
//! Bodies are parsed strictly (unknown fields refused) and mapped to the engine's types; a
//! broken rule is answered 400 with the rule in the message, and nothing is stored. Lists take
//! the contract's collection parameters (`filters`, `sorters`, `offset`, `limit`, `count`,
//! served by [`jitflow::query`]'s paging) plus their identity parameters (`me` is the caller);
//! an unknown or repeated query parameter is answered 400. `count=true` sets `X-Total-Count`.
//!
//! # Rights
//!
//! An ORG_ADMIN acts with [`Rights::Admin`]; anyone else with [`Rights::User`], which limits
//! the lists to the caller's own requests and approvals (see [`jitflow::request_lists`]).
//!
//! # Limits
//!
//! | what | bound |
//! |---|---|
//! | query parameters of a list | [`crate::body::MAX_PARAMS`], each once |
//! | (identity, item) pairs of an accounts selection | [`MAX_SELECTION_PAIRS`] |
//! | ids of bulk cancel | 50 ([`MAX_BULK_IDS`](jitflow_core::request::submit::MAX_BULK_IDS)) |
//! | body of close | [`MAX_CLOSE_BODY`] (64 KiB) |
//! | ids of close | 500 ([`MAX_CLOSE_IDS`](jitflow_core::request::submit::MAX_CLOSE_IDS)) |
//! | a page | 250 rows ([`jitflow::query::MAX_LIMIT`]) |
//! | a submission | the contract's 10 identities with entitlements and 25 entitlements, and jitflow's own bounds ([`jitflow_core::request::submit`]) |

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jitflow::query::{Page, Query};
use jitflow::request_lists::Scope;
use jitflow::requests::Rights;
use jitflow_core::id::{AccessRequestId, IdentityId, ObjectId, SourceId};
use jitflow_core::lifecycle::Actor;
use jitflow_core::request::item::Cancellation;
use jitflow_core::request::submit::{AccountRef, IdentityItems, RequestedItem, SourceSelection};
use jitflow_core::request::{
    Bulk, CompletionStatus, ExecutionStatus, Item, ObjectKind, ObjectRef, RequestType, Submission,
    validate_bulk,
};
use jitflow_core::time::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{self, Level, Principal};
use crate::body::JsonBody;
use crate::error::{ApiError, Errors};

/// The largest `POST /access-requests/v1/close` body, in bytes: 500 ids with room to spare
/// (the other endpoints' [`crate::MAX_BODY`] holds about 400).
pub const MAX_CLOSE_BODY: usize = 64 * 1024;

/// The rights of the caller: [`Rights::Admin`] for ORG_ADMIN.
pub(crate) fn rights(principal: &Principal) -> Rights {
    if principal.has_level(Level::OrgAdmin) {
        Rights::Admin
    } else {
        Rights::User
    }
}

// ---------------------------------------------------------------------------------------------
// Query parameters.

/// A list's query parameters ([`crate::body::Params`]: known names only, each at most once),
/// with the readings the request and approval lists share.
pub(crate) struct Params(crate::body::Params);

impl Params {
    /// The parameters of `uri`, checked against the names the endpoint takes.
    pub(crate) fn new(uri: &axum::http::Uri, allowed: &[&str]) -> Result<Params, ApiError> {
        let params = crate::body::Params::from_uri(uri)?;
        params.only(allowed)?;
        Ok(Params(params))
    }

    /// The value of `name`, if given.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }

    /// The collection parameters, checked against `collection`.
    pub(crate) fn query(&self, collection: &jitflow::query::Collection) -> Result<Query, ApiError> {
        Query::parse(
            collection,
            self.get("filters"),
            self.get("sorters"),
            self.get("offset"),
            self.get("limit"),
            self.get("count"),
            None,
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))
    }

    /// The identity parameter `name`: `me` is the caller.
    pub(crate) fn identity(
        &self,
        name: &str,
        principal: &Principal,
    ) -> Result<Option<IdentityId>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("me") => Ok(Some(principal.identity.clone())),
            Some(text) => IdentityId::parse(text)
                .map(Some)
                .map_err(|e| ApiError::bad_request(format!("{name}: {e}"))),
        }
    }
}

/// A page as the contract answers a list: the rows ([`crate::list::answer`]: a JSON array, and
/// `X-Total-Count` when counted).
pub(crate) fn page_response<R>(page: Page<R>, row: impl Fn(&R) -> Value) -> Response {
    crate::list::answer(page.items.iter().map(row).collect(), page.total)
}

// ---------------------------------------------------------------------------------------------
// Rendering.

/// An instant as the contract writes it.
pub(crate) fn instant(t: Timestamp) -> String {
    t.to_rfc3339()
}

/// An optional instant, `null` when absent.
pub(crate) fn maybe_instant(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(instant(t)))
}

/// An identity reference (`{type: IDENTITY, id, name}`); jitflow knows no display names, so
/// the name is the id.
pub(crate) fn identity_ref(id: &IdentityId) -> Value {
    json!({"type": "IDENTITY", "id": id.as_str(), "name": id.as_str()})
}

/// An actor as an identity reference; jitflow itself (a timer, a duplicate) is `null`.
pub(crate) fn actor_ref(actor: &Actor) -> Value {
    match actor {
        Actor::Identity(i) => identity_ref(i),
        Actor::System => Value::Null,
    }
}

/// A `CommentDto`, or `null` without a comment.
pub(crate) fn comment_dto(text: Option<&str>, created: Timestamp, author: &Actor) -> Value {
    match text {
        None => Value::Null,
        Some(text) => {
            json!({"comment": text, "created": instant(created), "author": actor_ref(author)})
        }
    }
}

/// The requester's comment of an item.
pub(crate) fn requester_comment(item: &Item) -> Value {
    comment_dto(
        item.spec.comment.as_deref(),
        item.created,
        &Actor::Identity(item.spec.requester.clone()),
    )
}

/// The requested object (`RequestableObjectReference`).
pub(crate) fn requested_object(item: &Item) -> Value {
    let o = &item.spec.object;
    // No `description`: jitflow knows none, and the contract's string is not nullable.
    json!({"id": o.id.as_str(), "name": o.id.as_str(), "type": o.kind.as_str()})
}

/// The item's `clientMetadata`.
pub(crate) fn client_metadata(item: &Item) -> Value {
    json!(item.spec.client_metadata)
}

fn cancelled_details(c: &Cancellation) -> Value {
    json!({
        "comment": c.comment,
        "owner": actor_ref(&c.by),
        "modified": instant(c.at),
    })
}

/// The item's approval as `ApprovalStatusDto` entries: one per approver, none for an automatic
/// approval.
fn approval_details(item: &Item) -> Vec<Value> {
    let a = &item.approval;
    a.approvers
        .iter()
        .map(|owner| {
            let original = original_owner(item, owner);
            json!({
                "forwarded": original != owner,
                "originalOwner": identity_ref(original),
                "currentOwner": identity_ref(owner),
                "modified": maybe_instant(a.decided_at),
                "status": a.state.as_str(),
                "scheme": a.scheme.map(|s| s.as_str()),
                "errorMessages": null,
                "comment": a.comment,
                "removeDate": maybe_instant(item.spec.remove_date),
            })
        })
        .collect()
}

/// Whom the approval `owner` holds now was first assigned to: its forwards followed back
/// (an admin's forward from several approvers leads back to the first of them).
fn original_owner<'a>(item: &'a Item, owner: &'a IdentityId) -> &'a IdentityId {
    let mut current = owner;
    for f in item.forwards.iter().rev() {
        if f.to == *current
            && let Some(first) = f.from.first()
        {
            current = first;
        }
    }
    current
}

/// The last provisioning failure, as the contract's `errorMessages` (a list of lists).
fn error_messages(item: &Item) -> Value {
    let last = item
        .removal
        .as_ref()
        .and_then(|r| r.last_error.as_deref())
        .or_else(|| item.grant.as_ref().and_then(|g| g.last_error.as_deref()));
    match last {
        None => Value::Null,
        Some(text) => json!([[{"locale": "en-US", "localeOrigin": "DEFAULT", "text": text}]]),
    }
}

/// An item as the contract's `RequestedItemStatus`.
pub(crate) fn status_row(item: &Item) -> Value {
    let spec = &item.spec;
    let phases: Vec<Value> = item
        .phases()
        .iter()
        .map(|p| {
            json!({
                "started": instant(p.started),
                "finished": maybe_instant(p.finished),
                "name": p.name,
                "state": p.state.as_str(),
                "result": p.result.map(|r| r.as_str()),
                "phaseReference": null,
            })
        })
        .collect();
    let approval_ids: Vec<String> = if item.approval.approvers.is_empty() {
        Vec::new()
    } else {
        vec![item.approval.id.to_string()]
    };
    json!({
        // The contract's `id` is the access request's; `name` names the requested object.
        "id": spec.request.to_string(),
        "name": spec.object.id.as_str(),
        "type": spec.object.kind.as_str(),
        "cancelledRequestDetails": item.cancellation.as_ref().map(cancelled_details),
        "errorMessages": error_messages(item),
        "state": item.request_state().as_str(),
        "approvalDetails": approval_details(item),
        "approvalIds": approval_ids,
        "manualWorkItemDetails": null,
        "accountActivityItemId": spec.id.to_string(),
        "requestType": spec.request_type.as_str(),
        "modified": instant(item.modified),
        "created": instant(item.created),
        "requester": identity_ref(&spec.requester),
        "requestedFor": identity_ref(&spec.requested_for),
        "identityType": "HUMAN",
        "requesterComment": requester_comment(item),
        "sodViolationContext": null,
        "provisioningDetails": null,
        "preApprovalTriggerDetails": null,
        "accessRequestPhases": phases,
        "description": null,
        "startDate": maybe_instant(spec.start_date),
        "removeDate": maybe_instant(spec.remove_date),
        "cancelable": item.cancelable(),
        "accessRequestId": spec.request.to_string(),
        "clientMetadata": client_metadata(item),
        "requestedAccounts": null,
        "privilegeLevel": null,
    })
}

// ---------------------------------------------------------------------------------------------
// Submit.

/// One requested item (`AccessRequestItem`, and `RequestedItemDtoRef` with `accountSelection`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ItemBody {
    /// `ACCESS_PROFILE`, `ROLE` or `ENTITLEMENT`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The object's id.
    pub id: String,
    /// The requester's comment (required for REVOKE_ACCESS).
    pub comment: Option<String>,
    /// Kept and returned, never interpreted.
    pub client_metadata: Option<BTreeMap<String, String>>,
    /// Sunrise: provision at this instant (GRANT_ACCESS only).
    pub start_date: Option<String>,
    /// Sunset: remove at this instant.
    pub remove_date: Option<String>,
    /// Not supported by jitflow: must be absent or null.
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub assignment_id: Option<String>,
    /// The account to revoke from (REVOKE_ACCESS only).
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub native_identity: Option<String>,
    /// The completed form (GRANT_ACCESS only).
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub form_instance_id: Option<String>,
    /// The accounts chosen (only in `requestedForWithRequestedItems`).
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub account_selection: Option<Vec<SourceBody>>,
}

/// `SourceItemRef`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceBody {
    /// The source.
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub source_id: Option<String>,
    /// The accounts on it.
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub accounts: Option<Vec<AccountBody>>,
}

/// `AccountItemRef`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountBody {
    /// The account's UUID.
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub account_uuid: Option<String>,
    /// The account's native identity.
    pub native_identity: Option<String>,
}

/// `RequestedForDtoRef`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestedForBody {
    /// The identity.
    pub identity_id: String,
    /// `HUMAN` (jitflow serves no machine identities).
    pub identity_type: Option<String>,
    /// Its items.
    pub requested_items: Vec<ItemBody>,
}

/// Body of `POST /access-requests/v1` (`AccessRequest`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessRequestBody {
    /// The identities the access is for.
    pub requested_for: Option<Vec<String>>,
    /// `GRANT_ACCESS` (default) or `REVOKE_ACCESS`.
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub request_type: Option<String>,
    /// The items, for every identity of `requestedFor`.
    pub requested_items: Option<Vec<ItemBody>>,
    /// Kept and returned, never interpreted.
    pub client_metadata: Option<BTreeMap<String, String>>,
    /// Per-identity items, instead of `requestedFor` and `requestedItems`.
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub requested_for_with_requested_items: Option<Vec<RequestedForBody>>,
}

fn field_error(field: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("{field}: {e}"))
}

fn date(field: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| {
        Timestamp::parse_rfc3339(t)
            .map_err(|_| field_error(field, "must be an RFC 3339 UTC date-time"))
    })
    .transpose()
}

impl ItemBody {
    fn into_item(self, at: &str, selections_allowed: bool) -> Result<RequestedItem, ApiError> {
        let kind = ObjectKind::parse(&self.kind).ok_or_else(|| {
            field_error(
                &format!("{at}.type"),
                "must be ACCESS_PROFILE, ROLE or ENTITLEMENT",
            )
        })?;
        let id = ObjectId::parse(&self.id).map_err(|e| field_error(&format!("{at}.id"), e))?;
        if self.assignment_id.is_some() {
            return Err(field_error(
                &format!("{at}.assignmentId"),
                "jitflow does not revoke by assignment id; send nativeIdentity",
            ));
        }
        if self.account_selection.is_some() && !selections_allowed {
            return Err(field_error(
                &format!("{at}.accountSelection"),
                "is allowed only in requestedForWithRequestedItems",
            ));
        }
        let account_selection = self
            .account_selection
            .map(|sources| {
                sources
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let source = s
                            .source_id
                            .map(|t| SourceId::parse(&t))
                            .transpose()
                            .map_err(|e| {
                                field_error(&format!("{at}.accountSelection[{i}].sourceId"), e)
                            })?;
                        let accounts = s
                            .accounts
                            .unwrap_or_default()
                            .into_iter()
                            .map(|a| AccountRef {
                                account_uuid: a.account_uuid,
                                native_identity: a.native_identity,
                            })
                            .collect();
                        Ok(SourceSelection { source, accounts })
                    })
                    .collect::<Result<Vec<_>, ApiError>>()
            })
            .transpose()?;
        Ok(RequestedItem {
            object: Some(ObjectRef { kind, id }),
            comment: self.comment,
            client_metadata: self.client_metadata.unwrap_or_default(),
            start_date: date(&format!("{at}.startDate"), self.start_date.as_deref())?,
            remove_date: date(&format!("{at}.removeDate"), self.remove_date.as_deref())?,
            account_selection,
            native_identity: self.native_identity,
            form_instance_id: self.form_instance_id,
        })
    }
}

impl AccessRequestBody {
    /// The engine's submission, or 400 naming the field at fault.
    pub fn into_submission(self) -> Result<Submission, ApiError> {
        let request_type = match self.request_type.as_deref() {
            None => RequestType::Grant,
            Some(t) => RequestType::parse(t).ok_or_else(|| {
                field_error("requestType", "must be GRANT_ACCESS or REVOKE_ACCESS")
            })?,
        };
        let requested_for = self
            .requested_for
            .map(|ids| {
                ids.iter()
                    .enumerate()
                    .map(|(i, t)| {
                        IdentityId::parse(t)
                            .map_err(|e| field_error(&format!("requestedFor[{i}]"), e))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let requested_items = self
            .requested_items
            .map(|items| {
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| item.into_item(&format!("requestedItems[{i}]"), false))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let requested_for_with_items = self
            .requested_for_with_requested_items
            .map(|entries| {
                entries
                    .into_iter()
                    .enumerate()
                    .map(|(i, entry)| {
                        let at = format!("requestedForWithRequestedItems[{i}]");
                        if entry.identity_type.as_deref().is_some_and(|t| t != "HUMAN") {
                            return Err(field_error(
                                &format!("{at}.identityType"),
                                "jitflow serves HUMAN identities only",
                            ));
                        }
                        let identity = IdentityId::parse(&entry.identity_id)
                            .map_err(|e| field_error(&format!("{at}.identityId"), e))?;
                        let items = entry
                            .requested_items
                            .into_iter()
                            .enumerate()
                            .map(|(j, item)| {
                                item.into_item(&format!("{at}.requestedItems[{j}]"), true)
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok(IdentityItems { identity, items })
                    })
                    .collect::<Result<Vec<_>, ApiError>>()
            })
            .transpose()?;
        Ok(Submission {
            request_type,
            requested_for,
            requested_items,
            requested_for_with_items,
            client_metadata: self.client_metadata.unwrap_or_default(),
        })
    }
}

/// The identities a submission names.
fn recipients(submission: &Submission) -> Vec<&IdentityId> {
    let mut out: Vec<&IdentityId> = submission.requested_for.iter().flatten().collect();
    out.extend(
        submission
            .requested_for_with_items
            .iter()
            .flatten()
            .map(|e| &e.identity),
    );
    out
}

/// A stable 31-bit hash of an identity's requested objects (the contract's `attributesHash`).
fn attributes_hash(items: &[&Item]) -> i64 {
    let mut h: u32 = 0x811c_9dc5;
    for item in items {
        for b in item.spec.object.to_string().bytes().chain([0]) {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    i64::from(h & 0x7fff_ffff)
}

/// The answer to a submission (`AccessRequestResponse`): per identity, the new items and the
/// items cancelled as duplicates of access already granted or in progress.
fn submit_response(request: AccessRequestId, items: &[Item]) -> Value {
    let mut new: BTreeMap<&str, Vec<&Item>> = BTreeMap::new();
    let mut existing: BTreeMap<&str, Vec<&Item>> = BTreeMap::new();
    for item in items {
        let duplicate = item
            .cancellation
            .as_ref()
            .is_some_and(|c| c.duplicate.is_some());
        let side = if duplicate { &mut existing } else { &mut new };
        side.entry(item.spec.requested_for.as_str())
            .or_default()
            .push(item);
    }
    let tracking = |groups: BTreeMap<&str, Vec<&Item>>| -> Vec<Value> {
        groups
            .into_iter()
            .map(|(who, items)| {
                let details: Vec<Value> = items
                    .iter()
                    .map(|i| json!({"type": i.spec.object.kind.as_str(), "id": i.spec.object.id.as_str()}))
                    .collect();
                json!({
                    "requestedFor": who,
                    "requestedItemsDetails": details,
                    "attributesHash": attributes_hash(&items),
                    "accessRequestIds": [request.to_string()],
                })
            })
            .collect()
    };
    json!({"newRequests": tracking(new), "existingRequests": tracking(existing)})
}

/// Submits an access request.
#[utoipa::path(
    post,
    path = "/access-requests/v1",
    tag = "Access Requests",
    operation_id = "createAccessRequestV1",
    request_body = AccessRequestBody,
    responses(
        (status = 202, description = "Accepted: every item is durable and in its approval step (`AccessRequestResponse`; duplicates under `existingRequests`).", content_type = "application/json"),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request:manage", "idn:access-request-self:manage"]))
)]
pub async fn submit(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::REQUEST_SUBMIT)?;
    let submission = body.parse::<AccessRequestBody>()?.into_submission()?;
    if !principal.has_scope("idn:access-request:manage")
        && recipients(&submission)
            .iter()
            .any(|i| **i != principal.identity)
    {
        return Err(ApiError::forbidden(
            "the scope idn:access-request-self:manage allows requests for oneself only",
        ));
    }
    let (request, items) = state
        .engine(&principal.caller.tenant)?
        .submit_request(&principal.caller, rights(&principal), &submission)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(submit_response(request, &items))).into_response())
}

// ---------------------------------------------------------------------------------------------
// Cancel, bulk cancel, close.

/// Body of `POST /access-requests/v1/cancel`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelBody {
    /// The access request id.
    pub account_activity_id: String,
    /// Why.
    pub comment: String,
}

/// Body of `POST /access-requests/v1/bulk-cancel`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkCancelBody {
    /// 1 to 50 access request ids.
    pub access_request_ids: Vec<String>,
    /// Why.
    pub comment: String,
}

/// Body of `POST /access-requests/v1/close`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloseBody {
    /// 1 to 500 access request ids.
    pub access_request_ids: Vec<String>,
    /// The message recorded (the contract's default when absent).
    pub message: Option<String>,
    /// `Terminated` (default) or `Completed`.
    pub execution_status: Option<String>,
    /// `Success`, `Incomplete` or `Failure` (default).
    pub completion_status: Option<String>,
}

fn request_id(field: &str, text: &str) -> Result<AccessRequestId, ApiError> {
    AccessRequestId::parse(text).map_err(|e| field_error(field, e))
}

/// Parses a bulk operation's ids, after checking their number against `bulk`'s limit.
fn bulk_ids<T>(
    bulk: Bulk,
    field: &str,
    ids: &[String],
    parse: impl Fn(&str, &str) -> Result<T, ApiError>,
) -> Result<Vec<T>, ApiError> {
    validate_bulk(bulk, ids.len()).map_err(|e| field_error(field, e))?;
    ids.iter()
        .enumerate()
        .map(|(i, t)| parse(&format!("{field}[{i}]"), t))
        .collect()
}

/// The per-id answer of a bulk operation (a jitflow extension of the contract's empty 202):
/// `{"results": [{"id", "status", "error"?}]}`, in order.
pub(crate) fn bulk_response<T>(
    ids: &[String],
    results: Vec<Result<T, jitflow::Error>>,
) -> Response {
    let results: Vec<Value> = ids
        .iter()
        .zip(results)
        .map(|(id, r)| match r {
            Ok(_) => json!({"id": id, "status": 202}),
            Err(e) => {
                let e = ApiError::from(e);
                json!({"id": id, "status": e.status.as_u16(), "error": e.dto()})
            }
        })
        .collect();
    (StatusCode::ACCEPTED, Json(json!({ "results": results }))).into_response()
}

/// Cancels an access request whose approval step has not passed.
#[utoipa::path(
    post,
    path = "/access-requests/v1/cancel",
    tag = "Access Requests",
    operation_id = "cancelAccessRequestV1",
    request_body = CancelBody,
    responses(
        (status = 202, description = "Accepted: every open item of the request is cancelled.", content_type = "application/json"),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request:manage"]))
)]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::REQUEST_CANCEL)?;
    let body: CancelBody = body.parse()?;
    let id = request_id("accountActivityId", &body.account_activity_id)?;
    state
        .engine(&principal.caller.tenant)?
        .cancel_request(&principal.caller, rights(&principal), id, body.comment)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({}))).into_response())
}

/// Cancels up to 50 access requests, each on its own.
#[utoipa::path(
    post,
    path = "/access-requests/v1/bulk-cancel",
    tag = "Access Requests",
    operation_id = "cancelAccessRequestInBulkV1",
    request_body = BulkCancelBody,
    responses(
        (status = 202, description = "Accepted: one result per id, in order (`results`).", content_type = "application/json"),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request-administration:manage"]))
)]
pub async fn bulk_cancel(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::REQUEST_BULK_CANCEL)?;
    let body: BulkCancelBody = body.parse()?;
    let ids = bulk_ids(
        Bulk::Cancel,
        "accessRequestIds",
        &body.access_request_ids,
        request_id,
    )?;
    let results = state
        .engine(&principal.caller.tenant)?
        .bulk_cancel(&principal.caller, rights(&principal), &ids, body.comment)
        .await?;
    Ok(bulk_response(&body.access_request_ids, results))
}

/// Closes up to 500 access requests at any stage.
#[utoipa::path(
    post,
    path = "/access-requests/v1/close",
    tag = "Access Requests",
    operation_id = "closeAccessRequestV1",
    request_body = CloseBody,
    responses(
        (status = 202, description = "Accepted: one result per id, in order (`results`).", content_type = "application/json"),
        Errors,
    ),
    security(("userAuth" = []))
)]
pub async fn close(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::REQUEST_CLOSE)?;
    let body: CloseBody = body.parse()?;
    let ids = bulk_ids(
        Bulk::Close,
        "accessRequestIds",
        &body.access_request_ids,
        request_id,
    )?;
    let execution = match body.execution_status.as_deref() {
        None | Some("Terminated") => ExecutionStatus::Terminated,
        Some("Completed") => ExecutionStatus::Completed,
        Some(_) => {
            return Err(field_error(
                "executionStatus",
                "must be Terminated or Completed",
            ));
        }
    };
    let completion = match body.completion_status.as_deref() {
        None | Some("Failure") => CompletionStatus::Failure,
        Some("Success") => CompletionStatus::Success,
        Some("Incomplete") => CompletionStatus::Incomplete,
        Some(_) => {
            return Err(field_error(
                "completionStatus",
                "must be Success, Incomplete or Failure",
            ));
        }
    };
    let results = state
        .engine(&principal.caller.tenant)?
        .bulk_close(
            &principal.caller,
            rights(&principal),
            &ids,
            execution,
            completion,
            body.message,
        )
        .await?;
    Ok(bulk_response(&body.access_request_ids, results))
}

// ---------------------------------------------------------------------------------------------
// Lists.

const STATUS_PARAMS: &[&str] = &[
    "requested-for",
    "requested-by",
    "regarding-identity",
    "assigned-to",
    "count",
    "limit",
    "offset",
    "filters",
    "sorters",
    "request-state",
];

/// The identity parameters of a status list, resolved and checked.
fn status_scope(params: &Params, principal: &Principal) -> Result<Scope, ApiError> {
    let scope = Scope {
        requested_for: params.identity("requested-for", principal)?,
        requested_by: params.identity("requested-by", principal)?,
        regarding: params.identity("regarding-identity", principal)?,
        assigned_to: params.identity("assigned-to", principal)?,
        executing_only: match params.get("request-state") {
            None => false,
            Some("EXECUTING") => true,
            Some(_) => {
                return Err(field_error(
                    "request-state",
                    "the only valid value is EXECUTING",
                ));
            }
        },
    };
    if scope.regarding.is_some() && (scope.requested_for.is_some() || scope.requested_by.is_some())
    {
        return Err(ApiError::bad_request(
            "regarding-identity is mutually exclusive with requested-for and requested-by",
        ));
    }
    Ok(scope)
}

/// The parameters of the request status lists, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "a parameter list for the OpenAPI document only")]
pub struct StatusParams {
    /// The identity the requests were made for (`me`: the caller).
    #[param(rename = "requested-for")]
    requested_for: Option<String>,
    /// The identity who made the requests (`me`: the caller).
    #[param(rename = "requested-by")]
    requested_by: Option<String>,
    /// The requester or the identity the requests were made for (`me`: the caller).
    #[param(rename = "regarding-identity")]
    regarding_identity: Option<String>,
    /// An approver of the requests (`me`: the caller).
    #[param(rename = "assigned-to")]
    assigned_to: Option<String>,
    /// Only `EXECUTING`.
    #[param(rename = "request-state")]
    request_state: Option<String>,
}

/// The collection parameters of a list, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "a parameter list for the OpenAPI document only")]
pub struct PageParams {
    /// `true` sets `X-Total-Count`.
    count: Option<bool>,
    /// 0..=250, default 250.
    limit: Option<u32>,
    /// 0..=10000.
    offset: Option<u32>,
    /// The filter (see the contract's field list for the endpoint).
    filters: Option<String>,
    /// The sorters (see the contract's list for the endpoint).
    sorters: Option<String>,
}

/// The status of access requests: the caller's own, or anyone's for an ORG_ADMIN.
#[utoipa::path(
    get,
    path = "/access-request-status/v1",
    tag = "Access Requests",
    operation_id = "listAccessRequestStatusV1",
    params(StatusParams, PageParams),
    responses(
        (status = 200, description = "`RequestedItemStatus` rows.", content_type = "application/json"),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request-status:read"]))
)]
pub async fn status(
    State(state): State<AppState>,
    principal: Principal,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    principal.require(auth::REQUEST_STATUS)?;
    let params = Params::new(&uri, STATUS_PARAMS)?;
    let scope = status_scope(&params, &principal)?;
    let query = params.query(jitflow::query::REQUEST_STATUS)?;
    let rights = rights(&principal);
    let page = crate::list::blocking(&state.engine(&principal.caller.tenant)?, move |engine| {
        engine.request_status(&principal.caller, rights, &scope, &query)
    })
    .await?;
    Ok(page_response(page, status_row))
}

/// Every access request of the tenant, for administrators.
#[utoipa::path(
    get,
    path = "/access-request-administration/v1",
    tag = "Access Requests",
    operation_id = "listAdministratorsAccessRequestStatusV1",
    params(StatusParams, PageParams),
    responses(
        (status = 200, description = "`AccessRequestAdminItemStatus` rows.", content_type = "application/json"),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request-administration:read"]))
)]
pub async fn administration(
    State(state): State<AppState>,
    principal: Principal,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    principal.require(auth::REQUEST_ADMINISTRATION_READ)?;
    let params = Params::new(&uri, STATUS_PARAMS)?;
    let scope = status_scope(&params, &principal)?;
    let query = params.query(jitflow::query::REQUEST_ADMINISTRATION)?;
    let rights = rights(&principal);
    let page = crate::list::blocking(&state.engine(&principal.caller.tenant)?, move |engine| {
        engine.request_administration(&principal.caller, rights, &scope, &query)
    })
    .await?;
    Ok(page_response(page, |item: &Item| {
        // `AccessRequestAdminItemStatus`: the status row without `approvalIds` and the account
        // fields, with `reauthorizationRequired`.
        let mut row = status_row(item);
        if let Value::Object(fields) = &mut row {
            for name in ["approvalIds", "requestedAccounts", "privilegeLevel"] {
                fields.remove(name);
            }
            fields.insert("reauthorizationRequired".to_owned(), Value::Bool(false));
        }
        row
    }))
}

// ---------------------------------------------------------------------------------------------
// Identity entitlement details.

/// The parameters of `GET /revocable-objects/v1`, for the OpenAPI document. The contract
/// declares them `in: path` on a path without placeholders; jitflow reads them from the query.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "a parameter list for the OpenAPI document only")]
pub struct DetailsParams {
    /// The identity (`me`: the caller).
    #[param(rename = "identityId")]
    identity_id: String,
    /// The entitlement.
    #[param(rename = "entitlementId")]
    entitlement_id: String,
}

/// What an identity holds of an entitlement, with its accounts, sunsets and revocability.
#[utoipa::path(
    get,
    path = "/revocable-objects/v1",
    tag = "Access Requests",
    operation_id = "getEntitlementDetailsForIdentityV1",
    params(DetailsParams),
    responses(
        (status = 200, description = "`IdentityEntitlementDetails`.", content_type = "application/json"),
        Errors,
    ),
    security(("userAuth" = ["idn:requestable-objects:read"]))
)]
pub async fn revocable_objects(
    State(state): State<AppState>,
    principal: Principal,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    principal.require(auth::REVOCABLE_OBJECTS_READ)?;
    let params = Params::new(&uri, &["identityId", "entitlementId"])?;
    let identity = params
        .identity("identityId", &principal)?
        .ok_or_else(|| ApiError::bad_request("identityId is required"))?;
    let entitlement = params
        .get("entitlementId")
        .ok_or_else(|| ApiError::bad_request("entitlementId is required"))?;
    let entitlement = jitflow_core::id::EntitlementId::parse(entitlement)
        .map_err(|e| field_error("entitlementId", e))?;
    let rights = rights(&principal);
    let (who, what) = (identity.clone(), entitlement.clone());
    let details = crate::list::blocking(&state.engine(&principal.caller.tenant)?, move |engine| {
        engine.entitlement_details(&principal.caller, rights, &who, &what)
    })
    .await?;
    Ok(Json(details_json(&identity, &entitlement, &details)).into_response())
}

/// `IdentityEntitlementDetails`: one account target per connection; an entitlement granted by
/// a request with a sunset carries that `removeDate`. Access held through a connection or a
/// request is revocable by a REVOKE_ACCESS request (jitflow knows no role or birthright
/// assignments of entitlements).
fn details_json(
    identity: &IdentityId,
    entitlement: &jitflow_core::id::EntitlementId,
    details: &jitflow::request_lists::EntitlementDetails,
) -> Value {
    let sunset = details
        .items
        .iter()
        .filter(|i| i.spec.request_type == RequestType::Grant)
        .find_map(|i| i.spec.remove_date);
    let first = details.connections.first();
    let targets: Vec<Value> = details
        .connections
        .iter()
        .map(|c| {
            let s = &c.spec;
            json!({
                "accountId": s.account.as_str(),
                "accountName": s.account_name,
                "accountUUID": null,
                "sourceId": s.source.as_str(),
                "sourceName": s.source_name,
                "removeDate": maybe_instant(sunset),
                "assignmentId": null,
                "revocable": true,
            })
        })
        .collect();
    json!({
        "identityId": identity.as_str(),
        "entitlement": {
            "id": entitlement.as_str(),
            "name": first.map_or(entitlement.as_str(), |c| c.spec.entitlement_name.as_str()),
            "created": first.map(|c| instant(c.created)),
            "modified": first.map(|c| instant(c.modified)),
            "description": null,
            "type": "ENTITLEMENT",
            "sourceId": first.map(|c| c.spec.source.as_str()),
            "sourceName": first.map(|c| c.spec.source_name.as_str()),
            "value": first.map(|c| c.spec.attribute_value.as_str()),
            "flags": [],
        },
        "sourceId": first.map(|c| c.spec.source.as_str()),
        "accountTargets": targets,
    })
}

// ---------------------------------------------------------------------------------------------
// Accounts selection.

/// The most (identity, item) pairs one accounts selection looks up: the contract's 10
/// identities with 25 entitlements each.
pub const MAX_SELECTION_PAIRS: usize = 250;

/// The accounts an identity holds an entitlement through, by source (`SourceAccountSelections`).
fn sources_json(details: &jitflow::request_lists::EntitlementDetails) -> Vec<Value> {
    let mut by_source: BTreeMap<&str, (&str, Vec<Value>)> = BTreeMap::new();
    for c in &details.connections {
        let s = &c.spec;
        by_source
            .entry(s.source.as_str())
            .or_insert((s.source_name.as_str(), Vec::new()))
            .1
            .push(json!({
                "nativeIdentity": s.account.as_str(),
                "type": "ACCOUNT",
                "id": s.account.as_str(),
                "name": s.account_name,
            }));
    }
    by_source
        .into_iter()
        .map(|(id, (name, accounts))| {
            json!({"type": "SOURCE", "id": id, "name": name, "accounts": accounts})
        })
        .collect()
}

/// The accounts each identity of a would-be request holds each requested entitlement through,
/// so that a client can fill `accountSelection` before it submits. An identity needs to select
/// when it holds a requested entitlement through more than one account. Roles and access
/// profiles list no sources. A USER may ask only about itself.
#[utoipa::path(
    post,
    path = "/access-requests/v1/accounts-selection",
    tag = "Access Requests",
    operation_id = "loadAccountSelectionsV1",
    request_body = AccessRequestBody,
    responses(
        (status = 200, description = "`AccountsSelectionResponse`.", content_type = "application/json"),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request:create"]))
)]
pub async fn accounts_selection(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::ACCOUNTS_SELECTION)?;
    let submission = body.parse::<AccessRequestBody>()?.into_submission()?;
    // The submission's own rule of shapes: what `POST /access-requests/v1` refuses, this does.
    let pairs = submission
        .groups()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let n: usize = pairs.iter().map(|(_, _, items)| items.len()).sum();
    if n == 0 || n > MAX_SELECTION_PAIRS {
        return Err(ApiError::bad_request(format!(
            "the request names {n} (identity, item) pairs; send 1..={MAX_SELECTION_PAIRS}"
        )));
    }
    let rights = rights(&principal);
    let mut identities = Vec::with_capacity(pairs.len());
    for (identity, _, items) in pairs {
        let mut rows = Vec::with_capacity(items.len());
        let mut required = false;
        for item in items {
            let Some(object) = &item.object else { continue };
            let sources = if object.kind == ObjectKind::Entitlement {
                let entitlement = jitflow_core::id::EntitlementId::parse(object.id.as_str())
                    .map_err(|e| field_error("id", e))?;
                let (caller, who) = (principal.caller.clone(), identity.clone());
                let found = crate::list::blocking(
                    &state.engine(&principal.caller.tenant)?,
                    move |engine| match engine.entitlement_details(
                        &caller,
                        rights,
                        &who,
                        &entitlement,
                    ) {
                        Err(jitflow::Error::NotFound(_)) => Ok(None),
                        other => other.map(Some),
                    },
                )
                .await?;
                found.as_ref().map(sources_json).unwrap_or_default()
            } else {
                Vec::new()
            };
            let accounts: usize = sources
                .iter()
                .map(|s| s["accounts"].as_array().map_or(0, Vec::len))
                .sum();
            required |= accounts > 1;
            // No `description`: jitflow knows none, and the contract's string is not nullable.
            rows.push(json!({
                "accountsSelectionBlocked": false,
                "accountsSelectionBlockedReason": null,
                "type": object.kind.as_str(),
                "id": object.id.as_str(),
                "name": object.id.as_str(),
                "sources": sources,
            }));
        }
        identities.push(json!({
            "requestedItems": rows,
            "accountsSelectionRequired": required,
            "type": "IDENTITY",
            "id": identity.as_str(),
            "name": identity.as_str(),
        }));
    }
    Ok(Json(json!({ "identities": identities })).into_response())
}
