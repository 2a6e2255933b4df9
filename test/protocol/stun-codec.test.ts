import { createHash, createHmac } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  Attr,
  StunClass,
  StunMethod,
  StunWriter,
  StreamFramer,
  decodeChannelData,
  decodeChannelNumber,
  decodeErrorCode,
  decodeLifetime,
  decodeNonce,
  decodeRealm,
  decodeRequestedAddressFamily,
  decodeRequestedTransport,
  decodeSoftware,
  decodeStun,
  decodeUnknownAttributes,
  decodeUsername,
  decodeXorAddress,
  decodeDontFragment,
  decodeMessageIntegritySha256,
  encodeChannelData,
  encodeChannelNumber,
  encodeErrorCode,
  encodeLifetime,
  encodeRequestedAddressFamily,
  encodeRequestedTransport,
  encodeText,
  encodeUnknownAttributes,
  encodeXorAddress,
  findAttr,
  formatIp,
  parseIp,
  crc32,
  verifyMessageIntegrity,
  addLongTermAuth,
  longTermKey,
  readResponse,
  verifyMessageIntegritySha256,
  type StunMessage,
} from '../../protocol/stun/index.js';

const hmacSha1 = (k: Uint8Array, d: Uint8Array) => new Uint8Array(createHmac('sha1', k).update(d).digest());
const hmacSha256 = (k: Uint8Array, d: Uint8Array) => new Uint8Array(createHmac('sha256', k).update(d).digest());
const hex = (s: string) => Uint8Array.from(s.replace(/\s+/g, '').match(/../g)!.map((b) => parseInt(b, 16)));
const utf8 = new TextEncoder();

// RFC 5769 §2.1 Sample Request (short-term credential, password "VOkJxbRl1RmTxUk/WvJxBt").
const SAMPLE_REQUEST = hex(`
  0001 0058 2112a442 b7e7a701 bc34d686 fa87dfae
  8022 0010 5354554e 20746573 7420636c 69656e74   SOFTWARE "STUN test client"
  0024 0004 6e0001ff                               PRIORITY
  8029 0008 932ff9b1 51263b36                      ICE-CONTROLLED
  0006 0009 6576746a 3a683676 59202020             USERNAME "evtj:h6vY" + 3 pad (0x20)
  0008 0014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2   MESSAGE-INTEGRITY
  8028 0004 e57a3bcf                               FINGERPRINT
`.replace(/[A-Z"][^\n]*/g, ''));
// RFC 5769 §2.2 Sample IPv4 Response: 192.0.2.1:32853.
const SAMPLE_IPV4_RESPONSE = hex(`
  0101 003c 2112a442 b7e7a701 bc34d686 fa87dfae
  8022 000b 74657374 20766563 746f7220
  0020 0008 0001a147 e112a643
  0008 0014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
  8028 0004 c07d4c96
`);
// RFC 5769 §2.3 Sample IPv6 Response: [2001:db8:1234:5678:11:2233:4455:6677]:32853.
const SAMPLE_IPV6_RESPONSE = hex(`
  0101 0048 2112a442 b7e7a701 bc34d686 fa87dfae
  8022 000b 74657374 20766563 746f7220
  0020 0014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
  0008 0014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
  8028 0004 c8fb0b4c
`);
// RFC 5769 §2.4 Sample Request with Long-Term Authentication.
const SAMPLE_LONG_TERM = hex(`
  0001 0060 2112a442 78ad3433 c6ad72c0 29da412e
  0006 0012 e3839ee3 8388e383 aae38383 e382afe3 82b90000
  0015 001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341
  0014 000b 6578616d 706c652e 6f726700
  0008 0014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666
`);

const SHORT_TERM_KEY = utf8.encode('VOkJxbRl1RmTxUk/WvJxBt');
const LONG_TERM_KEY = new Uint8Array(
  createHash('md5').update(utf8.encode('\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9:example.org:TheMatrIX')).digest(),
);

/** Re-encodes a decoded message attribute by attribute, recomputing integrity and fingerprint. */
function reencode(msg: StunMessage, key: Uint8Array, padByte: number): Uint8Array {
  const w = new StunWriter(msg.method, msg.cls, msg.transactionId, { padByte });
  for (const a of msg.attributes) {
    if (a.type === Attr.MessageIntegrity) w.addMessageIntegrity(key, hmacSha1);
    else if (a.type === Attr.Fingerprint) w.addFingerprint();
    else w.add(a.type, a.value);
  }
  return w.finish();
}

function mustDecode(bytes: Uint8Array): StunMessage {
  const r = decodeStun(bytes);
  if (!r.ok) throw new Error(`decode failed: ${r.error.kind} ${r.error.detail}`);
  return r.value;
}

describe('RFC 5769 sample messages', () => {
  it('2.1 request: fields, integrity, fingerprint, byte-for-byte re-encode', () => {
    const m = mustDecode(SAMPLE_REQUEST);
    expect(m.method).toBe(StunMethod.Binding);
    expect(m.cls).toBe(StunClass.Request);
    const sw = decodeSoftware(findAttr(m, Attr.Software)!.value);
    expect(sw.ok && sw.value).toBe('STUN test client');
    const user = decodeUsername(findAttr(m, Attr.Username)!.value);
    expect(user.ok && user.value).toBe('evtj:h6vY');
    expect(verifyMessageIntegrity(m, SHORT_TERM_KEY, hmacSha1)).toBe(true);
    expect(verifyMessageIntegrity(m, utf8.encode('wrong'), hmacSha1)).toBe(false);
    expect(reencode(m, SHORT_TERM_KEY, 0x20)).toEqual(SAMPLE_REQUEST);
  });

  it('2.2 IPv4 response: XOR-MAPPED-ADDRESS 192.0.2.1:32853 and re-encode', () => {
    const m = mustDecode(SAMPLE_IPV4_RESPONSE);
    expect(m.cls).toBe(StunClass.SuccessResponse);
    const a = decodeXorAddress(findAttr(m, Attr.XorMappedAddress)!.value, m.transactionId);
    expect(a.ok && a.value).toEqual({ family: 4, ip: '192.0.2.1', port: 32853 });
    const sw = decodeSoftware(findAttr(m, Attr.Software)!.value);
    expect(sw.ok && sw.value).toBe('test vector');
    expect(verifyMessageIntegrity(m, SHORT_TERM_KEY, hmacSha1)).toBe(true);
    expect(reencode(m, SHORT_TERM_KEY, 0x20)).toEqual(SAMPLE_IPV4_RESPONSE);
    // Encoding the address ourselves gives the sample's bytes.
    expect(encodeXorAddress({ family: 4, ip: '192.0.2.1', port: 32853 }, m.transactionId)).toEqual(
      findAttr(m, Attr.XorMappedAddress)!.value,
    );
  });

  it('2.3 IPv6 response: XOR-MAPPED-ADDRESS and re-encode', () => {
    const m = mustDecode(SAMPLE_IPV6_RESPONSE);
    const a = decodeXorAddress(findAttr(m, Attr.XorMappedAddress)!.value, m.transactionId);
    expect(a.ok && a.value).toEqual({ family: 6, ip: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 });
    expect(verifyMessageIntegrity(m, SHORT_TERM_KEY, hmacSha1)).toBe(true);
    expect(reencode(m, SHORT_TERM_KEY, 0x20)).toEqual(SAMPLE_IPV6_RESPONSE);
  });

  it('2.4 long-term request: USERNAME, NONCE, REALM, MD5 key, re-encode', () => {
    const m = mustDecode(SAMPLE_LONG_TERM);
    const u = decodeUsername(findAttr(m, Attr.Username)!.value);
    expect(u.ok && u.value).toBe('\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9');
    const n = decodeNonce(findAttr(m, Attr.Nonce)!.value);
    expect(n.ok && n.value).toBe('f//499k954d6OL34oL9FSTvy64sA');
    const r = decodeRealm(findAttr(m, Attr.Realm)!.value);
    expect(r.ok && r.value).toBe('example.org');
    expect(verifyMessageIntegrity(m, LONG_TERM_KEY, hmacSha1)).toBe(true);
    expect(reencode(m, LONG_TERM_KEY, 0)).toEqual(SAMPLE_LONG_TERM);
  });

  it('a flipped bit anywhere up to MESSAGE-INTEGRITY breaks the integrity check or the decode', () => {
    // Bytes after MESSAGE-INTEGRITY are outside its cover by design (RFC 8489 §14.5).
    for (let i = 0; i < (SAMPLE_REQUEST.length - 8) * 8; i++) {
      const b = SAMPLE_REQUEST.slice();
      b[i >> 3]! ^= 1 << (i & 7);
      const r = decodeStun(b);
      if (r.ok) expect(verifyMessageIntegrity(r.value, SHORT_TERM_KEY, hmacSha1)).toBe(false);
    }
  });

  it('CRC-32 check value', () => {
    expect(crc32(utf8.encode('123456789'))).toBe(0xcbf43926);
  });
});

describe('decoder refusals', () => {
  it('refuses truncated, misaligned, wrong-cookie and overrun input', () => {
    expect(decodeStun(SAMPLE_REQUEST.subarray(0, 19)).ok).toBe(false);
    expect(decodeStun(SAMPLE_REQUEST.subarray(0, 100)).ok).toBe(false);
    const badCookie = SAMPLE_REQUEST.slice();
    badCookie[4] = 0;
    expect(decodeStun(badCookie)).toMatchObject({ ok: false, error: { kind: 'not_stun' } });
    const badLen = SAMPLE_REQUEST.slice();
    badLen[3] = 0x57;
    expect(decodeStun(badLen)).toMatchObject({ ok: false, error: { kind: 'bad_length' } });
    // attribute length running past the end
    const overrun = SAMPLE_REQUEST.slice();
    overrun[22] = 0x7f;
    expect(decodeStun(overrun)).toMatchObject({ ok: false, error: { kind: 'truncated' } });
    // an attribute after FINGERPRINT
    const after = new Uint8Array(SAMPLE_REQUEST.length + 4);
    after.set(SAMPLE_REQUEST);
    after[3] = 0x5c;
    after.set([0x80, 0x22, 0, 0], SAMPLE_REQUEST.length);
    expect(decodeStun(after).ok).toBe(false);
  });

  it('refuses bad attribute values', () => {
    expect(decodeXorAddress(new Uint8Array([0, 3, 0, 0, 1, 2, 3, 4]), new Uint8Array(12)).ok).toBe(false);
    expect(decodeXorAddress(new Uint8Array([0, 1, 0, 0, 1, 2, 3]), new Uint8Array(12)).ok).toBe(false);
    expect(decodeLifetime(new Uint8Array(3)).ok).toBe(false);
    expect(decodeErrorCode(new Uint8Array([0, 0, 2, 0])).ok).toBe(false);
    expect(decodeErrorCode(new Uint8Array([0, 0, 4, 100])).ok).toBe(false);
    expect(decodeUsername(new Uint8Array(514)).ok).toBe(false);
    expect(decodeRealm(new Uint8Array([0xff, 0xfe])).ok).toBe(false);
    expect(decodeUnknownAttributes(new Uint8Array(3)).ok).toBe(false);
    expect(decodeRequestedAddressFamily(new Uint8Array([3, 0, 0, 0])).ok).toBe(false);
    expect(decodeDontFragment(new Uint8Array(1)).ok).toBe(false);
    expect(decodeMessageIntegritySha256(new Uint8Array(12)).ok).toBe(false);
    expect(decodeChannelData(new Uint8Array([0x80, 0, 0, 0]), false).ok).toBe(false); // 0x8000 out of range
    expect(decodeChannelData(new Uint8Array([0x3f, 0xff, 0, 0]), false).ok).toBe(false); // 0x3FFF out of range
    expect(decodeChannelData(new Uint8Array([0x40, 0, 0, 8, 1, 2]), false).ok).toBe(false);
    expect(decodeChannelData(new Uint8Array([0x40, 0, 0, 1, 1]), true).ok).toBe(false); // unpadded on a stream
  });
});

const tidArb = fc.uint8Array({ minLength: 12, maxLength: 12 });
const ipv4Arb = fc.ipV4();
const ipv6Arb = fc.ipV6();

describe('round trips (fast-check)', () => {
  it('IP text -> bytes -> text is stable and matches re-parsing', () => {
    fc.assert(
      fc.property(fc.oneof(ipv4Arb, ipv6Arb), (ip) => {
        const b = parseIp(ip);
        expect(b).not.toBeNull();
        const text = formatIp(b!);
        expect(parseIp(text)).toEqual(b);
        expect(formatIp(parseIp(text)!)).toBe(text);
      }),
    );
  });

  it('XOR addresses (v4 and v6)', () => {
    fc.assert(
      fc.property(fc.oneof(ipv4Arb, ipv6Arb), fc.integer({ min: 0, max: 65535 }), tidArb, (ipText, port, tid) => {
        const family = ipText.includes(':') ? 6 : 4;
        const ip = formatIp(parseIp(ipText)!);
        const r = decodeXorAddress(encodeXorAddress({ family, ip, port }, tid), tid);
        expect(r.ok && r.value).toEqual({ family, ip, port });
      }),
    );
  });

  it('text attributes, ERROR-CODE, UNKNOWN-ATTRIBUTES, numbers, families', () => {
    const text = fc.string({ unit: 'grapheme', maxLength: 60 }).filter((s) => [...s].length <= 127 && encodeText(s).length <= 513);
    fc.assert(
      fc.property(text, (s) => {
        for (const dec of [decodeUsername, decodeRealm, decodeNonce, decodeSoftware]) {
          const r = dec(encodeText(s));
          expect(r.ok && r.value).toBe(s);
        }
      }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 300, max: 699 }), fc.string({ maxLength: 40 }), (code, reason) => {
        const r = decodeErrorCode(encodeErrorCode({ code, reason }));
        expect(r.ok && r.value).toEqual({ code, reason });
      }),
    );
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 65535 }), { maxLength: 20 }), (types) => {
        const r = decodeUnknownAttributes(encodeUnknownAttributes(types));
        expect(r.ok && r.value).toEqual(types);
      }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (n) => {
        const r = decodeLifetime(encodeLifetime(n));
        expect(r.ok && r.value).toBe(n);
      }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), (n) => {
        const r = decodeChannelNumber(encodeChannelNumber(n));
        expect(r.ok && r.value).toBe(n);
      }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 255 }), (n) => {
        const r = decodeRequestedTransport(encodeRequestedTransport(n));
        expect(r.ok && r.value).toBe(n);
      }),
    );
    for (const f of [4, 6] as const) {
      const r = decodeRequestedAddressFamily(encodeRequestedAddressFamily(f));
      expect(r.ok && r.value).toBe(f);
    }
    expect(decodeDontFragment(new Uint8Array(0)).ok).toBe(true);
  });

  it('whole messages with integrity (SHA1 and SHA256) and fingerprint', () => {
    const attrArb = fc.record({
      type: fc.integer({ min: 0, max: 0xffff }).filter((t) => t !== Attr.MessageIntegrity && t !== Attr.MessageIntegritySha256 && t !== Attr.Fingerprint),
      value: fc.uint8Array({ maxLength: 64 }),
    });
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xfff }),
        fc.constantFrom(0, 1, 2, 3) as fc.Arbitrary<StunClass>,
        tidArb,
        fc.array(attrArb, { maxLength: 10 }),
        fc.uint8Array({ minLength: 1, maxLength: 32 }),
        fc.boolean(),
        (method, cls, tid, attrs, key, sha256) => {
          const w = new StunWriter(method, cls, tid);
          for (const a of attrs) w.add(a.type, a.value);
          if (sha256) w.addMessageIntegritySha256(key, hmacSha256);
          else w.addMessageIntegrity(key, hmacSha1);
          const bytes = w.addFingerprint().finish();
          const m = mustDecode(bytes);
          expect(m.method).toBe(method);
          expect(m.cls).toBe(cls);
          expect(m.transactionId).toEqual(tid);
          expect(m.attributes.slice(0, attrs.length).map((a) => ({ type: a.type, value: a.value }))).toEqual(attrs);
          if (sha256) expect(verifyMessageIntegritySha256(m, key, hmacSha256)).toBe(true);
          else expect(verifyMessageIntegrity(m, key, hmacSha1)).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('ChannelData over UDP and streams', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0x4000, max: 0x4fff }), fc.uint8Array({ maxLength: 1500 }), fc.boolean(), (ch, data, stream) => {
        const enc = encodeChannelData(ch, data, stream);
        if (stream) expect(enc.length % 4).toBe(0);
        const r = decodeChannelData(enc, stream);
        expect(r.ok && r.value.channel).toBe(ch);
        expect(r.ok && r.value.data).toEqual(data);
      }),
    );
  });

  it('stream framing: any split of a sequence of frames yields the same frames', () => {
    const frameArb = fc.oneof(
      fc.tuple(fc.integer({ min: 0x4000, max: 0x4fff }), fc.uint8Array({ maxLength: 300 })).map(([ch, d]) => encodeChannelData(ch, d, true)),
      tidArb.map((tid) => new StunWriter(StunMethod.Binding, StunClass.Request, tid).addFingerprint().finish()),
    );
    fc.assert(
      fc.property(fc.array(frameArb, { minLength: 1, maxLength: 8 }), fc.array(fc.integer({ min: 1, max: 400 }), { minLength: 1, maxLength: 20 }), (frames, cuts) => {
        const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
        let o = 0;
        for (const f of frames) {
          all.set(f, o);
          o += f.length;
        }
        const framer = new StreamFramer(70_000);
        const out: Uint8Array[] = [];
        let pos = 0;
        let i = 0;
        while (pos < all.length) {
          const n = cuts[i++ % cuts.length]!;
          expect(framer.push(all.subarray(pos, pos + n)).ok).toBe(true);
          pos += n;
          for (let r = framer.next(); ; r = framer.next()) {
            expect(r.ok).toBe(true);
            if (!r.ok || !r.value) break;
            out.push(r.value.bytes.slice());
          }
        }
        expect(out).toEqual(frames);
        expect(framer.buffered).toBe(0);
      }),
    );
  });

  it('stream framing refuses frames over the bound and non-STUN bytes', () => {
    const f = new StreamFramer(1000);
    f.push(new Uint8Array([0x40, 0x00, 0x10, 0x00]));
    expect(f.next()).toMatchObject({ ok: false, error: { kind: 'oversized' } });
    const g = new StreamFramer(1000);
    g.push(new Uint8Array([0x80, 0, 0, 0]));
    expect(g.next().ok).toBe(false);
  });
});

describe('client side: long-term signing and reading responses', () => {
  const md5 = (d: Uint8Array) => new Uint8Array(createHash('md5').update(d).digest());
  const tid = new Uint8Array(12).fill(7);

  it('longTermKey is the RFC 5769 §2.4 key, and a request signed with it verifies', () => {
    const username = '\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9';
    const key = longTermKey(md5, username, 'example.org', 'TheMatrIX');
    expect(key).toEqual(LONG_TERM_KEY);
    const auth = { username, realm: 'example.org', nonce: 'f//499k954d6OL34oL9FSTvy64sA', key };
    const m = mustDecode(addLongTermAuth(new StunWriter(StunMethod.Binding, StunClass.Request, tid), auth, hmacSha1).addFingerprint().finish());
    expect(m.attributes.map((a) => a.type)).toEqual([Attr.Username, Attr.Realm, Attr.Nonce, Attr.MessageIntegrity, Attr.Fingerprint]);
    expect(readResponse(m)).toMatchObject({ realm: 'example.org', nonce: 'f//499k954d6OL34oL9FSTvy64sA' });
    expect(verifyMessageIntegrity(m, key, hmacSha1)).toBe(true);
    expect(verifyMessageIntegrity(m, longTermKey(md5, username, 'example.org', 'other'), hmacSha1)).toBe(false);
  });

  it('readResponse reads a 401 and an Allocate success, and reads malformed attributes as absent', () => {
    const e401 = new StunWriter(StunMethod.Allocate, StunClass.ErrorResponse, tid)
      .add(Attr.ErrorCode, encodeErrorCode({ code: 401, reason: 'Unauthorized' }))
      .add(Attr.Realm, encodeText('homelink'))
      .add(Attr.Nonce, encodeText('n-1'))
      .finish();
    expect(readResponse(mustDecode(e401))).toMatchObject({ cls: StunClass.ErrorResponse, code: 401, realm: 'homelink', nonce: 'n-1', relayed: null });
    const ok = new StunWriter(StunMethod.Allocate, StunClass.SuccessResponse, tid)
      .add(Attr.XorRelayedAddress, encodeXorAddress({ family: 4, ip: '198.51.100.7', port: 50000 }, tid))
      .add(Attr.Lifetime, encodeLifetime(600))
      .finish();
    expect(readResponse(mustDecode(ok))).toMatchObject({ code: null, relayed: { family: 4, ip: '198.51.100.7', port: 50000 }, lifetime: 600 });
    const bad = new StunWriter(StunMethod.Allocate, StunClass.SuccessResponse, tid)
      .add(Attr.Lifetime, new Uint8Array(3))
      .add(Attr.XorRelayedAddress, new Uint8Array(5))
      .add(Attr.Realm, new Uint8Array([0xff, 0xfe]))
      .finish();
    expect(readResponse(mustDecode(bad))).toMatchObject({ lifetime: null, relayed: null, realm: null });
  });

  it('readResponse never throws on any message that decodes (fast-check)', () => {
    const attr = fc.tuple(fc.constantFrom(Attr.ErrorCode, Attr.Realm, Attr.Nonce, Attr.Lifetime, Attr.Data, Attr.XorRelayedAddress, Attr.XorMappedAddress, Attr.XorPeerAddress), fc.uint8Array({ maxLength: 40 }));
    fc.assert(
      fc.property(fc.array(attr, { maxLength: 8 }), (attrs) => {
        const w = new StunWriter(StunMethod.Allocate, StunClass.ErrorResponse, tid);
        for (const [t, v] of attrs) w.add(t, v);
        readResponse(mustDecode(w.finish()));
      }),
    );
  });
});
