"""UTF8=ACCEPT (RFC 6855) over a raw socket against a running Halyard, exact answers:
the capability; modified UTF-7 names (and only those) before ENABLE; ENABLE UTF8=ACCEPT and
its refusal once a mailbox is selected; after it, UTF-8 names in CREATE, LIST, LSUB,
extended LIST, STATUS, SELECT, RENAME and the ACL commands, while a session without ENABLE
sees the same mailboxes in modified UTF-7; APPEND with the UTF8 data item (refused before
ENABLE); SEARCH with a UTF-8 string, and no CHARSET after ENABLE; ENVELOPE strings as UTF-8
quoted strings after ENABLE and as literals without it; invalid UTF-8 and barred characters.

Environment: IMAP_PORT, USER, PASSWORD, HOST.
"""
import os
import re

import imapraw

USER, PW = os.environ["USER"], os.environ["PASSWORD"]

# 日本語 and ü in modified UTF-7 are RFC 3501's own example and a plain BMP character.
NAME = "Entwürfe/日本語"
NAME7 = "Entw&APw-rfe/&ZeVnLIqe-"
RENAMED, RENAMED7 = "Entwürfe/Ärger", "Entw&APw-rfe/&AMQ-rger"
SUBJECT = "Grüße aus 日本"


class Raw(imapraw.Raw):
    def __init__(self):
        super().__init__("u", strip_tag=True)

    def created(self, text):
        """A CREATE succeeds, with its MAILBOXID (RFC 8474) and nothing untagged."""
        got_lines, got = self.cmd(text)
        assert re.fullmatch(rb"OK \[MAILBOXID \([A-Za-z0-9_-]+\)\] CREATE completed\r\n", got), (
            text, got, got_lines)
        assert not got_lines, (text, got_lines)

    def exact(self, text, done, lines=None):
        """The command answers exactly `done` (after its tag), with exactly `lines`."""
        got_lines, got = self.cmd(text)
        assert got == done.encode() + b"\r\n", (text, got, got_lines)
        if lines is not None:
            want = [l.encode() + b"\r\n" for l in lines]
            assert got_lines == want, (text, got_lines, want)
        return got_lines


def untagged(lines, prefix):
    return [l for l in lines if l.startswith(prefix)]


A, B, C = Raw(), Raw(), Raw()
for s in (A, B, C):
    s.ok(f"LOGIN {USER} {PW}")

# --- the capability ----------------------------------------------------------------------
caps = untagged(A.ok("CAPABILITY"), b"* CAPABILITY")[0].split()
assert b"UTF8=ACCEPT" in caps and b"ENABLE" in caps, caps

# --- before ENABLE: modified UTF-7 as always; a UTF-8 name is refused ---------------------
A.exact(f'CREATE "{NAME}"',
        'NO [CANNOT] mailbox name "Entw?rfe/???": not modified UTF-7 (byte 0xc3)')
# The same name as a literal: refused alike.
A.exact(b"CREATE {%d+}\r\n" % len(NAME.encode()) + NAME.encode(),
        'NO [CANNOT] mailbox name "Entw?rfe/???": not modified UTF-7 (byte 0xc3)')
A.created("CREATE Gr&APw-n")
A.exact('LIST "" Gr*', "OK LIST completed", ['* LIST (\\HasNoChildren) "/" Gr&APw-n'])
# APPEND's UTF8 data item needs ENABLE first (RFC 6855 §4): NO, and the session goes on.
msg = f"From: a@example.org\r\nSubject: {SUBJECT}\r\n\r\nHallo\r\n".encode()
A.exact(b"APPEND INBOX UTF8 (~{%d+}\r\n" % len(msg) + msg + b")",
        "NO [CANNOT] a UTF8 data item needs ENABLE UTF8=ACCEPT first (RFC 6855)")
A.ok("NOOP")

# --- ENABLE: not once a mailbox is selected (RFC 5161), then for good ---------------------
C.ok("SELECT INBOX")
C.exact("ENABLE UTF8=ACCEPT",
        "BAD ENABLE UTF8=ACCEPT must come before SELECT or EXAMINE (RFC 5161)")
A.exact("ENABLE UTF8=ACCEPT", "OK ENABLE completed", ["* ENABLED UTF8=ACCEPT"])

# --- after ENABLE: UTF-8 names both ways --------------------------------------------------
A.created(f'CREATE "{NAME}"')
A.exact(f'LIST "" "Entwürfe/%"', "OK LIST completed",
        [f'* LIST (\\HasNoChildren) "/" "{NAME}"'])
A.exact('LIST "" Gr*', "OK LIST completed", ['* LIST (\\HasNoChildren) "/" "Grün"'])
# A modified UTF-7 spelling is now just ASCII: no such mailbox.
A.exact(f"LIST \"\" {NAME7}", "OK LIST completed", [])
A.exact(f'STATUS "{NAME}" (MESSAGES)', "OK STATUS completed",
        [f'* STATUS "{NAME}" (MESSAGES 0)'])
A.exact(f'SUBSCRIBE "{NAME}"', "OK SUBSCRIBE completed")
A.exact('LSUB "" "Entwürfe/%"', "OK LSUB completed",
        [f'* LSUB (\\HasNoChildren) "/" "{NAME}"'])

# APPEND with the UTF8 data item (RFC 6855 §4), a literal8 inside UTF8 ( ... ).
lines, done = A.cmd(f'APPEND "{NAME}" UTF8 (~{{{len(msg)}+}}\r\n'.encode() + msg + b")")
assert re.fullmatch(rb"OK \[APPENDUID \d+ 1\] APPEND completed\r\n", done), (done, lines)
lines = A.exact(f'LIST "" ("Entwürfe/%") RETURN (STATUS (MESSAGES))', "OK LIST completed")
assert lines == [f'* LIST (\\HasNoChildren) "/" "{NAME}"\r\n'.encode(),
                 f'* STATUS "{NAME}" (MESSAGES 1)\r\n'.encode()], lines
lines = A.exact(f'STATUS "{NAME}" (MESSAGES APPENDLIMIT)', "OK STATUS completed")
assert re.fullmatch(f'\\* STATUS "{NAME}" \\(MESSAGES 1 APPENDLIMIT \\d+\\)\r\n'.encode(),
                    lines[0]), lines
lines = A.exact(f'MYRIGHTS "{NAME}"', "OK MYRIGHTS completed")
assert lines[0].startswith(f'* MYRIGHTS "{NAME}" '.encode()), lines

lines, done = A.cmd(f'SELECT "{NAME}"')
assert done == b"OK [READ-WRITE] SELECT completed\r\n", (done, lines)
assert b"* 1 EXISTS\r\n" in lines, lines
A.exact(f'SEARCH SUBJECT "Grüße"', "OK SEARCH completed", ["* SEARCH 1"])
A.exact(f'SEARCH SUBJECT "日本"', "OK SEARCH completed", ["* SEARCH 1"])
# No CHARSET after ENABLE UTF8=ACCEPT (RFC 6855 §3), for SORT none but UTF-8 (erratum 4029).
A.exact('SEARCH CHARSET UTF-8 SUBJECT "Grüße"',
        "BAD no CHARSET after ENABLE UTF8=ACCEPT: search strings are UTF-8")
A.exact("SORT (DATE) US-ASCII ALL",
        "BAD charset US-ASCII after ENABLE UTF8=ACCEPT: strings are UTF-8")
A.exact("SORT (DATE) UTF-8 ALL", "OK SORT completed", ["* SORT 1"])
# ENVELOPE: the raw UTF-8 Subject as a UTF-8 quoted string.
lines = A.exact("FETCH 1 (ENVELOPE)", "OK FETCH completed")
env = untagged(lines, b"* 1 FETCH")
assert len(env) == 1 and env[0].startswith(
    f'* 1 FETCH (ENVELOPE (NIL "{SUBJECT}" (('.encode()), lines
assert b"{" not in env[0], env

# --- a session without ENABLE sees the same mailboxes in modified UTF-7 --------------------
B.exact(f'LIST "" Entw&APw-rfe/%', "OK LIST completed",
        [f'* LIST (\\HasNoChildren) "/" {NAME7}'])
B.exact('LIST "" Gr*', "OK LIST completed", ['* LIST (\\HasNoChildren) "/" Gr&APw-n'])
B.exact(f"STATUS {NAME7} (MESSAGES)", "OK STATUS completed",
        [f"* STATUS {NAME7} (MESSAGES 1)"])
lines, done = B.cmd(f"EXAMINE {NAME7}")
assert done == b"OK [READ-ONLY] EXAMINE completed\r\n", (done, lines)
# Its SEARCH takes a CHARSET, as before; ENVELOPE's UTF-8 Subject is a literal.
subject = "Grüße".encode()
B.exact(b"SEARCH CHARSET UTF-8 SUBJECT {%d+}\r\n" % len(subject) + subject,
        "OK SEARCH completed", ["* SEARCH 1"])
lines, done = B.cmd("FETCH 1 (ENVELOPE)")
assert done == b"OK FETCH completed\r\n", (done, lines)
assert lines[0] == f"* 1 FETCH (ENVELOPE (NIL {{{len(SUBJECT.encode())}}}\r\n".encode(), lines
assert lines[1].startswith(SUBJECT.encode() + b" (("), lines
B.ok("UNSELECT")

# --- RENAME by UTF-8 names; B sees the new name in modified UTF-7 ---------------------------
A.ok("UNSELECT")
A.exact(f'RENAME "{NAME}" "{RENAMED}"', "OK RENAME completed")
A.exact('LIST "" "Entwürfe/%"', "OK LIST completed",
        [f'* LIST (\\HasNoChildren) "/" "{RENAMED}"'])
B.exact(f'LIST "" Entw&APw-rfe/%', "OK LIST completed",
        [f'* LIST (\\HasNoChildren) "/" {RENAMED7}'])

# --- refusals after ENABLE: invalid UTF-8 is a BAD, barred characters a NO ----------------
A.exact(b'CREATE "caf\xe9"', "BAD syntax error, or a command unknown in this state")
A.exact('CREATE "a\u2028b"',
        "NO [CANNOT] a mailbox name may not contain U+2028 (RFC 6855 section 3)")
A.exact('CREATE "a\u0085b"',
        "NO [CANNOT] a mailbox name may not contain U+0085 (RFC 6855 section 3)")
A.ok("NOOP")

# --- clean up ------------------------------------------------------------------------------
A.cmd(f'UNSUBSCRIBE "{NAME}"')
A.cmd(f'UNSUBSCRIBE "{RENAMED}"')
A.ok(f'DELETE "{RENAMED}"')
A.cmd('DELETE "Entwürfe"')
A.ok('DELETE "Grün"')
for s in (A, B, C):
    s.ok("LOGOUT")
print("imap_utf8: ok")
