//! Reloading the config file while serving: on SIGHUP, and when the file changes.
//!
//! Kubernetes updates a ConfigMap volume by swapping a symlink (`..data`) in the mounted
//! directory: the file's own inode never changes and a watch on it sees nothing. So the
//! directory is watched, every event in it triggers a read of the file by its path, and a
//! read whose text is the same as the one in force changes nothing.

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
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) if event.kind.is_access() => {}
                Ok(_) => {
                    let _ = tx.send(());
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
