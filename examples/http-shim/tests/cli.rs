//! The binary: `token` prints a token that verifies, and `--demo` serves the demo tenant on a
//! fresh data directory (generating the secret) and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .args([
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(&data)
        .env_remove("JITFLOW_SECRET")
        .env_remove("JITFLOW_SECRET_FILE")
        .env_remove("JITFLOW_LISTEN")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if let Some(a) = value["fields"]["addr"].as_str() {
            addr = Some(a.to_owned());
            break;
        }
    }
    let addr = addr.expect("the server logs its address");
    let (keys, created) = Keys::load_or_create(&data).unwrap();
    assert!(!created, "the server generated the secret");
    let alice = keys
        .mint(
            "acme",
            "alice",
            &["idn:jit-activation-workflow:activate".to_owned()],
            &[jitflow_shim::auth::Level::User],
            Duration::from_secs(60),
        )
        .unwrap();
    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://{addr}/v2026/jit-activations/activate"))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"connectionId": jitflow_shim::demo::ALICE_DOMAIN_ADMINS, "activationPeriodMins": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    drop(client);
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
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
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
        let out = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(&args)
            .env_remove("JITFLOW_SECRET")
            .env_remove("JITFLOW_SECRET_FILE")
            .env_remove("JITFLOW_LISTEN")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}
