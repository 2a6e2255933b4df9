/**
 * The wire format of the application channel protocols the `homelink` command (cli/) and the
 * demo page (web/app.ts) speak over a link, defined once in the shared wire contract so neither
 * imports the other. Portable: no Node import (web/bundle.ts refuses one).
 *
 * `stdio` (`homelink listen` / `dial`, cli/link-commands.ts): one reliable, ordered channel opened
 * by the dialer. Binary messages are data; the text message {@link EOF_FRAME} ends one direction,
 * like a TCP half-close.
 *
 * `file` (`homelink send` / `receive`, cli/file-commands.ts): one reliable, ordered channel opened
 * by the sender:
 *
 *   sender   -> {"t":"offer","name":"photo.jpg","size":12345}
 *   receiver -> {"t":"accept","offset":0}   (offset > 0: it kept a partial file; resume there)
 *            |  {"t":"reject","reason":"..."}
 *   sender   -> binary chunks, from offset to size
 *   sender   -> {"t":"end","sha256":"<hex of the whole file>"}
 *   receiver -> {"t":"result","ok":true|false}
 *
 * `ping` (`homelink ping`, cli/ping-command.ts): an unordered channel without retransmissions
 * opened by the pinger (a lost probe is a lost probe, not a late one). It sends {@link PING_PREFIX}
 * followed by a sequence number; every CLI endpoint that accepts links (`listen`, `receive`)
 * echoes each such message unchanged, and nothing else.
 */

/** Label of the netcat channel. */
export const STDIO_LABEL = 'stdio';
/** Label of the file channel. */
export const FILE_LABEL = 'file';
/** Largest data message: 16 KiB interoperates with every SCTP stack, browsers included (RFC 8831 §6.6). */
export const CHUNK_BYTES = 16 * 1024;
/** The text message that ends one direction of a `stdio` channel. */
export const EOF_FRAME = '{"t":"eof"}';
/** Label of the ping channel. */
export const PING_LABEL = 'ping';
/** Every ping probe starts with this; the rest is the sender's sequence number. */
export const PING_PREFIX = 'ping ';
/** Longest probe echoed: a prefix and a number. Anything else on the channel is ignored. */
export const MAX_PING_CHARS = 32;

/** True for a probe the answering side echoes (`ping 17`). */
export function isPingProbe(m: Uint8Array | string): m is string {
  return typeof m === 'string' && m.length <= MAX_PING_CHARS && m.startsWith(PING_PREFIX) && /^\d{1,15}$/.test(m.slice(PING_PREFIX.length));
}

/** Control messages are tiny; anything longer is refused unparsed. */
export const MAX_CONTROL_BYTES = 1024;
/** Longest REJECT reason accepted from a peer. */
const MAX_REASON_CHARS = 200;

/** A control message of the `file` protocol. */
export type Control =
  | { t: 'offer'; name: string; size: number }
  | { t: 'accept'; offset: number }
  | { t: 'reject'; reason: string }
  | { t: 'end'; sha256: string }
  | { t: 'result'; ok: boolean };

/**
 * Parses a control message from the peer. Returns null for anything malformed: a peer is
 * untrusted input (size-bounded, every field checked, no prototype keys used).
 * @example
 * const c = parseControl('{"t":"accept","offset":0}'); // { t: 'accept', offset: 0 }
 */
export function parseControl(m: string): Control | null {
  if (m.length > MAX_CONTROL_BYTES) return null;
  let v: unknown;
  try {
    v = JSON.parse(m);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
  const o = v as Record<string, unknown>;
  const isSize = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
  switch (o['t']) {
    case 'offer':
      return typeof o['name'] === 'string' && isSize(o['size']) ? { t: 'offer', name: o['name'], size: o['size'] } : null;
    case 'accept':
      return isSize(o['offset']) ? { t: 'accept', offset: o['offset'] } : null;
    case 'reject':
      return typeof o['reason'] === 'string' && o['reason'].length <= MAX_REASON_CHARS ? { t: 'reject', reason: o['reason'] } : null;
    case 'end':
      return typeof o['sha256'] === 'string' && /^[0-9a-f]{64}$/.test(o['sha256']) ? { t: 'end', sha256: o['sha256'] } : null;
    case 'result':
      return typeof o['ok'] === 'boolean' ? { t: 'result', ok: o['ok'] } : null;
    default:
      return null;
  }
}

/** `1.5 MiB` style sizes, as both ends of the file protocol show them to people. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}
