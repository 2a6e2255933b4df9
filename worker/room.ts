/**
 * The per-pair room Durable Object: the driver of worker/room-rules.ts. It owns the hibernatable
 * WebSockets (one per side, tagged with the endpoint id, identity in the attachment), the storage
 * (meta, seq counters, buffered signals) and the alarm, and carries out the rules' actions.
 *
 * Named `<lower id>:<higher id>:<sessionId>` by the Worker; created by `init` when the target
 * accepts. After hibernation or eviction the constructor reloads the state from storage and who is
 * present comes from `ctx.getWebSockets()`, so nothing needed after a wake-up lives only in memory.
 */
import { DurableObject } from 'cloudflare:workers';
import { encode, parseRoomClientMessage, WS_PROTOCOL, type RoomServerMessage } from '../protocol/messages.js';
import { loadConfig, type Config } from './config.js';
import { readIdentity, type Env } from './env.js';
import { iceServersFor, type Location } from './ice.js';
import { fullBucket, take, type Bucket } from './rate-limit.js';
import { CLOSE_POLICY, emptyRoom, step, type BufferedSignal, type RoomAction, type RoomEvent, type RoomMeta, type RoomState } from './room-rules.js';

/** The attachment each room socket carries; checked when read back. */
interface RoomAttachment {
  readonly v: 1;
  readonly endpoint: string;
  readonly exp: number;
  readonly loc: Location | null;
}

const readAttachment = (ws: WebSocket): RoomAttachment | null => {
  const a = ws.deserializeAttachment() as Partial<RoomAttachment> | null;
  return a && a.v === 1 && typeof a.endpoint === 'string' && typeof a.exp === 'number' ? (a as RoomAttachment) : null;
};

/** Sorted pair + session: the same name whichever side computes it. */
export function roomName(a: string, b: string, sessionId: string): string {
  return a < b ? `${a}:${b}:${sessionId}` : `${b}:${a}:${sessionId}`;
}

const safeSend = (ws: WebSocket, frame: string): void => {
  try {
    ws.send(frame);
  } catch {
    // The socket is already closing; its close event does the bookkeeping.
  }
};

const safeClose = (ws: WebSocket, code: number, reason: string): void => {
  try {
    ws.close(code, reason);
  } catch {
    // Already closed.
  }
};

/**
 * One accepted session between two endpoints. Reached only through the Worker (which verified
 * the caller and found the room through the caller's presence object) and `init` from the
 * accepting side's presence object.
 *
 * @example
 * const room = env.ROOM.get(env.ROOM.idFromName(roomName(a, b, sessionId)));
 * await room.init({ sessionId, initiator: a, responder: b, deadline });
 */
export class Room extends DurableObject<Env> {
  private state: RoomState = emptyRoom();
  private config: Config;
  private readonly buckets = new WeakMap<WebSocket, Bucket>();
  /** Events are handled one at a time, in arrival order, even across awaits. */
  private queue: Promise<void> = Promise.resolve();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.config = loadConfig(env);
    // Rebuild from storage (synchronous SQLite-backed KV): after hibernation or eviction the
    // constructor runs again and nothing needed lives only in memory.
    const kv = ctx.storage.kv;
    const meta = kv.get<RoomMeta>('meta') ?? null;
    if (meta !== null) {
      const buffer: Record<string, BufferedSignal[]> = {};
      for (const e of [meta.initiator, meta.responder]) buffer[e] = kv.get<BufferedSignal[]>(`buf:${e}`) ?? [];
      this.state = {
        meta,
        ended: kv.get<RoomState['ended']>('ended') ?? null,
        nextSeq: kv.get<Record<string, number>>('seq') ?? {},
        buffer,
      };
    }
  }

  /** The alarm as last set by this instance; undefined until read back after a wake-up. */
  private alarmAt: number | null | undefined;

  private async setAlarm(at: number): Promise<void> {
    if (this.alarmAt === undefined) this.alarmAt = await this.ctx.storage.getAlarm();
    if (this.alarmAt === at) return;
    this.alarmAt = at;
    await this.ctx.storage.setAlarm(at);
  }

  private graceMs(): number {
    return this.config.roomGraceMs;
  }

  /** Endpoints with an open socket, optionally not counting `except`. */
  private present(except?: WebSocket): string[] {
    const out = new Set<string>();
    for (const ws of this.ctx.getWebSockets()) {
      if (ws === except || ws.readyState !== WebSocket.OPEN) continue;
      const a = readAttachment(ws);
      if (a) out.add(a.endpoint);
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
    let ok = true;
    await this.enqueue(async () => {
      const before = this.state.meta;
      await this.apply({ type: 'init', meta, now: Date.now() }, null);
      ok = before === null || before.sessionId === meta.sessionId;
    });
    return { ok };
  }

  override async fetch(req: Request): Promise<Response> {
    const id = readIdentity(req);
    if (id === null || req.headers.get('Upgrade')?.toLowerCase() !== 'websocket') return new Response(null, { status: 400 });
    const pair = new WebSocketPair();
    const [client, server] = [pair[0], pair[1]];
    const attachment: RoomAttachment = {
      v: 1,
      endpoint: id.sub,
      exp: id.exp,
      loc: id.lat !== null && id.lon !== null ? { lat: id.lat, lon: id.lon } : null,
    };
    await this.enqueue(async () => {
      const m = this.state.meta;
      if (m === null || (id.sub !== m.initiator && id.sub !== m.responder)) {
        // Accept only to close with a policy code: a stranger never gets a room socket.
        server.accept();
        safeClose(server, CLOSE_POLICY, 'not a member of this session');
        return;
      }
      // A second socket of the same side replaces the first (a reconnect after a network drop).
      for (const old of this.socketsOf(id.sub)) safeClose(old, 1000, 'replaced');
      this.ctx.acceptWebSocket(server, [id.sub]);
      server.serializeAttachment(attachment);
      await this.apply({ type: 'join', endpoint: id.sub, present: this.present(), now: Date.now() }, server);
    });
    return new Response(null, { status: 101, webSocket: client, headers: { 'Sec-WebSocket-Protocol': WS_PROTOCOL } });
  }

  override async webSocketMessage(ws: WebSocket, frame: string | ArrayBuffer): Promise<void> {
    const a = readAttachment(ws);
    if (a === null) return safeClose(ws, CLOSE_POLICY, 'unknown socket');
    const now = Date.now();
    if (now >= a.exp * 1000) return safeClose(ws, CLOSE_POLICY, 'token expired');
    let bucket = this.buckets.get(ws);
    if (!bucket) this.buckets.set(ws, (bucket = fullBucket(now)));
    if (!take(bucket, now)) return safeSend(ws, encode({ type: 'error', code: 'rate_limited', message: 'too many messages' }));
    const parsed = parseRoomClientMessage(frame);
    if (!parsed.ok) {
      const code = parsed.error.code === 'unauthorized' || parsed.error.code === 'forbidden' ? 'malformed' : parsed.error.code;
      return safeSend(ws, encode({ type: 'error', code, message: parsed.error.message }));
    }
    try {
      await this.enqueue(() =>
        this.apply({ type: 'message', endpoint: a.endpoint, message: parsed.value, present: this.present(), now: Date.now() }, ws),
      );
    } catch (e) {
      // A bug or a storage failure: the sender learns, the object stays up, nothing is echoed.
      console.error('room: handler failed', (e as Error).name);
      safeSend(ws, encode({ type: 'error', code: 'internal', message: 'internal error' }));
    }
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    safeClose(ws, code === 1005 || code === 1006 ? 1000 : code, reason);
    await this.leave(ws);
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    await this.leave(ws);
  }

  private leave(ws: WebSocket): Promise<void> {
    const a = readAttachment(ws);
    if (a === null) return Promise.resolve();
    return this.enqueue(() => this.apply({ type: 'leave', endpoint: a.endpoint, present: this.present(ws), now: Date.now() }, ws));
  }

  override async alarm(): Promise<void> {
    // The alarm that fired is spent.
    this.alarmAt = null;
    await this.enqueue(() => this.apply({ type: 'alarm', present: this.present(), now: Date.now() }, null));
  }

  /** Runs the rules and carries out their actions in order. */
  private async apply(ev: RoomEvent, source: WebSocket | null): Promise<void> {
    const before = this.state;
    const { state, actions } = step(before, ev, this.graceMs(), this.config.sessionTtlSeconds * 1000);
    this.state = state;
    for (const act of actions) await this.run(act, before, source);
  }

  private sendTo(endpoint: string, m: RoomServerMessage): void {
    const frame = encode(m);
    for (const ws of this.socketsOf(endpoint)) safeSend(ws, frame);
  }

  private locOf(endpoint: string): Location | null {
    const ws = this.socketsOf(endpoint)[0];
    return ws ? (readAttachment(ws)?.loc ?? null) : null;
  }

  private async run(act: RoomAction, before: RoomState, source: WebSocket | null): Promise<void> {
    switch (act.type) {
      case 'send':
        return this.sendTo(act.to, act.message);
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
        return this.sendTo(act.to, { type: 'ice_servers', iceServers, ...(act.deadline !== undefined ? { deadline: act.deadline } : {}) });
      }
      case 'error':
        if (source) safeSend(source, encode({ type: 'error', code: act.code, message: act.message }));
        return;
      case 'close':
        if (act.to === null) {
          if (source) safeClose(source, act.code, act.reason);
          return;
        }
        for (const ws of this.socketsOf(act.to)) safeClose(ws, act.code, act.reason);
        return;
      case 'persist':
        return this.persist(before);
      case 'set_alarm':
        return this.setAlarm(act.at);
      case 'delete':
        this.alarmAt = null;
        await this.ctx.storage.deleteAlarm();
        await this.ctx.storage.deleteAll();
        return;
      default:
        return assertNever(act);
    }
  }

  /** Writes only what changed since `before`. */
  private persist(before: RoomState): void {
    const s = this.state;
    const kv = this.ctx.storage.kv;
    if (s.meta !== before.meta && s.meta !== null) kv.put('meta', s.meta);
    if (s.ended !== before.ended) kv.put('ended', s.ended);
    if (s.nextSeq !== before.nextSeq) kv.put('seq', s.nextSeq);
    for (const [e, buf] of Object.entries(s.buffer)) {
      if (buf !== before.buffer[e]) kv.put(`buf:${e}`, buf);
    }
  }
}

function assertNever(x: never): never {
  throw new Error(`unhandled action ${JSON.stringify(x)}`);
}
