/**
 * The presence Durable Object, one per endpoint (named by endpoint id): the driver of
 * worker/presence-rules.ts. It owns that endpoint's hibernatable presence socket, the storage of
 * its request and session records, the alarm, and the calls to other endpoints' presence objects
 * and to rooms.
 *
 *   initiator A                   A's Presence            B's Presence               target B
 *   dial{reqId,to:B}  ---------->  out:reqId  -- incoming() -->  in:tReqId  ---------> request{tReqId}
 *                                  (ringing)  <-- delivered ---
 *                                                               answer{tReqId,accept} <-----
 *                     <-------  session      <-- answered() --  (A inits the Room)
 *                                                                session ------------>
 *
 * Where the records live (issue 10 item 4: storage rows are the largest billed unit per exchange).
 * A pending request ends with the presence socket that made or received it, so while a socket is
 * connected the records ride in its attachment (`PresenceAttachment.rec`), which survives
 * hibernation and costs no storage write. Storage is the overflow path: records that do not fit
 * the attachment's 2 KiB (a token may list 64 homes, and an incoming request carries the
 * initiator's), and every record while no socket is connected (a request held for an offline
 * target, or a delivered one kept for the endpoint's return). Everything needed after a wake-up is
 * therefore in storage or in an attachment, mirrored in memory once loaded; the alarm drives
 * expiry. A restart of the runtime that drops the sockets drops their records with them: the
 * dialer's socket is gone (its requests are withdrawn anyway) and a target's delivered request
 * ends as the initiator's `timeout`.
 */
import { parsePresenceCaps, parsePresenceClientMessage, type PresenceClientMessage, type PresenceServerMessage } from '../protocol/messages.js';
import { TIMER_HORIZON_MS } from './config.js';
import type { Env } from './env.js';
import { iceServersFor } from './ice.js';
import {
  DELIVERY_ACK_MS,
  randomId,
  staleAt,
  step,
  wakeOf,
  type AnsweredCall,
  type AnsweredReply,
  type Dial,
  type Incoming,
  type IncomingCall,
  type IncomingReply,
  type Me,
  type PresenceAction,
  type PresenceConfig,
  type PresenceEvent,
  type PresenceReply,
  type PresenceState,
} from './presence-rules.js';
import { roomKey } from './room.js';
import { signTicket } from './ticket.js';
import {
  assertNever,
  CLOSE_GOING_AWAY,
  CLOSE_NORMAL,
  safeClose,
  safeSend,
  SocketObject,
  type SocketAttachment,
} from './socket-object.js';

export type { IncomingCall } from './presence-rules.js';

const random = (n: number): Uint8Array => crypto.getRandomValues(new Uint8Array(n));

const meOf = (a: PresenceAttachment): Me => ({
  sub: a.sub,
  homes: a.homes,
  acks: a.acks === true,
  tickets: a.tk === true,
  batches: a.bt === true,
  // Early join needs the ticket: the room admits an early joiner by it alone.
  early: a.ej === true && a.tk === true,
});

/** Storage key prefix of each record kind. */
const PREFIX = { dials: 'out:', incoming: 'in:' } as const;
const KINDS = ['dials', 'incoming'] as const;

/**
 * The runtime refuses attachments over 2,048 bytes of V8 serialization. Records are sized by their
 * JSON length, which for these ASCII-only values (ids, homes and reqIds are checked against ASCII
 * patterns) is longer than V8's encoding (no quotes or commas; timestamps are 9-byte doubles, not
 * 13 digits); the margin covers the serializer's headers and tags.
 */
export const ATTACHMENT_LIMIT_BYTES = 2048;
const ATTACHMENT_BUDGET = ATTACHMENT_LIMIT_BYTES - 128;

/**
 * A presence socket's attachment: the records it carries (see the module header), and `acks` when
 * the client declared `?caps=ack` (it answers each request with `ringing`).
 */
interface PresenceAttachment extends SocketAttachment {
  readonly rec?: PresenceState;
  readonly acks?: true;
  /** The client declared `?caps=ticket` (it joins rooms with their ticket). */
  readonly tk?: true;
  /** The client declared `?caps=batch` (it reads signal batches). */
  readonly bt?: true;
  /** The client declared `?caps=early` (it joins rooms early). */
  readonly ej?: true;
}

/** The records of a presence attachment, checked when read back (absent or malformed: none). */
function recordsOf(a: PresenceAttachment | null): PresenceState | null {
  const r = a?.rec;
  if (r === undefined || r === null || typeof r !== 'object') return null;
  const ok = (o: unknown): o is Record<string, object> => typeof o === 'object' && o !== null && Object.values(o).every((v) => typeof v === 'object' && v !== null && typeof (v as { reqId?: unknown }).reqId === 'string');
  return ok(r.dials) && ok(r.incoming) ? r : null;
}

/** The attachment without its records. */
function baseOf(a: PresenceAttachment): SocketAttachment {
  const { rec: _rec, ...base } = a;
  return base;
}

const jsonSize = (v: unknown): number => JSON.stringify(v).length;

/**
 * One endpoint's presence: its socket and its pending requests both ways.
 *
 * @example
 * const presence = env.PRESENCE.get(env.PRESENCE.idFromName(endpointId));
 * const { delivered } = await presence.incoming(call); // a request from another endpoint
 */
export class Presence extends SocketObject {
  protected readonly kind = 'presence';
  private readonly rules: PresenceConfig;
  /** The state as last persisted (records are immutable, so identity tells what changed). */
  private stored: PresenceState | null = null;
  /** Loaded from storage and the socket's attachment on first use (see `load`). */
  private loaded: PresenceState | null = null;
  /** The alarm as last set by this instance; undefined until read back after a wake-up. */
  private alarmAt: number | null | undefined;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.trace('wake');
    this.rules = {
      offlineWaitMs: this.config.offlineWaitMs,
      requestTimeoutMs: this.config.requestTimeoutMs,
      sessionTtlMs: this.config.sessionTtlSeconds * 1000,
      ackDeadlineMs: DELIVERY_ACK_MS,
    };
  }

  // ---- state and storage ------------------------------------------------------------------

  /** Storage keys (`out:` / `in:`) of the records that are in storage rather than an attachment. */
  private rows = new Set<string>();

  /**
   * The records: storage rows (the overflow path) plus those on the current socket's attachment,
   * loaded on first use so a rebuilt instance starts from what was persisted. `holder` is a socket
   * whose attachment to read when it is not the current one (a socket being closed).
   */
  private get state(): PresenceState {
    return this.load();
  }

  private load(holder?: WebSocket): PresenceState {
    if (this.loaded === null) {
      const kv = this.ctx.storage.kv;
      const out: { dials: Record<string, Dial>; incoming: Record<string, Incoming> } = { dials: {}, incoming: {} };
      let rows = 0;
      for (const kind of KINDS) {
        for (const [key, v] of kv.list<Dial | Incoming>({ prefix: PREFIX[kind] })) {
          (out[kind] as Record<string, Dial | Incoming>)[v.reqId] = v;
          this.rows.add(key);
          rows++;
        }
      }
      this.meter('read', rows);
      const ws = holder ?? this.current()?.ws;
      const rec = ws ? recordsOf(this.attachment<PresenceAttachment>(ws)) : null;
      if (rec) {
        Object.assign(out.dials, rec.dials);
        Object.assign(out.incoming, rec.incoming);
      }
      this.loaded = out;
      this.stored = out;
    }
    return this.loaded;
  }

  /**
   * Places the records after a change: on the current socket's attachment while they fit, in
   * storage otherwise or when no socket is connected. A record already in a row stays there until
   * it changes (then it moves to the attachment: deleting the row now saves deleting it later).
   * Only rows cost writes; `before` tells which records changed (records are immutable).
   */
  private persist(before: PresenceState, after: PresenceState): void {
    const kv = this.ctx.storage.kv;
    const c = this.current();
    const base = c ? baseOf(c.id) : null;
    const rec: { dials: Record<string, Dial>; incoming: Record<string, Incoming> } = { dials: {}, incoming: {} };
    let size = base ? jsonSize(base) + jsonSize(rec) + '"rec":,'.length : Infinity;
    let onSocket = 0;
    const wanted = new Set<string>();
    for (const kind of KINDS) {
      for (const [k, v] of Object.entries(after[kind] as Record<string, Dial | Incoming>)) {
        const key = PREFIX[kind] + k;
        wanted.add(key);
        const inRow = this.rows.has(key);
        const changed = (before[kind] as Record<string, unknown>)[k] !== v;
        if (inRow && !changed) continue;
        const add = jsonSize(k) + jsonSize(v) + 2;
        if (size + add <= ATTACHMENT_BUDGET) {
          size += add;
          (rec[kind] as Record<string, Dial | Incoming>)[k] = v;
          onSocket++;
          if (inRow) this.dropRow(key);
          continue;
        }
        kv.put(key, v);
        this.rows.add(key);
        this.meter('write');
      }
    }
    for (const key of [...this.rows]) if (!wanted.has(key)) this.dropRow(key);
    if (c && base) this.attach(c.ws, base, onSocket > 0 ? rec : null);
  }

  private dropRow(key: string): void {
    this.ctx.storage.kv.delete(key);
    this.rows.delete(key);
    this.meter('write');
  }

  /**
   * Writes `ws`'s attachment with `rec` (none when null). Should the runtime still refuse it, the
   * records go to storage instead: the size estimate is a bound, not the serializer.
   */
  private attach(ws: WebSocket, base: SocketAttachment, rec: PresenceState | null): void {
    try {
      this.setAttachment(ws, rec ? ({ ...base, rec } satisfies PresenceAttachment) : base);
    } catch (e) {
      if (rec === null) throw e;
      this.setAttachment(ws, base);
      const kv = this.ctx.storage.kv;
      for (const kind of KINDS) {
        for (const [k, v] of Object.entries(rec[kind] as Record<string, Dial | Incoming>)) {
          kv.put(PREFIX[kind] + k, v);
          this.rows.add(PREFIX[kind] + k);
          this.meter('write');
        }
      }
    }
  }

  /**
   * Makes sure something fires by the next moment anything needs attention (a record's deadline,
   * or the sweep of the current socket). The storage alarm is a write per move (issue 10 item 4),
   * so it is moved as little as the rules allow:
   *
   * - never later: an alarm that fires early finds nothing due and is set again from there (so a
   *   frame that makes the socket fresh, or a request that ends, writes nothing);
   * - earlier only for a deadline still pending {@link TIMER_HORIZON_MS} after it appeared and
   *   more than that away. Until then an in-memory timer stands in for it. A request is usually
   *   answered (or acknowledged, or found offline: the default offline wait is 3 s) by then, so
   *   it never touches the alarm; one that waits longer (a person deciding) gets its alarm
   *   written then, while the object is still awake (the runtime hibernates an object only after
   *   about 10 s without events), so the request outlives hibernation as before.
   *
   * The timer is lost only if the runtime evicts the object within those seconds (a deploy, a
   * crash); the deadline is then served on the object's next event (any event re-arms from the
   * records, and an overdue deadline is due at once), or by the alarm that is set (the socket's
   * sweep, at most `presenceSweepMs` later), not missed. When no alarm is set at all (a new
   * object, or the alarm that just fired), it is written at once.
   */
  private async rearm(flush = false): Promise<void> {
    const at = this.nextWake();
    if (this.alarmAt === undefined) this.alarmAt = await this.ctx.storage.getAlarm();
    if (at === null || (this.alarmAt !== null && this.alarmAt <= at)) return this.setTimer(null);
    const now = Date.now();
    // A deadline within the horizon stays in memory: it comes before the object could hibernate.
    const soon = at - now <= TIMER_HORIZON_MS;
    if (this.alarmAt !== null && (soon || !flush)) return this.setTimer(soon ? at : now + TIMER_HORIZON_MS);
    this.setTimer(null);
    this.alarmAt = at;
    this.meter('alarm_set');
    await this.ctx.storage.setAlarm(at);
  }

  /** The in-memory timer that stands in for an earlier alarm (see `rearm`). */
  private timer: { at: number; handle: ReturnType<typeof setTimeout> } | null = null;

  /**
   * Makes the timer fire by `at`, or clears it (null). A timer already due sooner stays: it finds
   * the state as it is then (see `onTimer`), and the horizon counts from the deadline's first
   * appearance, not from every event after it.
   */
  private setTimer(at: number | null): void {
    if (this.timer !== null && at !== null && this.timer.at <= at) return;
    if (this.timer !== null) clearTimeout(this.timer.handle);
    this.timer = at === null ? null : { at, handle: setTimeout(() => void this.onTimer(), Math.max(0, at - Date.now())) };
  }

  private async onTimer(): Promise<void> {
    this.timer = null;
    try {
      const now = Date.now();
      const due = this.nextWake();
      if (due !== null && due <= now) {
        // A deadline, on time: what the alarm would have done.
        this.trace('timer');
        await this.runDue(now);
      } else {
        // Still pending after the horizon: the alarm takes it over.
        await this.rearm(true);
      }
    } catch (e) {
      console.error('presence: timer failed', (e as Error).name);
    }
  }

  /**
   * Runs one event through the rules, stores the result, and carries out the actions in order
   * (results of calls are fed back in as events). Returns the reply for calls from other objects.
   */
  private async apply(ev: PresenceEvent): Promise<PresenceReply> {
    const before = this.state;
    const { state, actions, reply } = step(before, ev, this.rules);
    this.loaded = state;
    // A new dial is written together with what its first call returns (ringing or not), in the
    // same handler: one row instead of a put and an update. Every other event writes at once.
    if (ev.type !== 'dial' || actions.every((a) => a.type !== 'call_incoming')) {
      this.persist(this.stored ?? before, state);
      this.stored = state;
    }
    await this.rearm();
    for (const act of actions) await this.run(act);
    return reply;
  }

  private async run(act: PresenceAction): Promise<void> {
    switch (act.type) {
      case 'send':
        return this.send(act.message);
      case 'send_session': {
        const c = this.current();
        if (!c) return;
        const iceServers = await iceServersFor(this.config, c.id.sub, c.id.loc, Date.now());
        const [initiator, responder] = act.role === 'initiator' ? [c.id.sub, act.peer] : [act.peer, c.id.sub];
        const ticket = act.ticket ? await signTicket(this.config.turnSecrets, { sessionId: act.sessionId, initiator, responder, deadline: act.deadline }) : undefined;
        return safeSend(c.ws, {
          type: 'session',
          reqId: act.reqId,
          sessionId: act.sessionId,
          peer: act.peer,
          role: act.role,
          iceServers,
          deadline: act.deadline,
          ...(ticket !== undefined ? { ticket } : {}),
          ...(act.batch ? { batch: true } : {}),
          ...(act.early ? { early: true } : {}),
        });
      }
      case 'send_early_request': {
        const c = this.current();
        if (!c) return;
        const iceServers = await iceServersFor(this.config, c.id.sub, c.id.loc, Date.now());
        const ticket = await signTicket(this.config.turnSecrets, { sessionId: act.message.sessionId, initiator: act.message.from, responder: c.id.sub, deadline: act.deadline });
        return safeSend(c.ws, { ...act.message, early: { iceServers, deadline: act.deadline, ticket, ...(act.batch ? { batch: true } : {}) } });
      }
      case 'call_incoming': {
        let reply: IncomingReply = { delivered: false };
        try {
          reply = await this.peer(act.to).incoming(act.call);
        } catch (e) {
          // Treated like an offline target: the alarm answers peer_offline at offlineAt.
          console.error('presence: incoming() failed', (e as Error).name);
        }
        await this.apply({ type: 'incoming_result', me: this.me(), reqId: act.call.initiatorReqId, sessionId: act.call.sessionId, ...reply, now: Date.now() });
        return;
      }
      case 'call_delivered': {
        // If the initiator's object cannot be reached, the request stays; its expiry cleans up.
        const { live } = await this.peer(act.to)
          .delivered(act.initiatorReqId, act.sessionId)
          .catch(() => ({ live: true }));
        await this.apply({ type: 'delivered_result', reqId: act.reqId, live });
        return;
      }
      case 'call_answered': {
        const res = await this.peer(act.to)
          .answered(act.call)
          .catch((e: unknown) => {
            console.error('presence: answered() failed', (e as Error).name);
            return { ok: false } as AnsweredReply;
          });
        await this.apply({
          type: 'answered_result',
          reqId: act.reqId,
          from: act.to,
          sessionId: act.call.sessionId,
          accept: act.call.accept,
          ok: res.ok,
          ...(res.deadline !== undefined ? { deadline: res.deadline } : {}),
          ...(res.tickets === true ? { tickets: true } : {}),
          ...(res.batch === true ? { batch: true } : {}),
          ...(act.call.early === true ? { early: true } : {}),
          timeoutAt: act.timeoutAt,
          now: Date.now(),
        });
        return;
      }
      case 'call_cancel_incoming':
        await this.peer(act.to)
          .cancelIncoming(act.sessionId, act.timeout === true)
          .catch(() => undefined);
        return;
      case 'call_unreachable':
        // If the initiator's object cannot be reached, its dial ends in its own timeout.
        await this.peer(act.to)
          .unreachable(act.initiatorReqId, act.sessionId)
          .catch(() => undefined);
        return;
      case 'close_socket': {
        const c = this.current();
        if (!c) return;
        this.trace(act.reason);
        safeClose(c.ws, CLOSE_GOING_AWAY, act.reason);
        await this.apply({ type: 'gone', me: this.me(c.ws) });
        return;
      }
      case 'init_room': {
        const m = act.meta;
        const room = this.env.ROOM.get(this.env.ROOM.idFromName(roomKey(m.sessionId)));
        await room.init(m);
        return;
      }
      default:
        return assertNever(act);
    }
  }

  // ---- the socket ------------------------------------------------------------------------

  /** The current presence socket: the newest open one. */
  private current(except?: WebSocket): { ws: WebSocket; id: SocketAttachment } | null {
    let best: { ws: WebSocket; id: SocketAttachment } | null = null;
    for (const ws of this.ctx.getWebSockets()) {
      if (ws === except || ws.readyState !== WebSocket.OPEN) continue;
      const id = this.attachment(ws);
      if (id && (best === null || id.connectedAt >= best.id.connectedAt)) best = { ws, id };
    }
    return best;
  }

  private me(except?: WebSocket): Me | null {
    const c = this.current(except);
    return c ? meOf(c.id) : null;
  }

  /**
   * Drops the current socket when nothing was heard on it (no frame, no ping) for
   * `presenceStaleMs`: its NAT mapping or its host is gone, and a request sent there would be
   * lost while the initiator waits for a timeout. Closed with 1001; the endpoint counts as
   * offline from here on (its own dials are withdrawn, new requests are held for it). Checked
   * when a request arrives for the endpoint and whenever the object wakes (a deadline, the sweep).
   */
  private async dropStale(now: number): Promise<void> {
    const c = this.current();
    if (c === null || now < staleAt(this.lastHeard(c.ws, c.id), this.config.presenceStaleMs)) return;
    this.trace('stale');
    safeClose(c.ws, CLOSE_GOING_AWAY, 'stale');
    await this.apply({ type: 'gone', me: this.me(c.ws) });
  }

  private send(m: PresenceServerMessage): void {
    const c = this.current();
    if (c) safeSend(c.ws, m);
  }

  private peer(endpointId: string): DurableObjectStub<Presence> {
    return this.env.PRESENCE.get(this.env.PRESENCE.idFromName(endpointId));
  }

  override async fetch(req: Request): Promise<Response> {
    const up = this.upgrade(req);
    if (up instanceof Response) return up;
    const { id, client, server } = up;
    // Refused sockets (closing, no attachment) are not presence sockets.
    const previous = this.ctx.getWebSockets().filter((ws) => this.attachment(ws) !== null);
    // The records on the old socket's attachment are read now; `connected` places them on the new one.
    this.load();
    this.ctx.acceptWebSocket(server);
    const caps = parsePresenceCaps(new URL(req.url).search);
    const attachment: PresenceAttachment = {
      ...this.attachmentFor(id, Date.now()),
      ...(caps.deliveryAck ? { acks: true as const } : {}),
      ...(caps.roomTicket === true ? { tk: true as const } : {}),
      ...(caps.signalBatch === true ? { bt: true as const } : {}),
      ...(caps.earlyJoin === true ? { ej: true as const } : {}),
    };
    this.setAttachment(server, attachment);
    // One presence socket per endpoint: the newcomer wins, the old one is told and closed.
    for (const old of previous) {
      // Its records move to the new socket; a stale copy must not come back after a wake-up.
      const a = this.attachment<PresenceAttachment>(old);
      if (a?.rec !== undefined) this.attach(old, baseOf(a), null);
      safeSend(old, { type: 'replaced' });
      safeClose(old, CLOSE_NORMAL, 'replaced');
    }
    safeSend(server, { type: 'hello', endpointId: id.sub });
    await this.apply({ type: 'connected', me: meOf(attachment), now: Date.now() });
    return this.switching(client);
  }

  protected override async onFrame(ws: WebSocket, me: SocketAttachment, frame: string | ArrayBuffer, now: number): Promise<void> {
    // Heard from: the socket is live (pings are seen through the auto-response timestamp). The
    // spread keeps the records it carries. Written once, after the event: a frame that changes
    // the records (dial, answer, ringing) writes the attachment then anyway, with this in it.
    this.touchAttachment(ws, { ...me, seenAt: now });
    try {
      const parsed = parsePresenceClientMessage(frame);
      if (this.refused(ws, parsed)) return;
      try {
        await this.apply(this.toEvent(meOf(me), parsed.value, now));
      } catch (e) {
        console.error('presence: handler failed', (e as Error).name);
        safeSend(ws, { type: 'error', code: 'internal', message: 'internal error', reqId: parsed.value.reqId });
      }
    } finally {
      this.flushAttachment(ws);
    }
  }

  private toEvent(me: Me, m: PresenceClientMessage, now: number): PresenceEvent {
    switch (m.type) {
      case 'dial':
        return { type: 'dial', me, reqId: m.reqId, to: m.to, sessionId: randomId(random), ...(m.timeoutMs !== undefined ? { timeoutMs: m.timeoutMs } : {}), now };
      case 'answer':
        return { type: 'answer', me, reqId: m.reqId, accept: m.accept, ...(m.reason !== undefined ? { reason: m.reason } : {}), now };
      case 'cancel':
        return { type: 'cancel', reqId: m.reqId, ...(m.reason === 'timeout' ? { timeout: true as const } : {}) };
      case 'ringing':
        return { type: 'ringing', reqId: m.reqId };
      default:
        return assertNever(m);
    }
  }

  protected override async onLeave(ws: WebSocket): Promise<void> {
    // The leaving socket may hold the records (after a wake-up nothing is loaded yet): read them
    // from it, so `gone` places them on the next socket or in storage.
    this.load(ws);
    await this.apply({ type: 'gone', me: this.me(ws) });
  }

  override async alarm(): Promise<void> {
    // The alarm that fired is spent.
    this.alarmAt = null;
    this.trace('alarm');
    this.meter('request');
    await this.runDue(Date.now());
  }

  /**
   * The next moment anything needs attention: a record's deadline, or the sweep of the current
   * socket (`presenceSweepMs` after it was last heard, never before it could be stale). At rest
   * that sweep is the only wake-up, so it sets what an online endpoint costs (see
   * `DEFAULT_PRESENCE_SWEEP_MS`); a request does not wait for it (`incoming` checks the socket).
   */
  private nextWake(): number | null {
    const c = this.current();
    const sweepMs = Math.max(this.config.presenceStaleMs, this.config.presenceSweepMs);
    return wakeOf(this.state, c ? this.lastHeard(c.ws, c.id) + sweepMs : null);
  }

  /** What is due at `now` (the alarm, or the timer standing in for it): a stale socket, expired records. */
  private async runDue(now: number): Promise<void> {
    await this.dropStale(now);
    const c = this.current();
    await this.apply({ type: 'alarm', now, heardAt: c ? this.lastHeard(c.ws, c.id) : null });
  }

  // ---- RPC from other presence objects ---------------------------------------

  /** Target side: a request arrives. Returns whether it reached the target's socket now. */
  async incoming(call: IncomingCall): Promise<IncomingReply> {
    this.meter('request');
    // A silent socket is not a way to reach the endpoint: hold the request for its return.
    await this.dropStale(Date.now());
    const reply = await this.apply({ type: 'incoming', me: this.me(), call, reqId: randomId(random), now: Date.now() });
    return reply as IncomingReply;
  }

  /** Initiator side: a held request reached the target. `live` false when the dial is gone. */
  async delivered(reqId: string, sessionId: string): Promise<{ live: boolean }> {
    this.meter('request');
    return (await this.apply({ type: 'delivered', reqId, sessionId })) as { live: boolean };
  }

  /** Initiator side: the target answered. Creates the room on accept, before either side hears. */
  async answered(call: AnsweredCall): Promise<AnsweredReply> {
    this.meter('request');
    return (await this.apply({ type: 'answered', me: this.me(), call, now: Date.now() })) as AnsweredReply;
  }

  /** Initiator side: the target's socket died with the request on it; the dial fails `peer_offline` now. */
  async unreachable(reqId: string, sessionId: string): Promise<{ live: boolean }> {
    this.meter('request');
    return (await this.apply({ type: 'unreachable', reqId, sessionId })) as { live: boolean };
  }

  /** Target side: the initiator withdrew (cancel, timeout, offline verdict, or it left). */
  async cancelIncoming(sessionId: string, timeout = false): Promise<void> {
    this.meter('request');
    await this.apply({ type: 'cancel_incoming', sessionId, ...(timeout ? { timeout: true as const } : {}) });
  }
}

