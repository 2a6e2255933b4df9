/**
 * `EndpointCore`: an endpoint's presence at the signaling service, dialing and accepting.
 * Portable: the WebRTC stack and the WebSocket come in as factories (`client/index.ts` wires
 * werift and `ws` for Node; `client/browser.ts` the browser's own).
 *
 * Dial: `dial{reqId,to}` on presence -> `session` (or `rejected` / `dial_failed` / timeout) ->
 * a `Link` joins the pair room and runs the session until the link is open and verified.
 * Accept: `request{reqId,from,sessionId}` -> `ringing{reqId}` (the receipt the service waits
 * for, unless the answer went out at once) -> the app's `request` listener calls `accept()` ->
 * `answer{accept:true}` -> `session` -> a responder `Link`.
 */
import { MAX_DIAL_TIMEOUT_MS, MIN_DIAL_TIMEOUT_MS, type EarlyJoin, type PresenceServerMessage, type SessionInfo } from '../protocol/messages.js';
import { ENDPOINT_ID_RE } from '../protocol/turn-credentials.js';
import { Emitter } from './emitter.js';
import { LinkError } from './errors.js';
import type { DeviceIdentity, Trust } from './identity.js';
import type { KeepaliveOptions } from './keepalive.js';
import { Link, type LinkInit, type TraceFn } from './link.js';
import { EARLY_FAILURE, type SessionOptions } from './session.js';
import { PresenceSocket, type TokenSource, type WebSocketFactory } from './signaling.js';
import type { BackendChoice, BackendFactory } from './webrtc/backend.js';

/** Default for `dial({ timeoutMs })`: the service's offline wait plus a relayed connect, with room to spare. */
export const DEFAULT_DIAL_TIMEOUT_MS = 20_000;
/** How long an incoming request waits for `accept()` before the service times it out anyway. */
export const DEFAULT_ACCEPT_TIMEOUT_MS = 20_000;
/** Requests we keep waiting for an answer at once; bounds a flood from the service. */
const MAX_PENDING_REQUESTS = 64;

/** Options of `Endpoint.connect`. */
export interface EndpointOptions {
  /** Base URL of the signaling service, e.g. `wss://signal.example.com`. */
  readonly signalingUrl: string;
  /** Access token (`typ: homelink-access+jwt`), or a function returning a fresh one per (re)connect. */
  readonly token: TokenSource;
  /** This device's identity certificate and private key. */
  readonly identity: DeviceIdentity;
  /** Issuer keys trusted for peers' identity certificates. */
  readonly trust: Trust;
  /** `'relay'` forces TURN for every link (tests; privacy). */
  readonly iceTransportPolicy?: 'all' | 'relay';
  /** Restrict host candidates to these addresses (tests and the loopback-only local stack use `['127.0.0.1']`). */
  readonly hostAddresses?: readonly string[];
  /** Node: TLS options for `turns:` relays (e.g. a private CA). */
  readonly turnTlsOptions?: LinkInit['turnTlsOptions'];
  /** Overrides of the session's deadlines (see `SESSION_DEFAULTS`). */
  readonly session?: Partial<Omit<SessionOptions, 'sessionId' | 'role' | 'peer'>>;
  /** Diagnostics: called at each step of every session (`dial`, `session`, `joined`, ..., `open`). */
  readonly trace?: TraceFn;
  /**
   * Keepalive of the presence and room sockets (client/keepalive.ts): ping after `intervalMs`
   * idle (default `KEEPALIVE_INTERVAL_MS`, 25 s), reconnect when no frame came back within
   * `timeoutMs` (default `KEEPALIVE_TIMEOUT_MS`, 10 s). Tests shorten them.
   */
  readonly keepalive?: KeepaliveOptions;
  /**
   * Node: which WebRTC stack links run on: `werift` (pure JS) or `node-datachannel`
   * (libdatachannel, faster; no ICE restart, so a lost path is recovered by rebuilding the
   * connection, no relay-to-direct upgrade; relay-only links and TCP/TLS-only relays run on
   * werift). `auto` (the default, or `HOMELINK_BACKEND` when set) is werift (see `chooseBackend`).
   * Browsers use their own.
   */
  readonly webrtcBackend?: BackendChoice;
  /**
   * Signals a link sends within this many milliseconds go to the peer in one signaling frame
   * (default `SIGNAL_BATCH_MS`, 10), when the service and the peer read batches (older ones get
   * each signal alone). Every frame is a billed message on the service; a setup sends about half
   * as many this way, and no signal waits longer than this (an SDP leaves with its first
   * candidate, an identity proof at once). 0 sends each signal alone. At most 1000.
   */
  readonly signalBatchMs?: number;
  /**
   * Join a session's room before the answer is confirmed, when the service and the peer support it
   * (default true): a dialer joins and sends its offer while the peer decides, and an accepting
   * side joins as it accepts. One signaling round trip fewer per dial. A rejected dial then has
   * cost a room and, when the dialer gathers relay candidates, a TURN allocation (released at once).
   */
  readonly earlyJoin?: boolean;
}

/** Default of `EndpointOptions.signalBatchMs`. */
export const SIGNAL_BATCH_MS = 10;

/** Everything `EndpointCore.open` needs beyond the public options. */
export interface EndpointRuntime {
  readonly webSocket: WebSocketFactory;
  readonly backend: BackendFactory;
}

export interface DialOptions {
  /** Aborts the dial; the promise rejects with `Aborted`. */
  readonly signal?: AbortSignal;
  /** Deadline for the whole dial, link verified (default 20 s). */
  readonly timeoutMs?: number;
}

/** An incoming connection request, with the peer id the service authenticated. */
export interface IncomingRequest {
  /** The endpoint asking; its identity is proven again, cryptographically, before the link opens. */
  readonly peer: string;
  readonly sessionId: string;
  /**
   * Accepts: resolves with the open, verified link (it is also emitted as `link`); rejects with a
   * LinkError when it fails before it opens. Calling it without awaiting is fine: the rejection
   * is then dropped, never an unhandled rejection.
   */
  accept(): Promise<Link>;
  /** Refuses with a short reason the peer sees. */
  reject(reason?: string): void;
}

export interface EndpointEvents {
  request: [req: IncomingRequest];
  /** A link we accepted is open. */
  link: [link: Link];
  /** The presence socket is up (again). */
  online: [];
  /** The presence socket dropped; it reconnects by itself. */
  offline: [];
  /** Another connection with our id took over presence; this endpoint closes. */
  replaced: [];
  /** The service refused our token on a reconnect (expired, revoked); this endpoint closes. */
  unauthorized: [];
}

type Pending = { resolve: (m: PresenceServerMessage) => void };

let counter = 0;
const newReqId = (): string => {
  const r = new Uint8Array(9);
  crypto.getRandomValues(r);
  return `r${(counter++).toString(36)}${Array.from(r, (b) => b.toString(16).padStart(2, '0')).join('')}`;
};

/**
 * Fresh attempts of a dial whose connection failed before it opened (see `Endpoint.dial`). Under
 * one busy core a third of first attempts failed and about a sixth of the retries
 * (bench/connect/native-soak.ts: 33 of 100, then 6 of 33, then 1 of 6), so three retries, not two.
 */
const EARLY_FAILURE_RETRIES = 3;

/**
 * An endpoint: present at the signaling service, able to dial and to accept.
 * Use `Endpoint.connect` from `client/index.ts` (Node) or `client/browser.ts`.
 */
export class EndpointCore extends Emitter<EndpointEvents> {
  /** Our endpoint id, as the service read it from the token. */
  id = '';
  private readonly presence: PresenceSocket;
  private readonly pending = new Map<string, Pending>();
  /** Requests withdrawn or timed out before this endpoint answered them (bounded), for a late accept(). */
  private readonly endedRequests = new Map<string, PresenceServerMessage>();
  private readonly linkSet = new Set<Link>();
  private closed = false;
  private closing: Promise<void> | null = null;
  private online = false;
  /** `signalBatchMs`, checked. */
  private readonly batchMs: number;

  protected constructor(
    private readonly opts: EndpointOptions,
    private readonly rt: EndpointRuntime,
  ) {
    super();
    const batchMs = opts.signalBatchMs ?? SIGNAL_BATCH_MS;
    if (typeof batchMs !== 'number' || !Number.isFinite(batchMs) || batchMs < 0 || batchMs > 1000) throw new RangeError('signalBatchMs must be a number of milliseconds from 0 to 1000');
    this.batchMs = batchMs;
    if (opts.earlyJoin !== undefined && typeof opts.earlyJoin !== 'boolean') throw new TypeError('earlyJoin must be true or false');
    this.presence = new PresenceSocket(opts.signalingUrl, opts.token, rt.webSocket, opts.keepalive, { signalBatch: batchMs > 0, earlyJoin: opts.earlyJoin !== false });
    this.presence.on('message', (m) => this.onPresence(m));
    this.presence.on('unauthorized', () => {
      if (!this.id) return; // the first connect reports it by rejecting
      this.emit('unauthorized');
      this.close();
    });
    this.presence.on('down', () => {
      if (this.online) {
        this.online = false;
        this.emit('offline');
      }
    });
  }

  /** @internal Connects presence; resolves after the service's `hello`. */
  protected static async openWith<T extends EndpointCore>(ep: T): Promise<T> {
    const hello = new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new LinkError('Timeout', 'no hello from the signaling service')), DEFAULT_DIAL_TIMEOUT_MS);
      ep.once('online', () => {
        clearTimeout(t);
        resolve();
      });
    });
    try {
      await ep.presence.connect();
      await hello;
    } catch (e) {
      ep.close();
      throw e;
    }
    return ep;
  }

  get isOnline(): boolean {
    return this.online;
  }

  /** Links of this endpoint that are connecting or open. */
  get links(): readonly Link[] {
    return [...this.linkSet];
  }

  /**
   * Dials `peerId` and resolves with an open link whose peer proved it is `peerId`.
   * Rejects with a `LinkError`: `PeerOffline`, `Rejected`, `Unauthorized`, `Timeout`,
   * `IdentityMismatch`, `NoPath`, `Aborted` or `Closed`.
   */
  async dial(peerId: string, opts: DialOptions = {}): Promise<Link> {
    if (this.closed) throw new LinkError('Closed', 'endpoint is closed');
    if (!ENDPOINT_ID_RE.test(peerId)) throw new LinkError('PeerOffline', 'not a valid endpoint id');
    const timeoutMs = opts.timeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    // A connection that died before it opened (client/session.ts EARLY_FAILURE: a libdatachannel
    // race on a busy CPU; such a failure comes within ~100 ms) is tried again, up to
    // EARLY_FAILURE_RETRIES times within the same deadline; the peer sees a request per attempt.
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.dialOnce(peerId, opts, timeoutMs, deadline);
      } catch (e) {
        const early = e instanceof LinkError && e.code === 'NoPath' && e.message === EARLY_FAILURE;
        if (!early || attempt >= EARLY_FAILURE_RETRIES || this.closed || opts.signal?.aborted || deadline - Date.now() < MIN_DIAL_TIMEOUT_MS) throw e;
      }
    }
  }

  private async dialOnce(peerId: string, opts: DialOptions, timeoutMs: number, deadline: number): Promise<Link> {
    const reqId = newReqId();
    let link: Link | null = null;
    let cleanup = (): void => undefined;
    const stop = new Promise<never>((_, reject) => {
      const t = setTimeout(() => reject(new LinkError('Timeout', `dial did not complete within ${timeoutMs} ms`)), Math.max(0, deadline - Date.now()));
      const onAbort = (): void => reject(new LinkError('Aborted', 'dial aborted'));
      opts.signal?.addEventListener('abort', onAbort);
      if (opts.signal?.aborted) onAbort();
      cleanup = () => {
        clearTimeout(t);
        opts.signal?.removeEventListener('abort', onAbort);
      };
    });
    stop.catch(() => undefined);
    try {
      await Promise.race([this.waitOnline(), stop]);
      const answer = new Promise<PresenceServerMessage>((resolve) => this.pending.set(reqId, { resolve }));
      // The budget left goes with the dial, so the service and the peer give up when we do.
      const left = Math.min(MAX_DIAL_TIMEOUT_MS, Math.max(MIN_DIAL_TIMEOUT_MS, Math.round(deadline - Date.now())));
      this.presence.post({ type: 'dial', reqId, to: peerId, timeoutMs: left });
      const m = await Promise.race([answer, stop]);
      if (m.type !== 'session') throw dialEnded(m);
      this.opts.trace?.('session', m.sessionId);
      if (m.peer !== peerId || m.role !== 'initiator') throw new LinkError('IdentityMismatch', 'the service set up a session with another peer');
      // An early session (protocol/messages.ts CAP_EARLY_JOIN) comes before the peer answered:
      // the link starts now and joins the room while the request stays pending, and a `rejected`,
      // `dial_failed` or `cancelled` that still comes ends the dial (a later `session` changes nothing).
      const ended = m.early === true ? this.requestEnded(reqId) : null;
      link = this.newLink(m.sessionId, 'initiator', peerId, deadline, m);
      await Promise.race([link.opened(), stop, ...(ended ? [ended] : [])]);
      return link;
    } catch (e) {
      // The target hears whether the dialer's time ran out or it gave up otherwise.
      if (this.pending.delete(reqId)) this.presence.post({ type: 'cancel', reqId, ...(e instanceof LinkError && e.code === 'Timeout' ? { reason: 'timeout' as const } : {}) });
      link?.close(e instanceof LinkError ? e.code : 'error');
      throw e;
    } finally {
      this.pending.delete(reqId);
      cleanup();
    }
  }

  /**
   * Leaves presence and closes every link (each peer gets a bye, each TURN allocation is
   * released). Resolves when everything is released: no socket, timer or allocation of this
   * endpoint is left, so a Node process with nothing else to do exits by itself. Idempotent.
   *
   * @example
   * ```ts
   * process.once('SIGINT', () => void ep.close().then(() => (process.exitCode = 130)));
   * ```
   */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    const links = [...this.linkSet].map((l) => l.close('endpoint closed'));
    this.linkSet.clear();
    for (const [, p] of this.pending) p.resolve({ type: 'cancelled', reqId: '' });
    this.pending.clear();
    this.online = false;
    this.closing = Promise.all([...links, this.presence.close()]).then(() => undefined);
    return this.closing;
  }

  /** Presence socket restarts because its keepalive found the path dead (diagnostics, tests). */
  get deadSignalingPaths(): number {
    return this.presence.deadPaths;
  }

  /** Test and fault hook: drops the presence socket as a network failure would. */
  dropSignaling(): void {
    this.presence.drop();
  }

  /**
   * Rejects with the dial's `LinkError` when `reqId`'s request ends (`rejected`, `dial_failed`,
   * `cancelled`, an error) while its early link connects; a `session` is no end. It waits in
   * `pending`, so a dial that fails meanwhile still withdraws the request.
   */
  private requestEnded(reqId: string): Promise<never> {
    const p = new Promise<never>((_, reject) => {
      const wait = (): void => void this.pending.set(reqId, { resolve: (o) => (o.type === 'session' ? wait() : reject(dialEnded(o))) });
      wait();
    });
    p.catch(() => undefined);
    return p;
  }

  /**
   * The accepting side of an early join: the link starts with the answer, before the service
   * confirms it. The request may still end (`cancelled`: the dialer gave up meanwhile, or its
   * time ran out), which closes the link. `done` clears the accept's budget timer.
   */
  private async acceptEarly(reqId: string, from: string, sessionId: string, deadline: number, early: EarlyJoin, outcome: Promise<PresenceServerMessage>, done: () => void): Promise<Link> {
    const link = this.newLink(sessionId, 'responder', from, deadline, early);
    const ended = outcome.then((m): never => {
      throw endedBeforeSession(m);
    });
    ended.catch(() => undefined);
    try {
      await Promise.race([link.opened(), ended]);
    } catch (e) {
      link.close(e instanceof LinkError ? e.code : 'error');
      throw e;
    } finally {
      this.pending.delete(reqId);
      done();
    }
    this.emit('link', link);
    return link;
  }

  private waitOnline(): Promise<void> {
    if (this.online) return Promise.resolve();
    return new Promise((resolve) => this.once('online', resolve));
  }

  /** A link for the session `m` announced (its ICE servers, ticket and whether signals may be batched). */
  private newLink(sessionId: string, role: 'initiator' | 'responder', peer: string, deadline: number, m: Pick<SessionInfo, 'iceServers' | 'ticket' | 'batch'>): Link {
    const { iceServers, ticket } = m;
    const connectTimeoutMs = Math.max(1, deadline - Date.now());
    const link = new Link({
      signalingUrl: this.opts.signalingUrl,
      token: this.opts.token,
      webSocket: this.rt.webSocket,
      backend: this.rt.backend,
      identity: this.opts.identity,
      trust: this.opts.trust,
      sessionId,
      ...(ticket !== undefined ? { ticket } : {}),
      role,
      peer,
      iceServers,
      forceRelay: this.opts.iceTransportPolicy === 'relay',
      ...(this.opts.hostAddresses ? { hostAddresses: this.opts.hostAddresses } : {}),
      ...(this.opts.turnTlsOptions ? { turnTlsOptions: this.opts.turnTlsOptions } : {}),
      session: { connectTimeoutMs, ...this.opts.session },
      ...(this.opts.trace ? { trace: this.opts.trace } : {}),
      ...(this.opts.keepalive ? { keepalive: this.opts.keepalive } : {}),
      ...(m.batch === true ? { batchMs: this.batchMs } : {}),
    });
    this.linkSet.add(link);
    link.on('close', () => this.linkSet.delete(link));
    link.start();
    return link;
  }

  private onPresence(m: PresenceServerMessage): void {
    switch (m.type) {
      case 'hello':
        this.id = m.endpointId;
        if (!this.online) {
          this.online = true;
          this.emit('online');
        }
        return;
      case 'request':
        return this.onRequest(m.reqId, m.from, m.sessionId, m.timeoutMs, m.early);
      case 'session':
      case 'rejected':
      case 'dial_failed':
      case 'cancelled': {
        const p = this.pending.get(m.reqId);
        if (p) {
          this.pending.delete(m.reqId);
          p.resolve(m);
          return;
        }
        // A request not answered yet: a later accept() fails at once, saying why.
        if (m.type === 'cancelled' && m.reqId) {
          this.endedRequests.set(m.reqId, m);
          if (this.endedRequests.size > MAX_PENDING_REQUESTS) this.endedRequests.delete(this.endedRequests.keys().next().value!);
        }
        return;
      }
      case 'error':
        if (m.reqId) {
          const p = this.pending.get(m.reqId);
          this.pending.delete(m.reqId);
          p?.resolve(m);
        }
        return;
      case 'replaced':
        this.emit('replaced');
        this.close();
        return;
    }
  }

  /**
   * `timeoutMs`: what is left of the dialer's budget; the accepting side keeps to it. `early`: this
   * side's half of the session, when both sides join early (the link starts as it accepts).
   */
  private onRequest(reqId: string, from: string, sessionId: string, timeoutMs?: number, early?: EarlyJoin): void {
    if (this.listenerCount('request') === 0 || this.pending.size >= MAX_PENDING_REQUESTS) {
      this.presence.post({ type: 'answer', reqId, accept: false, reason: 'not accepting connections' });
      return;
    }
    let answered = false;
    const receivedAt = Date.now();
    const req: IncomingRequest = {
      peer: from,
      sessionId,
      accept: () => {
        const p = accept();
        // A request listener usually calls accept() and takes links from `link` (README): an
        // incoming link that fails before it opens must not then end the process with an
        // unhandled rejection. Whoever awaits the promise still gets the LinkError.
        p.catch(() => undefined);
        return p;
      },
      reject: (reason?: string) => {
        if (answered) return;
        answered = true;
        this.presence.post({ type: 'answer', reqId, accept: false, ...(reason ? { reason: reason.slice(0, 200) } : {}) });
      },
    };
    const accept = async (): Promise<Link> => {
      if (answered) throw new LinkError('Closed', 'request already answered');
      answered = true;
      const ended = this.endedRequests.get(reqId);
      if (ended) {
        this.endedRequests.delete(reqId);
        throw endedBeforeSession(ended);
      }
      const answer = new Promise<PresenceServerMessage>((resolve) => this.pending.set(reqId, { resolve }));
      const budget = timeoutMs !== undefined ? Math.max(0, receivedAt + timeoutMs - Date.now()) : DEFAULT_ACCEPT_TIMEOUT_MS;
      const deadline = Date.now() + budget;
      // The dialer's budget, as the request said: past it, the accept has timed out like the dial.
      const t = setTimeout(() => {
        const p = this.pending.get(reqId);
        this.pending.delete(reqId);
        p?.resolve({ type: 'cancelled', reqId, reason: 'timeout' });
      }, budget);
      this.presence.post({ type: 'answer', reqId, accept: true });
      if (early) return this.acceptEarly(reqId, from, sessionId, deadline, early, answer, () => clearTimeout(t));
      const m = await answer.finally(() => clearTimeout(t));
      if (m.type !== 'session') throw endedBeforeSession(m);
      if (m.peer !== from || m.sessionId !== sessionId || m.role !== 'responder') throw new LinkError('IdentityMismatch', 'the service set up a session with another peer');
      const link = this.newLink(sessionId, 'responder', from, deadline, m);
      await link.opened();
      this.emit('link', link);
      return link;
    };
    this.emit('request', req);
    // The receipt the service waits for: it takes a socket that stays silent after a request for
    // one whose path died, and fails the dial. A listener that answered at once (accept() and
    // reject() post synchronously) has proved delivery already: one frame fewer.
    if (!answered) this.presence.post({ type: 'ringing', reqId });
  }
}

/**
 * Why an accepted request ended before its session: `Timeout` when the dialer's budget ran out
 * (`cancelled{reason:'timeout'}`), `Closed` when it was withdrawn, else a protocol fault.
 */
function endedBeforeSession(m: PresenceServerMessage): LinkError {
  if (m.type === 'cancelled' && m.reason === 'timeout') return new LinkError('Timeout', "the request ran out of the dialer's time before a session");
  return new LinkError(m.type === 'cancelled' ? 'Closed' : 'Protocol', `the request ended before a session (${m.type})`);
}

/** How a dial ends when its request does: `rejected`, `dial_failed`, `cancelled`, or anything else. */
function dialEnded(m: PresenceServerMessage): LinkError {
  switch (m.type) {
    case 'rejected':
      return new LinkError('Rejected', 'the peer rejected the request', { reason: m.reason });
    case 'dial_failed':
      return m.code === 'peer_offline' ? new LinkError('PeerOffline', 'the peer is offline or not reachable') : new LinkError('Timeout', 'the peer did not answer in time');
    case 'cancelled':
      return new LinkError('Closed', 'the request was cancelled');
    default:
      return new LinkError('Protocol', `the service answered the dial with ${m.type}`);
  }
}
