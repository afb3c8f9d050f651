"""LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), STATUS=SIZE (RFC 8438),
CREATE-SPECIAL-USE (RFC 6154) and APPENDLIMIT (RFC 7889) over a raw socket against a running
Halyard, with the exact lines each command must answer.

The tree under `lx` (alice's), worked out by hand:

    lx             no mailbox: a level above the others (\\NonExistent)
    lx/one         2 messages (one \\Seen), not subscribed
    lx/outbox      CREATE ... (USE (\\Sent)), subscribed
    lx/three       CREATE ... (USE (\\Archive)), subscribed
    lx/trash       CREATE ... (USE ()): no special use despite its name, not subscribed
    lx/two         CREATE ... (USE (\\Drafts)), not subscribed
    lx/two/deep    subscribed

and bob's subscription to alice's shared `lxshare`, which alice then deletes: a subscribed
name that is no mailbox any more (\\NonExistent \\Subscribed).

Environment: IMAP_PORT, USER, PASSWORD (alice), USER2, PASSWORD2 (bob), HOST. The server's
largest literal is 16 MiB (node/tests/access.rs), so APPENDLIMIT is 16777216.
"""
import os

import imapraw

USER, PW = os.environ["USER"], os.environ["PASSWORD"]
USER2, PW2 = os.environ["USER2"], os.environ["PASSWORD2"]
OWNER = "alice@example.org"
LIMIT = 16 << 20


class Raw(imapraw.Raw):
    def __init__(self):
        super().__init__("x", strip_tag=True)

    def expect(self, text, *want):
        """The command succeeds with exactly these untagged lines, in this order."""
        lines = self.ok(text)
        got = [l.decode() for l in lines]
        want = [w + "\r\n" for w in want]
        assert got == want, f"{text}:\n got  {got}\n want {want}"

    def refused(self, text, kind, code=None):
        lines, done = self.cmd(text)
        assert done.startswith(kind.encode()), f"{text}: {done} {lines}"
        if code:
            assert done.startswith(f"{kind} [{code}]".encode()), f"{text}: {done}"
        assert not lines, f"{text}: {lines}"


A, B = Raw(), Raw()
A.ok(f"LOGIN {USER} {PW}")
B.ok(f"LOGIN {USER2} {PW2}")

# --- the capabilities, each advertised -----------------------------------------------------
caps = [l for l in A.ok("CAPABILITY") if l.startswith(b"* CAPABILITY ")]
assert len(caps) == 1, caps
words = caps[0].decode().split()
for c in ["LIST-EXTENDED", "LIST-STATUS", "STATUS=SIZE", "CREATE-SPECIAL-USE",
          f"APPENDLIMIT={LIMIT}", "SPECIAL-USE", "CHILDREN"]:
    assert c in words, f"capability {c} missing: {words}"
# A message over the limit is refused before it is sent (synchronising literal).
A.ok("CREATE lx/one")
A.refused(f"APPEND lx/one {{{LIMIT + 1}}}", "NO", "TOOBIG")

# --- CREATE-SPECIAL-USE --------------------------------------------------------------------
A.ok("CREATE lx/two (USE (\\Drafts))")
A.ok("CREATE lx/two/deep")
A.ok("CREATE lx/three (use (\\archive))")
A.ok("CREATE lx/outbox (USE (\\Sent))")
A.ok("CREATE lx/trash (USE ())")  # asked for none: the name does not give it \Trash
# What this server cannot give: NO [USEATTR], and nothing is created.
A.refused("CREATE lx/bad (USE (\\Flagged))", "NO", "USEATTR")  # a virtual mailbox
A.refused("CREATE lx/bad (USE (\\All))", "NO", "USEATTR")
A.refused("CREATE lx/bad (USE (\\Sent \\Trash))", "NO", "USEATTR")  # one use per mailbox
A.refused("CREATE lx/bad (USE (\\Important))", "NO", "USEATTR")
A.refused("CREATE lx/bad (FOO)", "BAD")
A.refused("CREATE lx/bad (USE (Sent))", "BAD")
A.refused("CREATE lx/two (USE (\\Trash))", "NO")  # exists already
A.expect('LIST "" lx/bad')
# The plain LIST shows what CREATE gave.
A.expect('LIST "" lx/outbox', '* LIST (\\HasNoChildren \\Sent) "/" lx/outbox')
A.expect('LIST "" lx/trash', '* LIST (\\HasNoChildren) "/" lx/trash')

# CREATE subscribes; leave lx/outbox, lx/three and lx/two/deep subscribed.
for name in ["lx/one", "lx/two", "lx/trash"]:
    A.ok("UNSUBSCRIBE " + name)

msg1 = "From: a@example.org\r\nSubject: one\r\n\r\nfirst\r\n"
msg2 = "From: a@example.org\r\nSubject: two\r\n\r\nthe second one\r\n"
A.ok(f"APPEND lx/one (\\Seen) {{{len(msg1)}+}}\r\n{msg1}")
A.ok(f"APPEND lx/one {{{len(msg2)}+}}\r\n{msg2}")
size = len(msg1) + len(msg2)

# --- LIST-EXTENDED: selection options ---------------------------------------------------------
A.expect('LIST (SUBSCRIBED) "" "lx/*"',
         '* LIST (\\Subscribed \\HasNoChildren \\Sent) "/" lx/outbox',
         '* LIST (\\Subscribed \\HasNoChildren \\Archive) "/" lx/three',
         '* LIST (\\Subscribed \\HasNoChildren) "/" lx/two/deep')
A.expect('LIST (SUBSCRIBED) "" lx')  # no mailbox, not subscribed
# RECURSIVEMATCH: a parent that is not subscribed but has a subscribed name below it.
A.expect('LIST (SUBSCRIBED RECURSIVEMATCH) "" "lx/%"',
         '* LIST (\\Subscribed \\HasNoChildren \\Sent) "/" lx/outbox',
         '* LIST (\\Subscribed \\HasNoChildren \\Archive) "/" lx/three',
         '* LIST (\\HasChildren \\Drafts) "/" lx/two ("CHILDINFO" ("SUBSCRIBED"))')
A.expect('LIST (RECURSIVEMATCH SUBSCRIBED REMOTE) "" lx',
         '* LIST (\\NonExistent \\HasChildren) "/" lx ("CHILDINFO" ("SUBSCRIBED"))')
A.refused('LIST (RECURSIVEMATCH) "" "lx/%"', "BAD")  # never alone (RFC 5258 3.1)
A.refused('LIST (REMOTE RECURSIVEMATCH) "" "lx/%"', "BAD")
A.refused('LIST (SPECIAL-USE RECURSIVEMATCH) "" "lx/%"', "BAD")  # independent (RFC 6154 6)
A.refused('LIST (BOGUS) "" "lx/%"', "BAD")
A.refused('LIST "" "lx/%" RETURN (BOGUS)', "BAD")
# SPECIAL-USE selection (RFC 6154): only the mailboxes with a special use.
A.expect('LIST (SPECIAL-USE) "" "lx/*" RETURN (SPECIAL-USE)',
         '* LIST (\\HasNoChildren \\Sent) "/" lx/outbox',
         '* LIST (\\HasNoChildren \\Archive) "/" lx/three',
         '* LIST (\\HasChildren \\Drafts) "/" lx/two')
A.expect('LIST (SUBSCRIBED SPECIAL-USE) "" "lx/*"',
         '* LIST (\\Subscribed \\HasNoChildren \\Sent) "/" lx/outbox',
         '* LIST (\\Subscribed \\HasNoChildren \\Archive) "/" lx/three')

# --- LIST-EXTENDED: return options, several patterns ------------------------------------------
A.expect('LIST "" "lx/%" RETURN (CHILDREN)',
         '* LIST (\\HasNoChildren) "/" lx/one',
         '* LIST (\\HasNoChildren \\Sent) "/" lx/outbox',
         '* LIST (\\HasNoChildren \\Archive) "/" lx/three',
         '* LIST (\\HasNoChildren) "/" lx/trash',
         '* LIST (\\HasChildren \\Drafts) "/" lx/two')
A.expect('LIST "" "lx/t*" RETURN (SUBSCRIBED SPECIAL-USE)',
         '* LIST (\\Subscribed \\HasNoChildren \\Archive) "/" lx/three',
         '* LIST (\\HasNoChildren) "/" lx/trash',
         '* LIST (\\HasChildren \\Drafts) "/" lx/two',
         '* LIST (\\Subscribed \\HasNoChildren) "/" lx/two/deep')
# The level above is no mailbox: \NonExistent in an extended LIST, \Noselect in a plain one.
A.expect('LIST () "" lx RETURN (CHILDREN)', '* LIST (\\NonExistent \\HasChildren) "/" lx')
A.expect('LIST "" lx', '* LIST (\\Noselect \\HasChildren) "/" lx')
# Several patterns: each name once, in order.
A.expect('LIST "" ("lx/one" "lx/tw*" "lx/one" lx/zz%)',
         '* LIST (\\HasNoChildren) "/" lx/one',
         '* LIST (\\HasChildren \\Drafts) "/" lx/two',
         '* LIST (\\HasNoChildren) "/" lx/two/deep')
A.expect('LIST "lx/" (one "th%")',
         '* LIST (\\HasNoChildren) "/" lx/one',
         '* LIST (\\HasNoChildren \\Archive) "/" lx/three')
A.expect('LIST () "" ""', '* LIST (\\Noselect) "/" ""')

# --- LIST-STATUS and STATUS=SIZE ---------------------------------------------------------------
A.expect('LIST "" lx/one RETURN (STATUS (MESSAGES UNSEEN SIZE))',
         '* LIST (\\HasNoChildren) "/" lx/one',
         f'* STATUS lx/one (MESSAGES 2 UNSEEN 1 SIZE {size})')
# No STATUS for a name that is no mailbox.
A.expect('LIST "" ("lx" "lx/o*") RETURN (CHILDREN STATUS (MESSAGES UIDNEXT SIZE))',
         '* LIST (\\NonExistent \\HasChildren) "/" lx',
         '* LIST (\\HasNoChildren) "/" lx/one',
         f'* STATUS lx/one (MESSAGES 2 UIDNEXT 3 SIZE {size})',
         '* LIST (\\HasNoChildren \\Sent) "/" lx/outbox',
         '* STATUS lx/outbox (MESSAGES 0 UIDNEXT 1 SIZE 0)')
A.refused('LIST "" lx/one RETURN (STATUS ())', "BAD")
A.expect("STATUS lx/one (SIZE)", f"* STATUS lx/one (SIZE {size})")
A.expect("STATUS lx/one (MESSAGES UNSEEN SIZE)",
         f"* STATUS lx/one (MESSAGES 2 UNSEEN 1 SIZE {size})")

# --- APPENDLIMIT as a STATUS item ---------------------------------------------------------------
A.expect("STATUS lx/one (MESSAGES APPENDLIMIT)",
         f"* STATUS lx/one (MESSAGES 2 APPENDLIMIT {LIMIT})")
A.expect('LIST "" lx/outbox RETURN (STATUS (APPENDLIMIT))',
         '* LIST (\\HasNoChildren \\Sent) "/" lx/outbox',
         f'* STATUS lx/outbox (APPENDLIMIT {LIMIT})')
A.refused("STATUS lx/nope (APPENDLIMIT)", "NO")
A.refused("STATUS lx/one (APPENDLIMIT BOGUS)", "BAD")

# --- a subscribed name that is no mailbox any more ----------------------------------------------
SHARED = f"Other Users/{OWNER}/lxshare"
A.ok("CREATE lxshare")
A.ok("SETACL lxshare bob@example.org lr")
B.ok(f'SUBSCRIBE "{SHARED}"')
B.expect(f'LIST (SUBSCRIBED) "" "Other Users/{OWNER}/lx*"',
         f'* LIST (\\Subscribed \\HasNoChildren) "/" "{SHARED}"')
A.ok("DELETE lxshare")
B.expect(f'LIST (SUBSCRIBED) "" "Other Users/{OWNER}/lx*"',
         f'* LIST (\\NonExistent \\Subscribed \\HasNoChildren) "/" "{SHARED}"')
B.expect(f'LIST "" "Other Users/{OWNER}/lx*" RETURN (SUBSCRIBED)')  # no such mailbox
# The owner's level above it is no mailbox either; it has children if alice shares anything
# else with bob.
others = B.ok(f'LIST "" "Other Users/{OWNER}/*"')
kids = "\\HasChildren" if others else "\\HasNoChildren"
lines = B.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" "Other Users/%"')
mine = [l.decode() for l in lines if f'"Other Users/{OWNER}"'.encode() in l]
assert mine == [f'* LIST (\\NonExistent {kids}) "/" "Other Users/{OWNER}" '
                '("CHILDINFO" ("SUBSCRIBED"))\r\n'], lines
# Clean up: the subscription can only be dropped while the mailbox is there.
A.ok("CREATE lxshare")
A.ok("SETACL lxshare bob@example.org lr")
B.ok(f'UNSUBSCRIBE "{SHARED}"')
A.ok("DELETE lxshare")
B.expect(f'LIST (SUBSCRIBED) "" "Other Users/{OWNER}/lx*"')

for name in ["lx/two/deep", "lx/two", "lx/one", "lx/outbox", "lx/three", "lx/trash"]:
    A.ok("DELETE " + name)
A.expect('LIST "" "lx*"')
A.ok("LOGOUT")
B.ok("LOGOUT")
print("imap_list_extended: all scenarios passed")
