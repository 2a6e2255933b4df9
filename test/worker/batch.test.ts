/**
 * Signal batches: when both sides declare `?caps=batch`, both `session`s say `batch: true`, and
 * the room relays a `batch` signal as one frame with one seq, to a present peer and, buffered, to
 * one that joins later. A malformed batch is refused with a typed error and changes nothing. One
 * side without the capability: neither session says `batch`. Real workerd, real sockets.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CAP_DELIVERY_ACK, CAP_ROOM_TICKET, CAP_SIGNAL_BATCH, MAX_BATCH_ITEMS, TICKET_PARAM } from '../../protocol/messages.js';
import { Meters, startSignaling, type SignalingHandle } from '../support/signaling.js';
import { connect, sessionPair, type Frame, type SessionPair } from './helpers.js';

let sig: SignalingHandle;
const meters = new Meters();

beforeAll(async () => {
  sig = await startSignaling({ roomGraceMs: 200, vars: { DEBUG_TRACE_EVENTS: '1' }, onOutput: meters.onOutput });
});
afterAll(async () => sig?.close());

const sessionFor = (tag: string, appCaps: string, hubCaps: string): Promise<SessionPair> => sessionPair(sig, tag, appCaps, hubCaps);

const room = (s: Frame): string => `/v1/rooms/${s.sessionId as string}${typeof s.ticket === 'string' ? `?${TICKET_PARAM}=${s.ticket}` : ''}`;
const ALL = [CAP_DELIVERY_ACK, CAP_ROOM_TICKET, CAP_SIGNAL_BATCH].join(',');
const cand = (i: number) => ({ kind: 'candidate', candidate: `candidate:${i} 1 udp 1 127.0.0.1 ${5000 + i} typ host`, sdpMid: '0', sdpMLineIndex: 0 });

describe('signal batches', () => {
  it.each([
    ['with room tickets', 'bt', ALL],
    ['without room tickets (a room made by init)', 'bi', [CAP_DELIVERY_ACK, CAP_SIGNAL_BATCH].join(',')],
  ])('both sides declared batches (%s): both sessions say so, and a batch is one frame and one seq, present or buffered', async (_name, tag, caps) => {
    const p = await sessionFor(tag, caps, caps);
    expect(p.sa.batch).toBe(true);
    expect(p.sb.batch).toBe(true);
    const ra = await connect(sig.url, room(p.sa), p.at);
    await ra.next('joined');
    // The peer is not here yet: the batch is buffered as one signal.
    const first = { kind: 'batch', items: [{ kind: 'offer', sdp: 'v=0 o' }, cand(1)] };
    ra.send({ type: 'signal', data: first });
    const rb = await connect(sig.url, room(p.sb), p.ht);
    await rb.next('joined');
    expect(await rb.next('signal')).toEqual({ type: 'signal', seq: 1, data: first });
    meters.reset();
    const second = { kind: 'batch', items: [cand(2), cand(3), { kind: 'candidate', candidate: '' }, { kind: 'identity', cert: 'a.b.c', proof: 'd.e.f' }] };
    ra.send({ type: 'signal', data: second });
    expect(await rb.next('signal')).toEqual({ type: 'signal', seq: 2, data: second });
    // One incoming message on the service for four signals.
    await meters.settle(() => meters.count('room.message') >= 1);
    expect(meters.count('room.message')).toBe(1);
    // The other way, and a plain signal after a batch keeps the count.
    rb.send({ type: 'signal', data: { kind: 'batch', items: [{ kind: 'answer', sdp: 'v=0 a' }, cand(4)] } });
    rb.send({ type: 'signal', data: cand(5) });
    expect(await ra.next('signal')).toMatchObject({ seq: 1, data: { kind: 'batch', items: [{ kind: 'answer' }, { kind: 'candidate' }] } });
    expect(await ra.next('signal')).toMatchObject({ seq: 2, data: { kind: 'candidate' } });
    ra.send({ type: 'signal', data: { kind: 'bye' } });
    await rb.next('closed');
    for (const s of [ra, rb, p.app, p.hub]) s.close();
  });

  it('refuses a malformed batch with a typed error; nothing reaches the peer and the seqs go on as before', async () => {
    const p = await sessionFor('bad', ALL, ALL);
    const ra = await connect(sig.url, room(p.sa), p.at);
    await ra.next('joined');
    const rb = await connect(sig.url, room(p.sb), p.ht);
    await rb.next('joined');
    const bad: unknown[] = [
      { kind: 'batch', items: [] },
      { kind: 'batch', items: Array.from({ length: MAX_BATCH_ITEMS + 1 }, (_, i) => cand(i)) },
      { kind: 'batch', items: [cand(1), { kind: 'bye' }] },
      { kind: 'batch', items: [{ kind: 'batch', items: [cand(1)] }] },
      { kind: 'batch', items: [cand(1), { kind: 'candidate', candidate: 'x'.repeat(2000) }] },
      { kind: 'batch', items: 'offer' },
    ];
    for (const data of bad) {
      ra.send({ type: 'signal', data });
      expect(await ra.next('error')).toMatchObject({ code: expect.stringMatching(/^(invalid_field|unknown_type)$/) });
    }
    ra.send({ type: 'signal', data: cand(9) });
    // The first frame the peer gets is the good one, with the first seq.
    expect(await rb.shift()).toMatchObject({ type: 'signal', seq: 1, data: { kind: 'candidate' } });
    ra.send({ type: 'signal', data: { kind: 'bye' } });
    await rb.next('closed');
    for (const s of [ra, rb, p.app, p.hub]) s.close();
  });

  it.each([
    ['the responder', 'nbr', ALL, [CAP_DELIVERY_ACK, CAP_ROOM_TICKET].join(',')],
    ['the initiator', 'nbi', [CAP_DELIVERY_ACK, CAP_ROOM_TICKET].join(','), ALL],
  ])('%s without the capability: neither session says batch', async (_who, tag, appCaps, hubCaps) => {
    const p = await sessionFor(tag, appCaps, hubCaps);
    expect(p.sa.batch).toBeUndefined();
    expect(p.sb.batch).toBeUndefined();
    // Tickets are negotiated on their own.
    expect(typeof p.sa.ticket).toBe('string');
    p.app.close();
    p.hub.close();
  });
});
