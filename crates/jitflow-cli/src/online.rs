//! The online commands: reads and signals through the shim's REST endpoints, with every scope
//! and tenant rule of the API applying to the token used.

use std::io::Write;

use serde_json::{Value, json};

use crate::cli::{ApprovalsList, Decide, List, Tail};
use crate::client::Client;
use crate::output::{Listing, Table, field, text, when};
use crate::progress::Interrupt;
use crate::{Error, Outcome};

/// The connection list's page size (the contract's largest `limit`).
pub const LIST_PAGE: u64 = 250;
/// The event stream's page size (the shim's largest stream page).
pub const STREAM_PAGE: u64 = 1000;
/// The audit export's page size when tailing.
pub const EXPORT_PAGE: u64 = 1000;
/// The approval list's page size.
pub const APPROVAL_PAGE: u64 = 250;

/// The JSON path of a sort field in a connection hit, where the names differ.
fn hit_path(field: &str) -> &str {
    match field {
        "jit.provision" => "jit.provisioned",
        "jit.deprovision" => "jit.deprovisioned",
        other => other,
    }
}

/// The `searchAfter` that continues after `hit` with `sorters` (the store's encoding: one value
/// per sorter, comma separated, `\` escaping `,` and `\`, null as nothing).
fn search_after(sorters: &[String], hit: &Value) -> String {
    let mut out = String::new();
    for (i, sorter) in sorters.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let field = sorter.trim().trim_start_matches(['-', '+']);
        let mut value = hit;
        for part in hit_path(field).split('.') {
            value = &value[part];
        }
        match value {
            Value::Null => {}
            Value::String(s) => {
                for c in s.chars() {
                    if c == ',' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
            other => out.push_str(&other.to_string()),
        }
    }
    out
}

/// `jitflow connections list`.
pub async fn connections_list(
    client: &Client,
    list: &List,
    json_out: bool,
    out: &mut impl Write,
) -> Result<Outcome, Error> {
    // Keyset paging needs a total order: `id` last breaks every tie.
    let mut sorters: Vec<String> = list
        .sort
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if !sorters
        .iter()
        .any(|s| s.trim_start_matches(['-', '+']) == "id")
    {
        sorters.push("id".to_owned());
    }
    let mut listing = Listing::start(
        out,
        json_out,
        &[
            ("ID", 36),
            ("STATE", 12),
            ("TYPE", 8),
            ("IDENTITY", 16),
            ("ENTITLEMENT", 24),
            ("EXPIRES", 0),
        ],
    )?;
    let mut after: Option<String> = None;
    let mut shown = 0u64;
    loop {
        let want = list.limit.map_or(LIST_PAGE, |l| (l - shown).min(LIST_PAGE));
        if want == 0 {
            break;
        }
        let mut query = vec![("limit", want.to_string()), ("sorters", sorters.join(","))];
        if let Some(f) = &list.filter {
            query.push(("filters", f.clone()));
        }
        if let Some(a) = &after {
            query.push(("searchAfter", a.clone()));
        }
        let page = client
            .get("/entitlement-connections/v1", &query)
            .await?
            .json()?;
        let hits = page
            .as_array()
            .ok_or_else(|| Error::Protocol("the connection list is not an array".into()))?;
        for hit in hits {
            listing.item(out, hit, |hit| {
                vec![
                    text(&hit["id"]),
                    text(&hit["state"]["value"]),
                    text(&hit["type"]),
                    text(&hit["identity"]["id"]),
                    text(&hit["entitlement"]["name"]),
                    when(hit["jit"]["expiration"].as_str()),
                ]
            })?;
        }
        shown += hits.len() as u64;
        match hits.last() {
            Some(last) if hits.len() as u64 == want => after = Some(search_after(&sorters, last)),
            _ => break,
        }
    }
    listing.end(out)?;
    Ok(Outcome::Ok)
}

/// `jitflow connection show`.
pub async fn connection_show(
    client: &Client,
    id: &str,
    json_out: bool,
    out: &mut impl Write,
) -> Result<Outcome, Error> {
    let path = format!("/jitflow/v1/connections/{}", segment(id)?);
    let detail = client.get(&path, &[]).await?.json()?;
    if json_out {
        crate::output::json(out, &detail)?;
        return Ok(Outcome::Ok);
    }
    let c = &detail["connection"];
    let w = |out: &mut dyn Write, k: &str, v: String| field(out, 14, k, v);
    w(out, "connection", text(&c["id"]))?;
    w(
        out,
        "state",
        format!(
            "{} since {}",
            text(&c["state"]["value"]),
            when(c["state"]["changed"].as_str())
        ),
    )?;
    w(out, "type", text(&c["type"]))?;
    w(
        out,
        "identity",
        format!(
            "{} ({})",
            text(&c["identity"]["id"]),
            text(&c["identity"]["name"])
        ),
    )?;
    w(
        out,
        "account",
        format!(
            "{} ({})",
            text(&c["account"]["id"]),
            text(&c["account"]["name"])
        ),
    )?;
    w(
        out,
        "entitlement",
        format!(
            "{} ({})",
            text(&c["entitlement"]["id"]),
            text(&c["entitlement"]["name"])
        ),
    )?;
    w(
        out,
        "source",
        format!(
            "{} ({})",
            text(&c["source"]["id"]),
            text(&c["source"]["name"])
        ),
    )?;
    let a = &detail["activation"];
    if a.is_null() {
        w(out, "activation", "none".to_owned())?;
    } else {
        let running = if detail["running"] == json!(true) {
            "running"
        } else {
            "ended"
        };
        w(
            out,
            "activation",
            format!("{} {} ({running})", text(&a["id"]), text(&a["status"])),
        )?;
        w(
            out,
            "  requested",
            format!(
                "{} by {}",
                when(a["requestedAt"].as_str()),
                text(&a["requestedBy"])
            ),
        )?;
        w(
            out,
            "  period",
            format!(
                "{} min + {} min in {} extensions",
                text(&a["periodMins"]),
                text(&a["extendedByMins"]),
                text(&a["extensions"])
            ),
        )?;
        w(out, "  provisioned", when(a["provisionedAt"].as_str()))?;
        w(out, "  expires", when(a["expiresAt"].as_str()))?;
        w(out, "  ended", when(a["endedAt"].as_str()))?;
        if !a["lastError"].is_null() {
            w(out, "  last error", text(&a["lastError"]))?;
        }
        if a["stuck"] == json!(true) {
            w(
                out,
                "  STUCK",
                "revoke tries reached the stuck bound".to_owned(),
            )?;
        }
    }
    writeln!(out).map_err(Error::Output)?;
    let timers = Table::new(out, &[("TIMER", 14), ("DUE", 0)])?;
    for t in detail["timers"].as_array().into_iter().flatten() {
        timers.row(out, &[text(&t["kind"]), when(t["due"].as_str())])?;
    }
    writeln!(out).map_err(Error::Output)?;
    let effects = Table::new(out, &[("EFFECT", 16), ("TRY", 4), ("IDEMPOTENCY KEY", 0)])?;
    for e in detail["pendingEffects"].as_array().into_iter().flatten() {
        effects.row(
            out,
            &[
                text(&e["kind"]),
                text(&e["attempt"]),
                text(&e["idempotencyKey"]),
            ],
        )?;
    }
    Ok(Outcome::Ok)
}

/// A path segment: an id made of the characters ids may hold, so it cannot change the path.
fn segment(id: &str) -> Result<&str, Error> {
    let id = id.trim();
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(Error::Usage(format!(
            "`{}` is not an id (a UUID, with or without hyphens)",
            id.chars().take(64).collect::<String>()
        )));
    }
    Ok(id)
}

/// A short summary of an event's change: the variant's fields that say most, then what the
/// client sent with the signal (`requestOrigin`, `metaData` as compact JSON), if anything.
fn detail(event: &Value) -> String {
    let change = &event["event"]["event"]["change"];
    let mut parts: Vec<String> = match change {
        Value::Object(map) => map
            .values()
            .next()
            .and_then(Value::as_object)
            .map(|fields| {
                fields
                    .iter()
                    .filter(|(_, v)| !v.is_object() && !v.is_array())
                    .map(|(k, v)| format!("{k}={}", text(v)))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    for field in ["requestOrigin", "metaData"] {
        if let Some(value) = event.get(field).filter(|v| !v.is_null()) {
            parts.push(format!("{field}={}", text(value)));
        }
    }
    parts.join(" ")
}

/// `jitflow activation show`: every event, paged to the end.
pub async fn activation_show(
    client: &Client,
    id: &str,
    json_out: bool,
    out: &mut impl Write,
) -> Result<Outcome, Error> {
    let path = format!("/jitflow/v1/activations/{}/events", segment(id)?);
    let mut listing = Listing::start(
        out,
        json_out,
        &[
            ("#", 3),
            ("SEQUENCE", 9),
            ("AT", 24),
            ("ACTOR", 12),
            ("CHANGE", 22),
            ("DETAIL", 0),
        ],
    )?;
    let mut after = 0u64;
    loop {
        let answer = client
            .get(
                &path,
                &[
                    ("after", after.to_string()),
                    ("limit", STREAM_PAGE.to_string()),
                ],
            )
            .await?;
        let page = answer.json()?;
        let events = page
            .as_array()
            .ok_or_else(|| Error::Protocol("the event page is not an array".into()))?;
        for e in events {
            listing.item(out, e, |e| {
                vec![
                    text(&e["version"]),
                    text(&e["sequence"]),
                    text(&e["at"]),
                    text(&e["actor"]),
                    text(&e["change"]),
                    detail(e),
                ]
            })?;
        }
        let next = answer.number("x-next-after")?;
        if events.len() < STREAM_PAGE as usize || next == after {
            break;
        }
        after = next;
    }
    listing.end(out)?;
    Ok(Outcome::Ok)
}

/// The signals: `activate`, `extend`, `deactivate`.
pub async fn signal(
    client: &Client,
    path: &str,
    body: Value,
    json_out: bool,
    out: &mut impl Write,
) -> Result<Outcome, Error> {
    let answer = client.post(path, &body).await?.json()?;
    if json_out {
        crate::output::json(out, &answer)?;
    } else {
        writeln!(
            out,
            "{}: activation {} of connection {} is {}",
            path.rsplit('/').next().unwrap_or(path),
            text(&answer["activationId"]),
            text(&answer["connectionId"]),
            text(&answer["status"]),
        )
        .map_err(Error::Output)?;
    }
    Ok(Outcome::Ok)
}

fn read_cursor(tail: &Tail) -> Result<u64, Error> {
    if let Some(after) = tail.after {
        return Ok(after);
    }
    let Some(path) = &tail.cursor_file else {
        return Ok(0);
    };
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map_err(|_| {
            Error::Usage(format!(
                "the cursor file {} does not hold a sequence number",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::File {
            path: path.clone(),
            source: e,
        }),
    }
}

/// Saves the cursor through a temporary file and a rename, so a crash leaves the old or the new.
fn save_cursor(tail: &Tail, after: u64) -> Result<(), Error> {
    let Some(path) = &tail.cursor_file else {
        return Ok(());
    };
    let tmp = path.with_extension("tmp");
    let io = |source| Error::File {
        path: path.clone(),
        source,
    };
    std::fs::write(&tmp, format!("{after}\n")).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// `jitflow events tail`: the audit export followed page by page; at the end of the stream it
/// waits `interval` and asks again, until Ctrl-C (or, with `--no-follow`, it stops).
pub async fn events_tail(
    client: &Client,
    tail: &Tail,
    json_out: bool,
    interrupt: &Interrupt,
    out: &mut impl Write,
) -> Result<Outcome, Error> {
    let mut after = read_cursor(tail)?;
    let table = if json_out {
        None
    } else {
        Some(Table::new(
            out,
            &[("SEQUENCE", 9), ("AT", 24), ("STREAM", 48), ("CHANGE", 0)],
        )?)
    };
    loop {
        if interrupt.is_set() {
            eprintln!("stopped after sequence {after}; resume with --after {after}");
            return Ok(Outcome::Interrupted);
        }
        let answer = client
            .get(
                "/jitflow/v1/events",
                &[
                    ("after", after.to_string()),
                    ("limit", EXPORT_PAGE.to_string()),
                ],
            )
            .await?;
        for line in answer.body.lines().filter(|l| !l.is_empty()) {
            match &table {
                None => writeln!(out, "{line}").map_err(Error::Output)?,
                Some(t) => {
                    let e: Value = serde_json::from_str(line)
                        .map_err(|e| Error::Protocol(format!("an export line is not JSON: {e}")))?;
                    let change = match &e["event"]["change"] {
                        Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
                        Value::Null => e["kind"].as_str().unwrap_or_default().to_owned(),
                        other => text(other),
                    };
                    t.row(
                        out,
                        &[
                            text(&e["sequence"]),
                            text(&e["at"]),
                            format!("{} {}", text(&e["stream"]), text(&e["streamId"])),
                            change,
                        ],
                    )?;
                }
            }
        }
        out.flush().map_err(Error::Output)?;
        let next = answer.number("x-next-after")?;
        if next != after {
            after = next;
            save_cursor(tail, after)?;
            continue;
        }
        if tail.no_follow {
            return Ok(Outcome::Ok);
        }
        tokio::time::sleep(tail.interval).await;
    }
}

/// `jitflow approvals list`: every pending approval, paged to the end.
pub async fn approvals_list(
    client: &Client,
    args: &ApprovalsList,
    json_out: bool,
    out: &mut impl Write,
) -> Result<Outcome, Error> {
    let mut listing = Listing::start(
        out,
        json_out,
        &[
            ("APPROVAL", 36),
            ("REQUESTED FOR", 16),
            ("REQUESTER", 16),
            ("ITEM", 24),
            ("CREATED", 0),
        ],
    )?;
    let mut offset = 0u64;
    loop {
        let mut query = vec![
            ("limit", APPROVAL_PAGE.to_string()),
            ("offset", offset.to_string()),
            ("sorters", "created,id".to_owned()),
        ];
        if let Some(owner) = &args.owner {
            query.push(("owner-id", owner.clone()));
        }
        let page = client
            .get("/access-request-approvals/v1/pending", &query)
            .await?
            .json()?;
        let rows = page
            .as_array()
            .ok_or_else(|| Error::Protocol("the approval list is not an array".into()))?;
        for r in rows {
            listing.item(out, r, |r| {
                vec![
                    text(&r["id"]),
                    text(&r["requestedFor"]["id"]),
                    text(&r["requester"]["id"]),
                    text(&r["name"]),
                    when(r["created"].as_str()),
                ]
            })?;
        }
        offset += rows.len() as u64;
        if (rows.len() as u64) < APPROVAL_PAGE {
            break;
        }
    }
    listing.end(out)?;
    Ok(Outcome::Ok)
}

/// `jitflow approvals approve|reject`.
pub async fn decide(
    client: &Client,
    args: &Decide,
    verb: &str,
    json_out: bool,
    out: &mut impl Write,
) -> Result<Outcome, Error> {
    let path = format!("/access-request-approvals/v1/{}/{verb}", segment(&args.id)?);
    let body = match &args.comment {
        Some(c) => json!({ "comment": c }),
        None => json!({}),
    };
    let answer = client.post(&path, &body).await?;
    if json_out {
        let value = if answer.body.trim().is_empty() {
            json!({"id": args.id, "decision": verb})
        } else {
            answer.json()?
        };
        crate::output::json(out, &value)?;
    } else {
        writeln!(out, "approval {}: {verb} accepted", args.id.trim()).map_err(Error::Output)?;
    }
    Ok(Outcome::Ok)
}
