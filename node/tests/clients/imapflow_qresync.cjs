// ImapFlow (npm `imapflow`, the IMAP library behind many modern mail apps) against Halyard:
// CONDSTORE/QRESYNC, COMPRESS=DEFLATE and IDLE. PHASE=mirror: mirror a mailbox, see another session's flag
// change and expunge arrive as FETCH and VANISHED, and record where the mirror stood before
// them. PHASE=resync (after a kill -9 of the master, on the new one): reopen with QRESYNC
// from the recorded state; exactly the expunged UID must come back as VANISHED (EARLIER)
// and exactly the flagged one as a changed message.
//
// Environment: IMAP_PORT, USER, PASSWORD, HOST, STATE (a file), PHASE.
'use strict';
const fs = require('fs');
const { ImapFlow } = require('imapflow');

const HOST = process.env.HOST || '127.0.0.1';
const PORT = Number(process.env.IMAP_PORT);
const STATE = process.env.STATE;
const BOX = 'flow';

function client() {
    return new ImapFlow({
        host: HOST,
        port: PORT,
        secure: false,
        doSTARTTLS: false,
        auth: { user: process.env.USER, pass: process.env.PASSWORD },
        qresync: true,
        logger: false,
    });
}

function check(cond, what) {
    if (!cond) {
        throw new Error('assertion failed: ' + what);
    }
}

async function until(what, pred, ms = 15000) {
    const end = Date.now() + ms;
    while (!pred()) {
        check(Date.now() < end, 'timed out waiting for ' + what);
        await new Promise(r => setTimeout(r, 50));
    }
}

async function mirror() {
    const a = client();
    await a.connect();
    check(a.enabled.has('QRESYNC') && a.enabled.has('CONDSTORE'), 'QRESYNC enabled: ' + [...a.enabled]);
    // ImapFlow turns COMPRESS=DEFLATE on by itself when offered; the whole run is compressed.
    check(!!a._deflate, 'COMPRESS=DEFLATE negotiated');
    await a.mailboxCreate(BOX);
    for (let i = 0; i < 5; i++) {
        await a.append(BOX, `From: a@example.org\r\nSubject: flow ${i}\r\n\r\nbody ${i}\r\n`);
    }
    const box = await a.mailboxOpen(BOX);
    const mirror = new Map();
    for await (const m of a.fetch('1:*', { uid: true, flags: true })) {
        mirror.set(m.uid, m.flags);
    }
    check(mirror.size === 5, 'mirrored 5 messages');
    const uids = [...mirror.keys()].sort((x, y) => x - y);
    const before = { uidValidity: String(box.uidValidity), modseq: String(box.highestModseq), uids };
    const vanished = [];
    const flagged = [];
    a.on('expunge', e => vanished.push(e));
    a.on('flags', f => flagged.push(f));
    // Another client changes the mailbox while `a` idles: the changes reach it in IDLE.
    const idling = a.idle();
    const b = client();
    await b.connect();
    await b.mailboxOpen(BOX);
    await b.messageFlagsAdd(String(uids[1]), ['\\Flagged'], { uid: true });
    await b.messageDelete(String(uids[3]), { uid: true });
    await b.logout();
    await until('VANISHED and FETCH during IDLE', () => vanished.length >= 1 && flagged.length >= 1);
    check(vanished.length === 1 && vanished[0].vanished === true && vanished[0].uid === uids[3] && !vanished[0].earlier,
        'one VANISHED for the expunged UID: ' + JSON.stringify(vanished));
    // In IDLE each change comes as it happens: \Flagged on one, \Deleted on the other
    // before it vanishes.
    const seen = JSON.stringify(flagged.map(f => [f.uid, [...f.flags]]));
    check(flagged.some(f => f.uid === uids[1] && f.flags.has('\\Flagged')), 'FETCH FLAGS of the flagged UID: ' + seen);
    check(flagged.every(f => f.uid === uids[1] || (f.uid === uids[3] && f.flags.has('\\Deleted'))), 'no other change: ' + seen);
    await a.logout();
    await idling;
    fs.writeFileSync(STATE, JSON.stringify(before));
}

async function resync() {
    const before = JSON.parse(fs.readFileSync(STATE, 'utf8'));
    const c = client();
    await c.connect();
    const vanished = [];
    const changed = [];
    c.on('expunge', e => vanished.push(e));
    c.on('flags', f => changed.push(f));
    const box = await c.mailboxOpen(BOX, { uidValidity: before.uidValidity, changedSince: before.modseq });
    check(String(box.uidValidity) === before.uidValidity, 'UIDVALIDITY survived the failover');
    check(box.exists === 4, 'four messages left: ' + box.exists);
    const gone = vanished.map(e => e.uid);
    check(vanished.every(e => e.vanished && e.earlier) && gone.length === 1 && gone[0] === before.uids[3],
        'VANISHED (EARLIER) names exactly the expunged UID: ' + JSON.stringify(vanished));
    check(changed.length === 1 && changed[0].uid === before.uids[1] && changed[0].flags.has('\\Flagged'),
        'exactly the flagged message changed: ' + JSON.stringify(changed.map(f => [f.uid, [...f.flags]])));
    await c.logout();
}

(process.env.PHASE === 'resync' ? resync() : mirror()).then(
    () => console.log('imapflow', process.env.PHASE, 'ok'),
    e => {
        console.error(e && e.stack ? e.stack : e);
        process.exit(1);
    },
);
