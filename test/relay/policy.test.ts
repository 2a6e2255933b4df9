import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError, DENY_REASONS, checkPeer, checkPeerBytes, createPeerPolicy, type DenyReason } from '../../relay/policy.js';

const strict = createPeerPolicy({ allow: [], allowLoopback: false, relayAddresses: ['203.0.113.10', '2001:db8::10'] });
const lab = createPeerPolicy({
  allow: ['198.18.0.0/15', '198.51.100.0/24', '203.0.113.0/24'],
  allowLoopback: false,
  relayAddresses: ['203.0.113.10'],
});
const loopbackOk = createPeerPolicy({ allow: [], allowLoopback: true, relayAddresses: ['127.0.0.1'] });

type Row = readonly [input: string, reason: DenyReason | 'allowed', canonical: string | null];

/** Every spelling the module comment promises to handle, against the strict policy (no allow-list). */
const TABLE: readonly Row[] = [
  // global unicast, both families
  ['8.8.8.8', 'allowed', '8.8.8.8'],
  ['1.1.1.1', 'allowed', '1.1.1.1'],
  ['2606:4700:4700::1111', 'allowed', '2606:4700:4700::1111'],
  ['2606:4700:4700:0:0:0:0:1111', 'allowed', '2606:4700:4700::1111'],
  ['2606:4700:4700:0000:0000:0000:0000:1111', 'allowed', '2606:4700:4700::1111'],
  ['2606:4700:4700::1111'.toUpperCase(), 'allowed', '2606:4700:4700::1111'],
  ['2001:4860:4860::8888', 'allowed', '2001:4860:4860::8888'],
  ['192.31.196.1', 'allowed', '192.31.196.1'], // AS112-v4: globally reachable per IANA
  // IPv4 text forms that inet_aton reads as something else
  ['0177.0.0.1', 'malformed', null],
  ['0x7f.0.0.1', 'malformed', null],
  ['0x7f000001', 'malformed', null],
  ['2130706433', 'malformed', null],
  ['127.1', 'malformed', null],
  ['127.0.1', 'malformed', null],
  ['010.0.0.1', 'malformed', null],
  ['1.2.3.04', 'malformed', null],
  ['256.0.0.1', 'malformed', null],
  ['1.2.3.4.', 'malformed', null],
  ['.1.2.3.4', 'malformed', null],
  ['1.2.3.4 ', 'malformed', null],
  [' 1.2.3.4', 'malformed', null],
  ['1.2.3.4/32', 'malformed', null],
  ['1.2.3.4:80', 'malformed', null],
  ['１.２.３.４', 'malformed', null], // full-width digits
  ['', 'malformed', null],
  ['localhost', 'malformed', null],
  // IPv6 text forms refused
  ['[::1]', 'malformed', null],
  ['fe80::1%eth0', 'malformed', null],
  ['fe80::1%25eth0', 'malformed', null],
  ['::1::', 'malformed', null],
  [':::1', 'malformed', null],
  ['1:2:3:4:5:6:7:8:9', 'malformed', null],
  ['1:2:3:4:5:6:7', 'malformed', null],
  ['1:2:3:4:5:6:7:8::', 'malformed', null],
  ['12345::1', 'malformed', null],
  ['::ffff:127.0.0.01', 'malformed', null],
  ['::ffff:127.1', 'malformed', null],
  ['1.2.3.4::', 'malformed', null],
  ['::1.2.3.4:5', 'malformed', null],
  ['g::1', 'malformed', null],
  ['1:', 'malformed', null],
  [':1', 'malformed', null],
  ['0000:0000:0000:0000:0000:0000:0000:0000:0', 'malformed', null],
  // unspecified
  ['0.0.0.0', 'unspecified', '0.0.0.0'],
  ['0.1.2.3', 'unspecified', '0.1.2.3'],
  ['::', 'unspecified', '::'],
  ['0:0:0:0:0:0:0:0', 'unspecified', '::'],
  ['::ffff:0.0.0.0', 'unspecified', '0.0.0.0'],
  ['::0.0.0.0', 'unspecified', '::'],
  // loopback, every spelling
  ['127.0.0.1', 'loopback', '127.0.0.1'],
  ['127.255.255.254', 'loopback', '127.255.255.254'],
  ['::1', 'loopback', '::1'],
  ['0:0:0:0:0:0:0:1', 'loopback', '::1'],
  ['0000:0000:0000:0000:0000:0000:0000:0001', 'loopback', '::1'],
  ['::ffff:127.0.0.1', 'loopback', '127.0.0.1'],
  ['::FFFF:127.0.0.1', 'loopback', '127.0.0.1'],
  ['::ffff:7f00:1', 'loopback', '127.0.0.1'],
  ['0:0:0:0:0:ffff:7f00:0001', 'loopback', '127.0.0.1'],
  ['::127.0.0.1', 'loopback', '127.0.0.1'],
  ['::7f00:1', 'loopback', '127.0.0.1'],
  ['::ffff:0:127.0.0.1', 'loopback', '127.0.0.1'],
  ['64:ff9b::127.0.0.1', 'loopback', '127.0.0.1'],
  ['64:ff9b::7f00:1', 'loopback', '127.0.0.1'],
  ['2002:7f00:1::', 'loopback', '127.0.0.1'],
  ['2002:7f00:0001:1234::5', 'loopback', '127.0.0.1'],
  ['2001:0:4136:e378:8000:63bf:80ff:fffe', 'loopback', '127.0.0.1'], // Teredo client 127.0.0.1, stored inverted
  // private, shared, link-local (cloud metadata)
  ['10.0.0.1', 'private', '10.0.0.1'],
  ['172.16.0.1', 'private', '172.16.0.1'],
  ['172.31.255.255', 'private', '172.31.255.255'],
  ['172.32.0.1', 'allowed', '172.32.0.1'],
  ['192.168.1.1', 'private', '192.168.1.1'],
  ['::ffff:10.1.2.3', 'private', '10.1.2.3'],
  ['::ffff:c0a8:101', 'private', '192.168.1.1'],
  ['2002:c0a8:0101::1', 'private', '192.168.1.1'],
  ['100.64.0.1', 'shared', '100.64.0.1'],
  ['100.127.255.255', 'shared', '100.127.255.255'],
  ['100.128.0.1', 'allowed', '100.128.0.1'],
  ['169.254.169.254', 'link_local', '169.254.169.254'],
  ['64:ff9b::a9fe:a9fe', 'link_local', '169.254.169.254'],
  ['64:ff9b::169.254.169.254', 'link_local', '169.254.169.254'],
  ['::ffff:169.254.169.254', 'link_local', '169.254.169.254'],
  ['2002:a9fe:a9fe::', 'link_local', '169.254.169.254'],
  ['fe80::1', 'link_local', 'fe80::1'],
  ['FE80::1', 'link_local', 'fe80::1'],
  ['febf:ffff::1', 'link_local', 'febf:ffff::1'],
  ['fc00::1', 'unique_local', 'fc00::1'],
  ['fd12:3456:789a::1', 'unique_local', 'fd12:3456:789a::1'],
  // multicast and broadcast
  ['224.0.0.1', 'multicast', '224.0.0.1'],
  ['239.255.255.250', 'multicast', '239.255.255.250'],
  ['::ffff:224.0.0.251', 'multicast', '224.0.0.251'],
  ['ff02::1', 'multicast', 'ff02::1'],
  ['ff05::1:3', 'multicast', 'ff05::1:3'],
  ['255.255.255.255', 'broadcast', '255.255.255.255'],
  ['::ffff:255.255.255.255', 'broadcast', '255.255.255.255'],
  // reserved, documentation, benchmarking
  ['240.0.0.1', 'reserved', '240.0.0.1'],
  ['255.255.255.254', 'reserved', '255.255.255.254'],
  ['192.0.0.1', 'reserved', '192.0.0.1'],
  ['192.0.0.9', 'reserved', '192.0.0.9'],
  ['192.88.99.1', 'reserved', '192.88.99.1'],
  ['192.0.2.1', 'documentation', '192.0.2.1'],
  ['198.51.100.7', 'documentation', '198.51.100.7'],
  ['203.0.113.9', 'documentation', '203.0.113.9'],
  ['2001:db8::1', 'documentation', '2001:db8::1'],
  ['2001:DB8:0:0:0:0:0:1', 'documentation', '2001:db8::1'],
  ['3fff::1', 'documentation', '3fff::1'],
  ['198.18.0.1', 'benchmarking', '198.18.0.1'],
  ['198.19.255.255', 'benchmarking', '198.19.255.255'],
  ['2001:2::1', 'benchmarking', '2001:2::1'],
  ['100::1', 'reserved', '100::1'], // discard-only 100::/64
  ['64:ff9b:1::1', 'reserved', '64:ff9b:1::1'], // local-use NAT64
  ['2001:10::1', 'reserved', '2001:10::1'], // inside 2001::/23
  ['5f00::1', 'reserved', '5f00::1'], // SRv6 SIDs
  ['fec0::1', 'reserved', 'fec0::1'], // deprecated site-local
  ['4000::1', 'reserved', '4000::1'], // outside 2000::/3
  ['2001:0:4136:e378:8000:63bf:3fff:fdd2', 'documentation', '192.0.2.45'], // RFC 4380 §4 example client
  ['2001:0:0a00:1:8000:63bf:f7f7:f7f7', 'private', '8.8.8.8'], // Teredo with a private server address
  // the relay's own addresses
  ['203.0.113.10', 'relay_address', '203.0.113.10'],
  ['::ffff:203.0.113.10', 'relay_address', '203.0.113.10'],
  ['2001:db8:0::10', 'relay_address', '2001:db8::10'],
];

describe('checkPeer: every textual form', () => {
  it.each(TABLE)('%s -> %s', (input, want, canonical) => {
    const got = checkPeer(strict, input);
    if (want === 'allowed') expect(got).toEqual({ allowed: true, canonical });
    else expect(got).toEqual({ allowed: false, reason: want, canonical });
  });

  it('covers every deny reason in the table', () => {
    const seen = new Set(TABLE.map((r) => r[1]));
    for (const r of DENY_REASONS) expect(seen.has(r), r).toBe(true);
  });

  it('refuses non-string and huge input as malformed', () => {
    expect(checkPeer(strict, undefined as unknown as string).allowed).toBe(false);
    expect(checkPeer(strict, 42 as unknown as string)).toEqual({ allowed: false, reason: 'malformed', canonical: null });
    expect(checkPeer(strict, '1'.repeat(1_000_000))).toEqual({ allowed: false, reason: 'malformed', canonical: null });
    expect(checkPeer(strict, '0:'.repeat(100_000) + '1')).toEqual({ allowed: false, reason: 'malformed', canonical: null });
  });
});

describe('allow-list and loopback flag', () => {
  it('opens the NAT lab ranges and nothing else', () => {
    expect(checkPeer(lab, '198.18.1.2')).toEqual({ allowed: true, canonical: '198.18.1.2' });
    expect(checkPeer(lab, '::ffff:198.19.0.1')).toEqual({ allowed: true, canonical: '198.19.0.1' });
    expect(checkPeer(lab, '203.0.113.11')).toEqual({ allowed: true, canonical: '203.0.113.11' });
    expect(checkPeer(lab, '198.51.100.200')).toEqual({ allowed: true, canonical: '198.51.100.200' });
    expect(checkPeer(lab, '192.0.2.1')).toMatchObject({ allowed: false, reason: 'documentation' });
    expect(checkPeer(lab, '10.0.0.1')).toMatchObject({ allowed: false, reason: 'private' });
    expect(checkPeer(lab, '127.0.0.1')).toMatchObject({ allowed: false, reason: 'loopback' });
    expect(checkPeer(lab, '8.8.8.8')).toEqual({ allowed: true, canonical: '8.8.8.8' });
  });

  it('never opens the relay itself, even inside an allowed range', () => {
    expect(checkPeer(lab, '203.0.113.10')).toMatchObject({ allowed: false, reason: 'relay_address' });
    expect(checkPeer(lab, '64:ff9b::cb00:710a')).toMatchObject({ allowed: false, reason: 'relay_address' });
  });

  it('never opens unspecified, multicast, broadcast or loopback through the allow-list', () => {
    const wide = createPeerPolicy({ allow: ['0.0.0.0/0', '::/0'], allowLoopback: false, relayAddresses: [] });
    expect(checkPeer(wide, '10.0.0.1').allowed).toBe(true);
    expect(checkPeer(wide, 'fd00::1').allowed).toBe(true);
    for (const ip of ['0.0.0.0', '::', '224.0.0.1', 'ff02::1', '255.255.255.255', '127.0.0.1', '::1', '::ffff:127.0.0.1']) {
      expect(checkPeer(wide, ip).allowed, ip).toBe(false);
    }
  });

  it('allowLoopback opens loopback (also when it is the relay address) and nothing else', () => {
    expect(checkPeer(loopbackOk, '127.0.0.1')).toEqual({ allowed: true, canonical: '127.0.0.1' });
    expect(checkPeer(loopbackOk, '::ffff:127.0.0.2')).toEqual({ allowed: true, canonical: '127.0.0.2' });
    expect(checkPeer(loopbackOk, '::1')).toEqual({ allowed: true, canonical: '::1' });
    expect(checkPeer(loopbackOk, '0.0.0.0')).toMatchObject({ allowed: false, reason: 'unspecified' });
    expect(checkPeer(loopbackOk, '10.0.0.1')).toMatchObject({ allowed: false, reason: 'private' });
  });

  it('a Teredo address passes only when its server address passes too', () => {
    // server 198.18.0.1 (lab), client 8.8.8.8
    const teredo = '2001:0:c612:1:8000:63bf:f7f7:f7f7';
    expect(checkPeer(strict, teredo)).toMatchObject({ allowed: false, reason: 'benchmarking', canonical: '8.8.8.8' });
    expect(checkPeer(lab, teredo)).toEqual({ allowed: true, canonical: '8.8.8.8' });
  });

  it('IPv6 allow-list entries match IPv6 peers; IPv4-mapped entries mean the IPv4 range', () => {
    const p = createPeerPolicy({ allow: ['fd00::/8', '::ffff:10.0.0.0/104'], allowLoopback: false, relayAddresses: [] });
    expect(checkPeer(p, 'fd12::1').allowed).toBe(true);
    expect(checkPeer(p, 'fc00::1').allowed).toBe(false);
    expect(checkPeer(p, '10.9.8.7').allowed).toBe(true);
    expect(checkPeer(p, '172.16.0.1').allowed).toBe(false);
    expect(checkPeer(createPeerPolicy({ allow: ['198.18.1.2'], allowLoopback: false, relayAddresses: [] }), '198.18.1.2').allowed).toBe(true);
  });

  it.each([
    ['198.18.0.1/15', 'allow[0]', /host bits/],
    ['198.18.0.0/33', 'allow[0]', /prefix/],
    ['198.18.0.0/015', 'allow[0]', /prefix/],
    ['198.18.0/15', 'allow[0]', /IPv4/],
    ['0177.0.0.0/8', 'allow[0]', /IPv4/],
    ['fe80::1%eth0/64', 'allow[0]', /IPv6/],
    ['2001:db8::1/32', 'allow[0]', /host bits.*did you mean 2001:db8::\/32\?/],
    ['::ffff:198.18.3.4/112', 'allow[0]', /host bits.*did you mean ::ffff:198\.18\.0\.0\/112\?/],
    ['2001:db8::/129', 'allow[0]', /prefix/],
    ['', 'allow[0]', /IPv4/],
  ])('rejects the bad CIDR %s with a ConfigError naming %s', (cidr, field, msg) => {
    let err: unknown;
    try {
      createPeerPolicy({ allow: [cidr], allowLoopback: false, relayAddresses: [] });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).name).toBe('ConfigError');
    expect((err as ConfigError).field).toBe(field);
    expect((err as ConfigError).message).toMatch(msg);
  });

  it('rejects a bad relay address, naming it', () => {
    expect(() => createPeerPolicy({ allow: ['8.8.8.0/24'], allowLoopback: false, relayAddresses: ['1.2.3.4', 'relay.example'] })).toThrow(
      expect.objectContaining({ name: 'ConfigError', field: 'relayAddresses[1]' }),
    );
  });
});

describe('checkPeerBytes', () => {
  it('checks decoded XOR-PEER-ADDRESS bytes the same way', () => {
    expect(checkPeerBytes(strict, new Uint8Array([127, 0, 0, 1]))).toMatchObject({ allowed: false, reason: 'loopback' });
    const mapped = new Uint8Array(16);
    mapped.set([0xff, 0xff, 169, 254, 169, 254], 10);
    expect(checkPeerBytes(strict, mapped)).toMatchObject({ allowed: false, reason: 'link_local', canonical: '169.254.169.254' });
    expect(checkPeerBytes(strict, new Uint8Array([8, 8, 8, 8]))).toEqual({ allowed: true, canonical: '8.8.8.8' });
    expect(checkPeerBytes(strict, new Uint8Array(5))).toMatchObject({ allowed: false, reason: 'malformed' });
  });
});

// ---------------------------------------------------------------- properties

/** Denied IPv4 ranges as [first, prefix]. */
const DENIED_V4: ReadonlyArray<readonly [number, number]> = [
  [0x00000000, 8],
  [0x7f000000, 8],
  [0x0a000000, 8],
  [0xac100000, 12],
  [0xc0a80000, 16],
  [0x64400000, 10],
  [0xa9fe0000, 16],
  [0xe0000000, 4],
  [0xf0000000, 4],
  [0xc0000000, 24],
  [0xc0000200, 24],
  [0xc6336400, 24],
  [0xcb007100, 24],
  [0xc6120000, 15],
];

const v4InDenied = fc
  .tuple(fc.constantFrom(...DENIED_V4), fc.integer({ min: 0, max: 0xffffffff }))
  .map(([[net, prefix], rnd]) => (net | (rnd & (prefix === 32 ? 0 : 0xffffffff >>> prefix))) >>> 0);

const hex = (n: number): string => n.toString(16);
const dotted = (v: number): string => `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;

/** Writes 8 words in a random IPv6 spelling: compressed anywhere legal, padded, any case, optional dotted tail. */
function spellV6(words: readonly number[], opts: { pad: boolean; upper: boolean; gapAt: number; dottedTail: boolean }): string {
  const g = words.map((w) => (opts.pad ? w.toString(16).padStart(4, '0') : hex(w)));
  let parts = g;
  let tail: string[] = [];
  if (opts.dottedTail) {
    parts = g.slice(0, 6);
    tail = [dotted(((words[6]! << 16) | words[7]!) >>> 0)];
  }
  // compress the run of zero words starting at gapAt (if any), as long as possible
  let text: string;
  const n = parts.length;
  const start = opts.gapAt % (n + 1);
  let end = start;
  while (end < n && words[end] === 0) end++;
  if (end - start >= 1) {
    const left = parts.slice(0, start).join(':');
    const right = [...parts.slice(end), ...tail].join(':');
    text = `${left}::${right}`;
  } else {
    text = [...parts, ...tail].join(':');
  }
  return opts.upper ? text.toUpperCase() : text;
}

const spelling = fc.record({ pad: fc.boolean(), upper: fc.boolean(), gapAt: fc.nat(8), dottedTail: fc.boolean() });

/** Every IPv6 form that embeds `v` (see relay/policy.ts), as 8 words. */
function embeddings(v: number, rnd: number): number[][] {
  const hi = v >>> 16;
  const lo = v & 0xffff;
  const r = rnd & 0xffff;
  return [
    [0, 0, 0, 0, 0, 0xffff, hi, lo], // IPv4-mapped
    [0, 0, 0, 0, 0, 0, hi, lo], // IPv4-compatible
    [0, 0, 0, 0, 0xffff, 0, hi, lo], // IPv4-translated
    [0x64, 0xff9b, 0, 0, 0, 0, hi, lo], // NAT64
    [0x2002, hi, lo, r, r ^ 0x5a5a, 0, r, 1], // 6to4
    [0x2001, 0, 0x0808, 0x0808, r, r ^ 0xffff, ~hi & 0xffff, ~lo & 0xffff], // Teredo, server 8.8.8.8
  ];
}

/** Denied IPv6 ranges without embedded IPv4: [words prefix, prefix bits]. */
const DENIED_V6: ReadonlyArray<readonly [number[], number]> = [
  [[0xfe80], 10],
  [[0xfc00], 7],
  [[0xff00], 8],
  [[0x2001, 0x0db8], 32],
  [[0x0100, 0, 0, 0], 64],
  [[0x2001, 0x0010], 28],
  [[0x3fff, 0], 20],
  [[0x4000], 2],
  [[0x0064, 0xff9b, 0x0001], 48],
];

const v6InDenied = fc
  .tuple(fc.constantFrom(...DENIED_V6), fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }))
  .map(([[prefixWords, bits], rnd]) =>
    rnd.map((r, i) => {
      const keep = Math.max(0, Math.min(16, bits - i * 16));
      const mask = keep === 0 ? 0 : (0xffff << (16 - keep)) & 0xffff;
      return ((prefixWords[i] ?? 0) & mask) | (r & ~mask & 0xffff);
    }),
  );

describe('properties', () => {
  it('no address in a denied IPv4 range is allowed by any spelling (strict and lab policies)', () => {
    fc.assert(
      fc.property(v4InDenied, fc.integer(), spelling, fc.nat(6), (v, rnd, sp, which) => {
        const forms = [dotted(v), ...embeddings(v, rnd).map((w) => spellV6(w, { ...sp, dottedTail: sp.dottedTail && which < 4 }))];
        const text = forms[which]!;
        const r = checkPeer(strict, text);
        expect(r.allowed, text).toBe(false);
        // IPv4-compatible 0.0.0.0 and 0.0.0.1 are IPv6's own :: and ::1.
        if (r.canonical !== null) expect([dotted(v), '::', '::1'], text).toContain(r.canonical);
        // The lab opens 198.18/15 and the documentation nets only.
        const inLab = (v >>> 17) === 0xc612 >>> 1 || (v >>> 8) === 0xc63364 || (v >>> 8) === 0xcb0071;
        expect(checkPeer(lab, text).allowed, text).toBe(inLab && v !== 0xcb00710a);
      }),
      { numRuns: 5000 },
    );
  });

  it('no address in a denied IPv6 range is allowed by any spelling', () => {
    fc.assert(
      fc.property(v6InDenied, spelling, (w, sp) => {
        const text = spellV6(w, sp);
        expect(checkPeer(strict, text).allowed, text).toBe(false);
        expect(checkPeer(lab, text).allowed, text).toBe(false);
      }),
      { numRuns: 5000 },
    );
  });

  it('every spelling of one address yields the same canonical form', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }), spelling, spelling, (w, a, b) => {
        const x = checkPeer(strict, spellV6(w, a));
        const y = checkPeer(strict, spellV6(w, b));
        expect(x.canonical).not.toBeNull();
        expect(x).toEqual(y);
      }),
      { numRuns: 3000 },
    );
  });

  it('native IPv6 canonical text equals the WHATWG URL serializer (RFC 5952 compression, lowercase)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 }),
        spelling,
        (words, sp) => {
          // Global unicast outside 2001::/16 and 2002::/16, so no embedded IPv4 changes the text.
          const w = [0x2003 + (words[0]! % (0x3fff - 0x2003)), ...words.slice(1)];
          const r = checkPeer(strict, spellV6(w, sp));
          const reference = new URL(`http://[${spellV6(w, { pad: false, upper: false, gapAt: 8, dottedTail: false })}]/`).hostname.slice(1, -1);
          expect(r.canonical).toBe(reference);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('never throws on arbitrary strings and denies anything outside the address alphabet', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 64 }), (s) => {
        const r = checkPeer(strict, s);
        if (/[^0-9a-fA-F:.]/.test(s)) expect(r).toEqual({ allowed: false, reason: 'malformed', canonical: null });
      }),
      { numRuns: 5000 },
    );
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF:.'.split('')), maxLength: 48 }), (s) => {
        const r = checkPeer(strict, s);
        if (r.allowed) expect(r.canonical).toMatch(/^[0-9a-f:.]+$/);
      }),
      { numRuns: 5000 },
    );
  });
});
