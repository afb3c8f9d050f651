"""IMAP4rev2 (RFC 9051) offered beside IMAP4rev1, over raw sockets against a running Halyard:
both in CAPABILITY; a session stays IMAP4rev1 until `ENABLE IMAP4rev2`, which switches it to
rev2's rules (no \\Recent or RECENT, no [UNSEEN], SEARCH answered by ESEARCH, the mailbox's
LIST line in SELECT, UTF-8 mailbox names), while an IMAP4rev1 session beside it keeps its own.

Environment: IMAP_PORT, USER, PASSWORD (alice), HOST.
"""
import os
import re

import imapraw

USER, PW = os.environ["USER"], os.environ["PASSWORD"]


class Raw(imapraw.Raw):
    def __init__(self, prefix):
        super().__init__(prefix, strip_tag=True)

    def expect(self, text, *want):
        """The command succeeds with exactly these untagged lines, in this order."""
        lines = self.ok(text)
        got = [l.decode() for l in lines]
        want = [w + "\r\n" for w in want]
        assert got == want, f"{text}:\n got  {got}\n want {want}"
        return lines

    def tag(self):
        """The tag the next command will have."""
        return f"{self.prefix}{self.n + 1}"


def caps_of(c):
    lines = [l for l in c.ok("CAPABILITY") if l.startswith(b"* CAPABILITY ")]
    assert len(lines) == 1, lines
    # Capability names are case-insensitive (imap-codec writes IMAP4REV1).
    return lines[0].decode().upper().split()[2:]


old, new = Raw("a"), Raw("b")
for c in (old, new):
    words = caps_of(c)
    assert "IMAP4REV1" in words and "IMAP4REV2" in words, words
    c.ok(f"LOGIN {USER} {PW}")
    words = caps_of(c)
    assert "IMAP4REV1" in words and "IMAP4REV2" in words, words
    # What IMAP4rev2 folds in is still advertised for IMAP4rev1 clients.
    for w in ["ENABLE", "ESEARCH", "SEARCHRES", "UIDPLUS", "MOVE", "IDLE", "NAMESPACE",
              "UNSELECT", "LIST-EXTENDED", "LIST-STATUS", "STATUS=SIZE", "BINARY",
              "SPECIAL-USE", "CHILDREN", "LITERAL+"]:
        assert w in words, (w, words)

# --- ENABLE ----------------------------------------------------------------------------------
new.expect("ENABLE IMAP4rev2", "* ENABLED IMAP4rev2")
# Only what this command turned on is listed (RFC 9051 §6.3.1); the capabilities stay.
new.expect("ENABLE IMAP4rev2", "* ENABLED")
new.expect("ENABLE IMAP4rev2 X-UNKNOWN", "* ENABLED")
third = Raw("c")
third.ok(f"LOGIN {USER} {PW}")
third.expect("ENABLE CONDSTORE IMAP4rev2 X-UNKNOWN", "* ENABLED CONDSTORE IMAP4rev2")
third.expect("ENABLE IMAP4rev2 CONDSTORE", "* ENABLED")
third.ok("LOGOUT")
words = caps_of(new)
assert "IMAP4REV1" in words and "IMAP4REV2" in words, words

# --- a mailbox with a child, and one with a special use --------------------------------------
old.ok("CREATE r2")
old.ok("CREATE r2/sub")
old.ok("CREATE r2drafts (USE (\\Drafts))")
DATE = '"07-Dec-2026 10:00:00 +0000"'
for i, flags in enumerate(["(\\Seen)", "()", "(\\Seen)"]):
    body = f"From: a@example.org\r\nSubject: m{i}\r\n\r\nbody {i}\r\n"
    old.ok(f"APPEND r2 {flags} {DATE} {{{len(body)}+}}\r\n{body}")

# --- SELECT: no RECENT, no UNSEEN, a LIST line ------------------------------------------------
lines = [l.decode() for l in new.ok("SELECT r2")]
assert not [l for l in lines if "RECENT" in l or "UNSEEN" in l], lines
assert "* 3 EXISTS\r\n" in lines, lines
assert '* LIST (\\HasChildren) "/" r2\r\n' in lines, lines
assert [l for l in lines if l.startswith("* OK [UIDVALIDITY ")], lines
assert "* OK [UIDNEXT 4] predicted next UID\r\n" in lines, lines
assert [l for l in lines if l.startswith("* FLAGS (")], lines
assert [l for l in lines if l.startswith("* OK [PERMANENTFLAGS (")], lines
# Nothing is \Recent under rev2.
new.expect("FETCH 1:* (FLAGS)", "* 1 FETCH (FLAGS (\\Seen))", "* 2 FETCH (FLAGS ())",
           "* 3 FETCH (FLAGS (\\Seen))")

# --- SEARCH answers with ESEARCH ---------------------------------------------------------------
new.expect("SEARCH ALL", f'* ESEARCH (TAG "{new.tag()}") ALL 1:3')
new.expect("SEARCH SEEN", f'* ESEARCH (TAG "{new.tag()}") ALL 1,3')
new.expect("UID SEARCH UNSEEN", f'* ESEARCH (TAG "{new.tag()}") UID ALL 2')
# Nothing found: the response still comes, without ALL.
new.expect("UID SEARCH DELETED", f'* ESEARCH (TAG "{new.tag()}") UID')
new.expect("SEARCH RETURN () SEEN", f'* ESEARCH (TAG "{new.tag()}") ALL 1,3')
new.expect("SEARCH RETURN (COUNT) ALL", f'* ESEARCH (TAG "{new.tag()}") COUNT 3')
# A CHARSET is allowed under rev2 (not under UTF8=ACCEPT alone).
new.expect("SEARCH CHARSET UTF-8 SUBJECT m1", f'* ESEARCH (TAG "{new.tag()}") ALL 2')

# --- STATUS DELETED and SIZE ------------------------------------------------------------------
new.expect("STORE 2 +FLAGS.SILENT (\\Deleted)")
size = sum(len(f"From: a@example.org\r\nSubject: m{i}\r\n\r\nbody {i}\r\n") for i in range(3))
new.expect("STATUS r2 (MESSAGES DELETED SIZE)", f"* STATUS r2 (MESSAGES 3 DELETED 1 SIZE {size})")
new.ok("STORE 2 -FLAGS.SILENT (\\Deleted)")

# --- new mail while selected: EXISTS, no RECENT ------------------------------------------------
body = "From: a@example.org\r\nSubject: m3\r\n\r\nbody 3\r\n"
old.ok(f"APPEND r2 {DATE} {{{len(body)}+}}\r\n{body}")
lines = [l.decode() for l in new.ok("NOOP")]
assert lines == ["* 4 EXISTS\r\n"], lines

# --- the IMAP4rev1 session beside it keeps IMAP4rev1's rules ---------------------------------
# Nothing was claimed by the rev2 session, so all four are recent for this one.
lines = [l.decode() for l in old.ok("SELECT r2")]
assert "* 4 RECENT\r\n" in lines, lines
assert "* OK [UNSEEN 2] first unseen\r\n" in lines, lines
assert not [l for l in lines if l.startswith("* LIST")], lines
old.expect("SEARCH SEEN", "* SEARCH 1 3")
old.expect("FETCH 2 (FLAGS)", "* 2 FETCH (FLAGS (\\Recent))")

# --- SELECT of another mailbox: [CLOSED] first; the special use in the LIST line --------------
lines = [l.decode() for l in new.ok("EXAMINE r2drafts")]
assert lines[0] == "* OK [CLOSED] previous mailbox closed\r\n", lines
assert '* LIST (\\HasNoChildren \\Drafts) "/" r2drafts\r\n' in lines, lines
lines = [l.decode() for l in new.ok("SELECT r2/sub")]
assert '* LIST (\\HasNoChildren) "/" r2/sub\r\n' in lines, lines
new.ok("UNSELECT")

# --- UTF-8 mailbox names under rev2, modified UTF-7 for the rev1 session ----------------------
new.ok('CREATE "r2 Grün"')
new.expect('LIST "" "r2 Gr*"', '* LIST (\\HasNoChildren) "/" "r2 Grün"')
old.expect('LIST "" "r2 Gr*"', '* LIST (\\HasNoChildren) "/" "r2 Gr&APw-n"')
lines = [l.decode() for l in new.ok('SELECT "r2 Grün"')]
assert '* LIST (\\HasNoChildren) "/" "r2 Grün"\r\n' in lines, lines

# --- ENABLE IMAP4rev2 once a mailbox is selected: BAD, nothing changes -------------------------
lines, done = old.cmd("ENABLE IMAP4rev2")
assert done.startswith(b"BAD") and not lines, (lines, done)
old.expect("SEARCH SEEN", "* SEARCH 1 3")

for c in (old, new):
    c.ok("LOGOUT")
print("imap_rev2: ok")
