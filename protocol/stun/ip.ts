/**
 * IP address text <-> bytes for the address attributes (RFC 8489 §14.2), and
 * the one strict IP text parser and RFC 5952 formatter of the relay (the peer
 * policy in `relay/policy.ts` builds on the word-level functions here).
 *
 * Parsing is strict: IPv4 only as a dotted quad of decimal octets without
 * leading zeros (`0177.0.0.1`, `2130706433`, `0x7f.1`, `127.1` are refused,
 * because `inet_aton` reads them as loopback); IPv6 in every RFC 4291 §2.2
 * form (compressed, expanded, mixed with a trailing dotted quad, any case),
 * but no zone id (`fe80::1%eth0`) and no brackets. It scans characters with
 * no regular expression and no intermediate strings: it runs per Send
 * indication.
 *
 * Formatting follows RFC 5952 in the variant Node/libuv print (`inet_ntop`):
 * lowercase, no leading zeros, the longest (first on a tie) run of two or
 * more zero groups compressed, and an embedded dotted quad for IPv4-mapped
 * (::ffff:a.b.c.d, RFC 5952 §5) and IPv4-compatible (::a.b.c.d) addresses,
 * so a formatted address equals the `rinfo.address` Node reports for the
 * same peer and can be used as a map key.
 *
 * Portable: no Node imports or Node-only globals (plain Uint8Array and DataView).
 */

/** Longest IPv6 text: 6 groups of 4 hex digits and a dotted quad (45 chars); anything longer is refused unread. */
export const MAX_IPV6_TEXT = 45;

const CH_0 = 48;
const CH_9 = 57;
const CH_DOT = 46;
const CH_COLON = 58;

/** Parses a strict dotted quad in `s[start, end)` into an unsigned 32-bit number, or -1. */
function scanV4(s: string, start: number, end: number): number {
  let value = 0;
  let i = start;
  for (let part = 0; part < 4; part++) {
    let n = 0;
    let digits = 0;
    let leadingZero = false;
    while (i < end) {
      const c = s.charCodeAt(i);
      if (c < CH_0 || c > CH_9) break;
      if (digits === 0) leadingZero = c === CH_0;
      else if (leadingZero) return -1; // "01": octal to inet_aton
      n = n * 10 + (c - CH_0);
      if (++digits > 3) return -1;
      i++;
    }
    if (digits === 0 || n > 255) return -1;
    value = value * 256 + n;
    if (part < 3) {
      if (i >= end || s.charCodeAt(i) !== CH_DOT) return -1;
      i++;
    }
  }
  return i === end ? value : -1;
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/**
 * Parses strict dotted-quad IPv4 text into an unsigned 32-bit number, or -1.
 *
 * @example
 * parseIpv4Value('198.18.0.1'); // 0xc6120001
 * parseIpv4Value('0177.0.0.1'); // -1 (leading zero)
 */
export function parseIpv4Value(text: string): number {
  return scanV4(text, 0, text.length);
}

/**
 * Parses IPv6 text (RFC 4291 §2.2, no zone id, no brackets) into 8 16-bit words, or null.
 *
 * @example
 * parseIpv6Words('::ffff:1.2.3.4'); // [0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304]
 */
export function parseIpv6Words(s: string): number[] | null {
  const n = s.length;
  if (n < 2 || n > MAX_IPV6_TEXT) return null;
  const words: number[] = [];
  let gap = -1; // index in `words` where "::" stands
  let i = 0;
  if (s.charCodeAt(0) === CH_COLON) {
    if (s.charCodeAt(1) !== CH_COLON) return null;
    gap = 0;
    i = 2;
  }
  while (i < n) {
    let v = 0;
    let digits = 0;
    let j = i;
    while (j < n) {
      const h = hexValue(s.charCodeAt(j));
      if (h < 0) break;
      v = v * 16 + h;
      digits++;
      j++;
    }
    if (j < n && s.charCodeAt(j) === CH_DOT) {
      // A trailing dotted quad stands for the last two words.
      const v4 = scanV4(s, i, n);
      if (v4 < 0 || words.length > 6) return null;
      words.push(v4 >>> 16, v4 & 0xffff);
      i = n;
      break;
    }
    if (digits === 0 || digits > 4) return null;
    words.push(v);
    i = j;
    if (i === n) break;
    if (s.charCodeAt(i) !== CH_COLON) return null;
    i++;
    if (i === n) return null; // a single trailing colon
    if (s.charCodeAt(i) === CH_COLON) {
      if (gap !== -1) return null; // two "::"
      gap = words.length;
      i++;
    }
  }
  if (words.length > 8) return null;
  if (gap === -1) return words.length === 8 ? words : null;
  if (words.length > 7) return null; // "::" stands for at least one group
  const fill = 8 - words.length;
  const out = words.slice(0, gap);
  for (let k = 0; k < fill; k++) out.push(0);
  for (let k = gap; k < words.length; k++) out.push(words[k]!);
  return out;
}

/** Formats an unsigned 32-bit IPv4 value as a dotted quad. */
export function formatIpv4Value(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}

/**
 * Formats 8 16-bit words as IPv6 text (RFC 5952 §4, with §5's dotted quad
 * for IPv4-mapped and IPv4-compatible addresses; see the module comment).
 *
 * @example
 * formatIpv6Words([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]); // '2001:db8::1'
 * formatIpv6Words([0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304]); // '::ffff:1.2.3.4'
 */
export function formatIpv6Words(w: readonly number[]): string {
  let bestStart = -1;
  let bestLen = 1; // a single zero group is not compressed (RFC 5952 §4.2.2)
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      out += '::';
      i += bestLen - 1;
      continue;
    }
    if (out !== '' && !out.endsWith(':')) out += ':';
    if (i === 6 && bestStart === 0 && (bestLen === 6 || (bestLen === 5 && w[5] === 0xffff))) {
      out += formatIpv4Value(((w[6]! << 16) | w[7]!) >>> 0);
      break;
    }
    out += w[i]!.toString(16);
  }
  return out;
}

/** Parses dotted-quad IPv4 text into 4 bytes, or null. Leading zeros are refused (they mean octal to some parsers). */
export function parseIpv4(text: string): Uint8Array | null {
  const v = parseIpv4Value(text);
  if (v < 0) return null;
  return new Uint8Array([v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff]);
}

/** Parses IPv6 text (with `::` and an optional trailing dotted quad; no zone id) into 16 bytes, or null. */
export function parseIpv6(text: string): Uint8Array | null {
  const w = parseIpv6Words(text);
  if (!w) return null;
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[i * 2] = w[i]! >> 8;
    out[i * 2 + 1] = w[i]! & 0xff;
  }
  return out;
}

/** Parses IPv4 or IPv6 text into 4 or 16 bytes, or null. */
export function parseIp(text: string): Uint8Array | null {
  return text.includes(':') ? parseIpv6(text) : parseIpv4(text);
}

/** Formats 4 or 16 bytes as text (see the module comment for the exact form). */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push((bytes[i * 2]! << 8) | bytes[i * 2 + 1]!);
  return formatIpv6Words(w);
}
