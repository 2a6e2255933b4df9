/**
 * Signal batches from the library (client/link.ts `SignalOutbox`): the outbox's rules on their
 * own (fake timers), then real endpoints against the real worker in workerd and our relay: a link
 * set up, used and closed costs the service fewer incoming messages when both sides batch than
 * when neither does (the worker's own meters), and a side that turned batching off (as an older
 * release, which does not declare the capability) still links with one that batches. Runs on
 * either backend (`npm run test:client:native` for node-datachannel); nothing here is simulated.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Endpoint } from '../../client/index.js';
import { nodeWebSocket } from '../../client/node-websocket.js';
import type { WebSocketFactory } from '../../client/signaling.js';
import { SignalOutbox } from '../../client/link.js';
import { MAX_BATCH_ITEMS, type SignalData, type SignalItem } from '../../protocol/messages.js';
import { Meters, startSignaling, type SignalingHandle } from '../support/signaling.js';
import { dialUseClose, endpointFor, randomId } from './helpers.js';
import { TURN_SECRET, testRelay, type TestRelay } from './relay-helpers.js';

const offer: SignalData = { kind: 'offer', sdp: 'v=0' };
const cand = (i: number): SignalData => ({ kind: 'candidate', candidate: `candidate:${i} 1 udp 1 127.0.0.1 ${5000 + i} typ host`, sdpMid: '0', sdpMLineIndex: 0 });
const eoc: SignalData = { kind: 'candidate', candidate: '' };
const identity: SignalData = { kind: 'identity', cert: 'a.b.c', proof: 'd.e.f' };

describe('SignalOutbox', () => {
  afterEach(() => vi.useRealTimers());

  const outbox = (windowMs = 10): { box: SignalOutbox; sent: SignalData[] } => {
    const sent: SignalData[] = [];
    return { box: new SignalOutbox(windowMs, (d) => sent.push(d)), sent };
  };

  it('sends a description with its first candidate at once, and holds later candidates for the window', () => {
    vi.useFakeTimers();
    const { box, sent } = outbox();
    box.send(offer);
    expect(sent).toEqual([]);
    box.send(cand(1));
    expect(sent).toEqual([{ kind: 'batch', items: [offer, cand(1)] }]);
    box.send(cand(2));
    vi.advanceTimersByTime(4);
    box.send(cand(3));
    box.send(eoc);
    vi.advanceTimersByTime(5);
    expect(sent).toHaveLength(1);
    // Ten milliseconds after the first of the group, never later.
    vi.advanceTimersByTime(1);
    expect(sent).toEqual([{ kind: 'batch', items: [offer, cand(1)] }, { kind: 'batch', items: [cand(2), cand(3), eoc] }]);
  });

  it('a description alone waits the window, then leaves as a plain signal', () => {
    vi.useFakeTimers();
    const { box, sent } = outbox();
    box.send(offer);
    vi.advanceTimersByTime(9);
    expect(sent).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(sent).toEqual([offer]);
  });

  it('an identity leaves at once with what is held; a bye leaves at once, after what is held and alone', () => {
    vi.useFakeTimers();
    const { box, sent } = outbox();
    box.send(cand(1));
    box.send(identity);
    expect(sent).toEqual([{ kind: 'batch', items: [cand(1), identity] }]);
    box.send(cand(2));
    box.send(cand(3));
    box.send({ kind: 'bye', reason: 'done' });
    expect(sent.slice(1)).toEqual([{ kind: 'batch', items: [cand(2), cand(3)] }, { kind: 'bye', reason: 'done' }]);
    vi.advanceTimersByTime(100);
    expect(sent).toHaveLength(3);
  });

  it('a full group leaves at once; flush sends what is held; window 0 sends each signal alone', () => {
    vi.useFakeTimers();
    const { box, sent } = outbox();
    for (let i = 0; i < MAX_BATCH_ITEMS + 1; i++) box.send(cand(i));
    expect(sent).toHaveLength(1);
    expect(sent[0]?.kind === 'batch' && sent[0].items.length).toBe(MAX_BATCH_ITEMS);
    box.flush();
    expect(sent[1]).toEqual(cand(MAX_BATCH_ITEMS));
    box.flush();
    expect(sent).toHaveLength(2);
    const off = outbox(0);
    off.box.send(offer);
    off.box.send(cand(1));
    expect(off.sent).toEqual([offer, cand(1)]);
  });

  it('while the peer is away nothing leaves, not even after the window; its arrival sends all of it in full groups', () => {
    vi.useFakeTimers();
    const { box, sent } = outbox();
    box.peerAway();
    box.send(offer);
    box.send(cand(0));
    box.send(identity);
    box.send({ kind: 'batch', items: [cand(1) as SignalItem, cand(2) as SignalItem] });
    for (let i = 3; i < MAX_BATCH_ITEMS + 2; i++) box.send(cand(i));
    box.flush();
    vi.advanceTimersByTime(1000);
    expect(sent).toEqual([]);
    box.peerHere();
    const items = [offer, cand(0), identity, ...Array.from({ length: MAX_BATCH_ITEMS + 1 }, (_, i) => cand(i + 1))];
    expect(sent).toEqual([{ kind: 'batch', items: items.slice(0, MAX_BATCH_ITEMS) }, { kind: 'batch', items: items.slice(MAX_BATCH_ITEMS) }]);
    // Present again: the usual rules.
    box.send(cand(99));
    expect(sent).toHaveLength(2);
    vi.advanceTimersByTime(10);
    expect(sent[2]).toEqual(cand(99));
    box.peerHere();
    expect(sent).toHaveLength(3);
  });

  it('with batches off, what was held while the peer was away leaves signal by signal', () => {
    const { box, sent } = outbox(0);
    box.peerAway();
    box.send(offer);
    box.send(cand(1));
    expect(sent).toEqual([]);
    box.peerHere();
    expect(sent).toEqual([offer, cand(1)]);
  });

  it('a bye while the peer is away drops what is held and leaves alone', () => {
    const { box, sent } = outbox();
    box.peerAway();
    box.send(offer);
    box.send(cand(1));
    box.send({ kind: 'bye', reason: 'rejected' });
    expect(sent).toEqual([{ kind: 'bye', reason: 'rejected' }]);
    box.peerHere();
    expect(sent).toHaveLength(1);
  });
});

let sig: SignalingHandle;
let relay: TestRelay;
const meters = new Meters();
const endpoints: Endpoint[] = [];
const GRACE_MS = 300;

beforeAll(async () => {
  relay = await testRelay(48000, 48199, () => undefined);
  sig = await startSignaling({ relays: [relay.entry], turnSecret: TURN_SECRET, roomGraceMs: GRACE_MS, vars: { DEBUG_TRACE_EVENTS: '1' }, onOutput: meters.onOutput });
});
afterAll(async () => {
  await sig?.close();
  await relay?.close();
});
afterEach(async () => {
  await Promise.all(endpoints.splice(0).map((e) => e.close()));
});

/** The room frames an endpoint sends, as they leave it (its WebSocket factory, wrapped). */
function recording(frames: string[]): WebSocketFactory {
  return (url, protocols) => {
    const ws = nodeWebSocket(url, protocols);
    if (!url.includes('/v1/rooms/')) return ws;
    const send = ws.send.bind(ws);
    ws.send = (data: string) => {
      frames.push(data);
      send(data);
    };
    return ws;
  };
}

/**
 * One link set up (through the relay's URLs), used and closed: the incoming room messages the
 * service counted, and whether either side sent a batch.
 */
async function roomMessagesPerSetup(appBatchMs: number | undefined, hubBatchMs: number | undefined): Promise<{ messages: number; batches: number }> {
  const home = randomId('home');
  const frames: string[] = [];
  const opt = (ms: number | undefined) => ({ webSocket: recording(frames), ...(ms === undefined ? {} : { signalBatchMs: ms }) });
  const hub = await endpointFor(sig, randomId('hub'), [home], opt(hubBatchMs));
  const app = await endpointFor(sig, randomId('app'), [home], opt(appBatchMs));
  endpoints.push(hub, app);
  hub.on('request', (req) => void req.accept());
  await new Promise((r) => setTimeout(r, 300));
  meters.reset();
  await dialUseClose(app, hub);
  await new Promise((r) => setTimeout(r, GRACE_MS + 1500));
  const batches = frames.filter((f) => (JSON.parse(f) as { data?: { kind?: string } }).data?.kind === 'batch').length;
  return { messages: meters.count('room.message'), batches };
}

describe('signal batches from the library', () => {
  it('a setup costs the service fewer incoming messages when both sides batch (the default)', async () => {
    const single = await roomMessagesPerSetup(0, 0);
    const batched = await roomMessagesPerSetup(undefined, undefined);
    console.log(`room messages per setup: ${single.messages} one signal per frame, ${batched.messages} batched (${batched.batches} batches)`);
    // Per side a description, host/srflx/relay candidates and their end, an identity and a bye:
    // 11 to 14 frames when each goes alone; batched, the bursts go together (6 to 8 here).
    expect(single.batches).toBe(0);
    expect(single.messages).toBeGreaterThanOrEqual(10);
    expect(batched.batches).toBeGreaterThanOrEqual(2);
    expect(batched.messages).toBeLessThan(single.messages);
  });

  it.each([
    ['the dialer', 0, undefined],
    ['the accepting side', undefined, 0],
  ])('%s with batching off (no capability declared): the link still opens, and nothing is batched', async (_who, appMs, hubMs) => {
    // The side that batches by default sends each signal alone too: the session did not say `batch`.
    const mixed = await roomMessagesPerSetup(appMs, hubMs);
    expect(mixed.batches).toBe(0);
    expect(mixed.messages).toBeGreaterThanOrEqual(10);
  });

  it('refuses a signalBatchMs that is not 0 to 1000 ms', async () => {
    for (const bad of [-1, 1001, Number.NaN, Number.POSITIVE_INFINITY, '10' as unknown as number]) {
      await expect(endpointFor(sig, randomId('bad'), ['h'], { signalBatchMs: bad })).rejects.toThrow(RangeError);
    }
  });
});
