//! The maintenance pause: an operator pauses one VM's probes without restarting it (Windows
//! updates, a long filesystem freeze) by annotating the VM, and the running gateway sees it.
//!
//! The gateway reads its pod's annotations from a downward API volume
//! (`--pod-annotations FILE`: a `fieldRef` to `metadata.annotations`), which the injector
//! adds, and follows the file with the config file's watch: kubelet rewrites the volume with
//! the same `..data` symlink swap as a ConfigMap's. Two annotations pause the probes:
//! - [`MAINTENANCE_ANNOTATION`]: any value but `false`, `0` or empty; the value is the
//!   reason shown (`"Windows updates, CHG-1234"`), `true` shows the annotation's name;
//! - KubeVirt's [`KUBEVIRT_PAUSE_ANNOTATION`] (VEP 207), read as KubeVirt reads it: Go's
//!   `strconv.ParseBool` true (`1`, `t`, `T`, `true`, `TRUE`, `True`).
//!
//! While paused, liveness passes and readiness fails, both "paused for maintenance", and no
//! check runs (docs/checks.md says how this differs from VEP 207). An annotation set on a
//! VM reaches its running launcher pod only if virt-controller's
//! `--additional-launcher-annotations-sync` lists it (deploy/README.md).
//!
//! A file that cannot be read or parsed leaves the pause as it was, with an error in the
//! log: a kubelet mid-write must not flap the probes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::probe::{Pause, PauseWatch};
use crate::reload::ConfigWatch;

/// The gateway's own pause annotation.
pub(crate) const MAINTENANCE_ANNOTATION: &str = "probe-gateway.kubevirt.io/maintenance";
/// KubeVirt's pause of guestAgentPing probes (v1.9, VEP 207), honoured for every check.
pub(crate) const KUBEVIRT_PAUSE_ANNOTATION: &str = "kubevirt.io/pause-guest-agent-probes";

/// Follows the pod's annotations file and publishes the pause it gives. Dropping it stops
/// following.
pub(crate) struct PauseFollower {
    task: JoinHandle<()>,
}

impl Drop for PauseFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PauseFollower {
    /// Reads `path` now (so the first answer already knows a pause), then follows it on
    /// the current tokio runtime.
    pub(crate) fn start(path: PathBuf, metrics: Arc<Metrics>) -> (PauseFollower, PauseWatch) {
        let publish = watch::Sender::new(None);
        let watcher = match ConfigWatch::start(&path) {
            Ok(watch) => Some(watch),
            Err(error) => {
                tracing::error!(%error, path = %path.display(), "cannot watch the pod's annotations: a maintenance pause will not be seen");
                None
            }
        };
        update(&path, &publish, &metrics);
        let paused = publish.subscribe();
        let task = tokio::spawn(async move {
            let Some(mut watcher) = watcher else {
                return;
            };
            while watcher.changed().await.is_some() {
                update(&path, &publish, &metrics);
            }
        });
        (PauseFollower { task }, paused)
    }
}

/// Reads the file and publishes its pause if it changed.
fn update(path: &Path, publish: &watch::Sender<Option<Pause>>, metrics: &Metrics) {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %shown, "the pod's annotations file does not exist (yet); not paused");
            String::new()
        }
        Err(error) => {
            tracing::error!(path = %shown, %error, "cannot read the pod's annotations; the pause stays as it was");
            return;
        }
    };
    let annotations = match parse_annotations(&text) {
        Ok(annotations) => annotations,
        Err(error) => {
            tracing::error!(path = %shown, %error, "cannot read the pod's annotations; the pause stays as it was");
            return;
        }
    };
    let pause = pause_of(&annotations);
    let changed = publish.send_if_modified(|current| {
        if *current == pause {
            return false;
        }
        *current = pause.clone();
        true
    });
    metrics.probes_paused.set(i64::from(pause.is_some()));
    if changed {
        match &pause {
            Some(pause) => tracing::warn!(
                annotation = pause.annotation,
                note = pause.note.as_deref(),
                "probes paused for maintenance: liveness passes and readiness fails until the annotation goes"
            ),
            None => tracing::info!("maintenance pause over: the probes run their checks again"),
        }
    }
}

/// The pause the annotations give, if any; the gateway's own annotation first.
pub(crate) fn pause_of(annotations: &BTreeMap<String, String>) -> Option<Pause> {
    if let Some(value) = annotations.get(MAINTENANCE_ANNOTATION) {
        let value = value.trim();
        if !(value.is_empty() || parse_bool(value) == Some(false)) {
            let note = (parse_bool(value) != Some(true)).then(|| value.to_string());
            return Some(Pause {
                annotation: MAINTENANCE_ANNOTATION,
                note,
            });
        }
    }
    match annotations
        .get(KUBEVIRT_PAUSE_ANNOTATION)
        .map(String::as_str)
    {
        Some(value) if parse_bool(value) == Some(true) => Some(Pause {
            annotation: KUBEVIRT_PAUSE_ANNOTATION,
            note: None,
        }),
        Some(value) if parse_bool(value).is_none() => {
            tracing::warn!(
                value,
                "{KUBEVIRT_PAUSE_ANNOTATION} is not a boolean: not paused, as KubeVirt reads it"
            );
            None
        }
        _ => None,
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Reads a downward API annotations file: one `key="value"` line per annotation, the value
/// quoted as Go's `%q` writes it (kubelet's `fieldpath.FormatMap`), sorted by key, no
/// newline after the last. The error names the line that does not read.
pub(crate) fn parse_annotations(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut annotations = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = index + 1;
        let (key, quoted) = line
            .split_once('=')
            .ok_or_else(|| format!("line {number}: not key=\"value\""))?;
        let value = go_unquote(quoted).map_err(|why| format!("line {number} ({key}): {why}"))?;
        annotations.insert(key.to_string(), value);
    }
    Ok(annotations)
}

/// Undoes Go's `strconv.Quote`: a double-quoted string with Go's escapes. Bytes that are not
/// UTF-8 (written as `\xNN`) become U+FFFD.
fn go_unquote(quoted: &str) -> Result<String, String> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .ok_or("the value is not in double quotes")?;
    let mut bytes = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buffer = [0; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
            continue;
        }
        let escape = chars.next().ok_or("a lone \\ at the end")?;
        let simple = match escape {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            '\'' => Some(b'\''),
            _ => None,
        };
        if let Some(byte) = simple {
            bytes.push(byte);
            continue;
        }
        let mut digits = |count: usize, radix: u32| -> Result<u32, String> {
            let text: String = chars.by_ref().take(count).collect();
            if text.len() != count {
                return Err(format!("a short \\{escape} escape"));
            }
            u32::from_str_radix(&text, radix).map_err(|_| format!("a bad \\{escape} escape"))
        };
        match escape {
            'x' => bytes.push(u8::try_from(digits(2, 16)?).map_err(|e| e.to_string())?),
            'u' | 'U' => {
                let code = digits(if escape == 'u' { 4 } else { 8 }, 16)?;
                let c = char::from_u32(code)
                    .ok_or_else(|| format!("\\{escape}{code:x} is not a character"))?;
                let mut buffer = [0; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
            }
            '0'..='7' => {
                let rest = digits(2, 8)?;
                let code = escape.to_digit(8).unwrap_or(0) * 64 + rest;
                bytes.push(
                    u8::try_from(code).map_err(|_| "an octal escape above \\377".to_string())?,
                );
            }
            other => return Err(format!("an unknown escape \\{other}")),
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kubelets_file_reads_back_with_gos_escapes_undone() {
        // As kubelet writes it: sorted, %q values, no newline after the last line.
        let text = "kubevirt.io/domain=\"vm-fedora\"\nnote=\"say \\\"hi\\\"\\n\\tthen \\\\ \\u00e9 \\xff \\101\"\nprobe-gateway.kubevirt.io/maintenance=\"Windows updates, CHG-1234\"";
        let read = parse_annotations(text).unwrap();
        assert_eq!(read["kubevirt.io/domain"], "vm-fedora");
        assert_eq!(read["note"], "say \"hi\"\n\tthen \\ é \u{fffd} A");
        assert_eq!(read[MAINTENANCE_ANNOTATION], "Windows updates, CHG-1234");
        assert_eq!(parse_annotations(""), Ok(BTreeMap::new()));
    }

    #[test]
    fn a_line_that_does_not_read_is_named() {
        let error = parse_annotations("a=\"1\"\nb=unquoted\n").unwrap_err();
        assert_eq!(error, "line 2 (b): the value is not in double quotes");
        let error = parse_annotations("a=\"1\"\njunk").unwrap_err();
        assert_eq!(error, "line 2: not key=\"value\"");
        let error = parse_annotations("a=\"\\q\"").unwrap_err();
        assert_eq!(error, "line 1 (a): an unknown escape \\q");
    }

    #[test]
    fn the_maintenance_annotation_pauses_with_its_value_as_the_reason() {
        let pause = pause_of(&annotations(&[(MAINTENANCE_ANNOTATION, "Windows updates")]));
        assert_eq!(
            pause.unwrap().reason(),
            "paused for maintenance (Windows updates)"
        );
        let pause = pause_of(&annotations(&[(MAINTENANCE_ANNOTATION, "true")]));
        assert_eq!(
            pause.unwrap().reason(),
            "paused for maintenance (probe-gateway.kubevirt.io/maintenance)"
        );
        for off in ["", "false", "0", "False"] {
            assert_eq!(
                pause_of(&annotations(&[(MAINTENANCE_ANNOTATION, off)])),
                None,
                "{off:?}"
            );
        }
    }

    #[test]
    fn kubevirts_pause_annotation_is_read_as_kubevirt_reads_it() {
        for on in ["true", "1", "TRUE", "t"] {
            let pause = pause_of(&annotations(&[(KUBEVIRT_PAUSE_ANNOTATION, on)]));
            assert_eq!(
                pause.map(|p| p.annotation),
                Some(KUBEVIRT_PAUSE_ANNOTATION),
                "{on}"
            );
        }
        for off in ["false", "0", "yes", "foo", ""] {
            assert_eq!(
                pause_of(&annotations(&[(KUBEVIRT_PAUSE_ANNOTATION, off)])),
                None,
                "{off:?}"
            );
        }
        assert_eq!(pause_of(&annotations(&[("other", "true")])), None);
    }
}
