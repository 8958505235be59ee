//! Whatever a broken or hostile agent writes: the line scanner splits it (in chunks of a
//! size taken from the input), and every line goes through the reply parser and the
//! exec-status reader. None of it may panic, and kept lines stay within their bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virt_probe_gateway::agent::framing::{Frame, LineScanner, MAX_RETAINED_BYTES};
use virt_probe_gateway::agent::protocol::{parse_exec_started, parse_exec_status, parse_reply};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut scanner = LineScanner::default();
    let mut frames = Vec::new();
    for piece in bytes.chunks(chunk) {
        if scanner.scan(piece, &mut frames).is_err() {
            break;
        }
    }
    for frame in frames {
        let Frame::Line(line) = frame else { continue };
        assert!(line.len() <= MAX_RETAINED_BYTES + 16);
        if let Ok(reply) = parse_reply(&line) {
            if let Ok(value) = reply.outcome {
                let _ = parse_exec_started(&value);
                let _ = parse_exec_status(&value, 64);
            }
        }
    }
});
