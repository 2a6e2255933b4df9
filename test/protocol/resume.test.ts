import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeResumeFrame, isResumeFrame, MAX_RESUME_FRAME, MAX_STREAM_ID, parseResumeFrame } from '../../protocol/resume.js';

describe('channel resume frames (protocol/resume.ts)', () => {
  it('encodes the wire layout: kind letter, stream id, colon, count', () => {
    expect(encodeResumeFrame({ kind: 'ack', stream: 2, count: 640 })).toBe('a2:640');
    expect(encodeResumeFrame({ kind: 'close', stream: 3, count: 0 })).toBe('c3:0');
    expect(encodeResumeFrame({ kind: 'resume', stream: MAX_STREAM_ID, count: Number.MAX_SAFE_INTEGER })).toBe('r65534:9007199254740991');
    expect(encodeResumeFrame({ kind: 'resume', stream: MAX_STREAM_ID, count: Number.MAX_SAFE_INTEGER }).length).toBeLessThanOrEqual(MAX_RESUME_FRAME);
  });

  it('round-trips every valid frame', () => {
    fc.assert(
      fc.property(fc.constantFrom<'ack' | 'resume' | 'close'>('ack', 'resume', 'close'), fc.integer({ min: 0, max: MAX_STREAM_ID }), fc.maxSafeNat(), (kind, stream, count) => {
        const f = encodeResumeFrame({ kind, stream, count });
        expect(isResumeFrame(f)).toBe(true);
        expect(parseResumeFrame(f)).toEqual({ ok: true, value: { kind, stream, count } });
      }),
      { numRuns: 1000 },
    );
  });

  it.each([
    ['the ping', 'p', 'malformed'],
    ['a bye', '{"kind":"bye"}', 'malformed'],
    ['stream id too big', 'a65535:1', 'invalid_field'],
    ['count beyond 2^53', 'r1:9999999999999999', 'invalid_field'],
    ['negative count', 'a1:-1', 'malformed'],
    ['no count', 'a1:', 'malformed'],
    ['hex', 'a0x1:1', 'malformed'],
    ['unknown letter', 'x1:1', 'malformed'],
    ['trailing bytes', 'a1:1 ', 'malformed'],
    ['oversized', `a1:${'1'.repeat(100)}`, 'oversized'],
  ])('rejects %s with a typed error', (_n, frame, code) => {
    const r = parseResumeFrame(frame);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.code).toBe(code);
  });

  it('refuses to encode out-of-range values', () => {
    expect(() => encodeResumeFrame({ kind: 'ack', stream: MAX_STREAM_ID + 1, count: 0 })).toThrow(RangeError);
    expect(() => encodeResumeFrame({ kind: 'ack', stream: 1, count: -1 })).toThrow(RangeError);
  });

  it('never throws on arbitrary strings', () => {
    fc.assert(fc.property(fc.string({ maxLength: 64 }), (s) => void parseResumeFrame(s)), { numRuns: 2000 });
  });
});
