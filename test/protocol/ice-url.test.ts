/**
 * protocol/ice-url.ts, the one ICE server URL parser (RFC 7064 §3.1, RFC 7065 §3.1), and
 * protocol/stun/binding.ts, the one Binding request encoder and response reader.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseIceUrl } from '../../protocol/ice-url.js';
import { Attr, StunClass, StunMethod, StunWriter, decodeStun, encodeErrorCode, encodeXorAddress } from '../../protocol/stun/index.js';
import { encodeBindingRequest, readBindingResponse } from '../../protocol/stun/binding.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('parseIceUrl', () => {
  it.each([
    ['stun:127.0.0.1:3478', { kind: 'stun', transport: 'udp', host: '127.0.0.1', port: 3478 }],
    ['stun:stun.Example.NET', { kind: 'stun', transport: 'udp', host: 'stun.example.net', port: 3478 }],
    ['stuns:stun.example.net', { kind: 'stun', transport: 'tls', host: 'stun.example.net', port: 5349 }],
    ['turn:relay.example.net:3478?transport=tcp', { kind: 'turn', transport: 'tcp', host: 'relay.example.net', port: 3478 }],
    ['turn:relay.example.net?transport=udp', { kind: 'turn', transport: 'udp', host: 'relay.example.net', port: 3478 }],
    ['TURNS:relay.example.net:443?transport=tcp', { kind: 'turn', transport: 'tls', host: 'relay.example.net', port: 443 }],
    ['turns:[2001:DB8::1]', { kind: 'turn', transport: 'tls', host: '2001:db8::1', port: 5349 }],
    ['turn:[::1]:3478', { kind: 'turn', transport: 'udp', host: '::1', port: 3478 }],
  ])('parses %s', (url, expected) => {
    expect(parseIceUrl(url)).toEqual(expected);
  });

  it.each([
    ['another scheme', 'http://relay.example.net'],
    ['a path', 'turn:relay.example.net/x'],
    ['user info', 'turn:user@relay.example.net'],
    ['port 0', 'turn:relay.example.net:0'],
    ['port past 65535', 'turn:x:99999'],
    ['DTLS (turns over udp)', 'turns:relay.example.net?transport=udp'],
    ['an unknown transport', 'turn:relay.example.net?transport=sctp'],
    ['a bad IPv6 literal', 'turn:[1::2::3]'],
    ['an IPv6 literal without brackets', 'turn:2001:db8::1'],
    ['a bad IPv4 literal', 'turn:300.1.1.1'],
    ['a label starting with a hyphen', 'turn:-relay.example.net'],
    ['a label over 63 characters', `turn:${'a'.repeat(64)}.example.net`],
    ['an empty host', 'turn:'],
    ['a huge URL', `turn:${'a.'.repeat(400)}net`],
  ])('refuses %s', (_what, url) => {
    expect(parseIceUrl(url)).toBeNull();
  });

  it('never throws on hostile strings', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 600 }), (s) => {
        const r = parseIceUrl(`turn:${s}`);
        if (r) expect(r.port).toBeGreaterThan(0);
        return true;
      }),
      { numRuns: 500 },
    );
  });
});

describe('Binding request and response', () => {
  const tid = Uint8Array.from({ length: 12 }, (_, i) => i + 1);

  it('encodes the RFC 8489 §5 header (and FINGERPRINT when asked)', () => {
    // type 0x0001 (Binding request), length 0, magic cookie 2112a442, transaction id.
    expect(hex(encodeBindingRequest(tid))).toBe('000100002112a442' + '0102030405060708090a0b0c');
    const withFp = encodeBindingRequest(tid, { fingerprint: true });
    // length 8: one FINGERPRINT attribute (type 0x8028, length 4, CRC-32 xor 0x5354554e).
    expect(hex(withFp.subarray(0, 4))).toBe('00010008');
    expect(hex(withFp.subarray(20, 24))).toBe('80280004');
    const d = decodeStun(withFp);
    expect(d.ok && d.value.method === StunMethod.Binding && d.value.cls === StunClass.Request).toBe(true);
  });

  it('reads a success response with its mapped address, and an error response', () => {
    const ok = new StunWriter(StunMethod.Binding, StunClass.SuccessResponse, tid)
      .add(Attr.XorMappedAddress, encodeXorAddress({ family: 4, ip: '203.0.113.5', port: 40000 }, tid))
      .addFingerprint()
      .finish();
    expect(readBindingResponse(ok, tid)).toEqual({ ok: true, mapped: { family: 4, ip: '203.0.113.5', port: 40000 } });
    const err = new StunWriter(StunMethod.Binding, StunClass.ErrorResponse, tid).add(Attr.ErrorCode, encodeErrorCode({ code: 420, reason: 'Unknown Attribute' })).finish();
    expect(readBindingResponse(err, tid)).toEqual({ ok: false, code: 420 });
  });

  it('ignores what is not the answer to this transaction', () => {
    const other = Uint8Array.from({ length: 12 }, () => 9);
    const resp = new StunWriter(StunMethod.Binding, StunClass.SuccessResponse, other).finish();
    expect(readBindingResponse(resp, tid)).toBeNull();
    expect(readBindingResponse(encodeBindingRequest(tid), tid)).toBeNull(); // a request, not a response
    expect(readBindingResponse(new StunWriter(StunMethod.Allocate, StunClass.SuccessResponse, tid).finish(), tid)).toBeNull();
    expect(readBindingResponse(new Uint8Array(19), tid)).toBeNull();
    expect(readBindingResponse(new StunWriter(StunMethod.Binding, StunClass.SuccessResponse, tid).finish(), tid.subarray(0, 11))).toBeNull();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (b) => {
        readBindingResponse(b, tid);
        return true;
      }),
      { numRuns: 500 },
    );
  });
});
