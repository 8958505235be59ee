//! Guest processes: the one owner of every process the gateway starts in the guest, from
//! its `guest-exec` to the status reply that reaps it.
//!
//! The agent cannot kill a process it started (docs/qemu-guest-agent.md, "No kill"), so
//! a probe command that hangs keeps running after its check has given up, and starting a
//! new one on every probe would pile processes up. Hence the rules kept here, for any
//! backend below ([`AgentBackend`]):
//! - One guest process per check at a time: while one runs (or may run: its `guest-exec`
//!   reply is still due), that check's next exec is refused with
//!   [`AgentError::PreviousStillRunning`].
//! - Each process has a keeper task: it sends `guest-exec`, polls `guest-exec-status`
//!   ([`Backoff`]: every millisecond at first, since a probe command usually exits within a
//!   few, then doubling to 100 ms) and hands the check its result by the check's deadline.
//!   A process still running then stays with its keeper, polled less often (100 ms doubling
//!   to 1 s) until it exits; only then may its check start another.
//! - A `guest-exec` whose reply missed the deadline may have started a process. Where the
//!   backend delivers late replies ([`LateReplies::Delivered`]), the keeper waits for it and
//!   adopts the pid; a reply that never comes frees the check once the backend says so.
//! - Only exit is judged elsewhere: a status with a signal, or without an exit code, is
//!   handed on as it is ([`ExecStatus`]); the probe's rules live in `crate::probe`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, timeout_at};

use super::backend::{AgentBackend, Call, LateReplies, LateReply};
use super::backoff::Backoff;
use super::error::AgentError;
use super::protocol::{self, Command, ExecStatus};
use crate::config::{CheckName, ExecCommand};
use crate::metrics::Metrics;

/// Status polls while the check waits: every [`POLL_FIRST`] for the first [`FAST_POLLS`]
/// (each poll found too late adds its whole interval to the probe), then doubling up to
/// [`POLL_MAX`] (a slow command costs the guest few polls). tokio's timer ticks in ms.
const POLL_FIRST: Duration = Duration::from_millis(1);
const FAST_POLLS: u32 = 5;
const POLL_MAX: Duration = Duration::from_millis(100);
/// Status polls of a process whose check gave up on it.
const ORPHAN_POLL_FIRST: Duration = Duration::from_millis(100);
const ORPHAN_POLL_MAX: Duration = Duration::from_secs(1);
/// How long an orphan's status poll may take.
const ORPHAN_POLL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long past its deadline a check waits for its keeper's word: the keeper's own calls
/// end at the deadline with the backend's reason (a silent agent, a lost connection),
/// which says more than a bare timeout.
const OUTCOME_MARGIN: Duration = Duration::from_millis(100);

/// The guest processes of one agent connection.
pub(super) struct GuestProcesses {
    backend: Arc<dyn AgentBackend>,
    /// The output kept of each stream (`outputExcerptBytes`).
    excerpt_bytes: usize,
    metrics: Arc<Metrics>,
    table: Mutex<BTreeMap<CheckName, Entry>>,
    /// Set when the connection closes: keepers stop polling.
    closed: watch::Sender<bool>,
}

/// A check's guest process, from its start until it is reaped.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Unknown until the `guest-exec` reply comes.
    pid: Option<i64>,
    /// Its check gave up on it: it is an orphan, counted in `guest_processes_running`.
    abandoned: bool,
}

impl GuestProcesses {
    pub(super) fn new(
        backend: Arc<dyn AgentBackend>,
        excerpt_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<GuestProcesses> {
        Arc::new(GuestProcesses {
            backend,
            excerpt_bytes,
            metrics,
            table: Mutex::new(BTreeMap::new()),
            closed: watch::Sender::new(false),
        })
    }

    /// Runs `command` in the guest for the check `owner` and returns its exit status, or why
    /// there is none by `deadline`. Refused while an earlier process of `owner` runs.
    pub(super) async fn run(
        self: &Arc<Self>,
        owner: CheckName,
        command: &ExecCommand,
        deadline: Instant,
    ) -> Result<ExecStatus, AgentError> {
        {
            let mut table = self.table();
            if let Some(entry) = table.get(&owner) {
                return Err(AgentError::PreviousStillRunning { pid: entry.pid });
            }
            table.insert(
                owner.clone(),
                Entry {
                    pid: None,
                    abandoned: false,
                },
            );
        }
        let start = Command::Exec {
            path: command.path.clone(),
            args: command.args.clone(),
        };
        let (report, outcome) = oneshot::channel();
        let keeper = Keeper {
            processes: Arc::clone(self),
            owner,
        };
        tokio::spawn(keeper.keep(start, deadline, report));
        match timeout_at(deadline + OUTCOME_MARGIN, outcome).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(AgentError::Protocol(
                "internal error: the guest process's keeper ended without a result".into(),
            )),
            Err(_) => Err(AgentError::Timeout {
                agent_silent: false,
            }),
        }
    }

    /// Stops every keeper (the connection is closing): processes still running are no
    /// longer tracked.
    pub(super) fn close(&self) {
        self.closed.send_replace(true);
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<CheckName, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, owner: &CheckName, change: impl FnOnce(&mut Entry)) {
        let mut table = self.table();
        if let Some(entry) = table.get_mut(owner) {
            change(entry);
        }
        self.publish(&table);
    }

    fn publish(&self, table: &BTreeMap<CheckName, Entry>) {
        let running = table.values().filter(|entry| entry.abandoned).count();
        self.metrics
            .guest_processes_running
            .set(i64::try_from(running).unwrap_or(i64::MAX));
    }
}

/// The task that owns one guest process. Its check's entry goes when it ends, however it
/// ends (a panic included), so a check can never be blocked by a keeper that is gone.
struct Keeper {
    processes: Arc<GuestProcesses>,
    owner: CheckName,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let mut table = self.processes.table();
        table.remove(&self.owner);
        self.processes.publish(&table);
    }
}

/// Where the check waits for the outcome; `None` once it has it or has given up.
type Check = Option<oneshot::Sender<Result<ExecStatus, AgentError>>>;

impl Keeper {
    async fn keep(
        self,
        start: Command,
        deadline: Instant,
        report: oneshot::Sender<Result<ExecStatus, AgentError>>,
    ) {
        let mut check = Some(report);
        let Some(pid) = self.start(start, deadline, &mut check).await else {
            return;
        };
        self.processes
            .update(&self.owner, |entry| entry.pid = Some(pid));
        self.poll_until_exit(pid, deadline, check).await;
    }

    /// Sends `guest-exec`; the pid, or (having told the check why) `None` when there is no
    /// process to track.
    async fn start(&self, start: Command, deadline: Instant, check: &mut Check) -> Option<i64> {
        let (late, mut late_reply) = match self.processes.backend.late_replies() {
            LateReplies::Delivered => {
                let (sink, reply) = oneshot::channel();
                (Some(sink), Some(reply))
            }
            LateReplies::Dropped => (None, None),
        };
        let started = self
            .processes
            .backend
            .call(Call {
                command: start,
                deadline,
                late,
            })
            .await;
        let error = match started {
            Ok(value) => {
                return protocol::parse_exec_started(&value)
                    .map_err(|problem| tell(check, Err(AgentError::Protocol(problem))))
                    .ok();
            }
            Err(error @ (AgentError::Timeout { .. } | AgentError::Unavailable(_))) => error,
            Err(error) => {
                tell(check, Err(error));
                return None;
            }
        };
        tell(check, Err(error));
        // The reply did not come: the process may run all the same. Known at once when
        // the command was never sent.
        let early = late_reply.as_mut().map(oneshot::Receiver::try_recv);
        if let Some(Ok(LateReply::NotSent)) = early {
            return None;
        }
        self.processes
            .update(&self.owner, |entry| entry.abandoned = true);
        let check = &self.owner;
        let late = match (early, late_reply) {
            (Some(Ok(late)), _) => late,
            (Some(Err(oneshot::error::TryRecvError::Empty)), Some(reply)) => tokio::select! {
                late = reply => late.unwrap_or(LateReply::Unanswered),
                () = self.closing() => return None,
            },
            _ => LateReply::Unanswered,
        };
        match late {
            LateReply::Answered(Ok(value)) => match protocol::parse_exec_started(&value) {
                Ok(pid) => {
                    tracing::info!(%check, pid, "late guest-exec reply: tracking its process");
                    Some(pid)
                }
                Err(problem) => {
                    tracing::debug!(%check, problem, "late guest-exec reply started nothing");
                    None
                }
            },
            LateReply::Answered(Err(error)) => {
                tracing::debug!(%check, %error, "late guest-exec reply started nothing");
                None
            }
            LateReply::NotSent => None,
            LateReply::Unanswered => {
                tracing::warn!(%check, "a timed-out guest-exec never answered; if it started a process, the gateway cannot track it, and starts no other for this check until the agent answers again");
                self.until_the_agent_answers().await;
                None
            }
        }
    }

    /// Waits until the agent answers a `guest-ping` (or the connection closes). The agent
    /// handles commands in order, so by then a lost `guest-exec` has started its process or
    /// failed: without this, each probe of an agent that stays away would queue one more
    /// `guest-exec`, and all of their processes would start together when it came back.
    async fn until_the_agent_answers(&self) {
        let mut backoff = Backoff::doubling(ORPHAN_POLL_FIRST, ORPHAN_POLL_MAX);
        loop {
            let ping = self.processes.backend.call(Call {
                command: Command::Ping,
                deadline: Instant::now() + ORPHAN_POLL_TIMEOUT,
                late: None,
            });
            tokio::select! {
                answer = ping => if answer.is_ok() {
                    return;
                },
                () = self.closing() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_wait()) => {}
                () = self.closing() => return,
            }
        }
    }

    /// Polls `pid` until it exits, the agent forgets it or the connection closes; the check
    /// gets the outcome by `deadline`, and an orphan is polled on.
    async fn poll_until_exit(&self, pid: i64, deadline: Instant, mut check: Check) {
        let owner = &self.owner;
        let mut polls = Backoff::after_steady(POLL_FIRST, FAST_POLLS, POLL_MAX);
        if check.is_none() {
            polls = Backoff::doubling(ORPHAN_POLL_FIRST, ORPHAN_POLL_MAX);
        }
        loop {
            if check.as_ref().is_some_and(oneshot::Sender::is_closed) {
                // The check went away (its task ended): the process is on its own.
                check = None;
                self.abandon(pid, &mut polls);
            }
            let poll_deadline = match check {
                Some(_) => deadline,
                None => Instant::now() + ORPHAN_POLL_TIMEOUT,
            };
            let polled = self
                .processes
                .backend
                .call(Call {
                    command: Command::ExecStatus { pid },
                    deadline: poll_deadline,
                    late: None,
                })
                .await;
            let status = polled.and_then(|value| {
                protocol::parse_exec_status(&value, self.processes.excerpt_bytes)
                    .map_err(AgentError::Protocol)
            });
            match (status, check.take()) {
                (Ok(status), waiting) if status.exited => {
                    match waiting {
                        Some(waiting) => {
                            let _ = waiting.send(Ok(status));
                        }
                        None => {
                            tracing::info!(check = %owner, pid, exit_code = status.exit_code, signal = status.signal, "abandoned guest process exited");
                        }
                    }
                    return;
                }
                (Ok(_), waiting) => check = waiting,
                // The agent no longer knows the pid (reaped already, or a restarted agent),
                // or can no longer be asked, or (for an orphan) answers nonsense: nothing is
                // left to track.
                (Err(error), waiting)
                    if forgets_pid(&error)
                        || (waiting.is_none() && matches!(error, AgentError::Protocol(_))) =>
                {
                    match waiting {
                        Some(waiting) => {
                            let _ = waiting.send(Err(error));
                        }
                        None => {
                            tracing::info!(check = %owner, pid, "abandoned guest process is gone")
                        }
                    }
                    return;
                }
                (Err(error), Some(waiting)) => {
                    let _ = waiting.send(Err(error));
                    self.abandon(pid, &mut polls);
                }
                (Err(_), None) => {}
            }
            let mut wait = polls.next_wait();
            if check.is_some() && Instant::now() + wait >= deadline {
                let timed_out = AgentError::Timeout {
                    agent_silent: false,
                };
                tell(&mut check, Err(timed_out));
                self.abandon(pid, &mut polls);
                wait = polls.next_wait();
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.closing() => return,
            }
        }
    }

    /// The check has given up on the running process: it is an orphan from now on.
    fn abandon(&self, pid: i64, polls: &mut Backoff) {
        tracing::info!(check = %self.owner, pid, "guest process outlived its check; polling it until it exits");
        *polls = Backoff::doubling(ORPHAN_POLL_FIRST, ORPHAN_POLL_MAX);
        self.processes
            .update(&self.owner, |entry| entry.abandoned = true);
    }

    /// Resolves once the connection is closing.
    async fn closing(&self) {
        let mut closed = self.processes.closed.subscribe();
        let _ = closed.wait_for(|closed| *closed).await;
    }
}

/// Hands the check its outcome, if it still waits for one.
fn tell(check: &mut Check, outcome: Result<ExecStatus, AgentError>) {
    if let Some(waiting) = check.take() {
        let _ = waiting.send(outcome);
    }
}

/// True for the errors that mean the agent will never report on the pid again.
fn forgets_pid(error: &AgentError) -> bool {
    matches!(
        error,
        AgentError::Rejected { .. }
            | AgentError::Disabled { .. }
            | AgentError::CommandNotFound { .. }
    )
}

#[cfg(test)]
mod tests;
