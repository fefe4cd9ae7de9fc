//! The load generator: the embedded workload end to end on a manual clock, its option checks,
//! and the HTTP client against a small fake shim (registration, signals, a missing list
//! endpoint).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jitflow_benches::loadgen::{self, ClockKind, Error, Options, Report, Target, parse_minutes};
use jitflow_core::id::TenantId;
use jitflow_core::time::Minutes;

fn options(target: Target, w: usize, c: usize) -> Options {
    Options {
        target,
        connections: w,
        clients: c,
        period: Minutes(1),
        extend: Minutes(2),
        clock: ClockKind::Manual,
        data_dir: None,
        store: None,
        node: "loadgen".into(),
        partitions: 1,
        start_at: None,
        token: None,
        tenant: TenantId::parse("loadgen-test").unwrap(),
        grace: Duration::from_secs(30),
        reconcile: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `--store`: the same workload with the engine on a throwaway PostgreSQL database.
#[test]
fn embedded_run_on_postgresql_upholds_the_invariants() {
    let Some(cluster) = jitflow_store_pg::testing::Cluster::start_or_skip() else {
        return;
    };
    let mut o = options(Target::Embedded, 41, 8);
    o.store = Some(cluster.database().unwrap());
    let report = runtime().block_on(loadgen::run(&o)).unwrap();
    assert_eq!(report.error, None);
    let p = &report.phases;
    assert_eq!(
        (p.activate.errors, p.extend.errors, p.deactivate.errors),
        (0, 0, 0)
    );
    assert_eq!(
        (report.outcomes.expired, report.outcomes.deactivated),
        (21, 20)
    );
    assert_eq!(report.outcomes, report.expected);
    assert_eq!(report.expired_early, 0);
    assert!(report.passed());
}

/// Two generators at once on one database of two partitions: two writing nodes, each its own
/// tenant in its own partition, and both runs uphold the invariants.
#[test]
fn two_nodes_on_one_database_each_run_their_partition() {
    let Some(cluster) = jitflow_store_pg::testing::Cluster::start_or_skip() else {
        return;
    };
    let url = cluster.database().unwrap();
    let node = |id: &str, tenant: &str| {
        let mut o = options(Target::Embedded, 30, 6);
        o.store = Some(url.clone());
        o.node = id.into();
        o.partitions = 2;
        o.tenant = jitflow_core::id::TenantId::parse(tenant).unwrap();
        o
    };
    // globex hashes to partition 0 of 2, acme to 1 (`Partition::of_tenant`).
    let (a, b) = (node("n0", "globex"), node("n1", "acme"));
    assert_ne!(
        jitflow_store::backend::Partition::of_tenant("globex", 2),
        jitflow_store::backend::Partition::of_tenant("acme", 2)
    );
    let (ra, rb) = runtime().block_on(async { tokio::join!(loadgen::run(&a), loadgen::run(&b)) });
    for report in [ra.unwrap(), rb.unwrap()] {
        assert_eq!(report.error, None);
        // The phases' wall-clock spans, to join several generators' phases: in order.
        let p = &report.phases;
        for phase in [&p.activate, &p.extend, &p.deactivate] {
            assert!(phase.started_unix_ms > 0 && phase.started_unix_ms <= phase.ended_unix_ms);
        }
        assert!(p.activate.ended_unix_ms <= p.extend.started_unix_ms);
        assert!(p.extend.ended_unix_ms <= p.deactivate.started_unix_ms);
        assert_eq!(report.outcomes, report.expected);
        assert_eq!(report.expired_early, 0);
        assert!(report.passed());
    }
    // A third generator for acme's partition cannot write it while n1's lease lasts.
    let mut c = node("n2", "acme");
    c.connections = 2;
    let refused = runtime().block_on(loadgen::run(&c));
    assert!(
        matches!(&refused, Err(loadgen::Error::Open(e)) if e.contains("leased by node \"n1\"")),
        "{refused:?}"
    );
}

#[test]
fn embedded_run_on_a_manual_clock_upholds_the_invariants() {
    // An odd W: the deactivated half rounds down, the expiring half up.
    let (w, c) = (201, 16);
    let report = runtime()
        .block_on(loadgen::run(&options(Target::Embedded, w, c)))
        .unwrap();
    assert_eq!(report.error, None);
    assert_eq!(report.target, "embedded");
    assert_eq!((report.w, report.c), (w, c));
    assert_eq!((report.period_mins, report.extend_mins), (1, 2));
    assert_eq!(report.clock, "manual");
    let p = &report.phases;
    assert_eq!((p.activate.ops, p.activate.errors), (201, 0));
    assert_eq!((p.extend.ops, p.extend.errors), (201, 0));
    assert_eq!((p.deactivate.ops, p.deactivate.errors), (100, 0));
    for phase in [&p.activate, &p.extend, &p.deactivate] {
        assert!(phase.ops_per_s > 0.0);
        assert!(phase.p50_ms <= phase.p99_ms && phase.p99_ms <= phase.max_ms);
        assert!(phase.max_ms > 0.0);
    }
    assert_eq!(report.outcomes.expired, 101);
    assert_eq!(report.outcomes.deactivated, 100);
    assert_eq!(report.outcomes.other, 0);
    assert_eq!(report.outcomes, report.expected);
    assert_eq!(report.expired_early, 0);
    let lag = report.timer_lag_ms.as_ref().expect("expiries measured");
    assert_eq!(lag.samples, 101);
    assert!(lag.p50 <= lag.p99 && lag.p99 <= lag.max);
    assert!(report.end_to_end_s > 0.0);
    assert!(report.passed());
    // The report is the documented JSON shape.
    let json = serde_json::to_value(&report).unwrap();
    for key in ["ops", "errors", "ops_per_s", "p50_ms", "p99_ms", "max_ms"] {
        assert!(json["phases"]["activate"].get(key).is_some(), "{key}");
    }
    for key in ["p50", "p99", "max"] {
        assert!(json["timer_lag_ms"].get(key).is_some(), "{key}");
    }
    assert_eq!(json["outcomes"]["expired"], 101);
}

#[test]
fn a_report_with_wrong_outcomes_or_early_expiries_does_not_pass() {
    let good = Report {
        outcomes: Report::expected_for(10),
        expected: Report::expected_for(10),
        ..Report::default()
    };
    assert!(good.passed());
    let mut early = good.clone();
    early.expired_early = 1;
    assert!(!early.passed());
    let mut short = good.clone();
    short.outcomes.expired -= 1;
    short.outcomes.other += 1;
    assert!(!short.passed());
    let mut stopped = good;
    stopped.error = Some("boom".into());
    assert!(!stopped.passed());
}

#[test]
fn an_existing_store_in_the_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("loadgen.redb"), b"earlier run").unwrap();
    let mut o = options(Target::Embedded, 2, 1);
    o.data_dir = Some(dir.path().to_owned());
    let e = runtime().block_on(loadgen::run(&o)).unwrap_err();
    assert!(matches!(e, Error::Open(_)), "{e}");
    assert_eq!(
        std::fs::read(dir.path().join("loadgen.redb")).unwrap(),
        b"earlier run"
    );
}

#[test]
fn options_out_of_bounds_are_refused_before_anything_runs() {
    let rt = runtime();
    let cases = [
        (options(Target::Embedded, 0, 1), "connections"),
        (
            options(Target::Embedded, loadgen::MAX_CONNECTIONS + 1, 1),
            "connections",
        ),
        (options(Target::Embedded, 1, 0), "clients"),
        (
            options(Target::Embedded, 1, loadgen::MAX_CLIENTS + 1),
            "clients",
        ),
        (
            options(Target::Http("http://127.0.0.1:9".into()), 1, 1),
            "token",
        ),
    ];
    for (o, which) in cases {
        match rt.block_on(loadgen::run(&o)) {
            Err(Error::Option { option, .. }) => assert_eq!(option, which),
            other => panic!("{which}: {other:?}"),
        }
    }
    let mut zero = options(Target::Embedded, 1, 1);
    zero.period = Minutes(0);
    assert!(matches!(
        zero.validate(),
        Err(Error::Option {
            option: "period",
            ..
        })
    ));
}

#[test]
fn periods_are_whole_minutes_and_targets_embedded_or_http() {
    assert_eq!(parse_minutes("period", "1m").unwrap(), Minutes(1));
    assert_eq!(parse_minutes("period", "2h").unwrap(), Minutes(120));
    for bad in ["90s", "0m", "1m 30s", "2y", "soon", ""] {
        assert!(parse_minutes("period", bad).is_err(), "{bad}");
    }
    assert_eq!("embedded".parse::<Target>().unwrap(), Target::Embedded);
    assert_eq!(
        "http://127.0.0.1:8080/".parse::<Target>().unwrap(),
        Target::Http("http://127.0.0.1:8080".into())
    );
    for bad in [
        "https://example.invalid",
        "http://",
        "127.0.0.1:8080",
        "embed",
    ] {
        assert!(bad.parse::<Target>().is_err(), "{bad}");
    }
    assert_eq!("manual".parse::<ClockKind>().unwrap(), ClockKind::Manual);
    assert!("fast".parse::<ClockKind>().is_err());
}

/// What the fake shim saw.
#[derive(Default)]
struct Seen {
    registered: usize,
    signals: Vec<(String, serde_json::Value)>,
    unauthorised: usize,
    lists: usize,
}

/// A fake shim on a loopback port: registers connections, accepts every signal with 202 (an
/// extend is refused with 409 the first time, as before a grant completes) and answers 404 to
/// everything else, as a shim without the connection list does. One thread per connection; the
/// threads end with the test process.
fn fake_shim() -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let seen = Arc::clone(&shared);
            std::thread::spawn(move || serve(stream.unwrap(), &seen));
        }
    });
    (base, seen)
}

fn serve(stream: TcpStream, seen: &Mutex<Seen>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream.set_nodelay(true).unwrap();
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let (mut length, mut authorised, mut experimental) = (0, false, false);
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "authorization" => authorised = value.trim() == "Bearer test-token",
                "x-sailpoint-experimental" => experimental = value.trim() == "true",
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let (status, answer) = answer(seen, &method, &path, body, authorised, experimental);
        let answer = answer.to_string();
        // One write: a response split over several small writes waits on delayed ACKs.
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        out.write_all(response.as_bytes()).unwrap();
    }
}

fn answer(
    seen: &Mutex<Seen>,
    method: &str,
    path: &str,
    body: serde_json::Value,
    authorised: bool,
    experimental: bool,
) -> (&'static str, serde_json::Value) {
    let mut seen = seen.lock().unwrap();
    if !authorised {
        seen.unauthorised += 1;
        return ("401 Unauthorized", serde_json::json!({}));
    }
    match (method, path) {
        ("POST", "/jitflow/v1/connections") => {
            let items = body["connections"].as_array().unwrap();
            seen.registered += items.len();
            let results: Vec<_> = items
                .iter()
                .map(|c| serde_json::json!({"id": c["id"], "status": 200}))
                .collect();
            ("200 OK", serde_json::json!({ "results": results }))
        }
        ("POST", p) if p.starts_with("/jit-activations/v1/") && experimental => {
            let kind = p.trim_start_matches("/jit-activations/v1/").to_owned();
            let first_extend = kind == "extend"
                && !seen
                    .signals
                    .iter()
                    .any(|(k, b)| k == "extend" && b["connectionId"] == body["connectionId"]);
            seen.signals.push((kind, body));
            if first_extend {
                ("409 Conflict", serde_json::json!({"detailCode": "409"}))
            } else {
                ("202 Accepted", serde_json::json!({}))
            }
        }
        _ => {
            seen.lists += usize::from(path.starts_with("/entitlement-connections/v1"));
            ("404 Not Found", serde_json::json!({}))
        }
    }
}

#[test]
fn http_registers_signals_and_reports_a_missing_list_endpoint() {
    let (base, seen) = fake_shim();
    let mut o = options(Target::Http(base), 1500, 8);
    o.token = Some("test-token".into());
    let report = runtime().block_on(loadgen::run(&o)).unwrap();
    let p = &report.phases;
    assert_eq!((p.activate.ops, p.activate.errors), (1500, 0));
    // Every extend was refused once with 409 and then accepted.
    assert_eq!(
        (p.extend.ops, p.extend.errors, p.extend.retried),
        (1500, 0, 1500)
    );
    assert_eq!((p.deactivate.ops, p.deactivate.errors), (750, 0));
    let error = report.error.as_deref().expect("the list is missing");
    assert!(error.contains("404"), "{error}");
    assert!(report.timer_lag_ms.is_none());
    assert!(!report.passed());

    let seen = seen.lock().unwrap();
    assert_eq!(seen.registered, 1500);
    assert_eq!(seen.unauthorised, 0);
    assert_eq!(seen.lists, 1);
    let count = |kind: &str| seen.signals.iter().filter(|(k, _)| k == kind).count();
    assert_eq!(count("activate"), 1500);
    assert_eq!(count("extend"), 3000);
    assert_eq!(count("deactivate"), 750);
    let (_, activate) = seen.signals.iter().find(|(k, _)| k == "activate").unwrap();
    assert_eq!(activate["activationPeriodMins"], 1);
    let (_, extend) = seen.signals.iter().find(|(k, _)| k == "extend").unwrap();
    assert_eq!(extend["activationPeriodExtensionMins"], 2);
}

#[test]
fn http_registration_refused_stops_before_any_signal() {
    let (base, seen) = fake_shim();
    let mut o = options(Target::Http(base), 10, 2);
    // The fake refuses this token (401) at registration.
    o.token = Some("wrong".into());
    let e = runtime().block_on(loadgen::run(&o)).unwrap_err();
    assert!(matches!(&e, Error::Setup(m) if m.contains("401")), "{e}");
    assert!(seen.lock().unwrap().signals.is_empty());
}
