/**
 * Hostile input on live sockets: malformed JSON, binary frames, oversized frames, unknown types,
 * bad fields and floods beyond the rate limit. Each gets an `error` frame with a code; the
 * socket stays open; the state is unchanged (proved by what happens next).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_FRAME_BYTES, RATE_LIMIT } from '../../protocol/messages.js';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { connect, online, type TestSocket } from './helpers.js';

let sig: SignalingHandle;

beforeAll(async () => {
  sig = await startSignaling({ offlineWaitMs: 500 });
});
afterAll(async () => sig?.close());

const token = (sub: string, homes: string[]): Promise<string> => sig.issuer.accessToken({ sub, homes });
const close = (...s: TestSocket[]): void => s.forEach((x) => x.close());

const HOSTILE: Array<[string, string | Buffer, string]> = [
  ['malformed JSON', '{"type":"dial",', 'malformed'],
  ['a JSON array', '[1,2,3]', 'malformed'],
  ['a JSON string', '"dial"', 'malformed'],
  ['binary frame', Buffer.from([0x7b, 0x7d]), 'malformed'],
  ['oversized frame', JSON.stringify({ type: 'signal', pad: 'x'.repeat(MAX_FRAME_BYTES) }), 'oversized'],
  ['oversized in UTF-8 only', JSON.stringify({ type: 'dial', pad: 'é'.repeat(MAX_FRAME_BYTES / 2) }), 'oversized'],
  ['unknown type', '{"type":"teleport"}', 'unknown_type'],
  ['no type', '{"reqId":"x"}', 'unknown_type'],
  ['prototype pollution attempt', '{"type":"__proto__","__proto__":{"admin":true}}', 'unknown_type'],
];

describe('presence socket', () => {
  it('answers every hostile frame with an error and keeps working', async () => {
    const app = await online(sig.url, await token('b-app', ['home-1']));
    const hub = await online(sig.url, await token('b-hub', ['home-1']));
    for (const [name, frame, code] of HOSTILE) {
      app.ws.send(frame);
      const e = await app.next('error');
      expect(e.code, name).toBe(code);
      expect(typeof e.message).toBe('string');
    }
    for (const bad of [
      { type: 'dial', reqId: 'x' },
      { type: 'dial', reqId: 'bad id!', to: 'b-hub' },
      { type: 'dial', reqId: 'x', to: 'a/b' },
      { type: 'dial', reqId: 'x'.repeat(65), to: 'b-hub' },
      { type: 'answer', reqId: 'x', accept: 'yes' },
      { type: 'answer', reqId: 'x', accept: false, reason: 'r'.repeat(500) },
      { type: 'cancel' },
    ]) {
      app.send(bad);
      expect((await app.next('error')).code, JSON.stringify(bad).slice(0, 60)).toBe('invalid_field');
    }
    expect(app.closeCode).toBeNull();
    expect(hub.frames).toEqual([]);
    // Nothing above created a request: the first real one is the only one the hub sees.
    app.send({ type: 'dial', reqId: 'real', to: 'b-hub' });
    const req = await hub.next('request');
    expect(req.from).toBe('b-app');
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    expect((await app.next('session')).reqId).toBe('real');
    close(app, hub);
  });

  it('a flood beyond the rate limit is refused with rate_limited, the socket survives', async () => {
    const app = await online(sig.url, await token('c-app', ['home-1']));
    const n = RATE_LIMIT.burst + 100;
    for (let i = 0; i < n; i++) app.send('{"type":"noop"}');
    const codes: string[] = [];
    for (let i = 0; i < n; i++) codes.push((await app.next('error')).code as string);
    expect(codes.filter((c) => c === 'rate_limited').length).toBeGreaterThan(0);
    expect(codes.filter((c) => c === 'unknown_type').length).toBeGreaterThanOrEqual(RATE_LIMIT.burst - 1);
    expect(app.closeCode).toBeNull();
    close(app);
  });
});

describe('room socket', () => {
  async function room(prefix: string): Promise<{ ra: TestSocket; rb: TestSocket; rest: TestSocket[] }> {
    const at = await token(`${prefix}-app`, ['home-1']);
    const ht = await token(`${prefix}-hub`, ['home-1']);
    const app = await online(sig.url, at);
    const hub = await online(sig.url, ht);
    app.send({ type: 'dial', reqId: 'r', to: `${prefix}-hub` });
    const req = await hub.next('request');
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    const s = await app.next('session');
    const ra = await connect(sig.url, `/v1/rooms/${s.sessionId}`, at);
    await ra.next('joined');
    const rb = await connect(sig.url, `/v1/rooms/${s.sessionId}`, ht);
    await rb.next('joined');
    await ra.next('peer_joined');
    return { ra, rb, rest: [app, hub] };
  }

  it('hostile frames and bad signals get errors; no seq is consumed, nothing reaches the peer', async () => {
    const { ra, rb, rest } = await room('d');
    for (const [name, frame, code] of HOSTILE) {
      ra.ws.send(frame);
      expect((await ra.next('error')).code, name).toBe(code);
    }
    for (const bad of [
      { type: 'signal' },
      { type: 'signal', data: 'offer' },
      { type: 'signal', data: { kind: 'offer' } },
      { type: 'signal', data: { kind: 'offer', sdp: '' } },
      { type: 'signal', data: { kind: 'candidate', candidate: 'c'.repeat(2000) } },
      { type: 'signal', data: { kind: 'candidate', candidate: 'c', sdpMLineIndex: -1 } },
      { type: 'signal', data: { kind: 'identity', cert: 'x' } },
    ]) {
      ra.send(bad);
      expect((await ra.next('error')).code, JSON.stringify(bad).slice(0, 60)).toBe('invalid_field');
    }
    ra.send({ type: 'signal', data: { kind: 'telepathy' } });
    expect((await ra.next('error')).code).toBe('unknown_type');
    ra.send({ type: 'signal', data: { kind: 'offer', sdp: 'v=0' } });
    expect(await rb.next('signal')).toEqual({ type: 'signal', seq: 1, data: { kind: 'offer', sdp: 'v=0' } });
    expect(rb.frames).toEqual([]);
    expect(ra.closeCode).toBeNull();
    close(ra, rb, ...rest);
  });

  it('a flood of signals: the first burst is relayed in order without gaps, the rest refused', async () => {
    const { ra, rb, rest } = await room('e');
    const n = RATE_LIMIT.burst + 100;
    for (let i = 0; i < n; i++) ra.send({ type: 'signal', data: { kind: 'candidate', candidate: `candidate:${i}` } });
    // Every signal is either relayed to the peer or refused to the sender: wait until all are accounted for.
    const count = (s: TestSocket, type: string): number => s.frames.filter((f) => f.type === type).length;
    const end = Date.now() + 10_000;
    while (count(ra, 'error') + count(rb, 'signal') < n && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    const errors = ra.frames.filter((f) => f.type === 'error');
    expect(errors.length).toBeGreaterThan(0);
    expect(errors.every((e) => e.code === 'rate_limited')).toBe(true);
    const seqs = rb.frames.filter((f) => f.type === 'signal').map((f) => f.seq);
    expect(seqs.length + errors.length).toBe(n);
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    expect(ra.closeCode).toBeNull();
    close(ra, rb, ...rest);
  });
});
