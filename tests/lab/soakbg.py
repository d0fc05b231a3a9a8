#!/usr/bin/python3
"""Background TCP and UDP traffic for the ftpgate soak (tests/lab/soak.sh).
Standard library only; every loop ends by its deadline.

  tcp-sink ADDR PORT SECONDS        accept connections until SECONDS have
                                    passed; one line per connection:
                                    "conn BYTES SHA256"
  tcp-send DST PORT RATE SECONDS    one long connection at RATE bytes/s for
                                    SECONDS, plus a short one (64 KB) every 5 s;
                                    one line per connection: "conn BYTES SHA256"
  udp-sink ADDR PORT SECONDS        count datagrams (unique sequence numbers)
                                    until SECONDS have passed: "udp RECEIVED BYTES"
  udp-send DST PORT PPS SECONDS     PPS datagrams/s of 200 bytes: "udp SENT BYTES"

The data is pseudo-random (seeded per connection) so a sha256 match on both
ends means every byte arrived intact and in order.
"""
import hashlib
import random
import selectors
import socket
import sys
import threading
import time


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def tcp_sink(addr, port, secs):
    end = time.monotonic() + float(secs)
    lst = socket.socket(family(addr), socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((addr, int(port)))
    lst.listen(16)
    lst.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lst, selectors.EVENT_READ, None)
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.5):
            if key.data is None:
                c, _ = lst.accept()
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ, [0, hashlib.sha256()])
                continue
            st = key.data
            try:
                b = key.fileobj.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                print("conn error %s" % e, flush=True)
                sel.unregister(key.fileobj)
                key.fileobj.close()
                continue
            if b:
                st[0] += len(b)
                st[1].update(b)
            else:
                print("conn %d %s" % (st[0], st[1].hexdigest()), flush=True)
                sel.unregister(key.fileobj)
                key.fileobj.close()
    for key in list(sel.get_map().values()):
        if key.data is not None:
            print("conn unfinished %d" % key.data[0], flush=True)


def send_stream(dst, port, total_bytes, rate, seed, out):
    rnd = random.Random(seed)
    h = hashlib.sha256()
    sent = 0
    try:
        s = socket.create_connection((dst, int(port)), timeout=30)
        t0 = time.monotonic()
        while sent < total_bytes:
            n = min(16384, total_bytes - sent)
            b = rnd.randbytes(n)
            s.sendall(b)
            h.update(b)
            sent += n
            if rate:
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(30)
        while s.recv(4096):
            pass
        s.close()
        out.append("conn %d %s" % (sent, h.hexdigest()))
    except OSError as e:
        out.append("conn error %s after %d bytes" % (e, sent))


def tcp_send(dst, port, rate, secs):
    rate, secs = int(rate), float(secs)
    out = []
    long_one = threading.Thread(target=send_stream, args=(dst, port, int(rate * secs), rate, 1, out))
    long_one.start()
    end = time.monotonic() + secs
    seed = 100
    while time.monotonic() < end:
        send_stream(dst, port, 65536, 0, seed, out)
        seed += 1
        time.sleep(min(5.0, max(0.0, end - time.monotonic())))
    long_one.join(timeout=secs + 60)
    for line in out:
        print(line, flush=True)


def udp_sink(addr, port, secs):
    end = time.monotonic() + float(secs)
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.bind((addr, int(port)))
    s.settimeout(0.5)
    seen, nbytes = set(), 0
    while time.monotonic() < end:
        try:
            b = s.recv(2048)
        except socket.timeout:
            continue
        if len(b) >= 8:
            seen.add(int.from_bytes(b[:8], "big"))
            nbytes += len(b)
    print("udp %d %d" % (len(seen), nbytes), flush=True)


def udp_send(dst, port, pps, secs):
    pps, secs = float(pps), float(secs)
    s = socket.socket(family(dst), socket.SOCK_DGRAM)
    pad = bytes(192)
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < secs:
        s.sendto(n.to_bytes(8, "big") + pad, (dst, int(port)))
        n += 1
        ahead = n / pps - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
    print("udp %d %d" % (n, n * 200), flush=True)


def main():
    cmds = {"tcp-sink": tcp_sink, "tcp-send": tcp_send, "udp-sink": udp_sink, "udp-send": udp_send}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        return 2
    cmds[sys.argv[1]](*sys.argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
