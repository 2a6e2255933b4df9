/**
 * Room tickets (issue 10 item 4): when both sides declare `?caps=ticket`, their `session`s carry a
 * ticket signed by the service, no `init` call creates the room ahead, the first join creates it
 * from the ticket, and a session that ends with `bye` writes no storage at all. Everything else
 * (a side without the capability, a renewed deadline, an end a side has not heard, a hibernated
 * room) behaves as before, storing what the tickets cannot say. Real workerd, real sockets.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CAP_ROOM_TICKET, TICKET_PARAM, wsProtocols } from '../../protocol/messages.js';
import { readTicket, signTicket } from '../../worker/ticket.js';
import { DEFAULT_TEST_TURN_SECRET, Meters, startSignaling, type SignalingHandle } from '../support/signaling.js';
import { connect, connectRaw, sessionPair, type Frame, type SessionPair, type TestSocket } from './helpers.js';

/** Short grace so the room's end is counted within a test. */
const GRACE_MS = 200;
/** workerd hibernates an object after 10 s without events; wait past that. */
const IDLE_MS = 12_000;

let sig: SignalingHandle;
const meters = new Meters();
const count = (key: string): number => meters.count(key);

beforeAll(async () => {
  sig = await startSignaling({
    roomGraceMs: GRACE_MS,
    vars: { DEBUG_TRACE_EVENTS: '1' },
    onOutput: meters.onOutput,
  });
});
afterAll(async () => sig?.close());

const settle = (probe: () => boolean): Promise<void> => meters.settle(probe);

/** `app-<tag>` dials `hub-<tag>`, which accepts; both `session`s. */
const sessionFor = (tag: string, appCaps = CAP_ROOM_TICKET, hubCaps = CAP_ROOM_TICKET): Promise<SessionPair> => sessionPair(sig, tag, appCaps, hubCaps);

const roomPath = (s: Frame, ticket?: unknown): string => `/v1/rooms/${s.sessionId as string}${ticket !== undefined ? `?${TICKET_PARAM}=${ticket as string}` : ''}`;

describe('room tickets', () => {
  it('both sides declared tickets: no init call, the first join creates the room, and a session ended with bye writes nothing', async () => {
    meters.reset();
    const p = await sessionFor('t1');
    expect(typeof p.sa.ticket).toBe('string');
    // Both sides hold the same signed statement.
    expect(p.sb.ticket).toBe(p.sa.ticket);
    const ra = await connect(sig.url, roomPath(p.sa, p.sa.ticket), p.at);
    expect(await ra.next('joined')).toMatchObject({ role: 'initiator', peer: 'hub-t1', peerPresent: false, deadline: p.sa.deadline });
    const rb = await connect(sig.url, roomPath(p.sb, p.sb.ticket), p.ht);
    expect(await rb.next('joined')).toMatchObject({ role: 'responder', peer: 'app-t1', peerPresent: true });
    await ra.next('peer_joined');
    ra.send({ type: 'signal', data: { kind: 'offer', sdp: 'o' } });
    for (let i = 0; i < 11; i++) ra.send({ type: 'signal', data: { kind: 'candidate', candidate: `a${i}` } });
    rb.send({ type: 'signal', data: { kind: 'answer', sdp: 'a' } });
    const toB = [];
    for (let i = 0; i < 12; i++) toB.push(await rb.next('signal'));
    expect(toB.map((f) => f.seq)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    expect(await ra.next('signal')).toMatchObject({ seq: 1, data: { kind: 'answer' } });
    ra.send({ type: 'signal', data: { kind: 'bye' } });
    expect(await rb.next('closed')).toMatchObject({ reason: 'bye' });
    expect(await ra.next('closed')).toMatchObject({ reason: 'bye' });
    ra.close();
    rb.close();
    // Past the grace: nothing was stored, and no alarm was set (see below).
    await new Promise((r) => setTimeout(r, GRACE_MS + 1500));
    expect(count('room.write')).toBe(0);
    expect(count('presence.write')).toBe(0);
    // The two upgrades; no `init` call from presence, no alarm.
    expect(count('room.request')).toBe(2);
    p.app.close();
    p.hub.close();
  });

  it('one side without the capability: no ticket, the room is made by init and stored as before', async () => {
    meters.reset();
    const p = await sessionFor('t2', CAP_ROOM_TICKET, 'ack');
    expect(p.sa.ticket).toBeUndefined();
    expect(p.sb.ticket).toBeUndefined();
    const ra = await connect(sig.url, roomPath(p.sa), p.at);
    await ra.next('joined');
    const rb = await connect(sig.url, roomPath(p.sb), p.ht);
    await rb.next('joined');
    ra.send({ type: 'signal', data: { kind: 'bye' } });
    await rb.next('closed');
    await ra.next('closed');
    ra.close();
    rb.close();
    // The room's row, written at init and deleted at its end.
    await settle(() => count('room.write') >= 2);
    expect(count('room.write')).toBe(2);
    expect(count('room.request') - meters.traced('room.alarm')).toBe(3);
    p.app.close();
    p.hub.close();
  });

  it('refuses a join whose ticket is forged, altered, for another session or held by a stranger, and creates nothing', async () => {
    const p = await sessionFor('t3');
    const q = await sessionFor('t3b');
    const ticket = p.sa.ticket as string;
    const [payload, mac] = ticket.split('.') as [string, string];
    const flipped = `${payload}.${mac[0] === 'A' ? 'B' : 'A'}${mac.slice(1)}`;
    const forged = await signTicket(['a different secret of at least 16'], { sessionId: p.sa.sessionId as string, initiator: 'app-t3', responder: 'hub-t3', deadline: Date.now() + 60_000 });
    const stranger = await sig.issuer.accessToken({ sub: 'mallory', homes: ['home-t3'] });
    const tries: Array<[string, string]> = [
      [roomPath(p.sa, flipped), p.at],
      [roomPath(p.sa, forged), p.at],
      // The other session's genuine ticket, presented for this one.
      [roomPath(p.sa, q.sa.ticket), p.at],
      // This session's genuine ticket, presented by someone it does not name.
      [roomPath(p.sa, ticket), stranger],
      // Not a ticket at all.
      [roomPath(p.sa, 'x'.repeat(600)), p.at],
    ];
    for (const [path, token] of tries) {
      const r = await connectRaw(sig.url.replace(/^http/, 'ws') + path, wsProtocols(token));
      expect(r.ok).toBe(true);
      if (!r.ok) continue;
      expect(await r.socket.closed()).toBe(1008);
      expect(r.socket.closeReason).toBe('not a member of this session');
    }
    // None of those created anything: a member still joins with the genuine ticket and is told
    // the session it was given.
    const ra = await connect(sig.url, roomPath(p.sa, ticket), p.at);
    expect(await ra.next('joined')).toMatchObject({ peer: 'hub-t3', deadline: p.sa.deadline });
    ra.close();
    for (const s of [p.app, p.hub, q.app, q.hub]) s.close();
  });

  it('a ticket past its deadline opens no session', async () => {
    const p = await sessionFor('t4');
    // A fresh id with no room behind it: the stale (genuinely signed) ticket is all the room has.
    const other = `${(p.sa.sessionId as string).slice(0, -4)}zzzz`;
    const stale = await signTicket([DEFAULT_TEST_TURN_SECRET], { sessionId: other, initiator: 'app-t4', responder: 'hub-t4', deadline: Date.now() - 1000 });
    const r = await connectRaw(sig.url.replace(/^http/, 'ws') + `/v1/rooms/${other}?${TICKET_PARAM}=${stale}`, wsProtocols(p.at));
    expect(r.ok).toBe(true);
    if (r.ok) expect(await r.socket.closed()).toBe(1008);
    p.app.close();
    p.hub.close();
  });

  it('a ticketed room hibernates with both sides in it and carries on from its sockets; a side that left is stored for its return', { timeout: 60_000 }, async () => {
    meters.reset();
    const p = await sessionFor('t5');
    const ra = await connect(sig.url, roomPath(p.sa, p.sa.ticket), p.at);
    await ra.next('joined');
    const rb = await connect(sig.url, roomPath(p.sb, p.sb.ticket), p.ht);
    await rb.next('joined');
    ra.send({ type: 'signal', data: { kind: 'offer', sdp: 'o' } });
    expect(await rb.next('signal')).toMatchObject({ seq: 1 });
    const wakes = meters.traced('room.wake');
    await new Promise((r) => setTimeout(r, IDLE_MS));
    // A rebuilt instance with no stored record: meta from the attachments, still relaying.
    rb.send({ type: 'signal', data: { kind: 'answer', sdp: 'a' } });
    expect(await ra.next('signal')).toMatchObject({ seq: 1, data: { kind: 'answer' } });
    expect(meters.traced('room.wake')).toBeGreaterThan(wakes);
    expect(count('room.write')).toBe(0);
    // The hub's socket drops without bye: its counter must outlive the socket, so the room now
    // stores its record, and a signal sent meanwhile waits for the hub's return.
    await rb.closeAndWait();
    await ra.next('peer_left');
    ra.send({ type: 'signal', data: { kind: 'candidate', candidate: 'late' } });
    await settle(() => count('room.write') >= 2);
    expect(count('room.write')).toBeGreaterThanOrEqual(2);
    const back = await connect(sig.url, roomPath(p.sb, p.sb.ticket), p.ht);
    expect(await back.next('joined')).toMatchObject({ peerPresent: true });
    expect(await back.next('signal')).toMatchObject({ data: { kind: 'candidate', candidate: 'late' } });
    ra.close();
    back.close();
    p.app.close();
    p.hub.close();
  });
});

describe('a ticketed room\'s alarm (each move is a row written)', () => {
  /** A ticketed session on `svc` with both sides in its room. */
  async function bothIn(svc: SignalingHandle, tag: string): Promise<{ p: SessionPair; ra: TestSocket; rb: TestSocket }> {
    const p = await sessionPair(svc, tag, CAP_ROOM_TICKET, CAP_ROOM_TICKET);
    const ra = await connect(svc.url, roomPath(p.sa, p.sa.ticket), p.at);
    await ra.next('joined');
    const rb = await connect(svc.url, roomPath(p.sb, p.sb.ticket), p.ht);
    await rb.next('joined');
    return { p, ra, rb };
  }

  /** A service of its own (other tests' rooms would fire alarms into its meters); 3 s sessions. */
  async function withService(f: (svc: SignalingHandle, m: Meters) => Promise<void>): Promise<void> {
    const m = new Meters();
    const svc = await startSignaling({ issuer: sig.issuer, sessionTtlSeconds: 3, roomGraceMs: GRACE_MS, vars: { DEBUG_TRACE_EVENTS: '1' }, onOutput: m.onOutput });
    try {
      await f(svc, m);
    } finally {
      await svc.close();
    }
  }

  const untilDeadline = (p: SessionPair): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, (p.sa.deadline as number) - Date.now()) + 50));

  it('a room that stores nothing sets no alarm: joined, relayed, ended with bye, and nothing to delete', async () => {
    await withService(async (svc, m) => {
      const { p, ra, rb } = await bothIn(svc, 'ta1');
      // Well past the (200 ms) grace a creation alarm would have been set for.
      await new Promise((r) => setTimeout(r, GRACE_MS + 1000));
      ra.send({ type: 'signal', data: { kind: 'offer', sdp: 'o' } });
      expect(await rb.next('signal')).toMatchObject({ seq: 1, data: { kind: 'offer' } });
      rb.send({ type: 'signal', data: { kind: 'bye' } });
      await ra.next('closed');
      await rb.next('closed');
      // Past the deadline too: no alarm was set, so none fires, and nothing was written.
      await untilDeadline(p);
      await m.settle(() => true);
      expect(m.count('room.alarm_set')).toBe(0);
      expect(m.traced('room.alarm')).toBe(0);
      expect(m.count('room.write')).toBe(0);
      for (const x of [ra, rb, p.app, p.hub]) x.close();
    });
  });

  it('past an unrenewed deadline, the first frame closes the room for both sides: nothing relayed, renewed or minted', { timeout: 30_000 }, async () => {
    await withService(async (svc, m) => {
      for (const [tag, frame] of [
        ['ta2', { type: 'signal', data: { kind: 'offer', sdp: 'late' } }],
        ['ta3', { type: 'renew' }],
        ['ta4', { type: 'ice_servers' }],
      ] as const) {
        const { p, ra, rb } = await bothIn(svc, tag);
        await untilDeadline(p);
        ra.send(frame);
        // Both hear the deadline, and both sockets are closed.
        expect(await ra.next('closed')).toEqual({ type: 'closed', reason: 'deadline' });
        expect(await rb.next('closed')).toEqual({ type: 'closed', reason: 'deadline' });
        expect(await ra.closed()).toBe(1000);
        expect(await rb.closed()).toBe(1000);
        for (const x of [ra, rb]) expect(x.frames.map((f) => f.type)).not.toContain('signal');
        expect(ra.frames.map((f) => f.type)).not.toContain('renewed');
        expect(ra.frames.map((f) => f.type)).not.toContain('ice_servers');
        // A rejoin with the ticket after its deadline creates nothing.
        const again = await connectRaw(svc.url.replace(/^http/, 'ws') + roomPath(p.sa, p.sa.ticket), wsProtocols(p.at));
        expect(again.ok).toBe(true);
        if (again.ok) expect(await again.socket.closed()).toBe(1008);
        p.app.close();
        p.hub.close();
      }
      await m.settle(() => m.traced('room.deleted') >= 3);
      expect(m.traced('room.deleted')).toBe(3);
      expect(m.count('room.alarm_set')).toBe(0);
      expect(m.count('room.write')).toBe(0);
    });
  });

  it('signals buffered for a side that never joins are a row: the room sets its alarm with it, and that alarm deletes them', async () => {
    await withService(async (svc, m) => {
      const p = await sessionPair(svc, 'ta6', CAP_ROOM_TICKET, CAP_ROOM_TICKET);
      const ra = await connect(svc.url, roomPath(p.sa, p.sa.ticket), p.at);
      await ra.next('joined');
      await m.settle(() => true);
      expect(m.count('room.alarm_set')).toBe(0);
      // The hub never comes: the offer waits in storage, which no rule's own alarm would cover.
      ra.send({ type: 'signal', data: { kind: 'offer', sdp: 'o' } });
      await m.settle(() => m.count('room.alarm_set') >= 1);
      expect(m.count('room.write')).toBeGreaterThanOrEqual(1);
      expect(m.count('room.alarm_set')).toBe(1);
      // The app leaves too: one grace later the alarm deletes the room and its rows.
      await ra.closeAndWait();
      await m.settle(() => m.traced('room.deleted') >= 1);
      expect(m.traced('room.alarm')).toBeGreaterThanOrEqual(1);
      expect(m.traced('room.deleted')).toBe(1);
      p.app.close();
      p.hub.close();
    });
  });

  it('a room that stores a row sets its alarm then, and that alarm closes it at the deadline', { timeout: 30_000 }, async () => {
    await withService(async (svc, m) => {
      const { p, ra, rb } = await bothIn(svc, 'ta5');
      ra.send({ type: 'signal', data: { kind: 'offer', sdp: 'o' } });
      await rb.next('signal');
      // The hub's socket drops without bye: its counter must outlive the socket (a row), so the
      // room keeps an alarm from now on.
      await rb.closeAndWait();
      await ra.next('peer_left');
      await m.settle(() => m.count('room.alarm_set') >= 1);
      expect(m.count('room.write')).toBeGreaterThanOrEqual(1);
      expect(m.count('room.alarm_set')).toBe(1);
      // The app says nothing more: the alarm closes its socket at the deadline, and deletes.
      await untilDeadline(p);
      expect(await ra.next('closed', 5_000)).toEqual({ type: 'closed', reason: 'deadline' });
      await m.settle(() => m.traced('room.deleted') >= 1);
      expect(m.traced('room.alarm')).toBeGreaterThanOrEqual(1);
      expect(m.traced('room.deleted')).toBe(1);
      for (const x of [ra, p.app, p.hub]) x.close();
    });
  });
});

describe('ticket codec', () => {
  const meta = { sessionId: 'abcdefghijklmnopqrstuv', initiator: 'app-1', responder: 'hub-1', deadline: 1_800_000_000_000 };

  it('reads back what it signed, with the current or a previous secret (rotation)', async () => {
    const t = await signTicket(['secret-one-is-long-enough'], meta);
    expect(await readTicket(['secret-one-is-long-enough'], meta.sessionId, t)).toEqual(meta);
    expect(await readTicket(['secret-two-is-long-enough', 'secret-one-is-long-enough'], meta.sessionId, t)).toEqual(meta);
    expect(await readTicket(['secret-two-is-long-enough'], meta.sessionId, t)).toBeNull();
  });

  it('rejects another session, altered bytes and malformed or oversized input, without throwing', async () => {
    const t = await signTicket(['secret-one-is-long-enough'], meta);
    const s = ['secret-one-is-long-enough'];
    expect(await readTicket(s, 'abcdefghijklmnopqrstuw', t)).toBeNull();
    const [payload, mac] = t.split('.') as [string, string];
    const other = await signTicket(s, { ...meta, responder: 'hub-2' });
    expect(await readTicket(s, meta.sessionId, `${other.split('.')[0]}.${mac}`)).toBeNull();
    for (const bad of ['', '.', `${payload}.`, `.${mac}`, `${payload}.${mac}x`, `${payload}${mac}`, `${payload}.${mac}.${mac}`, 'é.é', `${'A'.repeat(5000)}.${mac}`, `${payload}.${'_'.repeat(43)}`]) {
      expect(await readTicket(s, meta.sessionId, bad)).toBeNull();
    }
  });
});
