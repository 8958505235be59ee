#!/usr/bin/env python3
"""probes.py PORT MODE COUNT: COUNT GET /live probes. MODE: close (new connection each,
back to back), apart (new connection each, 50 ms between: each its own burst, as kubelet's),
keepalive (one connection), wait (until the gateway answers /healthz, up to 60 s)."""
import socket, sys, time

port, mode, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])

def read_response(sock, buf):
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("connection closed early")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    return rest[length:]

def request(close):
    c = b"close" if close else b"keep-alive"
    return b"GET /live HTTP/1.1\r\nHost: bench\r\nUser-Agent: kube-probe/1.31\r\nAccept: */*\r\nConnection: " + c + b"\r\n\r\n"

if mode == "wait":
    deadline = time.monotonic() + 60
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            if s.recv(16).startswith(b"HTTP/1.1 200"):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("the gateway did not start")
            time.sleep(0.1)
elif mode == "keepalive":
    s = socket.create_connection(("127.0.0.1", port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    for _ in range(count):
        s.sendall(request(False)); buf = read_response(s, buf)
    s.close()
else:
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(request(True)); read_response(s, b""); s.close()
        if mode == "apart":
            time.sleep(0.05)
