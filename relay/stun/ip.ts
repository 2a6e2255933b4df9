/**
 * IP address text <-> bytes for the address attributes (RFC 8489 §14.2).
 * Formatting follows RFC 5952 in the variant Node/libuv print (`inet_ntop`):
 * lowercase, the longest run of two or more zero groups compressed, and an
 * embedded dotted quad for IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible
 * (::a.b.c.d) addresses, so a formatted address equals the `rinfo.address`
 * Node reports for the same peer and can be used as a map key.
 */

/** Parses dotted-quad IPv4 text into 4 bytes, or null. Leading zeros are refused (they mean octal to some parsers). */
export function parseIpv4(text: string): Uint8Array | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^(0|[1-9]\d{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

/** Parses IPv6 text (with `::` and an optional trailing dotted quad; no zone id) into 16 bytes, or null. */
export function parseIpv6(text: string): Uint8Array | null {
  if (text.length < 2 || text.length > 45) return null;
  let head = text;
  let tail4: Uint8Array | null = null;
  const lastColon = text.lastIndexOf(':');
  if (text.indexOf('.', lastColon) !== -1) {
    tail4 = parseIpv4(text.slice(lastColon + 1));
    if (!tail4) return null;
    head = text.slice(0, lastColon + 1) + '0:0';
  }
  const dbl = head.indexOf('::');
  if (dbl !== -1 && head.indexOf('::', dbl + 1) !== -1) return null;
  const groups: number[] = [];
  const parseGroups = (s: string): boolean => {
    if (s === '') return true;
    for (const g of s.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return false;
      groups.push(parseInt(g, 16));
    }
    return true;
  };
  let words: number[];
  if (dbl === -1) {
    if (!parseGroups(head) || groups.length !== 8) return null;
    words = groups;
  } else {
    const left: number[] = [];
    if (!parseGroups(head.slice(0, dbl))) return null;
    left.push(...groups.splice(0));
    if (!parseGroups(head.slice(dbl + 2))) return null;
    const right = groups.splice(0);
    if (left.length + right.length > 7) return null;
    words = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[i * 2] = words[i]! >> 8;
    out[i * 2 + 1] = words[i]! & 0xff;
  }
  if (tail4) out.set(tail4, 12);
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
  let bestBase = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      bestBase = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) bestBase = -1;
  let s = '';
  for (let i = 0; i < 8; i++) {
    if (bestBase !== -1 && i >= bestBase && i < bestBase + bestLen) {
      if (i === bestBase) s += ':';
      continue;
    }
    if (i > 0) s += ':';
    if (i === 6 && bestBase === 0 && (bestLen === 6 || (bestLen === 5 && w[5] === 0xffff))) {
      s += `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
      break;
    }
    s += w[i]!.toString(16);
  }
  if (bestBase !== -1 && bestBase + bestLen === 8) s += ':';
  return s;
}
