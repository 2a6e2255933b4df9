/**
 * Peer address policy: which addresses a TURN allocation may reach.
 *
 * RFC 8656 §21 ("Security Considerations") warns that a relay open to any peer
 * lets a client reach what sits behind the relay: its loopback services, the
 * operator's private network, the cloud metadata endpoint at 169.254.169.254.
 * coturn (CVE-2020-26262, loopback via 0.0.0.0 and ::), restund and the Slack
 * relay incident all failed here, each through a spelling the filter did not
 * recognise. So, before any CreatePermission, ChannelBind or Send (RFC 8656
 * §9, §11, §12), the relay calls {@link checkPeer}, which:
 *
 * 1. parses the text strictly with the relay's one IP parser
 *    (`stun/ip.ts`): IPv4 only as a dotted quad of decimal octets without
 *    leading zeros (`0177.0.0.1`, `2130706433`, `0x7f.1`, `127.1` are
 *    malformed, because `inet_aton` reads them as loopback); IPv6 in every
 *    RFC 4291 §2.2 form (compressed, expanded, mixed with a dotted quad, any
 *    case), but no zone id (`fe80::1%eth0`) and no brackets;
 * 2. canonicalises to the embedded IPv4 address wherever the IPv6 address
 *    carries one: IPv4-mapped `::ffff:0:0/96` (RFC 4291 §2.5.5.2),
 *    IPv4-translated `::ffff:0:0:0/96` (RFC 2765 §2.1), IPv4-compatible
 *    `::/96` (RFC 4291 §2.5.5.1), NAT64 `64:ff9b::/96` (RFC 6052), 6to4
 *    `2002::/16` (RFC 3056) and Teredo `2001::/32` (RFC 4380, whose client
 *    address is stored inverted; the server address is checked too);
 * 3. denies by default every range of the IANA IPv4 and IPv6 Special-Purpose
 *    Address Registries that is not globally reachable, plus multicast and
 *    everything outside IPv6 global unicast `2000::/3`, and the relay's own
 *    addresses;
 * 4. lets the operator's allow-list open ranges explicitly (the NAT lab opens
 *    198.18.0.0/15, 198.51.100.0/24 and 203.0.113.0/24).
 *
 * Deliberately conservative: whole blocks are denied even where IANA marks a
 * few addresses inside them globally reachable (192.0.0.9/.10 PCP and TURN
 * anycast in 192.0.0.0/24; 2001:1::1-3, AMT 2001:3::/32, AS112 2001:4:112::/48
 * and ORCHIDv2 2001:20::/28 inside 2001::/23). None of them is a WebRTC peer.
 * IPv6 allow-list entries match native IPv6 peers only; an IPv4 range is
 * opened with an IPv4 CIDR (or its `::ffff:a.b.c.d/96+n` spelling).
 *
 * Some destinations are never peers and no allow-list opens them: the
 * unspecified address (Linux delivers `0.0.0.0` and `::` to the local host),
 * multicast and broadcast. Loopback opens only with `allowLoopback` (tests).
 *
 * Portable: no Node imports (only `protocol/stun/ip.ts`, itself portable), so the
 * module can move to `protocol/` together with it.
 */

import { MAX_IPV6_TEXT, formatIp, formatIpv4Value, formatIpv6Words, parseIpv4Value, parseIpv6Words } from '../protocol/stun/ip.js';

/** Why a peer address was refused; a fixed set, so metrics can hold one counter per reason. */
export type DenyReason =
  | 'malformed'
  | 'unspecified'
  | 'loopback'
  | 'private'
  | 'shared'
  | 'link_local'
  | 'unique_local'
  | 'multicast'
  | 'broadcast'
  | 'reserved'
  | 'documentation'
  | 'benchmarking'
  | 'relay_address';

/** Every {@link DenyReason}, in a stable order (for metrics and tests). */
export const DENY_REASONS: readonly DenyReason[] = [
  'malformed',
  'unspecified',
  'loopback',
  'private',
  'shared',
  'link_local',
  'unique_local',
  'multicast',
  'broadcast',
  'reserved',
  'documentation',
  'benchmarking',
  'relay_address',
];

/** The outcome of {@link checkPeer}. `canonical` is the form to key permissions on and to send to. */
export type PeerCheck =
  | { allowed: true; canonical: string }
  | { allowed: false; reason: DenyReason; canonical: string | null };

/** Options of {@link createPeerPolicy}. */
export interface PeerPolicyOptions {
  /** CIDRs (`198.18.0.0/15`, `2001:db8::/32`) or single addresses opened explicitly, e.g. for a lab. */
  allow: string[];
  /** Lets loopback peers through (tests only: relay and peers on 127.0.0.1). */
  allowLoopback: boolean;
  /** The relay's own addresses (listening and relayed); peers there are refused. */
  relayAddresses: string[];
}

/** A configuration error: names the option and the offending value (never a secret here). */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    /** The configuration field at fault, e.g. `allow[2]`. */
    readonly field: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

interface Cidr4 {
  readonly net: number;
  readonly prefix: number;
}
interface Cidr6 {
  readonly words: readonly number[]; // 8 x 16-bit
  readonly prefix: number;
}

/** A validated, immutable peer policy built by {@link createPeerPolicy}. */
export interface PeerPolicy {
  readonly allowLoopback: boolean;
  /** @internal */ readonly allow4: readonly Cidr4[];
  /** @internal */ readonly allow6: readonly Cidr6[];
  /** @internal canonical text of the relay's own addresses */ readonly relay: ReadonlySet<string>;
}

// ---------------------------------------------------------------- classification

type Category = DenyReason | 'global';

/** IPv4 special-purpose ranges (IANA IPv4 Special-Purpose Address Registry, RFC 6890) that are not global. */
const V4_RANGES: ReadonlyArray<readonly [net: number, prefix: number, reason: DenyReason]> = [
  [0xffffffff, 32, 'broadcast'], // RFC 919 limited broadcast; before 240/4 so it keeps its own reason
  [0x00000000, 8, 'unspecified'], // "this network", RFC 791; Linux routes 0.0.0.0 to the local host
  [0x7f000000, 8, 'loopback'], // RFC 1122
  [0x0a000000, 8, 'private'], // RFC 1918
  [0xac100000, 12, 'private'], // RFC 1918
  [0xc0a80000, 16, 'private'], // RFC 1918
  [0x64400000, 10, 'shared'], // RFC 6598 carrier-grade NAT
  [0xa9fe0000, 16, 'link_local'], // RFC 3927; 169.254.169.254 is the cloud metadata service
  [0xe0000000, 4, 'multicast'], // RFC 5771
  [0xf0000000, 4, 'reserved'], // RFC 1112 §4 "future use"
  [0xc0000000, 24, 'reserved'], // RFC 6890 IETF protocol assignments (incl. DS-Lite 192.0.0.0/29)
  [0xc0000200, 24, 'documentation'], // RFC 5737 TEST-NET-1
  [0xc6336400, 24, 'documentation'], // RFC 5737 TEST-NET-2
  [0xcb007100, 24, 'documentation'], // RFC 5737 TEST-NET-3
  [0xc6120000, 15, 'benchmarking'], // RFC 2544
  [0xc0586300, 24, 'reserved'], // RFC 7526 deprecated 6to4 relay anycast
];

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

function inV4(v: number, net: number, prefix: number): boolean {
  return (v & maskOf(prefix)) >>> 0 === net;
}

/** V4_RANGES with masks precomputed: checkPeer runs per Send indication. */
const V4_MASKED: ReadonlyArray<readonly [net: number, mask: number, reason: DenyReason]> = V4_RANGES.map(
  ([net, prefix, reason]) => [net, maskOf(prefix), reason] as const,
);

function classifyV4(v: number): Category {
  for (const [net, mask, reason] of V4_MASKED) if ((v & mask) >>> 0 === net) return reason;
  return 'global';
}

/**
 * IPv6 text that carries an IPv4 address, reduced to it; `extra` is a second
 * embedded address that must pass too (the Teredo server).
 */
interface Embedded {
  v4: number;
  extra: number | null;
}

/** Returns the IPv4 address an IPv6 address embeds, or null (see the module comment for the forms). */
function embeddedV4(w: readonly number[]): Embedded | null {
  const low = ((w[6]! << 16) | w[7]!) >>> 0;
  const zero01234 = w[0] === 0 && w[1] === 0 && w[2] === 0 && w[3] === 0 && w[4] === 0;
  if (zero01234 && (w[5] === 0xffff || w[5] === 0)) return { v4: low, extra: null }; // ::ffff:a.b.c.d, ::a.b.c.d
  if (w[0] === 0 && w[1] === 0 && w[2] === 0 && w[3] === 0 && w[4] === 0xffff && w[5] === 0) {
    return { v4: low, extra: null }; // ::ffff:0:a.b.c.d (RFC 2765 IPv4-translated)
  }
  if (w[0] === 0x64 && w[1] === 0xff9b && w[2] === 0 && w[3] === 0 && w[4] === 0 && w[5] === 0) {
    return { v4: low, extra: null }; // 64:ff9b::a.b.c.d (RFC 6052 well-known prefix)
  }
  if (w[0] === 0x2002) return { v4: ((w[1]! << 16) | w[2]!) >>> 0, extra: null }; // 2002:AABB:CCDD::/48 (RFC 3056)
  if (w[0] === 0x2001 && w[1] === 0) {
    // RFC 4380 §4: 2001:0:<server v4>:<flags>:<port ^ 0xffff>:<client v4 ^ 0xffffffff>
    return { v4: ~low >>> 0, extra: ((w[2]! << 16) | w[3]!) >>> 0 };
  }
  return null;
}

/** IPv6 ranges without an embedded IPv4 address (IANA IPv6 Special-Purpose Address Registry, RFC 6890). */
function classifyV6(w: readonly number[]): Category {
  const w0 = w[0]!;
  if (w0 >= 0xff00) return 'multicast'; // ff00::/8, RFC 4291 §2.7
  if ((w0 & 0xffc0) === 0xfe80) return 'link_local'; // fe80::/10, RFC 4291 §2.5.6
  if ((w0 & 0xfe00) === 0xfc00) return 'unique_local'; // fc00::/7, RFC 4193
  if ((w0 & 0xe000) !== 0x2000) {
    // Outside global unicast 2000::/3: ::/128, ::1/128, 64:ff9b:1::/48 (RFC 8215),
    // 100::/64 discard-only (RFC 6666), 5f00::/16 SRv6 (RFC 9602), fec0::/10 and the unassigned rest.
    if (w.every((x, i) => x === 0 || (i === 7 && x === 1))) return w[7] === 1 ? 'loopback' : 'unspecified';
    return 'reserved';
  }
  if (w0 === 0x2001) {
    const w1 = w[1]!;
    if (w1 === 0x0db8) return 'documentation'; // 2001:db8::/32, RFC 3849
    if (w1 === 0x0002 && w[2] === 0) return 'benchmarking'; // 2001:2::/48, RFC 5180
    if (w1 < 0x0200) return 'reserved'; // 2001::/23 IETF protocol assignments, RFC 2928
  }
  if ((w0 & 0xfff0) === 0x3ff0 && (w[1]! & 0xf000) === 0) return 'documentation'; // 3fff::/20, RFC 9637
  return 'global';
}

interface Parsed {
  /** Set for IPv4 and for IPv6 that embeds IPv4. */
  v4: number;
  /** Set for native IPv6 (no embedded IPv4). */
  v6: number[] | null;
  /** Second embedded IPv4 address to check (Teredo server), or -1. */
  extra: number;
  /** The input text when it is already canonical (a strict dotted quad is), else null. */
  text: string | null;
}

function parseAny(text: string): Parsed | null {
  if (typeof text !== 'string') return null;
  if (text.indexOf(':') === -1) {
    const v4 = parseIpv4Value(text);
    return v4 < 0 ? null : { v4, v6: null, extra: -1, text };
  }
  const w = parseIpv6Words(text);
  if (!w) return null;
  // :: and ::1 sit inside ::/96 but are IPv6's own unspecified and loopback addresses.
  const isZeroPrefix = w[0] === 0 && w[1] === 0 && w[2] === 0 && w[3] === 0 && w[4] === 0 && w[5] === 0 && w[6] === 0;
  if (isZeroPrefix && (w[7] === 0 || w[7] === 1)) return { v4: -1, v6: w, extra: -1, text: null };
  const e = embeddedV4(w);
  if (e) return { v4: e.v4, v6: null, extra: e.extra ?? -1, text: null };
  return { v4: -1, v6: w, extra: -1, text: null };
}

function canonicalOf(p: Parsed): string {
  if (p.text !== null) return p.text;
  return p.v6 ? formatIpv6Words(p.v6) : formatIpv4Value(p.v4);
}

// ---------------------------------------------------------------- policy

function parseCidr(text: string, field: string): { v4: Cidr4 } | { v6: Cidr6 } {
  if (typeof text !== 'string' || text.length > MAX_IPV6_TEXT + 4) {
    throw new ConfigError(field, `${field}: not a CIDR (expected e.g. 198.18.0.0/15)`);
  }
  const slash = text.indexOf('/');
  const addrText = slash === -1 ? text : text.slice(0, slash);
  const prefixText = slash === -1 ? null : text.slice(slash + 1);
  const isV6 = addrText.includes(':');
  const max = isV6 ? 128 : 32;
  let prefix = max;
  if (prefixText !== null) {
    if (!/^(0|[1-9]\d{0,2})$/.test(prefixText) || Number(prefixText) > max) {
      throw new ConfigError(field, `${field}: bad prefix length in CIDR "${text}" (0-${max})`);
    }
    prefix = Number(prefixText);
  }
  if (!isV6) {
    const v = parseIpv4Value(addrText);
    if (v < 0) throw new ConfigError(field, `${field}: bad IPv4 address in CIDR "${text}"`);
    if (((v & maskOf(prefix)) >>> 0) !== v) {
      throw new ConfigError(field, `${field}: CIDR "${text}" has host bits set (did you mean ${formatIpv4Value((v & maskOf(prefix)) >>> 0)}/${prefix}?)`);
    }
    return { v4: { net: v, prefix } };
  }
  const w = parseIpv6Words(addrText);
  if (!w) throw new ConfigError(field, `${field}: bad IPv6 address in CIDR "${text}"`);
  const masked = maskV6(w, prefix);
  if (masked.some((x, i) => x !== w[i])) {
    throw new ConfigError(field, `${field}: CIDR "${text}" has host bits set (did you mean ${formatIpv6Words(masked)}/${prefix}?)`);
  }
  // An IPv4-mapped CIDR means the IPv4 range it maps, since peers are canonicalised to IPv4.
  if (prefix >= 96 && w.slice(0, 6).every((x, i) => (i === 5 ? x === 0xffff : x === 0))) {
    return { v4: { net: ((w[6]! << 16) | w[7]!) >>> 0, prefix: prefix - 96 } };
  }
  return { v6: { words: w, prefix } };
}

function maskV6(w: readonly number[], prefix: number): number[] {
  return w.map((x, i) => {
    const bits = Math.max(0, Math.min(16, prefix - i * 16));
    return bits === 0 ? 0 : x & ((0xffff << (16 - bits)) & 0xffff);
  });
}

function inV6(w: readonly number[], c: Cidr6): boolean {
  const m = maskV6(w, c.prefix);
  for (let i = 0; i < 8; i++) if (m[i] !== c.words[i]) return false;
  return true;
}

/**
 * Builds a peer policy, validating every CIDR and relay address.
 *
 * @throws {ConfigError} naming the bad entry (`allow[i]` or `relayAddresses[i]`).
 * @example
 * const policy = createPeerPolicy({
 *   allow: ['198.18.0.0/15', '203.0.113.0/24'],
 *   allowLoopback: false,
 *   relayAddresses: ['203.0.113.10'],
 * });
 * checkPeer(policy, '::ffff:198.18.1.2'); // { allowed: true, canonical: '198.18.1.2' }
 * checkPeer(policy, '203.0.113.10'); // { allowed: false, reason: 'relay_address', canonical: '203.0.113.10' }
 */
export function createPeerPolicy(opts: PeerPolicyOptions): PeerPolicy {
  const allow4: Cidr4[] = [];
  const allow6: Cidr6[] = [];
  if (!Array.isArray(opts.allow)) throw new ConfigError('allow', 'allow: expected a list of CIDRs');
  if (!Array.isArray(opts.relayAddresses)) throw new ConfigError('relayAddresses', 'relayAddresses: expected a list of addresses');
  opts.allow.forEach((text, i) => {
    const c = parseCidr(text, `allow[${i}]`);
    if ('v4' in c) allow4.push(c.v4);
    else allow6.push(c.v6);
  });
  const relay = new Set<string>();
  opts.relayAddresses.forEach((text, i) => {
    const p = parseAny(text);
    if (!p) throw new ConfigError(`relayAddresses[${i}]`, `relayAddresses[${i}]: not an IP address: "${String(text).slice(0, 64)}"`);
    relay.add(canonicalOf(p));
  });
  return { allowLoopback: opts.allowLoopback === true, allow4, allow6, relay };
}

function listed4(policy: PeerPolicy, v: number): boolean {
  for (const c of policy.allow4) if (inV4(v, c.net, c.prefix)) return true;
  return false;
}

function listed6(policy: PeerPolicy, w: readonly number[]): boolean {
  for (const c of policy.allow6) if (inV6(w, c)) return true;
  return false;
}

/** Categories no allow-list opens: they are never a unicast peer. */
function neverPeer(c: Category): c is 'unspecified' | 'multicast' | 'broadcast' {
  return c === 'unspecified' || c === 'multicast' || c === 'broadcast';
}

/**
 * Decides whether a TURN client may reach `ip` (RFC 8656 §21). Never throws;
 * any input that is not a strict IP address is `malformed`.
 *
 * Order: malformed; never-a-peer (unspecified, multicast, broadcast);
 * loopback (only with `allowLoopback`, which also exempts loopback relay
 * addresses, since tests put the relay and its peers on 127.0.0.1); the
 * relay's own addresses; the allow-list; the special-purpose ranges. A Teredo
 * address passes only if its server address passes the same checks.
 *
 * @example
 * checkPeer(policy, '::ffff:7f00:1'); // { allowed: false, reason: 'loopback', canonical: '127.0.0.1' }
 * checkPeer(policy, '0177.0.0.1'); // { allowed: false, reason: 'malformed', canonical: null }
 */
export function checkPeer(policy: PeerPolicy, ip: string): PeerCheck {
  const p = parseAny(ip);
  if (!p) return { allowed: false, reason: 'malformed', canonical: null };
  const canonical = canonicalOf(p);
  const cat: Category = p.v6 ? classifyV6(p.v6) : classifyV4(p.v4);
  if (neverPeer(cat)) return { allowed: false, reason: cat, canonical };
  if (cat === 'loopback') {
    if (!policy.allowLoopback) return { allowed: false, reason: 'loopback', canonical };
  } else {
    if (policy.relay.has(canonical)) return { allowed: false, reason: 'relay_address', canonical };
    const listed = p.v6 ? listed6(policy, p.v6) : listed4(policy, p.v4);
    if (cat !== 'global' && !listed) return { allowed: false, reason: cat, canonical };
  }
  if (p.extra >= 0) {
    const extra = classifyV4(p.extra);
    const ok =
      extra === 'global' ||
      (extra === 'loopback' && policy.allowLoopback) ||
      (!neverPeer(extra) && extra !== 'loopback' && listed4(policy, p.extra));
    if (!ok) return { allowed: false, reason: extra as DenyReason, canonical };
  }
  return { allowed: true, canonical };
}

/**
 * {@link checkPeer} for an address already decoded from XOR-PEER-ADDRESS
 * (4 or 16 bytes); anything else is `malformed`.
 */
export function checkPeerBytes(policy: PeerPolicy, addr: Uint8Array): PeerCheck {
  if (addr.length === 4 || addr.length === 16) return checkPeer(policy, formatIp(addr));
  return { allowed: false, reason: 'malformed', canonical: null };
}
