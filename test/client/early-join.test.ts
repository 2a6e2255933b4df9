/**
 * Early join from the library (protocol/messages.ts CAP_EARLY_JOIN, issue 10 item 3): real
 * endpoints against the real worker in workerd and our relay. Both sides join by default: the
 * dialer's `session` comes before the answer and the accepting side gets none; the dialer holds
 * its signals until the peer is in the room, so the service stores nothing. A rejected or
 * abandoned early dial leaves no link, room or TURN allocation behind, and an endpoint with early
 * join turned off (as an older release) links with one that has it. Runs on either backend.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LinkError, type Endpoint } from '../../client/index.js';
import { nodeWebSocket } from '../../client/node-websocket.js';
import type { WebSocketFactory } from '../../client/signaling.js';
import { Meters, startSignaling, type SignalingHandle } from '../support/signaling.js';
import { dialUseClose, endpointFor, randomId, within } from './helpers.js';
import { TURN_SECRET, testRelay, type TestRelay } from './relay-helpers.js';

let sig: SignalingHandle;
let relay: TestRelay;
const meters = new Meters();
const endpoints: Endpoint[] = [];
const GRACE_MS = 300;

beforeAll(async () => {
  relay = await testRelay(48200, 48399, () => undefined, { metrics: true });
  sig = await startSignaling({ relays: [relay.entry], turnSecret: TURN_SECRET, roomGraceMs: GRACE_MS, vars: { DEBUG_TRACE_EVENTS: '1' }, onOutput: meters.onOutput });
});
afterAll(async () => {
  await sig?.close();
  await relay?.close();
});
afterEach(async () => {
  await Promise.all(endpoints.splice(0).map((e) => e.close()));
});

type Frame = { type: string } & Record<string, unknown>;

/** Records the presence frames an endpoint receives (its WebSocket factory, wrapped). */
function presenceFrames(into: Frame[]): WebSocketFactory {
  return (url, protocols) => {
    const ws = nodeWebSocket(url, protocols);
    if (!url.includes('/v1/presence')) return ws;
    let handler: ((ev: { data: unknown }) => void) | null = null;
    Object.defineProperty(ws, 'onmessage', {
      get: () => (ev: { data: unknown }) => {
        into.push(JSON.parse(String(ev.data)) as Frame);
        handler?.(ev);
      },
      set: (f: typeof handler) => (handler = f),
    });
    return ws;
  };
}

async function pair(opts: { appEarly?: boolean; hubEarly?: boolean } = {}) {
  const home = randomId('home');
  const appFrames: Frame[] = [];
  const hubFrames: Frame[] = [];
  const hub = await endpointFor(sig, randomId('hub'), [home], { webSocket: presenceFrames(hubFrames), ...(opts.hubEarly === false ? { earlyJoin: false } : {}) });
  const app = await endpointFor(sig, randomId('app'), [home], { webSocket: presenceFrames(appFrames), ...(opts.appEarly === false ? { earlyJoin: false } : {}) });
  endpoints.push(hub, app);
  return { app, hub, appFrames, hubFrames };
}

/** Resolves once the relay's live allocations are back to `n` (bounded). */
async function allocationsBackTo(n: number): Promise<void> {
  const until = Date.now() + 10_000;
  while ((await relay.allocations()) !== n) {
    if (Date.now() > until) throw new Error(`allocations stayed at ${await relay.allocations()}, not ${n}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('early join from the library', () => {
  it('both sides (the default): the dialer hears its session before the answer, the accepting side hears none, and the service stores nothing', async () => {
    const { app, hub, appFrames, hubFrames } = await pair();
    // The answer takes a moment (a person deciding): the dialer is in the room well before.
    hub.on('request', (req) => setTimeout(() => void req.accept(), 500));
    await new Promise((r) => setTimeout(r, 300));
    meters.reset();
    await dialUseClose(app, hub);
    const session = appFrames.find((f) => f.type === 'session');
    expect(session).toMatchObject({ early: true, role: 'initiator' });
    const request = hubFrames.find((f) => f.type === 'request');
    expect(request?.early).toMatchObject({ ticket: expect.any(String) });
    expect(hubFrames.some((f) => f.type === 'session')).toBe(false);
    expect(appFrames.filter((f) => f.type === 'session')).toHaveLength(1);
    await new Promise((r) => setTimeout(r, GRACE_MS + 1500));
    // The dialer waited in the room for its peer with its offer held, not stored.
    expect(meters.count('room.write')).toBe(0);
    expect(meters.count('presence.write')).toBe(0);
  });

  it('a rejected early dial: Rejected, and the link it had started is gone with its allocation', async () => {
    const before = await relay.allocations();
    const created = await relay.allocationsCreated();
    const { app, hub } = await pair();
    // The answer comes late: by then the dialer is in the room and has gathered its relay candidate.
    hub.on('request', (req) => setTimeout(() => req.reject('busy'), 1000));
    const err = await app.dial(hub.id, { timeoutMs: 10_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LinkError);
    expect((err as LinkError).code).toBe('Rejected');
    expect(app.links).toHaveLength(0);
    // The dialer's early link did allocate (its relay candidate), and released it.
    expect(await relay.allocationsCreated()).toBeGreaterThan(created);
    await allocationsBackTo(before);
  });

  it('a dial abandoned while the peer decides: the late accept fails Closed, no link is left on either side', async () => {
    const before = await relay.allocations();
    const { app, hub } = await pair();
    let accepted: Promise<unknown> | null = null;
    const asked = new Promise<void>((resolve) =>
      hub.on('request', (req) => {
        resolve();
        setTimeout(() => (accepted = req.accept().catch((e: unknown) => e)), 1000);
      }),
    );
    const abort = new AbortController();
    const dial = app.dial(hub.id, { signal: abort.signal }).catch((e: unknown) => e);
    await within('the request', asked, 10_000);
    abort.abort();
    expect(((await dial) as LinkError).code).toBe('Aborted');
    await new Promise((r) => setTimeout(r, 1500));
    const late = await within('the late accept', accepted!, 10_000);
    expect(late).toBeInstanceOf(LinkError);
    // Withdrawn (the dialer's abort), not timed out.
    expect((late as LinkError).code).toBe('Closed');
    expect(app.links).toHaveLength(0);
    expect(hub.links).toHaveLength(0);
    await allocationsBackTo(before);
  });

  it.each([
    ['early join', {}],
    ['early join off', { appEarly: false, hubEarly: false }],
  ])("%s: an accept that comes after the dialer's deadline fails Timeout, as the dial does", async (_how, opts) => {
    const { app, hub } = await pair(opts);
    let accepted: Promise<unknown> | null = null;
    const asked = new Promise<void>((resolve) =>
      hub.on('request', (req) => {
        resolve();
        setTimeout(() => (accepted = req.accept().catch((e: unknown) => e)), 2500);
      }),
    );
    const dial = app.dial(hub.id, { timeoutMs: 1500 }).catch((e: unknown) => e);
    await within('the request', asked, 10_000);
    expect(((await dial) as LinkError).code).toBe('Timeout');
    await new Promise((r) => setTimeout(r, 1500));
    const late = (await within('the late accept', accepted!, 10_000)) as LinkError;
    expect(late).toBeInstanceOf(LinkError);
    expect(late.code).toBe('Timeout');
    expect(hub.links).toHaveLength(0);
  });

  it('refuses an earlyJoin that is not true or false', async () => {
    for (const bad of ['false', 0, null]) {
      await expect(endpointFor(sig, randomId('bad'), ['h'], { earlyJoin: bad as unknown as boolean })).rejects.toThrow(TypeError);
    }
  });

  it.each([
    ['the dialer', { appEarly: false }],
    ['the accepting side', { hubEarly: false }],
  ])('%s with early join off (as an older release): the old exchange, and the link opens', async (_who, opts) => {
    const { app, hub, appFrames, hubFrames } = await pair(opts);
    hub.on('request', (req) => void req.accept());
    await dialUseClose(app, hub);
    expect(appFrames.find((f) => f.type === 'session')?.early).toBeUndefined();
    expect(hubFrames.find((f) => f.type === 'request')?.early).toBeUndefined();
    expect(hubFrames.some((f) => f.type === 'session')).toBe(true);
  });
});
