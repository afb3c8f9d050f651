"""Exact RFC 3501 answers, one scenario per defect a conformance run found (issue 21), over a
raw imaplib session against a running Halyard.

Environment: IMAP_PORT, USER, PASSWORD, HOST.
Exits non-zero (with the failing assertion) on any deviation.
"""
import imaplib
import os

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ["IMAP_PORT"])
USER, PW = os.environ["USER"], os.environ["PASSWORD"]


def ok(r, what=""):
    typ, data = r
    assert typ == "OK", f"{what}: {typ} {data}"
    return data


M = imaplib.IMAP4(HOST, PORT)
ok(M.login(USER, PW))
ok(M.create("rfc3501-dates"))
ok(M.select("rfc3501-dates"))


def append(date_header, internal):
    msg = (
        b"From: a@example.org\r\nTo: b@example.org\r\nSubject: dates\r\n"
        + b"Date: " + date_header.encode() + b"\r\n\r\nbody\r\n"
    )
    ok(M.append("rfc3501-dates", None, internal, msg))


# --- item 3: SENT* compare the Date: header's calendar date in its own zone ---------------
# 1: written 25-Mar-2007 (+0300), which is 24-Mar-2007 22:30 in UTC.
append("Sun, 25 Mar 2007 01:30:00 +0300", '"25-Mar-2007 01:30:00 +0000"')
# 2: written 24-Mar-2007 (-0500), which is 25-Mar-2007 04:30 in UTC.
append("Sat, 24 Mar 2007 23:30:00 -0500", '"24-Mar-2007 12:00:00 +0000"')
# 3: written 26-Mar-2007 in UTC.
append("Mon, 26 Mar 2007 00:00:00 +0000", '"26-Mar-2007 00:00:00 +0000"')


def search(*c):
    return ok(M.search(None, *c), " ".join(c))[0].split()


assert search("SENTON", "25-Mar-2007") == [b"1"], search("SENTON", "25-Mar-2007")
assert search("SENTON", "24-Mar-2007") == [b"2"], search("SENTON", "24-Mar-2007")
assert search("SENTBEFORE", "25-Mar-2007") == [b"2"], search("SENTBEFORE", "25-Mar-2007")
assert search("SENTSINCE", "25-Mar-2007") == [b"1", b"3"], search("SENTSINCE", "25-Mar-2007")
assert search("SENTBEFORE", "26-Mar-2007", "SENTSINCE", "25-Mar-2007") == [b"1"]
# BEFORE/ON/SINCE: INTERNALDATE's date, as FETCH INTERNALDATE shows it (+0000).
assert search("ON", "25-Mar-2007") == [b"1"], search("ON", "25-Mar-2007")
assert search("BEFORE", "25-Mar-2007") == [b"2"], search("BEFORE", "25-Mar-2007")
assert search("SINCE", "25-Mar-2007") == [b"1", b"3"], search("SINCE", "25-Mar-2007")

ok(M.close())
ok(M.delete("rfc3501-dates"))
M.logout()
print("imap_rfc3501: all scenarios passed")
