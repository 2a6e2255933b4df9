/**
 * A small STUN/TURN client for diagnostics (`homelink netcheck`): Binding requests over UDP, TCP
 * and TLS (RFC 8489 §6), and one UDP TURN allocation with long-term credentials (RFC 8656 §7,
 * RFC 8489 §9.2) used to send ourselves a packet from the relay's other port, which tells how the
 * NAT filters (RFC 5780 §4.4 asks the server to answer from another port; a TURN allocation gives
 * the same effect without a server extension).
 *
 * Every exchange is bounded by a deadline and retransmits over UDP (RFC 8489 §6.2.1, shortened:
 * a diagnostic wants an answer in about a second, not 39.5 s). Responses are decoded with the
 * relay's codec; anything malformed or not ours is ignored, never thrown.
 * Node only.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';
import {
  Attr,
  StunClass,
  StunMethod,
  StunWriter,
  StreamFramer,
  TRANSPORT_UDP,
  addLongTermAuth,
  decodeErrorCode,
  decodeStun,
  encodeBindingRequest,
  encodeLifetime,
  encodeRequestedTransport,
  encodeXorAddress,
  findAttr,
  longTermKey,
  looksLikeStun,
  readResponse,
  type LongTermAuth,
  type StunMessage,
  type TransportAddress,
} from '../protocol/stun/index.js';

/** First UDP retransmission after this; doubled each time (RFC 8489 §6.2.1 uses 500 ms as RTO). */
export const UDP_RTO_MS = 250;
/** Requests sent over UDP before giving up (1 + 3 retransmissions: 250+500+1000 ms). */
export const UDP_ATTEMPTS = 4;
/** Bound on a TCP or TLS connect plus handshake. */
export const CONNECT_TIMEOUT_MS = 3_000;
/** Bound on one request/response over an established stream. */
export const STREAM_REQUEST_TIMEOUT_MS = 2_000;
/** Largest buffered stream bytes while waiting for a response. */
const MAX_STREAM_BUFFER = 70 * 1024;

const hmacSha1 = (key: Uint8Array, data: Uint8Array): Uint8Array => new Uint8Array(createHmac('sha1', key).update(data).digest());
const md5 = (data: Uint8Array): Uint8Array => new Uint8Array(createHash('md5').update(data).digest());

/** A STUN exchange failed: `kind` says how, for the report. */
export class StunClientError extends Error {
  override readonly name = 'StunClientError';
  constructor(
    readonly kind: 'timeout' | 'refused' | 'error_response' | 'tls' | 'protocol',
    message: string,
    readonly code?: number,
  ) {
    super(message);
  }
}

const addr = (a: TransportAddress): string => (a.family === 6 ? `[${a.ip}]:${a.port}` : `${a.ip}:${a.port}`);
export { addr as formatAddress };

/** The response to one request: the decoded message and the time it took. */
export interface StunResponse {
  readonly msg: StunMessage;
  readonly rttMs: number;
}

/** A UDP socket that can run several STUN transactions and receive stray datagrams. */
export class UdpStun {
  /** In-flight transactions: how to answer each, and how to abandon it when the socket closes. */
  private readonly pending = new Map<string, { answer: (m: StunMessage) => void; abandon: () => void }>();
  private closed = false;
  private readonly strays: Array<(data: Buffer, from: dgram.RemoteInfo) => void> = [];

  private constructor(readonly socket: dgram.Socket) {
    socket.on('message', (data, from) => {
      if (looksLikeStun(data)) {
        const d = decodeStun(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
        if (d.ok) {
          const key = Buffer.from(d.value.transactionId).toString('hex');
          const waiter = this.pending.get(key);
          if (waiter && d.value.cls !== StunClass.Request && d.value.cls !== StunClass.Indication) {
            this.pending.delete(key);
            waiter.answer(d.value);
            return;
          }
        }
      }
      for (const s of this.strays) s(data, from);
    });
    socket.on('error', () => undefined);
  }

  /** Binds a UDP socket on `localAddress` (any port). */
  static async open(localAddress = '0.0.0.0'): Promise<UdpStun> {
    const s = dgram.createSocket(localAddress.includes(':') ? 'udp6' : 'udp4');
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(0, localAddress, () => resolve());
    });
    return new UdpStun(s);
  }

  get local(): string {
    const a = this.socket.address();
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  /** Calls `fn` for every datagram that is not a response to one of our transactions. */
  onStray(fn: (data: Buffer, from: dgram.RemoteInfo) => void): void {
    this.strays.push(fn);
  }

  /** Sends `build(tid)` and waits for its response, retransmitting with doubling timeouts. */
  request(host: string, port: number, build: (tid: Uint8Array) => Uint8Array): Promise<StunResponse> {
    const tid = new Uint8Array(randomBytes(12));
    const key = Buffer.from(tid).toString('hex');
    const bytes = build(tid);
    const start = performance.now();
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new StunClientError('refused', 'socket closed'));
      let attempt = 0;
      let timer: ReturnType<typeof setTimeout> | null = null;
      const send = (): void => {
        if (attempt >= UDP_ATTEMPTS) {
          this.pending.delete(key);
          reject(new StunClientError('timeout', `no answer from ${host}:${port} over UDP`));
          return;
        }
        const wait = UDP_RTO_MS * 2 ** attempt;
        attempt++;
        this.socket.send(bytes, port, host, (err) => {
          if (err && timer) {
            clearTimeout(timer);
            this.pending.delete(key);
            reject(new StunClientError('refused', `cannot send to ${host}:${port}: ${err.message}`));
          }
        });
        timer = setTimeout(send, wait);
      };
      this.pending.set(key, {
        answer: (m) => {
          if (timer) clearTimeout(timer);
          resolve({ msg: m, rttMs: performance.now() - start });
        },
        abandon: () => {
          if (timer) clearTimeout(timer);
          reject(new StunClientError('refused', 'socket closed'));
        },
      });
      send();
    });
  }

  /** One Binding request; returns the server-reflexive address and the round trip. */
  async binding(host: string, port: number): Promise<{ mapped: TransportAddress; rttMs: number }> {
    const r = await this.request(host, port, (tid) => encodeBindingRequest(tid, { fingerprint: true }));
    const mapped = readResponse(r.msg).mapped;
    if (r.msg.cls !== StunClass.SuccessResponse || !mapped) throw new StunClientError('protocol', `${host}:${port} answered without a mapped address`);
    return { mapped, rttMs: r.rttMs };
  }

  send(data: Uint8Array, host: string, port: number): void {
    if (!this.closed) this.socket.send(data, port, host);
  }

  /** Closes the socket; transactions still in flight reject (no retransmission timer outlives it). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [, w] of this.pending) w.abandon();
    this.pending.clear();
    try {
      this.socket.close();
    } catch {
      // already closed
    }
  }
}

/**
 * One Binding request over a fresh TCP or TLS connection (RFC 8489 §6.2.2). Returns the connect
 * (plus TLS handshake) time and the request's round trip on the established connection.
 */
export async function streamBinding(
  transport: 'tcp' | 'tls',
  host: string,
  port: number,
  tlsOptions: { ca?: string | Buffer; servername?: string } = {},
): Promise<{ connectMs: number; rttMs: number; mapped: TransportAddress | null }> {
  const start = performance.now();
  const sock = await new Promise<net.Socket>((resolve, reject) => {
    const timer = setTimeout(() => {
      s.destroy();
      reject(new StunClientError('timeout', `no ${transport.toUpperCase()} connection to ${host}:${port} within ${CONNECT_TIMEOUT_MS} ms`));
    }, CONNECT_TIMEOUT_MS);
    const s: net.Socket =
      transport === 'tls'
        ? tls.connect({ host, port, ...(tlsOptions.ca ? { ca: tlsOptions.ca } : {}), servername: tlsOptions.servername ?? (net.isIP(host) ? undefined : host), ALPNProtocols: ['stun.turn'] } as tls.ConnectionOptions, () => {
            clearTimeout(timer);
            resolve(s);
          })
        : net.connect({ host, port }, () => {
            clearTimeout(timer);
            resolve(s);
          });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      s.destroy();
      const tlsProblem = transport === 'tls' && (e.code?.startsWith('ERR_TLS') || /certificate|self.signed|SSL/i.test(e.message));
      reject(new StunClientError(tlsProblem ? 'tls' : 'refused', `${transport.toUpperCase()} ${host}:${port}: ${e.code ?? e.message}`));
    });
  });
  const connectMs = performance.now() - start;
  try {
    const tid = new Uint8Array(randomBytes(12));
    const req = encodeBindingRequest(tid, { fingerprint: true });
    const t0 = performance.now();
    const msg = await new Promise<StunMessage>((resolve, reject) => {
      const framer = new StreamFramer(MAX_STREAM_BUFFER);
      const timer = setTimeout(() => reject(new StunClientError('timeout', `no answer from ${host}:${port} over ${transport.toUpperCase()}`)), STREAM_REQUEST_TIMEOUT_MS);
      sock.on('data', (chunk: Buffer) => {
        if (!framer.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)).ok) {
          clearTimeout(timer);
          reject(new StunClientError('protocol', `${host}:${port} sent a malformed stream`));
          return;
        }
        for (let r = framer.next(); r.ok && r.value; r = framer.next()) {
          const f = r.value;
          if (f.kind !== 'stun') continue;
          const d = decodeStun(f.bytes);
          if (d.ok && Buffer.from(d.value.transactionId).equals(Buffer.from(tid))) {
            clearTimeout(timer);
            resolve(d.value);
            return;
          }
        }
      });
      sock.once('close', () => {
        clearTimeout(timer);
        reject(new StunClientError('refused', `${host}:${port} closed the ${transport.toUpperCase()} connection`));
      });
      sock.write(req);
    });
    return { connectMs, rttMs: performance.now() - t0, mapped: readResponse(msg).mapped };
  } finally {
    sock.destroy();
  }
}

/** TURN REST credentials for an allocation. */
export interface TurnCredentials {
  readonly username: string;
  readonly password: string;
}

/**
 * A UDP TURN allocation on `socket` (RFC 8656 §7.1-7.2): the first Allocate is answered 401 with
 * REALM and NONCE (RFC 8489 §9.2.4), the second carries USERNAME, REALM, NONCE and
 * MESSAGE-INTEGRITY with key MD5(username ":" realm ":" password) (§9.2.2). Signing and reading
 * the answers is the relay codec's client side (protocol/stun/client.ts); this class owns the socket.
 */
export class TurnAllocation {
  private constructor(
    private readonly udp: UdpStun,
    private readonly host: string,
    private readonly port: number,
    private readonly auth: LongTermAuth,
    /** The relayed transport address. */
    readonly relayed: TransportAddress,
  ) {}

  private authed(method: number, tid: Uint8Array, add: (w: StunWriter) => void): Uint8Array {
    const w = new StunWriter(method, StunClass.Request, tid);
    add(w);
    return addLongTermAuth(w, this.auth, hmacSha1).addFingerprint().finish();
  }

  static async allocate(udp: UdpStun, host: string, port: number, creds: TurnCredentials): Promise<TurnAllocation> {
    const first = await udp.request(host, port, (tid) =>
      new StunWriter(StunMethod.Allocate, StunClass.Request, tid).add(Attr.RequestedTransport, encodeRequestedTransport(TRANSPORT_UDP)).addFingerprint().finish(),
    );
    const challenge = readResponse(first.msg);
    if (challenge.cls !== StunClass.ErrorResponse || challenge.realm === null || challenge.nonce === null) {
      throw new StunClientError('protocol', 'the relay did not ask for credentials on Allocate');
    }
    const auth: LongTermAuth = {
      username: creds.username,
      realm: challenge.realm,
      nonce: challenge.nonce,
      key: longTermKey(md5, creds.username, challenge.realm, creds.password),
    };
    const second = await udp.request(host, port, (tid) =>
      addLongTermAuth(new StunWriter(StunMethod.Allocate, StunClass.Request, tid).add(Attr.RequestedTransport, encodeRequestedTransport(TRANSPORT_UDP)), auth, hmacSha1)
        .addFingerprint()
        .finish(),
    );
    throwIfError(second.msg, 'Allocate');
    const relayed = readResponse(second.msg).relayed;
    if (!relayed) throw new StunClientError('protocol', 'Allocate succeeded without XOR-RELAYED-ADDRESS');
    return new TurnAllocation(udp, host, port, auth, relayed);
  }

  /** CreatePermission for `peer` (RFC 8656 §9). */
  async permit(peer: TransportAddress): Promise<void> {
    const r = await this.udp.request(this.host, this.port, (tid) =>
      this.authed(StunMethod.CreatePermission, tid, (w) => w.add(Attr.XorPeerAddress, encodeXorAddress(peer, tid))),
    );
    throwIfError(r.msg, 'CreatePermission');
  }

  /** A Send indication (RFC 8656 §11): the relay sends `data` to `peer` from the relayed address. */
  sendTo(peer: TransportAddress, data: Uint8Array): void {
    const tid = new Uint8Array(randomBytes(12));
    const msg = new StunWriter(StunMethod.Send, StunClass.Indication, tid).add(Attr.XorPeerAddress, encodeXorAddress(peer, tid)).add(Attr.Data, data).addFingerprint().finish();
    this.udp.send(msg, this.host, this.port);
  }

  /** Refresh with LIFETIME 0 (RFC 8656 §8): releases the allocation now instead of in 10 minutes. */
  async release(): Promise<void> {
    try {
      await this.udp.request(this.host, this.port, (tid) => this.authed(StunMethod.Refresh, tid, (w) => w.add(Attr.Lifetime, encodeLifetime(0))));
    } catch {
      // Best effort: the allocation expires by itself.
    }
  }
}

function throwIfError(msg: StunMessage, what: string): void {
  if (msg.cls === StunClass.SuccessResponse) return;
  const e = findAttr(msg, Attr.ErrorCode);
  const d = e ? decodeErrorCode(e.value) : null;
  const code = d?.ok ? d.value.code : 0;
  const reason = d?.ok ? d.value.reason : 'unknown error';
  throw new StunClientError('error_response', `${what} refused: ${code} ${reason}`, code);
}
