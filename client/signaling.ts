/**
 * The two signaling sockets (protocol/messages.ts): presence (one per endpoint, for requests and
 * answers) and the pair room (one per session, for SDP, candidates, identity and bye). Both
 * authenticate with the access token in `Sec-WebSocket-Protocol` (`wsProtocols`), reconnect by
 * themselves with exponential backoff and jitter, and parse every server frame (`wire.ts`):
 * a malformed frame is dropped and counted, never thrown.
 *
 * Keepalive (client/keepalive.ts): an idle socket pings the service every
 * `KEEPALIVE_INTERVAL_MS`; no frame back within `KEEPALIVE_TIMEOUT_MS` means the path died
 * silently (a NAT lost the mapping), so the socket is dropped without a close handshake and a
 * fresh one is opened. `PONG_FRAME` is consumed here and never reaches the parser.
 *
 * Close: `close()` sends the close frame after every queued frame (a final `bye` leaves first)
 * and resolves once the socket is closed or `CLOSE_HANDSHAKE_MS` passed; the Node factory then
 * drops the TCP connection, so no handle outlives the socket (README: workerd keeps the TCP
 * connection of a closed hibernatable socket for a while).
 *
 * WebSockets come from a factory: the `ws` package in Node (`client/node.ts`), the global
 * `WebSocket` in browsers, so this file stays portable.
 */
import {
  encode,
  parsePresenceServerMessage,
  parseRoomServerMessage,
  PING_FRAME,
  PONG_FRAME,
  presenceQuery,
  roomQuery,
  wsProtocols,
  type PresenceClientMessage,
  type PresenceServerMessage,
  type RoomClientMessage,
  type RoomServerMessage,
} from '../protocol/messages.js';
import type { Parsed } from '../protocol/errors.js';
import { Emitter } from './emitter.js';
import { LinkError } from './errors.js';
import { Keepalive, type KeepaliveOptions } from './keepalive.js';

/** The part of the WHATWG WebSocket API we use (the `ws` package implements it too). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  /**
   * Drops the connection at once, without a close handshake (Node's `ws` has it; browsers do
   * not, and `close()` is used there). For a dead path, where a handshake can never complete.
   */
  terminate?(): void;
}

/**
 * Opens a WebSocket. Node's factory reports an HTTP 401/403 on the upgrade as close code 4401 /
 * 4403 (browsers cannot see the status; they report 1006).
 */
export type WebSocketFactory = (url: string, protocols: string[]) => WebSocketLike;

/** A token, or a function returning a fresh one for each (re)connect. */
export type TokenSource = string | (() => string | Promise<string>);

/** Backoff after a dropped socket: first retry soon (a blip), then doubling up to a ceiling that keeps idle load low. */
export const RECONNECT = { initialMs: 250, maxMs: 10_000, factor: 2, jitter: 0.3 } as const;
/** A socket that did not open within this is abandoned and retried. */
export const OPEN_TIMEOUT_MS = 10_000;
/** Frames queued while a room socket reconnects; bounds memory if the room stays away. */
export const MAX_QUEUED_FRAMES = 512;
/** Fresh tokens tried after the service refused one on a reconnect, before giving up. */
export const MAX_AUTH_RETRIES = 3;
/**
 * How long `close()` waits for the close handshake before the connection is dropped: the close
 * frame (and the frames before it) left long before; waiting longer only keeps a handle open.
 */
export const CLOSE_HANDSHAKE_MS = 1_000;
/** Close code reported (in `down`) when the keepalive declared the path dead (RFC 6455 §7.4.1: abnormal closure). */
export const DEAD_PATH_CLOSE_CODE = 1006;
/** WebSocket close codes that mean "your credentials are refused": stop retrying. */
const AUTH_CLOSE_CODES = new Set([1008, 4401, 4403]);

const OPEN = 1;

function backoff(attempt: number): number {
  const base = Math.min(RECONNECT.maxMs, RECONNECT.initialMs * RECONNECT.factor ** attempt);
  return base * (1 - RECONNECT.jitter + Math.random() * 2 * RECONNECT.jitter);
}

interface SocketEvents<M> {
  message: [m: M];
  open: [];
  down: [code: number];
  unauthorized: [];
}

/**
 * One auto-reconnecting, parsing socket. `connect()` resolves after the first open; afterwards
 * drops are retried until `close()`.
 */
class ReconnectingSocket<M extends { type: string }> extends Emitter<SocketEvents<M>> {
  private ws: WebSocketLike | null = null;
  private attempt = 0;
  private retry: ReturnType<typeof setTimeout> | null = null;
  private closed = false;
  private queue: string[] = [];
  private everOpened = false;
  private authRetries = 0;
  private keepalive: Keepalive | null = null;
  private keepaliveTimer: ReturnType<typeof setTimeout> | null = null;
  /** Frames the server sent that did not parse (a hostile or buggy server). */
  badFrames = 0;
  /** Connections given up because the keepalive found the path dead. */
  deadPaths = 0;

  constructor(
    private readonly url: string,
    private readonly token: TokenSource,
    private readonly factory: WebSocketFactory,
    private readonly parse: (f: unknown) => Parsed<M>,
    private readonly queueWhileDown: boolean,
    private readonly keepaliveOptions: KeepaliveOptions = {},
  ) {
    super();
  }

  get isOpen(): boolean {
    return this.ws?.readyState === OPEN;
  }

  /** Opens the first connection; rejects with Unauthorized or the network error. */
  connect(): Promise<void> {
    return new Promise((resolve, reject) => {
      const offOpen = this.once('open', () => {
        offDown();
        offAuth();
        resolve();
      });
      const offAuth = this.once('unauthorized', () => {
        offOpen();
        offDown();
        reject(new LinkError('Unauthorized', 'the signaling service refused the access token'));
      });
      const offDown = this.once('down', (code) => {
        offOpen();
        offAuth();
        this.close();
        reject(new LinkError('Closed', `could not reach the signaling service (close code ${code})`));
      });
      void this.open();
    });
  }

  private async open(): Promise<void> {
    if (this.closed) return;
    let token: string;
    try {
      token = typeof this.token === 'string' ? this.token : await this.token();
    } catch (e) {
      this.scheduleRetry();
      void e;
      return;
    }
    if (this.closed) return;
    let ws: WebSocketLike;
    try {
      ws = this.factory(this.url, wsProtocols(token));
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    const openTimer = setTimeout(() => ws.close(), OPEN_TIMEOUT_MS);
    ws.onopen = () => {
      clearTimeout(openTimer);
      this.attempt = 0;
      this.everOpened = true;
      this.keepalive = new Keepalive(Date.now(), this.keepaliveOptions);
      this.armKeepalive(ws);
      const q = this.queue;
      this.queue = [];
      for (const f of q) ws.send(f);
      this.emit('open');
    };
    ws.onmessage = (ev) => {
      // Any frame proves the path alive; a pong carries nothing else.
      this.keepalive?.received(Date.now());
      if (ev.data === PONG_FRAME) return;
      const m = this.parse(ev.data);
      if (!m.ok) {
        this.badFrames++;
        return;
      }
      this.emit('message', m.value);
    };
    ws.onerror = () => undefined; // onclose follows and carries the code
    ws.onclose = (ev) => {
      clearTimeout(openTimer);
      if (this.ws !== ws) return;
      this.ws = null;
      this.stopKeepalive();
      if (AUTH_CLOSE_CODES.has(ev.code)) {
        // A token source that can mint a fresh token gets another try (the old one may have
        // expired); a fixed token that is refused will be refused again: stop.
        if (this.everOpened && typeof this.token === 'function' && this.authRetries++ < MAX_AUTH_RETRIES) {
          this.emit('down', ev.code);
          this.scheduleRetry();
          return;
        }
        this.closed = true;
        this.emit('unauthorized');
        return;
      }
      this.emit('down', ev.code);
      this.scheduleRetry();
    };
  }

  /** One timer per socket, set for the keepalive's next deadline; messages only move the deadline. */
  private armKeepalive(ws: WebSocketLike): void {
    const ka = this.keepalive;
    if (!ka) return;
    if (this.keepaliveTimer) clearTimeout(this.keepaliveTimer);
    this.keepaliveTimer = setTimeout(() => {
      this.keepaliveTimer = null;
      if (this.ws !== ws || this.keepalive !== ka) return;
      switch (ka.poll(Date.now())) {
        case 'ping':
          try {
            ws.send(PING_FRAME);
          } catch {
            // the socket is failing; its close event or the pong deadline will tell
          }
          break;
        case 'dead':
          return this.abandon(ws);
        case null:
          break;
      }
      this.armKeepalive(ws);
    }, Math.max(0, ka.nextAt() - Date.now()));
  }

  private stopKeepalive(): void {
    if (this.keepaliveTimer) clearTimeout(this.keepaliveTimer);
    this.keepaliveTimer = null;
    this.keepalive = null;
  }

  /**
   * The path is dead: drop the connection without a handshake (none could complete; `ws` would
   * otherwise hold it for its 30 s close timeout) and reconnect at once, which opens a new
   * connection and so a new NAT mapping.
   */
  private abandon(ws: WebSocketLike): void {
    this.deadPaths++;
    this.ws = null;
    this.stopKeepalive();
    ws.onclose = null;
    ws.onmessage = null;
    ws.onopen = null;
    try {
      if (ws.terminate) ws.terminate();
      else ws.close(4000, 'keepalive timeout');
    } catch {
      // already closed
    }
    this.emit('down', DEAD_PATH_CLOSE_CODE);
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.closed || this.retry) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      void this.open();
    }, backoff(this.attempt++));
  }

  /** Sends a frame now, or queues it until the socket is back (if this socket queues). */
  send(frame: string): boolean {
    if (this.ws?.readyState === OPEN) {
      this.ws.send(frame);
      return true;
    }
    if (this.queueWhileDown && !this.closed && this.queue.length < MAX_QUEUED_FRAMES) {
      this.queue.push(frame);
      return true;
    }
    return false;
  }

  /**
   * The local network changed: the current socket may belong to an address that is gone, where a
   * close handshake would wait for its timeout. Abandon it without one and connect again now;
   * frames sent meanwhile queue as on any reconnect.
   */
  reconnectNow(): void {
    if (this.closed) return;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      ws.onopen = null;
      try {
        ws.close(4000, 'network changed');
      } catch {
        // already closing
      }
    }
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    this.attempt = 0;
    void this.open();
  }

  /** Test and fault hook: drops the current socket as a network failure would; it reconnects. */
  drop(): void {
    this.ws?.close(4000, 'dropped');
  }

  /**
   * Closes for good: frames already sent leave before the close frame. Resolves once the socket
   * is closed, or after `CLOSE_HANDSHAKE_MS` (the Node factory drops the connection by then).
   * Idempotent.
   */
  close(code = 1000): Promise<void> {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    this.queue = [];
    this.stopKeepalive();
    const ws = this.ws;
    this.ws = null;
    this.removeAllListeners();
    if (!ws) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const t = setTimeout(resolve, CLOSE_HANDSHAKE_MS);
      ws.onmessage = null;
      ws.onopen = null;
      ws.onclose = () => {
        clearTimeout(t);
        resolve();
      };
      try {
        ws.close(code);
      } catch {
        clearTimeout(t);
        resolve();
      }
    });
  }
}

/**
 * The presence socket: `GET /v1/presence?caps=ack,ticket,batch,early`. It declares the
 * delivery-ack capability (the endpoint, client/endpoint.ts, answers every `request` with
 * `ringing` at once, so the service can tell a request lost on a dead socket from one the endpoint
 * is deciding on), room tickets, and signal batches and early join unless the endpoint turned
 * them off.
 */
export class PresenceSocket extends ReconnectingSocket<PresenceServerMessage> {
  constructor(signalingUrl: string, token: TokenSource, factory: WebSocketFactory, keepalive?: KeepaliveOptions, caps: { signalBatch: boolean; earlyJoin: boolean } = { signalBatch: true, earlyJoin: true }) {
    super(joinUrl(signalingUrl, '/v1/presence') + presenceQuery({ deliveryAck: true, roomTicket: true, ...caps }), token, factory, parsePresenceServerMessage, false, keepalive);
  }
  post(m: PresenceClientMessage): boolean {
    return this.send(encode(m));
  }
}

/** A pair room socket: `GET /v1/rooms/:sessionId`, with `?ticket=` when the session has one. */
export class RoomSocket extends ReconnectingSocket<RoomServerMessage> {
  constructor(signalingUrl: string, sessionId: string, ticket: string | undefined, token: TokenSource, factory: WebSocketFactory, keepalive?: KeepaliveOptions) {
    super(joinUrl(signalingUrl, `/v1/rooms/${encodeURIComponent(sessionId)}`) + roomQuery(ticket), token, factory, parseRoomServerMessage, true, keepalive);
  }
  post(m: RoomClientMessage): boolean {
    return this.send(encode(m));
  }
  /**
   * Asks the service to extend the session past its deadline (both sides must be in the room);
   * both sides then get `renewed{deadline, iceServers}`, or this side an `error{out_of_state}`.
   */
  renew(): boolean {
    return this.post({ type: 'renew' });
  }
}

/** The presence endpoint's path; a signaling URL may end in it (see `joinUrl`). */
const PRESENCE_PATH = '/v1/presence';

/**
 * Joins the service base URL (`ws://host:port` or with a path prefix) and an API path. The
 * presence URL itself (`ws://host:port/v1/presence`, what `npm start` and operators' dashboards
 * show) is accepted as the base too: its `/v1/presence` suffix is dropped first, so both forms
 * reach the same endpoints instead of the second failing with a bare close 1006.
 */
export function joinUrl(base: string, path: string): string {
  const u = new URL(base);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  let prefix = u.pathname.replace(/\/+$/, '');
  if (prefix.endsWith(PRESENCE_PATH)) prefix = prefix.slice(0, -PRESENCE_PATH.length);
  u.pathname = prefix + path;
  u.search = '';
  u.hash = '';
  return u.toString();
}
