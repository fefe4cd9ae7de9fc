//! The server's connection bounds: a client that sends its headers too slowly, or stays idle, is
//! disconnected, and no more than `max_connections` connections are served at once.

mod common;

use std::time::Duration;

use common::*;
use jitflow_shim::{AppState, Limits, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: these bounds are for a loaded machine; the checks are about what happens, not when.
const PATIENCE: Duration = Duration::from_secs(20);
const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n";

async fn serve(h: &Harness, limits: Limits) -> Running {
    let state = AppState::new(h.engine().clone(), keys());
    jitflow_shim::start_with("127.0.0.1:0".parse().unwrap(), state, limits)
        .await
        .unwrap()
}

/// Reads one whole `/health` answer (it fits in one read buffer, and ends with its JSON body).
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"}") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before the answer was complete: {answer:?}");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let h = Harness::new().await;
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let running = serve(&h, limits).await;
    let mut slow = TcpStream::connect(running.addr).await.unwrap();
    // The request line and one header, never the blank line that ends the headers.
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, slow.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection");
    // Closed (possibly with a reset), and never with an answer to the unfinished request.
    if read.is_ok() {
        let text = String::from_utf8_lossy(&rest);
        assert!(
            rest.is_empty() || text.starts_with("HTTP/1.1 408"),
            "unexpected answer: {text}"
        );
    }
    // A client that sends its request at once is served as before.
    let mut prompt = TcpStream::connect(running.addr).await.unwrap();
    prompt.write_all(HEALTH).await.unwrap();
    let answer = read_answer(&mut prompt).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Kept alive but silent after its answer, it is closed too: an idle connection does not
    // hold one of the server's slots forever.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, prompt.read_to_end(&mut rest))
        .await
        .expect("the server closes the idle connection");
    if read.is_ok() {
        let text = String::from_utf8_lossy(&rest);
        assert!(
            rest.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
    running.stop().await.unwrap();
    h.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_their_turn() {
    let h = Harness::new().await;
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let running = serve(&h, limits).await;
    let mut first = TcpStream::connect(running.addr).await.unwrap();
    first.write_all(HEALTH).await.unwrap();
    assert!(read_answer(&mut first).await.starts_with("HTTP/1.1 200"));
    // `first` stays open (keep-alive), so it holds the only slot.
    let mut second = TcpStream::connect(running.addr).await.unwrap();
    second.write_all(HEALTH).await.unwrap();
    let mut buf = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), second.read(&mut buf)).await;
    assert!(early.is_err(), "served while the only slot was taken");
    drop(first);
    let answer = read_answer(&mut second).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(second);
    running.stop().await.unwrap();
    h.stop().await;
}
