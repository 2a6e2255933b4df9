/**
 * Signaling keepalive (issue 9, item 1). The state machine on virtual time (client/keepalive.ts),
 * then endpoints against the real worker in workerd through a proxy that can silently black-hole
 * one connection (frames stop in both directions, nothing is closed: what a NAT that lost its
 * mapping does). The endpoint must notice, reconnect, and be reachable again.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { PING_FRAME, PONG_FRAME } from '../../protocol/messages.js';
import { Keepalive } from '../../client/keepalive.js';
import type { Endpoint } from '../../client/index.js';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { endpointFor, nextLink, randomId } from './helpers.js';

describe('Keepalive state machine (virtual time)', () => {
  it('pings after the interval idle, declares the path dead when nothing answers within the timeout', () => {
    const ka = new Keepalive(0, { intervalMs: 25_000, timeoutMs: 10_000 });
    expect(ka.nextAt()).toBe(25_000);
    expect(ka.poll(24_999)).toBeNull();
    expect(ka.poll(25_000)).toBe('ping');
    expect(ka.awaitingPong).toBe(true);
    expect(ka.nextAt()).toBe(35_000);
    expect(ka.poll(34_999)).toBeNull();
    expect(ka.poll(35_000)).toBe('dead');
  });

  it('any frame is proof of life: a busy socket never pings; an answer clears the deadline', () => {
    const ka = new Keepalive(0, { intervalMs: 1_000, timeoutMs: 500 });
    for (let t = 0; t < 10_000; t += 900) {
      expect(ka.poll(t)).toBeNull();
      ka.received(t);
    }
    ka.received(10_000);
    expect(ka.poll(11_000)).toBe('ping');
    ka.received(11_200); // the pong
    expect(ka.awaitingPong).toBe(false);
    expect(ka.poll(11_700)).toBeNull(); // past the old deadline: no verdict
    expect(ka.nextAt()).toBe(12_200);
    expect(ka.poll(12_200)).toBe('ping');
  });

  it('defaults come from the protocol; nonsense options are clamped, never a busy loop', () => {
    const ka = new Keepalive(0);
    expect([ka.intervalMs, ka.timeoutMs]).toEqual([25_000, 10_000]);
    const tiny = new Keepalive(0, { intervalMs: 0, timeoutMs: -5 });
    expect(tiny.intervalMs).toBeGreaterThan(0);
    expect(tiny.timeoutMs).toBeGreaterThan(0);
  });
});

/**
 * A WebSocket proxy to the worker with a switch: `blackhole()` silences every connection open at
 * that moment (frames are dropped both ways, sockets stay open); later connections pass.
 * `pongs` counts the PONG_FRAMEs it injected (when `answerPings`), `pings` the pings it saw.
 */
async function holeProxy(upstream: string, opts: { answerPings?: boolean; garbage?: boolean } = {}) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (p) => (p.has('homelink.v1') ? 'homelink.v1' : false) });
  await new Promise<void>((r) => wss.once('listening', r));
  const live = new Set<{ dead: boolean }>();
  const sockets = new Set<WebSocket>();
  const stats = { pings: 0, pongs: 0, connections: 0 };
  wss.on('connection', (down, req) => {
    stats.connections++;
    const state = { dead: false };
    live.add(state);
    const protocols = String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim());
    const up = new WebSocket(upstream.replace('http', 'ws') + (req.url ?? '/'), protocols);
    sockets.add(up).add(down);
    const early: string[] = [];
    up.on('open', () => early.splice(0).forEach((f) => up.send(f)));
    down.on('message', (d) => {
      if (state.dead) return;
      const text = d.toString();
      if (text === PING_FRAME) {
        stats.pings++;
        if (opts.answerPings) {
          stats.pongs++;
          return down.send(PONG_FRAME);
        }
      }
      if (up.readyState === WebSocket.OPEN) up.send(text);
      else early.push(text);
    });
    up.on('message', (d) => {
      if (state.dead || down.readyState !== WebSocket.OPEN) return;
      if (opts.garbage) down.send('{"type":');
      down.send(d.toString());
    });
    up.on('close', () => !state.dead && down.close());
    down.on('close', () => up.close());
    up.on('error', () => down.close());
  });
  return {
    url: `http://127.0.0.1:${(wss.address() as { port: number }).port}`,
    stats,
    blackhole() {
      for (const s of live) s.dead = true;
      live.clear();
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.terminate();
        wss.close(() => r());
      }),
  };
}

let sig: SignalingHandle;
const endpoints: Endpoint[] = [];
const track = <T extends Endpoint>(e: T): T => (endpoints.push(e), e);
const closers: Array<() => Promise<void>> = [];
/** Short keepalive for these tests: the defaults (25 s + 10 s) are measured in the NAT lab. */
const FAST = { intervalMs: 300, timeoutMs: 600 };

beforeAll(async () => {
  sig = await startSignaling({ offlineWaitMs: 500 });
});
afterAll(async () => {
  await sig?.close();
});
afterEach(async () => {
  await Promise.all(endpoints.splice(0).map((e) => e.close()));
  await Promise.all(closers.splice(0).map((c) => c()));
});

const until = async (cond: () => boolean, ms: number): Promise<boolean> => {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
  return cond();
};

describe('keepalive against the real worker', () => {
  it('an idle endpoint pings and stays online (the worker answers; no false alarm)', async () => {
    const proxy = await holeProxy(sig.url);
    closers.push(proxy.close);
    let offline = 0;
    const ep = track(await endpointFor(sig, randomId('hub'), [randomId('home')], { signalingUrl: proxy.url, keepalive: FAST }));
    ep.on('offline', () => offline++);
    expect(await until(() => proxy.stats.pings >= 5, 20_000)).toBe(true);
    expect(offline).toBe(0);
    expect(ep.deadSignalingPaths).toBe(0);
    expect(ep.isOnline).toBe(true);
  });

  it('silent loss of the presence connection: the hub notices, reconnects, and a dial to it succeeds', async () => {
    const home = randomId('home');
    const proxy = await holeProxy(sig.url);
    closers.push(proxy.close);
    const hub = track(await endpointFor(sig, randomId('hub'), [home], { signalingUrl: proxy.url, keepalive: FAST }));
    const app = track(await endpointFor(sig, randomId('app'), [home]));
    hub.on('request', (r) => void r.accept());
    const events: string[] = [];
    hub.on('offline', () => events.push('offline'));
    hub.on('online', () => events.push('online'));
    proxy.blackhole();
    expect(await until(() => events.join() === 'offline,online', 30_000)).toBe(true);
    expect(hub.deadSignalingPaths).toBe(1);
    expect(proxy.stats.connections).toBe(2);
    const accepted = nextLink(hub);
    const link = await app.dial(hub.id, { timeoutMs: 20_000 });
    expect(link.peer).toBe(hub.id);
    await accepted;
  });

  it('silent loss of a room connection: the link replaces it and signals through the new one', async () => {
    const home = randomId('home');
    const proxy = await holeProxy(sig.url);
    closers.push(proxy.close);
    // Only the app's sockets go through the proxy; the hub is direct.
    const app = track(await endpointFor(sig, randomId('app'), [home], { signalingUrl: proxy.url, keepalive: FAST }));
    const hub = track(await endpointFor(sig, randomId('hub'), [home]));
    const accepted = nextLink(hub);
    hub.on('request', (r) => void r.accept());
    const link = await app.dial(hub.id, { timeoutMs: 20_000 });
    const peerLink = await accepted;
    const before = proxy.stats.connections;
    proxy.blackhole(); // both the app's presence and its room connection go silent
    expect(await until(() => proxy.stats.connections >= before + 2, 30_000)).toBe(true);
    expect(app.deadSignalingPaths).toBe(1);
    // The new room connection carries signaling: ask for ICE servers through it (what a credential
    // renewal sends) and get the answer.
    const renewals = (await link.stats()).credentialRenewals;
    (link as unknown as { room: { post(m: unknown): boolean } }).room.post({ type: 'ice_servers' });
    const end = Date.now() + 20_000;
    while ((await link.stats()).credentialRenewals === renewals && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    expect((await link.stats()).credentialRenewals).toBe(renewals + 1);
    expect(peerLink.isOpen).toBe(true);
  });

  it('PONG_FRAME is consumed silently, never counted as a bad frame (a garbage frame is)', async () => {
    const home = randomId('home');
    const withPongs = await holeProxy(sig.url, { answerPings: true });
    const withGarbage = await holeProxy(sig.url, { answerPings: true, garbage: true });
    closers.push(withPongs.close, withGarbage.close);
    const app = track(await endpointFor(sig, randomId('app'), [home], { signalingUrl: withPongs.url, keepalive: FAST }));
    const app2 = track(await endpointFor(sig, randomId('app'), [home], { signalingUrl: withGarbage.url, keepalive: FAST }));
    const hub = track(await endpointFor(sig, randomId('hub'), [home]));
    hub.on('request', (r) => void r.accept());
    const link = await app.dial(hub.id, { timeoutMs: 20_000 });
    const link2 = await app2.dial(hub.id, { timeoutMs: 20_000 });
    const pongsBefore = withPongs.stats.pongs;
    expect(await until(() => withPongs.stats.pongs >= pongsBefore + 3, 20_000)).toBe(true);
    expect((await link.stats()).badFrames).toBe(0);
    expect((await link2.stats()).badFrames).toBeGreaterThan(0);
    expect(app.deadSignalingPaths).toBe(0);
  });
});
