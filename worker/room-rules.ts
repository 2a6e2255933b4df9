/**
 * The rules of a per-pair room, sans-IO: `step(state, event)` returns the next state and the
 * actions the Durable Object driver (worker/room.ts) carries out. No sockets, storage or clocks here.
 *
 * Lifecycle:
 *   init (by the service on accept: the two endpoint ids and a deadline)
 *   -> join (either side, any order; a second socket of the same side replaces the first)
 *   -> signal frames relayed to the other side in order, each with a per-recipient `seq`;
 *      while the other side is absent they are buffered (bounded) and delivered on its join
 *   -> `renew` while both sides are connected (and authenticated) moves the deadline on
 *   -> `bye` from either side, or the deadline, ends the room (`closed` to both): the deadline
 *      by the alarm, or by the first event after it where the room stores nothing and so
 *      sets no alarm (worker/room.ts)
 *   -> when both sides have left, or it ended, the room is deleted after a short grace.
 *
 * Who is present is not part of the state: the driver derives it from the object's open
 * WebSockets and passes it in, so the rules work unchanged after hibernation.
 */
import type { ErrorCode, RoomClientMessage, RoomServerMessage, Role, SignalData } from '../protocol/messages.js';

/** An offer, an answer and ~100 trickled candidates fit; more means the peer is not coming. */
export const MAX_BUFFERED_SIGNALS = 256;
/** Bytes of buffered signal JSON per recipient: several SDPs plus candidates, far below DO value limits. */
export const MAX_BUFFERED_BYTES = 256 * 1024;

/**
 * Seq numbers a connected recipient's socket attachment reserves at a time. Writing the counter
 * to the attachment is a structured-clone write in the runtime (0.5 ms of isolate CPU per
 * exchange when done per relayed signal, docs/BENCHMARKS.md), so the attachment holds a lease:
 * no seq at or above it has been handed out. A rebuilt instance (after hibernation or eviction)
 * goes on from the lease, so numbers stay strictly increasing per recipient and are never
 * reused; after a rebuild they skip ahead by at most `SEQ_LEASE - 1`. A join writes the exact
 * counter (nothing reserved: a side that was sent nothing still starts at 1), the first signal
 * after it reserves a block. 32 covers an exchange (offer, answer, identity and ~25 trickled
 * candidates each way) with one attachment write per recipient instead of one per signal.
 */
export const SEQ_LEASE = 32;

/**
 * The lease to write on a recipient's socket after a signal, or null when the one it has still
 * covers: `next` is the next seq to hand out (every seq below it may have been sent), `leased`
 * the socket's lease.
 *
 * @example
 * seqLease(2, 1); // 33: seq 1 went out, 1..32 are reserved
 * seqLease(5, 33); // null: still covered
 * seqLease(34, 33); // 65
 */
export function seqLease(next: number, leased: number | undefined): number | null {
  return leased !== undefined && next <= leased ? null : next - 1 + SEQ_LEASE;
}

export type EndReason = 'deadline' | 'bye' | 'ended';

/** What the room was created with. */
export interface RoomMeta {
  readonly sessionId: string;
  readonly initiator: string;
  readonly responder: string;
  /** Unix ms. */
  readonly deadline: number;
  /**
   * Present when the room was created from a ticket (worker/ticket.ts): the deadline the members'
   * tickets vouch for. Such a room stores its record only when it knows more than the tickets do
   * (worker/room.ts `persist`); the rules themselves do not look at it.
   */
  readonly ticketDeadline?: number;
}

export interface BufferedSignal {
  readonly seq: number;
  readonly data: SignalData;
  readonly bytes: number;
}

export interface RoomState {
  readonly meta: RoomMeta | null;
  readonly ended: EndReason | null;
  /** Next seq to hand out per recipient. */
  readonly nextSeq: Readonly<Record<string, number>>;
  /** Signals waiting for their recipient, per recipient, in order. */
  readonly buffer: Readonly<Record<string, readonly BufferedSignal[]>>;
  /**
   * Unix ms before which the room must not be deleted: one grace after it was created, became
   * empty, or ended with a side away (that side learns `closed` on a rejoin within the grace).
   * Null when nothing holds it (someone is present, or both sides were told of `bye`); undefined
   * when unknown (in memory only: a rebuilt instance starts without it). The driver keeps one
   * alarm and moves it only earlier (each move is a storage write), so an alarm may fire before
   * this; the rules then wait (see `alarm`).
   */
  readonly hold?: number | null;
}

export const emptyRoom = (): RoomState => ({ meta: null, ended: null, nextSeq: {}, buffer: {}, hold: null });

export type RoomEvent =
  | { readonly type: 'init'; readonly meta: RoomMeta; readonly now: number }
  | { readonly type: 'join'; readonly endpoint: string; readonly present: readonly string[]; readonly now: number }
  | { readonly type: 'leave'; readonly endpoint: string; readonly present: readonly string[]; readonly now: number }
  | {
      readonly type: 'message';
      readonly endpoint: string;
      readonly message: RoomClientMessage;
      readonly present: readonly string[];
      readonly now: number;
    }
  | { readonly type: 'alarm'; readonly present: readonly string[]; readonly now: number }
  /**
   * `renew` from `endpoint`. `fresh`: the members connected now whose tokens have not expired;
   * `ttlMs`: the session lifetime a renewal grants from `now`.
   */
  | {
      readonly type: 'renew';
      readonly endpoint: string;
      readonly fresh: readonly string[];
      readonly present: readonly string[];
      readonly ttlMs: number;
      readonly now: number;
    };

export type RoomAction =
  /** Send a frame to every open socket of `to`. */
  | { readonly type: 'send'; readonly to: string; readonly message: RoomServerMessage }
  /** Send `joined` with freshly minted ICE servers for `to`. */
  | {
      readonly type: 'send_joined';
      readonly to: string;
      readonly role: Role;
      readonly peer: string;
      readonly peerPresent: boolean;
      readonly deadline: number;
    }
  /** Send `ice_servers` with freshly minted ICE servers for `to`. */
  | { readonly type: 'send_ice_servers'; readonly to: string }
  /** Send `renewed` with the deadline and freshly minted ICE servers for `to`. */
  | { readonly type: 'send_renewed'; readonly to: string; readonly deadline: number }
  /** Send an `error` frame to the socket the event came from. */
  | { readonly type: 'error'; readonly code: ErrorCode; readonly message: string }
  /** Close every socket of `to` (or the joining socket, when `to` is null). */
  | { readonly type: 'close'; readonly to: string | null; readonly code: number; readonly reason: string }
  /**
   * Persist what changed and must survive without sockets (the driver decides where: storage
   * rows, or a connected member's socket attachment for its seq counter).
   */
  | { readonly type: 'persist' }
  | { readonly type: 'set_alarm'; readonly at: number }
  /** Delete everything: the room is over. */
  | { readonly type: 'delete' };

export interface Step {
  readonly state: RoomState;
  readonly actions: RoomAction[];
}

/** WebSocket close codes (RFC 6455 §7.4.1). */
export const CLOSE_NORMAL = 1000;
/** The endpoint went away: its socket was silent past the staleness bound. */
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_POLICY = 1008;

const other = (m: RoomMeta, e: string): string => (e === m.initiator ? m.responder : m.initiator);
const roleOf = (m: RoomMeta, e: string): Role => (e === m.initiator ? 'initiator' : 'responder');
const isMember = (m: RoomMeta, e: string): boolean => e === m.initiator || e === m.responder;

/** When to wake next: the deadline, or sooner when nobody is present (to delete after `graceMs`). */
export function alarmAt(s: RoomState, present: readonly string[], now: number, graceMs: number): number {
  const deadline = s.meta?.deadline ?? now;
  if (s.ended !== null || present.length === 0) return Math.min(deadline, now + graceMs);
  return deadline;
}

/**
 * Applies one event. Invalid events (a stranger joining, a message out of state) leave the
 * state as it was and yield an `error` or `close` action only.
 *
 * @param graceMs how long an empty or ended room waits before it is deleted.
 * @example
 * const { state, actions } = step(emptyRoom(), { type: 'init', meta, now: Date.now() }, 15_000);
 */
export function step(s: RoomState, ev: RoomEvent, graceMs: number): Step {
  // Past the deadline every event ends the room as its alarm would: a room that stores nothing
  // sets no alarm (worker/room.ts `setAlarm`), so its first event after the deadline closes it.
  if (ev.type !== 'init' && ev.type !== 'alarm' && s.meta !== null && isMember(s.meta, ev.endpoint) && ev.now >= s.meta.deadline) {
    return expire(s, s.meta, ev.present);
  }
  switch (ev.type) {
    case 'init': {
      if (s.meta !== null) {
        // Idempotent for the same session (a retried init); anything else is refused.
        const same = s.meta.sessionId === ev.meta.sessionId && s.meta.initiator === ev.meta.initiator && s.meta.responder === ev.meta.responder;
        return { state: s, actions: same ? [] : [{ type: 'error', code: 'out_of_state', message: 'room already initialised' }] };
      }
      const state: RoomState = {
        meta: ev.meta,
        ended: null,
        nextSeq: { [ev.meta.initiator]: 1, [ev.meta.responder]: 1 },
        buffer: { [ev.meta.initiator]: [], [ev.meta.responder]: [] },
        hold: ev.now + graceMs,
      };
      return { state, actions: [{ type: 'persist' }, { type: 'set_alarm', at: Math.min(ev.meta.deadline, ev.now + graceMs) }] };
    }
    case 'join': {
      const m = s.meta;
      if (m === null || !isMember(m, ev.endpoint)) {
        // A stranger, or a session that never existed or is gone: indistinguishable on purpose.
        return { state: s, actions: [{ type: 'close', to: null, code: CLOSE_POLICY, reason: 'not a member of this session' }] };
      }
      if (s.ended !== null) {
        // A side that was away when the peer said bye hears that bye first: it carries the
        // peer's reason (a dialer whose budget ran out says Timeout, and the answering side then
        // fails the same way instead of with a bare "room closed"). The rest of what waited for
        // it (offers, candidates) is of no use any more.
        // Nothing is buffered after a bye (signals to an ended room are refused), so it is the last.
        const last = s.buffer[ev.endpoint]?.at(-1);
        const bye = last?.data.kind === 'bye' ? last : undefined;
        return {
          state: s,
          actions: [
            ...(bye ? [{ type: 'send', to: ev.endpoint, message: { type: 'signal', seq: bye.seq, data: bye.data } } as const] : []),
            { type: 'send', to: ev.endpoint, message: { type: 'closed', reason: s.ended } },
            { type: 'close', to: ev.endpoint, code: CLOSE_NORMAL, reason: 'room closed' },
          ],
        };
      }
      const peer = other(m, ev.endpoint);
      const peerPresent = ev.present.includes(peer);
      const actions: RoomAction[] = [
        { type: 'send_joined', to: ev.endpoint, role: roleOf(m, ev.endpoint), peer, peerPresent, deadline: m.deadline },
      ];
      const waiting = s.buffer[ev.endpoint] ?? [];
      for (const b of waiting) actions.push({ type: 'send', to: ev.endpoint, message: { type: 'signal', seq: b.seq, data: b.data } });
      if (peerPresent) actions.push({ type: 'send', to: peer, message: { type: 'peer_joined' } });
      // Someone is present: nothing holds the room back from deletion any more (see `hold`).
      const state: RoomState = { ...s, hold: null, ...(waiting.length > 0 ? { buffer: { ...s.buffer, [ev.endpoint]: [] } } : {}) };
      if (waiting.length > 0) actions.push({ type: 'persist' });
      actions.push({ type: 'set_alarm', at: alarmAt(state, ev.present, ev.now, graceMs) });
      return { state, actions };
    }
    case 'leave': {
      const m = s.meta;
      if (m === null || !isMember(m, ev.endpoint)) return { state: s, actions: [] };
      const actions: RoomAction[] = [];
      // `present` is who is still there after this socket went away.
      if (s.ended === null && !ev.present.includes(ev.endpoint) && ev.present.includes(other(m, ev.endpoint))) {
        actions.push({ type: 'send', to: other(m, ev.endpoint), message: { type: 'peer_left' } });
      }
      // The leaver's seq counter was on its socket: the driver keeps it if the room goes on.
      if (s.ended === null && !ev.present.includes(ev.endpoint)) actions.push({ type: 'persist' });
      actions.push({ type: 'set_alarm', at: alarmAt(s, ev.present, ev.now, graceMs) });
      // The last one out starts the grace.
      const state = s.ended === null && ev.present.length === 0 ? { ...s, hold: ev.now + graceMs } : s;
      return { state, actions };
    }
    case 'message': {
      const m = s.meta;
      if (m === null || !isMember(m, ev.endpoint)) {
        return { state: s, actions: [{ type: 'close', to: null, code: CLOSE_POLICY, reason: 'not a member of this session' }] };
      }
      if (s.ended !== null) return { state: s, actions: [{ type: 'error', code: 'out_of_state', message: 'room has closed' }] };
      if (ev.message.type === 'ice_servers') return { state: s, actions: [{ type: 'send_ice_servers', to: ev.endpoint }] };
      // The driver turns `renew` into its own event (it needs who is authenticated now).
      if (ev.message.type === 'renew') return { state: s, actions: [{ type: 'error', code: 'internal', message: 'renew arrived as a signal' }] };
      const peer = other(m, ev.endpoint);
      const data = ev.message.data;
      const seq = s.nextSeq[peer] ?? 1;
      const actions: RoomAction[] = [];
      let buffer = s.buffer;
      if (ev.present.includes(peer)) {
        actions.push({ type: 'send', to: peer, message: { type: 'signal', seq, data } });
      } else {
        const queued = s.buffer[peer] ?? [];
        const bytes = JSON.stringify(data).length;
        const used = queued.reduce((n, b) => n + b.bytes, 0);
        if (queued.length >= MAX_BUFFERED_SIGNALS || used + bytes > MAX_BUFFERED_BYTES) {
          return { state: s, actions: [{ type: 'error', code: 'rate_limited', message: 'peer has not joined and its buffer is full' }] };
        }
        buffer = { ...s.buffer, [peer]: [...queued, { seq, data, bytes }] };
      }
      let state: RoomState = { ...s, nextSeq: { ...s.nextSeq, [peer]: seq + 1 }, buffer };
      if (data.kind === 'bye') {
        state = { ...state, ended: 'bye' };
        for (const e of [m.initiator, m.responder]) {
          if (!ev.present.includes(e)) continue;
          actions.push({ type: 'send', to: e, message: { type: 'closed', reason: 'bye' } });
          actions.push({ type: 'close', to: e, code: CLOSE_NORMAL, reason: 'bye' });
        }
        // Both sides were told and closed: nobody needs to learn it later, so `ended` stays in
        // memory (a rejoin within the grace hears it) and costs no write. A side that was away
        // learns it on its rejoin, so then it is stored.
        const allTold = ev.present.includes(m.initiator) && ev.present.includes(m.responder);
        if (!allTold) actions.push({ type: 'persist' });
        // Nobody needs an ended room all were told of: any alarm may delete it, so an earlier one
        // serves (no alarm write). With a side away it waits one grace for that side's rejoin.
        state = { ...state, hold: allTold ? null : ev.now + graceMs };
        actions.push({ type: 'set_alarm', at: ev.now + graceMs });
        return { state, actions };
      }
      actions.push({ type: 'persist' });
      return { state, actions };
    }
    case 'renew': {
      const m = s.meta;
      if (m === null || !isMember(m, ev.endpoint)) {
        return { state: s, actions: [{ type: 'close', to: null, code: CLOSE_POLICY, reason: 'not a member of this session' }] };
      }
      if (s.ended !== null) return { state: s, actions: [{ type: 'error', code: 'out_of_state', message: 'room has closed' }] };
      // Both sides, authenticated now: one side alone cannot keep a room (and its relay
      // credentials) alive for a peer that has gone.
      if (!ev.fresh.includes(m.initiator) || !ev.fresh.includes(m.responder)) {
        return { state: s, actions: [{ type: 'error', code: 'out_of_state', message: 'renewal needs both sides connected' }] };
      }
      // Never shortens: a renewal just after another keeps the later deadline.
      const deadline = Math.max(m.deadline, ev.now + ev.ttlMs);
      const meta: RoomMeta = { ...m, deadline };
      return {
        state: { ...s, meta },
        actions: [
          { type: 'persist' },
          { type: 'set_alarm', at: deadline },
          { type: 'send_renewed', to: m.initiator, deadline },
          { type: 'send_renewed', to: m.responder, deadline },
        ],
      };
    }
    case 'alarm': {
      const m = s.meta;
      if (m === null) return { state: s, actions: [{ type: 'delete' }] };
      if (ev.now < m.deadline && (s.ended !== null || ev.present.length === 0)) {
        // The alarm may fire before the rules asked (the driver moves it only earlier): an empty
        // room still gets its full grace from the last leave. After a rebuild that moment is
        // unknown, so the grace starts now: a room deleted one grace late, never one too early.
        const hold = s.hold === undefined ? ev.now + graceMs : s.hold;
        if (hold !== null && ev.now < hold) return { state: { ...s, hold }, actions: [{ type: 'set_alarm', at: Math.min(hold, m.deadline) }] };
      }
      if (ev.now >= m.deadline) return expire(s, m, ev.present);
      if (s.ended !== null || ev.present.length === 0) {
        const actions: RoomAction[] = [];
        for (const e of ev.present) actions.push({ type: 'close', to: e, code: CLOSE_NORMAL, reason: 'room closed' });
        actions.push({ type: 'delete' });
        return { state: emptyRoom(), actions };
      }
      return { state: s, actions: [{ type: 'set_alarm', at: m.deadline }] };
    }
  }
}

/** The deadline passed: `closed` to whoever is present, their sockets closed, the room deleted. */
function expire(s: RoomState, m: RoomMeta, present: readonly string[]): Step {
  const actions: RoomAction[] = [];
  for (const e of present) {
    if (!isMember(m, e)) continue;
    actions.push({ type: 'send', to: e, message: { type: 'closed', reason: s.ended ?? 'deadline' } });
    actions.push({ type: 'close', to: e, code: CLOSE_NORMAL, reason: 'deadline' });
  }
  actions.push({ type: 'delete' });
  return { state: emptyRoom(), actions };
}
