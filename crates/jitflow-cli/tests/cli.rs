//! The `jitflow` binary end to end: online commands against a shim started by the test on an
//! ephemeral port (the shim's own test harness, on a manual clock), offline commands on the
//! store the engine left, a difference planted for `verify`, and the refusal while an engine
//! holds the file.

#[path = "../../../examples/http-shim/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use jitflow_core::connection::ConnectionState;
use jitflow_core::id::{IdentityId, TenantId};
use jitflow_shim::auth::Level;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_jitflow");

/// What a run of the binary left.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }

    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `jitflow args` with `token` in `JITFLOW_TOKEN` (none: unset), off the async workers.
async fn jitflow(base: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("JITFLOW_URL", base)
        .env_remove("JITFLOW_TOKEN")
        .env_remove("JITFLOW_DATA_DIR");
    if let Some(t) = token {
        command.env("JITFLOW_TOKEN", t);
    }
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs an offline command on `dir`.
async fn offline(dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["--data-dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    jitflow("http://127.0.0.1:9", None, &all).await
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_listed_filtered_and_paged_to_the_end() {
    let h = Harness::new().await;
    h.seed().await;
    let admin = h.org_admin();
    let base = h.base.clone();
    let t = Some(admin.as_str());

    let table = jitflow(
        &base,
        t,
        &[
            "connections",
            "list",
            "--filter",
            r#"identity.id eq "alice""#,
        ],
    )
    .await
    .ok();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("ID "), "{}", table.stdout);
    assert_eq!(lines.len(), 3, "{}", table.stdout);
    assert!(table.stdout.contains(ALICE_CONN) && table.stdout.contains(STANDING_CONN));
    assert!(!table.stdout.contains(BOB_CONN));
    assert!(table.stdout.contains("AVAILABLE"));

    // More than one page (250): every connection once, in the order asked for.
    let mut more = register_many(&h, 260, "carol").await;
    more.extend([ALICE_CONN, BOB_CONN, STANDING_CONN].map(String::from));
    more.sort();
    let all = jitflow(&base, t, &["connections", "list", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(ids(&all), more);
    let by_identity = jitflow(
        &base,
        t,
        &["connections", "list", "--json", "--sort", "-identity.id"],
    )
    .await
    .ok()
    .json();
    let got = ids(&by_identity);
    assert_eq!(got.len(), more.len());
    let identities: Vec<&str> = by_identity
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["identity"]["id"].as_str().unwrap())
        .collect();
    let mut sorted = identities.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(identities, sorted);
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique, more, "a page repeated or skipped a connection");
    let limited = jitflow(&base, t, &["connections", "list", "--json", "--limit", "3"])
        .await
        .ok();
    assert_eq!(ids(&limited.json()), more[..3]);

    // A filter that does not parse: the API's reason, exit code 1.
    let bad = jitflow(
        &base,
        t,
        &["connections", "list", "--filter", "state.value eq"],
    )
    .await;
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("400"), "{}", bad.stderr);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_show_and_history_through_the_cli() {
    let h = Harness::new().await;
    h.seed().await;
    let admin = h.org_admin();
    let base = h.base.clone();
    let t = Some(admin.as_str());

    let activated = jitflow(
        &base,
        t,
        &["activate", ALICE_CONN, "--minutes", "30", "--json"],
    )
    .await
    .ok()
    .json();
    let activation = activated["activationId"].as_str().unwrap().to_owned();
    assert_eq!(activated["connectionId"], ALICE_CONN);
    h.wait_state(ALICE_CONN, ConnectionState::Active).await;

    let shown = jitflow(&base, t, &["connection", "show", ALICE_CONN])
        .await
        .ok();
    assert!(shown.stdout.contains("ACTIVE since"), "{}", shown.stdout);
    assert!(
        shown
            .stdout
            .contains(&format!("{activation} PROVISIONED (running)")),
        "{}",
        shown.stdout
    );
    assert!(shown.stdout.contains("EXPIRY"), "{}", shown.stdout);
    // Relative times are the machine's; the engine runs on a manual clock.
    assert!(
        shown
            .stdout
            .contains("expires     2026-11-23T09:30:00.000Z ("),
        "{}",
        shown.stdout
    );
    let extended = jitflow(&base, t, &["extend", ALICE_CONN, "--minutes", "15"])
        .await
        .ok();
    assert!(extended.stdout.contains(&activation), "{}", extended.stdout);
    let detail = jitflow(&base, t, &["connection", "show", ALICE_CONN, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(detail["activation"]["extendedByMins"], 15);
    assert_eq!(detail["pendingEffects"], json!([]));

    // A newer client deactivates, with SailPoint's requestOrigin and metaData: the history's
    // DETAIL shows them on the signal's event.
    h.expect(
        202,
        "POST",
        "/jit-activations/v1/deactivate",
        Some(&admin),
        Some(json!({
            "connectionId": ALICE_CONN,
            "requestOrigin": "ops-portal",
            "metaData": {"ticket": "CHG-7"},
        })),
    )
    .await;
    h.wait_state(ALICE_CONN, ConnectionState::Available).await;

    let history = jitflow(&base, t, &["activation", "show", &activation])
        .await
        .ok();
    let deactivated = history
        .stdout
        .lines()
        .find(|l| l.contains("DeactivationRequested"))
        .unwrap_or_else(|| panic!("{}", history.stdout));
    assert!(
        deactivated.ends_with(r#"requestOrigin=ops-portal metaData={"ticket":"CHG-7"}"#),
        "{}",
        history.stdout
    );
    assert_eq!(
        history.stdout.matches("requestOrigin=").count(),
        1,
        "only the signal that sent it: {}",
        history.stdout
    );
    let changes: Vec<&str> = history
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(4).unwrap())
        .collect();
    assert_eq!(
        changes,
        [
            "ActivationRequested",
            "ValidationPassed",
            "Provisioned",
            "Extended",
            "DeactivationRequested",
            "Revoked"
        ],
        "{}",
        history.stdout
    );
    let events = jitflow(&base, t, &["activation", "show", &activation, "--json"])
        .await
        .ok()
        .json();
    let versions: Vec<u64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (1..=6).collect::<Vec<_>>());

    // The API's rules apply to the token: alice cannot touch bob's connection (not found: the
    // activate operation declares no 404, so the shim answers 400 with detail code
    // `400.1.404 Not Found`), a token
    // without the history scope cannot read events (403); no token, no call.
    let alice = h.alice();
    let refused = jitflow(
        &base,
        Some(&alice),
        &["activate", BOB_CONN, "--minutes", "5"],
    )
    .await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("400") && refused.stderr.contains("not found"),
        "{}",
        refused.stderr
    );
    let refused = jitflow(&base, Some(&alice), &["activation", "show", &activation]).await;
    assert!(
        refused.code == 1 && refused.stderr.contains("403"),
        "{}",
        refused.stderr
    );
    let none = jitflow(&base, None, &["connection", "show", ALICE_CONN]).await;
    assert_eq!(none.code, 1);
    assert!(none.stderr.contains("JITFLOW_TOKEN"), "{}", none.stderr);
    let usage = jitflow(&base, t, &["connection", "show", "../../metrics"]).await;
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    let usage = jitflow(&base, t, &["activate"]).await;
    assert_eq!(usage.code, 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_resumes_from_its_cursor_and_stops_on_ctrl_c() {
    let h = Harness::new().await;
    h.seed().await;
    let admin = h.org_admin();
    let base = h.base.clone();
    let t = Some(admin.as_str());
    let dir = tempfile::tempdir().unwrap();
    let cursor = dir.path().join("cursor");
    let cursor_arg = cursor.to_str().unwrap();

    let first = jitflow(
        &base,
        t,
        &[
            "events",
            "tail",
            "--no-follow",
            "--json",
            "--cursor-file",
            cursor_arg,
        ],
    )
    .await
    .ok();
    let lines: Vec<Value> = first
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = h.engine().last_sequence().unwrap();
    assert_eq!(lines.len() as u64, last, "every event of the tenant");
    assert!(lines.iter().all(|l| l["tenant"] == TENANT));
    assert_eq!(
        std::fs::read_to_string(&cursor).unwrap().trim(),
        last.to_string()
    );

    // Resumed from the cursor: only what committed since.
    jitflow(&base, t, &["activate", ALICE_CONN, "--minutes", "30"])
        .await
        .ok();
    h.wait_state(ALICE_CONN, ConnectionState::Active).await;
    let second = jitflow(
        &base,
        t,
        &["events", "tail", "--no-follow", "--cursor-file", cursor_arg],
    )
    .await
    .ok();
    let rows: Vec<&str> = second.stdout.lines().skip(1).collect();
    assert!(!rows.is_empty());
    assert!(
        rows[0].starts_with(&(last + 1).to_string()),
        "{}",
        second.stdout
    );
    assert!(second.stdout.contains("ActivationRequested") && second.stdout.contains("Provisioned"));

    // Following: a new event shows up as it commits; Ctrl-C stops it cleanly with the cursor.
    let end = h.engine().last_sequence().unwrap().to_string();
    let mut child = Command::new(BIN)
        .args([
            "events",
            "tail",
            "--json",
            "--interval",
            "50ms",
            "--after",
            &end,
        ])
        .env("JITFLOW_URL", &base)
        .env("JITFLOW_TOKEN", &admin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    jitflow(&base, t, &["deactivate", ALICE_CONN]).await.ok();
    let stdout = child.stdout.take().unwrap();
    // The reader stays open until the child has exited: a closed pipe would be its error.
    let (reader, line) = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        (reader, line)
    })
    .await
    .unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["event"]["change"], "DeactivationRequested", "{line}");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    drop(reader);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("resume with --after"), "{stderr}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_listed_approved_and_rejected() {
    let config = jitflow::Config {
        approvers: vec![IdentityId::parse("bob").unwrap()],
        approval_timeout: Duration::from_secs(24 * 3600),
        ..jitflow::Config::default()
    };
    let h = Harness::with_target(Target {
        config: Some(config),
        ..Target::default()
    })
    .await;
    let base = h.base.clone();
    let alice = h.token(
        TENANT,
        "alice",
        &["idn:access-request-self:manage"],
        &[Level::User],
    );
    let bob = h.token(
        TENANT,
        "bob",
        &[
            "idn:access-request-approvals:read",
            "idn:access-request-approvals:manage",
        ],
        &[Level::User],
    );
    for what in ["finance-read", "payroll-read"] {
        h.expect(
            202,
            "POST",
            "/access-requests/v1",
            Some(&alice),
            Some(
                json!({"requestedFor": ["alice"], "requestType": "GRANT_ACCESS",
                "requestedItems": [{"type": "ENTITLEMENT", "id": what, "comment": "audit"}]}),
            ),
        )
        .await;
    }
    let listed = jitflow(&base, Some(&bob), &["approvals", "list", "--json"])
        .await
        .ok()
        .json();
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{listed}");
    let approval = |what: &str| {
        rows.iter().find(|r| r["name"] == what).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (finance, payroll) = (approval("finance-read"), approval("payroll-read"));
    let table = jitflow(&base, Some(&bob), &["approvals", "list"])
        .await
        .ok();
    assert!(
        table.stdout.contains(&finance) && table.stdout.contains("alice"),
        "{}",
        table.stdout
    );

    jitflow(
        &base,
        Some(&bob),
        &["approvals", "approve", &finance, "--comment", "ok"],
    )
    .await
    .ok();
    jitflow(
        &base,
        Some(&bob),
        &["approvals", "reject", &payroll, "--comment", "not now"],
    )
    .await
    .ok();
    let after = jitflow(&base, Some(&bob), &["approvals", "list", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(after, json!([]));
    // Deciding twice is the API's 400; alice is no approver of anything.
    let again = jitflow(&base, Some(&bob), &["approvals", "approve", &finance]).await;
    assert!(
        again.code == 1 && again.stderr.contains("400"),
        "{}",
        again.stderr
    );
    let alice_list = jitflow(&base, Some(&alice), &["approvals", "list"]).await;
    assert!(
        alice_list.code == 1 && alice_list.stderr.contains("403"),
        "{}",
        alice_list.stderr
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_commands_on_a_stopped_engines_store() {
    let mut h = Harness::new().await;
    h.seed().await;
    h.expect(
        202,
        "POST",
        "/jit-activations/v1/activate",
        Some(&h.alice()),
        Some(json!({"connectionId": ALICE_CONN, "activationPeriodMins": 30})),
    )
    .await;
    h.wait_state(ALICE_CONN, ConnectionState::Active).await;
    let events = h.engine().last_sequence().unwrap();

    // While the engine holds the file: refused, with the reason, and the file untouched.
    for command in [
        &["verify"][..],
        &["stats"],
        &["export"],
        &["compact"],
        &["upgrade", "--dry-run"],
    ] {
        let busy = offline(h.dir.path(), command).await;
        assert_eq!(busy.code, 1, "{command:?}: {}", busy.stderr);
        assert!(
            busy.stderr.contains("in use by a running engine"),
            "{command:?}: {}",
            busy.stderr
        );
    }
    // Keep the data directory past the harness, and stop the engine.
    let dir = std::mem::replace(&mut h.dir, tempfile::tempdir().unwrap());
    h.stop().await;
    let dir = dir.path();

    let verify = offline(dir, &["verify"]).await.ok();
    assert!(verify.stdout.contains("clean"), "{}", verify.stdout);
    assert!(
        verify.stdout.contains(&format!("replayed {events} events")),
        "{}",
        verify.stdout
    );

    let stats = offline(dir, &["stats", "--json"]).await.ok().json();
    assert_eq!(stats["events"], events);
    assert_eq!(stats["tenants"][0]["tenant"], TENANT);
    assert_eq!(stats["tenants"][0]["connections"], 3);
    assert_eq!(
        stats["tenants"][0]["byState"],
        json!({"ACTIVE": 2, "AVAILABLE": 1})
    );
    assert_eq!(stats["timersPending"], 2, "expiry and warning");
    assert!(stats["fileBytes"].as_u64().unwrap() > 0);
    let table = offline(dir, &["stats"]).await.ok();
    assert!(table.stdout.contains("timers pending"), "{}", table.stdout);

    let export = offline(dir, &["export"]).await.ok();
    let lines: Vec<Value> = export
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sequences: Vec<u64> = lines
        .iter()
        .map(|l| l["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=events).collect::<Vec<_>>());
    let tail = offline(dir, &["export", "--from", "3"]).await.ok();
    assert_eq!(tail.stdout.lines().count() as u64, events - 2);
    assert!(
        tail.stdout.starts_with(r#"{"sequence":3,"#),
        "{}",
        tail.stdout
    );

    // Ctrl-C (the flag the binary's handler sets) stops export and stats between pages: the
    // outcome is exit code 130, and no line is cut.
    let stop = jitflow_cli::progress::Interrupt::default();
    stop.set();
    let mut out = Vec::new();
    let stopped = jitflow_cli::offline::export(dir, 1, &stop, &mut out).unwrap();
    assert_eq!(stopped, jitflow_cli::Outcome::Interrupted);
    assert_eq!(stopped.code(), 130);
    assert!(out.is_empty());
    let stopped = jitflow_cli::offline::stats(dir, true, &stop, &mut out).unwrap();
    assert_eq!(stopped, jitflow_cli::Outcome::Interrupted);
    assert!(out.is_empty(), "no partial report");

    let upgrade = offline(dir, &["upgrade", "--dry-run"]).await.ok();
    assert!(
        upgrade.stdout.contains("nothing to do"),
        "{}",
        upgrade.stdout
    );
    let compact = offline(dir, &["compact", "--json"]).await.ok().json();
    assert!(compact["bytesAfter"].as_u64().unwrap() <= compact["bytesBefore"].as_u64().unwrap());
    offline(dir, &["verify"]).await.ok();

    // A file of format version 2: refused by all but `upgrade`, whose dry run changes nothing.
    {
        let store =
            jitflow_store::Store::open(dir.join("jitflow.redb"), Default::default()).unwrap();
        jitflow_store::testing::downgrade_to_version_2(&store).unwrap();
    }
    for _ in 0..2 {
        let old = offline(dir, &["verify"]).await;
        assert_eq!(old.code, 1, "{}", old.stdout);
        assert!(
            old.stderr.contains("has format version 2") && old.stderr.contains("jitflow upgrade"),
            "{}",
            old.stderr
        );
        let dry = offline(dir, &["upgrade", "--dry-run"]).await.ok();
        assert!(
            dry.stdout
                .contains("would upgrade from format version 2 to 8")
                && dry.stdout.contains("2 -> 3: ")
                && dry.stdout.contains("3 -> 4: ")
                && dry.stdout.contains("4 -> 5: ")
                && dry.stdout.contains("5 -> 6: ")
                && dry.stdout.contains("6 -> 7: ")
                && dry.stdout.contains("7 -> 8: ")
                && dry.stdout.contains("dry run: nothing changed"),
            "{}",
            dry.stdout
        );
    }
    let upgraded = offline(dir, &["upgrade", "--json"]).await.ok().json();
    assert_eq!(upgraded["from"], 2);
    assert_eq!(
        upgraded["version"],
        jitflow_store::open::FILE_FORMAT_VERSION
    );
    offline(dir, &["verify"]).await.ok();

    // A difference planted behind the log's back: listed, exit code 3.
    {
        let store =
            jitflow_store::Store::open(dir.join("jitflow.redb"), Default::default()).unwrap();
        let tenant = TenantId::parse(TENANT).unwrap();
        let id = jitflow_core::id::ConnectionId::parse(ALICE_CONN).unwrap();
        let mut c = store
            .reader()
            .unwrap()
            .connection(&tenant, id)
            .unwrap()
            .unwrap();
        c.spec.identity_name = "Mallory".into();
        jitflow_store::testing::overwrite_connection(&store, &tenant, &c).unwrap();
    }
    let found = offline(dir, &["verify"]).await;
    assert_eq!(found.code, 3, "{}\n{}", found.stdout, found.stderr);
    assert!(found.stdout.contains("1 differences:"), "{}", found.stdout);
    assert!(found.stdout.contains(ALICE_CONN), "{}", found.stdout);
    let report = offline(dir, &["verify", "--json"]).await;
    assert_eq!(report.code, 3);
    let report = report.json();
    assert_eq!(report["clean"], false);
    assert_eq!(report["differences"].as_array().unwrap().len(), 1);

    let missing = offline(&dir.join("nope"), &["verify"]).await;
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("no store at"), "{}", missing.stderr);
    assert!(!dir.join("nope").exists(), "nothing was created");
}

#[tokio::test]
async fn completions_are_generated() {
    let bash = jitflow("http://127.0.0.1:9", None, &["completions", "bash"])
        .await
        .ok();
    assert!(bash.stdout.contains("_jitflow()"), "{}", bash.stdout);
    assert!(bash.stdout.contains("connections"));
    let zsh = jitflow("http://127.0.0.1:9", None, &["completions", "zsh"])
        .await
        .ok();
    assert!(zsh.stdout.starts_with("#compdef jitflow"), "{}", zsh.stdout);
}
