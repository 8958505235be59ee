#!/usr/bin/env python3
"""Boots the test guest once and proves both agents answer; prints timings.

    tests/vm/smoke.py [VMLINUX INITRD]     (default: whatever build-guest.sh prints)

Starts QEMU (TCG, daemonized), then on each port: resync, guest-ping, guest-exec of
`cat /proc/uptime`; on the control port also sleep/false/head; then kills the
gateway's agent through the control port and waits for the restart loop to bring it
back. Always kills QEMU (by its pidfile) before exiting.

Every request's reply is read before a socket is closed: the guest side of a
virtio-serial port outlives host connections, so an unread reply would land on the
next client (and bytes left half-written stay in the agent's parser).
"""
from concurrent.futures import ThreadPoolExecutor
import base64, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
PORTS = {"qga0": "org.qemu.guest_agent.0", "control": "org.probe-gateway.test.control"}


def qemu_cmd(d, kernel, initrd):
    """The command line README.md documents. TCG only: this host's /dev/kvm cannot run
    a stock kernel. No -cpu max: measured ~0.4 s slower to boot than the default."""
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", "256",
           "-nodefaults", "-no-reboot", "-nographic",
           "-serial", f"file:{d}/console.log",
           "-kernel", kernel, "-initrd", initrd,
           "-append", "console=ttyS0 quiet panic=-1",
           "-device", "virtio-serial-pci"]
    for tag, name in PORTS.items():
        cmd += ["-chardev", f"socket,path={d}/{tag}.sock,server=on,wait=off,id={tag}",
                "-device", f"virtserialport,chardev={tag},name={name}"]
    return cmd + ["-pidfile", f"{d}/qemu.pid", "-daemonize"]


class Agent:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.buf = b""
        self.next_id = int(time.time() * 1000) % 1000000

    def _fill(self, deadline):
        self.s.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError("socket closed")
        self.buf += chunk

    def sync(self, timeout):
        """guest-sync-delimited: skip everything up to 0xFF, then up to our id."""
        self.next_id += 1
        n = self.next_id
        req = {"execute": "guest-sync-delimited", "arguments": {"id": n}}
        self.s.sendall(b"\xff" + json.dumps(req).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while b"\xff" not in self.buf:
            self._fill(deadline)
        self.buf = self.buf[self.buf.rindex(b"\xff") + 1:]
        while True:
            while b"\n" not in self.buf:
                self._fill(deadline)
            line, self.buf = self.buf.split(b"\n", 1)
            if line.strip() and json.loads(line).get("return") == n:
                return

    def call(self, execute, arguments=None, timeout=30):
        req = {"execute": execute}
        if arguments is not None:
            req["arguments"] = arguments
        self.s.sendall(json.dumps(req).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\n", 1)
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{execute}: {reply['error']}")
        return reply["return"]

    def run(self, path, *args, timeout=30):
        pid = self.call("guest-exec", {"path": path, "arg": list(args),
                                       "capture-output": True})["pid"]
        deadline = time.monotonic() + timeout
        while True:
            st = self.call("guest-exec-status", {"pid": pid})
            if st["exited"]:
                out = base64.b64decode(st.get("out-data", ""))
                return st.get("exitcode"), out
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} {args} still running")
            time.sleep(0.001)

    def close(self):
        self.s.close()


def ms(xs):
    xs = sorted(xs)
    return (f"p50 {statistics.median(xs) * 1e3:.2f} ms, "
            f"p95 {xs[int(len(xs) * 0.95) - 1] * 1e3:.2f} ms, max {xs[-1] * 1e3:.2f} ms (n={len(xs)})")


def main():
    if len(sys.argv) == 3:
        kernel, initrd = sys.argv[1:]
    else:
        out = subprocess.run([os.path.join(HERE, "build-guest.sh")], check=True,
                             stdout=subprocess.PIPE, text=True).stdout.split()
        kernel, initrd = out[-2:]
    d = tempfile.mkdtemp(prefix="vpg-vm-")
    cmd = qemu_cmd(d, kernel, initrd)
    print("qemu:", " ".join(cmd))
    ok = False
    t0 = time.monotonic()
    subprocess.run(cmd, check=True)
    try:
        def first_ping(tag):
            a = Agent(f"{d}/{tag}.sock")
            # No agent yet: our bytes wait in the socket until qemu-ga opens the port.
            a.sync(timeout=120)
            a.call("guest-ping")
            print(f"{tag}: first guest-ping {time.monotonic() - t0:.2f} s after QEMU start")
            return a
        with ThreadPoolExecutor() as pool:
            agents = dict(zip(PORTS, pool.map(first_ping, PORTS)))
        with open(f"{d}/console.log") as f:
            assert "vpg-guest: agents started" in f.read(), "no 'agents started' on console"

        for tag, a in agents.items():
            pings = []
            for _ in range(200):
                t = time.monotonic(); a.call("guest-ping"); pings.append(time.monotonic() - t)
            execs = []
            for _ in range(30):
                t = time.monotonic()
                code, out = a.run("cat", "/proc/uptime")
                execs.append(time.monotonic() - t)
                assert code == 0 and out.strip(), (code, out)
            print(f"{tag}: guest-ping {ms(pings)}")
            print(f"{tag}: guest-exec cat + status {ms(execs)}; guest uptime {out.decode().split()[0]} s")

        c = agents["control"]
        t = time.monotonic(); code, _ = c.run("sleep", "1")
        print(f"control: sleep 1 -> exit {code} in {time.monotonic() - t:.2f} s")
        code, _ = c.run("false"); assert code == 1, code
        code, out = c.run("head", "-c", "1000000", "/dev/zero"); assert code == 0 and len(out) == 1000000
        code, out = c.run("pgrep", "qemu-ga"); assert code == 0 and len(out.split()) == 2, out
        print("control: false -> 1, head -c 1000000 -> 1000000 bytes, pgrep qemu-ga ->",
              " ".join(out.decode().split()))

        # The restart loop: kill the gateway's agent from inside, wait for its successor.
        code, _ = c.run("sh", "-c", "kill $(cat /run/qga0.pid)"); assert code == 0
        t = time.monotonic()
        agents["qga0"].sync(timeout=30)
        agents["qga0"].call("guest-ping")
        print(f"qga0: back {time.monotonic() - t:.2f} s after kill (restart loop)")
        # QEMU's host memory (VmRSS of the process), for sizing parallel test runs.
        with open(f"{d}/qemu.pid") as f, open(f"/proc/{int(f.read())}/status") as st:
            rss = next(l.split()[1] for l in st if l.startswith("VmRSS"))
        print(f"qemu: {int(rss) // 1024} MB resident")
        for a in agents.values():
            a.close()
        ok = True
    finally:
        with open(f"{d}/qemu.pid") as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
        if ok:
            shutil.rmtree(d)
            print(f"qemu {pid} stopped")
        else:
            print(f"qemu {pid} stopped; console log kept: {d}/console.log")


if __name__ == "__main__":
    main()
