/**
 * The per-pair room Durable Object: the driver of worker/room-rules.ts. It owns the hibernatable
 * WebSockets (one per side, tagged with the endpoint id, identity in the attachment), the storage
 * (meta, seq counters, buffered signals) and the alarm, and carries out the rules' actions.
 *
 * Named by the session id (`roomKey`); created by `init` when the target accepts, or, when both
 * sides declared the `ticket` capability, by the first join from its ticket (worker/ticket.ts).
 * After hibernation or eviction the constructor reloads the state from storage (and a ticketed
 * room's meta from its sockets' attachments) and who is present comes from `ctx.getWebSockets()`,
 * so nothing needed after a wake-up lives only in memory.
 */
import { parseRoomTicket, SESSION_ID_RE, type RoomServerMessage, type SignalData } from '../protocol/messages.js';
import type { Env, Identity } from './env.js';
import { iceServersFor, type Location } from './ice.js';
import { parseRoomFrame, spliceSeq } from './room-frame.js';
import { alarmAt, emptyRoom, seqLease, step, type BufferedSignal, type RoomAction, type RoomEvent, type RoomMeta, type RoomState } from './room-rules.js';
import { assertNever, CLOSE_NORMAL, safeClose, safeSend, SocketObject, type SocketAttachment } from './socket-object.js';
import { readTicket } from './ticket.js';

/**
 * A room socket's attachment: the identity, and the seq lease for signals to this side (every
 * seq below `next` may have been sent; see `SEQ_LEASE`). A counter written exactly, as earlier
 * versions did, is a valid lease.
 */
interface RoomAttachment extends SocketAttachment {
  readonly next?: number;
  /** A room created from a ticket: its meta, so a rebuilt instance without a stored record knows it. */
  readonly meta?: RoomMeta;
}

/** The room row in storage. */
interface StoredRoom {
  readonly meta: RoomMeta;
  readonly ended: RoomState['ended'];
}

/** A member's queue row in storage: the next seq for it and signals waiting for it. */
interface StoredQueue {
  readonly next: number;
  readonly items: readonly BufferedSignal[];
}

/** What an absent row means: nothing sent to that member yet. */
const EMPTY_QUEUE: StoredQueue = { next: 1, items: [] };

/**
 * The object name of a session's room: the session id alone. Session ids are 132 random bits
 * chosen by the service, so nobody can name a room they were not told about; the room itself
 * admits only its two members (its stored meta), and an unknown id reaches an empty object that
 * refuses the socket and stores nothing.
 */
export function roomKey(sessionId: string): string {
  return `room:${sessionId}`;
}

/**
 * One accepted session between two endpoints. Reached only through the Worker (which verified
 * the caller and found the room through the caller's presence object) and `init` from the
 * accepting side's presence object.
 *
 * @example
 * const room = env.ROOM.get(env.ROOM.idFromName(roomKey(sessionId)));
 * await room.init({ sessionId, initiator: a, responder: b, deadline });
 */
export class Room extends SocketObject {
  protected readonly kind = 'room';
  private state: RoomState = emptyRoom();
  /** Events are handled one at a time, in arrival order, even across awaits. */
  private queue: Promise<void> = Promise.resolve();

  /**
   * What storage holds for each member's queue (`q:<endpoint>`), by identity, so `persist` writes
   * a row only when it must: the next seq (while the member has no socket) and signals buffered
   * for it. While a member is connected its next seq lives in its socket's attachment instead, so
   * a relayed signal costs no storage write.
   */
  private stored: Record<string, StoredQueue> = {};
  /** Rows this object holds in storage (for the meter: `deleteAll` removes them). */
  private rows = 0;
  /** The signal being handled and its checked text, while its event runs (see `parseRoomFrame`). */
  private relaying: { readonly data: SignalData; readonly raw: string } | null = null;
  /** The alarm as last set by this instance; undefined until read back after a wake-up. */
  private alarmAt: number | null | undefined;
  /**
   * The storage API object, fetched once: `ctx.storage.kv` crosses into the runtime on every
   * access, and `persist` runs for every relayed signal.
   */
  private readonly kv: DurableObjectStorage['kv'];
  /**
   * The seq lease this instance last wrote on each member's sockets (see `keepCounter`), so a
   * signal the lease still covers costs no socket lookup; empty after a rebuild.
   */
  private leased: Record<string, number> = {};

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.trace('wake');
    // Rebuild from storage (synchronous SQLite-backed KV) and the sockets' attachments: after
    // hibernation or eviction the constructor runs again and nothing needed lives only in memory.
    const kv = (this.kv = ctx.storage.kv);
    const row = kv.get<StoredRoom>('room') ?? null;
    this.meter('read');
    // A room created from a ticket may have no record: its meta is on the members' sockets.
    const meta = row?.meta ?? this.metaFromSockets();
    if (meta !== null) {
      if (row !== null) this.rows = 1;
      this.roomRow = row !== null;
      const nextSeq: Record<string, number> = {};
      const buffer: Record<string, readonly BufferedSignal[]> = {};
      for (const e of [meta.initiator, meta.responder]) {
        // Queue rows are written only with the room's record (see `persist`).
        const q = row !== null ? kv.get<StoredQueue>(`q:${e}`) : undefined;
        if (row !== null) this.meter('read');
        if (q) this.rows++;
        this.stored[e] = q ?? EMPTY_QUEUE;
        buffer[e] = this.stored[e].items;
        // A connected member's lease is on its socket; it is never behind the stored counter.
        // Going on from the lease skips the seqs this side may not have been sent (the previous
        // instance's count is lost with it) but never reuses one.
        let next = this.stored[e].next;
        for (const ws of this.socketsOf(e)) next = Math.max(next, this.attachment<RoomAttachment>(ws)?.next ?? 0);
        nextSeq[e] = next;
      }
      // `hold` is unknown after a rebuild (see RoomState).
      this.state = { meta, ended: row?.ended ?? null, nextSeq, buffer };
    } else {
      // No room: treated as no alarm, which saves reading it back when the room is created. An
      // `init` room writes its row before its first alarm and `delete` removes both; a ticketed
      // room sets one only once it stores a row. An alarm an earlier release left pending fires
      // into an empty room, which deletes it (`alarmed`).
      this.alarmAt = null;
    }
  }

  /** Whether the room's record (`room`) is in storage. */
  private roomRow = false;

  /** The meta a ticketed room left on its members' sockets (see `RoomAttachment.meta`), if any. */
  private metaFromSockets(): RoomMeta | null {
    for (const ws of this.ctx.getWebSockets()) {
      const m = this.attachment<RoomAttachment>(ws)?.meta;
      if (m && typeof m.sessionId === 'string' && typeof m.initiator === 'string' && typeof m.responder === 'string' && typeof m.deadline === 'number') return m;
    }
    return null;
  }

  /**
   * Makes sure the alarm fires by `at`. Each move is a storage write (billed as a row written), so:
   *
   * - an alarm already due sooner stays: the rules re-arm when it fires early (`RoomState.hold`);
   * - a room made from tickets that stores nothing (`storesNothing`) sets none. Its alarm would
   *   delete nothing (no storage) and close nothing anyone could still use: past its deadline the
   *   room refuses every frame, join and renewal, and its first event after the deadline closes
   *   it (room-rules.ts `expire`). The one thing left undone is closing sockets that stay open
   *   and silent past an unrenewed deadline; the library sends one last `renew` at the deadline
   *   (client/room-lease.ts), which does it. Once such a room writes a row (a renewal, signals for
   *   a side that is away, an end a side has not heard), `persist` sets the alarm the rules want.
   */
  private async setAlarm(at: number): Promise<void> {
    if (this.storesNothing()) return;
    if (this.alarmAt === undefined) this.alarmAt = await this.ctx.storage.getAlarm();
    if (this.alarmAt !== null && this.alarmAt <= at) return;
    this.alarmAt = at;
    this.alarmed = true;
    this.meter('alarm_set');
    await this.ctx.storage.setAlarm(at);
  }

  /** A room made from tickets with nothing in storage: it needs no alarm (see `setAlarm`). */
  private storesNothing(): boolean {
    return this.state.meta?.ticketDeadline !== undefined && this.rows === 0 && !this.roomRow;
  }

  /**
   * Whether this object may hold an alarm or its record: it set one, or one fired in it (a room
   * that stored something, or one left by an earlier release). Such an object exists, and is
   * billed for its storage, until `deleteAll`; one that never wrote needs none at its end.
   */
  private alarmed = false;

  private graceMs(): number {
    return this.config.roomGraceMs;
  }

  /** Endpoints with an open socket, optionally not counting `except`. */
  private present(except?: WebSocket): string[] {
    const out = new Set<string>();
    for (const ws of this.ctx.getWebSockets()) {
      if (ws === except || ws.readyState !== WebSocket.OPEN) continue;
      const a = this.attachment(ws);
      if (a) out.add(a.sub);
    }
    return [...out];
  }

  /** Endpoints with an open socket whose token has not expired at `now`. */
  private fresh(now: number): string[] {
    const out = new Set<string>();
    for (const ws of this.ctx.getWebSockets()) {
      if (ws.readyState !== WebSocket.OPEN) continue;
      const a = this.attachment(ws);
      if (a && now < a.exp * 1000) out.add(a.sub);
    }
    return [...out];
  }

  private socketsOf(endpoint: string): WebSocket[] {
    return this.ctx.getWebSockets(endpoint).filter((ws) => ws.readyState === WebSocket.OPEN);
  }

  private enqueue(fn: () => Promise<void>): Promise<void> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Called by the presence object of the accepting side. Idempotent for the same session. */
  async init(meta: RoomMeta): Promise<{ ok: boolean }> {
    // A billable Durable Object request like any other call (it went uncounted before tickets).
    this.meter('request');
    let ok = true;
    await this.enqueue(async () => {
      const before = this.state.meta;
      await this.apply({ type: 'init', meta, now: Date.now() }, null);
      ok = before === null || before.sessionId === meta.sessionId;
    });
    return { ok };
  }

  override async fetch(req: Request): Promise<Response> {
    const up = this.upgrade(req);
    if (up instanceof Response) return up;
    const { id, client, server } = up;
    // A room has no use for the member's homes (membership is its meta): kept off the attachment,
    // which has 2 KiB for the identity, the seq lease and a ticketed room's meta.
    const attachment: SocketAttachment = { ...this.attachmentFor(id, Date.now()), homes: [] };
    const url = new URL(req.url);
    const ticket = parseRoomTicket(url.search);
    let response: Response | null = null;
    await this.enqueue(async () => {
      // A room that does not exist (yet, or any more in memory or storage) is created from the
      // joiner's ticket: both members hold one, so either may come first. It sets no alarm while
      // it stores nothing (see `setAlarm`).
      if (this.state.meta === null && ticket !== null) await this.fromTicket(url, ticket, id.sub);
      await this.join(id, attachment, client, server, (r) => (response = r));
    });
    return response ?? this.switching(client);
  }

  /** Admits `id`'s new socket to the room, or refuses it (`refused` gets the response). */
  private async join(id: Identity, attachment: SocketAttachment, client: WebSocket, server: WebSocket, refused: (r: Response) => void): Promise<void> {
    const m = this.state.meta;
    if (m === null || (id.sub !== m.initiator && id.sub !== m.responder)) {
      // A stranger never gets a room socket (the Worker's routing makes this a second check).
      refused(this.refuse(client, server, 'not a member of this session'));
      return;
    }
    // A second socket of the same side replaces the first (a reconnect after a network drop).
    for (const old of this.socketsOf(id.sub)) safeClose(old, CLOSE_NORMAL, 'replaced');
    this.ctx.acceptWebSocket(server, [id.sub]);
    // The side's counter moves to the new socket (the old one is closing), exact: a lease with
    // nothing reserved yet (see `SEQ_LEASE`).
    const next = this.state.nextSeq[id.sub];
    const carried: RoomAttachment = { ...attachment, ...(next !== undefined ? { next } : {}), ...(m.ticketDeadline !== undefined ? { meta: m } : {}) };
    this.setAttachment(server, carried);
    if (next !== undefined) this.leased[id.sub] = next;
    else delete this.leased[id.sub];
    await this.apply({ type: 'join', endpoint: id.sub, present: this.present(), now: Date.now() }, server);
  }

  /**
   * Creates the room from `joiner`'s ticket for the session this object is named by. A ticket
   * that is not genuine, names someone else, or is past its deadline creates nothing (the join is
   * then refused like any stranger's: no state, no storage, no alarm).
   */
  private async fromTicket(url: URL, ticket: string, joiner: string): Promise<void> {
    // Session ids are URL-safe as they are (SESSION_ID_RE): anything escaped is not one.
    const sessionId = url.pathname.slice(url.pathname.lastIndexOf('/') + 1);
    if (!SESSION_ID_RE.test(sessionId) || (this.ctx.id.name !== undefined && this.ctx.id.name !== roomKey(sessionId))) return;
    const meta = await readTicket(this.config.turnSecrets, sessionId, ticket);
    if (meta === null || this.state.meta !== null || (joiner !== meta.initiator && joiner !== meta.responder) || Date.now() >= meta.deadline) return;
    this.trace('ticket');
    await this.apply({ type: 'init', meta: { ...meta, ticketDeadline: meta.deadline }, now: Date.now() }, null);
  }

  protected override async onFrame(ws: WebSocket, a: SocketAttachment, frame: string | ArrayBuffer): Promise<void> {
    const { parsed, raw } = parseRoomFrame(frame);
    if (this.refused(ws, parsed)) return;
    const m = parsed.value;
    try {
      await this.enqueue(async () => {
        const now = Date.now();
        // The rules relay `m.data` itself; `run` recognises it by identity and sends the raw text.
        this.relaying = raw !== null && m.type === 'signal' ? { data: m.data, raw } : null;
        try {
          await this.apply(
            m.type === 'renew'
              ? { type: 'renew', endpoint: a.sub, fresh: this.fresh(now), present: this.present(), ttlMs: this.config.sessionTtlSeconds * 1000, now }
              : { type: 'message', endpoint: a.sub, message: m, present: this.present(), now },
            ws,
          );
        } finally {
          this.relaying = null;
        }
      });
    } catch (e) {
      // A bug or a storage failure: the sender learns, the object stays up, nothing is echoed.
      console.error('room: handler failed', (e as Error).name);
      safeSend(ws, { type: 'error', code: 'internal', message: 'internal error' });
    }
  }

  protected override onLeave(ws: WebSocket, a: SocketAttachment | null): Promise<void> {
    if (a === null) return Promise.resolve();
    return this.enqueue(() => this.apply({ type: 'leave', endpoint: a.sub, present: this.present(ws), now: Date.now() }, ws));
  }

  override async alarm(): Promise<void> {
    // The alarm that fired is spent, and left this object with storage to delete at its end.
    this.alarmAt = null;
    this.alarmed = true;
    this.trace('alarm');
    this.meter('request');
    await this.enqueue(() => this.apply({ type: 'alarm', present: this.present(), now: Date.now() }, null));
  }

  /** Runs the rules and carries out their actions in order. */
  private async apply(ev: RoomEvent, source: WebSocket | null): Promise<void> {
    const before = this.state;
    const { state, actions } = step(before, ev, this.graceMs());
    this.state = state;
    // Who is connected after the event (a leaving socket no longer counts).
    const present = 'present' in ev ? ev.present : this.present();
    for (const act of actions) await this.run(act, before, source, present);
  }

  private sendTo(endpoint: string, m: RoomServerMessage): void {
    const frame = JSON.stringify(m);
    for (const ws of this.socketsOf(endpoint)) safeSend(ws, frame);
  }

  private locOf(endpoint: string): Location | null {
    const ws = this.socketsOf(endpoint)[0];
    return ws ? (this.attachment(ws)?.loc ?? null) : null;
  }

  private async run(act: RoomAction, before: RoomState, source: WebSocket | null, present: readonly string[]): Promise<void> {
    switch (act.type) {
      case 'send': {
        const m = act.message;
        if (m.type === 'signal' && this.relaying !== null && m.data === this.relaying.data) {
          const frame = spliceSeq(this.relaying.raw, m.seq);
          for (const ws of this.socketsOf(act.to)) safeSend(ws, frame);
          return;
        }
        return this.sendTo(act.to, m);
      }
      case 'send_joined': {
        const iceServers = await iceServersFor(this.config, act.to, this.locOf(act.to), Date.now());
        const sessionId = this.state.meta?.sessionId ?? before.meta?.sessionId ?? '';
        return this.sendTo(act.to, {
          type: 'joined',
          sessionId,
          role: act.role,
          peer: act.peer,
          peerPresent: act.peerPresent,
          iceServers,
          deadline: act.deadline,
        });
      }
      case 'send_ice_servers': {
        const iceServers = await iceServersFor(this.config, act.to, this.locOf(act.to), Date.now());
        return this.sendTo(act.to, { type: 'ice_servers', iceServers });
      }
      case 'send_renewed': {
        const iceServers = await iceServersFor(this.config, act.to, this.locOf(act.to), Date.now());
        return this.sendTo(act.to, { type: 'renewed', deadline: act.deadline, iceServers });
      }
      case 'error':
        if (source) safeSend(source, { type: 'error', code: act.code, message: act.message });
        return;
      case 'close':
        if (act.to === null) {
          if (source) safeClose(source, act.code, act.reason);
          return;
        }
        for (const ws of this.socketsOf(act.to)) safeClose(ws, act.code, act.reason);
        return;
      case 'persist': {
        const lazy = this.storesNothing();
        this.persist(before, present);
        // The first row written: from now on the room keeps the alarm its rules want.
        if (lazy && !this.storesNothing()) await this.setAlarm(alarmAt(this.state, present, Date.now(), this.graceMs()));
        return;
      }
      case 'set_alarm':
        return this.setAlarm(act.at);
      case 'delete': {
        // At the deadline (by the alarm, or the first event after it) or in an alarm after the
        // grace. A Durable Object that ever wrote storage, an alarm included, exists (and is billed
        // for its storage) until `deleteAll`; one made from tickets that never wrote has nothing.
        const wrote = this.rows > 0 || this.roomRow || this.alarmed;
        this.meter('write', this.rows);
        this.rows = 0;
        this.roomRow = false;
        this.stored = {};
        this.leased = {};
        this.trace('deleted');
        if (!wrote) return;
        // `deleteAll` empties the object, a pending alarm and the alarm's record included
        // (bench/signaling/room-leftovers.ts): no `deleteAlarm`.
        this.alarmAt = null;
        this.alarmed = false;
        await this.ctx.storage.deleteAll();
        return;
      }
      default:
        return assertNever(act);
    }
  }

  /**
   * Writes only what must survive without a socket. The room row (meta, ended) when it changed; a
   * member's queue row when signals were buffered for it or flushed, or when its counter moved
   * while it has no socket (it left, so the count must outlive the socket). A connected member's
   * counter goes to its sockets' attachments, which cost no storage write.
   */
  private persist(before: RoomState, present: readonly string[]): void {
    const s = this.state;
    const kv = this.kv;
    if (s.meta === null) return;
    for (const e of [s.meta.initiator, s.meta.responder]) {
      const next = s.nextSeq[e] ?? 1;
      const items = s.buffer[e] ?? [];
      const here = present.includes(e);
      if (here && next !== before.nextSeq[e]) this.keepCounter(e, next);
      const st = this.stored[e] ?? EMPTY_QUEUE;
      const bufferMoved = items !== st.items && !(items.length === 0 && st.items.length === 0);
      const counterOrphaned = !here && s.ended === null && next !== st.next;
      if (!bufferMoved && !counterOrphaned) continue;
      const q: StoredQueue = { next, items };
      kv.put(`q:${e}`, q);
      this.meter('write');
      if (this.stored[e] === undefined || this.stored[e] === EMPTY_QUEUE) this.rows++;
      this.stored[e] = q;
    }
    // The room's record. A room made by `init` has it from the start. A room made from a ticket
    // writes it only once it knows something the tickets do not: a renewed deadline, a row in
    // storage (a queue row: signals or a counter waiting for a member who is away; once written,
    // the record is kept in step), or an end a member has not heard.
    const ticketed = s.meta.ticketDeadline !== undefined;
    const needed = !ticketed || this.rows > 0 || s.meta.deadline !== s.meta.ticketDeadline || (s.ended !== null && present.length < 2);
    if (needed && (!this.roomRow || s.meta !== before.meta || s.ended !== before.ended)) {
      const row: StoredRoom = { meta: s.meta, ended: s.ended };
      kv.put('room', row);
      this.meter('write');
      if (!this.roomRow) this.rows++;
      this.roomRow = true;
    }
  }

  /**
   * Renews `e`'s seq lease on its open sockets' attachments when `next` has used it up (a storage
   * write avoided, but a structured-clone write in the runtime: once per `SEQ_LEASE` signals).
   */
  private keepCounter(e: string, next: number): void {
    const known = this.leased[e];
    if (known !== undefined && seqLease(next, known) === null) return;
    for (const ws of this.socketsOf(e)) {
      const a = this.attachment<RoomAttachment>(ws);
      const lease = a ? seqLease(next, a.next) : null;
      if (a && lease !== null) {
        this.setAttachment(ws, { ...a, next: lease } satisfies RoomAttachment);
        this.leased[e] = lease;
      } else if (a?.next !== undefined) this.leased[e] = a.next;
    }
  }
}
