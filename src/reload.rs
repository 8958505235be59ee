//! Reloading the config file while serving: on SIGHUP, and when the file changes.
//!
//! Kubernetes updates a ConfigMap volume by swapping a symlink (`..data`) in the mounted
//! directory: the file's own inode never changes and a watch on it sees nothing. So the
//! directory is watched; an event that names the file or one of the volume's `..` entries
//! triggers a read of the file by its path (events for other files in the directory are
//! ignored: they must not wake the gateway), and a read whose text is the same as the one
//! in force changes nothing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{self, LoadError, Overrides, Settings};

/// Events come in bursts (a ConfigMap swap is several renames): wait this long for quiet.
const SETTLE: Duration = Duration::from_millis(100);

/// The longest wait for quiet: a directory written more often than [`SETTLE`] is still read.
const MAX_SETTLE: Duration = Duration::from_secs(1);

/// Where the config comes from, and what to resolve it with.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub overrides: Overrides,
}

impl ConfigSource {
    /// Reads and resolves the file. The error is what `validate` prints, one problem per
    /// line, each with its field path.
    pub fn read(&self) -> Result<(String, Settings), String> {
        let shown = self.path.display().to_string();
        let text = std::fs::read_to_string(&self.path).map_err(|source| {
            LoadError::Read {
                path: shown.clone(),
                source,
            }
            .to_string()
        })?;
        let file = config::parse_document(&text).map_err(|errors| {
            LoadError::Invalid {
                path: shown.clone(),
                errors,
            }
            .to_string()
        })?;
        let settings = Settings::resolve(file, self.overrides.clone()).map_err(|errors| {
            LoadError::Invalid {
                path: shown,
                errors,
            }
            .to_string()
        })?;
        Ok((text, settings))
    }
}

/// A watch on the config file's directory.
pub struct ConfigWatch {
    events: mpsc::UnboundedReceiver<()>,
    /// A change was seen and not yet reported (it survives a cancelled [`ConfigWatch::changed`]).
    seen: bool,
    _watcher: notify::RecommendedWatcher,
}

impl ConfigWatch {
    pub fn start(path: &Path) -> Result<ConfigWatch, notify::Error> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().unwrap_or_default().to_os_string();
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) => {
                    if !event.kind.is_access()
                        && (event.need_rescan() || concerns_config(&event.paths, &name))
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
    pub async fn changed(&mut self) -> Option<()> {
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
