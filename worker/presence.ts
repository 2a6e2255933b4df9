/**
 * The presence Durable Object, one per endpoint (named by endpoint id). It holds that endpoint's
 * hibernatable presence socket and the records of its pending connection requests, and talks to
 * other endpoints' presence objects and to rooms over RPC.
 *
 *   initiator A                   A's Presence            B's Presence               target B
 *   dial{reqId,to:B}  ---------->  out:reqId  -- incoming() -->  in:tReqId  ---------> request{tReqId}
 *                                  (ringing)  <-- delivered ---
 *                                                               answer{tReqId,accept} <-----
 *                     <-------  session      <-- answered() --  (A inits the Room)
 *                                                                session ------------>
 *
 * Rules live in worker/presence-rules.ts. Everything needed after a wake-up is in storage
 * (records) or in the socket attachment (the verified identity); the alarm drives expiry.
 */
import { DurableObject } from 'cloudflare:workers';
import { encode, parsePresenceClientMessage, WS_PROTOCOL, type PresenceClientMessage, type PresenceServerMessage } from '../protocol/messages.js';
import { loadConfig, type Config } from './config.js';
import { readIdentity, type Env } from './env.js';
import { iceServersFor, type Location } from './ice.js';
import {
  dialOutcome,
  incomingExpired,
  MAX_HELD_REQUESTS,
  MAX_PENDING_DIALS,
  mayConnect,
  nextWake,
  randomId,
  type Dial,
  type Incoming,
  type SessionRecord,
} from './presence-rules.js';
import { fullBucket, take, type Bucket } from './rate-limit.js';
import { roomName } from './room.js';
import { CLOSE_NORMAL, CLOSE_POLICY } from './room-rules.js';

interface PresenceAttachment {
  readonly v: 1;
  readonly sub: string;
  readonly homes: readonly string[];
  readonly exp: number;
  readonly loc: Location | null;
  readonly connectedAt: number;
}

const readAttachment = (ws: WebSocket): PresenceAttachment | null => {
  const a = ws.deserializeAttachment() as Partial<PresenceAttachment> | null;
  return a && a.v === 1 && typeof a.sub === 'string' && Array.isArray(a.homes) && typeof a.exp === 'number'
    ? (a as PresenceAttachment)
    : null;
};

/** What the initiator's object tells the target's. */
export interface IncomingCall {
  readonly from: string;
  readonly fromHomes: readonly string[];
  readonly initiatorReqId: string;
  readonly sessionId: string;
  readonly offlineAt: number;
  readonly timeoutAt: number;
}

const safeSend = (ws: WebSocket, m: PresenceServerMessage): void => {
  try {
    ws.send(encode(m));
  } catch {
    // Closing already; the close handler cleans up.
  }
};

const safeClose = (ws: WebSocket, code: number, reason: string): void => {
  try {
    ws.close(code, reason);
  } catch {
    // Already closed.
  }
};

const random = (n: number): Uint8Array => crypto.getRandomValues(new Uint8Array(n));

/**
 * One endpoint's presence: its socket, its pending requests both ways and its sessions.
 *
 * @example
 * const presence = env.PRESENCE.get(env.PRESENCE.idFromName(endpointId));
 * const session = await presence.sessionPeer(sessionId); // null unless this endpoint is in it
 */
export class Presence extends DurableObject<Env> {
  private readonly config: Config;
  private readonly buckets = new WeakMap<WebSocket, Bucket>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.config = loadConfig(env);
  }

  /** The current presence socket: the newest open one. */
  private current(except?: WebSocket): { ws: WebSocket; id: PresenceAttachment } | null {
    let best: { ws: WebSocket; id: PresenceAttachment } | null = null;
    for (const ws of this.ctx.getWebSockets()) {
      if (ws === except || ws.readyState !== WebSocket.OPEN) continue;
      const id = readAttachment(ws);
      if (id && (best === null || id.connectedAt >= best.id.connectedAt)) best = { ws, id };
    }
    return best;
  }

  private send(m: PresenceServerMessage): void {
    const c = this.current();
    if (c) safeSend(c.ws, m);
  }

  private peer(endpointId: string): DurableObjectStub<Presence> {
    return this.env.PRESENCE.get(this.env.PRESENCE.idFromName(endpointId));
  }

  // Records live in the SQLite-backed synchronous KV, mirrored in memory: a presence object holds
  // a handful, and reads dominate (every change recomputes the alarm from all of them). The
  // mirror is loaded on first use, so a rebuilt instance starts from storage.
  private cache: Map<string, unknown> | null = null;

  private records(): Map<string, unknown> {
    this.cache ??= new Map(this.ctx.storage.kv.list());
    return this.cache;
  }

  private list<T>(prefix: string): T[] {
    const out: T[] = [];
    for (const [k, v] of this.records()) if (k.startsWith(prefix)) out.push(v as T);
    return out;
  }

  private get<T>(key: string): T | undefined {
    return this.records().get(key) as T | undefined;
  }

  private put(key: string, value: unknown): void {
    this.records().set(key, value);
    this.ctx.storage.kv.put(key, value);
  }

  private del(key: string): void {
    this.records().delete(key);
    this.ctx.storage.kv.delete(key);
  }

  /** The alarm as last set by this instance; undefined until read back after a wake-up. */
  private alarmAt: number | null | undefined;

  /** Points the alarm at the next record that needs attention; touches it only when that moved. */
  private async rearm(): Promise<void> {
    const at = nextWake(this.list<Dial>('out:'), this.list<Incoming>('in:'), this.list<SessionRecord>('sess:'));
    if (this.alarmAt === undefined) this.alarmAt = await this.ctx.storage.getAlarm();
    if (at === this.alarmAt) return;
    this.alarmAt = at;
    if (at === null) await this.ctx.storage.deleteAlarm();
    else await this.ctx.storage.setAlarm(at);
  }

  // ---- the socket ------------------------------------------------------------------------

  override async fetch(req: Request): Promise<Response> {
    const id = readIdentity(req);
    if (id === null || req.headers.get('Upgrade')?.toLowerCase() !== 'websocket') return new Response(null, { status: 400 });
    const pair = new WebSocketPair();
    const [client, server] = [pair[0], pair[1]];
    const previous = this.ctx.getWebSockets();
    this.ctx.acceptWebSocket(server);
    const attachment: PresenceAttachment = {
      v: 1,
      sub: id.sub,
      homes: id.homes,
      exp: id.exp,
      loc: id.lat !== null && id.lon !== null ? { lat: id.lat, lon: id.lon } : null,
      connectedAt: Date.now(),
    };
    server.serializeAttachment(attachment);
    // One presence socket per endpoint: the newcomer wins, the old one is told and closed.
    for (const old of previous) {
      safeSend(old, { type: 'replaced' });
      safeClose(old, CLOSE_NORMAL, 'replaced');
    }
    safeSend(server, { type: 'hello', endpointId: id.sub });
    await this.redeliver(server, attachment);
    return new Response(null, { status: 101, webSocket: client, headers: { 'Sec-WebSocket-Protocol': WS_PROTOCOL } });
  }

  /** Hands requests that arrived while the endpoint was away (or on its old socket) to the new socket. */
  private async redeliver(ws: WebSocket, me: PresenceAttachment): Promise<void> {
    const now = Date.now();
    for (const r of this.list<Incoming>('in:')) {
      if (incomingExpired(r, now) || !mayConnect(me.homes, r.fromHomes)) {
        if (r.delivered || incomingExpired(r, now)) this.del(`in:${r.reqId}`);
        continue;
      }
      safeSend(ws, { type: 'request', reqId: r.reqId, from: r.from, sessionId: r.sessionId });
      if (r.delivered) continue;
      this.put(`in:${r.reqId}`, { ...r, delivered: true });
      // If the initiator's object cannot be reached, the request stays; its expiry cleans up.
      const { live } = await this.peer(r.from)
        .delivered(r.initiatorReqId, r.sessionId)
        .catch(() => ({ live: true }));
      if (!live) {
        this.del(`in:${r.reqId}`);
        safeSend(ws, { type: 'cancelled', reqId: r.reqId });
      }
    }
    await this.rearm();
  }

  override async webSocketMessage(ws: WebSocket, frame: string | ArrayBuffer): Promise<void> {
    const me = readAttachment(ws);
    if (me === null) return safeClose(ws, CLOSE_POLICY, 'unknown socket');
    const now = Date.now();
    if (now >= me.exp * 1000) return safeClose(ws, CLOSE_POLICY, 'token expired');
    let bucket = this.buckets.get(ws);
    if (!bucket) this.buckets.set(ws, (bucket = fullBucket(now)));
    if (!take(bucket, now)) return safeSend(ws, { type: 'error', code: 'rate_limited', message: 'too many messages' });
    const parsed = parsePresenceClientMessage(frame);
    if (!parsed.ok) {
      const code = parsed.error.code === 'unauthorized' || parsed.error.code === 'forbidden' ? 'malformed' : parsed.error.code;
      return safeSend(ws, { type: 'error', code, message: parsed.error.message });
    }
    try {
      await this.handle(ws, me, parsed.value);
    } catch (e) {
      console.error('presence: handler failed', (e as Error).name);
      safeSend(ws, { type: 'error', code: 'internal', message: 'internal error', reqId: parsed.value.reqId });
    }
  }

  private async handle(ws: WebSocket, me: PresenceAttachment, m: PresenceClientMessage): Promise<void> {
    switch (m.type) {
      case 'dial':
        return this.dial(ws, me, m.reqId, m.to);
      case 'answer':
        return this.answer(ws, me, m.reqId, m.accept, m.reason);
      case 'cancel':
        return this.cancel(ws, m.reqId);
      default:
        return assertNever(m);
    }
  }

  private async dial(ws: WebSocket, me: PresenceAttachment, reqId: string, to: string): Promise<void> {
    if (to === me.sub) return safeSend(ws, { type: 'error', code: 'invalid_field', message: 'cannot dial yourself', reqId });
    const key = `out:${reqId}`;
    const dials = this.list<Dial>('out:');
    if (dials.some((d) => d.reqId === reqId)) return safeSend(ws, { type: 'error', code: 'out_of_state', message: 'reqId already pending', reqId });
    if (dials.length >= MAX_PENDING_DIALS) return safeSend(ws, { type: 'error', code: 'rate_limited', message: 'too many pending requests', reqId });
    const now = Date.now();
    const dial: Dial = {
      reqId,
      to,
      sessionId: randomId(random),
      ringing: false,
      offlineAt: now + this.config.offlineWaitMs,
      timeoutAt: now + this.config.requestTimeoutMs,
    };
    this.put(key, dial);
    await this.rearm();
    let delivered = false;
    try {
      ({ delivered } = await this.peer(to).incoming({
        from: me.sub,
        fromHomes: me.homes,
        initiatorReqId: reqId,
        sessionId: dial.sessionId,
        offlineAt: dial.offlineAt,
        timeoutAt: dial.timeoutAt,
      }));
    } catch (e) {
      // Treated like an offline target: the alarm answers peer_offline at offlineAt.
      console.error('presence: incoming() failed', (e as Error).name);
    }
    if (delivered) await this.markRinging(reqId, dial.sessionId);
  }

  private async markRinging(reqId: string, sessionId: string): Promise<boolean> {
    const d = this.get<Dial>(`out:${reqId}`);
    if (!d || d.sessionId !== sessionId) return false;
    if (!d.ringing) {
      this.put(`out:${reqId}`, { ...d, ringing: true });
      await this.rearm();
    }
    return true;
  }

  private async answer(ws: WebSocket, me: PresenceAttachment, reqId: string, accept: boolean, reason: string | undefined): Promise<void> {
    const key = `in:${reqId}`;
    const r = this.get<Incoming>(key);
    if (!r || !r.delivered || incomingExpired(r, Date.now())) {
      return safeSend(ws, { type: 'error', code: 'out_of_state', message: 'no such pending request', reqId });
    }
    this.del(key);
    const res = await this.peer(r.from).answered({
      reqId: r.initiatorReqId,
      sessionId: r.sessionId,
      responder: me.sub,
      accept,
      ...(reason !== undefined ? { reason } : {}),
    });
    if (!res.ok) {
      safeSend(ws, { type: 'cancelled', reqId });
    } else if (accept && res.deadline !== undefined) {
      const rec: SessionRecord = { sessionId: r.sessionId, peer: r.from, role: 'responder', deadline: res.deadline };
      this.put(`sess:${r.sessionId}`, rec);
      const iceServers = await iceServersFor(this.config, me.sub, me.loc, Date.now());
      safeSend(ws, { type: 'session', reqId, sessionId: r.sessionId, peer: r.from, role: 'responder', iceServers, deadline: res.deadline });
    }
    await this.rearm();
  }

  private async cancel(ws: WebSocket, reqId: string): Promise<void> {
    const d = this.get<Dial>(`out:${reqId}`);
    if (!d) return safeSend(ws, { type: 'error', code: 'out_of_state', message: 'no such pending request', reqId });
    this.del(`out:${reqId}`);
    safeSend(ws, { type: 'cancelled', reqId });
    await this.rearm();
    await this.peer(d.to).cancelIncoming(d.sessionId).catch(() => undefined);
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    safeClose(ws, code === 1005 || code === 1006 ? CLOSE_NORMAL : code, reason);
    await this.gone(ws);
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    await this.gone(ws);
  }

  /** The endpoint went away (not replaced): its outgoing requests are withdrawn. */
  private async gone(ws: WebSocket): Promise<void> {
    if (this.current(ws) !== null) return;
    for (const d of this.list<Dial>('out:')) {
      this.del(`out:${d.reqId}`);
      await this.peer(d.to).cancelIncoming(d.sessionId).catch(() => undefined);
    }
    await this.rearm();
  }

  override async alarm(): Promise<void> {
    // The alarm that fired is spent.
    this.alarmAt = null;
    const now = Date.now();
    for (const d of this.list<Dial>('out:')) {
      const outcome = dialOutcome(d, now);
      if (outcome === null) continue;
      this.del(`out:${d.reqId}`);
      this.send({ type: 'dial_failed', reqId: d.reqId, code: outcome });
      await this.peer(d.to).cancelIncoming(d.sessionId).catch(() => undefined);
    }
    for (const r of this.list<Incoming>('in:')) {
      if (!incomingExpired(r, now)) continue;
      this.del(`in:${r.reqId}`);
      if (r.delivered) this.send({ type: 'cancelled', reqId: r.reqId });
    }
    for (const s of this.list<SessionRecord>('sess:')) {
      if (now >= s.deadline) this.del(`sess:${s.sessionId}`);
    }
    await this.rearm();
  }

  // ---- RPC from other presence objects and the Worker ---------------------------------------

  /** Target side: a request arrives. Returns whether it reached the target's socket now. */
  async incoming(call: IncomingCall): Promise<{ delivered: boolean }> {
    const c = this.current();
    if (c !== null && !mayConnect(c.id.homes, call.fromHomes)) return { delivered: false };
    const held = this.list<Incoming>('in:');
    if (held.some((r) => r.sessionId === call.sessionId)) return { delivered: false };
    if (c === null && held.length >= MAX_HELD_REQUESTS) return { delivered: false };
    const r: Incoming = { reqId: randomId(random), ...call, delivered: c !== null };
    this.put(`in:${r.reqId}`, r);
    await this.rearm();
    if (c !== null) safeSend(c.ws, { type: 'request', reqId: r.reqId, from: r.from, sessionId: r.sessionId });
    return { delivered: c !== null };
  }

  /** Initiator side: a held request reached the target. `live` false when the dial is gone. */
  async delivered(reqId: string, sessionId: string): Promise<{ live: boolean }> {
    return { live: await this.markRinging(reqId, sessionId) };
  }

  /** Initiator side: the target answered. Creates the room on accept. */
  async answered(a: {
    reqId: string;
    sessionId: string;
    responder: string;
    accept: boolean;
    reason?: string;
  }): Promise<{ ok: boolean; deadline?: number }> {
    const key = `out:${a.reqId}`;
    const d = this.get<Dial>(key);
    if (!d || d.sessionId !== a.sessionId || d.to !== a.responder || Date.now() >= d.timeoutAt) return { ok: false };
    this.del(key);
    const me = this.current();
    if (!a.accept) {
      this.send({ type: 'rejected', reqId: a.reqId, reason: a.reason ?? 'declined' });
      await this.rearm();
      return { ok: true };
    }
    const self = me?.id.sub;
    if (self === undefined) {
      await this.rearm();
      return { ok: false };
    }
    const deadline = Date.now() + this.config.sessionTtlSeconds * 1000;
    const room = this.env.ROOM.get(this.env.ROOM.idFromName(roomName(self, a.responder, a.sessionId)));
    await room.init({ sessionId: a.sessionId, initiator: self, responder: a.responder, deadline });
    const rec: SessionRecord = { sessionId: a.sessionId, peer: a.responder, role: 'initiator', deadline };
    this.put(`sess:${a.sessionId}`, rec);
    await this.rearm();
    const iceServers = await iceServersFor(this.config, self, me?.id.loc ?? null, Date.now());
    this.send({ type: 'session', reqId: a.reqId, sessionId: a.sessionId, peer: a.responder, role: 'initiator', iceServers, deadline });
    return { ok: true, deadline };
  }

  /** Target side: the initiator withdrew (cancel, timeout, offline verdict, or it left). */
  async cancelIncoming(sessionId: string): Promise<void> {
    for (const r of this.list<Incoming>('in:')) {
      if (r.sessionId !== sessionId) continue;
      this.del(`in:${r.reqId}`);
      if (r.delivered) this.send({ type: 'cancelled', reqId: r.reqId });
    }
    await this.rearm();
  }

  /** Used by the Worker to route a room socket: the caller's session with that id, if any. */
  async sessionPeer(sessionId: string): Promise<SessionRecord | null> {
    const s = this.get<SessionRecord>(`sess:${sessionId}`);
    return s && Date.now() < s.deadline ? s : null;
  }
}

function assertNever(x: never): never {
  throw new Error(`unhandled message ${JSON.stringify(x)}`);
}
