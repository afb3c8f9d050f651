// ImapFlow (npm `imapflow`) against Halyard as an IMAP4rev2 client: it enables IMAP4rev2 by
// itself when the server offers it beside IMAP4rev1, so this is what a modern mail app does.
// It creates and opens mailboxes (MAILBOXID from CREATE and SELECT, kept by RENAME), appends a
// small conversation, fetches EMAILID and THREADID, searches by flags (answered with ESEARCH in
// rev2), by EMAILID and by THREADID, moves a message and finds it under the same ids, and
// reads STATUS with DELETED and SIZE. Every answer is checked against what was stored.
//
// Environment: IMAP_PORT, USER, PASSWORD, HOST.
'use strict';
const { ImapFlow } = require('imapflow');

const HOST = process.env.HOST || '127.0.0.1';
const PORT = Number(process.env.IMAP_PORT);

function check(cond, what) {
    if (!cond) {
        throw new Error('assertion failed: ' + what);
    }
}

const MSGS = [
    'From: a@example.org\r\nSubject: plan\r\nMessage-ID: <plan@example.org>\r\n\r\nfirst\r\n',
    'From: b@example.org\r\nSubject: Re: plan\r\nMessage-ID: <re1@example.org>\r\n' +
        'In-Reply-To: <plan@example.org>\r\nReferences: <plan@example.org>\r\n\r\nreply\r\n',
    'From: c@example.org\r\nSubject: other\r\nMessage-ID: <other@example.org>\r\n\r\nother\r\n',
];

async function main() {
    const c = new ImapFlow({
        host: HOST,
        port: PORT,
        secure: false,
        doSTARTTLS: false,
        auth: { user: process.env.USER, pass: process.env.PASSWORD },
        logger: false,
    });
    await c.connect();
    check(c.capabilities.has('IMAP4rev2') && c.capabilities.has('IMAP4rev1'), 'both revisions offered');
    check(c.enabled.has('IMAP4REV2'), 'ImapFlow enabled IMAP4rev2: ' + [...c.enabled]);
    check(c.capabilities.has('OBJECTID'), 'OBJECTID offered');

    const made = await c.mailboxCreate('flow2');
    check(typeof made.mailboxId === 'string' && /^[A-Za-z0-9_-]+$/.test(made.mailboxId), 'CREATE gave a MAILBOXID: ' + JSON.stringify(made));
    const other = await c.mailboxCreate('flow2-other');
    check(other.mailboxId && other.mailboxId !== made.mailboxId, 'MAILBOXIDs differ');
    await c.mailboxRename('flow2', 'flow2-renamed');
    await c.mailboxRename('flow2-renamed', 'flow2');
    for (const [i, m] of MSGS.entries()) {
        await c.append('flow2', m, i === 2 ? ['\\Seen'] : []);
    }
    const box = await c.mailboxOpen('flow2');
    check(box.mailboxId === made.mailboxId, 'SELECT shows the MAILBOXID CREATE gave, across RENAME: ' + box.mailboxId);
    check(box.exists === 3, 'three messages');

    const ids = new Map();
    for await (const m of c.fetch('1:*', { uid: true, flags: true, threadId: true })) {
        check(!m.flags.has('\\Recent'), 'no \\Recent under IMAP4rev2');
        ids.set(m.uid, { emailId: m.emailId, threadId: m.threadId });
    }
    check(ids.size === 3, 'fetched three');
    const [u1, u2, u3] = [...ids.keys()].sort((x, y) => x - y);
    const e = uid => ids.get(uid).emailId;
    const t = uid => ids.get(uid).threadId;
    check(new Set([e(u1), e(u2), e(u3)]).size === 3, 'three EMAILIDs');
    check(t(u1) && t(u1) === t(u2), 'the reply is in the first message\'s thread');
    check(t(u3) !== t(u1), 'the other message is a thread of its own');

    // SEARCH is answered with ESEARCH in a rev2 session; ImapFlow reads either.
    const seen = await c.search({ seen: true }, { uid: true });
    check(JSON.stringify(seen) === JSON.stringify([u3]), 'search seen: ' + JSON.stringify(seen));
    const unseen = await c.search({ seen: false }, { uid: true });
    check(JSON.stringify(unseen) === JSON.stringify([u1, u2]), 'search unseen: ' + JSON.stringify(unseen));
    const byEmail = await c.search({ emailId: e(u2) }, { uid: true });
    check(JSON.stringify(byEmail) === JSON.stringify([u2]), 'search emailId: ' + JSON.stringify(byEmail));
    const byThread = await c.search({ threadId: t(u1) }, { uid: true });
    check(JSON.stringify(byThread) === JSON.stringify([u1, u2]), 'search threadId: ' + JSON.stringify(byThread));
    const none = await c.search({ subject: 'no such subject' });
    check(Array.isArray(none) && none.length === 0, 'empty search: ' + JSON.stringify(none));

    // MOVE keeps EMAILID and THREADID.
    await c.messageFlagsAdd({ uid: u1 }, ['\\Deleted'], { uid: true });
    const st = await c.status('flow2', { messages: true, size: true });
    const size = MSGS.reduce((n, m) => n + Buffer.byteLength(m), 0);
    check(st.messages === 3 && st.size === size, 'STATUS MESSAGES and SIZE: ' + JSON.stringify(st));
    await c.messageMove({ uid: u2 }, 'flow2-other', { uid: true });
    const moved = await c.mailboxOpen('flow2-other');
    check(moved.mailboxId === other.mailboxId, 'the other mailbox\'s MAILBOXID');
    const after = [];
    for await (const m of c.fetch('1:*', { uid: true, threadId: true })) {
        after.push(m);
    }
    check(after.length === 1 && after[0].emailId === e(u2) && after[0].threadId === t(u2), 'MOVE kept EMAILID and THREADID');
    await c.logout();
    console.log('imapflow_rev2: ok');
}

main().catch(err => {
    console.error(err);
    process.exit(1);
});
