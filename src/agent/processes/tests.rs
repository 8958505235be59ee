//! The guest-process owner against a scripted backend: each test answers the commands the
//! keepers send, by hand, with tokio's clock paused.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::*;
use crate::agent::backend::{CallFuture, CallResult, CloseFuture, LinkState, LinkStatus};

const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
/// Two checks: each has its own guest process slot.
const APP: &str = "app";
const DISK: &str = "disk";

/// A backend whose replies the test writes; a call unanswered by its deadline times out.
struct Scripted {
    sent: mpsc::UnboundedSender<Sent>,
    late: LateReplies,
}

impl AgentBackend for Scripted {
    fn call(&self, call: Call) -> CallFuture {
        let (answer, reply) = oneshot::channel();
        let deadline = call.deadline;
        let _ = self.sent.send(Sent {
            call,
            at: Instant::now(),
            answer,
        });
        Box::pin(async move {
            match timeout_at(deadline, reply).await {
                Ok(Ok(result)) => result,
                _ => Err(AgentError::Timeout {
                    agent_silent: false,
                }),
            }
        })
    }

    fn late_replies(&self) -> LateReplies {
        self.late
    }

    fn status(&self) -> LinkStatus {
        LinkStatus {
            state: LinkState::Ready,
            has_answered: true,
        }
    }

    fn close(&self) -> CloseFuture<'_> {
        Box::pin(async {})
    }
}

/// A call as the backend got it (and when), for the test to answer.
struct Sent {
    call: Call,
    at: Instant,
    answer: oneshot::Sender<CallResult>,
}

impl Sent {
    fn answer(self, value: Value) {
        let _ = self.answer.send(Ok(value));
    }

    fn fail(self, error: AgentError) {
        let _ = self.answer.send(Err(error));
    }
}

struct Harness {
    processes: Arc<GuestProcesses>,
    sent: mpsc::UnboundedReceiver<Sent>,
    metrics: Arc<Metrics>,
}

fn harness(late: LateReplies) -> Harness {
    let (sent, inbox) = mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics::new());
    let processes =
        GuestProcesses::new(Arc::new(Scripted { sent, late }), 64, Arc::clone(&metrics));
    Harness {
        processes,
        sent: inbox,
        metrics,
    }
}

impl Harness {
    /// Runs `sleep 100` for `owner` with a deadline `within` from now, in a task.
    fn run(
        &self,
        owner: &str,
        within: Duration,
    ) -> tokio::task::JoinHandle<Result<ExecStatus, AgentError>> {
        let processes = Arc::clone(&self.processes);
        let command = ExecCommand {
            path: "sleep".into(),
            args: vec!["100".into()],
        };
        let deadline = Instant::now() + within;
        let owner = CheckName::parse(owner).expect("a check name");
        tokio::spawn(async move { processes.run(owner, &command, deadline).await })
    }

    async fn next(&mut self) -> Sent {
        self.sent.recv().await.expect("a command")
    }

    /// The next command, which must be a status poll of `pid`.
    async fn next_poll(&mut self, pid: i64) -> Sent {
        let sent = self.next().await;
        assert_eq!(sent.call.command, Command::ExecStatus { pid });
        sent
    }

    /// The next command, which must be a `guest-exec`.
    async fn next_exec(&mut self) -> Sent {
        let sent = self.next().await;
        assert!(
            matches!(sent.call.command, Command::Exec { .. }),
            "{:?}",
            sent.call.command
        );
        sent
    }

    /// The agent is away for one ping, during which the check may not start a
    /// process, and answers the next.
    async fn agent_answers_a_ping_at_the_second_try(&mut self) {
        let ping = self.next().await;
        assert_eq!(ping.call.command, Command::Ping);
        let held = self.run(APP, SECOND).await.unwrap();
        assert_eq!(held, Err(AgentError::PreviousStillRunning { pid: None }));
        ping.fail(AgentError::Timeout { agent_silent: true });
        let ping = self.next().await;
        assert_eq!(ping.call.command, Command::Ping);
        ping.answer(json!({}));
        while self.orphans() != 0 {
            tokio::task::yield_now().await;
        }
    }

    /// The check `owner` starts a process again (pid `pid`), which exits at once.
    async fn starts_again(&mut self, owner: &str, pid: i64) {
        let next = self.run(owner, SECOND);
        self.next_exec().await.answer(json!({"pid": pid}));
        self.next_poll(pid)
            .await
            .answer(json!({"exited": true, "exitcode": 0}));
        assert!(next.await.unwrap().is_ok(), "the probe did not start again");
        assert_eq!(self.orphans(), 0, "an orphan is left");
    }

    fn orphans(&self) -> i64 {
        self.metrics.guest_processes_running.get()
    }

    /// Answers polls "running" until one comes after `until`; returns when that one came.
    async fn keep_running(&mut self, pid: i64, until: Instant) -> Instant {
        loop {
            let poll = self.next_poll(pid).await;
            let at = poll.at;
            poll.answer(running());
            if at >= until {
                return at;
            }
        }
    }
}

/// Readiness's process (pid 7) outlived its check (which timed out): an orphan. Returns
/// when its first orphan poll came.
async fn orphan_of_readiness() -> (Harness, Instant) {
    let mut h = harness(LateReplies::Delivered);
    let started = Instant::now();
    let run = h.run(APP, SECOND);
    h.next_exec().await.answer(json!({"pid": 7}));
    let (result, first_orphan_poll) = tokio::join!(run, h.keep_running(7, started + SECOND));
    let timed_out = AgentError::Timeout {
        agent_silent: false,
    };
    assert_eq!(result.unwrap(), Err(timed_out));
    (h, first_orphan_poll)
}

/// Readiness's `guest-exec`, sent and not answered (yet).
async fn unanswered_exec(
    late: LateReplies,
) -> (
    Harness,
    tokio::task::JoinHandle<Result<ExecStatus, AgentError>>,
    Sent,
) {
    let mut h = harness(late);
    let run = h.run(APP, SECOND);
    let exec = h.next_exec().await;
    (h, run, exec)
}

fn running() -> Value {
    json!({"exited": false})
}

#[tokio::test(start_paused = true)]
async fn an_exec_that_exits_in_time_reports_its_status_and_output() {
    let mut h = harness(LateReplies::Delivered);
    let run = h.run(APP, 5 * SECOND);
    h.next_exec().await.answer(json!({"pid": 7}));
    let first = h.next_poll(7).await;
    let asked = first.at;
    first.answer(running());
    let second = h.next_poll(7).await;
    assert_eq!(second.at - asked, MS, "polled again a millisecond later");
    second.answer(json!({"exited": true, "exitcode": 3, "out-data": "aGk="}));
    let status = run.await.unwrap().unwrap();
    assert_eq!(status.exit_code, Some(3));
    assert_eq!(status.stdout.bytes, b"hi");
    assert_eq!(h.orphans(), 0);
}

#[tokio::test(start_paused = true)]
async fn polls_come_every_millisecond_five_times_then_back_off_to_100_ms() {
    let mut h = harness(LateReplies::Delivered);
    let _run = h.run(APP, 5 * SECOND);
    h.next_exec().await.answer(json!({"pid": 7}));
    let mut at = Vec::new();
    for _ in 0..12 {
        let poll = h.next_poll(7).await;
        at.push(poll.at);
        poll.answer(running());
    }
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, [1, 1, 1, 1, 1, 2, 4, 8, 16, 32, 64].map(|n| n * MS));
}

#[tokio::test(start_paused = true)]
async fn a_process_running_at_the_deadline_is_polled_until_it_exits_and_blocks_its_probe() {
    let (mut h, first_orphan_poll) = orphan_of_readiness().await;
    assert_eq!(h.orphans(), 1);
    // The same probe may not start another; the other probe may.
    let again = h.run(APP, SECOND).await.unwrap();
    assert_eq!(
        again,
        Err(AgentError::PreviousStillRunning { pid: Some(7) })
    );
    let _other = h.run(DISK, SECOND);
    h.next_exec().await.answer(json!({"pid": 8}));
    // Orphan polls back off from 100 ms to one second.
    let mut at = vec![first_orphan_poll];
    loop {
        let poll = h.next().await;
        if poll.call.command == (Command::ExecStatus { pid: 8 }) {
            poll.answer(json!({"exited": true, "exitcode": 0}));
            continue;
        }
        assert_eq!(poll.call.command, Command::ExecStatus { pid: 7 });
        at.push(poll.at);
        if at.len() == 7 {
            poll.answer(json!({"exited": true, "exitcode": 0}));
            break;
        }
        poll.answer(running());
    }
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, [200, 400, 800, 1000, 1000, 1000].map(|n| n * MS));
    // Reaped: the probe may start again.
    h.starts_again(APP, 9).await;
}

#[tokio::test(start_paused = true)]
async fn a_guest_exec_reply_lost_to_the_deadline_is_adopted_when_it_comes_late() {
    let (mut h, run, exec) = unanswered_exec(LateReplies::Delivered).await;
    // No answer: the call times out, the check with it.
    assert_eq!(
        run.await.unwrap(),
        Err(AgentError::Timeout {
            agent_silent: false
        })
    );
    let again = h.run(APP, SECOND).await.unwrap();
    assert_eq!(again, Err(AgentError::PreviousStillRunning { pid: None }));
    assert_eq!(h.orphans(), 1);
    let late = exec.call.late.expect("a late sink for guest-exec");
    let _ = late.send(LateReply::Answered(Ok(json!({"pid": 42}))));
    h.next_poll(42).await.answer(running());
    let again = h.run(APP, SECOND).await.unwrap();
    assert_eq!(
        again,
        Err(AgentError::PreviousStillRunning { pid: Some(42) })
    );
    h.next_poll(42)
        .await
        .answer(json!({"exited": true, "signal": 9}));
    h.starts_again(APP, 43).await;
}

/// A `guest-exec` lost for good may still start its process when the agent comes back; one
/// sent on every probe meanwhile would start with it. So the probe is held until the agent
/// answers a ping (it handles commands in order: the lost one is behind it by then).
#[tokio::test(start_paused = true)]
async fn a_guest_exec_that_never_answers_holds_its_probe_until_the_agent_answers_a_ping() {
    let (mut h, run, exec) = unanswered_exec(LateReplies::Delivered).await;
    assert!(run.await.unwrap().is_err());
    let _ = exec.call.late.unwrap().send(LateReply::Unanswered);
    h.agent_answers_a_ping_at_the_second_try().await;
    h.starts_again(APP, 5).await;
}

#[tokio::test(start_paused = true)]
async fn a_guest_exec_that_was_never_sent_frees_its_probe_at_once() {
    let (mut h, run, mut exec) = unanswered_exec(LateReplies::Delivered).await;
    let late = exec.call.late.take().expect("a late sink");
    let _ = late.send(LateReply::NotSent);
    let _ = exec
        .answer
        .send(Err(AgentError::Unavailable("cannot connect".into())));
    assert_eq!(
        run.await.unwrap(),
        Err(AgentError::Unavailable("cannot connect".into()))
    );
    let next = h.run(APP, SECOND);
    h.next_exec()
        .await
        .fail(AgentError::Unavailable("cannot connect".into()));
    assert_eq!(
        next.await.unwrap(),
        Err(AgentError::Unavailable("cannot connect".into())),
        "not refused as still running"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pid_the_agent_no_longer_knows_ends_the_tracking() {
    let (mut h, _) = orphan_of_readiness().await;
    assert_eq!(h.orphans(), 1);
    h.next_poll(7).await.fail(AgentError::Rejected {
        command: "guest-exec-status",
        class: "GenericError".into(),
        desc: "Invalid parameter 'pid'".into(),
    });
    h.starts_again(APP, 8).await;
}

#[tokio::test(start_paused = true)]
async fn where_late_replies_are_dropped_a_lost_guest_exec_cannot_be_tracked() {
    let (mut h, run, exec) = unanswered_exec(LateReplies::Dropped).await;
    assert!(
        exec.call.late.is_none(),
        "no late sink where none can be served"
    );
    assert!(run.await.unwrap().is_err());
    h.agent_answers_a_ping_at_the_second_try().await;
    h.starts_again(APP, 5).await;
}

#[tokio::test(start_paused = true)]
async fn closing_stops_the_keepers() {
    let (mut h, _) = orphan_of_readiness().await;
    h.next_poll(7).await.answer(running());
    h.processes.close();
    let after = tokio::time::timeout(10 * SECOND, h.sent.recv()).await;
    assert!(
        after.is_err(),
        "a keeper polled after close: {:?}",
        after.map(|s| s.map(|s| s.call.command))
    );
    assert_eq!(h.orphans(), 0);
}
