"""Short FTP sessions for bench/run.sh: P worker processes, each looping
(connect, login, PASV, RETR of a 1 KB file, QUIT) until the deadline, so the
gateway sees many sessions in parallel rather than one Python loop's pace.

usage: short_sessions.py HOST USER PASS PROCS SECONDS
prints: "ok=N failed=N seconds=S" (S = the measured window)
"""
import ftplib
import io
import multiprocessing
import sys
import time


def worker(args):
    host, user, pw, deadline = args
    ok = failed = 0
    while time.monotonic() < deadline:
        try:
            f = ftplib.FTP()
            f.connect(host, 21, timeout=5)
            f.login(user, pw)
            f.set_pasv(True)
            buf = io.BytesIO()
            f.retrbinary("RETR pub/1k.bin", buf.write)
            f.quit()
            if len(buf.getvalue()) == 1024:
                ok += 1
            else:
                failed += 1
        except Exception:
            failed += 1
    return ok, failed


def main():
    host, user, pw, procs, secs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    t0 = time.monotonic()
    deadline = t0 + secs
    with multiprocessing.Pool(procs) as pool:
        res = pool.map(worker, [(host, user, pw, deadline)] * procs)
    # Sessions started before the deadline may finish after it.
    dt = time.monotonic() - t0
    print("ok=%d failed=%d seconds=%.3f" % (sum(r[0] for r in res), sum(r[1] for r in res), dt))


if __name__ == "__main__":
    main()
