#!/usr/bin/python3
"""A Python ftplib client for the ftpgate lab that uses exactly the data mode
it is told to (PASV, EPSV, PORT or EPRT) on either address family.

ftplib picks the mode from the address family (PASV/PORT on IPv4, EPSV/EPRT
on IPv6); the lab needs every mode on IPv4 too, so the two methods that
choose are overridden. The protocol transcript (``*cmd*``/``*resp*`` lines,
password masked by ftplib) goes to stdout for the lab to check which data
commands were really sent.

usage: ftpclient.py --host H --user U --password P --mode pasv|epsv|port|eprt
                    [--timeout S] [--list DIR LOCAL] [--get REMOTE LOCAL]
                    [--put LOCAL REMOTE] ...
Operations run in the order given, over one control connection.
"""
import argparse
import ftplib
import socket
import sys


class LabFTP(ftplib.FTP):
    mode = "pasv"

    def makepasv(self):
        if self.mode == "pasv":
            # Like ftplib's default: connect to the control peer, not to the
            # address in the 227 reply (which a NAT may have left private).
            _, port = ftplib.parse227(self.sendcmd("PASV"))
            return self.sock.getpeername()[0], port
        return ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())

    def makeport(self):
        sock = socket.create_server(("", 0), family=self.af, backlog=1)
        port = sock.getsockname()[1]
        host = self.sock.getsockname()[0]
        if self.mode == "port":
            self.sendport(host, port)
        else:
            self.sendeprt(host, port)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        return sock


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=21)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--mode", choices=["pasv", "epsv", "port", "eprt"], required=True)
    ap.add_argument("--timeout", type=float, default=15.0)
    ap.add_argument("--list", nargs=2, action="append", metavar=("DIR", "LOCAL"), dest="ops_list")
    ap.add_argument("--get", nargs=2, action="append", metavar=("REMOTE", "LOCAL"), dest="ops_get")
    ap.add_argument("--put", nargs=2, action="append", metavar=("LOCAL", "REMOTE"), dest="ops_put")
    # Keep the operations in command-line order.
    ops = []
    argv = sys.argv[1:]
    i = 0
    while i < len(argv):
        if argv[i] in ("--list", "--get", "--put") and i + 2 < len(argv):
            ops.append((argv[i][2:], argv[i + 1], argv[i + 2]))
            i += 3
        else:
            i += 1
    args = ap.parse_args()

    if args.mode == "port" and ":" in args.host:
        print("ERROR: PORT cannot carry an IPv6 address", file=sys.stderr)
        return 2

    ftp = LabFTP(timeout=args.timeout)
    ftp.mode = args.mode
    ftp.set_debuglevel(1)
    try:
        ftp.connect(args.host, args.port)
        ftp.login(args.user, args.password)
        ftp.set_pasv(args.mode in ("pasv", "epsv"))
        ftp.voidcmd("TYPE I")
        for op, a, b in ops:
            if op == "list":
                with open(b, "w") as out:
                    ftp.retrlines("LIST " + a, lambda line: out.write(line + "\n"))
            elif op == "get":
                with open(b, "wb") as out:
                    ftp.retrbinary("RETR " + a, out.write, blocksize=65536)
            else:
                with open(a, "rb") as src:
                    ftp.storbinary("STOR " + b, src, blocksize=65536)
        ftp.quit()
    except (ftplib.all_errors) as e:
        print("ERROR: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.stdout.flush()
        return 1
    finally:
        ftp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
