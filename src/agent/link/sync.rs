//! Whether the stream is in step with the agent, and the resyncs that put it back in step
//! (`0xFF` + `guest-sync-delimited` with a random id; docs/qemu-guest-agent.md, "Resync").

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::agent::backoff::Backoff;
use crate::agent::protocol::ErrorReply;

/// A resync unanswered for this long is sent again (with a new id): on a virtio-serial
/// port whose guest side is not open yet, earlier bytes may never reach an agent.
const RESYNC_RESEND: Duration = Duration::from_secs(1);
/// The longest wait between resends of an unanswered resync: a hung agent gets a slow
/// trickle, not a backlog.
const RESYNC_RESEND_MAX: Duration = Duration::from_secs(10);
/// Unanswered resync ids remembered; an older one's reply is then taken as stale.
const MAX_PENDING_SYNCS: usize = 8;

/// The stream's sync state.
pub(super) enum Sync {
    InStep,
    Pending(Resync),
}

/// Resyncs sent and not answered yet.
pub(super) struct Resync {
    /// Newest last.
    ids: Vec<u64>,
    last_sent: Instant,
    /// The wait after `last_sent` before the next resend.
    interval: Duration,
    resend: Backoff,
}

impl Resync {
    /// Out of step, nothing sent yet.
    pub(super) fn new() -> Resync {
        Resync {
            ids: Vec::new(),
            last_sent: Instant::now(),
            interval: RESYNC_RESEND,
            resend: Backoff::doubling(RESYNC_RESEND, RESYNC_RESEND_MAX),
        }
    }

    /// Records a resync with `id` sent now; the next resend waits longer than the last.
    pub(super) fn sent(&mut self, id: u64) {
        if self.ids.len() >= MAX_PENDING_SYNCS {
            self.ids.remove(0);
        }
        self.ids.push(id);
        self.last_sent = Instant::now();
        self.interval = self.resend.next_wait();
    }

    /// When to send the next resync if none is answered.
    pub(super) fn resend_due(&self) -> Instant {
        self.last_sent + self.interval
    }

    /// True if `outcome` is the reply to one of these resyncs: `{"return": ID}`.
    pub(super) fn is_answered_by(&self, outcome: &Result<Value, ErrorReply>) -> bool {
        let Ok(Value::Number(number)) = outcome else {
            return false;
        };
        number.as_u64().is_some_and(|n| self.ids.contains(&n))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn resends_back_off_from_one_to_ten_seconds() {
        let mut resync = Resync::new();
        let mut waits = Vec::new();
        for id in 1..=6 {
            resync.sent(id);
            waits.push(resync.resend_due() - Instant::now());
        }
        let s = Duration::from_secs;
        assert_eq!(waits, [s(1), s(2), s(4), s(8), s(10), s(10)]);
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_latest_ids_are_answers() {
        let mut resync = Resync::new();
        for id in 1..=(MAX_PENDING_SYNCS as u64 + 1) {
            resync.sent(id);
        }
        assert!(!resync.is_answered_by(&Ok(json!(1))), "forgotten");
        assert!(resync.is_answered_by(&Ok(json!(2))));
        assert!(!resync.is_answered_by(&Ok(json!(99))));
        assert!(!resync.is_answered_by(&Ok(json!({}))));
    }
}
