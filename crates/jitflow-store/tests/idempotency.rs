//! Idempotency keys: stored with a batch, read back until they expire (expired reads as
//! absent), replaced by a later put, and purged in bounded steps.

use jitflow_core::id::TenantId;
use jitflow_core::time::Timestamp;
use jitflow_store::Store;
use jitflow_store::batch::Batch;
use jitflow_store::idempotency::{Idempotency, KeyPut};
use jitflow_store::open::Options;

fn at(minutes: u64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + minutes * 60_000).unwrap()
}

fn put(tenant: &TenantId, key: &str, expires: u64) -> KeyPut {
    KeyPut {
        tenant: tenant.clone(),
        key: key.into(),
        record: Idempotency {
            fingerprint: expires * 31,
            result: format!("result of {key}").into_bytes(),
            expires_at: at(expires),
        },
    }
}

#[test]
fn keys_read_back_until_they_expire_and_purge_in_bounded_steps() {
    let store =
        Store::open_with_backend(redb::backends::InMemoryBackend::new(), Options::default())
            .unwrap();
    let acme = TenantId::parse("acme").unwrap();
    let other = TenantId::parse("other").unwrap();
    let mut batch = Batch::new();
    for n in 0..10 {
        batch.push_key(put(&acme, &format!("k{n}"), 10 + n));
    }
    batch.push_key(put(&other, "k0", 100));
    let appended = store.append_batch(&batch).unwrap();
    assert!(appended.is_empty(), "a batch of keys appends no events");

    let reader = store.reader().unwrap();
    let k3 = reader.idempotency(&acme, "k3", at(12)).unwrap().unwrap();
    assert_eq!(k3, put(&acme, "k3", 13).record);
    // Expired at its expiry instant: absent.
    assert_eq!(reader.idempotency(&acme, "k3", at(13)).unwrap(), None);
    // Tenants do not see each other's keys.
    assert_eq!(reader.idempotency(&other, "k3", at(0)).unwrap(), None);
    assert_eq!(
        reader
            .idempotency(&other, "k0", at(50))
            .unwrap()
            .unwrap()
            .expires_at,
        at(100)
    );
    drop(reader);

    // Replacing a key moves its expiry.
    let mut batch = Batch::new();
    batch.push_key(put(&acme, "k0", 1000));
    store.append_batch(&batch).unwrap();

    // At minute 15 the keys expiring at 11..=15 are expired (k0 no longer is): 5 keys.
    assert_eq!(store.purge_expired_keys(at(15), 2).unwrap(), 2);
    assert_eq!(store.purge_expired_keys(at(15), 2).unwrap(), 2);
    assert_eq!(store.purge_expired_keys(at(15), 2).unwrap(), 1);
    assert_eq!(store.purge_expired_keys(at(15), 2).unwrap(), 0);
    let reader = store.reader().unwrap();
    for n in 1..=5 {
        assert_eq!(
            reader.idempotency(&acme, &format!("k{n}"), at(0)).unwrap(),
            None,
            "k{n}"
        );
    }
    for n in 6..10 {
        assert!(
            reader
                .idempotency(&acme, &format!("k{n}"), at(0))
                .unwrap()
                .is_some(),
            "k{n}"
        );
    }
    assert_eq!(
        reader
            .idempotency(&acme, "k0", at(999))
            .unwrap()
            .unwrap()
            .expires_at,
        at(1000)
    );
    drop(reader);
    assert_eq!(store.purge_expired_keys(at(10_000), 100).unwrap(), 6);
    assert_eq!(store.purge_expired_keys(at(10_000), 100).unwrap(), 0);
}

#[test]
#[should_panic(expected = "idempotency key of 257 bytes")]
fn an_overlong_key_is_a_bug() {
    let store =
        Store::open_with_backend(redb::backends::InMemoryBackend::new(), Options::default())
            .unwrap();
    let mut batch = Batch::new();
    batch.push_key(put(&TenantId::parse("acme").unwrap(), &"k".repeat(257), 1));
    let _ = store.append_batch(&batch);
}
