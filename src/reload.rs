//! Reloading the config file while serving: on SIGHUP, and when the file changes
//! ([`ConfigReloader`]). Without a config file SIGHUP is still caught, and only logged: its
//! default action would end the process.
//!
//! Kubernetes updates a ConfigMap volume by swapping a symlink (`..data`) in the mounted
//! directory: the file's own inode never changes and a watch on it sees nothing. So the
//! directory is watched; an event that names the file or one of the volume's `..` entries
//! triggers a read of the file by its path (events for other files in the directory are
//! ignored: they must not wake the gateway), and a read whose text is the same as the one
//! in force changes nothing.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::{self, CheckSettings, LoadError, Overrides, ResolveError, Settings};
use crate::kubevirt::vm::{VmKnowledge, settings_for_vm};
use crate::metrics::Metrics;
use crate::probe::InForce;

/// Events come in bursts (a ConfigMap swap is several renames): wait this long for quiet.
const SETTLE: Duration = Duration::from_millis(100);

/// The longest wait for quiet: a directory written more often than [`SETTLE`] is still read.
const MAX_SETTLE: Duration = Duration::from_secs(1);

/// Where the config comes from, and what to resolve it with.
#[derive(Debug, Clone)]
pub(crate) struct ConfigSource {
    pub path: PathBuf,
    pub overrides: Overrides,
}

impl ConfigSource {
    /// Reads and resolves the file. The error is what `validate` prints, one problem per
    /// line, each with its field path.
    pub(crate) fn read(&self) -> Result<(String, Settings), String> {
        let shown = self.path.display().to_string();
        let (file, text) = config::load_text(&self.path).map_err(|error| error.to_string())?;
        let settings = Settings::resolve(file, &self.overrides).map_err(|error| match error {
            ResolveError::Invalid(errors) => LoadError::Invalid {
                path: shown,
                errors,
            }
            .to_string(),
            error => format!("{shown}: {error}"),
        })?;
        Ok((text, settings))
    }
}

/// Why the config is read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadCause {
    /// SIGHUP: the file is read and put in force even when its text is the same.
    Hangup,
    /// A change in the file's directory: a read of the same text changes nothing.
    FileChanged,
}

/// Reloading: SIGHUP, and the config file's watch when there is a file.
pub(crate) struct ConfigReloader {
    file: Option<FollowedFile>,
    hangup: Option<Signal>,
}

/// The config file followed, and what of it is in force.
struct FollowedFile {
    source: ConfigSource,
    /// The text of the config in force.
    text: String,
    /// The checks in force as the file gives them (`vsock://vmi:PORT` unresolved).
    configured: CheckSettings,
    /// The listen address the file gave at start: a change is only logged.
    listen: SocketAddr,
    watch: Option<ConfigWatch>,
    /// Read the file at the next turn: it changed between its first read and the start
    /// of the watch, or its last read was rejected and the VM has changed since.
    pending: bool,
    /// The last read was rejected.
    rejected: bool,
}

impl ConfigReloader {
    /// Catches SIGHUP, and follows `config` when there is one: the file (its source and
    /// the text read) that `settings` came from. Watches before the gateway serves, so a
    /// change from now on is seen.
    pub(crate) fn start(
        config: Option<(ConfigSource, String)>,
        settings: &Settings,
    ) -> ConfigReloader {
        let hangup = signal(SignalKind::hangup())
            .map_err(|error| match config {
                Some(_) => tracing::warn!(%error, "cannot wait for SIGHUP"),
                None => tracing::warn!(%error, "cannot catch SIGHUP"),
            })
            .ok();
        let file = config.map(|(source, text)| {
            let watch = match ConfigWatch::start(&source.path) {
                Ok(watch) => Some(watch),
                Err(error) => {
                    tracing::warn!(%error, path = %source.path.display(), "cannot watch the config file; reload with SIGHUP");
                    None
                }
            };
            let pending = std::fs::read_to_string(&source.path).is_ok_and(|now| now != text);
            FollowedFile {
                source,
                text,
                configured: settings.checks.clone(),
                listen: settings.server.listen,
                watch,
                pending,
                rejected: false,
            }
        });
        ConfigReloader { file, hangup }
    }

    /// The checks as the config file gives them, if there is one.
    pub(crate) fn configured(&self) -> Option<&CheckSettings> {
        self.file.as_ref().map(|file| &file.configured)
    }

    /// After a definition: a config rejected for want of the VM's vsock CID may now be
    /// good, so it is read again rather than waiting for the next change.
    pub(crate) fn retry_if_rejected(&mut self) {
        if let Some(file) = self.file.as_mut() {
            file.pending |= file.rejected;
        }
    }

    /// The next reason to reload; `None` when none can come. A SIGHUP without a config
    /// file is logged here and waited past.
    pub(crate) async fn next(&mut self) -> Option<ReloadCause> {
        let has_file = self.file.is_some();
        loop {
            let watch = match self.file.as_mut() {
                Some(file) => {
                    if std::mem::take(&mut file.pending) {
                        return Some(ReloadCause::FileChanged);
                    }
                    file.watch.as_mut()
                }
                None => None,
            };
            tokio::select! {
                Some(()) = or_never(watch.map(ConfigWatch::changed)) => {
                    return Some(ReloadCause::FileChanged);
                }
                Some(()) = or_never(self.hangup.as_mut().map(Signal::recv)) => {
                    if has_file {
                        return Some(ReloadCause::Hangup);
                    }
                    tracing::info!("SIGHUP: there is no config file to reload");
                }
                else => return None,
            }
        }
    }

    /// Reads the file; a valid config replaces the one in force (requests in flight finish
    /// on the old one), resolved for `vm` when the gateway is a hook sidecar; an invalid
    /// one is logged with every error and the old one stays. Never waits.
    pub(crate) fn reload(
        &mut self,
        cause: ReloadCause,
        vm: Option<VmKnowledge>,
        in_force: &InForce,
        metrics: &Arc<Metrics>,
    ) {
        if let Some(file) = self.file.as_mut() {
            file.reload(cause, vm, in_force, metrics);
        }
    }
}

impl FollowedFile {
    fn reload(
        &mut self,
        cause: ReloadCause,
        vm: Option<VmKnowledge>,
        in_force: &InForce,
        metrics: &Arc<Metrics>,
    ) {
        let path = self.source.path.display().to_string();
        let read = self.source.read().and_then(|(text, configured)| {
            let checks = settings_for_vm(configured.checks.clone(), vm)
                .map_err(|problem| format!("{path}: {problem}"))?;
            Ok((text, configured, checks))
        });
        match read {
            Ok((text, ..)) if text == self.text && cause == ReloadCause::FileChanged => {
                self.rejected = false;
            }
            Ok((text, configured, checks)) => {
                if configured.server.listen != self.listen {
                    tracing::warn!(
                        configured = %configured.server.listen,
                        listening = %self.listen,
                        "listen changed in the config: it takes effect at the next restart"
                    );
                }
                let swapped = in_force.put(checks, metrics);
                let outcome = swapped.as_str();
                metrics.record_reload(outcome);
                tracing::info!(path, outcome, kept = swapped.kept(), "config reloaded");
                self.text = text;
                self.rejected = false;
                self.configured = configured.checks;
            }
            Err(errors) => {
                self.rejected = true;
                for line in errors.lines() {
                    tracing::error!(
                        error = line,
                        "config reload rejected; the config in force stays"
                    );
                }
                // Counted after it is logged: whoever sees the count finds the reasons.
                metrics.record_reload("rejected");
            }
        }
    }
}

/// Awaits `next` when there is one, or never: a `select!` branch for something that may
/// not exist (no config file, not a hook sidecar).
pub(crate) async fn or_never<T>(next: Option<impl Future<Output = Option<T>>>) -> Option<T> {
    match next {
        Some(next) => next.await,
        None => std::future::pending().await,
    }
}

/// A watch on the config file's directory.
pub(crate) struct ConfigWatch {
    events: mpsc::UnboundedReceiver<()>,
    /// A change was seen and not yet reported (it survives a cancelled [`ConfigWatch::changed`]).
    seen: bool,
    _watcher: notify::RecommendedWatcher,
}

impl ConfigWatch {
    pub(crate) fn start(path: &Path) -> Result<ConfigWatch, notify::Error> {
        Self::start_files(&[path])
    }

    /// One watch for files of one directory (the webhook's certificate and key): a change
    /// of any of them, or of the volume's `..` entries, is one change. `paths` must share
    /// their directory; the first one's is watched.
    pub(crate) fn start_files(paths: &[&Path]) -> Result<ConfigWatch, notify::Error> {
        let dir = match paths.first().and_then(|path| path.parent()) {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let names: Vec<OsString> = paths
            .iter()
            .map(|path| path.file_name().unwrap_or_default().to_os_string())
            .collect();
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) => {
                    if !event.kind.is_access()
                        && (event.need_rescan()
                            || names.iter().any(|name| concerns_config(&event.paths, name)))
                    {
                        let _ = tx.send(());
                    }
                }
                Err(error) => tracing::warn!(%error, "config watch"),
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(ConfigWatch {
            events,
            seen: false,
            _watcher: watcher,
        })
    }

    /// Waits for a change in the directory, then for the burst to settle: [`SETTLE`] of
    /// quiet, or at most [`MAX_SETTLE`] in a directory that keeps changing. Cancel-safe:
    /// a change seen before a cancellation is reported by the next call.
    pub(crate) async fn changed(&mut self) -> Option<()> {
        if !self.seen {
            self.events.recv().await?;
            self.seen = true;
        }
        let give_up = tokio::time::Instant::now() + MAX_SETTLE;
        while let Ok(Ok(Some(()))) =
            tokio::time::timeout_at(give_up, tokio::time::timeout(SETTLE, self.events.recv())).await
        {
        }
        self.seen = false;
        Some(())
    }
}

/// True if an event on `paths` may have changed the file named `name` in the watched
/// directory: it names that file (written, replaced by a rename, removed), or an entry
/// whose name starts with `..` (a ConfigMap volume's `..data` link and the timestamped
/// directory it points to), or no path at all (the kernel's queue overflowed).
fn concerns_config(paths: &[PathBuf], name: &OsStr) -> bool {
    paths.is_empty()
        || paths.iter().any(|path| {
            path.file_name()
                .is_some_and(|file| file == name || file.as_encoded_bytes().starts_with(b".."))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concerns(paths: &[&str]) -> bool {
        let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
        concerns_config(&paths, OsStr::new("gateway.yaml"))
    }

    #[test]
    fn events_naming_the_config_file_concern_it() {
        assert!(concerns(&["/etc/gw/gateway.yaml"]));
        // An editor's or sed's rename onto the file.
        assert!(concerns(&["/etc/gw/sedAb12", "/etc/gw/gateway.yaml"]));
    }

    #[test]
    fn a_configmap_symlink_swap_concerns_the_config_file() {
        assert!(concerns(&["/etc/gw/..data_tmp", "/etc/gw/..data"]));
        assert!(concerns(&["/etc/gw/..2026_12_01_08_00_00.123456789"]));
    }

    #[test]
    fn events_for_other_files_in_the_directory_do_not() {
        assert!(!concerns(&["/etc/gw/other.yaml"]));
        assert!(!concerns(&["/etc/gw/.gateway.yaml.swp"]));
        assert!(!concerns(&["/etc/gw/gateway.yaml.bak"]));
    }

    #[test]
    fn an_event_without_paths_is_taken_as_a_change() {
        assert!(concerns(&[]));
    }
}
