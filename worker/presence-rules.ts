/**
 * Pure rules of the presence objects: who may reach whom, the records a pending connection
 * request leaves on each side, and when each record expires. worker/presence.ts is the driver.
 *
 * A request lives on both sides until it is answered, cancelled or expires:
 *   initiator side  `Dial`      (out:<reqId>)   pending -> ringing (delivered to the target)
 *   target side     `Incoming`  (in:<targetReqId>) held (target offline) -> delivered
 * The initiator side owns the outcome: it alone sends `dial_failed`, so an unreachable target
 * (offline, unknown, or not allowed) always yields `dial_failed{peer_offline}` at the same moment,
 * `offlineAt`, whatever the target side did.
 */

/** Pending outgoing requests per endpoint: a person dials a handful of devices, not hundreds. */
export const MAX_PENDING_DIALS = 16;
/** Requests held for one offline target: beyond this they are dropped, which looks like offline. */
export const MAX_HELD_REQUESTS = 64;

export interface Dial {
  readonly reqId: string;
  readonly to: string;
  readonly sessionId: string;
  /** The target's presence socket has the request. */
  readonly ringing: boolean;
  /** Unix ms: if not ringing by then, `dial_failed{peer_offline}`. */
  readonly offlineAt: number;
  /** Unix ms: if not answered by then, `dial_failed{timeout}`. */
  readonly timeoutAt: number;
}

export interface Incoming {
  /** The id the target answers with; chosen by the service so initiators cannot collide. */
  readonly reqId: string;
  readonly from: string;
  readonly fromHomes: readonly string[];
  readonly initiatorReqId: string;
  readonly sessionId: string;
  readonly delivered: boolean;
  readonly offlineAt: number;
  readonly timeoutAt: number;
}

export interface SessionRecord {
  readonly sessionId: string;
  readonly peer: string;
  readonly role: 'initiator' | 'responder';
  readonly deadline: number;
}

/** Two endpoints may connect when their signed `homes` claims share at least one id. */
export function mayConnect(a: readonly string[], b: readonly string[]): boolean {
  const set = new Set(a);
  return b.some((h) => set.has(h));
}

export type DialOutcome = 'peer_offline' | 'timeout' | null;

/** What became of a dial at `now`: failed (and why) or still pending. */
export function dialOutcome(d: Dial, now: number): DialOutcome {
  if (now >= d.timeoutAt) return 'timeout';
  if (!d.ringing && now >= d.offlineAt) return 'peer_offline';
  return null;
}

/** An incoming request is dead once its initiator has given up on it. */
export function incomingExpired(r: Incoming, now: number): boolean {
  return now >= r.timeoutAt || (!r.delivered && now >= r.offlineAt);
}

/** The next moment any record needs attention, or null when none does. */
export function nextWake(dials: readonly Dial[], incoming: readonly Incoming[], sessions: readonly SessionRecord[]): number | null {
  const times: number[] = [];
  for (const d of dials) times.push(d.ringing ? d.timeoutAt : Math.min(d.offlineAt, d.timeoutAt));
  for (const r of incoming) times.push(r.delivered ? r.timeoutAt : Math.min(r.offlineAt, r.timeoutAt));
  for (const s of sessions) times.push(s.deadline);
  return times.length === 0 ? null : Math.min(...times);
}

const ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** A random url-safe id (132 bits in 22 characters) from the given random bytes source. */
export function randomId(random: (n: number) => Uint8Array): string {
  const bytes = random(22);
  let s = '';
  for (const b of bytes) s += ID_ALPHABET[b & 63];
  return s;
}
