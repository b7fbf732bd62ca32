#!/usr/bin/env python3
"""Minimal Rserve OCAP-over-WebSocket client used to smoke-test rserve-proxy
R images and apps (see docs/qap-notes.md for the byte layout).

Usage:
    rserve_ocap_probe.py ws://127.0.0.1:8081/            # greeting + hello calls
    rserve_ocap_probe.py --greeting-only ws://HOST:PORT/  # just check "RsOC"

Exit code 0 on success, 1 on any mismatch.  Needs the `websocket-client`
package (Debian: python3-websocket, PyPI: websocket-client); nothing else.
"""

import argparse
import struct
import sys

import websocket  # websocket-client

# --- QAP1 constants (Rserve's Rsrv.h) -------------------------------------
CMD_OCinit = 0x434F7352  # bytes "RsOC" when written little-endian
CMD_OCcall = 0x00F  # NOT 0x0f5: Rserve 1.8 rejects 0xf5 with "VIOLATION: only OCcall is allowed"
CMD_RESP = 0x10000
RESP_OK = CMD_RESP | 0x0001
RESP_ERR = CMD_RESP | 0x0002
CMD_OOB = 0x20000

DT_INT, DT_CHAR, DT_DOUBLE, DT_STRING, DT_BYTESTREAM = 1, 2, 3, 4, 5
DT_SEXP, DT_ARRAY, DT_LARGE = 10, 11, 0x40

XT_NULL, XT_INT, XT_DOUBLE, XT_STR, XT_LANG, XT_SYM, XT_BOOL, XT_S4 = range(8)
XT_VECTOR, XT_LIST, XT_CLOS, XT_SYMNAME = 16, 17, 18, 19
XT_LIST_NOTAG, XT_LIST_TAG, XT_LANG_NOTAG, XT_LANG_TAG = 20, 21, 22, 23
XT_VECTOR_EXP, XT_VECTOR_STR = 26, 27
XT_ARRAY_INT, XT_ARRAY_DOUBLE, XT_ARRAY_STR = 32, 33, 34
XT_ARRAY_BOOL_UA, XT_ARRAY_BOOL, XT_RAW, XT_ARRAY_CPLX = 35, 36, 37, 38
XT_UNKNOWN = 48
XT_LARGE, XT_HAS_ATTR = 0x40, 0x80

NA_INT = -(2 ** 31)


class RObj:
    """A decoded R value: `value` (python list / scalar / dict) + attributes."""

    def __init__(self, xt, value, attrs=None):
        self.xt, self.value, self.attrs = xt, value, attrs or {}

    def names(self):
        n = self.attrs.get("names")
        return n.value if n is not None else None

    def klass(self):
        c = self.attrs.get("class")
        return c.value if c is not None else []

    def __repr__(self):
        a = f" attrs={self.attrs!r}" if self.attrs else ""
        return f"RObj(xt={self.xt}, {self.value!r}{a})"


# --- decoding --------------------------------------------------------------
def _hdr(buf, pos):
    """Item header (param or SEXP): type byte + 24-bit length (+32 bits when large)."""
    (w,) = struct.unpack_from("<I", buf, pos)
    typ, length = w & 0xFF, w >> 8
    pos += 4
    if typ & 0x40:  # XT_LARGE / DT_LARGE
        (hi,) = struct.unpack_from("<I", buf, pos)
        length |= hi << 24
        pos += 4
    return typ, length, pos


def decode_sexp(buf, pos=0):
    """Decode one SEXP at buf[pos:]; returns (RObj, new_pos)."""
    typ, length, pos = _hdr(buf, pos)
    end = pos + length
    attrs = {}
    if typ & XT_HAS_ATTR:
        a, pos = decode_sexp(buf, pos)
        attrs = a.value if isinstance(a.value, dict) else {}
    xt = typ & 0x3F
    body = buf[pos:end]
    if xt == XT_NULL:
        val = None
    elif xt == XT_ARRAY_INT:
        val = [None if v == NA_INT else v for v in struct.unpack(f"<{len(body)//4}i", body)]
    elif xt == XT_ARRAY_DOUBLE:
        val = list(struct.unpack(f"<{len(body)//8}d", body))
    elif xt == XT_ARRAY_STR:
        val = [None if s == b"\xff" else s.decode("utf-8") for s in body.rstrip(b"\x01").split(b"\x00")[:-1]]
    elif xt == XT_ARRAY_BOOL:
        (n,) = struct.unpack_from("<i", body, 0)
        val = [None if b == 2 else bool(b) for b in body[4 : 4 + n]]
    elif xt == XT_RAW:
        (n,) = struct.unpack_from("<i", body, 0)
        val = bytes(body[4 : 4 + n])
    elif xt in (XT_SYMNAME, XT_STR, XT_SYM):
        val = body.split(b"\x00")[0].decode("utf-8")
    elif xt in (XT_VECTOR, XT_VECTOR_EXP, XT_LIST_NOTAG, XT_LANG_NOTAG):
        val, p = [], pos
        while p < end:
            o, p = decode_sexp(buf, p)
            val.append(o)
    elif xt in (XT_LIST_TAG, XT_LANG_TAG):
        val, p = {}, pos
        while p < end:
            v, p = decode_sexp(buf, p)
            t, p = decode_sexp(buf, p)
            val[t.value if isinstance(t.value, str) else repr(t.value)] = v
    elif xt == XT_UNKNOWN:
        val = ("unknown SEXPTYPE", struct.unpack_from("<i", body, 0)[0])
    else:
        val = ("undecoded XT", xt, bytes(body))
    return RObj(xt, val, attrs), end


def decode_msg(data):
    """Split a QAP1 message: returns (cmd, msg_id, [params]) where a DT_SEXP
    param is decoded to RObj and others are returned as (type, bytes)."""
    cmd, ln, msg_id, ln_hi = struct.unpack_from("<IIII", data, 0)
    total = ln | (ln_hi << 32)
    if total != len(data) - 16:
        raise ValueError(f"QAP length {total} != payload {len(data) - 16}")
    params, pos = [], 16
    while pos < len(data):
        typ, length, p = _hdr(data, pos)
        if typ & 0x3F == DT_SEXP:
            params.append(decode_sexp(data, p)[0])
        else:
            params.append((typ, bytes(data[p : p + length])))
        pos = p + length
    return cmd, msg_id, params


# --- encoding --------------------------------------------------------------
def _item(typ, body):
    if len(body) >= 1 << 24:
        return struct.pack("<II", (typ | 0x40) | ((len(body) & 0xFFFFFF) << 8), len(body) >> 24) + body
    return struct.pack("<I", typ | (len(body) << 8)) + body


def _pad_str(bs, pad=b"\x01"):
    return bs + pad * (-len(bs) % 4)


def enc_str_array(strings, attrs=None):
    body = b"".join((b"\xff" if s is None else s.encode("utf-8")) + b"\x00" for s in strings)
    return _with_attrs(XT_ARRAY_STR, _pad_str(body), attrs)


def enc_double_array(xs):
    return _item(XT_ARRAY_DOUBLE, struct.pack(f"<{len(xs)}d", *xs))


def enc_int_array(xs):
    return _item(XT_ARRAY_INT, struct.pack(f"<{len(xs)}i", *xs))


def _with_attrs(xt, body, attrs):
    if not attrs:
        return _item(xt, body)
    al = b""
    for tag, val in attrs.items():
        al += val + _item(XT_SYMNAME, _pad_str(tag.encode() + b"\x00", b"\x00"))
    return _item(xt | XT_HAS_ATTR, _item(XT_LIST_TAG, al) + body)


def encode(x):
    """Python -> SEXP bytes (enough for tests: float/int/str/bool/None/lists)."""
    if x is None:
        return _item(XT_NULL, b"")
    if isinstance(x, bool):
        return _item(XT_ARRAY_BOOL, struct.pack("<i", 1) + _pad_str(bytes([int(x)]), b"\xff"))
    if isinstance(x, int):
        return enc_int_array([x])
    if isinstance(x, float):
        return enc_double_array([x])
    if isinstance(x, str):
        return enc_str_array([x])
    if isinstance(x, bytes):  # already-encoded SEXP
        return x
    if isinstance(x, (list, tuple)):
        return _item(XT_VECTOR, b"".join(encode(e) for e in x))
    raise TypeError(type(x))


def ocref_sexp(key):
    """An OCref as the server sends it: a character(1) with class "OCref"."""
    return enc_str_array([key], {"class": enc_str_array(["OCref"])})


def occall_msg(key, args, msg_id=0):
    lang = _item(XT_LANG_NOTAG, ocref_sexp(key) + b"".join(encode(a) for a in args))
    body = _item(DT_SEXP, lang)
    return struct.pack("<IIII", CMD_OCcall, len(body) & 0xFFFFFFFF, msg_id, len(body) >> 32) + body


# --- client ----------------------------------------------------------------
class OcapClient:
    def __init__(self, url, timeout=10):
        self.ws = websocket.create_connection(url, timeout=timeout)
        op, data = self.ws.recv_data()
        if op != websocket.ABNF.OPCODE_BINARY:
            raise ValueError(f"first frame is not binary (opcode {op}): {data[:64]!r}")
        self.greeting_raw = data
        if data[:4] != b"RsOC":
            raise ValueError(f"greeting does not start with RsOC: {data[:16].hex(' ')}")
        cmd, _, params = decode_msg(data)
        self.caps = params[0] if params else None
        self.next_id = 1

    def cap_keys(self):
        """name -> OCref key for a named list of capabilities."""
        names = self.caps.names() or []
        return {n: o.value[0] for n, o in zip(names, self.caps.value) if "OCref" in o.klass()}

    def call_raw(self, key, *args):
        msg_id = self.next_id
        self.next_id += 1
        self.ws.send_binary(occall_msg(key, list(args), msg_id))
        while True:
            op, data = self.ws.recv_data()
            cmd, rid, params = decode_msg(data)
            if cmd & CMD_OOB:  # OOB send/message from R code: not used by hello
                continue
            return cmd, rid, params, data

    def call(self, key, *args):
        cmd, rid, params, _ = self.call_raw(key, *args)
        if cmd != RESP_OK:
            raise RuntimeError(f"OCcall failed: cmd=0x{cmd:08x} params={params!r}")
        return params[0] if params else None

    def close(self):
        self.ws.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--greeting-only", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()

    c = OcapClient(a.url)
    print(f"greeting: {len(c.greeting_raw)} bytes, header {c.greeting_raw[:16].hex(' ')}")
    if a.verbose:
        print(f"greeting bytes: {c.greeting_raw.hex(' ')}")
        print(f"capabilities: {c.caps!r}")
    if a.greeting_only:
        c.close()
        print("OK: RsOC greeting received")
        return 0
    keys = c.cap_keys()
    print(f"capabilities: {sorted(keys)}")
    ok = True

    r = c.call(keys["add"], 3.0, 4.0)
    print(f"add(3, 4) -> {r.value}")
    ok &= r.value == [7.0]

    r = c.call(keys["greet"], "rserve-proxy")
    print(f"greet('rserve-proxy') -> {r.value}")
    ok &= r.value == ["Hello, rserve-proxy!"]

    r = c.call(keys["sysinfo"])
    info = {n: v.value[0] for n, v in zip(r.names(), r.value)}
    print(f"sysinfo() -> {info}")
    ok &= "r_version" in info and "rserve_version" in info

    cmd, rid, params, raw = c.call_raw(keys["add"], "x", 1.0)
    print(f"add('x', 1) -> cmd=0x{cmd:08x} msg_id={rid} params={params!r}")
    ok &= (cmd & 0xFFFFFF) == RESP_ERR  # error code in the top byte (0x7f: R error)

    # the connection must still be usable after an R error
    r = c.call(keys["add"], 1.5, 1.0)
    ok &= r.value == [2.5]
    c.close()
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
