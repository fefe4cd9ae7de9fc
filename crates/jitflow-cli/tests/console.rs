//! The web console in a real headless Chromium, driven through chromedriver (WebDriver, with
//! fantoccini): sign-in, the connections page with a filter and its error, a connection's page
//! where an activation is started, its timeline and ACTIVE badge, and EXPIRED appearing without
//! a reload once the engine's manual clock passes the expiry. A screenshot of each page is
//! saved under `target/console-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the
//! test fails under CI (`CI=true`) and is skipped, with the reason printed, elsewhere.

#[path = "../../../examples/http-shim/tests/common/mod.rs"]
mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// How many times a condition on the page is checked, 100 ms apart, before the test fails:
/// the page polls its events every second, so this leaves it many polls.
const TRIES: u32 = 300;

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// chromedriver started by the test, stopped (by its pid) when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_driver(path: &Path) -> Driver {
    let port = free_port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver { child, port };
    // Ready when it accepts connections.
    for _ in 0..TRIES {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver never listened on port {port}");
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

async fn text(c: &Client, css: &str) -> Option<String> {
    let e = c.find(Locator::Css(css)).await.ok()?;
    e.text().await.ok()
}

/// Waits until `check` holds, or fails with what the page shows (and a screenshot).
async fn until<F, Fut>(c: &Client, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..TRIES {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shot(c, "failure").await;
    let body = text(c, "body").await.unwrap_or_default();
    panic!("the page never showed {what}; it shows:\n{body}");
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn type_in(c: &Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

async fn rows(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.map_or(0, |r| r.len())
}

async fn displayed(c: &Client, css: &str) -> bool {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

async fn badge_is(c: &Client, state: &str) -> bool {
    text(c, "#state-badge").await.as_deref() == Some(state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let (Some(chromium), Some(chromedriver)) = (on_path("chromium"), on_path("chromedriver"))
    else {
        let reason = "chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{reason}; .ci/run installs them");
        }
        eprintln!("skipped: {reason}");
        return;
    };
    // Access requests wait for the admin's approval, so the approvals page has one to decide.
    let config = jitflow::Config {
        approvers: vec![jitflow_core::id::IdentityId::parse("admin").unwrap()],
        approval_timeout: Duration::from_secs(24 * 3600),
        ..jitflow::Config::default()
    };
    let h = Harness::with_target(Target {
        config: Some(config),
        ..Target::default()
    })
    .await;
    h.seed().await;
    let alice = h.token(
        TENANT,
        "alice",
        &["idn:access-request-self:manage"],
        &[jitflow_shim::auth::Level::User],
    );
    h.expect(
        202,
        "POST",
        "/access-requests/v1",
        Some(&alice),
        Some(
            json!({"requestedFor": ["alice"], "requestType": "GRANT_ACCESS",
            "requestedItems": [{"type": "ENTITLEMENT", "id": "finance-read", "comment": "audit"}]}),
        ),
    )
    .await;
    let mut scopes = ORG_ADMIN_SCOPES.to_vec();
    scopes.extend([
        "idn:access-request-approvals:read",
        "idn:access-request-approvals:manage",
    ]);
    let token = h.token(
        TENANT,
        "admin",
        &scopes,
        &[jitflow_shim::auth::Level::OrgAdmin],
    );
    let driver = start_driver(&chromedriver).await;
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session");
    // The scenario runs in its own task so that a failure still closes the browser.
    let scenario = tokio::spawn(scenario(
        client.clone(),
        h.base.clone(),
        token,
        h.clock.clone(),
    ));
    let outcome = scenario.await;
    let _ = client.close().await;
    drop(driver);
    h.stop().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn scenario(c: Client, base: String, token: String, clock: jitflow::clock::ManualClock) {
    let console = format!("{base}/console/");

    // No token: the sign-in box, and nothing else.
    c.goto(&console).await.unwrap();
    until(&c, "the sign-in box", || displayed(&c, "#signin")).await;
    assert!(!displayed(&c, "#page").await);
    shot(&c, "signin").await;

    // Signed in: the connections page, every connection with its state badge.
    type_in(&c, "#token-input", &token).await;
    click(&c, "#signin-button").await;
    until(&c, "three connections", || async {
        rows(&c, "#connections tbody tr").await == 3
    })
    .await;
    assert_eq!(
        rows(&c, "#connections tbody .badge.state-AVAILABLE").await,
        2
    );
    shot(&c, "connections").await;

    // A filter that does not parse: its error under the box, no rows.
    type_in(&c, "#filter", "state.value eq").await;
    click(&c, "#apply").await;
    until(&c, "the filter's error", || displayed(&c, "#filter-error")).await;
    let error = text(&c, "#filter-error").await.unwrap();
    assert!(error.contains("filter"), "{error}");
    assert_eq!(rows(&c, "#connections tbody tr").await, 0);
    shot(&c, "filter-error").await;

    // A valid filter: alice's two connections.
    type_in(&c, "#filter", r#"identity.id eq "alice""#).await;
    click(&c, "#apply").await;
    until(&c, "alice's two connections", || async {
        rows(&c, "#connections tbody tr").await == 2 && !displayed(&c, "#filter-error").await
    })
    .await;
    assert_eq!(
        rows(&c, &format!("#connections tr[data-id='{BOB_CONN}']")).await,
        0
    );

    // Her JIT connection's page; activate it through the page.
    click(&c, &format!("tr[data-id='{ALICE_CONN}'] a.conn-link")).await;
    until(&c, "the AVAILABLE badge", || badge_is(&c, "AVAILABLE")).await;
    type_in(&c, "#minutes", "30").await;
    click(&c, "#activate").await;
    until(&c, "the ACTIVE badge", || badge_is(&c, "ACTIVE")).await;
    until(&c, "the timeline bar up to the expiry", || async {
        match c.find(Locator::Css("#timeline-bar")).await {
            Ok(bar) => bar
                .attr("data-to")
                .await
                .ok()
                .flatten()
                .is_some_and(|to| to.ends_with("Z")),
            Err(_) => false,
        }
    })
    .await;
    // The page reads the events, then the record: a Provisioned event committed between the
    // two shows on the next poll (the record's bar can come first).
    until(&c, "the provisioned mark", || async {
        rows(&c, "#timeline line.mark.provisioned").await == 1
    })
    .await;
    let bar = c.find(Locator::Css("#timeline-bar")).await.unwrap();
    let (from, to) = (
        bar.attr("data-from").await.unwrap().unwrap(),
        bar.attr("data-to").await.unwrap().unwrap(),
    );
    let span = jitflow_core::time::Timestamp::parse_rfc3339(&to)
        .unwrap()
        .as_millis()
        - jitflow_core::time::Timestamp::parse_rfc3339(&from)
            .unwrap()
            .as_millis();
    assert_eq!(
        span,
        30 * 60_000,
        "the bar runs from the request to the 30 min expiry"
    );
    shot(&c, "connection-active").await;

    // Ten minutes later it is extended by 15 through the page; past the warning the page marks
    // it, and past the expiry EXPIRED shows up, all without a reload.
    c.execute("window.jitflowNoReload = 42; return null;", vec![])
        .await
        .unwrap();
    clock.advance(Duration::from_secs(10 * 60));
    type_in(&c, "#minutes", "15").await;
    click(&c, "#extend").await;
    until(&c, "the Extended event", || async {
        rows(&c, "#events tr[data-change='Extended']").await == 1
    })
    .await;
    until(&c, "the bar up to the new expiry", || async {
        let bar = c.find(Locator::Css("#timeline-bar")).await.unwrap();
        bar.attr("data-to")
            .await
            .unwrap()
            .is_some_and(|to| to.starts_with("2026-11-23T09:45:00"))
    })
    .await;
    assert_eq!(rows(&c, "#timeline line.mark.extend").await, 1);
    clock.advance(Duration::from_secs(31 * 60));
    until(&c, "the warning", || async {
        rows(
            &c,
            "#timeline line.mark.warning[data-change='ExpiryWarned']",
        )
        .await
            == 1
    })
    .await;
    assert!(badge_is(&c, "ACTIVE").await);
    clock.advance(Duration::from_secs(5 * 60));
    until(&c, "the EXPIRED badge", || badge_is(&c, "EXPIRED")).await;
    until(&c, "the Revoked event", || async {
        rows(&c, "#events tr[data-change='Revoked']").await == 1
    })
    .await;
    assert!(rows(&c, "#events tr[data-change='Expired']").await == 1);
    assert!(rows(&c, "#timeline line.mark.deprovision").await >= 1);
    let marker = c
        .execute("return window.jitflowNoReload;", vec![])
        .await
        .unwrap();
    assert_eq!(marker, json!(42), "the page was reloaded");
    shot(&c, "connection-expired").await;

    // The other pages answer, signed in.
    c.goto(&format!("{console}#/activations")).await.unwrap();
    until(&c, "the activation history", || async {
        rows(&c, "#activations tbody tr").await == 1
    })
    .await;
    shot(&c, "activations").await;
    c.goto(&format!("{console}#/approvals")).await.unwrap();
    until(&c, "alice's pending approval", || async {
        rows(&c, "#approvals tbody tr").await == 1
    })
    .await;
    assert_eq!(
        text(&c, "#approvals tbody td:nth-child(4)")
            .await
            .as_deref(),
        Some("finance-read")
    );
    shot(&c, "approvals").await;
    type_in(&c, "#approvals .comment", "ok").await;
    click(&c, "#approvals .approve").await;
    until(&c, "the approval gone from the pending list", || async {
        rows(&c, "#approvals tbody tr").await == 0
    })
    .await;
    assert!(
        !displayed(&c, "#error").await,
        "{:?}",
        text(&c, "#error").await
    );
    c.goto(&format!("{console}#/operations")).await.unwrap();
    until(&c, "the operations figures", || async {
        text(&c, "#timers-pending .value")
            .await
            .is_some_and(|v| v != "?")
    })
    .await;
    assert_eq!(text(&c, "#stuck .value").await.as_deref(), Some("0"));
    assert_eq!(text(&c, "#timer-lag .value").await.as_deref(), Some("0"));
    shot(&c, "operations").await;

    // Signing out forgets the token: the sign-in box again.
    click(&c, "#signout").await;
    until(&c, "the sign-in box after sign-out", || {
        displayed(&c, "#signin")
    })
    .await;
    let stored = c
        .execute("return sessionStorage.getItem('jitflow.token');", vec![])
        .await
        .unwrap();
    assert_eq!(stored, json!(null));
}
