//! A minimal HTTP/1.1 client, so what is measured is the gateway and not a client library:
//! a GET and the status line, the headers and a `Content-Length` body.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

/// One keep-alive connection.
pub struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    line: String,
    body: Vec<u8>,
}

impl Connection {
    pub fn open(address: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            line: String::with_capacity(256),
            body: Vec::with_capacity(1024),
        })
    }

    /// GET `path`; the status code.
    pub fn get(&mut self, path: &str, close: bool) -> std::io::Result<u16> {
        let connection = if close { "close" } else { "keep-alive" };
        write!(
            self.writer,
            "GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: kube-probe/1.31\r\nAccept: */*\r\nConnection: {connection}\r\n\r\n"
        )?;
        self.line.clear();
        self.reader.read_line(&mut self.line)?;
        let status = self
            .line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {:?}", self.line)))?;
        let mut length = 0usize;
        loop {
            self.line.clear();
            self.reader.read_line(&mut self.line)?;
            if self.line == "\r\n" || self.line.is_empty() {
                break;
            }
            if let Some((name, value)) = self.line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        self.body.resize(length, 0);
        self.reader.read_exact(&mut self.body)?;
        Ok(status)
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// GET `path` on a new connection, as kubelet does for each probe.
pub fn get_once(address: SocketAddr, path: &str) -> std::io::Result<u16> {
    Connection::open(address)?.get(path, true)
}

/// GET `path` on a new connection; the body as text.
pub fn get_text(address: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut connection = Connection::open(address)?;
    connection.get(path, true)?;
    Ok(String::from_utf8_lossy(connection.body()).into_owned())
}
