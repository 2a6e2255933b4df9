/**
 * Storage writes per exchange (issue 10 item 4), counted by the worker's own meters
 * (`DEBUG_TRACE_EVENTS`) in real workerd: relayed signals cost no storage write (a connected
 * side's seq counter lives in its socket attachment), a room that ends with `bye` costs two rows
 * written in all (created, deleted), and the request costs none: while both sides are connected
 * it rides in their presence sockets' attachments. Storage is presence's overflow path: a request
 * held for an offline target, and records too large for an attachment, are written (and still
 * work). bench/signaling prices the same counts. These clients declare no capability, so their
 * rooms are made by `init` and stored; with room tickets a room stores nothing on this path
 * (tickets.test.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Meters, startSignaling, type SignalingHandle } from '../support/signaling.js';
import { TIMER_HORIZON_MS } from '../../worker/config.js';
import { connect, online, type TestSocket } from './helpers.js';

/** Short grace so the room's deletion is counted within the test. */
const GRACE_MS = 200;
/** Far longer than the held-request test needs to bring its target online. */
const OFFLINE_WAIT_MS = 15_000;

let sig: SignalingHandle;
const meters = new Meters();
const count = (key: string): number => meters.count(key);

beforeAll(async () => {
  sig = await startSignaling({
    roomGraceMs: GRACE_MS,
    // The held-request test connects its target after a pause; a loaded machine must not turn
    // that into an offline verdict.
    offlineWaitMs: OFFLINE_WAIT_MS,
    vars: { DEBUG_TRACE_EVENTS: '1' },
    onOutput: meters.onOutput,
  });
});
afterAll(async () => sig?.close());

const settle = (probe: () => boolean): Promise<void> => meters.settle(probe);

describe('storage writes', () => {
  it('relayed signals write nothing; a room ended with bye writes two rows in all', async () => {
    const at = await sig.issuer.accessToken({ sub: 'w-app', homes: ['home-w'] });
    const ht = await sig.issuer.accessToken({ sub: 'w-hub', homes: ['home-w'] });
    const app = await online(sig.url, at);
    const hub = await online(sig.url, ht);
    app.send({ type: 'dial', reqId: 'w', to: 'w-hub' });
    const req = await hub.next('request');
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    const s = await app.next('session');
    await hub.next('session');
    const ra = await connect(sig.url, `/v1/rooms/${s.sessionId}`, at);
    await ra.next('joined');
    const rb = await connect(sig.url, `/v1/rooms/${s.sessionId}`, ht);
    await rb.next('joined');
    await ra.next('peer_joined');
    await settle(() => count('room.write') >= 1);
    const roomWritesBefore = count('room.write');
    // The room row, written once when the room was created.
    expect(roomWritesBefore).toBe(1);

    ra.send({ type: 'signal', data: { kind: 'offer', sdp: 'o' } });
    for (let i = 0; i < 11; i++) ra.send({ type: 'signal', data: { kind: 'candidate', candidate: `a${i}` } });
    rb.send({ type: 'signal', data: { kind: 'answer', sdp: 'a' } });
    for (let i = 0; i < 11; i++) rb.send({ type: 'signal', data: { kind: 'candidate', candidate: `b${i}` } });
    const toB = [];
    const toA = [];
    for (let i = 0; i < 12; i++) toB.push(await rb.next('signal'));
    for (let i = 0; i < 12; i++) toA.push(await ra.next('signal'));
    // Numbered 1..12 for each side, in order, as before.
    expect(toB.map((f) => f.seq)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    expect(toA.map((f) => f.seq)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    await settle(() => count('room.message') >= 24);
    expect(count('room.message')).toBeGreaterThanOrEqual(24);
    expect(count('room.write')).toBe(roomWritesBefore);

    ra.send({ type: 'signal', data: { kind: 'bye' } });
    await rb.next('closed');
    await ra.next('closed');
    // The grace passes and the room deletes its one row.
    await settle(() => count('room.write') >= 2);
    expect(count('room.write')).toBe(2);
    // Presence: the pending request on each side lived in the sockets' attachments.
    expect(count('presence.write')).toBe(0);
    // Room alarms with this 200 ms grace, shorter than the exchange: at creation, re-armed to the
    // deadline when that first alarm fires with both sides present, back to the grace at bye;
    // both sides' leaving after bye moves nothing. (Within a longer grace: one, see below.)
    expect(count('room.alarm_set')).toBe(3);
    app.close();
    hub.close();
  });

  it('an exchange that ends within the grace sets one room alarm (at creation); a second seq lease block writes no row', async () => {
    // The grace of a deployment (15 s), far longer than an exchange even on a loaded machine.
    const longMeters = new Meters();
    const long = await startSignaling({ issuer: sig.issuer, vars: { DEBUG_TRACE_EVENTS: '1' }, onOutput: longMeters.onOutput });
    try {
      const at = await sig.issuer.accessToken({ sub: 'l-app', homes: ['home-l'] });
      const ht = await sig.issuer.accessToken({ sub: 'l-hub', homes: ['home-l'] });
      const app = await online(long.url, at);
      const hub = await online(long.url, ht);
      app.send({ type: 'dial', reqId: 'l', to: 'l-hub' });
      const req = await hub.next('request');
      hub.send({ type: 'answer', reqId: req.reqId, accept: true });
      const s = await app.next('session');
      const ra = await connect(long.url, `/v1/rooms/${s.sessionId}`, at);
      await ra.next('joined');
      const rb = await connect(long.url, `/v1/rooms/${s.sessionId}`, ht);
      await rb.next('joined');
      for (let i = 0; i < 40; i++) ra.send({ type: 'signal', data: { kind: 'candidate', candidate: `l${i}` } });
      const seqs = [];
      for (let i = 0; i < 40; i++) seqs.push((await rb.next('signal')).seq);
      // Past one lease block: still 1..40 in order, and still no storage write.
      expect(seqs).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
      ra.send({ type: 'signal', data: { kind: 'bye' } });
      await rb.next('closed');
      await ra.next('closed');
      await settle(() => longMeters.count('room.message') >= 41);
      // The join and bye no longer move the alarm set at creation (before: three writes).
      expect(longMeters.count('room.alarm_set')).toBe(1);
      expect(longMeters.count('room.write')).toBe(1);
      app.close();
      hub.close();
    } finally {
      await long.close();
    }
  });

  it('a side that leaves and rejoins keeps its numbering (its counter is stored when it leaves)', async () => {
    const at = await sig.issuer.accessToken({ sub: 'x-app', homes: ['home-x'] });
    const ht = await sig.issuer.accessToken({ sub: 'x-hub', homes: ['home-x'] });
    const app = await online(sig.url, at);
    const hub = await online(sig.url, ht);
    app.send({ type: 'dial', reqId: 'x', to: 'x-hub' });
    const req = await hub.next('request');
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    const s = await app.next('session');
    const ra = await connect(sig.url, `/v1/rooms/${s.sessionId}`, at);
    await ra.next('joined');
    const rb = await connect(sig.url, `/v1/rooms/${s.sessionId}`, ht);
    await rb.next('joined');
    for (let i = 0; i < 3; i++) ra.send({ type: 'signal', data: { kind: 'candidate', candidate: `c${i}` } });
    for (let i = 0; i < 3; i++) await rb.next('signal');
    await rb.closeAndWait();
    const rb2 = await connect(sig.url, `/v1/rooms/${s.sessionId}`, ht);
    await rb2.next('joined');
    ra.send({ type: 'signal', data: { kind: 'candidate', candidate: 'after' } });
    expect(await rb2.next('signal')).toMatchObject({ seq: 4, data: { candidate: 'after' } });
    for (const x of [ra, rb2, app, hub]) x.close();
  });

  it('a request held for an offline target is stored, and leaves storage once its target connects', async () => {
    const at = await sig.issuer.accessToken({ sub: 'o-app', homes: ['home-o'] });
    const ht = await sig.issuer.accessToken({ sub: 'o-hub', homes: ['home-o'] });
    const app = await online(sig.url, at);
    await settle(() => true);
    const before = count('presence.write');
    app.send({ type: 'dial', reqId: 'o', to: 'o-hub' });
    // The target's object holds it in a row (no socket to carry it)...
    await settle(() => count('presence.write') > before);
    expect(count('presence.write') - before).toBe(1);
    // ...which moves to the socket's attachment once the target connects and has it delivered.
    const hub = await online(sig.url, ht);
    const req = await hub.next('request');
    expect(req.from).toBe('o-app');
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    await app.next('session');
    await hub.next('session');
    await settle(() => count('presence.write') >= before + 2);
    expect(count('presence.write') - before).toBe(2);
    app.close();
    hub.close();
  });

  it('records too large for an attachment overflow to storage, and the exchange works', async () => {
    // 20 homes of 40 characters: the identity fits an attachment, the incoming request (which
    // carries the initiator's homes too) does not, the initiator's dial does.
    const homes = Array.from({ length: 20 }, (_, i) => `big-home-${i}-`.padEnd(40, 'x'));
    const at = await sig.issuer.accessToken({ sub: 'v-app', homes });
    const ht = await sig.issuer.accessToken({ sub: 'v-hub', homes });
    const app = await online(sig.url, at);
    const hub = await online(sig.url, ht);
    await settle(() => true);
    const before = count('presence.write');
    app.send({ type: 'dial', reqId: 'v', to: 'v-hub' });
    const req = await hub.next('request');
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    const s = await app.next('session');
    expect(await hub.next('session')).toMatchObject({ sessionId: s.sessionId });
    // The target's row, written and deleted; the dial rode in the initiator's attachment.
    await settle(() => count('presence.write') >= before + 2);
    expect(count('presence.write') - before).toBe(2);
    app.close();
    hub.close();
  });
});

describe('presence alarms (each move is a storage write)', () => {
  // A service of its own with the deployment's timings (30 s request timeout, 60 s staleness),
  // so a request's deadline falls before the socket's staleness check, as in production.
  let svc: SignalingHandle;
  const m = new Meters();
  beforeAll(async () => {
    svc = await startSignaling({ issuer: sig.issuer, offlineWaitMs: 3000, requestTimeoutMs: 30_000, vars: { DEBUG_TRACE_EVENTS: '1' }, onOutput: m.onOutput });
  });
  afterAll(async () => svc?.close());

  /** Both presence sockets, online and settled: each wrote its staleness alarm once on connecting. */
  async function pair(tag: string, caps = ''): Promise<{ app: TestSocket; hub: TestSocket }> {
    const at = await sig.issuer.accessToken({ sub: `${tag}-app`, homes: [`home-${tag}`] });
    const ht = await sig.issuer.accessToken({ sub: `${tag}-hub`, homes: [`home-${tag}`] });
    const app = await online(svc.url, at, caps);
    const hub = await online(svc.url, ht, caps);
    await m.settle(() => m.count('presence.alarm_set') >= 2);
    m.reset();
    return { app, hub };
  }

  it('a request answered within the horizon moves no alarm, with and without delivery acks', async () => {
    for (const caps of ['', 'ack']) {
      const { app, hub } = await pair(`pa${caps}`, caps);
      for (const n of [1, 2]) {
        app.send({ type: 'dial', reqId: `d${n}`, to: `pa${caps}-hub` });
        const req = await hub.next('request');
        if (caps === 'ack') hub.send({ type: 'ringing', reqId: req.reqId });
        hub.send({ type: 'answer', reqId: req.reqId, accept: true });
        await app.next('session');
        await hub.next('session');
      }
      // Past the horizon: a timer left pending would have written by now.
      await new Promise((r) => setTimeout(r, TIMER_HORIZON_MS + 500));
      await m.settle(() => true);
      expect(m.count('presence.request')).toBeGreaterThan(0);
      expect(m.count('presence.alarm_set')).toBe(0);
      app.close();
      hub.close();
    }
  });

  it('a request still pending after the horizon has its alarm written then, and answering it moves none', async () => {
    const { app, hub } = await pair('pb');
    app.send({ type: 'dial', reqId: 'b', to: 'pb-hub' });
    const req = await hub.next('request');
    await new Promise((r) => setTimeout(r, TIMER_HORIZON_MS / 2));
    await m.settle(() => true, 0);
    expect(m.count('presence.alarm_set')).toBe(0);
    // The dialer's deadline and the target's record, each moved once: the objects may now
    // hibernate with the request pending (hibernation.test.ts).
    await m.settle(() => m.count('presence.alarm_set') >= 2, TIMER_HORIZON_MS);
    expect(m.count('presence.alarm_set')).toBe(2);
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    await app.next('session');
    await hub.next('session');
    await m.settle(() => true);
    expect(m.count('presence.alarm_set')).toBe(2);
    app.close();
    hub.close();
  });

  it('an offline verdict (3 s, past the horizon but due soon after it) moves no alarm on the dialer\'s side', async () => {
    const { app, hub } = await pair('pd');
    hub.close();
    await m.settle(() => true);
    m.reset();
    const t0 = Date.now();
    app.send({ type: 'dial', reqId: 'd', to: 'pd-nobody' });
    expect(await app.next('dial_failed')).toMatchObject({ reqId: 'd', code: 'peer_offline' });
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(3000);
    expect(took).toBeLessThan(10_000);
    await m.settle(() => true);
    // One: the never-connected target's new object, which holds the request with no socket and
    // no alarm set, writes its alarm at once. The dialer's 3 s wait stayed in memory.
    expect(m.count('presence.alarm_set')).toBe(1);
    app.close();
  });

  it('a deadline inside the horizon is kept by the timer, on time, without an alarm', async () => {
    const { app, hub } = await pair('pc');
    const t0 = Date.now();
    app.send({ type: 'dial', reqId: 'c', to: 'pc-hub', timeoutMs: 1000 });
    const req = await hub.next('request');
    expect(await app.next('dial_failed')).toMatchObject({ reqId: 'c', code: 'timeout' });
    expect(await hub.next('cancelled')).toMatchObject({ reqId: req.reqId, reason: 'timeout' });
    const took = Date.now() - t0;
    // The budget, not the socket's sweep an hour later (the only alarm set).
    expect(took).toBeGreaterThanOrEqual(1000);
    expect(took).toBeLessThan(10_000);
    await m.settle(() => true);
    expect(m.count('presence.alarm_set')).toBe(0);
    app.close();
    hub.close();
  });
});
