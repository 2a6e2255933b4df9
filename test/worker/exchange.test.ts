/**
 * The whole exchange through the real Worker in workerd with real WebSocket clients: request,
 * accept, ordered relay, bye; reject; cancel; offline; timeout; presence and room reconnects;
 * ICE server renewal; room state surviving a restart of workerd (objects re-created from storage).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RelayEntry } from '../../worker/config.js';
import { turnPassword } from '../../protocol/turn-credentials.js';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { connect, online, type Frame, type TestSocket } from './helpers.js';

const RELAYS: RelayEntry[] = [
  { id: 'eu', region: 'eu-central', lat: 50.1, lon: 8.7, host: '127.0.0.1', udpPort: 3478, tcpPort: 3478, tlsPort: 5349 },
  { id: 'us', region: 'us-east', lat: 39.0, lon: -77.5, host: '::1', udpPort: 3479, tcpPort: 3479, tlsPort: 5350, tlsHost: 'relay-us.example' },
  { id: 'ap', region: 'ap-southeast', lat: 1.35, lon: 103.8, host: '127.0.0.2', udpPort: 3480, tcpPort: 3480, tlsPort: 5351 },
];
const TURN_SECRET = 'exchange-test-turn-secret-0123456789';

let sig: SignalingHandle;
let n = 0;

beforeAll(async () => {
  sig = await startSignaling({ relays: RELAYS, turnSecret: TURN_SECRET, offlineWaitMs: 800, requestTimeoutMs: 5000 });
});
afterAll(async () => sig?.close());

/** Fresh endpoint ids per test, so tests share one service without interfering. */
function ids(): { app: string; hub: string; home: string } {
  n += 1;
  return { app: `app-${n}`, hub: `hub-${n}`, home: `home-${n}` };
}

const token = (sub: string, homes: string[]): Promise<string> => sig.issuer.accessToken({ sub, homes });

interface Pair {
  app: TestSocket;
  hub: TestSocket;
  appToken: string;
  hubToken: string;
  ids: { app: string; hub: string; home: string };
}

async function pair(): Promise<Pair> {
  const i = ids();
  const appToken = await token(i.app, [i.home]);
  const hubToken = await token(i.hub, [i.home, 'other']);
  return { app: await online(sig.url, appToken), hub: await online(sig.url, hubToken), appToken, hubToken, ids: i };
}

/** Dial, accept; returns both `session` frames. */
async function accepted(p: Pair, reqId = 'req-1'): Promise<{ a: Frame; b: Frame }> {
  p.app.send({ type: 'dial', reqId, to: p.ids.hub });
  const req = await p.hub.next('request');
  expect(req.from).toBe(p.ids.app);
  p.hub.send({ type: 'answer', reqId: req.reqId, accept: true });
  return { a: await p.app.next('session'), b: await p.hub.next('session') };
}

const close = (...s: TestSocket[]): void => s.forEach((x) => x.close());

describe('request and answer', () => {
  it('accept: both sides get a session with the same id, their roles, a deadline and ICE servers', async () => {
    const p = await pair();
    const { a, b } = await accepted(p);
    expect(a).toMatchObject({ reqId: 'req-1', peer: p.ids.hub, role: 'initiator' });
    expect(b).toMatchObject({ peer: p.ids.app, role: 'responder' });
    expect(a.sessionId).toBe(b.sessionId);
    expect(a.sessionId).toMatch(/^[A-Za-z0-9_-]{16,64}$/);
    expect(a.deadline).toBe(b.deadline);
    expect(a.deadline as number).toBeGreaterThan(Date.now());
    // No location (cf has none): relays in config order, at most two.
    const ice = a.iceServers as Array<{ urls: string[]; username?: string; credential?: string }>;
    expect(ice.map((s) => s.urls)).toEqual([
      ['stun:127.0.0.1:3478'],
      ['turn:127.0.0.1:3478?transport=udp', 'turn:127.0.0.1:3478?transport=tcp', 'turns:127.0.0.1:5349?transport=tcp'],
      ['stun:[::1]:3479'],
      ['turn:[::1]:3479?transport=udp', 'turn:[::1]:3479?transport=tcp', 'turns:relay-us.example:5350?transport=tcp'],
    ]);
    const turn = ice[1]!;
    const [expiry, who] = turn.username!.split(':');
    expect(who).toBe(p.ids.app);
    expect(Number(expiry)).toBeGreaterThan(Date.now() / 1000);
    // The relay can verify it with nothing but the shared secret.
    expect(turn.credential).toBe(await turnPassword(TURN_SECRET, turn.username!));
    const hubTurn = (b.iceServers as Array<{ username?: string }>)[1]!;
    expect(hubTurn.username!.endsWith(`:${p.ids.hub}`)).toBe(true);
    close(p.app, p.hub);
  });

  it('relays are chosen by the location in request.cf, nearest first', async () => {
    const asia = await startSignaling({ relays: RELAYS, turnSecret: TURN_SECRET, issuer: sig.issuer, cf: { latitude: '-33.87', longitude: '151.21' } });
    try {
      const i = ids();
      const at = await token(i.app, [i.home]);
      const app = await online(asia.url, at);
      const hub = await online(asia.url, await token(i.hub, [i.home]));
      app.send({ type: 'dial', reqId: 'geo', to: i.hub });
      const req = await hub.next('request');
      hub.send({ type: 'answer', reqId: req.reqId, accept: true });
      const s = await app.next('session');
      // Sydney: Singapore first, then Washington (15,700 km) before Frankfurt (16,500 km).
      expect((s.iceServers as Array<{ urls: string[] }>).map((x) => x.urls[0])).toEqual([
        'stun:127.0.0.2:3480',
        'turn:127.0.0.2:3480?transport=udp',
        'stun:[::1]:3479',
        'turn:[::1]:3479?transport=udp',
      ]);
      const room = await connect(asia.url, `/v1/rooms/${s.sessionId}`, at);
      expect(((await room.next('joined')).iceServers as Array<{ urls: string[] }>)[0]!.urls[0]).toBe('stun:127.0.0.2:3480');
      close(app, hub, room);
    } finally {
      await asia.close();
    }
  });

  it('reject: the initiator gets rejected with the reason', async () => {
    const p = await pair();
    p.app.send({ type: 'dial', reqId: 'r', to: p.ids.hub });
    const req = await p.hub.next('request');
    p.hub.send({ type: 'answer', reqId: req.reqId, accept: false, reason: 'busy' });
    expect(await p.app.next('rejected')).toEqual({ type: 'rejected', reqId: 'r', reason: 'busy' });
    // Answering again is out of state: the request is gone.
    p.hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    expect(await p.hub.next('error')).toMatchObject({ code: 'out_of_state', reqId: req.reqId });
    close(p.app, p.hub);
  });

  it('cancel: both sides get cancelled, a late accept gets cancelled too', async () => {
    const p = await pair();
    p.app.send({ type: 'dial', reqId: 'c', to: p.ids.hub });
    const req = await p.hub.next('request');
    p.app.send({ type: 'cancel', reqId: 'c' });
    expect(await p.app.next('cancelled')).toEqual({ type: 'cancelled', reqId: 'c' });
    expect(await p.hub.next('cancelled')).toEqual({ type: 'cancelled', reqId: req.reqId });
    p.hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    expect(await p.hub.next('error')).toMatchObject({ code: 'out_of_state' });
    expect(p.app.frames.filter((f) => f.type === 'session')).toEqual([]);
    close(p.app, p.hub);
  });

  it('offline target: dial_failed peer_offline after the bounded wait', async () => {
    const i = ids();
    const app = await online(sig.url, await token(i.app, [i.home]));
    app.send({ type: 'dial', reqId: 'off', to: i.hub });
    expect(await app.next('dial_failed')).toEqual({ type: 'dial_failed', reqId: 'off', code: 'peer_offline' });
    close(app);
  });

  it('a target that comes back within the wait still gets the request', async () => {
    const i = ids();
    const app = await online(sig.url, await token(i.app, [i.home]));
    app.send({ type: 'dial', reqId: 'late', to: i.hub });
    const hub = await online(sig.url, await token(i.hub, [i.home]));
    const req = await hub.next('request');
    expect(req.from).toBe(i.app);
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    expect((await app.next('session')).reqId).toBe('late');
    expect(app.frames.filter((f) => f.type === 'dial_failed')).toEqual([]);
    close(app, hub);
  });

  it('timeout: an unanswered request fails with timeout and the target gets cancelled', async () => {
    const quick = await startSignaling({ offlineWaitMs: 300, requestTimeoutMs: 1200, issuer: sig.issuer });
    try {
      const i = ids();
      const app = await online(quick.url, await token(i.app, [i.home]));
      const hub = await online(quick.url, await token(i.hub, [i.home]));
      app.send({ type: 'dial', reqId: 't', to: i.hub });
      const req = await hub.next('request');
      expect(await app.next('dial_failed')).toEqual({ type: 'dial_failed', reqId: 't', code: 'timeout' });
      // Timed out, not withdrawn: the target's library reports it as Timeout.
      expect(await hub.next('cancelled')).toEqual({ type: 'cancelled', reqId: req.reqId, reason: 'timeout' });
      hub.send({ type: 'answer', reqId: req.reqId, accept: true });
      expect(await hub.next('error')).toMatchObject({ code: 'out_of_state' });
      close(app, hub);
    } finally {
      await quick.close();
    }
  });

  it('a presence reconnect replaces the old socket and gets the pending request again', async () => {
    const p = await pair();
    p.app.send({ type: 'dial', reqId: 'rc', to: p.ids.hub });
    const req = await p.hub.next('request');
    const hub2 = await online(sig.url, p.hubToken);
    expect(await p.hub.next('replaced')).toEqual({ type: 'replaced' });
    expect(await p.hub.closed()).toBe(1000);
    const again = await hub2.next('request');
    // The same request; its budget is what is left of the dialer's when it is sent again.
    const { timeoutMs: first, ...rest } = req;
    expect(again).toMatchObject(rest);
    expect(again.timeoutMs).toBeLessThanOrEqual(first as number);
    hub2.send({ type: 'answer', reqId: again.reqId, accept: true });
    expect((await p.app.next('session')).reqId).toBe('rc');
    expect((await hub2.next('session')).peer).toBe(p.ids.app);
    close(p.app, hub2);
  });

  it('the initiator leaving withdraws its request', async () => {
    const p = await pair();
    p.app.send({ type: 'dial', reqId: 'gone', to: p.ids.hub });
    const req = await p.hub.next('request');
    await p.app.closeAndWait();
    expect(await p.hub.next('cancelled')).toEqual({ type: 'cancelled', reqId: req.reqId });
    close(p.hub);
  });

  it('protocol errors on presence: self-dial, duplicate reqId, unknown answer/cancel', async () => {
    const p = await pair();
    p.app.send({ type: 'dial', reqId: 'self', to: p.ids.app });
    expect(await p.app.next('error')).toMatchObject({ code: 'invalid_field', reqId: 'self' });
    p.app.send({ type: 'dial', reqId: 'dup', to: p.ids.hub });
    p.app.send({ type: 'dial', reqId: 'dup', to: p.ids.hub });
    expect(await p.app.next('error')).toMatchObject({ code: 'out_of_state', reqId: 'dup' });
    p.app.send({ type: 'answer', reqId: 'nope', accept: true });
    expect(await p.app.next('error')).toMatchObject({ code: 'out_of_state', reqId: 'nope' });
    p.app.send({ type: 'cancel', reqId: 'nope' });
    expect(await p.app.next('error')).toMatchObject({ code: 'out_of_state', reqId: 'nope' });
    // Only one request reached the hub.
    await p.hub.next('request');
    p.app.send({ type: 'cancel', reqId: 'dup' });
    await p.hub.next('cancelled');
    expect(p.hub.frames.filter((f) => f.type === 'request')).toEqual([]);
    close(p.app, p.hub);
  });
});

describe('room', () => {
  it('relays offer, answer and candidates in order with seq, then bye closes it for both', async () => {
    const p = await pair();
    const { a, b } = await accepted(p);
    const ra = await connect(sig.url, `/v1/rooms/${a.sessionId}`, p.appToken);
    const ja = await ra.next('joined');
    expect(ja).toMatchObject({ sessionId: a.sessionId, role: 'initiator', peer: p.ids.hub, peerPresent: false, deadline: a.deadline });
    const rb = await connect(sig.url, `/v1/rooms/${b.sessionId}`, p.hubToken);
    expect(await rb.next('joined')).toMatchObject({ role: 'responder', peer: p.ids.app, peerPresent: true });
    expect(await ra.next('peer_joined')).toEqual({ type: 'peer_joined' });

    ra.send({ type: 'signal', data: { kind: 'offer', sdp: 'v=0 offer' } });
    for (let k = 0; k < 10; k++) ra.send({ type: 'signal', data: { kind: 'candidate', candidate: `candidate:${k} 1 udp 1 198.51.100.1 ${5000 + k} typ host`, sdpMid: '0', sdpMLineIndex: 0 } });
    ra.send({ type: 'signal', data: { kind: 'candidate', candidate: '' } });
    const got: Frame[] = [];
    for (let k = 0; k < 12; k++) got.push(await rb.next('signal'));
    expect(got.map((f) => f.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(got[0]!.data).toEqual({ kind: 'offer', sdp: 'v=0 offer' });
    expect((got[5]!.data as { candidate: string }).candidate).toContain(`${5000 + 4}`);
    expect(got[11]!.data).toEqual({ kind: 'candidate', candidate: '' });

    rb.send({ type: 'signal', data: { kind: 'answer', sdp: 'v=0 answer' } });
    rb.send({ type: 'signal', data: { kind: 'identity', cert: 'c.e.rt', proof: 'p.r.oof' } });
    expect(await ra.next('signal')).toEqual({ type: 'signal', seq: 1, data: { kind: 'answer', sdp: 'v=0 answer' } });
    expect(await ra.next('signal')).toEqual({ type: 'signal', seq: 2, data: { kind: 'identity', cert: 'c.e.rt', proof: 'p.r.oof' } });

    ra.send({ type: 'signal', data: { kind: 'bye', reason: 'done' } });
    expect(await rb.next('signal')).toEqual({ type: 'signal', seq: 13, data: { kind: 'bye', reason: 'done' } });
    expect(await rb.next('closed')).toEqual({ type: 'closed', reason: 'bye' });
    expect(await ra.next('closed')).toEqual({ type: 'closed', reason: 'bye' });
    expect(await ra.closed()).toBe(1000);
    expect(await rb.closed()).toBe(1000);
    // Rejoining an ended room only tells why it ended.
    const again = await connect(sig.url, `/v1/rooms/${a.sessionId}`, p.appToken);
    expect(await again.next('closed')).toEqual({ type: 'closed', reason: 'bye' });
    expect(await again.closed()).toBe(1000);
    close(p.app, p.hub);
  });

  it('buffers signals sent before the peer joins and delivers them on join, in order', async () => {
    const p = await pair();
    const { a } = await accepted(p);
    const ra = await connect(sig.url, `/v1/rooms/${a.sessionId}`, p.appToken);
    await ra.next('joined');
    ra.send({ type: 'signal', data: { kind: 'offer', sdp: 'early offer' } });
    ra.send({ type: 'signal', data: { kind: 'candidate', candidate: 'candidate:1 1 udp 1 198.51.100.7 9 typ host' } });
    ra.send({ type: 'ice_servers' });
    await ra.next('ice_servers');
    const rb = await connect(sig.url, `/v1/rooms/${a.sessionId}`, p.hubToken);
    expect((await rb.shift()).type).toBe('joined');
    expect(await rb.shift()).toEqual({ type: 'signal', seq: 1, data: { kind: 'offer', sdp: 'early offer' } });
    expect(await rb.shift()).toMatchObject({ type: 'signal', seq: 2 });
    rb.send({ type: 'signal', data: { kind: 'answer', sdp: 'a' } });
    expect(await ra.next('signal')).toMatchObject({ seq: 1, data: { kind: 'answer' } });
    close(ra, rb, p.app, p.hub);
  });

  it('a side that joins after the peer said bye hears that bye (its reason) and then closed, not the offer before it', async () => {
    const p = await pair();
    const { a } = await accepted(p);
    const ra = await connect(sig.url, `/v1/rooms/${a.sessionId}`, p.appToken);
    await ra.next('joined');
    ra.send({ type: 'signal', data: { kind: 'offer', sdp: 'early offer' } });
    // The dialer's budget ran out before the answering side reached the room.
    ra.send({ type: 'signal', data: { kind: 'bye', reason: 'Timeout' } });
    expect(await ra.next('closed')).toEqual({ type: 'closed', reason: 'bye' });
    const rb = await connect(sig.url, `/v1/rooms/${a.sessionId}`, p.hubToken);
    expect(await rb.shift()).toEqual({ type: 'signal', seq: 2, data: { kind: 'bye', reason: 'Timeout' } });
    expect(await rb.shift()).toEqual({ type: 'closed', reason: 'bye' });
    expect(await rb.closed()).toBe(1000);
    close(p.app, p.hub);
  });

  it('ice_servers renews the credential for the asking side only', async () => {
    const p = await pair();
    const { a } = await accepted(p);
    const rb = await connect(sig.url, `/v1/rooms/${a.sessionId}`, p.hubToken);
    await rb.next('joined');
    rb.send({ type: 'ice_servers' });
    const r = await rb.next('ice_servers');
    const servers = r.iceServers as Array<{ username?: string; credential?: string }>;
    expect(servers).toHaveLength(4);
    expect(servers[1]!.username!.endsWith(`:${p.ids.hub}`)).toBe(true);
    expect(servers[1]!.credential).toBe(await turnPassword(TURN_SECRET, servers[1]!.username!));
    close(rb, p.app, p.hub);
  });

  it('a second room socket of the same side replaces the first; the peer sees left/joined', async () => {
    const p = await pair();
    const { a } = await accepted(p);
    const ra = await connect(sig.url, `/v1/rooms/${a.sessionId}`, p.appToken);
    await ra.next('joined');
    const rb = await connect(sig.url, `/v1/rooms/${a.sessionId}`, p.hubToken);
    await rb.next('joined');
    await ra.next('peer_joined');
    const rb2 = await connect(sig.url, `/v1/rooms/${a.sessionId}`, p.hubToken);
    expect(await rb2.next('joined')).toMatchObject({ peerPresent: true });
    expect(await rb.closed()).toBe(1000);
    ra.send({ type: 'signal', data: { kind: 'offer', sdp: 'x' } });
    expect(await rb2.next('signal')).toMatchObject({ seq: 1 });
    await rb2.closeAndWait();
    expect(await ra.next('peer_left')).toEqual({ type: 'peer_left' });
    close(ra, p.app, p.hub);
  });

  it('closes at the session deadline', async () => {
    const short = await startSignaling({ sessionTtlSeconds: 2, issuer: sig.issuer });
    try {
      const i = ids();
      const at = await token(i.app, [i.home]);
      const ht = await token(i.hub, [i.home]);
      const app = await online(short.url, at);
      const hub = await online(short.url, ht);
      app.send({ type: 'dial', reqId: 'd', to: i.hub });
      const req = await hub.next('request');
      hub.send({ type: 'answer', reqId: req.reqId, accept: true });
      const s = await app.next('session');
      const ra = await connect(short.url, `/v1/rooms/${s.sessionId}`, at);
      await ra.next('joined');
      expect(await ra.next('closed')).toEqual({ type: 'closed', reason: 'deadline' });
      expect(await ra.closed()).toBe(1000);
      close(app, hub);
    } finally {
      await short.close();
    }
  });

  it('is deleted after both sides leave and the grace passes', async () => {
    const brief = await startSignaling({ roomGraceMs: 200, issuer: sig.issuer });
    try {
      const i = ids();
      const at = await token(i.app, [i.home]);
      const ht = await token(i.hub, [i.home]);
      const app = await online(brief.url, at);
      const hub = await online(brief.url, ht);
      app.send({ type: 'dial', reqId: 'g', to: i.hub });
      const req = await hub.next('request');
      hub.send({ type: 'answer', reqId: req.reqId, accept: true });
      const s = await app.next('session');
      const ra = await connect(brief.url, `/v1/rooms/${s.sessionId}`, at);
      await ra.next('joined');
      await ra.closeAndWait();
      await new Promise((r) => setTimeout(r, 1500));
      const late = await connect(brief.url, `/v1/rooms/${s.sessionId}`, at);
      expect(await late.closed()).toBe(1008);
      expect(late.frames).toEqual([]);
      close(app, hub);
    } finally {
      await brief.close();
    }
  });

  it('an empty room keeps its full grace after the last leave, though its first alarm (from creation) fires sooner', { timeout: 60_000 }, async () => {
    // The room's alarm is set at creation for one grace and never moved later (each move is a
    // storage write): the sides leave half a grace after creation, so that alarm fires while
    // the room has been empty for only half a grace, and must re-arm instead of deleting.
    const GRACE_MS = 6000;
    const lines: string[] = [];
    const g = await startSignaling({ roomGraceMs: GRACE_MS, issuer: sig.issuer, vars: { DEBUG_TRACE_EVENTS: '1' }, onOutput: (l) => lines.push(l) });
    const roomAlarms = (): number => lines.filter((l) => l === 'homelink-trace room alarm').length;
    try {
      const i = ids();
      const at = await token(i.app, [i.home]);
      const ht = await token(i.hub, [i.home]);
      const app = await online(g.url, at);
      const hub = await online(g.url, ht);
      app.send({ type: 'dial', reqId: 'g', to: i.hub });
      const req = await hub.next('request');
      hub.send({ type: 'answer', reqId: req.reqId, accept: true });
      const s = await app.next('session');
      const ra = await connect(g.url, `/v1/rooms/${s.sessionId}`, at);
      await ra.next('joined');
      const rb = await connect(g.url, `/v1/rooms/${s.sessionId}`, ht);
      await rb.next('joined');
      await new Promise((r) => setTimeout(r, GRACE_MS / 3));
      await ra.closeAndWait();
      await rb.closeAndWait();
      // The creation alarm fires (bounded wait), with the room empty for less than a grace.
      const end = Date.now() + 2 * GRACE_MS;
      while (roomAlarms() === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      expect(roomAlarms()).toBe(1);
      const back = await connect(g.url, `/v1/rooms/${s.sessionId}`, at);
      expect(await back.next('joined')).toMatchObject({ sessionId: s.sessionId, peerPresent: false });
      close(back, app, hub);
    } finally {
      await g.close();
    }
  });
});

describe('state survives re-creation of the objects (workerd restarted, storage kept)', () => {
  it('room seq, buffered signals and session routing are rebuilt from storage', async () => {
    const p = await pair();
    const { a } = await accepted(p);
    let ra = await connect(sig.url, `/v1/rooms/${a.sessionId}`, p.appToken);
    await ra.next('joined');
    let rb = await connect(sig.url, `/v1/rooms/${a.sessionId}`, p.hubToken);
    await rb.next('joined');
    ra.send({ type: 'signal', data: { kind: 'offer', sdp: 'one' } });
    ra.send({ type: 'signal', data: { kind: 'candidate', candidate: 'c1' } });
    await rb.next('signal');
    await rb.next('signal');
    await rb.closeAndWait();
    // The room has handled the leave (and, behind the output gate, stored the hub's counter)
    // before the runtime goes: a restart in between would lose a leave that never ran.
    await ra.next('peer_left');

    await sig.restart();
    expect(ra.closeCode).not.toBeNull();
    expect(p.app.closeCode).not.toBeNull();

    ra = await connect(sig.url, `/v1/rooms/${a.sessionId}`, p.appToken);
    expect(await ra.next('joined')).toMatchObject({ peerPresent: false, deadline: a.deadline });
    ra.send({ type: 'signal', data: { kind: 'candidate', candidate: 'c2' } });
    ra.send({ type: 'ice_servers' });
    await ra.next('ice_servers');

    await sig.restart();
    rb = await connect(sig.url, `/v1/rooms/${a.sessionId}`, p.hubToken);
    expect((await rb.shift()).type).toBe('joined');
    // Numbering continues across both restarts; the buffered candidate comes first.
    expect(await rb.shift()).toEqual({ type: 'signal', seq: 3, data: { kind: 'candidate', candidate: 'c2' } });
    ra = await connect(sig.url, `/v1/rooms/${a.sessionId}`, p.appToken);
    await ra.next('joined');
    await rb.next('peer_joined');
    ra.send({ type: 'signal', data: { kind: 'candidate', candidate: 'c3' } });
    expect(await rb.next('signal')).toMatchObject({ seq: 4 });
    close(ra, rb);
  });

  it('a request held for an offline target survives a restart', async () => {
    const slow = await startSignaling({ offlineWaitMs: 8000, issuer: sig.issuer });
    try {
      const i = ids();
      const app = await online(slow.url, await token(i.app, [i.home]));
      app.send({ type: 'dial', reqId: 'held', to: i.hub });
      // Let the request reach the target's object before workerd goes away.
      await new Promise((r) => setTimeout(r, 300));
      await slow.restart();
      const hub = await online(slow.url, await token(i.hub, [i.home]));
      const req = await hub.next('request');
      expect(req.from).toBe(i.app);
      hub.close();
    } finally {
      await slow.close();
    }
  });
});
