//! The qemu-guest-agent wire protocol (QGA): requests serialized from types, replies parsed
//! from the lines [`super::framing`] produces into types (a reply of the wrong shape is a
//! typed error, never a guess). Pure functions, tested without a socket.
//!
//! Arguments are always serialized as JSON values, never formatted into strings, so a
//! command argument with quotes or newlines reaches the guest unchanged.

use base64::Engine as _;
use serde::Deserialize as _;
use serde_json::{Value, json};

use super::framing::{CUT_MARKER, DELIMITER};

/// A command the gateway sends. Only these exist: nothing else can reach the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ping,
    /// `guest-exec` with output captured.
    Exec {
        path: String,
        args: Vec<String>,
    },
    ExecStatus {
        pid: i64,
    },
}

impl Command {
    /// The agent's name for the command.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ping => "guest-ping",
            Command::Exec { .. } => "guest-exec",
            Command::ExecStatus { .. } => "guest-exec-status",
        }
    }

    /// The request line, with `id` for matching the reply.
    pub fn encode(&self, id: u64) -> Vec<u8> {
        let request = Request {
            execute: self.name(),
            arguments: self.arguments(),
            id: Some(id),
        };
        let mut line = Vec::with_capacity(64);
        // Serializing these types cannot fail: strings, integers and a boolean.
        let _ = serde_json::to_writer(&mut line, &request);
        line.push(b'\n');
        line
    }

    /// The request as libvirt's agent command takes it: no id (libvirt matches replies
    /// itself) and no newline.
    pub fn request_text(&self) -> String {
        let request = Request {
            execute: self.name(),
            arguments: self.arguments(),
            id: None,
        };
        serde_json::to_string(&request).unwrap_or_default()
    }

    fn arguments(&self) -> Option<Arguments<'_>> {
        match self {
            Command::Ping => None,
            // A boolean: qemu-ga 7.2 rejects the mode strings of 8.0+.
            Command::Exec { path, args } => Some(Arguments::Exec {
                path,
                arg: args,
                capture_output: true,
            }),
            Command::ExecStatus { pid } => Some(Arguments::ExecStatus { pid: *pid }),
        }
    }
}

/// A request on the wire. Typed rather than built as a `Value`: one allocation per
/// request, on the path of every probe.
#[derive(serde::Serialize)]
struct Request<'a> {
    execute: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<Arguments<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Arguments<'a> {
    Exec {
        path: &'a str,
        arg: &'a [String],
        #[serde(rename = "capture-output")]
        capture_output: bool,
    },
    ExecStatus {
        pid: i64,
    },
}

/// The resync request: `0xFF` (which makes the agent drop any half-parsed input) and
/// `guest-sync-delimited`, whose reply comes after a `0xFF` of the agent's own.
pub fn encode_sync(sync_id: u64) -> Vec<u8> {
    let mut line = vec![DELIMITER];
    line.extend_from_slice(
        json!({"execute": "guest-sync-delimited", "arguments": {"id": sync_id}})
            .to_string()
            .as_bytes(),
    );
    line.push(b'\n');
    line
}

/// An id for a resync: random, so that a stale sync reply from an earlier client or
/// connection is never taken for ours. Kept below 2^53 so any JSON reader holds it exactly.
pub fn random_sync_id() -> u64 {
    fastrand::u64(1..(1 << 53))
}

/// An `{"error": ...}` reply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ErrorReply {
    #[serde(default, deserialize_with = "cut_text")]
    pub class: String,
    #[serde(default, deserialize_with = "cut_text")]
    pub desc: String,
}

/// A parsed reply line.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The echoed request id, when it is one of ours (an unsigned integer).
    pub id: Option<u64>,
    pub outcome: Result<Value, ErrorReply>,
}

/// A line that is not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unparsable reply: {0}")]
pub struct Unparsable(pub String);

/// A reply line as the agent writes it: `return` or `error`, and the echoed `id`.
#[derive(serde::Deserialize)]
struct WireReply {
    #[serde(default)]
    id: Option<Value>,
    #[serde(rename = "return")]
    returned: Option<Value>,
    error: Option<ErrorReply>,
}

/// Parses one reply line.
pub fn parse_reply(line: &[u8]) -> Result<Reply, Unparsable> {
    let wire: WireReply = serde_json::from_slice(line)
        .map_err(|e| Unparsable(format!("{e} in {}", preview(line))))?;
    let id = wire.id.as_ref().and_then(Value::as_u64);
    let outcome = match (wire.returned, wire.error) {
        (Some(value), _) => Ok(value),
        (None, Some(error)) => Err(error),
        (None, None) => {
            return Err(Unparsable(format!(
                "neither return nor error: {}",
                preview(line)
            )));
        }
    };
    Ok(Reply { id, outcome })
}

/// An error reply's text without the marker [`super::framing`] puts on a cut string; any
/// other JSON value there reads as empty (a hostile peer's class is not worth a fault).
fn cut_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let value = <Value as serde::Deserialize>::deserialize(deserializer)?;
    Ok(value
        .as_str()
        .map(|text| text.trim_end_matches(CUT_MARKER).to_string())
        .unwrap_or_default())
}

/// A short printable prefix of a line for error messages and logs.
pub fn preview(line: &[u8]) -> String {
    const PREVIEW: usize = 120;
    let text = String::from_utf8_lossy(&line[..line.len().min(PREVIEW)]);
    let mut shown: String = text
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    if line.len() > PREVIEW {
        shown.push('…');
    }
    format!("{shown:?}")
}

/// Captured output of a guest process: a bounded excerpt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputExcerpt {
    pub bytes: Vec<u8>,
    /// The stream was longer than the excerpt, or the agent cut it.
    pub truncated: bool,
}

/// A `guest-exec-status` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecStatus {
    pub exited: bool,
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub stdout: OutputExcerpt,
    pub stderr: OutputExcerpt,
}

/// The `return` of `guest-exec`.
#[derive(serde::Deserialize)]
struct ExecStarted {
    pid: i64,
}

/// The `return` of `guest-exec-status`, as the agent writes it. A process killed by a
/// signal has `signal` and no `exitcode`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ExecStatusReply {
    exited: bool,
    #[serde(rename = "exitcode")]
    exit_code: Option<i64>,
    signal: Option<i64>,
    out_data: Option<String>,
    err_data: Option<String>,
    #[serde(default)]
    out_truncated: bool,
    #[serde(default)]
    err_truncated: bool,
}

/// Reads the pid from a `guest-exec` reply.
pub fn parse_exec_started(value: &Value) -> Result<i64, String> {
    ExecStarted::deserialize(value)
        .map(|started| started.pid)
        .map_err(|e| {
            format!(
                "guest-exec reply: {e}: {}",
                preview(value.to_string().as_bytes())
            )
        })
}

/// Reads a `guest-exec-status` reply, keeping at most `excerpt_bytes` of each stream.
pub fn parse_exec_status(value: &Value, excerpt_bytes: usize) -> Result<ExecStatus, String> {
    let reply = ExecStatusReply::deserialize(value).map_err(|e| {
        format!(
            "guest-exec-status reply: {e}: {}",
            preview(value.to_string().as_bytes())
        )
    })?;
    Ok(ExecStatus {
        exited: reply.exited,
        exit_code: reply.exit_code,
        signal: reply.signal,
        stdout: output_excerpt(
            reply.out_data.as_deref(),
            reply.out_truncated,
            excerpt_bytes,
        ),
        stderr: output_excerpt(
            reply.err_data.as_deref(),
            reply.err_truncated,
            excerpt_bytes,
        ),
    })
}

/// Decodes the kept prefix of a base64 stream into an excerpt of at most `limit` bytes.
fn output_excerpt(base64: Option<&str>, agent_truncated: bool, limit: usize) -> OutputExcerpt {
    let Some(text) = base64 else {
        return OutputExcerpt {
            bytes: Vec::new(),
            truncated: agent_truncated,
        };
    };
    let cut_by_reader = text.ends_with(CUT_MARKER);
    let text = text.trim_end_matches(CUT_MARKER);
    // Decode only whole 4-character groups, and no more of them than the excerpt needs.
    let wanted_chars = limit.div_ceil(3) * 4;
    let usable = text.len().min(wanted_chars) / 4 * 4;
    // Bytes, not a str slice: a hostile peer's non-ASCII text must not split a character.
    let mut bytes = base64::engine::general_purpose::STANDARD
        .decode(&text.as_bytes()[..usable])
        .unwrap_or_default();
    let longer = bytes.len() > limit || usable < text.len() || cut_by_reader;
    bytes.truncate(limit);
    OutputExcerpt {
        bytes,
        truncated: agent_truncated || longer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_arguments_are_json_values_not_formatted_strings() {
        let command = Command::Exec {
            path: "sh".into(),
            args: vec!["-c".into(), "echo \"a\" 'b'\n\\".into()],
        };
        let line = command.encode(7);
        assert_eq!(line.last(), Some(&b'\n'));
        let request: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(request["execute"], "guest-exec");
        assert_eq!(request["id"], 7);
        assert_eq!(request["arguments"]["arg"][1], "echo \"a\" 'b'\n\\");
        assert_eq!(request["arguments"]["capture-output"], true);
    }

    #[test]
    fn each_command_is_one_json_line_with_its_arguments_and_id() {
        let lines = [
            (Command::Ping, json!({"execute": "guest-ping", "id": 1})),
            (
                Command::ExecStatus { pid: 42 },
                json!({"execute": "guest-exec-status", "arguments": {"pid": 42}, "id": 1}),
            ),
            (
                Command::Exec {
                    path: "true".into(),
                    args: vec![],
                },
                json!({
                    "execute": "guest-exec",
                    "arguments": {"path": "true", "arg": [], "capture-output": true},
                    "id": 1,
                }),
            ),
        ];
        for (command, expected) in lines {
            let line = command.encode(1);
            assert_eq!(
                line.iter().filter(|&&b| b == b'\n').count(),
                1,
                "{command:?}"
            );
            assert_eq!(line.last(), Some(&b'\n'));
            let request: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(request, expected);
        }
    }

    #[test]
    fn libvirts_request_has_no_id_and_the_same_arguments() {
        let command = Command::Exec {
            path: "/bin/sh".into(),
            args: vec!["-c".into(), "echo \"a\"".into()],
        };
        let text = command.request_text();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            json!({"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", "echo \"a\""], "capture-output": true}})
        );
        assert_eq!(Command::Ping.request_text(), r#"{"execute":"guest-ping"}"#);
    }

    #[test]
    fn sync_request_starts_with_the_delimiter_byte() {
        let line = encode_sync(42);
        assert_eq!(line[0], 0xFF);
        let request: Value = serde_json::from_slice(&line[1..]).unwrap();
        assert_eq!(request["execute"], "guest-sync-delimited");
        assert_eq!(request["arguments"]["id"], 42);
    }

    #[test]
    fn replies_carry_their_id_and_outcome() {
        let ok = parse_reply(br#"{"return": {}, "id": 9}"#).unwrap();
        assert_eq!(ok.id, Some(9));
        assert_eq!(ok.outcome, Ok(json!({})));
        let error = parse_reply(
            br#"{"error": {"class": "CommandNotFound", "desc": "Command guest-exec has been disabled"}}"#,
        )
        .unwrap();
        assert_eq!(error.id, None);
        assert_eq!(error.outcome.unwrap_err().class, "CommandNotFound");
    }

    #[test]
    fn foreign_ids_are_not_ours() {
        assert_eq!(
            parse_reply(br#"{"return": 1, "id": "x"}"#).unwrap().id,
            None
        );
        assert_eq!(parse_reply(br#"{"return": 1, "id": -3}"#).unwrap().id, None);
    }

    #[test]
    fn garbage_is_unparsable() {
        for line in [&b"hello"[..], b"[1]", br#"{"id": 1}"#, b"{\"return\":"] {
            assert!(parse_reply(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn exit_status_with_signal_has_no_exit_code() {
        let status = parse_exec_status(&json!({"exited": true, "signal": 9}), 16).unwrap();
        assert_eq!(status.exit_code, None);
        assert_eq!(status.signal, Some(9));
    }

    #[test]
    fn output_is_decoded_and_cut_to_the_excerpt() {
        let data = base64::engine::general_purpose::STANDARD.encode(b"hello world");
        let status = parse_exec_status(
            &json!({"exited": true, "exitcode": 0, "out-data": data, "err-data": data}),
            5,
        )
        .unwrap();
        assert_eq!(status.stdout.bytes, b"hello");
        assert!(status.stdout.truncated);
        let whole = parse_exec_status(
            &json!({"exited": true, "exitcode": 0, "out-data": data}),
            64,
        )
        .unwrap();
        assert_eq!(whole.stdout.bytes, b"hello world");
        assert!(!whole.stdout.truncated);
        assert!(whole.stderr.bytes.is_empty());
    }

    #[test]
    fn non_ascii_output_data_is_no_panic_just_no_excerpt() {
        let status = parse_exec_status(
            &json!({"exited": true, "exitcode": 0, "out-data": "aaaé", "err-data": "ééééé"}),
            3,
        )
        .unwrap();
        assert!(status.stdout.bytes.is_empty());
        assert!(status.stderr.bytes.is_empty());
    }

    #[test]
    fn a_stream_cut_by_the_reader_or_the_agent_is_truncated() {
        let data = base64::engine::general_purpose::STANDARD.encode(b"abcdef");
        let cut = format!("{data}{CUT_MARKER}");
        let status = parse_exec_status(
            &json!({"exited": true, "exitcode": 0, "out-data": cut, "err-data": data, "err-truncated": true}),
            64,
        )
        .unwrap();
        assert_eq!(status.stdout.bytes, b"abcdef");
        assert!(status.stdout.truncated);
        assert!(status.stderr.truncated);
    }
}
