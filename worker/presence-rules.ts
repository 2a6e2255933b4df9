/**
 * The rules of a presence object, sans-IO: `step(state, event, config)` returns the next state,
 * the actions the Durable Object driver (worker/presence.ts) carries out, and, for calls from
 * other objects, the reply. No sockets, storage, clocks or randomness here: the driver passes the
 * time, fresh ids and who is connected in each event, and feeds results of its calls back in.
 *
 * A connection request lives on both sides until it is answered, cancelled or expires:
 *   initiator side  `Dial`      (out:<reqId>)        pending -> ringing (delivered to the target)
 *   target side     `Incoming`  (in:<targetReqId>)   held (target offline) -> delivered
 * The initiator side owns the outcome: it alone sends `dial_failed`, so an unreachable target
 * (offline, unknown, or not allowed) always yields `dial_failed{peer_offline}` at the same moment,
 * `offlineAt`, whatever the target side did.
 *
 * Confirmed delivery (issue 9): a socket whose NAT mapping vanished silently still looks open
 * here until it turns stale (PRESENCE_STALE_MS, 60 s), and a request sent there is lost while the
 * dialer waits for its timeout. A target that declared the `ack` capability when it connected
 * answers every `request` with `ringing` (or its answer) at once; the request waits for that
 * (`awaitingAck`) until `ackDeadlineMs`. If nothing at all was heard on the socket by then, the
 * socket is dead: it is closed (`close_socket`, 1001 `unresponsive`), and each request lost on it
 * is dropped here and reported to its initiator (`call_unreachable`), which fails the dial with
 * `peer_offline` at once. A target that reconnects before the deadline gets its pending requests
 * again on the new socket (`connected`), and the deadline starts over there. Targets without the
 * capability keep the old rules: their requests are never failed for want of a receipt.
 */
import type { ErrorCode, PresenceServerMessage, Role } from '../protocol/messages.js';
import type { RoomMeta } from './room-rules.js';

/** Pending outgoing requests per endpoint: a person dials a handful of devices, not hundreds. */
export const MAX_PENDING_DIALS = 16;
/** Requests held for one offline target: beyond this they are dropped, which looks like offline. */
export const MAX_HELD_REQUESTS = 64;
/**
 * How long a delivered request waits for a sign of life from an `ack`-capable target's socket
 * (`ringing`, an answer, any frame or ping) before the socket counts as dead. The client sends
 * `ringing` from its frame handler, so a live target needs one round trip (under 1 s even on poor
 * cellular or satellite paths) plus however long its event loop is stalled: a hub busy with DTLS
 * handshakes or GC on a small or shared CPU stalls for a second or two. 5 s leaves that margin
 * twice over and still turns a dead socket into `peer_offline` with three quarters of the
 * client's default 20 s dial budget left. A live target missing it only costs one failed dial and
 * a reconnect (the client reconnects on the 1001 at once).
 */
export const DELIVERY_ACK_MS = 5000;

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
  /** The dialer got its early `session` (both sides declared early join): no `session` at the answer. */
  readonly early?: true;
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
  /**
   * Sent to an `ack`-capable socket at `sentAt` and not yet acknowledged: unless the socket is
   * heard from after `sentAt`, the request is lost at `by`. Absent once acknowledged, and for
   * targets without the capability.
   */
  readonly awaitingAck?: { readonly sentAt: number; readonly by: number };
  /** The initiator declared early join (copied from `IncomingCall.early`). */
  readonly early?: true;
  /** The initiator reads signal batches (copied from `IncomingCall.batches`). */
  readonly batches?: true;
  /** The target got its half of the session in the `request` (early join): no `session` at the answer. */
  readonly sentEarly?: true;
}

/** What the initiator's object tells the target's. */
export interface IncomingCall {
  readonly from: string;
  readonly fromHomes: readonly string[];
  readonly initiatorReqId: string;
  readonly sessionId: string;
  readonly offlineAt: number;
  readonly timeoutAt: number;
  /** The initiator declared early join (`Me.early`). */
  readonly early?: true;
  /** The initiator reads signal batches (`Me.batches`). */
  readonly batches?: true;
}

/** The target's object's reply to `incoming`. */
export interface IncomingReply {
  readonly delivered: boolean;
  /** Delivered to a target that declared early join, and so did the initiator: the initiator may join now. */
  readonly early?: true;
  /** The target reads signal batches (sent with `early`). */
  readonly batches?: true;
}

/** What the target's object tells the initiator's when its endpoint answers. */
export interface AnsweredCall {
  readonly reqId: string;
  readonly sessionId: string;
  readonly responder: string;
  readonly accept: boolean;
  readonly reason?: string;
  /** The responder declared the `ticket` capability (see `Me.tickets`). */
  readonly tickets?: boolean;
  /** The responder declared the `batch` capability (see `Me.batches`). */
  readonly batches?: boolean;
  /** The responder got its half of the session in the request (early join): it needs no `session`. */
  readonly early?: boolean;
}

/** The endpoint on the current presence socket, or null when none is connected. */
export interface Me {
  readonly sub: string;
  readonly homes: readonly string[];
  /** The socket declared the `ack` capability (protocol/messages.ts `CAP_DELIVERY_ACK`). */
  readonly acks?: boolean;
  /**
   * The socket declared the `ticket` capability (`CAP_ROOM_TICKET`): it joins rooms with the
   * ticket its `session` carries. When both sides did, the room is not created ahead by `init`:
   * the first join creates it from the ticket, and it needs no stored record.
   */
  readonly tickets?: boolean;
  /**
   * The socket declared the `batch` capability (`CAP_SIGNAL_BATCH`): it reads signal batches.
   * When both sides did, both `session`s say `batch` and either side may send them.
   */
  readonly batches?: boolean;
  /**
   * The socket declared early join (`CAP_EARLY_JOIN`) and the `ticket` capability it needs: when
   * both sides did, each gets its half of the session before the answer (see protocol/messages.ts).
   */
  readonly early?: boolean;
}

export interface PresenceState {
  readonly dials: Readonly<Record<string, Dial>>;
  readonly incoming: Readonly<Record<string, Incoming>>;
}

export interface PresenceConfig {
  readonly offlineWaitMs: number;
  readonly requestTimeoutMs: number;
  readonly sessionTtlMs: number;
  /** See DELIVERY_ACK_MS. */
  readonly ackDeadlineMs: number;
}

export const emptyPresence = (): PresenceState => ({ dials: {}, incoming: {} });

export type PresenceEvent =
  // From this endpoint's socket
  | { readonly type: 'connected'; readonly me: Me; readonly now: number }
  | {
      readonly type: 'dial';
      readonly me: Me;
      readonly reqId: string;
      readonly to: string;
      readonly sessionId: string;
      /** The dialer's remaining budget, when it sent one. */
      readonly timeoutMs?: number;
      readonly now: number;
    }
  | { readonly type: 'answer'; readonly me: Me; readonly reqId: string; readonly accept: boolean; readonly reason?: string; readonly now: number }
  | { readonly type: 'cancel'; readonly reqId: string; readonly timeout?: true }
  /** The endpoint's receipt for a request it was sent. */
  | { readonly type: 'ringing'; readonly reqId: string }
  /** A socket closed; `me` is whoever is still connected. */
  | { readonly type: 'gone'; readonly me: Me | null }
  /** `heardAt`: when the current socket was last heard from (frame, ping, upgrade); null when none is connected. */
  | { readonly type: 'alarm'; readonly now: number; readonly heardAt: number | null }
  // Calls from other objects (each gets a reply)
  | { readonly type: 'incoming'; readonly me: Me | null; readonly call: IncomingCall; readonly reqId: string; readonly now: number }
  | { readonly type: 'delivered'; readonly reqId: string; readonly sessionId: string }
  | { readonly type: 'answered'; readonly me: Me | null; readonly call: AnsweredCall; readonly now: number }
  /** `timeout`: the dialer's deadline passed (else it was withdrawn). */
  | { readonly type: 'cancel_incoming'; readonly sessionId: string; readonly timeout?: true }
  /** Initiator side: the target's object lost the request with the target's socket. */
  | { readonly type: 'unreachable'; readonly reqId: string; readonly sessionId: string }
  // Results of this object's own calls, fed back by the driver
  | ({ readonly type: 'incoming_result'; readonly me: Me | null; readonly reqId: string; readonly sessionId: string; readonly now: number } & IncomingReply)
  | { readonly type: 'delivered_result'; readonly reqId: string; readonly live: boolean }
  | {
      readonly type: 'answered_result';
      readonly reqId: string;
      readonly from: string;
      readonly sessionId: string;
      readonly accept: boolean;
      readonly ok: boolean;
      readonly deadline?: number;
      /** The session is ticketed (both sides declared the capability). */
      readonly tickets?: boolean;
      /** Both sides read signal batches. */
      readonly batch?: boolean;
      /** This side got its half of the session in the request: it needs no `session`. */
      readonly early?: boolean;
      /** When the request timed out, and the time of the reply (a refused answer past it was late, not withdrawn). */
      readonly timeoutAt?: number;
      readonly now?: number;
    };

export type PresenceAction =
  /** Send to the current presence socket, if any. */
  | { readonly type: 'send'; readonly message: PresenceServerMessage }
  /**
   * Send `session` with ICE servers freshly minted for this endpoint (and its room ticket when
   * `ticket`); `early`: the dialer's, before the answer (always with a ticket).
   */
  | { readonly type: 'send_session'; readonly reqId: string; readonly sessionId: string; readonly peer: string; readonly role: Role; readonly deadline: number; readonly ticket?: true; readonly batch?: true; readonly early?: true }
  /**
   * Send `request` (`message`) with this endpoint's half of the session (early join): ICE servers
   * freshly minted for it and its room ticket for `deadline`.
   */
  | { readonly type: 'send_early_request'; readonly message: Extract<PresenceServerMessage, { type: 'request' }>; readonly deadline: number; readonly batch?: true }
  /** Call `incoming` on `to`'s object; feed the reply back as `incoming_result`. */
  | { readonly type: 'call_incoming'; readonly to: string; readonly call: IncomingCall }
  /** Call `delivered` on the initiator's object; feed the reply back as `delivered_result`. */
  | { readonly type: 'call_delivered'; readonly to: string; readonly initiatorReqId: string; readonly sessionId: string; readonly reqId: string }
  /** Call `answered` on the initiator's object; feed the reply back as `answered_result` (with the request's `timeoutAt`). */
  | { readonly type: 'call_answered'; readonly to: string; readonly call: AnsweredCall; readonly reqId: string; readonly timeoutAt: number }
  /** Tell the target's object the request is withdrawn (no reply needed). */
  | { readonly type: 'call_cancel_incoming'; readonly to: string; readonly sessionId: string; readonly timeout?: true }
  /** Tell the initiator's object its request was lost with this endpoint's socket (no reply needed). */
  | { readonly type: 'call_unreachable'; readonly to: string; readonly initiatorReqId: string; readonly sessionId: string }
  /**
   * Close the current presence socket with 1001 and `reason` (it did not acknowledge in time, so
   * its path is dead), then treat the endpoint as gone.
   */
  | { readonly type: 'close_socket'; readonly reason: 'unresponsive' }
  /** Create the room (before anyone is told about the session). */
  | { readonly type: 'init_room'; readonly meta: RoomMeta };

export type PresenceReply = IncomingReply | { live: boolean } | AnsweredReply | null;

/** The initiator's object's reply to `answered`: the session's deadline and what both sides declared. */
export interface AnsweredReply {
  readonly ok: boolean;
  readonly deadline?: number;
  readonly tickets?: boolean;
  readonly batch?: boolean;
}

export interface PresenceStep {
  readonly state: PresenceState;
  readonly actions: PresenceAction[];
  /** The answer to a call from another object; null for socket events and results. */
  readonly reply: PresenceReply;
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
export function nextWake(dials: readonly Dial[], incoming: readonly Incoming[]): number | null {
  const times: number[] = [];
  for (const d of dials) times.push(d.ringing ? d.timeoutAt : Math.min(d.offlineAt, d.timeoutAt));
  for (const r of incoming) {
    const until = r.delivered ? r.timeoutAt : Math.min(r.offlineAt, r.timeoutAt);
    times.push(r.awaitingAck ? Math.min(until, r.awaitingAck.by) : until);
  }
  return times.length === 0 ? null : Math.min(...times);
}

/**
 * When the state next needs an alarm: the next record, or `socketCheckAt` (when the current
 * presence socket is next checked for silence: the driver's sweep), whichever is first.
 */
export function wakeOf(s: PresenceState, socketCheckAt: number | null = null): number | null {
  const next = nextWake(Object.values(s.dials), Object.values(s.incoming));
  if (socketCheckAt === null) return next;
  return next === null ? socketCheckAt : Math.min(next, socketCheckAt);
}

/**
 * When a presence socket last heard from at `lastHeard` counts as gone. A live client pings
 * every KEEPALIVE_INTERVAL_MS; `staleMs` (PRESENCE_STALE_MS by default) covers two missed pings
 * and the pong deadline, so one lost ping never drops a live endpoint.
 */
export const staleAt = (lastHeard: number, staleMs: number): number => lastHeard + staleMs;

const ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** A random url-safe id (132 bits in 22 characters) from the given random bytes source. */
export function randomId(random: (n: number) => Uint8Array): string {
  const bytes = random(22);
  let s = '';
  for (const b of bytes) s += ID_ALPHABET[b & 63];
  return s;
}

// ---- step ----------------------------------------------------------------------------------

/** The `request` frame for `r` at `now`, with what is left of the dialer's budget. */
const requestMessage = (r: Incoming, now: number): Extract<PresenceServerMessage, { type: 'request' }> => ({
  type: 'request',
  reqId: r.reqId,
  from: r.from,
  sessionId: r.sessionId,
  timeoutMs: Math.max(0, r.timeoutAt - now),
});

/** Both sides of a request declared early join. */
const bothEarly = (r: Incoming, me: Me): boolean => r.early === true && me.early === true;

/**
 * Sends `r` to the socket of `me` at `now`: with the target's half of the session when both
 * sides declared early join. Returns the action and the record as sent (see `sentTo`).
 */
function deliver(r: Incoming, me: Me, now: number, config: PresenceConfig): { action: PresenceAction; record: Incoming } {
  const sent = sentTo(r, me, now, config);
  if (!bothEarly(r, me)) {
    const { sentEarly: _no, ...rest } = sent;
    return { action: { type: 'send', message: requestMessage(r, now) }, record: rest };
  }
  const batch = r.batches === true && me.batches === true ? { batch: true as const } : {};
  return { action: { type: 'send_early_request', message: requestMessage(r, now), deadline: now + config.sessionTtlMs, ...batch }, record: { ...sent, sentEarly: true } };
}

/**
 * `r` as sent to the socket of `me` at `now`: waiting for a receipt when that socket acknowledges
 * requests, else without one (a legacy socket, or a new one that replaced an acking socket).
 */
function sentTo(r: Incoming, me: Me, now: number, config: PresenceConfig): Incoming {
  const { awaitingAck: _old, ...rest } = r;
  const sent: Incoming = { ...rest, delivered: true };
  return me.acks ? { ...sent, awaitingAck: { sentAt: now, by: now + config.ackDeadlineMs } } : sent;
}

const without = <T>(o: Readonly<Record<string, T>>, key: string): Record<string, T> => {
  const { [key]: _gone, ...rest } = o;
  return rest;
};

const err = (code: ErrorCode, message: string, reqId?: string): PresenceAction => ({
  type: 'send',
  message: reqId === undefined ? { type: 'error', code, message } : { type: 'error', code, message, reqId },
});

const result = (state: PresenceState, actions: PresenceAction[] = [], reply: PresenceReply = null): PresenceStep => ({ state, actions, reply });

/**
 * Applies one event. Refused input leaves the state as it was and yields an `error` frame only.
 *
 * @example
 * const { state, actions } = step(emptyPresence(), { type: 'dial', me, reqId: 'r1', to: 'hub-1', sessionId, now }, config);
 */
export function step(s: PresenceState, ev: PresenceEvent, config: PresenceConfig): PresenceStep {
  switch (ev.type) {
    case 'connected': {
      // Requests that arrived while the endpoint was away, or sat on its old socket.
      const actions: PresenceAction[] = [];
      let incoming = s.incoming;
      for (const r of Object.values(s.incoming)) {
        const expired = incomingExpired(r, ev.now);
        if (expired || !mayConnect(ev.me.homes, r.fromHomes)) {
          // A held one stays until it expires: the endpoint may come back with other homes.
          if (expired || r.delivered) incoming = without(incoming, r.reqId);
          continue;
        }
        const { action, record } = deliver(r, ev.me, ev.now, config);
        actions.push(action);
        // Already delivered to an old socket: only the receipt (and the early half) starts over, on this socket.
        if (r.delivered) {
          if (r.awaitingAck || ev.me.acks || r.sentEarly !== record.sentEarly) incoming = { ...incoming, [r.reqId]: record };
          continue;
        }
        incoming = { ...incoming, [r.reqId]: record };
        actions.push({ type: 'call_delivered', to: r.from, initiatorReqId: r.initiatorReqId, sessionId: r.sessionId, reqId: r.reqId });
      }
      return result({ ...s, incoming }, actions);
    }
    case 'dial': {
      if (ev.to === ev.me.sub) return result(s, [err('invalid_field', 'cannot dial yourself', ev.reqId)]);
      if (s.dials[ev.reqId]) return result(s, [err('out_of_state', 'reqId already pending', ev.reqId)]);
      if (Object.keys(s.dials).length >= MAX_PENDING_DIALS) return result(s, [err('rate_limited', 'too many pending requests', ev.reqId)]);
      const dial: Dial = {
        reqId: ev.reqId,
        to: ev.to,
        sessionId: ev.sessionId,
        ringing: false,
        offlineAt: ev.now + config.offlineWaitMs,
        // The dialer's budget when it sent one, never beyond the service's own timeout.
        timeoutAt: ev.now + Math.min(ev.timeoutMs ?? config.requestTimeoutMs, config.requestTimeoutMs),
      };
      const call: IncomingCall = {
        from: ev.me.sub,
        fromHomes: ev.me.homes,
        initiatorReqId: ev.reqId,
        sessionId: ev.sessionId,
        offlineAt: dial.offlineAt,
        timeoutAt: dial.timeoutAt,
        ...(ev.me.early === true ? { early: true as const } : {}),
        ...(ev.me.batches === true ? { batches: true as const } : {}),
      };
      return result({ ...s, dials: { ...s.dials, [ev.reqId]: dial } }, [{ type: 'call_incoming', to: ev.to, call }]);
    }
    case 'incoming_result': {
      const d = s.dials[ev.reqId];
      if (d === undefined || d.sessionId !== ev.sessionId || !ev.delivered) return result(s);
      // Both sides declared early join: the dialer gets its half of the session now, and joins.
      if (ev.early === true && ev.me?.early === true && d.early !== true) {
        const batch = ev.batches === true && ev.me.batches === true ? { batch: true as const } : {};
        return result({ ...s, dials: { ...s.dials, [ev.reqId]: { ...d, ringing: true, early: true } } }, [
          { type: 'send_session', reqId: d.reqId, sessionId: d.sessionId, peer: d.to, role: 'initiator', deadline: ev.now + config.sessionTtlMs, ticket: true, early: true, ...batch },
        ]);
      }
      if (d.ringing) return result(s);
      return result({ ...s, dials: { ...s.dials, [ev.reqId]: { ...d, ringing: true } } });
    }
    case 'delivered': {
      const d = s.dials[ev.reqId];
      const live = d !== undefined && d.sessionId === ev.sessionId;
      if (!live || d.ringing) return result(s, [], { live });
      return result({ ...s, dials: { ...s.dials, [ev.reqId]: { ...d, ringing: true } } }, [], { live });
    }
    case 'delivered_result': {
      const r = s.incoming[ev.reqId];
      if (ev.live || !r) return result(s);
      return result({ ...s, incoming: without(s.incoming, ev.reqId) }, [{ type: 'send', message: { type: 'cancelled', reqId: ev.reqId } }]);
    }
    case 'answer': {
      const r = s.incoming[ev.reqId];
      if (!r || !r.delivered || incomingExpired(r, ev.now)) return result(s, [err('out_of_state', 'no such pending request', ev.reqId)]);
      const call: AnsweredCall = {
        reqId: r.initiatorReqId,
        sessionId: r.sessionId,
        responder: ev.me.sub,
        accept: ev.accept,
        ...(ev.reason !== undefined ? { reason: ev.reason } : {}),
        ...(ev.me.tickets === true ? { tickets: true } : {}),
        ...(ev.me.batches === true ? { batches: true } : {}),
        ...(r.sentEarly === true ? { early: true } : {}),
      };
      // Gone from here at once, so a second answer is out of state.
      return result({ ...s, incoming: without(s.incoming, ev.reqId) }, [{ type: 'call_answered', to: r.from, call, reqId: ev.reqId, timeoutAt: r.timeoutAt }]);
    }
    case 'answered_result': {
      if (!ev.ok) {
        // Refused past the dialer's deadline: the answer came too late, which the target hears as such.
        const late = ev.timeoutAt !== undefined && ev.now !== undefined && ev.now >= ev.timeoutAt;
        return result(s, [{ type: 'send', message: { type: 'cancelled', reqId: ev.reqId, ...(late ? { reason: 'timeout' as const } : {}) } }]);
      }
      // An early target joined as it accepted: it needs no `session`.
      if (!ev.accept || ev.deadline === undefined || ev.early === true) return result(s);
      return result(s, [
        {
          type: 'send_session',
          reqId: ev.reqId,
          sessionId: ev.sessionId,
          peer: ev.from,
          role: 'responder',
          deadline: ev.deadline,
          ...(ev.tickets === true ? { ticket: true as const } : {}),
          ...(ev.batch === true ? { batch: true as const } : {}),
        },
      ]);
    }
    case 'cancel': {
      const d = s.dials[ev.reqId];
      if (!d) return result(s, [err('out_of_state', 'no such pending request', ev.reqId)]);
      return result({ ...s, dials: without(s.dials, ev.reqId) }, [
        { type: 'send', message: { type: 'cancelled', reqId: ev.reqId } },
        { type: 'call_cancel_incoming', to: d.to, sessionId: d.sessionId, ...(ev.timeout ? { timeout: true as const } : {}) },
      ]);
    }
    case 'ringing': {
      // A receipt for a request already answered, cancelled or expired is a harmless race.
      const r = s.incoming[ev.reqId];
      if (!r?.awaitingAck) return result(s);
      const { awaitingAck: _acked, ...rest } = r;
      return result({ ...s, incoming: { ...s.incoming, [r.reqId]: rest } });
    }
    case 'gone': {
      // Replaced by a newer socket: nothing changes. Gone for good: its requests are withdrawn.
      if (ev.me !== null) return result(s);
      const actions: PresenceAction[] = Object.values(s.dials).map((d) => ({ type: 'call_cancel_incoming', to: d.to, sessionId: d.sessionId }));
      return result({ ...s, dials: {} }, actions);
    }
    case 'alarm': {
      const actions: PresenceAction[] = [];
      let { dials, incoming } = s;
      for (const d of Object.values(s.dials)) {
        const outcome = dialOutcome(d, ev.now);
        if (outcome === null) continue;
        dials = without(dials, d.reqId);
        actions.push({ type: 'send', message: { type: 'dial_failed', reqId: d.reqId, code: outcome } });
        actions.push({ type: 'call_cancel_incoming', to: d.to, sessionId: d.sessionId, ...(outcome === 'timeout' ? { timeout: true as const } : {}) });
      }
      const lost: Incoming[] = [];
      for (const r of Object.values(s.incoming)) {
        if (incomingExpired(r, ev.now)) {
          incoming = without(incoming, r.reqId);
          // A delivered request expires only at the dialer's deadline: a timeout.
          if (r.delivered) actions.push({ type: 'send', message: { type: 'cancelled', reqId: r.reqId, reason: 'timeout' } });
          continue;
        }
        const ack = r.awaitingAck;
        if (!ack || ev.now < ack.by) continue;
        if (ev.heardAt !== null && ev.heardAt > ack.sentAt) {
          // Heard from after the request went out (a frame, or a ping the runtime answered): the
          // socket is alive, so the request reached the endpoint.
          const { awaitingAck: _alive, ...rest } = r;
          incoming = { ...incoming, [r.reqId]: rest };
          continue;
        }
        lost.push(r);
        incoming = without(incoming, r.reqId);
      }
      if (lost.length > 0) {
        // Nothing came back on the socket since the request: its path is dead. Closing it makes
        // the endpoint offline here (new requests are held for its return) and, should the
        // endpoint still hear us, tells it to reconnect.
        if (ev.heardAt !== null) actions.push({ type: 'close_socket', reason: 'unresponsive' });
        for (const r of lost) actions.push({ type: 'call_unreachable', to: r.from, initiatorReqId: r.initiatorReqId, sessionId: r.sessionId });
      }
      return result({ dials, incoming }, actions);
    }
    case 'incoming': {
      const no = result(s, [], { delivered: false });
      // Not allowed looks exactly like offline to the caller: no answer but the verdict at offlineAt.
      if (ev.me !== null && !mayConnect(ev.me.homes, ev.call.fromHomes)) return no;
      const held = Object.values(s.incoming);
      if (held.some((r) => r.sessionId === ev.call.sessionId)) return no;
      if (ev.me === null && held.length >= MAX_HELD_REQUESTS) return no;
      const record: Incoming = { reqId: ev.reqId, ...ev.call, delivered: false };
      if (ev.me === null) return result({ ...s, incoming: { ...s.incoming, [record.reqId]: record } }, [], { delivered: false });
      const { action, record: r } = deliver(record, ev.me, ev.now, config);
      const early: IncomingReply = r.sentEarly === true ? { delivered: true, early: true, ...(ev.me.batches === true ? { batches: true } : {}) } : { delivered: true };
      return result({ ...s, incoming: { ...s.incoming, [r.reqId]: r } }, [action], early);
    }
    case 'answered': {
      const c = ev.call;
      const d = s.dials[c.reqId];
      if (!d || d.sessionId !== c.sessionId || d.to !== c.responder || ev.now >= d.timeoutAt) return result(s, [], { ok: false });
      const dials = without(s.dials, c.reqId);
      if (!c.accept) {
        return result({ ...s, dials }, [{ type: 'send', message: { type: 'rejected', reqId: c.reqId, reason: c.reason ?? 'declined' } }], { ok: true });
      }
      // Nobody here to tell: the session would be half-open, so the target is told it was cancelled.
      if (ev.me === null) return result({ ...s, dials }, [], { ok: false });
      const deadline = ev.now + config.sessionTtlMs;
      // Both sides read signal batches: both sessions say so.
      const batch = ev.me.batches === true && c.batches === true ? { batch: true as const } : {};
      // Both sides join with the ticket: the first join creates the room, no `init` call. A dialer
      // that had its early `session` is in the room already and needs no other.
      if (ev.me.tickets === true && c.tickets === true) {
        const tell: PresenceAction[] = d.early === true ? [] : [{ type: 'send_session', reqId: c.reqId, sessionId: c.sessionId, peer: c.responder, role: 'initiator', deadline, ticket: true, ...batch }];
        return result({ ...s, dials }, tell, {
          ok: true,
          deadline,
          tickets: true,
          ...batch,
        });
      }
      return result(
        { ...s, dials },
        [
          { type: 'init_room', meta: { sessionId: c.sessionId, initiator: ev.me.sub, responder: c.responder, deadline } },
          { type: 'send_session', reqId: c.reqId, sessionId: c.sessionId, peer: c.responder, role: 'initiator', deadline, ...batch },
        ],
        { ok: true, deadline, ...batch },
      );
    }
    case 'unreachable': {
      const d = s.dials[ev.reqId];
      if (!d || d.sessionId !== ev.sessionId) return result(s, [], { live: false });
      // The target's object already dropped its side: nothing to cancel there.
      return result({ ...s, dials: without(s.dials, ev.reqId) }, [{ type: 'send', message: { type: 'dial_failed', reqId: ev.reqId, code: 'peer_offline' } }], { live: true });
    }
    case 'cancel_incoming': {
      const actions: PresenceAction[] = [];
      let incoming = s.incoming;
      for (const r of Object.values(s.incoming)) {
        if (r.sessionId !== ev.sessionId) continue;
        incoming = without(incoming, r.reqId);
        if (r.delivered) actions.push({ type: 'send', message: { type: 'cancelled', reqId: r.reqId, ...(ev.timeout ? { reason: 'timeout' as const } : {}) } });
      }
      return result({ ...s, incoming }, actions);
    }
  }
}
