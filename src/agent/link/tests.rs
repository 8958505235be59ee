//! The link against an in-memory agent, with tokio's clock paused: each test drives the
//! agent's side by hand and checks what the link sends and answers.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::*;
use crate::agent::backend::{AgentBackend, Call};
use crate::agent::testing::{Peer, Peers, peer_connector};

const SECOND: Duration = Duration::from_secs(1);

fn link() -> (QgaLink, Peers) {
    let (connector, peers) = peer_connector();
    (QgaLink::spawn(connector, Arc::new(Metrics::new())), peers)
}

/// Sends `command` with a deadline `within` from now, in a task of its own.
fn call(
    link: &QgaLink,
    command: Command,
    within: Duration,
    late: Option<oneshot::Sender<LateReply>>,
) -> tokio::task::JoinHandle<CallResult> {
    let future = link.call(Call {
        command,
        deadline: Instant::now() + within,
        late,
    });
    tokio::spawn(future)
}

/// A status poll of `pid` whose real answer (exit code 1) comes after a success in reply
/// to the request `decoy` names: the poll must get its own answer.
async fn answered_after_a_decoy(
    link: &QgaLink,
    peer: &mut Peer,
    pid: i64,
    decoy: impl Fn(&Value) -> Value,
) {
    let status = call(link, status_of(pid), SECOND, None);
    let request = peer.expect("guest-exec-status").await;
    peer.reply(&decoy(&request), json!({"exited": true, "exitcode": 0}))
        .await;
    peer.reply(&request, json!({"exited": true, "exitcode": 1}))
        .await;
    assert_eq!(
        status.await.unwrap(),
        Ok(json!({"exited": true, "exitcode": 1}))
    );
}

/// A link in step, and a `guest-exec` sent on it with a late sink and a deadline a
/// second away.
async fn exec_with_a_late_sink() -> (
    QgaLink,
    Peer,
    tokio::task::JoinHandle<CallResult>,
    oneshot::Receiver<LateReply>,
) {
    let (link, mut peers) = link();
    let peer = peers.accept_in_step().await;
    let (sink, late) = oneshot::channel();
    let exec = call(&link, exec_true(), SECOND, Some(sink));
    (link, peer, exec, late)
}

fn status_of(pid: i64) -> Command {
    Command::ExecStatus { pid }
}

fn exec_true() -> Command {
    Command::Exec {
        path: "true".into(),
        args: vec![],
    }
}

#[tokio::test(start_paused = true)]
async fn a_command_waits_until_the_first_resync_is_answered() {
    let (link, mut peers) = link();
    let mut peer = peers.accept().await;
    let sync = peer.expect("guest-sync-delimited").await;
    let ping = call(&link, Command::Ping, 5 * SECOND, None);
    let early = tokio::time::timeout(SECOND / 2, peer.next_request()).await;
    assert!(
        early.is_err(),
        "sent before the stream was in step: {early:?}"
    );
    peer.answer_sync_request(&sync).await;
    let request = peer.expect("guest-ping").await;
    peer.reply(&request, json!({})).await;
    assert_eq!(ping.await.unwrap(), Ok(json!({})));
    assert_eq!(link.status().state, LinkState::Ready);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_command_times_out_at_its_deadline_and_the_stream_is_resynced() {
    let (link, mut peers) = link();
    let mut peer = peers.accept_in_step().await;
    let started = Instant::now();
    let ping = call(&link, Command::Ping, SECOND, None);
    peer.expect("guest-ping").await;
    let result = ping.await.unwrap();
    assert_eq!(
        result,
        Err(AgentError::Timeout {
            agent_silent: false
        })
    );
    assert_eq!(started.elapsed(), SECOND);
    peer.expect("guest-sync-delimited").await;
}

#[tokio::test(start_paused = true)]
async fn a_stale_reply_is_dropped_and_the_next_command_gets_its_own() {
    let (link, mut peers) = link();
    let mut peer = peers.accept_in_step().await;
    let first = call(&link, status_of(1), SECOND, None);
    let stale = peer.expect("guest-exec-status").await;
    assert!(first.await.unwrap().is_err());
    // The late reply comes before the resync's answer, and again after it.
    peer.reply(&stale, json!({"exited": true, "exitcode": 7}))
        .await;
    peer.answer_sync().await;
    answered_after_a_decoy(&link, &mut peer, 2, |_| stale.clone()).await;
}

#[tokio::test(start_paused = true)]
async fn a_reply_that_misses_its_deadline_goes_to_the_late_sink() {
    let (_link, mut peer, exec, late) = exec_with_a_late_sink().await;
    let request = peer.expect("guest-exec").await;
    assert!(matches!(
        exec.await.unwrap(),
        Err(AgentError::Timeout { .. })
    ));
    peer.expect("guest-sync-delimited").await;
    peer.reply(&request, json!({"pid": 42})).await;
    assert_eq!(
        late.await.unwrap(),
        LateReply::Answered(Ok(json!({"pid": 42})))
    );
}

#[tokio::test(start_paused = true)]
async fn a_late_reply_not_seen_before_the_resync_answer_is_unanswered() {
    let (_link, mut peer, exec, late) = exec_with_a_late_sink().await;
    peer.expect("guest-exec").await;
    assert!(exec.await.unwrap().is_err());
    peer.answer_sync().await;
    assert_eq!(late.await.unwrap(), LateReply::Unanswered);
}

#[tokio::test(start_paused = true)]
async fn a_command_that_was_never_sent_tells_its_late_sink_so() {
    let (connector, peers) = peer_connector();
    peers.refuse(true);
    let link = QgaLink::spawn(connector, Arc::new(Metrics::new()));
    let (sink, late) = oneshot::channel();
    let started = Instant::now();
    let result = call(&link, exec_true(), 5 * SECOND, Some(sink))
        .await
        .unwrap();
    let Err(AgentError::Unavailable(reason)) = result else {
        panic!("expected unavailable, got {result:?}");
    };
    assert!(
        reason.starts_with("cannot connect to the test's peer"),
        "{reason}"
    );
    assert!(started.elapsed() < SECOND, "failed at once");
    assert_eq!(late.await.unwrap(), LateReply::NotSent);
}

#[tokio::test(start_paused = true)]
async fn an_absent_agent_is_retried_with_backoff_up_to_one_second() {
    let (connector, peers) = peer_connector();
    peers.refuse(true);
    let started = Instant::now();
    let _link = QgaLink::spawn(connector, Arc::new(Metrics::new()));
    tokio::time::sleep(4 * SECOND).await;
    let attempts = peers.attempts();
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    let ms = Duration::from_millis;
    assert_eq!(attempts[0], started);
    assert_eq!(
        gaps[..7],
        [
            ms(50),
            ms(100),
            ms(200),
            ms(400),
            ms(800),
            ms(1000),
            ms(1000)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn garbage_while_idle_is_answered_with_a_resync() {
    let (link, mut peers) = link();
    let mut peer = peers.accept_in_step().await;
    peer.write(b"hello, not JSON\n").await;
    peer.answer_sync().await;
    let ping = call(&link, Command::Ping, SECOND, None);
    let request = peer.expect("guest-ping").await;
    peer.reply(&request, json!({})).await;
    assert_eq!(ping.await.unwrap(), Ok(json!({})));
}

#[tokio::test(start_paused = true)]
async fn garbage_while_a_command_waits_resyncs_after_its_reply() {
    let (link, mut peers) = link();
    let mut peer = peers.accept_in_step().await;
    let ping = call(&link, Command::Ping, SECOND, None);
    let request = peer.expect("guest-ping").await;
    peer.write(b"[1, 2, 3]\n").await;
    peer.reply(&request, json!({})).await;
    assert_eq!(ping.await.unwrap(), Ok(json!({})));
    peer.expect("guest-sync-delimited").await;
}

#[tokio::test(start_paused = true)]
async fn eof_in_the_middle_of_a_reply_fails_the_command_as_a_lost_connection() {
    let (link, mut peers) = link();
    let mut peer = peers.accept_in_step().await;
    let ping = call(&link, Command::Ping, 5 * SECOND, None);
    peer.expect("guest-ping").await;
    peer.write(b"{\"return\": {").await;
    drop(peer);
    assert_eq!(
        ping.await.unwrap(),
        Err(AgentError::Unavailable(
            "connection lost: the agent closed the connection in the middle of a reply".into()
        ))
    );
    // And the link reconnects.
    peers.accept().await;
}

#[tokio::test(start_paused = true)]
async fn an_endless_line_drops_the_connection_and_the_link_reconnects() {
    let (link, mut peers) = link();
    let mut peer = peers.accept_in_step().await;
    let ping = call(&link, Command::Ping, 5 * SECOND, None);
    peer.expect("guest-ping").await;
    let writer = tokio::spawn(async move {
        peer.write(b"{\"return\": \"").await;
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..=(crate::agent::framing::MAX_LINE_BYTES >> 20) {
            peer.write(&chunk).await;
        }
        peer
    });
    let result = ping.await.unwrap();
    let Err(AgentError::Unavailable(reason)) = &result else {
        panic!("expected unavailable, got {result:?}");
    };
    assert!(reason.contains("without ending"), "{reason}");
    let mut again = peers.accept().await;
    again.expect("guest-sync-delimited").await;
    writer.abort();
}

#[tokio::test(start_paused = true)]
async fn close_shuts_down_writing_and_waits_for_the_agent_to_close() {
    let (link, mut peers) = link();
    let mut peer = peers.accept_in_step().await;
    let closer = {
        let link = link.clone();
        tokio::spawn(async move { link.close().await })
    };
    assert_eq!(
        peer.next_request().await,
        None,
        "the link shut down writing"
    );
    assert!(!closer.is_finished(), "close waits for the agent's side");
    drop(peer);
    closer.await.unwrap();
    let after = call(&link, Command::Ping, SECOND, None).await.unwrap();
    assert_eq!(
        after,
        Err(AgentError::Unavailable(
            "the gateway's agent client has stopped".into()
        ))
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_closes_the_connection_gracefully() {
    let (link, mut peers) = link();
    let mut peer = peers.accept_in_step().await;
    drop(link);
    assert_eq!(peer.next_request().await, None);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_resync_is_sent_again_backing_off() {
    let (_link, mut peers) = link();
    let mut peer = peers.accept().await;
    let mut sent = Vec::new();
    for _ in 0..4 {
        peer.expect("guest-sync-delimited").await;
        sent.push(Instant::now());
    }
    let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, [SECOND, 2 * SECOND, 4 * SECOND]);
}

#[tokio::test(start_paused = true)]
async fn stale_lines_left_on_the_stream_are_never_taken_for_answers() {
    let (link, mut peers) = link();
    let mut peer = peers.accept().await;
    // What an earlier client left on a virtio-serial stream: successes with ids the link
    // might use, and a sync reply that is not the link's.
    let mut stale = Vec::new();
    for id in 0..64 {
        stale.extend(
            format!("{{\"return\": {{\"exited\": true, \"exitcode\": 0}}, \"id\": {id}}}\n")
                .bytes(),
        );
    }
    stale.extend(b"\xff{\"return\": 12345}\n{\"return\": {\"pid\": 1}}\n");
    peer.write(&stale).await;
    peer.answer_sync().await;
    for pid in 1..=3 {
        // A success with the neighbouring id comes first.
        let neighbour = |request: &Value| json!({"id": request["id"].as_u64().unwrap() - 1});
        answered_after_a_decoy(&link, &mut peer, pid, neighbour).await;
    }
}
