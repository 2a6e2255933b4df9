/**
 * Room tickets: a session's members and deadline, signed by the service, so a room can rebuild
 * itself without a stored record (issue 10 item 4: the room's row was the last storage write of
 * every exchange).
 *
 *   ticket = base64url(JSON [initiator, responder, deadline]) "." base64url(HMAC-SHA256(k, sessionId "." payload))
 *   k      = HMAC-SHA256(TURN secret, "homelink room ticket v1")
 *
 * The presence objects issue one to both sides in `session` when both declared the `ticket`
 * capability; the clients join with it. The room trusts a ticket only for the session id it is
 * named by and only for a joiner the ticket names (the Worker verified the joiner's token), and
 * only before the deadline. It adds nothing an attacker could use: a forged ticket still needs a
 * member's token and the session's id, which only the two members were told.
 *
 * The key is derived from the TURN secrets (signed with the first, checked against each, so the
 * rotation in docs/DEPLOY.md covers tickets too), under a label of its own: a ticket MAC is never
 * a TURN password. Portable: WebCrypto only.
 */
import { ENDPOINT_ID_RE } from '../protocol/turn-credentials.js';
import { MAX_TICKET_CHARS, TICKET_RE } from '../protocol/messages.js';
import type { RoomMeta } from './room-rules.js';

const LABEL = 'homelink room ticket v1';
const encoder = new TextEncoder();

/** Keys by secret, per isolate: deriving one costs two WebCrypto calls. */
const keys = new Map<string, Promise<CryptoKey>>();

function keyFor(secret: string): Promise<CryptoKey> {
  let k = keys.get(secret);
  if (!k) {
    k = (async () => {
      const outer = await crypto.subtle.importKey('raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
      const raw = await crypto.subtle.sign('HMAC', outer, encoder.encode(LABEL));
      return crypto.subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
    })();
    keys.set(secret, k);
  }
  return k;
}

function toB64url(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function fromB64url(s: string): Uint8Array<ArrayBuffer> | null {
  try {
    const bin = atob(s.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (s.length % 4)) % 4));
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch {
    return null;
  }
}

const signed = (sessionId: string, payload: string): Uint8Array<ArrayBuffer> => new Uint8Array(encoder.encode(`${sessionId}.${payload}`));

/**
 * The ticket for `meta`, signed with the first secret.
 * @example
 * const ticket = await signTicket(config.turnSecrets, { sessionId, initiator: 'app-1', responder: 'hub-1', deadline });
 */
export async function signTicket(secrets: readonly string[], meta: RoomMeta): Promise<string> {
  const payload = toB64url(encoder.encode(JSON.stringify([meta.initiator, meta.responder, meta.deadline])));
  const mac = await crypto.subtle.sign('HMAC', await keyFor(secrets[0]!), signed(meta.sessionId, payload));
  return `${payload}.${toB64url(new Uint8Array(mac))}`;
}

/**
 * The meta a ticket vouches for in session `sessionId`, or null when it is malformed, oversized,
 * or not signed for this session with any of `secrets`. Never throws. Whether the joiner is a
 * member and the deadline still ahead is for the caller (the room's rules) to decide.
 */
export async function readTicket(secrets: readonly string[], sessionId: string, ticket: string): Promise<RoomMeta | null> {
  if (ticket.length > MAX_TICKET_CHARS || !TICKET_RE.test(ticket)) return null;
  const dot = ticket.indexOf('.');
  const payload = ticket.slice(0, dot);
  const mac = fromB64url(ticket.slice(dot + 1));
  if (mac === null || mac.length !== 32) return null;
  let ok = false;
  for (const secret of secrets) {
    if (await crypto.subtle.verify('HMAC', await keyFor(secret), mac, signed(sessionId, payload))) {
      ok = true;
      break;
    }
  }
  if (!ok) return null;
  const bytes = fromB64url(payload);
  if (bytes === null) return null;
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes));
  } catch {
    return null;
  }
  if (!Array.isArray(v) || v.length !== 3) return null;
  const [initiator, responder, deadline] = v as unknown[];
  if (typeof initiator !== 'string' || !ENDPOINT_ID_RE.test(initiator) || typeof responder !== 'string' || !ENDPOINT_ID_RE.test(responder)) return null;
  if (initiator === responder || typeof deadline !== 'number' || !Number.isSafeInteger(deadline) || deadline <= 0) return null;
  return { sessionId, initiator, responder, deadline };
}
