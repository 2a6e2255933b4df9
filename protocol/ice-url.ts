/**
 * The one parser of ICE server URLs: `stun:`/`stuns:` (RFC 7064 §3.1) and `turn:`/`turns:`
 * (RFC 7065 §3.1), as the signaling service hands them out and as applications configure them.
 * Used by the client (relay probe, path classification, the werift adapter) and the tools.
 * Portable.
 *
 *   stunURI = ("stun" / "stuns") ":" host [ ":" port ]
 *   turnURI = ("turn" / "turns") ":" host [ ":" port ] [ "?transport=" ("udp" / "tcp") ]
 *
 * `turns:` runs TLS over TCP (`?transport=udp` would be DTLS, which nothing here speaks: refused).
 * A `?transport` on `stun:` is not in RFC 7064 but some services add it; it is accepted and
 * names the transport the same way.
 */
import { parseIpv4, parseIpv6 } from './stun/ip.js';

/** How a client reaches the server. */
export type IceTransport = 'udp' | 'tcp' | 'tls';

/** A parsed ICE server URL. */
export interface IceUrl {
  /** `stun` or `turn`: whether the server relays (TURN) or only answers Binding requests. */
  readonly kind: 'stun' | 'turn';
  readonly transport: IceTransport;
  /** Host name (lower-cased) or IP literal, IPv6 without brackets. */
  readonly host: string;
  readonly port: number;
}

/** RFC 7064 §3.2 / RFC 7065 §3.2: the default port of stun:/turn: (3478) and stuns:/turns: (5349). */
export const DEFAULT_ICE_PORT = 3478;
export const DEFAULT_ICE_TLS_PORT = 5349;
/** Longest URL looked at: a 253-character DNS name plus scheme, port and query fit well inside. */
export const MAX_ICE_URL_LENGTH = 512;

const URL_RE = /^(stuns?|turns?):(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,253})(?::(\d{1,5}))?(?:\?transport=(udp|tcp))?$/i;
/** RFC 1123 host names: labels of letters, digits and inner hyphens, 63 characters at most. */
const LABEL_RE = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * Parses one ICE server URL; null for anything that is not a well-formed stun/turn URL.
 * @example
 * parseIceUrl('turn:relay.example.net:3478?transport=tcp'); // { kind: 'turn', transport: 'tcp', host: 'relay.example.net', port: 3478 }
 * parseIceUrl('turns:[2001:db8::1]');                       // { kind: 'turn', transport: 'tls', host: '2001:db8::1', port: 5349 }
 */
export function parseIceUrl(url: string): IceUrl | null {
  if (typeof url !== 'string' || url.length > MAX_ICE_URL_LENGTH) return null;
  const m = URL_RE.exec(url.trim());
  if (!m) return null;
  const scheme = m[1]!.toLowerCase();
  const secure = scheme.endsWith('s');
  const query = m[4]?.toLowerCase() as 'udp' | 'tcp' | undefined;
  if (secure && query === 'udp') return null;
  let host = m[2]!;
  if (host.startsWith('[')) {
    host = host.slice(1, -1);
    if (!parseIpv6(host)) return null;
    host = host.toLowerCase();
  } else {
    host = host.toLowerCase();
    const ipv4ish = /^[0-9.]+$/.test(host);
    if (ipv4ish ? !parseIpv4(host) : !host.replace(/\.$/, '').split('.').every((l) => LABEL_RE.test(l))) return null;
  }
  const port = m[3] !== undefined ? Number(m[3]) : secure ? DEFAULT_ICE_TLS_PORT : DEFAULT_ICE_PORT;
  if (port < 1 || port > 65535) return null;
  return { kind: scheme.startsWith('stun') ? 'stun' : 'turn', transport: secure ? 'tls' : (query ?? 'udp'), host, port };
}
