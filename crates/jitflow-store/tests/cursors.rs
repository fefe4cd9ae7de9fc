//! Cursors: a consumer's durable position in the log (the engine's notifier keeps one). They are
//! committed with a batch, survive a reopen, never move back, and leave `verify` clean.

use jitflow_store::Store;
use jitflow_store::batch::{Batch, MAX_BATCH_CURSORS};
use jitflow_store::open::Options;

#[test]
fn cursors_persist_and_only_move_forward() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cursors.redb");
    {
        let store = Store::open(&path, Options::default()).unwrap();
        assert_eq!(
            store.reader().unwrap().cursor("notifier").unwrap(),
            0,
            "never set"
        );
        let mut batch = Batch::new();
        batch.set_cursor("notifier", 40);
        batch.set_cursor("notifier", 42);
        batch.set_cursor("notifier", 41);
        batch.set_cursor("export", 7);
        assert!(!batch.is_empty());
        let appended = store.append_batch(&batch).unwrap();
        assert!(appended.is_empty(), "moving cursors appends no events");
        let mut back = Batch::new();
        back.set_cursor("notifier", 10);
        store.append_batch(&back).unwrap();
        let reader = store.reader().unwrap();
        assert_eq!(
            reader.cursor("notifier").unwrap(),
            42,
            "a cursor never moves back"
        );
        assert_eq!(reader.cursor("export").unwrap(), 7);
    }
    let store = Store::open(&path, Options::default()).unwrap();
    assert_eq!(store.reader().unwrap().cursor("notifier").unwrap(), 42);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
#[should_panic(expected = "at most")]
fn a_batch_moves_a_bounded_number_of_cursors() {
    let mut batch = Batch::new();
    for n in 0..=MAX_BATCH_CURSORS {
        batch.set_cursor(&format!("c{n}"), 1);
    }
}

#[test]
#[should_panic(expected = "cursor name")]
fn cursor_names_are_bounded() {
    Batch::new().set_cursor(&"x".repeat(65), 1);
}
