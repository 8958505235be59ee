//! The one kept connection to the libvirt daemon, owned by its keeper thread: opened at
//! start and again after a loss with [`Backoff`], watched for a dead daemon, closed at
//! shutdown. Workers borrow it (libvirt connections are thread-safe and reference counted)
//! and report what they see go wrong.
//!
//! A dead daemon is noticed without traffic: libvirt's default event loop runs on a thread
//! of its own, which lets the client watch the socket and send keepalives
//! ([`KEEPALIVE_INTERVAL`] s, [`KEEPALIVE_COUNT`] unanswered ones close it); the keeper looks
//! at `virConnectIsAlive` every [`WATCH`] and whenever a worker reports an error.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once, PoisonError};
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::Domain;

use crate::agent::backend::LinkState;
use crate::agent::backoff::Backoff;
use crate::config::LibvirtUri;

/// Reopening after a failure: quickly at first (a daemon restarting), then every 5 s.
const RECONNECT: Backoff = Backoff::doubling(Duration::from_millis(100), Duration::from_secs(5));
/// How often the keeper looks at a connection it holds.
const WATCH: Duration = Duration::from_secs(1);
const KEEPALIVE_INTERVAL: i32 = 2;
const KEEPALIVE_COUNT: u32 = 3;

enum Slot {
    /// The first attempt is under way: a call waits for it (by its deadline), so that a
    /// one-off `check` does not fail for having asked first.
    Connecting,
    /// Not connected, and why (the last failure).
    Down(String),
    Up {
        connect: Connect,
        /// The domain's handle once looked up; forgotten when libvirt says it is gone.
        domain: Option<Domain>,
    },
    Closed,
}

/// The connection and the domain it serves.
pub(super) struct Connection {
    uri: LibvirtUri,
    domain: String,
    slot: Mutex<Slot>,
    changed: Condvar,
}

/// Whether libvirt's event loop runs (keepalive needs it); set up once per process.
static EVENT_LOOP: Once = Once::new();

/// Routes libvirt's error reports into the gateway's logging (libvirt would print them to
/// stderr, breaking JSON logs), and starts libvirt's event loop thread.
fn set_up_libvirt() {
    EVENT_LOOP.call_once(|| {
        libvirt_errors::route_errors(log_libvirt_error);
        if let Err(error) = virt::event::event_register_default_impl() {
            tracing::warn!(error = %error.message(), "libvirt event loop unavailable: a hung daemon is noticed only by failing calls");
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| {
                loop {
                    if let Err(error) = virt::event::event_run_default_impl() {
                        tracing::warn!(error = %error.message(), "libvirt event loop stopped");
                        return;
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the libvirt event loop thread");
        }
    });
}

/// One error report of libvirt: every failed libvirt call dispatches one, on the thread
/// that made it. At debug level: the failures that matter reach the log already as the
/// keeper's warnings and the probes' reasons, and a paused VM fails every agent command.
fn log_libvirt_error(error: &libvirt_errors::LibvirtError) {
    tracing::debug!(
        target: "libvirt",
        code = error.code,
        from = error.domain_name().unwrap_or("other"),
        error = %error.message,
        "libvirt error"
    );
}

impl Connection {
    /// Starts the keeper thread, which opens the connection.
    pub(super) fn start(uri: LibvirtUri, domain: String) -> Arc<Connection> {
        set_up_libvirt();
        let connection = Arc::new(Connection {
            uri,
            domain,
            slot: Mutex::new(Slot::Connecting),
            changed: Condvar::new(),
        });
        let keeper = Arc::clone(&connection);
        let spawned = std::thread::Builder::new()
            .name("libvirt-connection".into())
            .spawn(move || keeper.keep());
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the libvirt connection thread");
            *connection.lock() = Slot::Down(format!(
                "cannot start the libvirt connection thread: {error}"
            ));
        }
        connection
    }

    pub(super) fn domain_name(&self) -> &str {
        &self.domain
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn link_state(&self) -> LinkState {
        match &*self.lock() {
            Slot::Up { .. } => LinkState::Ready,
            Slot::Connecting => LinkState::Disconnected("connecting to libvirt".into()),
            Slot::Down(reason) => LinkState::Disconnected(reason.clone()),
            Slot::Closed => LinkState::Disconnected("the libvirt connection is closed".into()),
        }
    }

    /// The connection and the domain's handle, looked up if not known yet; `Err` names why
    /// there is none: no connection (its reason), or libvirt's lookup error.
    pub(super) fn handles(&self, deadline: Instant) -> Result<(Connect, Domain), Unreachable> {
        let mut slot = self.lock();
        while matches!(*slot, Slot::Connecting) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Unreachable::Daemon("connecting to libvirt".into()));
            }
            slot = self
                .changed
                .wait_timeout(slot, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let connect = match &*slot {
            Slot::Up {
                connect,
                domain: Some(domain),
            } => return Ok((connect.clone(), domain.clone())),
            Slot::Up { connect, .. } => connect.clone(),
            Slot::Connecting | Slot::Down(_) => {
                let reason = match &*slot {
                    Slot::Down(reason) => reason.clone(),
                    _ => "connecting to libvirt".into(),
                };
                return Err(Unreachable::Daemon(reason));
            }
            Slot::Closed => {
                return Err(Unreachable::Daemon(
                    "the libvirt connection is closed".into(),
                ));
            }
        };
        drop(slot);
        let found = if is_uuid(&self.domain) {
            connect.lookup_domain_by_uuid_string(&self.domain)
        } else {
            connect.lookup_domain_by_name(&self.domain)
        };
        let domain = found.map_err(Unreachable::Lookup)?;
        if let Slot::Up { domain: slot, .. } = &mut *self.lock() {
            *slot = Some(domain.clone());
        }
        Ok((connect, domain))
    }

    /// Forgets the domain's handle: the next call looks it up again (a migration target's
    /// domain is defined after the gateway starts, a VM may be redefined).
    pub(super) fn forget_domain(&self) {
        if let Slot::Up { domain, .. } = &mut *self.lock() {
            *domain = None;
        }
    }

    /// A worker saw the connection fail: the keeper looks at it now.
    pub(super) fn suspect(&self) {
        self.changed.notify_all();
    }

    /// Closes the connection; the keeper ends.
    pub(super) fn close(&self) {
        let old = std::mem::replace(&mut *self.lock(), Slot::Closed);
        self.changed.notify_all();
        // virConnectClose outside the lock: it talks to the daemon.
        drop(old);
    }

    fn keep(&self) {
        let mut backoff = RECONNECT;
        loop {
            let mut slot = self.lock();
            match &*slot {
                Slot::Closed => return,
                Slot::Up { connect, .. } => {
                    let connect = connect.clone();
                    let (guard, _) = self
                        .changed
                        .wait_timeout(slot, WATCH)
                        .unwrap_or_else(PoisonError::into_inner);
                    slot = guard;
                    if matches!(*slot, Slot::Up { .. }) && !connect.is_alive().unwrap_or(false) {
                        let reason = "libvirt connection lost: the daemon closed it or stopped \
                                      answering keepalives; reconnecting"
                            .to_string();
                        tracing::warn!(uri = %self.uri, "{reason}");
                        let old = std::mem::replace(&mut *slot, Slot::Down(reason));
                        drop(slot);
                        drop(old);
                        drop(connect);
                    }
                }
                Slot::Connecting | Slot::Down(_) => {
                    let previous = match &*slot {
                        Slot::Down(previous) => previous.clone(),
                        _ => String::new(),
                    };
                    drop(slot);
                    let opened = self.open();
                    let mut slot = self.lock();
                    if matches!(*slot, Slot::Closed) {
                        drop(slot);
                        drop(opened);
                        return;
                    }
                    match opened {
                        Ok(connect) => {
                            tracing::info!(uri = %self.uri, domain = %self.domain, "connected to libvirt");
                            backoff = RECONNECT;
                            *slot = Slot::Up {
                                connect,
                                domain: None,
                            };
                            self.changed.notify_all();
                        }
                        Err(reason) => {
                            if reason != previous {
                                tracing::warn!(uri = %self.uri, %reason, "cannot connect to libvirt; retrying");
                            }
                            *slot = Slot::Down(reason);
                            self.changed.notify_all();
                            let _ = self
                                .changed
                                .wait_timeout(slot, backoff.next_wait())
                                .unwrap_or_else(PoisonError::into_inner);
                        }
                    }
                }
            }
        }
    }

    fn open(&self) -> Result<Connect, String> {
        if let Some(socket) = self.uri.socket()
            && !socket.exists()
        {
            return Err(format!(
                "libvirt socket {} does not exist: the daemon is not running, or its \
                 directory is not mounted here",
                socket.display()
            ));
        }
        let connect = Connect::open(Some(self.uri.as_str())).map_err(|error| {
            format!(
                "cannot connect to libvirt at {}: {}",
                self.uri,
                error.message()
            )
        })?;
        if let Err(error) = connect.set_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT) {
            tracing::debug!(error = %error.message(), "libvirt keepalive not set");
        }
        Ok(connect)
    }
}

/// Why a call could not reach the domain.
pub(super) enum Unreachable {
    /// No connection to the daemon: why.
    Daemon(String),
    /// The daemon's lookup of the domain failed.
    Lookup(virt::error::Error),
}

/// Whether `text` is a UUID in libvirt's printed form (8-4-4-4-12 hex digits).
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.chars().all(|c| c.is_ascii_hexdigit()))
}
