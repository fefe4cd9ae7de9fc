//! Access request items (issue 7): the item projection, the request -> items index, the open
//! items of each identity and object, the items' timers and intents, and their readers.
//!
//! Every item write goes through `put_item`, in the transaction of the event that changes it,
//! as connection writes go through `projection::put_connection`.

pub mod verify;

use jitflow_core::id::{AccessRequestId, IdentityId, RequestItemId, TenantId};
use jitflow_core::request::{Change, Event, Item, ObjectRef};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableHandle};

use crate::hot::WriteTable;

use crate::append::{Error, WriteTables};
use crate::codec::{self, Problem, RecordName};
use crate::read::{self, Reader};
use crate::tables::{
    REQUEST_INDEX, REQUEST_INTENTS, REQUEST_ITEMS, REQUEST_OPEN, REQUEST_PEOPLE, object_kind_code,
};

/// The most items one request has: a request's items are read whole with
/// [`Reader::request_items`]. Equal to the core's `submit::MAX_ITEMS`.
pub const MAX_REQUEST_ITEMS: usize = jitflow_core::request::submit::MAX_ITEMS;

/// The most open items one identity may have for one object read by
/// [`Reader::open_items`]. The duplicate rule cancels a second open item for the same access,
/// so more than one is rare; the bound keeps a damaged index from being read whole.
pub const MAX_OPEN_ITEMS: usize = 64;

/// An item with pending effects (read them with `Item::pending_effects`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemIntent {
    /// The tenant.
    pub tenant: TenantId,
    /// The item.
    pub item: RequestItemId,
}

/// The stored item, read inside a write transaction (so it sees the batch's own writes).
pub(crate) fn get_item(
    items: &WriteTable<'_, (&'static str, u128), &'static [u8]>,
    tenant: &TenantId,
    id: RequestItemId,
) -> Result<Option<Item>, Error> {
    let t = tenant.as_str();
    let Some(bytes) = items.get((t, id.as_u128()))? else {
        return Ok(None);
    };
    Ok(Some(codec::decode_item(t, id, bytes.value())?))
}

/// The key of an item in the open-items index.
fn open_key<'a>(tenant: &'a TenantId, item: &'a Item) -> (&'a str, &'a str, u8, &'a str, u128) {
    let spec = &item.spec;
    (
        tenant.as_str(),
        spec.requested_for.as_str(),
        object_kind_code(spec.object.kind),
        spec.object.id.as_str(),
        spec.id.as_u128(),
    )
}

/// Writes everything an item event changes besides the log: the projection, the request index
/// (on submission), the open-items index, the timers and the intent. `before` is the stored
/// state, `after` the state after `event` (checked by the caller to follow from `before`).
pub(crate) fn put_item(
    t: &mut WriteTables<'_>,
    tenant: &TenantId,
    event: &Event,
    before: Option<&Item>,
    after: &Item,
) -> Result<(), Error> {
    let key = (tenant.as_str(), event.item.as_u128());
    t.request_items
        .insert(key, codec::encode_item(after).as_slice())?;
    if matches!(event.change, Change::Submitted { .. }) {
        t.request_index.insert(
            (
                tenant.as_str(),
                after.spec.request.as_u128(),
                after.id().as_u128(),
            ),
            (),
        )?;
        for (role, identity) in people(after) {
            t.request_people.insert(
                (tenant.as_str(), role as u8, identity, after.id().as_u128()),
                (),
            )?;
        }
    }
    if let Change::Forwarded { from, to, .. } = &event.change {
        // The approval moved: the people index follows, in the same transaction.
        let id = after.id().as_u128();
        for old in from {
            t.request_people
                .remove((tenant.as_str(), Role::Approver as u8, old.as_str(), id))?;
        }
        t.request_people
            .insert((tenant.as_str(), Role::Approver as u8, to.as_str(), id), ())?;
    }
    let was_open = before.is_some_and(|i| !i.status.is_terminal());
    let is_open = !after.status.is_terminal();
    match (was_open, is_open) {
        (false, true) => {
            t.request_open.insert(open_key(tenant, after), ())?;
        }
        (true, false) => {
            t.request_open.remove(open_key(tenant, after))?;
        }
        _ => {}
    }
    crate::timers::apply(&mut t.timers, tenant, event)?;
    let stuck_key = (key.0, crate::tables::STUCK_ITEM, key.1);
    crate::intents::mirror_stuck(&mut t.stuck, stuck_key, before, Some(after))?;
    crate::intents::mirror(&mut t.request_intents, key, before, Some(after))
}

/// What an identity is to a request item, in the people index (table `request_people`).
/// *Persisted*: the codes are part of the file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The identity the access is for.
    RequestedFor = 1,
    /// The identity who submitted the request.
    RequestedBy = 2,
    /// An approver of the item's approval step.
    Approver = 3,
}

/// The people rows of an item: who it is for, who asked, and each current approver. They are
/// written at submission; a forward moves the approver rows (see `put_item`).
pub(crate) fn people(item: &Item) -> impl Iterator<Item = (Role, &str)> {
    [
        (Role::RequestedFor, item.spec.requested_for.as_str()),
        (Role::RequestedBy, item.spec.requester.as_str()),
    ]
    .into_iter()
    .chain(
        item.approval
            .approvers
            .iter()
            .map(|a| (Role::Approver, a.as_str())),
    )
}

/// Paired assertions on an item entry, before anything is written: the entry must come from
/// `decide` and `evolve`.
pub(crate) fn assert_after(event: &Event, after: &Item) {
    crate::intents::assert_follows("item", event, after);
}

/// Paired assertions tying an item entry to the stored state before it.
pub(crate) fn assert_transition(event: &Event, before: Option<&Item>, after: &Item) {
    let id = event.item;
    match (&event.change, before) {
        (Change::Submitted { .. }, None) => {
            assert_eq!(
                after.version, 1,
                "submission of {id} at version {}",
                after.version
            );
        }
        (Change::Submitted { .. }, Some(_)) => panic!("submission of item {id}, which is stored"),
        (change, None) => panic!("{} of item {id}, which is not stored", change.name()),
        (change, Some(b)) => assert_eq!(
            after.version,
            b.version + 1,
            "{} of item {id}: version {} after {}",
            change.name(),
            after.version,
            b.version
        ),
    }
    let before_timers = before.map(Item::timers).unwrap_or_default();
    assert!(
        event.cancel.iter().all(|t| before_timers.contains(t))
            && event.arm.iter().all(|t| !before_timers.contains(t)),
        "event of item {id} arms {:?} and cancels {:?}; the stored state has {before_timers:?}",
        event.arm,
        event.cancel
    );
}

/// The names of the access request tables.
pub(crate) fn table_names() -> [String; 5] {
    [
        REQUEST_ITEMS.name().to_owned(),
        REQUEST_INDEX.name().to_owned(),
        REQUEST_OPEN.name().to_owned(),
        REQUEST_INTENTS.name().to_owned(),
        REQUEST_PEOPLE.name().to_owned(),
    ]
}

/// Creates the access request tables if the file lacks them (a new file, or one written before
/// access requests existed), so that every reader finds every table.
pub(crate) fn ensure_tables(db: &Database) -> Result<(), redb::Error> {
    let names = table_names();
    let present: Vec<String> = db
        .begin_read()?
        .list_tables()?
        .map(|t| t.name().to_owned())
        .filter(|t| names.contains(t))
        .collect();
    if present.len() == names.len() {
        return Ok(());
    }
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)
        .expect("redb refuses only to lower durability, never to set Immediate");
    txn.open_table(REQUEST_ITEMS)?;
    txn.open_table(REQUEST_INDEX)?;
    txn.open_table(REQUEST_OPEN)?;
    txn.open_table(REQUEST_INTENTS)?;
    let mut people_table = txn.open_table(REQUEST_PEOPLE)?;
    if !present.iter().any(|t| t == REQUEST_PEOPLE.name()) {
        // A file written before the people index: build it from the stored items.
        let items = txn.open_table(REQUEST_ITEMS)?;
        for entry in items.iter()? {
            let (k, v) = entry?;
            let (t, id) = k.value();
            let item = codec::decode_item(t, RequestItemId::from_u128(id), v.value())
                .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
            for (role, identity) in people(&item) {
                people_table.insert((t, role as u8, identity, id), ())?;
            }
        }
    }
    drop(people_table);
    txn.commit()?;
    Ok(())
}

fn bad_key(table: &'static str, key: String, why: &str) -> codec::Error {
    codec::Error::new(
        RecordName::Key { table, key },
        Problem::Invalid(why.to_owned()),
    )
}

impl Reader {
    /// The access request item `id` of `tenant`.
    pub fn request_item(
        &self,
        tenant: &TenantId,
        id: RequestItemId,
    ) -> Result<Option<Item>, read::Error> {
        let table = self.table(REQUEST_ITEMS)?;
        let t = tenant.as_str();
        let Some(bytes) = table.get((t, id.as_u128()))? else {
            return Ok(None);
        };
        Ok(Some(codec::decode_item(t, id, bytes.value())?))
    }

    /// Every item of the access request `request` of `tenant`, in item id order (empty for an
    /// unknown request). A request has at most [`MAX_REQUEST_ITEMS`] items.
    pub fn request_items(
        &self,
        tenant: &TenantId,
        request: AccessRequestId,
    ) -> Result<Vec<Item>, read::Error> {
        let index = self.table(REQUEST_INDEX)?;
        let (t, r) = (tenant.as_str(), request.as_u128());
        let mut out = Vec::new();
        for entry in index
            .range::<(&str, u128, u128)>((t, r, 0)..=(t, r, u128::MAX))?
            .take(MAX_REQUEST_ITEMS)
        {
            let (k, _) = entry?;
            let id = RequestItemId::from_u128(k.value().2);
            let item = self.request_item(tenant, id)?.ok_or_else(|| {
                bad_key(
                    "request_index",
                    format!("({t:?}, {request}, {id})"),
                    "names an item that is not stored",
                )
            })?;
            out.push(item);
        }
        Ok(out)
    }

    /// The items of `tenant` for `identity` and `object` that have not ended (at most
    /// [`MAX_OPEN_ITEMS`]), in item id order: the duplicate rule's input.
    pub fn open_items(
        &self,
        tenant: &TenantId,
        identity: &IdentityId,
        object: &ObjectRef,
    ) -> Result<Vec<Item>, read::Error> {
        let index = self.table(REQUEST_OPEN)?;
        let (t, who, kind, what) = (
            tenant.as_str(),
            identity.as_str(),
            object_kind_code(object.kind),
            object.id.as_str(),
        );
        let mut out = Vec::new();
        for entry in index
            .range::<(&str, &str, u8, &str, u128)>(
                (t, who, kind, what, 0)..=(t, who, kind, what, u128::MAX),
            )?
            .take(MAX_OPEN_ITEMS)
        {
            let (k, _) = entry?;
            let id = RequestItemId::from_u128(k.value().4);
            let item = self.request_item(tenant, id)?.ok_or_else(|| {
                bad_key(
                    "request_open",
                    format!("({t:?}, {who:?}, {kind}, {what:?}, {id})"),
                    "names an item that is not stored",
                )
            })?;
            out.push(item);
        }
        Ok(out)
    }

    /// Items with pending effects, in (tenant, item) order, after `after` (exclusive), at most
    /// `limit` (at most [`read::MAX_READ_LIMIT`]).
    pub fn request_intents(
        &self,
        after: Option<&ItemIntent>,
        limit: usize,
    ) -> Result<Vec<ItemIntent>, read::Error> {
        let after = after.map(|i| (i.tenant.as_str(), i.item.as_u128()));
        let keys = self.tenant_keys(REQUEST_INTENTS, "request_intents", after, limit)?;
        Ok(keys
            .into_iter()
            .map(|(tenant, id)| ItemIntent {
                tenant,
                item: RequestItemId::from_u128(id),
            })
            .collect())
    }
}
