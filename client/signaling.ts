/**
 * The two signaling sockets (protocol/messages.ts): presence (one per endpoint, for requests and
 * answers) and the pair room (one per session, for SDP, candidates, identity and bye). Both
 * authenticate with the access token in `Sec-WebSocket-Protocol` (`wsProtocols`), reconnect by
 * themselves with exponential backoff and jitter, and parse every server frame (`wire.ts`):
 * a malformed frame is dropped and counted, never thrown.
 *
 * WebSockets come from a factory: the `ws` package in Node (`client/node.ts`), the global
 * `WebSocket` in browsers, so this file stays portable.
 */
import { encode, wsProtocols, type PresenceClientMessage, type PresenceServerMessage, type RoomClientMessage, type RoomServerMessage } from '../protocol/messages.js';
import type { Parsed } from '../protocol/errors.js';
import { Emitter } from './emitter.js';
import { LinkError } from './errors.js';
import { parsePresenceServerMessage, parseRoomServerMessage } from './wire.js';

/** The part of the WHATWG WebSocket API we use (the `ws` package implements it too). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
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
  /** Frames the server sent that did not parse (a hostile or buggy server). */
  badFrames = 0;

  constructor(
    private readonly url: string,
    private readonly token: TokenSource,
    private readonly factory: WebSocketFactory,
    private readonly parse: (f: unknown) => Parsed<M>,
    private readonly queueWhileDown: boolean,
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
      const q = this.queue;
      this.queue = [];
      for (const f of q) ws.send(f);
      this.emit('open');
    };
    ws.onmessage = (ev) => {
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

  /** Test and fault hook: drops the current socket as a network failure would; it reconnects. */
  drop(): void {
    this.ws?.close(4000, 'dropped');
  }

  close(code = 1000): void {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    this.queue = [];
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      ws.onopen = null;
      try {
        ws.close(code);
      } catch {
        // already closing
      }
    }
    this.removeAllListeners();
  }
}

/** The presence socket: `GET /v1/presence`. */
export class PresenceSocket extends ReconnectingSocket<PresenceServerMessage> {
  constructor(signalingUrl: string, token: TokenSource, factory: WebSocketFactory) {
    super(joinUrl(signalingUrl, '/v1/presence'), token, factory, parsePresenceServerMessage, false);
  }
  post(m: PresenceClientMessage): boolean {
    return this.send(encode(m));
  }
}

/** A pair room socket: `GET /v1/rooms/:sessionId`. */
export class RoomSocket extends ReconnectingSocket<RoomServerMessage> {
  constructor(signalingUrl: string, sessionId: string, token: TokenSource, factory: WebSocketFactory) {
    super(joinUrl(signalingUrl, `/v1/rooms/${encodeURIComponent(sessionId)}`), token, factory, parseRoomServerMessage, true);
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

/** Joins the service base URL (`ws://host:port` or with a path prefix) and an API path. */
export function joinUrl(base: string, path: string): string {
  const u = new URL(base);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  u.pathname = u.pathname.replace(/\/+$/, '') + path;
  u.search = '';
  u.hash = '';
  return u.toString();
}
