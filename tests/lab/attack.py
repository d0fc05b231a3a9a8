#!/usr/bin/python3
"""Attack and probe helpers for the ftpgate live matrix (tests/lab/lab.sh
`test --gw ftpgate`): a bounce attempt, a third host listening or knocking on
a pinhole port, and FTP clients that stop between announcing a data port and
using it, so a third host can try to get there first.

Every wait is bounded; every subcommand prints one result line that lab.sh
parses. Standard library only.

  listen ADDR PORT SECONDS           accept for SECONDS; print "ACCEPTED N [peers]"
  bounce HOST USER PASS LINE         login, send LINE (a PORT/EPRT naming a third
                                     host); if accepted, LIST; print BLOCKED/ACCEPTED
  active HOST USER PASS MODE CTL     login, listen, send PORT/EPRT (MODE port|eprt),
                                     print "READY", wait for CTL.go, LIST through the
                                     announced port, print "DATA ...", wait for
                                     CTL.late, check nobody else reached the
                                     listener, print "LATE ..."
  passive HOST USER PASS MODE CTL    the same with PASV/EPSV (MODE pasv|epsv): print
                                     "READY PORT", wait, connect, LIST, "DATA ...", wait
  knock SRC ADDR PORT TIMEOUT        connect from SRC to ADDR:PORT; print
                                     "CONNECTED" or "NOTHING reason"
"""
import ftplib
import os
import socket
import sys
import time


def wait_file(path, limit=30.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


def login(host, user, pw, timeout=10):
    f = ftplib.FTP()
    f.connect(host, 21, timeout=timeout)
    f.login(user, pw)
    f.voidcmd("TYPE I")
    # The control connection as the event log names its session
    # ("ip:port", IPv6 in brackets), so lab.sh can find this session's events.
    a = f.sock.getsockname()
    print(("CTL [%s]:%d" if f.sock.family == socket.AF_INET6 else "CTL %s:%d") % a[:2], flush=True)
    return f


def cmd_listen(addr, port, secs):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    s.listen(8)
    s.settimeout(0.2)
    print("READY", flush=True)
    peers = []
    end = time.monotonic() + float(secs)
    while time.monotonic() < end:
        try:
            c, peer = s.accept()
            peers.append("%s:%d" % (peer[0], peer[1]))
            c.close()
        except socket.timeout:
            pass
    print("ACCEPTED %d %s" % (len(peers), " ".join(peers)), flush=True)


def cmd_bounce(host, user, pw, line):
    f = login(host, user, pw, timeout=5)
    try:
        r = f.sendcmd(line)
    except (ftplib.Error, OSError, EOFError) as e:
        print("BLOCKED %s: %s" % (type(e).__name__, str(e).strip()), flush=True)
        return
    # The server took it: make it connect, as a real bounce would.
    try:
        f.sendcmd("LIST pub")
        print("ACCEPTED %s; LIST started" % r, flush=True)
    except (ftplib.Error, OSError, EOFError) as e:
        print("ACCEPTED %s; LIST: %s" % (r, str(e).strip()), flush=True)


def data_summary(conn, peer):
    conn.settimeout(10)
    chunks = []
    while True:
        b = conn.recv(65536)
        if not b:
            break
        chunks.append(b)
    conn.close()
    text = b"".join(chunks).decode("latin-1")
    names = all(n in text for n in ("0b.bin", "1k.bin", "1m.bin"))
    return "peer=%s bytes=%d listing=%s" % (peer, len(text), "ok" if names else "incomplete")


def cmd_active(host, user, pw, mode, ctl):
    f = login(host, user, pw)
    fam = f.sock.family
    me = f.sock.getsockname()[0]
    lst = socket.socket(fam, socket.SOCK_STREAM)
    lst.bind((me, 0))
    lst.listen(4)
    port = lst.getsockname()[1]
    if mode == "port":
        f.sendcmd("PORT %s,%d,%d" % (me.replace(".", ","), port >> 8, port & 255))
    else:
        f.sendcmd("EPRT |%d|%s|%d|" % (2 if fam == socket.AF_INET6 else 1, me, port))
    print("READY %d" % port, flush=True)
    if not wait_file(ctl + ".go"):
        print("DATA timeout waiting for go", flush=True)
        return
    # Whoever reached the listener first is in its queue now.
    lst.settimeout(0.3)
    try:
        early, epeer = lst.accept()
        early.close()
        print("DATA early connection from %s before LIST" % epeer[0], flush=True)
        return
    except socket.timeout:
        pass
    f.putcmd("LIST pub")
    resp = f.getresp()
    if not resp.startswith("1"):
        print("DATA LIST refused: %s" % resp, flush=True)
        return
    lst.settimeout(10)
    try:
        conn, peer = lst.accept()
    except socket.timeout:
        print("DATA no data connection within 10 s", flush=True)
        return
    summary = data_summary(conn, peer[0])
    done = f.voidresp()
    print("DATA %s; %s" % (summary, done[:3]), flush=True)
    if not wait_file(ctl + ".late"):
        print("LATE timeout waiting for late", flush=True)
        return
    lst.settimeout(0.5)
    try:
        c, p = lst.accept()
        c.close()
        print("LATE connection from %s" % p[0], flush=True)
    except socket.timeout:
        print("LATE none", flush=True)
    lst.close()
    try:
        f.quit()
    except (ftplib.Error, OSError, EOFError):
        pass


def cmd_passive(host, user, pw, mode, ctl):
    f = login(host, user, pw)
    peer_host = f.sock.getpeername()[0]
    if mode == "pasv":
        _, port = ftplib.parse227(f.sendcmd("PASV"))
    else:
        _, port = ftplib.parse229(f.sendcmd("EPSV"), f.sock.getpeername())
    print("READY %d" % port, flush=True)
    if not wait_file(ctl + ".go"):
        print("DATA timeout waiting for go", flush=True)
        return
    conn = socket.create_connection((peer_host, port), timeout=10)
    f.putcmd("LIST pub")
    resp = f.getresp()
    if not resp.startswith("1"):
        print("DATA LIST refused: %s" % resp, flush=True)
        return
    summary = data_summary(conn, peer_host)
    done = f.voidresp()
    print("DATA %s; %s" % (summary, done[:3]), flush=True)
    if not wait_file(ctl + ".late"):
        print("LATE timeout waiting for late", flush=True)
        return
    print("LATE done", flush=True)
    try:
        f.quit()
    except (ftplib.Error, OSError, EOFError):
        pass


def cmd_knock(src, addr, port, timeout):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(float(timeout))
    me = s.getsockname()
    # The source as the event log writes it, so lab.sh can find the drop.
    me = ("[%s]:%d" if fam == socket.AF_INET6 else "%s:%d") % me[:2]
    try:
        s.connect((addr, int(port)))
    except socket.timeout:
        print("NOTHING timeout src=%s" % me, flush=True)
        return
    except OSError as e:
        print("NOTHING %s src=%s" % (e.strerror or e, me), flush=True)
        return
    print("CONNECTED src=%s" % me, flush=True)
    s.close()


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = sys.argv[1], sys.argv[2:]
    try:
        {"listen": cmd_listen, "bounce": cmd_bounce, "active": cmd_active,
         "passive": cmd_passive, "knock": cmd_knock}[cmd](*args)
    except (ftplib.Error, OSError, EOFError) as e:
        print("ERROR %s: %s" % (type(e).__name__, str(e).strip()), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
