#!/usr/bin/env python3
"""meshgate's memory per idle client connection.

Opens N client connections to a running gateway's bootstrap port, has each send one ApiVersions
request (as every client does first), and prints the gateway's RSS at start, with the connections
open, after the requests, and after they close.

    python3 benches/idle_connections.py [--bootstrap 127.0.0.1:9092] [--pid PID] [-n 1000]

The gateway's pid defaults to the only `meshgate run` process. Needs `ulimit -n` above N.
"""

import argparse
import socket
import struct
import subprocess
import time


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def api_versions(s: socket.socket, correlation_id: int):
    """ApiVersions v0: header (key 18, version 0, correlation id, client id), empty body."""
    client = b"idle"
    header = struct.pack(">hhih", 18, 0, correlation_id, len(client)) + client
    s.sendall(struct.pack(">i", len(header)) + header)
    size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
    s.recv(size, socket.MSG_WAITALL)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--pid", type=int)
    ap.add_argument("-n", type=int, default=1000)
    args = ap.parse_args()
    pid = args.pid or int(subprocess.check_output(["pgrep", "-f", "meshgate run"]).split()[0])
    host, port = args.bootstrap.rsplit(":", 1)
    print(f"start: {rss_mb(pid):.1f} MB")
    conns = [socket.create_connection((host, int(port))) for _ in range(args.n)]
    time.sleep(1)
    print(f"{args.n} connections open: {rss_mb(pid):.1f} MB")
    for i, s in enumerate(conns):
        api_versions(s, i)
    time.sleep(1)
    after = rss_mb(pid)
    print(f"after one ApiVersions each: {after:.1f} MB")
    for s in conns:
        s.close()
    time.sleep(2)
    print(f"closed: {rss_mb(pid):.1f} MB (the allocator keeps freed pages)")


if __name__ == "__main__":
    main()
