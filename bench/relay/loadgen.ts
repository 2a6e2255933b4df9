/**
 * The relay benchmark's load generator: several TURN allocations over UDP,
 * each with a channel bound (RFC 8656 §12) to one fast UDP echo peer, and a
 * bounded closed loop of ChannelData packets in flight per allocation. Every
 * echoed packet is one round trip, i.e. two packets relayed (client to peer,
 * peer to client).
 *
 * `mode: 'raw'` skips the TURN handshake and sends ChannelData on channel
 * 0x4000 straight away, for the bare forwarder (bench/relay/forwarder.ts),
 * which relays ChannelData without any TURN state.
 *
 * Allocate and ChannelBind use long-term credentials (RFC 8489 §9.2) with
 * TURN REST-API usernames, built with the relay's own STUN codec and its
 * client side (protocol/stun/client.ts, shared with the test client). Only the
 * handshake uses it; the measured loop sends preformatted ChannelData.
 */
import { createHash, createHmac } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { performance } from 'node:perf_hooks';
import {
  Attr,
  StunClass,
  StunMethod,
  StunWriter,
  TRANSPORT_UDP,
  addLongTermAuth,
  decodeStun,
  encodeChannelNumber,
  encodeLifetime,
  encodeRequestedTransport,
  encodeXorAddress,
  longTermKey,
  readResponse,
  type ResponseFields,
  type StunMessage,
  type TransportAddress,
} from '../../protocol/stun/index.js';

/** The first channel number (RFC 8656 §12); one channel per allocation is enough here. */
const CHANNEL = 0x4000;
/** Retransmission of handshake requests on loopback: short, and bounded (RFC 8489 §6.2.1 uses 500 ms RTO on the internet). */
const HANDSHAKE_RTO_MS = 250;
const HANDSHAKE_TRIES = 8;
/** A packet not back after this long is counted lost and its slot resent, so the closed loop cannot stall. */
const LOSS_TIMEOUT_MS = 500;
/** Cap on stored round-trip samples (8 bytes each): bounded memory for any run length. */
const MAX_RTT_SAMPLES = 2_000_000;
/**
 * Client sockets bind here, not on 127.0.0.1 where the relays take their relay
 * ports: an ephemeral port picked for a client would otherwise sit inside a
 * relay's port range (Linux's ephemeral range 32768-60999 overlaps it) and
 * 10,000 clients would exhaust it (508).
 */
export const CLIENT_HOST = '127.0.0.2';
/** Allocation handshakes in flight at once when creating many (memory test): keeps the relay's socket queue short. */
const HANDSHAKE_CONCURRENCY = 200;

export interface LoadTarget {
  host: string;
  port: number;
  mode: 'turn' | 'raw';
  /**
   * Several listening ports of one relay (one per worker process): allocation
   * i goes to ports[i % length]. Defaults to [port].
   */
  ports?: number[];
  /** REST-API shared secret (turn mode). */
  secret?: string;
  /** The echo peer the channel is bound to. */
  peer: { host: string; port: number };
}

export interface LoadOptions {
  allocations: number;
  /** Packets in flight per allocation. */
  window: number;
  /** Application payload bytes per packet (at least 8). */
  payload: number;
  warmupMs: number;
  measureMs: number;
  /** Called at the start and the end of the measured window (the runner samples relay CPU there). */
  onWindow?: (edge: 'start' | 'end') => void;
}

export interface LoadResult {
  roundTrips: number;
  relayedPackets: number;
  lost: number;
  seconds: number;
  packetsPerSecond: number;
  /** Relayed application payload, both directions, in megabits per second. */
  mbps: number;
  rttP50Us: number;
  rttP99Us: number;
}

/** An allocation as the generator holds it. */
export interface Allocation {
  socket: Socket;
  /** The relay port this allocation talks to. */
  port: number;
  relayed: TransportAddress | null;
}

const hmacSha1 = (key: Uint8Array, data: Uint8Array): Uint8Array => createHmac('sha1', key).update(data).digest();
const md5 = (data: Uint8Array): Uint8Array => createHash('md5').update(data).digest();

/** REST-API credentials: `<expiry>:<id>`, password base64(HMAC-SHA1(secret, username)). */
export function restCredentials(secret: string, id: string, ttlS = 3600): { username: string; password: string } {
  const username = `${Math.floor(Date.now() / 1000) + ttlS}:${id}`;
  return { username, password: createHmac('sha1', secret).update(username).digest('base64') };
}

function tid(): Uint8Array {
  const t = new Uint8Array(12);
  crypto.getRandomValues(t);
  return t;
}

/** Sends `build(tid)` until a response with that transaction id arrives (bounded), resolving with it. */
function transact(sock: Socket, host: string, port: number, build: (t: Uint8Array) => Uint8Array): Promise<StunMessage> {
  const t = tid();
  const bytes = build(t);
  return new Promise((resolve, reject) => {
    let tries = 0;
    let timer: NodeJS.Timeout | undefined;
    const onMessage = (msg: Buffer): void => {
      const d = decodeStun(new Uint8Array(msg.buffer, msg.byteOffset, msg.length));
      if (!d.ok || Buffer.compare(Buffer.from(d.value.transactionId), Buffer.from(t)) !== 0) return;
      clearTimeout(timer);
      sock.off('message', onMessage);
      resolve(d.value);
    };
    const send = (): void => {
      if (tries++ >= HANDSHAKE_TRIES) {
        sock.off('message', onMessage);
        reject(new Error(`no answer from ${host}:${port} after ${HANDSHAKE_TRIES} tries`));
        return;
      }
      sock.send(bytes, port, host);
      timer = setTimeout(send, HANDSHAKE_RTO_MS * tries);
    };
    sock.on('message', onMessage);
    send();
  });
}

/** NONCE of a 401 or 438 answer, which must carry one (RFC 8489 §9.2.4). */
function nonceOf(r: ResponseFields): string {
  if (r.nonce === null) throw new Error(`error ${r.code} without a valid NONCE`);
  return r.nonce;
}

/** Allocates on `target` and binds CHANNEL to the peer, with long-term credentials. */
export async function allocate(target: LoadTarget, id: string, bindChannel = true, index = 0, clientHost = CLIENT_HOST): Promise<Allocation> {
  const socket = createSocket('udp4');
  await new Promise<void>((r) => socket.bind(0, clientHost, r));
  const ports = target.ports ?? [target.port];
  const port = ports[index % ports.length]!;
  if (target.mode === 'raw') return { socket, port, relayed: null };
  const { username, password } = restCredentials(target.secret ?? '', id);
  const { host } = target;

  const first = readResponse(
    await transact(socket, host, port, (t) =>
      new StunWriter(StunMethod.Allocate, StunClass.Request, t).add(Attr.RequestedTransport, encodeRequestedTransport(TRANSPORT_UDP)).finish(),
    ),
  );
  if (first.code !== 401) throw new Error(`Allocate without credentials: expected 401, got ${first.code ?? 'no error'}`);
  if (first.realm === null) throw new Error('401 without a valid REALM');
  const realm = first.realm;
  let nonce = nonceOf(first);
  const key = longTermKey(md5, username, realm, password);

  const authed = async (method: number, attrs: (w: StunWriter, t: Uint8Array) => void): Promise<ResponseFields> => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const res = readResponse(
        await transact(socket, host, port, (t) => {
          const w = new StunWriter(method, StunClass.Request, t);
          attrs(w, t);
          return addLongTermAuth(w, { username, realm, nonce, key }, hmacSha1).finish();
        }),
      );
      if (res.cls === StunClass.SuccessResponse) return res;
      if (res.code === 438) {
        nonce = nonceOf(res);
        continue;
      }
      throw new Error(`method 0x${method.toString(16)} refused with ${res.code ?? 'no error code'}`);
    }
    throw new Error('nonce kept going stale');
  };

  const alloc = await authed(StunMethod.Allocate, (w) => {
    w.add(Attr.RequestedTransport, encodeRequestedTransport(TRANSPORT_UDP)).add(Attr.Lifetime, encodeLifetime(600));
  });
  if (!alloc.relayed) throw new Error('Allocate success without XOR-RELAYED-ADDRESS');
  if (bindChannel) {
    await authed(StunMethod.ChannelBind, (w, t) => {
      w.add(Attr.ChannelNumber, encodeChannelNumber(CHANNEL)).add(
        Attr.XorPeerAddress,
        encodeXorAddress({ family: 4, ip: target.peer.host, port: target.peer.port }, t),
      );
    });
  }
  return { socket, port, relayed: alloc.relayed };
}

/**
 * Creates `count` allocations with bounded concurrency. Give each phase of a
 * run its own `clientHost` (any 127/8 address): allocations outlive their
 * sockets, and a new socket reusing a port on the same address would hit the
 * old allocation (437 Allocation Mismatch).
 */
export async function allocateMany(target: LoadTarget, count: number, bindChannel: boolean, prefix = 'bench', clientHost = CLIENT_HOST): Promise<Allocation[]> {
  const out: Allocation[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      out[i] = await allocate(target, `${prefix}-${i}`, bindChannel, i, clientHost);
    }
  };
  await Promise.all(Array.from({ length: Math.min(HANDSHAKE_CONCURRENCY, count) }, worker));
  return out;
}

export function closeAll(allocs: readonly Allocation[]): void {
  for (const a of allocs) {
    try {
      a.socket.close();
    } catch {
      // already closed
    }
  }
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

/**
 * Runs the closed loop on existing allocations: `window` packets in flight
 * on each, every echo answered by the next packet, for warm-up plus the
 * measured window. Slot k's buffer is reused only after its echo returned
 * (or it was declared lost), so a buffer is never rewritten while queued.
 */
export async function runLoad(target: LoadTarget, allocs: readonly Allocation[], opts: LoadOptions): Promise<LoadResult> {
  if (opts.payload < 8) throw new RangeError('payload must be at least 8 bytes');
  const { window, payload } = opts;
  const slots = allocs.length * window;
  const sentAt = new Float64Array(slots);
  const bufs: Buffer[] = [];
  const rtt = new Float64Array(MAX_RTT_SAMPLES);
  let rttCount = 0;
  let measuring = false;
  let stopped = false;
  let roundTrips = 0;
  let lost = 0;
  for (let s = 0; s < slots; s++) {
    // ChannelData header (RFC 8656 §12.4) + payload whose first 4 bytes name the slot.
    const b = Buffer.alloc(4 + payload);
    b.writeUInt16BE(CHANNEL, 0);
    b.writeUInt16BE(payload, 2);
    b.writeUInt32BE(s, 4);
    bufs.push(b);
  }
  const { host } = target;
  const send = (a: Allocation, s: number): void => {
    sentAt[s] = performance.now();
    a.socket.send(bufs[s]!, a.port, host);
  };
  allocs.forEach((a, i) => {
    a.socket.on('message', (msg: Buffer) => {
      // ChannelData only (0x40-0x4f first byte); length covers payload, UDP needs no padding.
      if (msg.length < 8 || (msg[0]! & 0xf0) !== 0x40) return;
      const s = msg.readUInt32BE(4);
      if (s >= slots || sentAt[s] === 0) return;
      const now = performance.now();
      if (measuring) {
        roundTrips++;
        if (rttCount < MAX_RTT_SAMPLES) rtt[rttCount++] = now - sentAt[s]!;
      }
      sentAt[s] = 0;
      if (!stopped) send(allocs[i]!, s);
    });
  });
  allocs.forEach((a, i) => {
    for (let k = 0; k < window; k++) send(a, i * window + k);
  });
  const sweeper = setInterval(() => {
    const now = performance.now();
    for (let s = 0; s < slots; s++) {
      if (sentAt[s] !== 0 && now - sentAt[s]! > LOSS_TIMEOUT_MS) {
        if (measuring) lost++;
        send(allocs[Math.floor(s / window)]!, s);
      }
    }
  }, LOSS_TIMEOUT_MS / 2);
  await new Promise((r) => setTimeout(r, opts.warmupMs));
  opts.onWindow?.('start');
  const t0 = performance.now();
  measuring = true;
  await new Promise((r) => setTimeout(r, opts.measureMs));
  measuring = false;
  const seconds = (performance.now() - t0) / 1000;
  opts.onWindow?.('end');
  stopped = true;
  clearInterval(sweeper);
  for (const a of allocs) a.socket.removeAllListeners('message');
  const sorted = rtt.slice(0, rttCount).sort();
  const relayedPackets = roundTrips * 2;
  return {
    roundTrips,
    relayedPackets,
    lost,
    seconds,
    packetsPerSecond: relayedPackets / seconds,
    mbps: (relayedPackets * payload * 8) / seconds / 1e6,
    rttP50Us: percentile(sorted, 0.5) * 1000,
    rttP99Us: percentile(sorted, 0.99) * 1000,
  };
}
