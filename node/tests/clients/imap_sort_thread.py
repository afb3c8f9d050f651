"""SORT (RFC 5256, with RFC 5957's DISPLAYFROM/DISPLAYTO) and THREAD (ORDEREDSUBJECT,
REFERENCES) over a raw session against a running Halyard, with the exact answers worked out
by hand from eight messages chosen so that every key orders them differently: Date fields in
other zones, one missing and one unparseable (INTERNALDATE then), reply and forward markers,
list tags, an encoded display name, a folded References, an In-Reply-To to a message that is
not there.

Environment: IMAP_PORT, USER, PASSWORD, HOST.
Exits non-zero (with the failing assertion) on any deviation.
"""
import imaplib
import os
import re
import imapraw

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ["IMAP_PORT"])
USER, PW = os.environ["USER"], os.environ["PASSWORD"]
BOX = "sort-thread"


def ok(r, what=""):
    typ, data = r
    assert typ == "OK", f"{what}: {typ} {data}"
    return data


def message(*headers):
    return "\r\n".join(list(headers) + ["", "body of the message", ""]).encode()


# (headers, INTERNALDATE). Sent dates in UTC and the keys are listed in the comments.
MESSAGES = [
    (  # 1: sent 01-Jan 10:00Z, arrived 05-Jan
        message(
            'From: "Zoe Adams" <zoe@example.org>',
            "To: bob@example.org",
            "Subject: Project plan",
            "Date: Mon, 01 Jan 2024 10:00:00 +0000",
            "Message-ID: <p1@example.org>",
        ),
        '"05-Jan-2024 10:00:00 +0000"',
    ),
    (  # 2: sent 02-Jan 08:00Z (09:00 +0100), arrived 04-Jan; a reply to 1
        message(
            "From: alice@example.org",
            'To: "Carl" <carl@example.org>',
            "Subject: Re: Project plan",
            "Date: Tue, 02 Jan 2024 09:00:00 +0100",
            "Message-ID: <p2@example.org>",
            "References: <p1@example.org>",
        ),
        '"04-Jan-2024 10:00:00 +0000"',
    ),
    (  # 3: sent 01-Jan 17:00Z (12:00 -0500), arrived 03-Jan; base subject "Lunch"
        message(
            'From: "bob" <Bob@example.org>',
            'To: "Zed" <amy@example.org>',
            "Subject: [team] Lunch",
            "Date: Mon, 01 Jan 2024 12:00:00 -0500",
            "Message-ID: <l1@example.org>",
        ),
        '"03-Jan-2024 10:00:00 +0000"',
    ),
    (  # 4: sent 03-Jan 08:00Z, arrived 02-Jan; a reply to 2 (References folded)
        message(
            'From: "Yann" <yann@example.org>',
            "To: bob@example.org",
            "Subject: Re: Re: Project plan",
            "Date: Wed, 03 Jan 2024 08:00:00 +0000",
            "Message-ID: <p3@example.org>",
            "References: <p1@example.org>\r\n <p2@example.org>",
        ),
        '"02-Jan-2024 10:00:00 +0000"',
    ),
    (  # 5: no Date: sent = arrived = 06-Jan 00:00Z; a forward, no references
        message(
            "From: carol@example.org",
            "Subject: Fwd: Lunch",
            "Message-ID: <l2@example.org>",
        ),
        '"06-Jan-2024 00:00:00 +0000"',
    ),
    (  # 6: sent 04-Jan, arrived 01-Jan; In-Reply-To a message that is not in the mailbox
        message(
            "From: =?utf-8?q?=C3=89mile?= <emile@example.org>",
            "Subject: Budget",
            "Date: Thu, 04 Jan 2024 00:00:00 +0000",
            "Message-ID: <b1@example.org>",
            "In-Reply-To: <gone@example.org>",
        ),
        '"01-Jan-2024 10:00:00 +0000"',
    ),
    (  # 7: sent 05-Jan, arrived 07-Jan; References the same missing message
        message(
            "From: dave@example.org",
            "Subject: Re: Budget",
            "Date: Fri, 05 Jan 2024 00:00:00 +0000",
            "Message-ID: <b2@example.org>",
            "References: <gone@example.org>",
        ),
        '"07-Jan-2024 10:00:00 +0000"',
    ),
    (  # 8: unparseable Date: sent = arrived = 08-Jan 10:00Z; the only Cc
        message(
            'From: "ann" <Ann@example.org>',
            'Cc: "X" <xavier@example.org>',
            "Subject: Status",
            "Date: someday soon",
            "Message-ID: <s1@example.org>",
        ),
        '"08-Jan-2024 10:00:00 +0000"',
    ),
]

M = imaplib.IMAP4(HOST, PORT)
ok(M.login(USER, PW))
ok(M.create(BOX))
ok(M.select(BOX))
# A first message, expunged, so that UIDs (2..9) differ from sequence numbers (1..8).
ok(M.append(BOX, None, None, message("Subject: gone", "From: x@example.org")))
ok(M.store("1", "+FLAGS", "(\\Deleted)"))
ok(M.expunge())
for raw, internal in MESSAGES:
    ok(M.append(BOX, None, internal, raw))
M.logout()


def Raw():
    return imapraw.Raw("s")


def only(lines, word):
    found = [l for l in lines if l.startswith(b"* " + word)]
    assert len(found) == 1, lines
    return found[0]


R = Raw()
R.ok(f"LOGIN {USER} {PW}")
caps = only(R.ok("CAPABILITY"), b"CAPABILITY").split()
for c in [b"SORT", b"SORT=DISPLAY", b"THREAD=ORDEREDSUBJECT", b"THREAD=REFERENCES"]:
    assert c in caps, (c, caps)
# Selected state only.
assert R.status("SORT (DATE) UTF-8 ALL")[0] == b"BAD"
R.ok(f"SELECT {BOX}")


def expect_sort(args, nums, uid=False):
    got = only(R.ok(("UID SORT " if uid else "SORT ") + args), b"SORT")
    want = b"* SORT" + b"".join(b" %d" % n for n in nums) + b"\r\n"
    assert got == want, f"{args}: {got!r}, wanted {want!r}"


# --- SORT: each key, REVERSE, several keys, ties in mailbox order ---------------------------
expect_sort("(DATE) UTF-8 ALL", [1, 3, 2, 4, 6, 7, 5, 8])
expect_sort("(REVERSE DATE) UTF-8 ALL", [8, 5, 7, 6, 4, 2, 3, 1])
expect_sort("(ARRIVAL) US-ASCII ALL", [6, 4, 3, 2, 1, 5, 7, 8])
# FROM is the first address's mailbox, case-insensitively: alice ann Bob carol dave emile ...
expect_sort("(FROM) UTF-8 ALL", [2, 8, 3, 5, 7, 6, 4, 1])
# DISPLAYFROM is the display name when there is one: "ALICE@EXAMPLE.ORG" < "ANN" < "BOB" <
# "CAROL@..." < "DAVE@..." < "YANN" < "ZOE ADAMS" < "ÉMILE" (non-ASCII after ASCII).
expect_sort("(DISPLAYFROM) UTF-8 ALL", [2, 8, 3, 5, 7, 4, 1, 6])
# No To sorts first (empty string), equal values stay in mailbox order.
expect_sort("(TO) UTF-8 ALL", [5, 6, 7, 8, 3, 1, 4, 2])
expect_sort("(DISPLAYTO) UTF-8 ALL", [5, 6, 7, 8, 1, 4, 2, 3])
expect_sort("(CC) UTF-8 ALL", [1, 2, 3, 4, 5, 6, 7, 8])
# REVERSE reverses its key only, not the implicit sequence-number order of equal messages.
expect_sort("(REVERSE CC) UTF-8 ALL", [8, 1, 2, 3, 4, 5, 6, 7])
# Base subjects: Budget, Lunch ("[team] Lunch", "Fwd: Lunch"), Project plan, Status.
expect_sort("(SUBJECT) UTF-8 ALL", [6, 7, 3, 5, 1, 2, 4, 8])
expect_sort("(SUBJECT REVERSE DATE) UTF-8 ALL", [7, 6, 5, 3, 4, 2, 1, 8])
sizes = sorted(range(1, 9), key=lambda i: (len(MESSAGES[i - 1][0]), i))
expect_sort("(SIZE) UTF-8 ALL", sizes)
# Search criteria, and UID SORT answering with UIDs (sequence number + 1 here).
expect_sort("(DATE) UTF-8 SUBJECT plan", [1, 2, 4])
expect_sort("(ARRIVAL) US-ASCII NOT FROM alice", [6, 4, 3, 1, 5, 7, 8])
expect_sort("(DATE) UTF-8 ALL", [n + 1 for n in [1, 3, 2, 4, 6, 7, 5, 8]], uid=True)
expect_sort("(DATE) UTF-8 SUBJECT nothing-has-this", [])
# Errors: an unsupported charset is NO [BADCHARSET], an unknown key is BAD.
code, done = R.status("SORT (DATE) KOI8-R ALL")
assert code == b"NO" and b"[BADCHARSET (US-ASCII UTF-8)]" in done, done
assert R.status("SORT (BOGUS) UTF-8 ALL")[0] == b"BAD"
assert R.status("SORT () UTF-8 ALL")[0] == b"BAD"


# --- THREAD -------------------------------------------------------------------------------
def expect_thread(args, want, uid=False):
    got = only(R.ok(("UID THREAD " if uid else "THREAD ") + args), b"THREAD")
    want = b"* THREAD" + (b" " + want.encode() if want else b"") + b"\r\n"
    assert got == want, f"{args}: {got!r}, wanted {want!r}"


# ORDEREDSUBJECT: one thread per base subject, the first (by sent date) at the top and the
# others its children; threads by the sent date of their first message.
expect_thread("ORDEREDSUBJECT UTF-8 ALL", "(1 (2)(4))(3 5)(6 7)(8)")
expect_thread("ORDEREDSUBJECT UTF-8 ALL", "(2 (3)(5))(4 6)(7 8)(9)", uid=True)
expect_thread("ORDEREDSUBJECT UTF-8 SUBJECT lunch", "(3 5)")
# REFERENCES: 4 answers 2 which answers 1; 6 and 7 answer the same missing message (a dummy
# holds them); 5 has no references but is a forward of "Lunch", so it joins 3's thread.
expect_thread("REFERENCES UTF-8 ALL", "(1 2 4)(3 5)((6)(7))(8)")
expect_thread("REFERENCES UTF-8 ALL", "(2 3 5)(4 6)((7)(8))(9)", uid=True)
# Without message 1, 2's parent is a dummy with one child: 2 takes its place.
expect_thread("REFERENCES UTF-8 NOT FROM zoe", "(3 5)(2 4)((6)(7))(8)")
expect_thread("REFERENCES UTF-8 NOT SUBJECT budget", "(1 2 4)(3 5)(8)")
expect_thread("REFERENCES UTF-8 SUBJECT nothing-has-this", "")
code, done = R.status("THREAD REFERENCES ISO-8859-1 ALL")
assert code == b"NO" and b"[BADCHARSET (US-ASCII UTF-8)]" in done, done
assert R.status("THREAD FANCY UTF-8 ALL")[0] == b"BAD"

# --- SORT with a MODSEQ criterion reports the highest mod-sequence (RFC 7162) --------------
line = only(R.ok("SORT (DATE) UTF-8 MODSEQ 1"), b"SORT")
assert re.fullmatch(rb"\* SORT 1 3 2 4 6 7 5 8 \(MODSEQ \d+\)\r\n", line), line

R.ok("CLOSE")
R.ok(f"DELETE {BOX}")
R.ok("LOGOUT")
print("SORT and THREAD: all exact")
