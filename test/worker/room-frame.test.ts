/**
 * The room's relay fast path (worker/room-frame.ts): a signal frame relayed as the sender's text
 * with `seq` spliced in must parse, on the peer's side, to exactly the frame the ordinary path
 * would have built from the checked data; any frame carrying more than was checked must take the
 * ordinary path.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MAX_BATCH_ITEMS, parseRoomClientMessage, parseRoomServerMessage, type SignalData, type SignalItem } from '../../protocol/messages.js';
import { parseRoomFrame, spliceSeq } from '../../worker/room-frame.js';

const ordinary = (data: SignalData, seq: number): string => JSON.stringify({ type: 'signal', seq, data });

const signalItem: fc.Arbitrary<SignalItem> = fc.oneof(
  fc.record({ kind: fc.constant('offer' as const), sdp: fc.string({ minLength: 1, maxLength: 200 }) }),
  fc.record({ kind: fc.constant('offer' as const), sdp: fc.string({ minLength: 1, maxLength: 50 }), restart: fc.constant(true as const) }),
  fc.record({ kind: fc.constant('answer' as const), sdp: fc.string({ minLength: 1, maxLength: 200 }) }),
  fc.record(
    {
      kind: fc.constant('candidate' as const),
      candidate: fc.string({ maxLength: 200 }),
      sdpMid: fc.option(fc.string({ maxLength: 10 }), { nil: null }),
      sdpMLineIndex: fc.option(fc.integer({ min: 0, max: 255 }), { nil: null }),
      usernameFragment: fc.option(fc.string({ maxLength: 20 }), { nil: null }),
    },
    { requiredKeys: ['kind', 'candidate'] },
  ),
  fc.record({ kind: fc.constant('identity' as const), cert: fc.string({ minLength: 1, maxLength: 50 }), proof: fc.string({ minLength: 1, maxLength: 50 }) }),
) as fc.Arbitrary<SignalItem>;

const signalData: fc.Arbitrary<SignalData> = fc.oneof(
  signalItem,
  fc.record({ kind: fc.constant('batch' as const), items: fc.array(signalItem, { minLength: 1, maxLength: MAX_BATCH_ITEMS }) }),
  fc.record({ kind: fc.constant('bye' as const), reason: fc.string({ maxLength: 50 }) }, { requiredKeys: ['kind'] }),
) as fc.Arbitrary<SignalData>;

describe('parseRoomFrame', () => {
  it('parses every frame as parseRoomClientMessage does', () => {
    fc.assert(
      fc.property(fc.oneof(signalData.map((data) => JSON.stringify({ type: 'signal', data })), fc.string(), fc.json()), (frame) => {
        const a = parseRoomFrame(frame).parsed;
        const b = parseRoomClientMessage(frame);
        expect(a.ok).toBe(b.ok);
        if (a.ok && b.ok) expect(a.value).toEqual(b.value);
        if (!a.ok && !b.ok) expect(a.error.code).toBe(b.error.code);
      }),
    );
  });

  it('relays a canonical signal as its text; the peer parses what the ordinary path would send', () => {
    fc.assert(
      fc.property(signalData, fc.integer({ min: 1, max: 1_000_000 }), fc.boolean(), (data, seq, spaced) => {
        const frame = spaced ? JSON.stringify({ data, type: 'signal' }, null, 2) : JSON.stringify({ type: 'signal', data });
        const { parsed, raw } = parseRoomFrame(frame);
        expect(parsed.ok).toBe(true);
        expect(raw).toBe(frame);
        const peer = parseRoomServerMessage(spliceSeq(raw!, seq));
        expect(peer).toEqual(parseRoomServerMessage(ordinary(data, seq)));
        expect(JSON.parse(spliceSeq(raw!, seq))).toEqual(JSON.parse(ordinary(data, seq)));
      }),
    );
  });

  it('takes the ordinary path for anything beyond what was checked', () => {
    const frames = [
      // A sender trying to choose the peer's seq, or to smuggle fields to it.
      '{"type":"signal","seq":999,"data":{"kind":"candidate","candidate":"c"}}',
      '{"type":"signal","data":{"kind":"candidate","candidate":"c"},"seq":999}',
      '{"type":"signal","data":{"kind":"candidate","candidate":"c","extra":"x"}}',
      '{"type":"signal","data":{"kind":"offer","sdp":"o","restart":false}}',
      '{"type":"signal","data":{"kind":"answer","sdp":"a","restart":true}}',
      '{"type":"signal","data":{"kind":"bye","__proto__":{"x":1}}}',
      '{"__proto__":{},"type":"signal","data":{"kind":"bye"}}',
      // The same inside a batch: any item carrying more than was checked.
      '{"type":"signal","data":{"kind":"batch","items":[{"kind":"candidate","candidate":"c"},{"kind":"candidate","candidate":"d","seq":1}]}}',
      '{"type":"signal","data":{"kind":"batch","items":[{"kind":"offer","sdp":"o","restart":false}]}}',
      '{"type":"signal","data":{"kind":"batch","items":[{"kind":"identity","cert":"c","proof":"p","__proto__":{"x":1}}]}}',
      '{"type":"signal","data":{"kind":"batch","items":[{"kind":"candidate","candidate":"c"}],"extra":1}}',
    ];
    for (const f of frames) {
      const { parsed, raw } = parseRoomFrame(f);
      expect(parsed.ok, f).toBe(true);
      expect(raw, f).toBeNull();
    }
    // Not a signal, or refused: never relayed as text.
    expect(parseRoomFrame('{"type":"renew"}').raw).toBeNull();
    expect(parseRoomFrame('{"type":"signal","data":{"kind":"nope"}}')).toMatchObject({ parsed: { ok: false }, raw: null });
    expect(parseRoomFrame(new ArrayBuffer(4))).toMatchObject({ parsed: { ok: false }, raw: null });
    // A batch holds 1 to MAX_BATCH_ITEMS signals and never a bye or another batch.
    const batch = (items: unknown): string => JSON.stringify({ type: 'signal', data: { kind: 'batch', items } });
    const cand = { kind: 'candidate', candidate: 'c' };
    for (const f of [
      batch([]),
      batch(Array.from({ length: MAX_BATCH_ITEMS + 1 }, () => cand)),
      batch([cand, { kind: 'bye' }]),
      batch([{ kind: 'batch', items: [cand] }]),
      batch([cand, 'candidate']),
      batch([cand, { kind: 'candidate' }]),
      batch({ 0: cand, length: 1 }),
      batch(null),
    ]) {
      expect(parseRoomFrame(f), f).toMatchObject({ parsed: { ok: false, error: { code: expect.stringMatching(/invalid_field|unknown_type/) } }, raw: null });
      expect(parseRoomClientMessage(f).ok, f).toBe(false);
    }
  });

  it('a duplicated key resolves to the value that was checked, for us and for the peer', () => {
    const f = '{"type":"signal","data":{"kind":"candidate","candidate":"evil","candidate":"good"}}';
    const { parsed, raw } = parseRoomFrame(f);
    expect(parsed).toMatchObject({ ok: true, value: { data: { candidate: 'good' } } });
    expect(parseRoomServerMessage(spliceSeq(raw!, 3))).toMatchObject({ ok: true, value: { seq: 3, data: { candidate: 'good' } } });
  });
});
