/**
 * What the two Durable Objects (Presence, Room) share about their hibernatable sockets, in one
 * base class (the idea of partyserver's `Server`): the upgrade with the identity the Worker
 * verified, the attachment every socket carries (checked when read back), the keepalive answered
 * by the runtime, the per-socket rate limit, token expiry, frame-level errors, and close
 * bookkeeping. Subclasses get a frame only after all of that passed.
 *
 * Keepalive: clients send exactly `PING_FRAME` every `KEEPALIVE_INTERVAL_MS`. The runtime answers
 * it with `PONG_FRAME` itself (`setWebSocketAutoResponse`), so a ping neither wakes nor bills a
 * hibernated object; `getWebSocketAutoResponseTimestamp` tells when a socket last pinged, which
 * with the last real frame tells whether the client is still there (`lastHeard`).
 */
import { DurableObject } from 'cloudflare:workers';
import { encode, PING_FRAME, PONG_FRAME, WS_PROTOCOL, type ErrorCode, type PresenceServerMessage, type RoomServerMessage } from '../protocol/messages.js';
import type { Parsed } from '../protocol/errors.js';
import { loadConfig, type Config } from './config.js';
import { readIdentity, REFUSE_HEADER, type Env, type Identity } from './env.js';
import type { Location } from './ice.js';
import { fullBucket, take, type Bucket } from './rate-limit.js';
import { CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY } from './room-rules.js';

export { CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY };

/** What every socket of either object carries (≤ 2 KiB serialized, the runtime's limit). */
/** Tag of refused sockets; `!` is outside ENDPOINT_ID_RE, so no endpoint's tag can collide. */
export const REFUSED_TAG = '!refused';

export interface SocketAttachment {
  readonly v: 1;
  /** The endpoint id the Worker verified. */
  readonly sub: string;
  readonly homes: readonly string[];
  /** Token expiry, unix seconds. */
  readonly exp: number;
  readonly loc: Location | null;
  /** Unix ms the socket was accepted. */
  readonly connectedAt: number;
  /** Unix ms of the last frame that reached the object (pings do not); absent until one did. */
  readonly seenAt?: number;
}

/** Reads a socket's attachment back, checking its shape; null for anything else. */
export function readAttachment<A extends SocketAttachment = SocketAttachment>(ws: WebSocket): A | null {
  let a: Partial<SocketAttachment> | null;
  try {
    a = ws.deserializeAttachment() as Partial<SocketAttachment> | null;
  } catch {
    return null;
  }
  return a &&
    a.v === 1 &&
    typeof a.sub === 'string' &&
    Array.isArray(a.homes) &&
    typeof a.exp === 'number' &&
    typeof a.connectedAt === 'number'
    ? (a as A)
    : null;
}

export const safeSend = (ws: WebSocket, m: PresenceServerMessage | RoomServerMessage | string): void => {
  try {
    ws.send(typeof m === 'string' ? m : encode(m));
  } catch {
    // The socket is already closing; its close event does the bookkeeping.
  }
};

export const safeClose = (ws: WebSocket, code: number, reason: string): void => {
  try {
    ws.close(code, reason);
  } catch {
    // Already closed.
  }
};

/** The error code a parse failure is reported with (auth codes never come from a frame). */
export const frameErrorCode = (code: string): ErrorCode =>
  code === 'unauthorized' || code === 'forbidden' ? 'malformed' : (code as ErrorCode);

export function assertNever(x: never): never {
  throw new Error(`unhandled ${JSON.stringify(x)}`);
}

/**
 * Base of both Durable Objects.
 *
 * @example
 * class Room extends SocketObject {
 *   protected readonly kind = 'room';
 *   protected async onFrame(ws, a, frame, now) { ... }
 *   protected async onLeave(ws, a) { ... }
 * }
 */
export abstract class SocketObject extends DurableObject<Env> {
  protected readonly config: Config;
  private readonly buckets = new WeakMap<WebSocket, Bucket>();
  /**
   * Attachments as last read or written by this instance. Deserializing one is a structured-clone
   * read in the runtime, and the room's hot path (24 relayed signals per exchange) asked for them
   * several times per frame; an instance sees every write (`setAttachment`), and a new instance
   * after hibernation starts empty, so the cache never disagrees with the runtime's copy.
   */
  private readonly attachments = new WeakMap<WebSocket, SocketAttachment | null>();
  /** Sockets whose cached attachment is newer than the runtime's copy (see `touch`). */
  private readonly unwritten = new Set<WebSocket>();
  /** For logs and traces. */
  protected abstract readonly kind: 'presence' | 'room';

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.config = loadConfig(env);
    // Answered by the runtime without waking the object (see the module header).
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING_FRAME, PONG_FRAME));
  }

  /**
   * One line per object event when `DEBUG_TRACE_EVENTS` is set (tests use it to prove that a ping
   * does not wake a hibernated object). Never carries frame contents or identities.
   */
  protected trace(event: string): void {
    if (this.config.traceEvents) console.log(`homelink-trace ${this.kind} ${event}`);
  }

  /**
   * Counts a billable unit (bench/signaling reads these with `DEBUG_TRACE_EVENTS`): `request`
   * (an upgrade, RPC call or alarm reaching the object), `message` (an incoming WebSocket frame),
   * `read` / `write` (storage rows), `alarm_set` (an alarm moved).
   */
  protected meter(unit: 'request' | 'message' | 'read' | 'write' | 'alarm_set', n = 1): void {
    if (this.config.traceEvents && n > 0) console.log(`homelink-meter ${this.kind} ${unit} ${n}`);
  }

  /**
   * Checks the upgrade the Worker forwarded: the verified identity and a fresh socket pair, a 400,
   * or, when the Worker asked for a refusal, the 101 of a socket already closed with 1008.
   */
  protected upgrade(req: Request): { id: Identity; client: WebSocket; server: WebSocket } | Response {
    this.meter('request');
    const id = readIdentity(req);
    if (id === null || req.headers.get('Upgrade')?.toLowerCase() !== 'websocket') return new Response(null, { status: 400 });
    const pair = new WebSocketPair();
    const refuse = req.headers.get(REFUSE_HEADER);
    if (refuse !== null) return this.refuse(pair[0], pair[1], refuse.slice(0, 120));
    return { id, client: pair[0], server: pair[1] };
  }

  /**
   * Accepts a socket only to close it with 1008. Through the hibernation API (no attachment, a tag
   * no endpoint id can have), not `accept()`: a socket accepted in JS and closed at once made the
   * runtime log an uncaught "Network connection lost".
   */
  protected refuse(client: WebSocket, server: WebSocket, reason: string): Response {
    this.ctx.acceptWebSocket(server, [REFUSED_TAG]);
    safeClose(server, CLOSE_POLICY, reason);
    return this.switching(client);
  }

  protected attachmentFor(id: Identity, now: number): SocketAttachment {
    return {
      v: 1,
      sub: id.sub,
      homes: id.homes,
      exp: id.exp,
      loc: id.lat !== null && id.lon !== null ? { lat: id.lat, lon: id.lon } : null,
      connectedAt: now,
    };
  }

  /** The 101 answer handing `client` back, with only the version subprotocol selected. */
  protected switching(client: WebSocket): Response {
    return new Response(null, { status: 101, webSocket: client, headers: { 'Sec-WebSocket-Protocol': WS_PROTOCOL } });
  }

  /**
   * Unix ms the client was last heard on `ws`: a frame, a ping (answered by the runtime), or the
   * upgrade itself.
   */
  protected lastHeard(ws: WebSocket, a: SocketAttachment): number {
    let pinged = 0;
    try {
      pinged = this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0;
    } catch {
      // Not a socket of this object; treat as never pinged.
    }
    return Math.max(a.connectedAt, a.seenAt ?? 0, pinged);
  }

  /** `ws`'s attachment, checked (see `readAttachment`), read from the runtime once per instance. */
  protected attachment<A extends SocketAttachment = SocketAttachment>(ws: WebSocket): A | null {
    let a = this.attachments.get(ws);
    if (a === undefined) this.attachments.set(ws, (a = readAttachment(ws)));
    return a as A | null;
  }

  /** Writes `ws`'s attachment (throws, changing nothing, when the runtime refuses it). */
  protected setAttachment<A extends SocketAttachment>(ws: WebSocket, a: A): void {
    ws.serializeAttachment(a);
    this.attachments.set(ws, a);
    this.unwritten.delete(ws);
  }

  /**
   * Changes `ws`'s attachment in this instance only, until `setAttachment` or `flushAttachment`
   * writes it: a frame's handler that writes the attachment anyway (records changed) then makes
   * one structured-clone write instead of two. Only for what may be lost should the instance die
   * before the flush (a liveness timestamp), since the flush comes after the handler's awaits.
   */
  protected touchAttachment<A extends SocketAttachment>(ws: WebSocket, a: A): void {
    this.attachments.set(ws, a);
    this.unwritten.add(ws);
  }

  /** Writes `ws`'s attachment if `touchAttachment` changed it since the last write. */
  protected flushAttachment(ws: WebSocket): void {
    if (!this.unwritten.has(ws)) return;
    this.unwritten.delete(ws);
    const a = this.attachments.get(ws);
    if (a) {
      try {
        ws.serializeAttachment(a);
      } catch {
        // The socket closed meanwhile; its attachment is of no further use.
      }
    }
  }

  /** A frame that passed identity, expiry and rate checks. */
  protected abstract onFrame(ws: WebSocket, a: SocketAttachment, frame: string | ArrayBuffer, now: number): Promise<void>;
  /** The socket closed or failed; `a` is null for a socket without a valid attachment. */
  protected abstract onLeave(ws: WebSocket, a: SocketAttachment | null): Promise<void>;

  override async webSocketMessage(ws: WebSocket, frame: string | ArrayBuffer): Promise<void> {
    this.trace('message');
    this.meter('message');
    const a = this.attachment(ws);
    if (a === null) return safeClose(ws, CLOSE_POLICY, 'unknown socket');
    const now = Date.now();
    if (now >= a.exp * 1000) return safeClose(ws, CLOSE_POLICY, 'token expired');
    let bucket = this.buckets.get(ws);
    if (!bucket) this.buckets.set(ws, (bucket = fullBucket(now)));
    if (!take(bucket, now)) return safeSend(ws, { type: 'error', code: 'rate_limited', message: 'too many messages' });
    await this.onFrame(ws, a, frame, now);
  }

  /** Sends the error frame for a parse failure; true when `parsed` failed. */
  protected refused<T>(ws: WebSocket, parsed: Parsed<T>): parsed is Extract<Parsed<T>, { ok: false }> {
    if (parsed.ok) return false;
    safeSend(ws, { type: 'error', code: frameErrorCode(parsed.error.code), message: parsed.error.message });
    return true;
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    // Complete the closing handshake (RFC 6455 §5.5.1); 1005/1006 must not be sent on the wire.
    safeClose(ws, code === 1005 || code === 1006 ? CLOSE_NORMAL : code, reason);
    await this.onLeave(ws, this.attachment(ws));
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    await this.onLeave(ws, this.attachment(ws));
  }
}
