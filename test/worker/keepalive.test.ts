/**
 * Keepalive and stale presence (issue 9 item 1), against the real Worker in workerd:
 * - the fixed ping frame is answered by the runtime (`setWebSocketAutoResponse`) on both objects,
 *   even while they are hibernated, without waking them (the objects' trace lines prove it);
 * - a presence socket that goes silent (no frames, no pings; TCP still open) counts as gone once
 *   `PRESENCE_STALE_MS` passes: a dial to that endpoint closes it with 1001 and ends in
 *   `peer_offline`, not `timeout`; without a request, the sweep (`PRESENCE_SWEEP_MS`) closes it;
 * - at rest, a presence object wakes once per sweep, not once per staleness bound (each wake is
 *   an alarm set, billed as a row written);
 * - pings alone keep a presence live, and an endpoint that re-registers after a silent loss is
 *   reachable again.
 * Staleness and the sweep are shortened with their vars so the suite is quick; production keeps
 * protocol/messages.ts PRESENCE_STALE_MS and worker/config.ts DEFAULT_PRESENCE_SWEEP_MS.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PING_FRAME, PONG_FRAME } from '../../protocol/messages.js';
import { Meters, startSignaling, type SignalingHandle } from '../support/signaling.js';
import { connect, online, WAIT_MS, type TestSocket } from './helpers.js';

/** workerd hibernates an object after about 10 s without events; wait past that. */
const IDLE_MS = 12_000;
/** Short staleness for the suite (the var's lower bound is 1 s). */
const STALE_MS = 3000;

/** Raw text frames a socket received, to compare byte for byte with PONG_FRAME. */
function rawFrames(s: TestSocket): string[] {
  const out: string[] = [];
  s.ws.on('message', (d, binary) => {
    if (!binary) out.push(d.toString());
  });
  return out;
}

async function until(probe: () => boolean, what: string, ms = WAIT_MS): Promise<void> {
  const end = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('auto-response', () => {
  let sig: SignalingHandle;
  const lines: string[] = [];
  beforeAll(async () => {
    sig = await startSignaling({ vars: { DEBUG_TRACE_EVENTS: '1' }, onOutput: (l) => lines.push(l) });
  });
  afterAll(async () => sig?.close());

  const traces = (kind: string): string[] => lines.filter((l) => l.includes(`homelink-trace ${kind} `));

  it('answers a ping on hibernated presence and room objects without waking them', async () => {
    const at = await sig.issuer.accessToken({ sub: 'k-app', homes: ['home-k'] });
    const ht = await sig.issuer.accessToken({ sub: 'k-hub', homes: ['home-k'] });
    const app = await online(sig.url, at);
    const hub = await online(sig.url, ht);
    app.send({ type: 'dial', reqId: 'k1', to: 'k-hub' });
    const req = await hub.next('request');
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    const s = await app.next('session');
    await hub.next('session');
    const room = await connect(sig.url, `/v1/rooms/${s.sessionId}`, at);
    await room.next('joined');
    const appRaw = rawFrames(app);
    const roomRaw = rawFrames(room);
    // Awake now: a ping is answered the same way.
    app.ws.send(PING_FRAME);
    await until(() => appRaw.length === 1, 'pong on an awake object');
    expect(appRaw).toEqual([PONG_FRAME]);

    await new Promise((r) => setTimeout(r, IDLE_MS));
    const presenceBefore = traces('presence').length;
    const roomBefore = traces('room').length;
    for (let i = 0; i < 3; i++) {
      app.ws.send(PING_FRAME);
      room.ws.send(PING_FRAME);
    }
    await until(() => appRaw.length === 4 && roomRaw.length === 3, 'three pongs each');
    expect(appRaw.slice(1)).toEqual([PONG_FRAME, PONG_FRAME, PONG_FRAME]);
    expect(roomRaw).toEqual([PONG_FRAME, PONG_FRAME, PONG_FRAME]);
    // A real frame next: the objects wake (constructor) and handle it. Their trace lines come
    // after the pings', so waiting for them also flushes anything the pings might have logged.
    app.send({ type: 'cancel', reqId: 'none' });
    room.send({ type: 'ice_servers' });
    await app.next('error');
    await room.next('ice_servers');
    await until(() => traces('presence').length >= presenceBefore + 2 && traces('room').length >= roomBefore + 2, 'trace lines');
    // Both objects had hibernated (they were built again for the frame), and nothing between
    // (the six pings) reached them.
    expect(traces('presence').slice(presenceBefore, presenceBefore + 2)).toEqual([
      'homelink-trace presence wake',
      'homelink-trace presence message',
    ]);
    expect(traces('room').slice(roomBefore, roomBefore + 2)).toEqual(['homelink-trace room wake', 'homelink-trace room message']);
    for (const x of [app, hub, room]) x.close();
  });
});

describe('stale presence', () => {
  let sig: SignalingHandle;
  beforeAll(async () => {
    sig = await startSignaling({ offlineWaitMs: 4000, requestTimeoutMs: 30_000, vars: { PRESENCE_STALE_MS: String(STALE_MS) } });
  });
  afterAll(async () => sig?.close());

  let n = 0;
  const ids = (): { app: string; hub: string; home: string } => {
    n++;
    return { app: `s${n}-app`, hub: `s${n}-hub`, home: `home-s${n}` };
  };
  const token = (sub: string, home: string): Promise<string> => sig.issuer.accessToken({ sub, homes: [home] });

  it('a silent socket counts as gone after the bound: a dial to it closes it with 1001 and fails peer_offline, not timeout', async () => {
    const i = ids();
    const hubToken = await token(i.hub, i.home);
    const hub = await online(sig.url, hubToken);
    const app = await online(sig.url, await token(i.app, i.home));
    const appTimer = setInterval(() => app.ws.send(PING_FRAME), 1000);
    try {
      // The hub sends nothing from here: its mapping is gone, TCP on this side stays open. Nothing
      // wakes its presence object for that alone (the sweep is an hour away here).
      await new Promise((r) => setTimeout(r, STALE_MS + 500));
      expect(hub.closeCode).toBeNull();
      const dialAt = Date.now();
      app.send({ type: 'dial', reqId: 'to-stale', to: i.hub });
      expect(await hub.closed()).toBe(1001);
      expect(hub.closeReason).toBe('stale');
      expect(hub.frames.map((f) => f.type)).not.toContain('request');
      const f = await app.next('dial_failed');
      expect(f).toMatchObject({ reqId: 'to-stale', code: 'peer_offline' });
      // The offline verdict (OFFLINE_WAIT_MS), not the request timeout (30 s).
      expect(Date.now() - dialAt).toBeLessThan(30_000);
      expect(app.closeCode).toBeNull();
    } finally {
      clearInterval(appTimer);
      app.close();
    }
  });

  it('pings alone keep a presence live well past the bound, and it still gets requests', async () => {
    const i = ids();
    const hub = await online(sig.url, await token(i.hub, i.home));
    const raw = rawFrames(hub);
    const timer = setInterval(() => hub.ws.send(PING_FRAME), 1000);
    try {
      await new Promise((r) => setTimeout(r, 3 * STALE_MS));
      expect(hub.closeCode).toBeNull();
      expect(raw.length).toBeGreaterThan(3);
      expect(new Set(raw)).toEqual(new Set([PONG_FRAME]));
      const app = await online(sig.url, await token(i.app, i.home));
      app.send({ type: 'dial', reqId: 'live', to: i.hub });
      const req = await hub.next('request');
      hub.send({ type: 'answer', reqId: req.reqId, accept: true });
      expect(await app.next('session')).toMatchObject({ reqId: 'live', peer: i.hub });
      app.close();
    } finally {
      clearInterval(timer);
      hub.close();
    }
  });

  it('an endpoint that re-registers after a silent loss is reachable again', async () => {
    const i = ids();
    const hubToken = await token(i.hub, i.home);
    const lost = await online(sig.url, hubToken);
    await new Promise((r) => setTimeout(r, STALE_MS + 500));
    const app = await online(sig.url, await token(i.app, i.home));
    app.send({ type: 'dial', reqId: 'again', to: i.hub });
    expect(await lost.closed()).toBe(1001);
    // The hub comes back (new mapping) within OFFLINE_WAIT_MS and gets the held request.
    const hub = await online(sig.url, hubToken);
    const req = await hub.next('request');
    expect(req.from).toBe(i.app);
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    const s = await app.next('session');
    expect(s).toMatchObject({ reqId: 'again', peer: i.hub, role: 'initiator' });
    expect((await hub.next('session')).sessionId).toBe(s.sessionId);
    expect(app.frames.filter((f) => f.type === 'dial_failed')).toEqual([]);
    app.close();
    hub.close();
  });
});

describe('the presence sweep', () => {
  /** Staleness 1 s, sweep 3 s: an object at rest wakes every 3 s, where it woke every second before the sweep. */
  const SWEEP_MS = 3000;
  const SHORT_STALE_MS = 1000;
  let sig: SignalingHandle;
  const m = new Meters();
  beforeAll(async () => {
    sig = await startSignaling({
      vars: { PRESENCE_STALE_MS: String(SHORT_STALE_MS), PRESENCE_SWEEP_MS: String(SWEEP_MS), DEBUG_TRACE_EVENTS: '1' },
      onOutput: m.onOutput,
    });
  });
  afterAll(async () => sig?.close());

  it('an online endpoint at rest wakes once per sweep; a silent one is closed by the sweep without any request', async () => {
    const live = await online(sig.url, await sig.issuer.accessToken({ sub: 'sw-live', homes: ['home-sw'] }));
    const timer = setInterval(() => live.ws.send(PING_FRAME), 300);
    try {
      await m.settle(() => m.count('presence.alarm_set') >= 1);
      const before = { set: m.count('presence.alarm_set'), fired: m.traced('presence.alarm') };
      // 7 staleness bounds at rest: a wake per bound would be 7 alarms set.
      await new Promise((r) => setTimeout(r, 7 * SHORT_STALE_MS));
      const set = m.count('presence.alarm_set') - before.set;
      const fired = m.traced('presence.alarm') - before.fired;
      expect(set).toBeLessThanOrEqual(Math.ceil((7 * SHORT_STALE_MS) / SWEEP_MS) + 1);
      expect(fired).toBeLessThanOrEqual(Math.ceil((7 * SHORT_STALE_MS) / SWEEP_MS) + 1);
      expect(live.closeCode).toBeNull();

      // A socket that goes silent: the sweep finds it stale and closes it, with no request for it.
      const silent = await online(sig.url, await sig.issuer.accessToken({ sub: 'sw-silent', homes: ['home-sw'] }));
      const t0 = Date.now();
      expect(await silent.closed(SWEEP_MS + WAIT_MS)).toBe(1001);
      expect(silent.closeReason).toBe('stale');
      expect(Date.now() - t0).toBeGreaterThanOrEqual(SHORT_STALE_MS);
    } finally {
      clearInterval(timer);
      live.close();
    }
  });
});
