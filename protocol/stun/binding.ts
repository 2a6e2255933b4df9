/**
 * The Binding transaction (RFC 8489 §3, §6): the one encoder of a Binding request and the one
 * reader of its response that every client here uses (cli netcheck, the client's relay probe,
 * `npm start`'s readiness check, bench and tests). Portable.
 *
 * A request is the 20-byte header (§5: type 0x0001, length, magic cookie, 96-bit transaction
 * id) with, optionally, FINGERPRINT (§14.7), which lets a server on a shared port tell STUN from
 * other traffic. The response that matters is any response class carrying the same transaction
 * id (§6.3.1: the id is how a client matches responses to requests); a success response reports
 * the client's reflexive address in XOR-MAPPED-ADDRESS (§14.2).
 */
import { StunClass, StunMethod, TRANSACTION_ID_LENGTH } from './constants.js';
import { readResponse } from './client.js';
import type { TransportAddress } from './attributes.js';
import { decodeStun, StunWriter } from './message.js';

/**
 * Encodes a Binding request with `transactionId` (12 random bytes, RFC 8489 §5: from a
 * cryptographically strong source, so off-path attackers cannot forge answers).
 * @example
 * const tid = crypto.getRandomValues(new Uint8Array(12));
 * socket.send(encodeBindingRequest(tid, { fingerprint: true }));
 */
export function encodeBindingRequest(transactionId: Uint8Array, opts: { fingerprint?: boolean } = {}): Uint8Array {
  const w = new StunWriter(StunMethod.Binding, StunClass.Request, transactionId);
  if (opts.fingerprint) w.addFingerprint();
  return w.finish();
}

/** A Binding response to our request: success with the reflexive address, or an error response. */
export type BindingResponse =
  | { readonly ok: true; readonly mapped: TransportAddress | null }
  | { readonly ok: false; readonly code: number | null };

/**
 * Reads `bytes` as the response to the Binding request with `transactionId`. Returns null for
 * anything else (not STUN, malformed, a request or indication, another method, another id), so
 * a socket can hand it every datagram it receives.
 */
export function readBindingResponse(bytes: Uint8Array, transactionId: Uint8Array): BindingResponse | null {
  if (transactionId.length !== TRANSACTION_ID_LENGTH) return null;
  const d = decodeStun(bytes);
  if (!d.ok) return null;
  const m = d.value;
  if (m.method !== StunMethod.Binding || (m.cls !== StunClass.SuccessResponse && m.cls !== StunClass.ErrorResponse)) return null;
  for (let i = 0; i < TRANSACTION_ID_LENGTH; i++) if (m.transactionId[i] !== transactionId[i]) return null;
  const r = readResponse(m);
  return m.cls === StunClass.SuccessResponse ? { ok: true, mapped: r.mapped } : { ok: false, code: r.code };
}
