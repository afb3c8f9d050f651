"""ESEARCH (RFC 4731) and SEARCHRES (RFC 5182) over a raw socket against a running Halyard,
exact answers: SEARCH/UID SEARCH RETURN (MIN MAX COUNT ALL), `RETURN ()`, empty results,
MODSEQ in ESEARCH (RFC 4731 section 3.2), BAD for unknown result options; RETURN (SAVE) and
`$` in FETCH, STORE, COPY, MOVE, UID EXPUNGE, SEARCH and SORT, pipelined after the SAVE; `$`
before any SAVE, after SELECT/EXAMINE/UNSELECT/CLOSE, after a failed SAVE search, and as
its messages are expunged or renumbered.

Environment: IMAP_PORT, USER, PASSWORD, HOST.
"""
import os
import re
import socket

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ["IMAP_PORT"])
USER, PW = os.environ["USER"], os.environ["PASSWORD"]


class Raw:
    def __init__(self):
        self.s = socket.create_connection((HOST, PORT), timeout=20)
        self.f = self.s.makefile("rb")
        self.n = 0
        self.tag = ""
        assert self.f.readline().startswith(b"* OK")

    def _next_tag(self):
        self.n += 1
        self.tag = f"e{self.n}"
        return self.tag.encode()

    def _answer(self, tag, text):
        lines = []
        while True:
            line = self.f.readline()
            assert line, f"connection closed during {text!r}"
            if line.startswith(tag + b" "):
                return lines, line
            lines.append(line)

    def cmd(self, text):
        tag = self._next_tag()
        self.s.sendall(tag + b" " + text.encode() + b"\r\n")
        return self._answer(tag, text)

    def ok(self, text):
        lines, done = self.cmd(text)
        assert done.split()[1] == b"OK", f"{text}: {done} {lines}"
        return lines

    def pipe(self, *texts):
        """Sends the commands in one write (RFC 5182 section 2.3); their answers in order."""
        tags = [self._next_tag() for _ in texts]
        self.s.sendall(b"".join(t + b" " + c.encode() + b"\r\n" for t, c in zip(tags, texts)))
        return [self._answer(t, c) for t, c in zip(tags, texts)]

    def append(self, mailbox, body):
        return self.ok(f"APPEND {mailbox} {{{len(body)}+}}\r\n{body}")


def one(lines, prefix):
    found = [l for l in lines if l.startswith(prefix)]
    assert len(found) == 1, (prefix, lines)
    return found[0]


def nums(lines, word=b"SEARCH"):
    return [int(x) for x in one(lines, b"* " + word).split()[2:]]


def fetched(lines):
    """The sequence numbers of the FETCH responses, ascending."""
    return sorted(int(l.split()[1]) for l in lines if b" FETCH " in l)


def compact(ns):
    """Ascending numbers as the sequence set ESEARCH's ALL shows."""
    out, i = [], 0
    while i < len(ns):
        j = i
        while j + 1 < len(ns) and ns[j + 1] == ns[j] + 1:
            j += 1
        out.append(str(ns[i]) if i == j else f"{ns[i]}:{ns[j]}")
        i = j + 1
    return ",".join(out)


def esearch(r, text):
    """What follows the correlator in the one ESEARCH response to `text` (no SEARCH response
    may come with it)."""
    lines = r.ok(text)
    assert not any(l.startswith(b"* SEARCH") for l in lines), (text, lines)
    line = one(lines, b"* ESEARCH ")
    correlator = f'* ESEARCH (TAG "{r.tag}")'.encode()
    assert line.startswith(correlator) and line.endswith(b"\r\n"), (line, correlator)
    return line[len(correlator):].decode().strip()


def status(done):
    return done.split()[1]


A = Raw()
A.ok(f"LOGIN {USER} {PW}")
caps = one(A.ok("CAPABILITY"), b"* CAPABILITY").split()
assert b"ESEARCH" in caps and b"SEARCHRES" in caps, caps
A.ok("CREATE es")
A.ok("CREATE es-moved")
for i in range(1, 9):
    A.append("es", f"From: a@example.org\r\nSubject: m{i}\r\n\r\nbody {i}\r\n")
A.ok("SELECT es")
U = [0] + nums(A.ok("UID SEARCH ALL"))  # U[n]: the UID of message n as appended
assert len(U) == 9, U
A.ok("STORE 2:4,7 +FLAGS.SILENT (\\Flagged)")
flagged = [U[2], U[3], U[4], U[7]]

# --- RFC 4731: result options ----------------------------------------------------------
assert esearch(A, "SEARCH RETURN (MIN MAX COUNT ALL) FLAGGED") == "MIN 2 MAX 7 COUNT 4 ALL 2:4,7"
assert esearch(A, "SEARCH RETURN () FLAGGED") == "ALL 2:4,7"  # an empty list is ALL
assert esearch(A, "SEARCH RETURN (COUNT MIN) FLAGGED") == "MIN 2 COUNT 4"
assert esearch(A, "search return (max) unflagged") == "MAX 8"
assert esearch(A, "SEARCH RETURN (ALL) NOT FLAGGED") == "ALL 1,5:6,8"
# Nothing found: no MIN, MAX or ALL, but still the response, and COUNT 0.
assert esearch(A, "SEARCH RETURN (MIN MAX ALL COUNT) SUBJECT nomatch") == "COUNT 0"
assert esearch(A, "SEARCH RETURN (MIN) SUBJECT nomatch") == ""
# UID SEARCH: the UID indicator, and UIDs throughout.
assert (
    esearch(A, "UID SEARCH RETURN (MIN MAX COUNT ALL) FLAGGED")
    == f"UID MIN {U[2]} MAX {U[7]} COUNT 4 ALL {compact(flagged)}"
)
assert esearch(A, "UID SEARCH RETURN (COUNT) SUBJECT nomatch") == "UID COUNT 0"
# CHARSET after the RETURN clause; a literal among the keys.
assert esearch(A, "SEARCH RETURN (ALL) CHARSET UTF-8 SUBJECT {2+}\r\nm5") == "ALL 5"
# Without RETURN, SEARCH answers as ever.
assert nums(A.ok("SEARCH FLAGGED")) == [2, 3, 4, 7]
# Unknown result options, RETURN out of its place, RETURN on SORT: BAD.
for bad in (
    "SEARCH RETURN (PARTIAL 1:5) ALL",
    "SEARCH ALL RETURN (MIN)",
    "SEARCH RETURN (MIN)",
    "SORT RETURN (MIN) (DATE) UTF-8 ALL",
):
    lines, done = A.cmd(bad)
    assert status(done) == b"BAD", (bad, lines, done)

# --- RFC 5182: `$` before any SAVE is the empty set, valid everywhere ----------------------
assert nums(A.ok("SEARCH $")) == []
assert nums(A.ok("UID SEARCH UID $")) == []
assert fetched(A.ok("FETCH $ (UID)")) == []
lines = A.ok("UID COPY $ es-moved")
assert not any(b"COPYUID" in l for l in lines), lines

# SAVE: no ESEARCH (nor SEARCH) response; the commands pipelined after it see the result.
(l1, d1), (l2, d2), (l3, d3) = A.pipe(
    "SEARCH RETURN (SAVE) FLAGGED", "FETCH $ (UID)", "UID SEARCH $"
)
assert status(d1) == b"OK" and not any(b"SEARCH" in l for l in l1), (l1, d1)
assert status(d2) == b"OK" and fetched(l2) == [2, 3, 4, 7], (l2, d2)
assert status(d3) == b"OK" and nums(l3) == flagged, (l3, d3)
# Searches without SAVE, and a SAVE search answered BAD, leave `$` alone.
A.ok("SEARCH ALL")
assert esearch(A, "SEARCH RETURN (COUNT) ALL") == "COUNT 8"
lines, done = A.cmd("SEARCH RETURN (SAVE) NOSUCHKEY")
assert status(done) == b"BAD", (lines, done)
assert nums(A.ok("SEARCH $")) == [2, 3, 4, 7]
# `$` is a search key (also with others, under NOT and OR, after a literal) and UID's
# argument; SUBJECT's `$` is a string; SORT takes it too.
assert nums(A.ok("SEARCH $ SUBJECT m3")) == [3]
assert nums(A.ok("SEARCH OR $ 8")) == [2, 3, 4, 7, 8]
assert nums(A.ok("SEARCH NOT $")) == [1, 5, 6, 8]
assert nums(A.ok("SEARCH UID $")) == [2, 3, 4, 7]
assert esearch(A, "UID SEARCH RETURN (COUNT) SUBJECT {2+}\r\nm4 $") == "UID COUNT 1"
assert nums(A.ok("SEARCH SUBJECT $")) == []
assert nums(A.ok("SORT (REVERSE SUBJECT) UTF-8 $"), b"SORT") == [7, 4, 3, 2]

# STORE $.
lines = A.ok("STORE $ +FLAGS (\\Seen)")
assert fetched(lines) == [2, 3, 4, 7], lines
assert nums(A.ok("SEARCH SEEN")) == [2, 3, 4, 7]

# `$` holds messages, not numbers: expunging message 1 renumbers them, `$` follows.
A.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
lines = A.ok("EXPUNGE")
assert b"* 1 EXPUNGE\r\n" in lines, lines
assert nums(A.ok("SEARCH $")) == [1, 2, 3, 6]
assert nums(A.ok("UID SEARCH $")) == flagged

# UID EXPUNGE $ removes the \Deleted ones among them, which leave `$`.
A.ok(f"UID STORE {U[3]} +FLAGS.SILENT (\\Deleted)")
lines = A.ok("UID EXPUNGE $")
assert [l for l in lines if l.endswith(b" EXPUNGE\r\n")] == [b"* 2 EXPUNGE\r\n"], lines
assert nums(A.ok("UID SEARCH $")) == [U[2], U[4], U[7]]
assert nums(A.ok("SEARCH $")) == [1, 2, 5]

# MOVE $: moved away, they are gone from `$` too.
lines = A.ok("MOVE $ es-moved")
assert any(b"[COPYUID " in l for l in lines), lines
assert [l for l in lines if l.endswith(b" EXPUNGE\r\n")] == [
    b"* 5 EXPUNGE\r\n",
    b"* 2 EXPUNGE\r\n",
    b"* 1 EXPUNGE\r\n",
], lines
assert nums(A.ok("SEARCH $")) == []
assert nums(A.ok("UID SEARCH ALL")) == [U[5], U[6], U[8]]
assert b"MESSAGES 3" in one(A.ok("STATUS es-moved (MESSAGES)"), b"* STATUS")

# SAVE with MIN and/or MAX alone saves just those; with COUNT or ALL, everything found.
assert esearch(A, "SEARCH RETURN (SAVE MIN MAX) ALL") == "MIN 1 MAX 3"
assert nums(A.ok("UID SEARCH $")) == [U[5], U[8]]
assert esearch(A, "UID SEARCH RETURN (SAVE MAX) ALL") == f"UID MAX {U[8]}"
assert nums(A.ok("SEARCH $")) == [3]
assert esearch(A, "SEARCH RETURN (SAVE COUNT MIN) ALL") == "MIN 1 COUNT 3"
assert nums(A.ok("SEARCH $")) == [1, 2, 3]
A.ok("SEARCH RETURN (SAVE) SUBJECT nomatch")  # found nothing: `$` is empty
assert nums(A.ok("SEARCH $")) == []

# A SEARCH without SAVE answered NO leaves `$`; one with SAVE answered NO empties it.
A.ok("SEARCH RETURN (SAVE) ALL")
lines, done = A.cmd("SEARCH CHARSET X-NO-SUCH ALL")
assert status(done) == b"NO" and b"[BADCHARSET" in done, (lines, done)
assert nums(A.ok("SEARCH $")) == [1, 2, 3]
lines, done = A.cmd("SEARCH RETURN (SAVE) CHARSET X-NO-SUCH ALL")
assert status(done) == b"NO" and b"[BADCHARSET" in done, (lines, done)
assert nums(A.ok("SEARCH $")) == []

# SELECT, EXAMINE, UNSELECT and CLOSE forget `$`.
for leave in ("SELECT es", "EXAMINE es", "UNSELECT", "CLOSE"):
    A.ok("SEARCH RETURN (SAVE) ALL")
    assert nums(A.ok("SEARCH $")) == [1, 2, 3], leave
    A.ok(leave)
    if leave in ("UNSELECT", "CLOSE"):
        lines, done = A.cmd("FETCH $ (UID)")  # no mailbox selected
        assert status(done) == b"BAD", (leave, lines, done)
        A.ok("SELECT es")
    assert nums(A.ok("SEARCH $")) == [], leave

# --- RFC 4731 section 3.2: MODSEQ in ESEARCH ------------------------------------------------
B = Raw()
B.ok(f"LOGIN {USER} {PW}")
B.ok("SELECT es")
B.ok("STORE 1 +FLAGS.SILENT (\\Answered)")  # message 1 now has the highest MODSEQ
ms = {}
for l in B.ok("FETCH 1:* (MODSEQ)"):
    m = re.match(rb"\* (\d+) FETCH \(MODSEQ \((\d+)\)\)", l)
    if m:
        ms[int(m.group(1))] = int(m.group(2))
assert sorted(ms) == [1, 2, 3] and ms[1] > ms[3] and ms[1] == max(ms.values()), ms
assert esearch(B, "SEARCH RETURN (MIN) MODSEQ 1") == f"MIN 1 MODSEQ {ms[1]}"
assert esearch(B, "SEARCH RETURN (MAX) MODSEQ 1") == f"MAX 3 MODSEQ {ms[3]}"
assert esearch(B, "SEARCH RETURN (MIN MAX) MODSEQ 1") == f"MIN 1 MAX 3 MODSEQ {ms[1]}"
assert esearch(B, "UID SEARCH RETURN (COUNT) MODSEQ 1") == f"UID COUNT 3 MODSEQ {ms[1]}"
assert esearch(B, f"SEARCH RETURN (COUNT ALL) MODSEQ {ms[1] + 1}") == "COUNT 0"
B.ok("LOGOUT")

A.ok("UNSELECT")
A.ok("DELETE es")
A.ok("DELETE es-moved")
A.ok("LOGOUT")
print("imap_esearch: all scenarios passed")
