//! The offline commands, on the data directory of a stopped engine, through the store's public
//! API only (`Store::open`, `verify`, `compact`, `reader()` and its reads), so that they read
//! what the engine would read whatever the store's layout.
//!
//! The store file is opened for writing, which redb locks: while an engine holds the file the
//! open fails with `DatabaseAlreadyOpen`, reported as [`Error::Locked`]. A file of an older
//! format version is refused by every command but `upgrade`, so that nothing upgrades it by
//! surprise; a missing file is refused rather than created.

use std::io::Write;
use std::path::{Path, PathBuf};

use jitflow_store::Store;
use jitflow_store::open::{self, FILE_FORMAT_VERSION, Options};
use jitflow_store::read::MAX_READ_LIMIT;
use serde_json::{Value, json};

use crate::output::Table;
use crate::progress::{Interrupt, Progress};
use crate::{Error, Outcome};

/// The store file's name in a data directory (the engine's and the shim's).
pub const STORE_FILE: &str = "jitflow.redb";

/// Events read per page by `export`, and connections per page by `stats`.
pub const PAGE: usize = MAX_READ_LIMIT;

fn store_path(data_dir: &Path) -> Result<PathBuf, Error> {
    let path = data_dir.join(STORE_FILE);
    if !path.is_file() {
        return Err(Error::NoStore { path });
    }
    Ok(path)
}

fn open_error(path: &Path, e: open::Error) -> Error {
    match e {
        open::Error::Database(redb::DatabaseError::DatabaseAlreadyOpen) => Error::Locked {
            path: path.to_owned(),
        },
        other => Error::Store(format!("{}: {other}", path.display())),
    }
}

/// The stored format version, read without changing the file.
fn stored_version(path: &Path) -> Result<Option<u64>, Error> {
    open::stored_format_version(path).map_err(|e| open_error(path, e))
}

/// Opens the store of `data_dir` for an offline command other than `upgrade`.
fn open_current(data_dir: &Path) -> Result<(PathBuf, Store), Error> {
    let path = store_path(data_dir)?;
    match stored_version(&path)? {
        Some(FILE_FORMAT_VERSION) => {}
        Some(v) if v < FILE_FORMAT_VERSION => {
            return Err(Error::Outdated {
                path,
                found: v,
                supported: FILE_FORMAT_VERSION,
            });
        }
        // Newer, or not a store: `Store::open` refuses with the reason, changing nothing.
        _ => {}
    }
    let store = Store::open(&path, Options::default()).map_err(|e| open_error(&path, e))?;
    Ok((path, store))
}

fn file_size(path: &Path) -> Result<u64, Error> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| Error::File {
            path: path.to_owned(),
            source,
        })
}

/// `jitflow verify`: exit code 3 when the store disagrees with its log.
pub fn verify(data_dir: &Path, json_out: bool, out: &mut impl Write) -> Result<Outcome, Error> {
    let (_, store) = open_current(data_dir)?;
    let progress = Progress::new("verifying", None);
    let report = store.verify().map_err(|e| Error::Store(e.to_string()));
    progress.finish();
    let report = report?;
    let differences: Vec<String> = report.differences.iter().map(|d| d.to_string()).collect();
    if json_out {
        crate::output::json(
            out,
            &json!({
                "clean": report.is_clean(),
                "events": report.events,
                "connections": report.connections,
                "activations": report.activations,
                "policies": report.policies,
                "requestConfigs": report.request_configs,
                "timers": report.timers,
                "intents": report.intents,
                "items": report.items,
                "itemIntents": report.item_intents,
                "differences": differences,
                "omitted": report.omitted,
            }),
        )?;
    } else {
        writeln!(
            out,
            "replayed {} events: {} connections, {} activations, {} access request items, {} timers, {} connections and {} items with pending effects",
            report.events, report.connections, report.activations, report.items, report.timers, report.intents, report.item_intents
        )
        .map_err(Error::Output)?;
        if report.is_clean() {
            writeln!(out, "clean: the store agrees with its log").map_err(Error::Output)?;
        } else {
            writeln!(
                out,
                "{} differences{}:",
                report.differences.len() as u64 + report.omitted,
                if report.omitted > 0 {
                    format!(" ({} not listed)", report.omitted)
                } else {
                    String::new()
                }
            )
            .map_err(Error::Output)?;
            for d in &differences {
                writeln!(out, "- {d}").map_err(Error::Output)?;
            }
        }
    }
    Ok(if report.is_clean() {
        Outcome::Ok
    } else {
        Outcome::Differences
    })
}

/// `jitflow export`: every event from global sequence `from` as JSON lines (the engine's audit
/// export format), a page of [`PAGE`] at a time; Ctrl-C stops it between pages, after a whole
/// line, and says where to resume.
pub fn export(
    data_dir: &Path,
    from: u64,
    interrupt: &Interrupt,
    out: &mut impl Write,
) -> Result<Outcome, Error> {
    let (_, store) = open_current(data_dir)?;
    let mut after = from.saturating_sub(1);
    let last = store
        .reader()
        .and_then(|r| r.last_sequence())
        .map_err(|e| Error::Store(e.to_string()))?;
    let mut progress = Progress::new("exporting", Some(last.saturating_sub(after)));
    loop {
        if interrupt.is_set() {
            progress.finish();
            eprintln!(
                "interrupted: exported up to sequence {after}; resume with --from {}",
                after + 1
            );
            return Ok(Outcome::Interrupted);
        }
        // One snapshot per page: readers must stay short-lived.
        let page = store
            .reader()
            .and_then(|r| r.events_after(after, PAGE))
            .map_err(|e| Error::Store(e.to_string()))?;
        let Some(tail) = page.last() else { break };
        after = tail.sequence;
        for envelope in &page {
            writeln!(out, "{}", jitflow::export::json_line(envelope)).map_err(Error::Output)?;
        }
        out.flush().map_err(Error::Output)?;
        progress.inc(page.len() as u64);
    }
    progress.finish();
    Ok(Outcome::Ok)
}

/// `jitflow compact`. redb's compaction cannot be cut short: a Ctrl-C during it is honoured
/// once it is done (the file is then whole), with exit code 130.
pub fn compact(data_dir: &Path, json_out: bool, out: &mut impl Write) -> Result<Outcome, Error> {
    let (path, mut store) = open_current(data_dir)?;
    let before = file_size(&path)?;
    let progress = Progress::new("compacting", None);
    let moved = store.compact().map_err(|e| Error::Store(e.to_string()));
    progress.finish();
    let moved = moved?;
    drop(store);
    let after = file_size(&path)?;
    if json_out {
        crate::output::json(
            out,
            &json!({"moved": moved, "bytesBefore": before, "bytesAfter": after}),
        )?;
    } else {
        writeln!(
            out,
            "compacted {}: {before} bytes before, {after} after{}",
            path.display(),
            if moved { "" } else { " (nothing to move)" }
        )
        .map_err(Error::Output)?;
    }
    Ok(Outcome::Ok)
}

/// What each format upgrade does, for the dry run and the report.
fn upgrade_steps(from: u64) -> Vec<&'static str> {
    let mut steps = Vec::new();
    if from < 2 {
        steps.push("1 -> 2: build the connections' secondary and assignment indexes, and the activation history by replaying the log");
    }
    if from < 3 {
        steps.push(
            "2 -> 3: add the access request config table (empty: every tenant has the contract's defaults)",
        );
    }
    if from < 4 {
        steps.push(
            "3 -> 4: log first: add the log's extras table, log the idempotency keys and cursors it holds as extras records, and record that the tables cover the whole log (nothing else is rewritten)",
        );
    }
    if from < 5 {
        steps.push(
            "4 -> 5: stamp the version (new record kinds: drift found, a policy's warning lead), so that older builds refuse the file",
        );
    }
    if from < 6 {
        steps.push(
            "5 -> 6: add the stuck table (connections and request items whose revoke keeps failing), filled from the stored connections and items",
        );
    }
    if from < 7 {
        steps.push(
            "6 -> 7: stamp the version (signals' events may carry the client's requestOrigin and metaData), so that older builds refuse the file",
        );
    }
    if from < 8 {
        steps.push(
            "7 -> 8: stamp the version (new record kinds: a regrant after drift, a policy's missing-access action), so that older builds refuse the file",
        );
    }
    steps
}

/// `jitflow upgrade [--dry-run]`: the format upgrade `Store::open` performs, each step in one
/// transaction (all or nothing).
pub fn upgrade(
    data_dir: &Path,
    dry_run: bool,
    json_out: bool,
    out: &mut impl Write,
) -> Result<Outcome, Error> {
    let path = store_path(data_dir)?;
    let found = stored_version(&path)?;
    let Some(found) = found else {
        return Err(Error::Store(format!(
            "{}: the file holds no jitflow format version (empty, or not a store)",
            path.display()
        )));
    };
    if found > FILE_FORMAT_VERSION {
        return Err(Error::Store(format!(
            "{}: format version {found} is newer than this build's {FILE_FORMAT_VERSION}; use a newer jitflow",
            path.display()
        )));
    }
    let steps = upgrade_steps(found);
    if !dry_run && !steps.is_empty() {
        let progress = Progress::new("upgrading", None);
        let store = Store::open(&path, Options::default()).map_err(|e| open_error(&path, e));
        progress.finish();
        drop(store?);
    }
    let now = if dry_run {
        found
    } else {
        stored_version(&path)?.unwrap_or(found)
    };
    if json_out {
        crate::output::json(
            out,
            &json!({
                "from": found,
                "to": FILE_FORMAT_VERSION,
                "dryRun": dry_run,
                "steps": steps,
                "version": now,
            }),
        )?;
    } else if steps.is_empty() {
        writeln!(
            out,
            "{}: already at format version {FILE_FORMAT_VERSION}; nothing to do",
            path.display()
        )
        .map_err(Error::Output)?;
    } else {
        let verb = if dry_run { "would upgrade" } else { "upgraded" };
        writeln!(
            out,
            "{}: {verb} from format version {found} to {FILE_FORMAT_VERSION}:",
            path.display()
        )
        .map_err(Error::Output)?;
        for s in &steps {
            writeln!(out, "- {s}").map_err(Error::Output)?;
        }
        if dry_run {
            writeln!(out, "dry run: nothing changed").map_err(Error::Output)?;
        }
    }
    Ok(Outcome::Ok)
}

/// `jitflow stats`: connections by tenant and state (read a page of [`PAGE`] at a time),
/// pending timers and effects, events, file size.
pub fn stats(
    data_dir: &Path,
    json_out: bool,
    interrupt: &Interrupt,
    out: &mut impl Write,
) -> Result<Outcome, Error> {
    let (path, store) = open_current(data_dir)?;
    let size = file_size(&path)?;
    let storage = |e: jitflow_store::read::Error| Error::Store(e.to_string());
    let reader = store.reader().map_err(storage)?;
    let backlog = reader.backlog().map_err(storage)?;
    let events = reader.last_sequence().map_err(storage)?;
    drop(reader);
    let mut progress = Progress::new("counting connections", None);
    let mut tenants: Vec<(String, std::collections::BTreeMap<String, u64>, u64)> = Vec::new();
    let mut after_tenant = None;
    loop {
        let reader = store.reader().map_err(storage)?;
        let page = reader
            .tenants(after_tenant.as_ref(), PAGE)
            .map_err(storage)?;
        drop(reader);
        let Some(last) = page.last().cloned() else {
            break;
        };
        for tenant in page {
            let mut states = std::collections::BTreeMap::new();
            let mut stuck = 0u64;
            let mut after = None;
            loop {
                if interrupt.is_set() {
                    progress.finish();
                    eprintln!("interrupted: nothing was changed");
                    return Ok(Outcome::Interrupted);
                }
                let connections = store
                    .reader()
                    .and_then(|r| r.connections(&tenant, after, PAGE))
                    .map_err(storage)?;
                let Some(c) = connections.last() else { break };
                after = Some(c.spec.id);
                for c in &connections {
                    *states.entry(c.state.as_str().to_owned()).or_insert(0) += 1;
                    let activation_stuck = c.running_activation().is_some_and(|a| a.stuck);
                    let standing_stuck = c.standing_revoke.as_ref().is_some_and(|r| r.stuck);
                    if activation_stuck || standing_stuck {
                        stuck += 1;
                    }
                }
                progress.inc(connections.len() as u64);
            }
            tenants.push((tenant.to_string(), states, stuck));
        }
        after_tenant = Some(last);
    }
    progress.finish();
    if json_out {
        let by_tenant: Vec<Value> = tenants
            .iter()
            .map(|(t, states, stuck)| {
                json!({
                    "tenant": t,
                    "connections": states.values().sum::<u64>(),
                    "byState": states,
                    "stuck": stuck,
                })
            })
            .collect();
        crate::output::json(
            out,
            &json!({
                "file": path.display().to_string(),
                "fileBytes": size,
                "formatVersion": FILE_FORMAT_VERSION,
                "events": events,
                "timersPending": backlog.timers,
                "connectionsWithPendingEffects": backlog.connection_intents,
                "itemsWithPendingEffects": backlog.item_intents,
                "tenants": by_tenant,
            }),
        )?;
        return Ok(Outcome::Ok);
    }
    let w = |out: &mut dyn Write, k: &str, v: String| crate::output::field(out, 34, k, v);
    w(
        out,
        "file",
        format!(
            "{} ({size} bytes, format version {FILE_FORMAT_VERSION})",
            path.display()
        ),
    )?;
    w(out, "events", events.to_string())?;
    w(out, "timers pending", backlog.timers.to_string())?;
    w(
        out,
        "connections with pending effects",
        backlog.connection_intents.to_string(),
    )?;
    w(
        out,
        "items with pending effects",
        backlog.item_intents.to_string(),
    )?;
    writeln!(out).map_err(Error::Output)?;
    let table = Table::new(out, &[("TENANT", 24), ("STATE", 14), ("CONNECTIONS", 0)])?;
    for (t, states, stuck) in &tenants {
        for (state, n) in states {
            table.row(out, &[t.clone(), state.clone(), n.to_string()])?;
        }
        if *stuck > 0 {
            table.row(out, &[t.clone(), "(stuck)".to_owned(), stuck.to_string()])?;
        }
    }
    Ok(Outcome::Ok)
}
