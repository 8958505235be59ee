//! Splitting the agent's byte stream into reply lines, in bounded memory.
//!
//! Every agent reply is one line ending in `\n`; a resync reply is preceded by the byte
//! `0xFF`, which never occurs in UTF-8 JSON. A `guest-exec-status` reply can carry two
//! base64 output streams of up to 16 MiB each (about 45 MB on one line), so lines are not
//! buffered whole: [`LineScanner`] keeps the JSON structure of a line but only the first
//! [`STRING_KEEP_BYTES`] of each string, marking a cut string with a trailing `\u0000`
//! escape (never part of the agent's base64 output). The retained line is then small
//! enough to parse with `serde_json`. A line that grows past [`MAX_LINE_BYTES`] without
//! ending is no agent reply: the peer is hostile or broken and the connection is dropped.
//!
//! The scanner is a pure state machine over byte slices, tested without a socket.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How much of each JSON string in a reply is kept: enough for the base64 of the largest
/// output excerpt (`outputExcerptBytes` is at most 64 KiB) and for any error description.
pub const STRING_KEEP_BYTES: usize = 96 * 1024;

/// How much of one line is kept in all. A real agent's reply stays far below this once
/// strings are cut; a line over it is answered as a protocol fault (the line is still read
/// to its end, so the stream stays in step).
pub const MAX_RETAINED_BYTES: usize = 1024 * 1024;

/// The longest line accepted at all. The agent's largest reply (two 16 MiB streams in
/// base64 plus framing) is about 45 MB; anything longer is an endless line.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// The marker appended (as JSON text) to a string that was cut short.
pub const CUT_MARKER: char = '\0';
const CUT_MARKER_JSON: &[u8] = b"\\u0000";

/// The resync delimiter the agent writes before a `guest-sync-delimited` reply.
pub const DELIMITER: u8 = 0xFF;

/// One unit of the agent's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line (without its `\n`), with long strings cut.
    Line(Vec<u8>),
    /// A line whose retained form exceeded [`MAX_RETAINED_BYTES`]; it was read and dropped.
    Oversized,
    /// The `0xFF` byte that precedes a `guest-sync-delimited` reply.
    Delimiter,
}

/// Why the stream cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("the agent closed the connection")]
    Closed,
    /// The peer closed with part of a line unread: a reply was cut short, which is a fault,
    /// not a clean end.
    #[error("the agent closed the connection in the middle of a reply")]
    ClosedMidFrame,
    #[error("a reply line exceeded {MAX_LINE_BYTES} bytes without ending")]
    EndlessLine,
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the scanner stands inside a JSON escape sequence.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// After `\`: the escape character comes next.
    Char,
    /// After `\u`: this many hex digits come next.
    Hex(u8),
}

/// The incremental line scanner: feed it bytes, collect frames.
#[derive(Debug, Default)]
pub struct LineScanner {
    line: Vec<u8>,
    line_len: usize,
    oversized: bool,
    in_string: bool,
    escape: Escape,
    string_kept: usize,
    string_cut: bool,
}

impl LineScanner {
    /// Scans `input`, appending complete frames to `frames`. Consumes all of `input`.
    pub fn scan(&mut self, input: &[u8], frames: &mut Vec<Frame>) -> Result<(), FramingError> {
        let mut rest = input;
        while !rest.is_empty() {
            if self.in_string && self.string_cut && self.escape == Escape::None {
                // Fast path through the discarded part of a long string.
                match rest
                    .iter()
                    .position(|&b| matches!(b, b'"' | b'\\' | b'\n' | DELIMITER))
                {
                    Some(skip) => {
                        self.count(skip)?;
                        rest = &rest[skip..];
                    }
                    None => {
                        self.count(rest.len())?;
                        return Ok(());
                    }
                }
            }
            let byte = rest[0];
            rest = &rest[1..];
            self.push_byte(byte, frames)?;
        }
        Ok(())
    }

    fn count(&mut self, n: usize) -> Result<(), FramingError> {
        self.line_len += n;
        if self.line_len > MAX_LINE_BYTES {
            Err(FramingError::EndlessLine)
        } else {
            Ok(())
        }
    }

    fn push_byte(&mut self, byte: u8, frames: &mut Vec<Frame>) -> Result<(), FramingError> {
        match byte {
            DELIMITER => {
                // The agent resets its parser on 0xFF too: whatever came before on this
                // line is garbage.
                self.reset();
                frames.push(Frame::Delimiter);
                return Ok(());
            }
            b'\n' => {
                // A raw newline never occurs inside an agent's JSON string, so it always
                // ends the line, also after unbalanced garbage.
                let line = std::mem::take(&mut self.line);
                let oversized = self.oversized;
                self.reset();
                if oversized {
                    frames.push(Frame::Oversized);
                } else if !line.iter().all(u8::is_ascii_whitespace) {
                    frames.push(Frame::Line(line));
                }
                return Ok(());
            }
            _ => {}
        }
        self.count(1)?;
        if !self.in_string {
            if byte == b'"' {
                self.in_string = true;
                self.string_kept = 0;
                self.string_cut = false;
                self.escape = Escape::None;
            }
            self.keep(byte);
            return Ok(());
        }
        match self.escape {
            Escape::None => {}
            Escape::Char => {
                self.escape = if byte == b'u' {
                    Escape::Hex(4)
                } else {
                    Escape::None
                };
                self.keep_string_byte(byte);
                return Ok(());
            }
            Escape::Hex(left) => {
                self.escape = if left > 1 {
                    Escape::Hex(left - 1)
                } else {
                    Escape::None
                };
                self.keep_string_byte(byte);
                return Ok(());
            }
        }
        match byte {
            b'"' => {
                self.in_string = false;
                if self.string_cut {
                    self.keep_all(CUT_MARKER_JSON);
                }
                self.keep(byte);
            }
            b'\\' => {
                self.decide_cut(byte);
                self.escape = Escape::Char;
                self.keep_string_byte(byte);
            }
            _ => {
                self.decide_cut(byte);
                self.keep_string_byte(byte);
            }
        }
        Ok(())
    }

    /// Cuts a string only where a new character starts: never inside an escape sequence or
    /// a UTF-8 sequence, so the kept prefix stays valid JSON.
    fn decide_cut(&mut self, byte: u8) {
        let starts_char = !(0x80..0xC0).contains(&byte);
        if !self.string_cut && self.string_kept >= STRING_KEEP_BYTES && starts_char {
            self.string_cut = true;
        }
    }

    fn keep_string_byte(&mut self, byte: u8) {
        if !self.string_cut {
            self.string_kept += 1;
            self.keep(byte);
        }
    }

    fn keep(&mut self, byte: u8) {
        if self.oversized {
            return;
        }
        if self.line.len() >= MAX_RETAINED_BYTES {
            self.oversized = true;
            self.line = Vec::new();
            return;
        }
        self.line.push(byte);
    }

    fn keep_all(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.keep(b);
        }
    }

    fn reset(&mut self) {
        *self = LineScanner::default();
    }

    /// True when part of a line has been scanned and its end not yet: a stream that ends now
    /// ends in the middle of a frame. Whitespace between lines is not a frame.
    pub fn is_mid_frame(&self) -> bool {
        self.oversized || self.line.iter().any(|b| !b.is_ascii_whitespace())
    }
}

/// Reads frames from a stream: the read half of an agent connection.
pub struct FrameReader<R> {
    reader: R,
    buffer: BytesMut,
    scanner: LineScanner,
    ready: std::collections::VecDeque<Frame>,
    scratch: Vec<Frame>,
}

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R) -> Self {
        FrameReader {
            reader,
            buffer: BytesMut::with_capacity(READ_CHUNK),
            scanner: LineScanner::default(),
            ready: Default::default(),
            scratch: Vec::new(),
        }
    }

    /// The next frame. Cancel-safe: a cancelled call loses no bytes, since bytes are only
    /// taken out of the buffer after a completed read and scanned synchronously.
    pub async fn next_frame(&mut self) -> Result<Frame, FramingError> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Ok(frame);
            }
            if self.buffer.capacity() - self.buffer.len() < READ_CHUNK / 4 {
                self.buffer.reserve(READ_CHUNK);
            }
            let n = self.reader.read_buf(&mut self.buffer).await?;
            if n == 0 {
                return Err(if self.scanner.is_mid_frame() {
                    FramingError::ClosedMidFrame
                } else {
                    FramingError::Closed
                });
            }
            // The bytes are consumed whatever the scan says: a caller draining a broken
            // peer keeps reading, and must not rescan (and keep) what it read before.
            let scanned = self.scanner.scan(&self.buffer, &mut self.scratch);
            self.buffer.advance(self.buffer.len());
            self.ready.extend(self.scratch.drain(..));
            scanned?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(chunks: &[&[u8]]) -> Result<Vec<Frame>, FramingError> {
        let mut scanner = LineScanner::default();
        let mut frames = Vec::new();
        for chunk in chunks {
            scanner.scan(chunk, &mut frames)?;
        }
        Ok(frames)
    }

    fn line(text: &str) -> Frame {
        Frame::Line(text.as_bytes().to_vec())
    }

    #[test]
    fn splits_lines_and_delimiters_across_chunk_boundaries() {
        let frames = scan_all(&[
            b"{\"return\": {}}\n{\"ret",
            b"urn\": 1}\n\xff{\"return\": 7}\n",
        ])
        .unwrap();
        assert_eq!(
            frames,
            vec![
                line("{\"return\": {}}"),
                line("{\"return\": 1}"),
                Frame::Delimiter,
                line("{\"return\": 7}"),
            ]
        );
    }

    #[test]
    fn delimiter_discards_a_half_line_before_it() {
        let frames = scan_all(&[b"{\"retu\xff{\"return\": 7}\n"]).unwrap();
        assert_eq!(frames, vec![Frame::Delimiter, line("{\"return\": 7}")]);
    }

    #[test]
    fn blank_lines_are_not_frames() {
        assert_eq!(scan_all(&[b"\n  \n"]).unwrap(), vec![]);
    }

    #[test]
    fn long_strings_are_cut_with_a_marker_and_the_line_stays_valid_json() {
        let big = "A".repeat(STRING_KEEP_BYTES * 3);
        let text = format!(
            "{{\"return\": {{\"exitcode\": 0, \"out-data\": \"{big}\", \"x\": \"\\u00e9\"}}}}\n"
        );
        // Feed it in odd-sized chunks to cross every boundary.
        let bytes = text.as_bytes();
        let chunks: Vec<&[u8]> = bytes.chunks(7919).collect();
        let frames = scan_all(&chunks).unwrap();
        let [Frame::Line(kept)] = frames.as_slice() else {
            panic!("expected one line, got {frames:?}");
        };
        let value: serde_json::Value = serde_json::from_slice(kept).unwrap();
        let out = value["return"]["out-data"].as_str().unwrap();
        assert_eq!(out.len(), STRING_KEEP_BYTES + 1);
        assert!(out.ends_with(CUT_MARKER));
        assert_eq!(value["return"]["exitcode"], 0);
        assert_eq!(value["return"]["x"], "é");
    }

    #[test]
    fn a_cut_never_splits_an_escape_or_a_utf8_sequence() {
        for pad in 0..8 {
            let body = format!(
                "{}{}",
                "a".repeat(STRING_KEEP_BYTES - 3 + pad),
                "\\u00e9é\\\"".repeat(4)
            );
            let text = format!("{{\"s\": \"{body}\"}}\n");
            let frames = scan_all(&[text.as_bytes()]).unwrap();
            let [Frame::Line(kept)] = frames.as_slice() else {
                panic!("expected one line");
            };
            let parsed: Result<serde_json::Value, _> = serde_json::from_slice(kept);
            assert!(parsed.is_ok(), "pad {pad}: {:?}", parsed.err());
        }
    }

    #[test]
    fn a_line_with_too_much_to_retain_is_reported_oversized_and_the_next_line_survives() {
        let many = "1,".repeat(MAX_RETAINED_BYTES);
        let text = format!("[{many}1]\n{{\"return\": 1}}\n");
        let frames = scan_all(&[text.as_bytes()]).unwrap();
        assert_eq!(frames, vec![Frame::Oversized, line("{\"return\": 1}")]);
    }

    /// Feeds `scanner` a megabyte of `x` at a time, one more than a line may hold; the
    /// first error.
    fn scan_past_the_line_limit(scanner: &mut LineScanner) -> Result<(), FramingError> {
        let mut frames = Vec::new();
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..(MAX_LINE_BYTES / chunk.len() + 1) {
            scanner.scan(&chunk, &mut frames)?;
        }
        Ok(())
    }

    #[test]
    fn an_endless_line_is_an_error_before_memory_grows() {
        let mut scanner = LineScanner::default();
        let result = scan_past_the_line_limit(&mut scanner);
        assert!(matches!(result, Err(FramingError::EndlessLine)));
        assert!(scanner.line.capacity() <= MAX_RETAINED_BYTES * 2);
    }

    #[test]
    fn an_endless_string_is_an_error_too() {
        let mut scanner = LineScanner::default();
        scanner.scan(b"{\"s\": \"", &mut Vec::new()).unwrap();
        let result = scan_past_the_line_limit(&mut scanner);
        assert!(matches!(result, Err(FramingError::EndlessLine)));
    }

    #[tokio::test]
    async fn reading_on_after_an_endless_line_keeps_memory_bounded() {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(client);
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..(MAX_LINE_BYTES / chunk.len() + 64) {
                if tokio::io::AsyncWriteExt::write_all(&mut server, &chunk)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let mut errors = 0;
        while errors < 64 {
            match reader.next_frame().await {
                Err(FramingError::EndlessLine) => errors += 1,
                Err(_) => break,
                Ok(_) => {}
            }
            assert!(reader.buffer.capacity() <= 4 * READ_CHUNK + (1 << 20));
        }
        drop(reader);
        let _ = writer.await;
    }

    /// What the reader says after the first line of `bytes`, once the peer has closed.
    async fn end_after_one_line(bytes: &[u8]) -> FramingError {
        let (client, mut server) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(client);
        tokio::io::AsyncWriteExt::write_all(&mut server, bytes)
            .await
            .unwrap();
        drop(server);
        assert_eq!(reader.next_frame().await.unwrap(), line("{\"return\": {}}"));
        reader.next_frame().await.unwrap_err()
    }

    #[tokio::test]
    async fn reader_reports_a_closed_stream() {
        let end = end_after_one_line(b"{\"return\": {}}\n").await;
        assert!(matches!(end, FramingError::Closed), "{end:?}");
    }

    #[tokio::test]
    async fn eof_in_the_middle_of_a_frame_is_an_error_not_a_clean_close() {
        let end = end_after_one_line(b"{\"return\": {}}\n{\"return\": {\"pid").await;
        assert!(matches!(end, FramingError::ClosedMidFrame), "{end:?}");
    }

    #[tokio::test]
    async fn whitespace_after_the_last_line_is_a_clean_close() {
        let end = end_after_one_line(b"{\"return\": {}}\n  ").await;
        assert!(matches!(end, FramingError::Closed), "{end:?}");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// One line a real agent may write: a reply, a delimited sync reply, an error with
    /// escapes, or a reply with a string longer than what is kept.
    fn agent_line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (any::<u64>(), "[a-z é\"\\\\]{0,20}").prop_map(|(id, text)| format!(
                "{}\n",
                serde_json::json!({"return": {"text": text}, "id": id})
            )
            .into_bytes()),
            any::<u32>().prop_map(|id| {
                let mut line = vec![DELIMITER];
                line.extend_from_slice(format!("{{\"return\": {id}}}\n").as_bytes());
                line
            }),
            Just(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\ufffd'\"}}\n".to_vec()),
            (STRING_KEEP_BYTES - 8..STRING_KEEP_BYTES + 64, "[aé\\\\\"]{1,8}").prop_map(|(n, tail)| format!(
                "{}\n",
                serde_json::json!({"return": {"out-data": format!("{}{tail}", "A".repeat(n))}, "id": 1})
            )
            .into_bytes()),
        ]
    }

    /// Anything at all: agent lines or raw garbage (0xFF and newlines included).
    fn any_piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![agent_line(), proptest::collection::vec(any::<u8>(), 0..64)]
    }

    fn frames_of(chunks: &[&[u8]]) -> Result<Vec<Frame>, String> {
        let mut scanner = LineScanner::default();
        let mut frames = Vec::new();
        for chunk in chunks {
            scanner
                .scan(chunk, &mut frames)
                .map_err(|e| e.to_string())?;
        }
        Ok(frames)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn frames_do_not_depend_on_how_the_bytes_are_split(
            pieces in proptest::collection::vec(any_piece(), 1..12),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..16),
        ) {
            let bytes: Vec<u8> = pieces.concat();
            let whole = frames_of(&[&bytes]);
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            at.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in at {
                chunks.push(&bytes[start..cut]);
                start = cut;
            }
            chunks.push(&bytes[start..]);
            prop_assert_eq!(frames_of(&chunks), whole);
        }

        #[test]
        fn every_agent_line_stays_valid_json_when_long_strings_are_cut(
            pieces in proptest::collection::vec(agent_line(), 1..12),
        ) {
            let frames = frames_of(&[&pieces.concat()]).map_err(TestCaseError::fail)?;
            let lines: Vec<_> = frames
                .iter()
                .filter_map(|f| match f { Frame::Line(line) => Some(line), _ => None })
                .collect();
            prop_assert_eq!(lines.len(), pieces.len());
            for (line, piece) in lines.iter().zip(&pieces) {
                let parsed: serde_json::Value = serde_json::from_slice(line)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                // Either kept whole, or a prefix of the original ending in the cut marker.
                let start = piece.iter().position(|&b| b == b'{').unwrap_or(0);
                let original: serde_json::Value = serde_json::from_slice(&piece[start..])
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let (Some(kept), Some(whole)) = (
                    parsed["return"]["out-data"].as_str(),
                    original["return"]["out-data"].as_str(),
                ) else {
                    prop_assert_eq!(&parsed, &original);
                    continue;
                };
                if kept != whole {
                    let prefix = kept.strip_suffix(CUT_MARKER);
                    prop_assert!(prefix.is_some_and(|p| whole.starts_with(p)), "not a marked prefix");
                    prop_assert!(kept.len() >= STRING_KEEP_BYTES - 8);
                }
            }
        }
    }
}
