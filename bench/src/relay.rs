//! The least any process between kubelet and the agent can cost: `gateway-bench relay`, a
//! blocking loop on one thread that reads a request head, sends `guest-ping` to the agent,
//! reads its reply line and writes a fixed `200`. No runtime, no epoll, no HTTP parsing
//! beyond finding the end of the head: four system calls per keep-alive probe.
//!
//! It is measured beside the gateway, in the same run and the same way, as the lower
//! bound of a relay on this machine: the gap between the raw ping and this relay is the
//! cost of one more process in the path (its wake-ups and the loopback TCP), which no
//! gateway can avoid; the gap between this relay and the gateway is the gateway's own.
//! It serves one connection at a time, so it is measured with one client only.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;

use crate::agent::RawAgent;

const OK_KEEP_ALIVE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
const OK_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";

/// Serves `listen` until killed.
pub fn serve(listen: SocketAddr, agent: &Path) -> ! {
    let mut agent = RawAgent::connect(agent);
    let listener = TcpListener::bind(listen).expect("relay: bind");
    loop {
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        let _ = serve_connection(stream, &mut agent);
    }
}

/// Answers each request on `stream` after one `guest-ping`, until the client closes or
/// asks to.
fn serve_connection(stream: TcpStream, agent: &mut RawAgent) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::with_capacity(128);
    loop {
        let mut close = false;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            close |= line.eq_ignore_ascii_case("connection: close\r\n");
        }
        agent.ping();
        if close {
            return writer.write_all(OK_CLOSE);
        }
        writer.write_all(OK_KEEP_ALIVE)?;
    }
}
