//! The binary: `token` prints a token that verifies, `--demo` serves the demo tenant on a
//! fresh data directory (generating the secret) and stops cleanly on SIGTERM, and an identity
//! provider's settings reach its token checks (or stop the start with the reason), and the
//! notify flags send signed notices to a webhook receiver (or stop the start with the reason).

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Duration;

use jitflow_shim::auth::Keys;

const BIN: &str = env!("CARGO_BIN_EXE_jitflow-shim");

#[tokio::test]
async fn token_prints_one_verifiable_line() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "token",
            "--tenant",
            "acme",
            "--identity",
            "alice",
            "--scope",
            "a:b",
            "--scope",
            "c:d",
            "--level",
            "USER",
            "--ttl",
            "5m",
            "--secret-file",
        ])
        .arg(&secret)
        .env_remove("JITFLOW_SECRET")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    let principal = Keys::from_file(&secret)
        .unwrap()
        .verify(text.trim())
        .await
        .unwrap();
    assert!(principal.has_scope("a:b") && principal.has_scope("c:d"));
    // A missing secret is an error, not a token.
    let out = Command::new(BIN)
        .args([
            "token",
            "--tenant",
            "acme",
            "--identity",
            "alice",
            "--data-dir",
        ])
        .arg(dir.path().join("none"))
        .env_remove("JITFLOW_SECRET")
        .env_remove("JITFLOW_SECRET_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

/// Starts `serve --demo` on an ephemeral port over `data` with more `args`, and returns the
/// child, the address it logs, and the rest of its log lines.
fn serve_demo(
    data: &std::path::Path,
    args: &[String],
) -> (Child, String, Lines<BufReader<ChildStderr>>) {
    let mut child = Command::new(BIN)
        .args([
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(data)
        .args(args)
        .env_remove("JITFLOW_SECRET")
        .env_remove("JITFLOW_SECRET_FILE")
        .env_remove("JITFLOW_LISTEN")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if let Some(a) = value["fields"]["addr"].as_str() {
            return (child, a.to_owned(), lines);
        }
    }
    let _ = child.kill();
    let status = child.wait();
    panic!("the server logs no address and ended with {status:?}");
}

/// Sends SIGTERM and asserts a clean exit; returns the remaining log lines.
async fn stop(mut child: Child, lines: Lines<BufReader<ChildStderr>>) -> Vec<String> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    lines.map_while(Result::ok).collect()
}

/// Activates alice's demo connection over HTTP with a token from the data directory's secret
/// (202 expected); returns whether reading the secret had to create it.
async fn activate_alice(data: &std::path::Path, addr: &str) -> bool {
    let (keys, created) = Keys::load_or_create(data).unwrap();
    let alice = keys
        .mint(
            "acme",
            "alice",
            &["idn:jit-activation-workflow:activate".to_owned()],
            &[jitflow_shim::auth::Level::User],
            Duration::from_secs(60),
        )
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v2026/jit-activations/activate"))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"connectionId": jitflow_shim::demo::ALICE_DOMAIN_ADMINS, "activationPeriodMins": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, addr, lines) = serve_demo(&data, &[]);
    let created = activate_alice(&data, &addr).await;
    assert!(!created, "the server generated the secret");
    let rest = stop(child, lines).await;
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_an_entra_token_with_keys_from_a_jwks_url() {
    const FIXTURE: &str = include_str!("fixtures/jwks.json");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/keys", axum::routing::get(|| async { FIXTURE }));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let issuer = "https://login.microsoftonline.com/acme/v2.0";
    let args: Vec<String> = [
        "--jwks-url",
        &url,
        "--issuer",
        issuer,
        "--audience",
        "api://jitflow",
        "--tenant-claim",
        "tid",
        "--identity-claim",
        "oid",
        "--scope-claim",
        "scp",
        "--levels-claim",
        "roles",
    ]
    .map(str::to_owned)
    .to_vec();
    let (child, addr, lines) = serve_demo(&dir.path().join("data"), &args);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("test-ec".to_owned());
    let claims = serde_json::json!({
        "iss": issuer, "aud": "api://jitflow", "exp": now + 600, "iat": now, "nbf": now,
        "tid": "acme", "oid": "alice", "sub": "pairwise-subject",
        "scp": "openid idn:jit-activation-workflow:activate", "roles": ["USER"],
    });
    let key = jsonwebtoken::EncodingKey::from_ec_der(include_bytes!("fixtures/ec-private.der"));
    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let client = reqwest::Client::new();
    let activate = |token: String| {
        client
            .post(format!("http://{addr}/v2026/jit-activations/activate"))
            .bearer_auth(token)
            .json(&serde_json::json!({"connectionId": jitflow_shim::demo::ALICE_DOMAIN_ADMINS, "activationPeriodMins": 30}))
            .send()
    };
    assert_eq!(activate(token).await.unwrap().status().as_u16(), 202);
    // The settings are the ones checked: the token of another audience is refused.
    let mut other = claims.clone();
    other["aud"] = serde_json::json!("api://other");
    let token = jsonwebtoken::encode(&header, &other, &key).unwrap();
    assert_eq!(activate(token).await.unwrap().status().as_u16(), 401);
    drop(client);
    stop(child, lines).await;
    server.abort();
}

#[test]
fn serve_refuses_bad_provider_settings_at_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwks.json");
    let mut set: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    set["keys"][1]["kid"] = set["keys"][0]["kid"].clone();
    std::fs::write(&jwks, set.to_string()).unwrap();
    let trusted = ["--issuer", "https://idp.example/", "--audience", "jitflow"];
    let file = |path: &std::path::Path| vec!["--jwks-file".to_owned(), path.display().to_string()];
    let owned = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            [file(&jwks), owned(&trusted)].concat(),
            "\"test-rsa\" names two keys",
        ),
        (
            [file(&dir.path().join("none.json")), owned(&trusted)].concat(),
            "none.json",
        ),
        // A key set needs the issuers and audiences its tokens must carry.
        (file(fixture.as_ref()), "--issuer"),
        (
            [file(fixture.as_ref()), owned(&trusted[..2])].concat(),
            "--audience",
        ),
        // Provider settings need a key set; a file and a URL exclude each other.
        (owned(&trusted), "--jwks"),
        (owned(&["--scope-claim", "scp"]), "--jwks"),
        (
            [
                file(fixture.as_ref()),
                owned(&["--jwks-url", "http://127.0.0.1:9/"]),
                owned(&trusted),
            ]
            .concat(),
            "cannot be used with",
        ),
        (
            [
                owned(&["--jwks-url", "https://idp.example/keys"]),
                owned(&trusted),
            ]
            .concat(),
            "no TLS",
        ),
        (
            [
                owned(&[
                    "--jwks-url",
                    "http://127.0.0.1:9/",
                    "--tenant-claim",
                    "/a~2",
                ]),
                owned(&trusted),
            ]
            .concat(),
            "~",
        ),
    ];
    for (args, reason) in cases {
        assert_refused(&dir.path().join("data"), &args, reason);
    }
}

/// Runs `serve` with `args` and none of the settings' variables; asserts that it fails at once
/// and that its error names `reason`.
fn assert_refused<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(
    data: &std::path::Path,
    args: &[S],
    reason: &str,
) {
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(args)
        .env_remove("JITFLOW_SECRET")
        .env_remove("JITFLOW_SECRET_FILE")
        .env_remove("JITFLOW_NOTIFY_URL")
        .env_remove("JITFLOW_NOTIFY_SECRET")
        .env_remove("JITFLOW_NOTIFY_SECRET_FILE")
        .env_remove("JITFLOW_LISTEN")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(reason), "{args:?}: {stderr}");
}

const NOTIFY_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A webhook receiver on an ephemeral port that keeps the bodies whose Standard Webhooks
/// signature verifies (and answers 401 to the others).
async fn notice_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let kept = Arc::clone(&seen);
    let hook = move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
        let kept = Arc::clone(&kept);
        async move {
            let secret = jitflow_webhook::Secret::parse(NOTIFY_SECRET).unwrap();
            let verified = jitflow_webhook::verify_headers(
                &secret,
                |name| headers.get(name).and_then(|v| v.to_str().ok()),
                &body,
                300,
            );
            match (verified, serde_json::from_slice(&body)) {
                (Ok(()), Ok(value)) => {
                    kept.lock().unwrap().push(value);
                    axum::http::StatusCode::NO_CONTENT
                }
                _ => axum::http::StatusCode::UNAUTHORIZED,
            }
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", axum::routing::post(hook));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_delivers_signed_notices_to_a_webhook_and_logs_each() {
    let (url, seen) = notice_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = [
        "--notify-url".to_owned(),
        url,
        "--notify-secret".to_owned(),
        NOTIFY_SECRET.to_owned(),
    ];
    let (child, addr, lines) = serve_demo(&data, &args);
    activate_alice(&data, &addr).await;
    // Polling, bounded: a bound on a hang, not a measure of speed.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let types = || -> Vec<String> {
        seen.lock()
            .unwrap()
            .iter()
            .map(|m| m["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    while !types().contains(&"activation.granted".to_owned()) {
        assert!(
            std::time::Instant::now() < deadline,
            "notices: {:?}",
            types()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(types()[..2], ["activation.requested", "activation.granted"]);
    let rest = stop(child, lines).await;
    assert!(
        rest.iter()
            .any(|l| l.contains("notice delivered") && l.contains("activation.granted")),
        "demo mode logs each delivered notice: {rest:?}"
    );
}

#[test]
fn serve_refuses_bad_notify_settings_at_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "--notify-url",
                "https://hooks.example/x",
                "--notify-secret",
                NOTIFY_SECRET,
            ],
            "no TLS",
        ),
        (&["--notify-url", "http://127.0.0.1:9/hook"], "secret"),
        (
            &[
                "--notify-url",
                "http://127.0.0.1:9/hook",
                "--notify-secret",
                "hunter2",
            ],
            "whsec_",
        ),
        (&["--notify-secret", NOTIFY_SECRET], "without --notify-url"),
    ];
    for (args, reason) in cases {
        assert_refused(&dir.path().join("data"), args, reason);
    }
}
