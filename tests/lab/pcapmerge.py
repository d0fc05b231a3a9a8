#!/usr/bin/python3
"""Merge classic pcap files (one per gateway interface, as tcpdump writes
them) into one pcapng file with one named interface block per input.

The interface name is the contract with `ftpgate replay`: a frame whose
interface block is named like a configured interface's device arrived on
that interface. mergecap cannot name interfaces of pcap inputs, hence this.

usage: pcapmerge.py -o OUT.pcapng [--direction in|out] [--comment TEXT]
                    NAME=FILE.pcap [NAME=FILE.pcap ...]

Frames are ordered by timestamp; equal timestamps keep input order (the
order of the NAME=FILE arguments, then file order). Every enhanced packet
block carries epb_flags with the direction (inbound/outbound) when given.
"""
import argparse
import heapq
import struct
import sys

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),   # microseconds, little endian
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),      # nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1),
}


def read_pcap(path):
    """Yields (ts_ns, linktype, snaplen, data, orig_len); linktype/snaplen
    come first as a header tuple."""
    with open(path, "rb") as f:
        hdr = f.read(24)
        if len(hdr) < 24 or hdr[:4] not in PCAP_MAGICS:
            raise SystemExit("%s: not a classic pcap file" % path)
        end, mult = PCAP_MAGICS[hdr[:4]]
        snaplen, linktype = struct.unpack(end + "II", hdr[16:24])
        frames = []
        while True:
            rh = f.read(16)
            if not rh:
                break
            if len(rh) < 16:
                raise SystemExit("%s: truncated record header" % path)
            sec, frac, incl, orig = struct.unpack(end + "IIII", rh)
            data = f.read(incl)
            if len(data) < incl:
                raise SystemExit("%s: truncated record" % path)
            frames.append((sec * 1_000_000_000 + frac * mult, data, orig))
    return linktype & 0xFFFF, snaplen, frames


def opt(code, value):
    pad = (-len(value)) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\0" * pad


def block(btype, body):
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--direction", choices=["in", "out"])
    ap.add_argument("--comment", default="")
    ap.add_argument("inputs", nargs="+", metavar="NAME=FILE")
    args = ap.parse_args()

    shb_opts = opt(4, b"ftpgate lab pcapmerge.py")
    if args.comment:
        shb_opts += opt(1, args.comment.encode())
    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + shb_opts + opt(0, b""))]

    streams = []
    for idx, spec in enumerate(args.inputs):
        name, sep, path = spec.partition("=")
        if not sep or not name:
            raise SystemExit("input must be NAME=FILE: %r" % spec)
        linktype, snaplen, frames = read_pcap(path)
        idb_opts = opt(2, name.encode()) + opt(9, b"\x09")  # if_name, if_tsresol = 10^-9
        if args.direction:
            idb_opts += opt(3, ("captured %sbound on %s" % (args.direction, name)).encode())
        out.append(block(1, struct.pack("<HHI", linktype, 0, snaplen) + idb_opts + opt(0, b"")))
        streams.append([(ts, idx, n, data, orig) for n, (ts, data, orig) in enumerate(frames)])

    flags = b""
    if args.direction:
        flags = opt(2, struct.pack("<I", 1 if args.direction == "in" else 2))
    count = 0
    for ts, idx, _, data, orig in heapq.merge(*streams):
        body = struct.pack("<IIIII", idx, ts >> 32, ts & 0xFFFFFFFF, len(data), orig)
        body += data + b"\0" * ((-len(data)) % 4)
        if flags:
            body += flags + opt(0, b"")
        out.append(block(6, body))
        count += 1

    with open(args.output, "wb") as f:
        f.write(b"".join(out))
    print("%s: %d frames from %d interfaces" % (args.output, count, len(streams)), file=sys.stderr)


if __name__ == "__main__":
    main()
