/**
 * A sans-IO STUN/TURN server (RFC 8489, RFC 8656).
 *
 * The driver feeds it client datagrams, client stream bytes, peer datagrams on
 * an allocation's relayed port, the results of binding relay ports, and the
 * time; the server answers with {@link RelayAction}s to carry out (send to a
 * client, send to a peer, bind or release a relay port, close a connection,
 * log). It owns no socket, no timer and no randomness: the driver asks
 * {@link TurnServer.pollTimeout} when to call {@link TurnServer.handleTimeout}.
 *
 * Flow of an allocation (RFC 8656 §7): Allocate without credentials -> 401 with
 * REALM and NONCE; Allocate with MESSAGE-INTEGRITY -> the server asks the driver
 * to bind a relay port (`bind-relay`) and answers when the driver reports the
 * port (`relayBound`) or failure (`relayFailed`, 508). CreatePermission and
 * ChannelBind install permissions (300 s) and channels (600 s); Send
 * indications and ChannelData go to peers, peer datagrams come back as Data
 * indications or ChannelData. Refresh extends or (lifetime 0) deletes.
 *
 * Hot path: ChannelData from a UDP client and peer datagrams on a bound channel
 * parse only the 4-byte header, look up by number, and return a code with the
 * details in the reusable {@link FastPath} object instead of allocating actions.
 */
import {
  Attr,
  CHANNEL_MAX_LEGACY,
  CHANNEL_MIN,
  ERROR_REASONS,
  ErrorCode,
  StunClass,
  StunMethod,
  TRANSPORT_UDP,
} from '../../protocol/stun/constants.js';
import {
  decodeChannelNumber,
  decodeLifetime,
  decodeNonce,
  decodeRealm,
  decodeRequestedAddressFamily,
  decodeRequestedTransport,
  decodeUsername,
  decodeXorAddress,
  encodeChannelNumber,
  encodeErrorCode,
  encodeLifetime,
  encodeText,
  encodeUnknownAttributes,
  encodeXorAddress,
  type TransportAddress,
} from '../../protocol/stun/attributes.js';
import { formatIp, parseIp } from '../../protocol/stun/ip.js';
import { decodeStun, findAttr, StunWriter, verifyMessageIntegrity, type StunMessage } from '../../protocol/stun/message.js';
import { StreamFramer } from '../../protocol/stun/stream.js';
import { checkRestUsername, longTermKeys, NonceBook, type TurnCrypto } from './auth.js';
import { createTurnCounters, type TurnCounters } from './counters.js';
import { CHANNEL_LIFETIME_S, PERMISSION_LIFETIME_S } from './defaults.js';
import { DeadlineHeap, type Expiring } from './timers.js';

/** Where a client is: a UDP 5-tuple (listener index + remote address) or a stream connection. */
export type ClientAddr =
  | { readonly kind: 'udp'; readonly listener: number; readonly ip: string; readonly port: number }
  | { readonly kind: 'stream'; readonly connId: number; readonly transport: 'tcp' | 'tls'; readonly ip: string; readonly port: number };

/** What the driver must do. Carried out in order, with an exhaustive switch. */
export type RelayAction =
  /** Send `data` to the client. `relayed` is the peer payload inside it, when it carries one (for test hooks). */
  | { readonly type: 'send-client'; readonly to: ClientAddr; readonly data: Uint8Array; readonly relayed?: Uint8Array }
  /** Send a datagram from allocation `relayId`'s relayed port to a peer. */
  | { readonly type: 'send-peer'; readonly relayId: number; readonly ip: string; readonly port: number; readonly data: Uint8Array }
  /** Send `data` to the client as ChannelData on `channel`: a packet relayed from another allocation of this process (hairpin). */
  | { readonly type: 'send-channel-data'; readonly to: ClientAddr; readonly channel: number; readonly data: Uint8Array }
  /** Bind a UDP relay port of `family` (an even one if `even`) for `relayId`; answer with relayBound or relayFailed. */
  | { readonly type: 'bind-relay'; readonly relayId: number; readonly family: 4 | 6; readonly even: boolean }
  /** Close and return `relayId`'s relay port. */
  | { readonly type: 'release-relay'; readonly relayId: number }
  /**
   * Only with `fastRoutes`: channel `channel` of allocation `relayId` (a UDP client's) is valid until
   * `expiresAt` (the earlier of the channel's and its permission's expiry, ms). A driver that
   * forwards channel traffic outside the core installs or refreshes its route; every later change
   * comes as another `route` or an `unroute`, and `release-relay` ends them all.
   */
  | {
      readonly type: 'route';
      readonly relayId: number;
      readonly channel: number;
      readonly client: ClientAddr & { kind: 'udp' };
      readonly peerIp: string;
      readonly peerPort: number;
      readonly expiresAt: number;
      /**
       * The peer is allocation `relayId` of this process, which sees this one as `fromIp:fromPort`
       * (hairpin): deliver to its client on its channel for that address, while it has one.
       */
      readonly hairpin?: { readonly relayId: number; readonly fromIp: string; readonly fromPort: number };
    }
  /** Only with `fastRoutes`: channel `channel` of allocation `relayId` is gone. */
  | { readonly type: 'unroute'; readonly relayId: number; readonly channel: number }
  /** Close a stream connection (framing error or buffer quota). */
  | { readonly type: 'close-client'; readonly connId: number; readonly reason: string }
  /** A structured log line (never contains secrets). */
  | { readonly type: 'log'; readonly level: 'info' | 'warn'; readonly event: string; readonly fields: Readonly<Record<string, string | number>> };

/** Outcome of a peer policy check (the shape of relay/policy.ts `checkPeer`). */
export type PeerCheck = { allowed: true; canonical: string } | { allowed: false; reason: string; canonical: string | null };

/** Configuration of the core; see relay/config.ts for defaults and validation. */
export interface TurnServerOptions {
  readonly realm: string;
  /** Shared secrets for REST credentials; any may match (rotation). The first also keys nonces. */
  readonly secrets: readonly string[];
  /** SOFTWARE attribute in responses, or empty for none. */
  readonly software: string;
  /** Relay addresses advertised in XOR-RELAYED-ADDRESS, per family; a family without one is refused with 440. */
  readonly relayAddressV4?: string;
  readonly relayAddressV6?: string;
  readonly defaultLifetimeS: number;
  readonly maxLifetimeS: number;
  readonly nonceLifetimeS: number;
  readonly maxAllocationsPerUsername: number;
  readonly maxAllocations: number;
  readonly maxPermissionsPerAllocation: number;
  readonly maxChannelsPerAllocation: number;
  /** Per-allocation cap in bytes per second, both directions; 0 for none. */
  readonly bandwidthBytesPerSecond: number;
  readonly bandwidthBurstBytes: number;
  /** Largest frame / bytes buffered per TCP/TLS connection. */
  readonly maxStreamBufferBytes: number;
  /** A TLS connection must finish its handshake this long after accept (see relay/turn/defaults.ts). */
  readonly streamHandshakeTimeoutMs: number;
  /** A TCP/TLS connection without an allocation must deliver a whole frame at least this often. */
  readonly streamIdleTimeoutMs: number;
  /** Open TCP/TLS connections per source (an IPv4 address, an IPv6 /64). */
  readonly maxStreamsPerIp: number;
  readonly crypto: TurnCrypto;
  /** Peer address policy, called before every permission, channel and Send. */
  readonly checkPeer: (ip: string) => PeerCheck;
  /**
   * Whether `port` is a relayed port of another process of this relay (a sibling worker's share
   * of the relay port range; with one process, none). Such a port, on the relay's own address, is
   * a peer as this process's own allocations are: two endpoints whose allocations landed on two
   * workers talk through the kernel. Absent: no sibling ports.
   */
  readonly siblingRelayPort?: (port: number) => boolean;
  /** 12 random bytes for transaction ids of Data indications (seeded once). */
  readonly randomBytes: (n: number) => Uint8Array;
  /** Counters to increment (e.g. relay/metrics.ts `RelayMetrics`, which has the same fields); fresh ones if absent. */
  readonly counters?: TurnCounters;
  /**
   * Emit `route` / `unroute` actions for the channels of UDP clients, for a driver that forwards
   * their channel traffic itself (relay/native). A channel to another allocation of this process
   * names it (`hairpin`). Default false.
   */
  readonly fastRoutes?: boolean;
  /**
   * The per-allocation token bucket, when the driver keeps it (so that traffic it forwards itself
   * and traffic through the core share one cap): takes `bytes` from allocation `relayId`'s bucket,
   * false when it holds fewer. Absent: the core keeps the buckets. Only called when
   * `bandwidthBytesPerSecond` > 0.
   */
  readonly takeTokens?: (relayId: number, bytes: number, now: number) => boolean;
}

/** Hot-path results of {@link TurnServer.handleUdp} and {@link TurnServer.handlePeer}. */
export const FAST_NONE = 0;
/** Send `fast.length` bytes at `fast.offset` of the input from `fast.relayId` to `fast.peerIp:peerPort`. */
export const FAST_TO_PEER = 1;
/**
 * Send `fast.length` bytes at `fast.offset` of the input to `fast.client` as ChannelData on
 * `fast.channel`. From handlePeer that is the whole input; from handleUdp it is a hairpin: a
 * client's ChannelData for another allocation of this process, delivered without the kernel.
 */
export const FAST_TO_CLIENT = 2;
/** {@link TurnServer}'s internal answer: the port is no allocation of this process. */
const NOT_LOCAL = -1;

/** The reusable hot-path result; valid until the next call into the server. */
export interface FastPath {
  relayId: number;
  peerIp: string;
  peerPort: number;
  offset: number;
  length: number;
  client: ClientAddr | null;
  channel: number;
}

interface Permission extends Expiring {
  readonly kind: 'permission';
  readonly alloc: Allocation;
  readonly ip: string;
}

interface Channel extends Expiring {
  readonly kind: 'channel';
  readonly alloc: Allocation;
  readonly number: number;
  readonly peerIp: string;
  readonly peerPort: number;
  /** The peer is this relay's own address (another allocation, maybe of this process: hairpin). */
  readonly toRelay: boolean;
  permission: Permission;
}

interface Allocation extends Expiring {
  readonly kind: 'allocation';
  readonly id: number;
  readonly client: ClientAddr;
  readonly username: string;
  readonly key: Uint8Array;
  readonly family: 4 | 6;
  relayPort: number;
  /** False while the driver binds the relay port. */
  active: boolean;
  /**
   * The Allocate request, to answer it when the port is bound and to answer a retransmission
   * the same way (RFC 8656 §7.2); the success is rebuilt rather than kept, to save memory.
   * The transaction id is held as a 12-character string (smaller than a typed array).
   */
  readonly allocateTid: string;
  readonly allocateLifetimeS: number;
  readonly allocateFingerprint: boolean;
  /** These three start as the shared empty maps below and get their own on first write (memory per idle allocation). */
  permissions: Map<string, Permission>;
  channels: Map<number, Channel>;
  channelsByPeer: Map<string, Map<number, Channel>>;
  tokens: number;
  tokensAt: number;
}

/**
 * A TCP/TLS client connection. Its heap deadline is the handshake deadline while a TLS
 * handshake runs, then the idle deadline, which only whole frames push back: a client
 * dribbling a byte at a time, or holding a frame half-sent, makes no progress toward it.
 */
interface StreamConn extends Expiring {
  readonly kind: 'stream';
  readonly client: ClientAddr & { kind: 'stream' };
  readonly framer: StreamFramer;
  /** Key of the per-source count ({@link streamSourceKey}). */
  readonly source: string;
  /** 'handshake' until the driver reports a finished TLS handshake; TCP starts 'open'. */
  phase: 'handshake' | 'open';
  alloc: Allocation | null;
}

/**
 * The source a connection is counted against for `maxStreamsPerIp`: an IPv4 address (an
 * IPv4-mapped IPv6 one as IPv4), or the /64 of an IPv6 address, since one host commonly holds
 * a whole /64 (RFC 8981 temporary addresses) and could otherwise take a slot per address.
 */
export function streamSourceKey(ip: string): string {
  if (!ip.includes(':')) return ip;
  const lower = ip.toLowerCase();
  if (lower.startsWith('::ffff:') && lower.includes('.')) return lower.slice(7);
  // Expand "::" to find the first four groups.
  const [head = '', tail] = lower.split('::', 2) as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail === undefined ? [] : tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return groups.slice(0, 4).map((g) => (parseInt(g, 16) || 0).toString(16)).join(':') + '::/64';
}

interface AuthOk {
  readonly username: string;
  readonly key: Uint8Array;
}

/** Dead heap entries tolerated before a compaction is considered (compaction is O(heap)). */
const DEAD_ENTRIES_BEFORE_COMPACT = 1024;

/** Shared, never written: an idle allocation costs no maps of its own. */
const NO_PERMISSIONS: Map<string, Permission> = new Map();
const NO_CHANNELS: Map<number, Channel> = new Map();
const NO_CHANNELS_BY_PEER: Map<string, Map<number, Channel>> = new Map();

/** Comprehension-required attributes this server understands (RFC 8489 §15: others get 420). */
const KNOWN_REQUIRED = new Set<number>([
  Attr.MappedAddress,
  Attr.Username,
  Attr.MessageIntegrity,
  Attr.ErrorCode,
  Attr.UnknownAttributes,
  Attr.ChannelNumber,
  Attr.Lifetime,
  Attr.XorPeerAddress,
  Attr.Data,
  Attr.Realm,
  Attr.Nonce,
  Attr.XorRelayedAddress,
  Attr.RequestedAddressFamily,
  Attr.RequestedTransport,
  Attr.MessageIntegritySha256,
  Attr.XorMappedAddress,
  Attr.EvenPort,
]);

function unknownRequired(msg: StunMessage): number[] {
  let out: number[] | null = null;
  for (const a of msg.attributes) {
    if (a.type < 0x8000 && !KNOWN_REQUIRED.has(a.type)) (out ??= []).push(a.type);
  }
  return out ?? [];
}

/** A transaction id as a 12-character one-byte string, and back. */
function tidString(tid: Uint8Array): string {
  return String.fromCharCode(...tid);
}
function tidBytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/**
 * The TURN server state machine. All methods take `now` in milliseconds and never throw
 * on wire input; actions accumulate until {@link takeActions}.
 * @example
 * const server = new TurnServer(options);
 * const code = server.handleUdp(0, '198.51.100.7', 50000, datagram, Date.now());
 * if (code === FAST_TO_PEER) relaySocket(server.fast.relayId).send(datagram, server.fast.offset, ...);
 * for (const action of server.takeActions()) execute(action);
 */
export class TurnServer {
  /** Counters read by the metrics module. */
  readonly counters: TurnCounters;
  /** Hot-path result, overwritten by each call. */
  readonly fast: FastPath = { relayId: 0, peerIp: '', peerPort: 0, offset: 0, length: 0, client: null, channel: 0 };

  private actions: RelayAction[] = [];
  private readonly secretKeys: Uint8Array[];
  private readonly nonces: NonceBook;
  private readonly allocations = new Map<number, Allocation>();
  /**
   * UDP allocations by remote ip, then listener * 65536 + remote port. An ip with a single
   * allocation maps to it directly (no inner map), the common case, to save memory.
   */
  private readonly udpClients = new Map<string, Allocation | Map<number, Allocation>>();
  private readonly conns = new Map<number, StreamConn>();
  /** Open stream connections per source ({@link streamSourceKey}); sources with none are removed. */
  private readonly streamsPerSource = new Map<string, number>();
  private readonly perUsername = new Map<string, number>();
  /**
   * Active allocations of this process by relayed port, per family. Two endpoints that can reach
   * only this relay (both behind UDP-blocking firewalls) talk allocation to allocation, so the
   * relay's own address is a peer there, but only at these ports (never its listening, metrics or
   * any other port; `peerAllowed`). And their packets go from one allocation to the other inside
   * the process (hairpin) instead of crossing the kernel twice (a send from one relayed socket, a
   * receive on the other): delivered here they take the same checks (the target's permission,
   * channel and bandwidth) and arrive from the sender's relayed address, as through the kernel.
   * With several worker processes, each knows only its own allocations; a port in a sibling's
   * share of the range is admitted by `siblingRelayPort` and reached through the kernel.
   */
  private readonly localRelays4 = new Map<number, Allocation>();
  private readonly localRelays6 = new Map<number, Allocation>();
  /** The advertised relay addresses in the text form decoded peer addresses take (formatIp). */
  private readonly relayIp4: string | null;
  private readonly relayIp6: string | null;
  private readonly heap = new DeadlineHeap<Allocation | Permission | Channel | StreamConn>();
  private nextRelayId = 1;
  /** Heap entries whose entity is already gone; compacted when they dominate. */
  private deadScheduled = 0;
  private draining = false;
  private readonly tidPrefix: Uint8Array;
  private tidCounter = 0;

  constructor(private readonly opts: TurnServerOptions) {
    this.counters = opts.counters ?? createTurnCounters();
    const enc = new TextEncoder();
    this.secretKeys = opts.secrets.map((s) => enc.encode(s));
    this.nonces = new NonceBook(opts.crypto, this.secretKeys, opts.nonceLifetimeS);
    this.tidPrefix = opts.randomBytes(8);
    const canonical = (ip: string | undefined): string | null => {
      const bytes = ip === undefined ? null : parseIp(ip);
      return bytes ? formatIp(bytes) : null;
    };
    this.relayIp4 = canonical(opts.relayAddressV4);
    this.relayIp6 = canonical(opts.relayAddressV6);
  }

  /** Actions produced since the last call, in order. */
  takeActions(): RelayAction[] {
    const a = this.actions;
    this.actions = [];
    return a;
  }

  /** True when actions are waiting. */
  get hasActions(): boolean {
    return this.actions.length > 0;
  }

  /** Number of allocations (pending ones included). */
  get allocationCount(): number {
    return this.allocations.size;
  }

  /** Entries in the timer heap (bounded: dead ones are compacted away). */
  get timerEntries(): number {
    return this.heap.size;
  }

  /** Stop accepting new allocations (graceful shutdown); existing ones keep working. */
  startDrain(): void {
    this.draining = true;
  }

  // ------------------------------------------------------------------ inputs

  /**
   * A datagram from a UDP client at `ip:port` on listener `listener`.
   * Returns FAST_TO_PEER when the driver should forward `fast` (ChannelData), else FAST_NONE.
   */
  handleUdp(listener: number, ip: string, port: number, data: Uint8Array, now: number): number {
    if (data.length >= 4 && (data[0]! & 0xc0) === 0x40) {
      const alloc = this.udpAllocation(listener, ip, port);
      if (alloc === undefined || !alloc.active) {
        this.counters.dropNoAllocation++;
        return FAST_NONE;
      }
      return this.channelDataFromClient(alloc, data, false, now);
    }
    if (data.length < 20 || (data[0]! & 0xc0) !== 0) {
      this.counters.dropMalformed++;
      return FAST_NONE;
    }
    const alloc = this.udpAllocation(listener, ip, port);
    const client: ClientAddr = alloc ? alloc.client : { kind: 'udp', listener, ip, port };
    this.handleStun(client, data, now, alloc ?? null);
    return FAST_NONE;
  }

  /**
   * A new TCP or TLS client connection, at accept (for TLS before its handshake, so that
   * half-open handshakes count against the source's quota too). Returns false when the source
   * already holds `maxStreamsPerIp` connections: the driver then closes it at once.
   */
  openStream(connId: number, transport: 'tcp' | 'tls', ip: string, port: number, now: number): boolean {
    const source = streamSourceKey(ip);
    const open = this.streamsPerSource.get(source) ?? 0;
    if (open >= this.opts.maxStreamsPerIp) {
      this.counters.streamRefusedPerIp++;
      return false;
    }
    this.streamsPerSource.set(source, open + 1);
    const phase = transport === 'tls' ? 'handshake' : 'open';
    const conn: StreamConn = {
      kind: 'stream',
      client: { kind: 'stream', connId, transport, ip, port },
      framer: new StreamFramer(this.opts.maxStreamBufferBytes),
      source,
      phase,
      alloc: null,
      expiresAt: now + (phase === 'handshake' ? this.opts.streamHandshakeTimeoutMs : this.opts.streamIdleTimeoutMs),
      scheduled: false,
      dead: false,
    };
    this.conns.set(connId, conn);
    this.heap.schedule(conn);
    return true;
  }

  /**
   * The TLS handshake of `connId` finished: the idle deadline starts now. (It takes effect no
   * earlier than the handshake deadline already scheduled, when that one is later.)
   */
  streamSecured(connId: number, now: number): void {
    const conn = this.conns.get(connId);
    if (!conn || conn.phase !== 'handshake') return;
    conn.phase = 'open';
    conn.expiresAt = now + this.opts.streamIdleTimeoutMs;
  }

  /** Bytes from a stream connection. Relayed data comes out as `send-peer` actions. */
  handleStream(connId: number, chunk: Uint8Array, now: number): void {
    const conn = this.conns.get(connId);
    if (!conn) return;
    const pushed = conn.framer.push(chunk);
    if (!pushed.ok) return this.failStream(conn, pushed.error.detail);
    for (;;) {
      const r = conn.framer.next();
      if (!r.ok) {
        if (r.error.kind === 'oversized') this.counters.quotaStreamBuffer++;
        else this.counters.dropMalformed++;
        return this.failStream(conn, r.error.detail);
      }
      const frame = r.value;
      if (!frame) return;
      // A whole frame is progress: push the idle deadline back (the heap entry moves lazily).
      if (conn.phase === 'open') conn.expiresAt = now + this.opts.streamIdleTimeoutMs;
      if (frame.kind === 'channel-data') {
        const alloc = conn.alloc;
        if (!alloc || !alloc.active) {
          this.counters.dropNoAllocation++;
          continue;
        }
        const r = this.channelDataFromClient(alloc, frame.bytes, true, now);
        const f = this.fast;
        if (r === FAST_TO_PEER) {
          this.actions.push({ type: 'send-peer', relayId: f.relayId, ip: f.peerIp, port: f.peerPort, data: frame.bytes.subarray(f.offset, f.offset + f.length) });
        } else if (r === FAST_TO_CLIENT) {
          this.actions.push({ type: 'send-channel-data', to: f.client!, channel: f.channel, data: frame.bytes.subarray(f.offset, f.offset + f.length) });
        }
      } else {
        this.handleStun(conn.client, frame.bytes, now, conn.alloc);
      }
    }
  }

  /** A stream connection closed: its allocation goes with it (RFC 8656 §3.1). */
  closeStream(connId: number): void {
    const conn = this.conns.get(connId);
    if (!conn) return;
    this.conns.delete(connId);
    this.bury(conn);
    const open = (this.streamsPerSource.get(conn.source) ?? 1) - 1;
    if (open <= 0) this.streamsPerSource.delete(conn.source);
    else this.streamsPerSource.set(conn.source, open);
    if (conn.alloc) this.removeAllocation(conn.alloc, 'connection closed');
  }

  /**
   * A datagram from peer `ip:port` arriving on allocation `relayId`'s relayed port.
   * Returns FAST_TO_CLIENT when the driver should send it as ChannelData (`fast.client`, `fast.channel`).
   */
  handlePeer(relayId: number, ip: string, port: number, data: Uint8Array, now: number): number {
    const alloc = this.allocations.get(relayId);
    if (!alloc || !alloc.active) {
      this.counters.dropNoAllocation++;
      return FAST_NONE;
    }
    // RFC 8656 §11.3 / §12.7: only from peers with a permission.
    const perm = alloc.permissions.get(ip);
    if (perm === undefined || perm.expiresAt <= now) {
      this.counters.dropNoPermission++;
      return FAST_NONE;
    }
    if (!this.takeTokens(alloc, data.length, now)) return FAST_NONE;
    const ch = alloc.channelsByPeer.get(ip)?.get(port);
    if (ch !== undefined && ch.expiresAt > now) {
      const f = this.fast;
      f.client = alloc.client;
      f.channel = ch.number;
      f.offset = 0;
      f.length = data.length;
      this.counters.packetsToClient++;
      this.counters.bytesToClient += data.length;
      return FAST_TO_CLIENT;
    }
    // RFC 8656 §11.3: no channel -> Data indication with XOR-PEER-ADDRESS and DATA.
    if (data.length > 0xffff - 64) {
      this.counters.dropMalformed++;
      return FAST_NONE;
    }
    const tid = this.indicationTid();
    const bytes = new StunWriter(StunMethod.Data, StunClass.Indication, tid, { capacity: data.length + 64 })
      .add(Attr.XorPeerAddress, encodeXorAddress({ family: alloc.family, ip, port }, tid))
      .add(Attr.Data, data)
      .finish();
    this.counters.packetsToClient++;
    this.counters.bytesToClient += data.length;
    this.actions.push({ type: 'send-client', to: alloc.client, data: bytes, relayed: data });
    return FAST_NONE;
  }

  /** The driver bound `relayId`'s relay port. */
  relayBound(relayId: number, port: number, now: number): void {
    const alloc = this.allocations.get(relayId);
    if (!alloc || alloc.active) {
      this.actions.push({ type: 'release-relay', relayId });
      return;
    }
    alloc.active = true;
    alloc.relayPort = port;
    (alloc.family === 4 ? this.localRelays4 : this.localRelays6).set(port, alloc);
    alloc.expiresAt = now + alloc.allocateLifetimeS * 1000;
    this.heap.schedule(alloc);
    this.actions.push({ type: 'send-client', to: alloc.client, data: this.allocateSuccess(alloc) });
    this.log('info', 'allocation_created', { relayId, transport: this.transportOf(alloc.client), client: alloc.client.ip, relayPort: port, lifetime: alloc.allocateLifetimeS });
  }

  /** The Allocate success response (RFC 8656 §7.2): XOR-RELAYED-ADDRESS, LIFETIME, XOR-MAPPED-ADDRESS. */
  private allocateSuccess(alloc: Allocation): Uint8Array {
    const relayIp = alloc.family === 4 ? this.opts.relayAddressV4! : this.opts.relayAddressV6!;
    const tid = tidBytes(alloc.allocateTid);
    const w = this.writer(StunMethod.Allocate, StunClass.SuccessResponse, tid)
      .add(Attr.XorRelayedAddress, encodeXorAddress({ family: alloc.family, ip: relayIp, port: alloc.relayPort }, tid))
      .add(Attr.Lifetime, encodeLifetime(alloc.allocateLifetimeS))
      .add(Attr.XorMappedAddress, encodeXorAddress(this.mapped(alloc.client), tid));
    return this.seal(w, alloc.key, alloc.allocateFingerprint);
  }

  /** The driver could not bind a relay port for `relayId` (pool exhausted or bind error): 508. */
  relayFailed(relayId: number, reason: string): void {
    const alloc = this.allocations.get(relayId);
    if (!alloc || alloc.active) return;
    this.counters.quotaRelayPorts++;
    this.queueError(alloc.client, StunMethod.Allocate, tidBytes(alloc.allocateTid), ErrorCode.InsufficientCapacity, alloc.key, alloc.allocateFingerprint);
    this.log('warn', 'relay_bind_failed', { relayId, reason });
    this.removeAllocation(alloc, 'bind failed', false);
  }

  /** A send from `relayId` to a peer failed: the packet is lost, the allocation stays (unlike coturn). */
  peerSendFailed(): void {
    this.counters.dropSendFailed++;
  }

  /** Earliest time (ms) at which {@link handleTimeout} has work, or undefined. */
  pollTimeout(): number | undefined {
    return this.heap.peek();
  }

  /** Expires allocations, permissions and channels due at `now`. */
  handleTimeout(now: number): void {
    for (let item = this.heap.popDue(now); item; item = this.heap.popDue(now)) {
      if (item.dead) {
        this.deadScheduled--;
        continue;
      }
      if (item.expiresAt > now) {
        this.heap.schedule(item);
        continue;
      }
      switch (item.kind) {
        case 'allocation':
          this.counters.allocationsExpired++;
          this.removeAllocation(item, 'expired');
          break;
        case 'permission':
          this.removePermission(item);
          break;
        case 'channel':
          this.removeChannel(item);
          break;
        case 'stream':
          this.streamDeadline(item, now);
          break;
        default:
          assertNever(item);
      }
    }
  }

  /** Deletes every allocation (shutdown), releasing relay ports. */
  closeAll(): void {
    for (const alloc of [...this.allocations.values()]) this.removeAllocation(alloc, 'shutdown');
  }

  // --------------------------------------------------------------- hot path

  private udpAllocation(listener: number, ip: string, port: number): Allocation | undefined {
    const cur = this.udpClients.get(ip);
    if (cur === undefined) return undefined;
    if (cur instanceof Map) return cur.get(listener * 65536 + port);
    const c = cur.client as ClientAddr & { kind: 'udp' };
    return c.port === port && c.listener === listener ? cur : undefined;
  }

  /**
   * A client's ChannelData: FAST_TO_PEER (`fast` names the relay socket and peer), FAST_TO_CLIENT
   * when the peer is another allocation of this process (hairpin; `fast` names that allocation's
   * client, the payload at `fast.offset` of `data`), or FAST_NONE (dropped, or queued as actions).
   */
  private channelDataFromClient(alloc: Allocation, data: Uint8Array, stream: boolean, now: number): number {
    const number = (data[0]! << 8) | data[1]!;
    const length = (data[2]! << 8) | data[3]!;
    // RFC 8656 §12.5: drop when shorter than its length (UDP may carry padding past it).
    if (4 + length > data.length || (stream && ((4 + length + 3) & ~3) !== data.length)) {
      this.counters.dropMalformed++;
      return FAST_NONE;
    }
    const ch = alloc.channels.get(number);
    if (ch === undefined || ch.expiresAt <= now) {
      this.counters.dropNoChannel++;
      return FAST_NONE;
    }
    if (ch.permission.expiresAt <= now) {
      this.counters.dropNoPermission++;
      return FAST_NONE;
    }
    if (!this.takeTokens(alloc, length, now)) return FAST_NONE;
    const f = this.fast;
    f.relayId = alloc.id;
    f.peerIp = ch.peerIp;
    f.peerPort = ch.peerPort;
    f.offset = 4;
    f.length = length;
    this.counters.packetsToPeer++;
    this.counters.bytesToPeer += length;
    if (ch.toRelay) {
      const r = this.hairpin(alloc, ch.peerPort, data.subarray(4, 4 + length), now);
      if (r === FAST_TO_CLIENT) f.offset = 4; // the payload's place in `data`
      if (r !== NOT_LOCAL) return r;
    }
    return FAST_TO_PEER;
  }

  /**
   * Delivers `payload`, sent by allocation `from` to this relay's own address at `port`, to the
   * allocation of this process that owns that relayed port, as if it had arrived there from
   * `from`'s relayed address (the target's permission, channel and bandwidth checks apply).
   * NOT_LOCAL when no allocation here owns `port` (another worker's, or none): send as usual.
   */
  private hairpin(from: Allocation, port: number, payload: Uint8Array, now: number): number {
    const target = (from.family === 4 ? this.localRelays4 : this.localRelays6).get(port);
    if (target === undefined) return NOT_LOCAL;
    this.counters.hairpinPackets++;
    return this.handlePeer(target.id, this.relayIpOf(from.family)!, from.relayPort, payload, now);
  }

  private relayIpOf(family: 4 | 6): string | null {
    return family === 4 ? this.relayIp4 : this.relayIp6;
  }

  /** Token bucket per allocation (both directions); drops what exceeds the cap. */
  private takeTokens(alloc: Allocation, bytes: number, now: number): boolean {
    const rate = this.opts.bandwidthBytesPerSecond;
    if (rate === 0) return true;
    if (this.opts.takeTokens) {
      if (this.opts.takeTokens(alloc.id, bytes, now)) return true;
      this.counters.dropBandwidth++;
      return false;
    }
    if (now > alloc.tokensAt) {
      alloc.tokens = Math.min(this.opts.bandwidthBurstBytes, alloc.tokens + ((now - alloc.tokensAt) * rate) / 1000);
      alloc.tokensAt = now;
    }
    if (alloc.tokens < bytes) {
      this.counters.dropBandwidth++;
      return false;
    }
    alloc.tokens -= bytes;
    return true;
  }

  // ------------------------------------------------------------ STUN dispatch

  private handleStun(client: ClientAddr, bytes: Uint8Array, now: number, alloc: Allocation | null): void {
    const r = decodeStun(bytes);
    if (!r.ok) {
      this.counters.dropMalformed++;
      return;
    }
    const msg = r.value;
    if (msg.cls === StunClass.Indication) {
      if (msg.method === StunMethod.Send) this.onSend(alloc, msg, now);
      return;
    }
    if (msg.cls !== StunClass.Request) return; // responses are not for a server
    this.counters.requests++;
    switch (msg.method) {
      case StunMethod.Binding:
        return this.onBinding(client, msg);
      case StunMethod.Allocate:
        return this.onAllocate(client, msg, now, alloc);
      case StunMethod.Refresh:
        return this.onRefresh(client, msg, now, alloc);
      case StunMethod.CreatePermission:
        return this.onCreatePermission(client, msg, now, alloc);
      case StunMethod.ChannelBind:
        return this.onChannelBind(client, msg, now, alloc);
      default:
        // RFC 8489 §6.3.1: a request of an unknown method gets 400.
        return this.replyError(client, msg, ErrorCode.BadRequest, null);
    }
  }

  /** RFC 8489 §9.2.4 steps, for TURN requests. Queues the error itself and returns null on failure. */
  private authenticate(client: ClientAddr, msg: StunMessage, now: number, alloc: Allocation | null): AuthOk | null {
    const nowS = Math.floor(now / 1000);
    const mi = findAttr(msg, Attr.MessageIntegrity);
    // 1. No MESSAGE-INTEGRITY: challenge with 401, REALM and a fresh NONCE.
    if (!mi) {
      this.counters.authChallenges++;
      this.replyChallenge(client, msg, ErrorCode.Unauthorized, nowS);
      return null;
    }
    // 2. MESSAGE-INTEGRITY without USERNAME, REALM or NONCE: 400.
    const userA = findAttr(msg, Attr.Username);
    const realmA = findAttr(msg, Attr.Realm);
    const nonceA = findAttr(msg, Attr.Nonce);
    const user = userA && decodeUsername(userA.value);
    const realm = realmA && decodeRealm(realmA.value);
    const nonce = nonceA && decodeNonce(nonceA.value);
    if (!user?.ok || !realm?.ok || !nonce?.ok) {
      this.counters.authMissingFields++;
      this.replyError(client, msg, ErrorCode.BadRequest, null);
      return null;
    }
    // 3. A NONCE that is not ours, is for another address, or expired: 438 with a fresh one.
    if (!this.nonces.check(nonce.value, nowS, client.ip)) {
      this.counters.authStaleNonce++;
      this.replyChallenge(client, msg, ErrorCode.StaleNonce, nowS);
      return null;
    }
    // RFC 8656 §5: requests on an allocation must use the username that created it: 441.
    if (alloc && alloc.username !== user.value) {
      this.counters.authWrongCredentials++;
      this.replyError(client, msg, ErrorCode.WrongCredentials, null);
      return null;
    }
    // 4. REST username: well-formed and not expired, else 401.
    const u = checkRestUsername(user.value, nowS);
    if (!u.ok) {
      if (u.reason === 'expired') this.counters.authExpired++;
      else this.counters.authBadUsername++;
      this.replyChallenge(client, msg, ErrorCode.Unauthorized, nowS);
      return null;
    }
    // 5. MESSAGE-INTEGRITY with the key of any configured secret (rotation).
    if (realm.value === this.opts.realm) {
      if (alloc && verifyMessageIntegrity(msg, alloc.key, this.opts.crypto.hmacSha1)) return { username: user.value, key: alloc.key };
      if (!alloc) {
        for (const key of longTermKeys(this.opts.crypto, this.secretKeys, user.value, this.opts.realm)) {
          if (verifyMessageIntegrity(msg, key, this.opts.crypto.hmacSha1)) return { username: user.value, key };
        }
      }
    }
    this.counters.authBadIntegrity++;
    this.replyChallenge(client, msg, ErrorCode.Unauthorized, nowS);
    return null;
  }

  /** Binding (RFC 8489 §6.3.1): no authentication; XOR-MAPPED-ADDRESS of the source. */
  private onBinding(client: ClientAddr, msg: StunMessage): void {
    const unknown = unknownRequired(msg);
    if (unknown.length > 0) return this.replyUnknown(client, msg, unknown, null);
    const w = this.writer(msg.method, StunClass.SuccessResponse, msg.transactionId).add(
      Attr.XorMappedAddress,
      encodeXorAddress(this.mapped(client), msg.transactionId),
    );
    this.actions.push({ type: 'send-client', to: client, data: this.seal(w, null, this.hasFingerprint(msg)) });
  }

  /** Allocate (RFC 8656 §7.2). */
  private onAllocate(client: ClientAddr, msg: StunMessage, now: number, existing: Allocation | null): void {
    // 1. Authentication (the username of an existing allocation is checked in step 2 instead).
    const auth = this.authenticate(client, msg, now, null);
    if (!auth) return;
    // 2. An allocation on this 5-tuple: a retransmission gets the same answer, anything else 437.
    if (existing) {
      if (existing.allocateTid === tidString(msg.transactionId)) {
        if (existing.active) this.actions.push({ type: 'send-client', to: client, data: this.allocateSuccess(existing) });
        return; // still binding: the answer will come
      }
      return this.replyError(client, msg, ErrorCode.AllocationMismatch, auth.key);
    }
    const unknown = unknownRequired(msg);
    if (unknown.length > 0) return this.replyUnknown(client, msg, unknown, auth.key);
    // 3. REQUESTED-TRANSPORT: required, UDP only (442 otherwise).
    const rtA = findAttr(msg, Attr.RequestedTransport);
    const rt = rtA && decodeRequestedTransport(rtA.value);
    if (!rt?.ok) return this.replyError(client, msg, ErrorCode.BadRequest, auth.key);
    if (rt.value !== TRANSPORT_UDP) return this.replyError(client, msg, ErrorCode.UnsupportedTransportProtocol, auth.key);
    // (DONT-FRAGMENT and RESERVATION-TOKEN are unsupported: 420 above, as §7.2 allows.)
    // EVEN-PORT (§7.2, §14.6): an even relay port; with the R bit the next port would have to be
    // reserved, which this relay does not do, so that request "cannot be satisfied": 508.
    const evenA = findAttr(msg, Attr.EvenPort);
    if (evenA && evenA.value.length !== 1) return this.replyError(client, msg, ErrorCode.BadRequest, auth.key);
    if (evenA && (evenA.value[0]! & 0x80) !== 0) return this.replyError(client, msg, ErrorCode.InsufficientCapacity, auth.key);
    const even = evenA !== undefined;
    // 4. REQUESTED-ADDRESS-FAMILY: IPv4 by default; a family we do not relay gets 440.
    let family: 4 | 6 = 4;
    const rafA = findAttr(msg, Attr.RequestedAddressFamily);
    if (rafA) {
      const raf = decodeRequestedAddressFamily(rafA.value);
      if (!raf.ok) return this.replyError(client, msg, ErrorCode.BadRequest, auth.key);
      family = raf.value;
    }
    if ((family === 4 ? this.opts.relayAddressV4 : this.opts.relayAddressV6) === undefined) {
      return this.replyError(client, msg, ErrorCode.AddressFamilyNotSupported, auth.key);
    }
    const lifetime = this.lifetimeOf(msg);
    if (lifetime === null) return this.replyError(client, msg, ErrorCode.BadRequest, auth.key);
    // 5. Quotas: per username 486, in total (or while draining) 508.
    if ((this.perUsername.get(auth.username) ?? 0) >= this.opts.maxAllocationsPerUsername) {
      this.counters.quotaAllocationsPerUser++;
      return this.replyError(client, msg, ErrorCode.AllocationQuotaReached, auth.key);
    }
    if (this.draining || this.allocations.size >= this.opts.maxAllocations) {
      this.counters.quotaAllocationsTotal++;
      return this.replyError(client, msg, ErrorCode.InsufficientCapacity, auth.key);
    }
    // 6. Create the allocation; the relay port comes from the driver.
    const id = this.nextRelayId++;
    const alloc: Allocation = {
      kind: 'allocation',
      id,
      client,
      username: auth.username,
      key: auth.key,
      family,
      relayPort: 0,
      active: false,
      allocateTid: tidString(msg.transactionId),
      allocateLifetimeS: lifetime === 0 ? this.opts.defaultLifetimeS : lifetime,
      allocateFingerprint: this.hasFingerprint(msg),
      permissions: NO_PERMISSIONS,
      channels: NO_CHANNELS,
      channelsByPeer: NO_CHANNELS_BY_PEER,
      tokens: this.opts.bandwidthBurstBytes,
      tokensAt: now,
      expiresAt: Number.POSITIVE_INFINITY,
      scheduled: false,
      dead: false,
    };
    this.allocations.set(id, alloc);
    this.perUsername.set(auth.username, (this.perUsername.get(auth.username) ?? 0) + 1);
    if (client.kind === 'udp') {
      const k = client.listener * 65536 + client.port;
      const cur = this.udpClients.get(client.ip);
      if (cur === undefined) this.udpClients.set(client.ip, alloc);
      else if (cur instanceof Map) cur.set(k, alloc);
      else {
        const c = cur.client as ClientAddr & { kind: 'udp' };
        this.udpClients.set(client.ip, new Map([[c.listener * 65536 + c.port, cur], [k, alloc]]));
      }
    } else {
      const conn = this.conns.get(client.connId);
      if (conn) conn.alloc = alloc;
    }
    this.counters.allocations++;
    this.counters.allocationsCreated++;
    this.actions.push({ type: 'bind-relay', relayId: id, family, even });
  }

  /** LIFETIME of a request (RFC 8656 §7.2, §7.3): absent -> default; else at least the default, at most the max; 0 stays 0. */
  private lifetimeOf(msg: StunMessage): number | null {
    const a = findAttr(msg, Attr.Lifetime);
    if (!a) return this.opts.defaultLifetimeS;
    const l = decodeLifetime(a.value);
    if (!l.ok) return null;
    if (l.value === 0) return 0;
    return Math.min(Math.max(l.value, this.opts.defaultLifetimeS), this.opts.maxLifetimeS);
  }

  /** Refresh (RFC 8656 §7.3): extend, or delete with LIFETIME 0. */
  private onRefresh(client: ClientAddr, msg: StunMessage, now: number, alloc: Allocation | null): void {
    const auth = this.authenticate(client, msg, now, alloc && alloc.active ? alloc : null);
    if (!auth) return;
    if (!alloc || !alloc.active) return this.replyError(client, msg, ErrorCode.AllocationMismatch, auth.key);
    const unknown = unknownRequired(msg);
    if (unknown.length > 0) return this.replyUnknown(client, msg, unknown, auth.key);
    const rafA = findAttr(msg, Attr.RequestedAddressFamily);
    if (rafA) {
      const raf = decodeRequestedAddressFamily(rafA.value);
      if (!raf.ok) return this.replyError(client, msg, ErrorCode.BadRequest, auth.key);
      if (raf.value !== alloc.family) return this.replyError(client, msg, ErrorCode.PeerAddressFamilyMismatch, auth.key);
    }
    const lifetime = this.lifetimeOf(msg);
    if (lifetime === null) return this.replyError(client, msg, ErrorCode.BadRequest, auth.key);
    const w = this.writer(msg.method, StunClass.SuccessResponse, msg.transactionId).add(Attr.Lifetime, encodeLifetime(lifetime));
    this.actions.push({ type: 'send-client', to: client, data: this.seal(w, auth.key, this.hasFingerprint(msg)) });
    if (lifetime === 0) {
      this.removeAllocation(alloc, 'refreshed to 0');
    } else {
      alloc.expiresAt = now + lifetime * 1000;
      this.heap.schedule(alloc);
    }
  }

  /** Decodes every XOR-PEER-ADDRESS and runs the peer policy; queues the error itself on failure. */
  private peersOf(client: ClientAddr, msg: StunMessage, alloc: Allocation, key: Uint8Array, max: number): TransportAddress[] | null {
    const peers: TransportAddress[] = [];
    for (const a of msg.attributes) {
      if (a.type !== Attr.XorPeerAddress) continue;
      if (peers.length >= max) break;
      const p = decodeXorAddress(a.value, msg.transactionId);
      if (!p.ok) {
        this.replyError(client, msg, ErrorCode.BadRequest, key);
        return null;
      }
      peers.push(p.value);
    }
    if (peers.length === 0) {
      this.replyError(client, msg, ErrorCode.BadRequest, key);
      return null;
    }
    for (const p of peers) {
      if (p.family !== alloc.family) {
        this.replyError(client, msg, ErrorCode.PeerAddressFamilyMismatch, key);
        return null;
      }
      if (!this.peerAllowed(p.ip, p.port)) {
        this.replyError(client, msg, ErrorCode.Forbidden, key);
        return null;
      }
    }
    return peers;
  }

  private peerAllowed(ip: string, port: number): boolean {
    let verdict: PeerCheck;
    try {
      verdict = this.opts.checkPeer(ip);
    } catch {
      verdict = { allowed: false, reason: 'malformed', canonical: null };
    }
    if (verdict.allowed) return true;
    // Allocation to allocation on this relay (see localRelays4), or to one of a sibling worker
    // (its ports are not in our table; the packets go through the kernel). Permissions are per IP
    // (RFC 8656 §9), so the port named in CreatePermission gates installing one, and every Send
    // and ChannelBind names a port again.
    if (verdict.reason === 'relay_address') {
      if ((ip.includes(':') ? this.localRelays6 : this.localRelays4).has(port)) return true;
      if (this.opts.siblingRelayPort?.(port) === true) return true;
    }
    this.counters.peersDenied++;
    // Only the policy's fixed reasons are series; an unknown one counts in the total alone.
    const by = this.counters.peersDeniedByReason as Record<string, number>;
    if (Object.hasOwn(by, verdict.reason)) by[verdict.reason]!++;
    return false;
  }

  /** CreatePermission (RFC 8656 §9.2). */
  private onCreatePermission(client: ClientAddr, msg: StunMessage, now: number, alloc: Allocation | null): void {
    const auth = this.authenticate(client, msg, now, alloc && alloc.active ? alloc : null);
    if (!auth) return;
    if (!alloc || !alloc.active) return this.replyError(client, msg, ErrorCode.AllocationMismatch, auth.key);
    const unknown = unknownRequired(msg);
    if (unknown.length > 0) return this.replyUnknown(client, msg, unknown, auth.key);
    const peers = this.peersOf(client, msg, alloc, auth.key, this.opts.maxPermissionsPerAllocation + 1);
    if (!peers) return;
    const fresh = new Set<string>();
    for (const p of peers) if (!alloc.permissions.has(p.ip)) fresh.add(p.ip);
    if (alloc.permissions.size + fresh.size > this.opts.maxPermissionsPerAllocation) {
      this.counters.quotaPermissions++;
      return this.replyError(client, msg, ErrorCode.InsufficientCapacity, auth.key);
    }
    for (const p of peers) this.installPermission(alloc, p.ip, now);
    const w = this.writer(msg.method, StunClass.SuccessResponse, msg.transactionId);
    this.actions.push({ type: 'send-client', to: client, data: this.seal(w, auth.key, this.hasFingerprint(msg)) });
  }

  /** ChannelBind (RFC 8656 §11.2). */
  private onChannelBind(client: ClientAddr, msg: StunMessage, now: number, alloc: Allocation | null): void {
    const auth = this.authenticate(client, msg, now, alloc && alloc.active ? alloc : null);
    if (!auth) return;
    if (!alloc || !alloc.active) return this.replyError(client, msg, ErrorCode.AllocationMismatch, auth.key);
    const unknown = unknownRequired(msg);
    if (unknown.length > 0) return this.replyUnknown(client, msg, unknown, auth.key);
    // 1. CHANNEL-NUMBER present and in 0x4000-0x4FFF (RFC 8656), or up to 0x7FFF for RFC 5766 clients; else 400.
    const cnA = findAttr(msg, Attr.ChannelNumber);
    const cn = cnA && decodeChannelNumber(cnA.value);
    if (!cn?.ok || cn.value < CHANNEL_MIN || cn.value > CHANNEL_MAX_LEGACY) return this.replyError(client, msg, ErrorCode.BadRequest, auth.key);
    // 2. Exactly one XOR-PEER-ADDRESS, of the allocation's family (443) and allowed by policy (403).
    const peers = this.peersOf(client, msg, alloc, auth.key, 1);
    if (!peers) return;
    const peer = peers[0]!;
    // 3. The channel is bound to another peer, or the peer to another channel: 400.
    const byNumber = alloc.channels.get(cn.value);
    if (byNumber && (byNumber.peerIp !== peer.ip || byNumber.peerPort !== peer.port)) return this.replyError(client, msg, ErrorCode.BadRequest, auth.key);
    const byPeer = alloc.channelsByPeer.get(peer.ip)?.get(peer.port);
    if (byPeer && byPeer.number !== cn.value) return this.replyError(client, msg, ErrorCode.BadRequest, auth.key);
    if (!byNumber && alloc.channels.size >= this.opts.maxChannelsPerAllocation) {
      this.counters.quotaPermissions++;
      return this.replyError(client, msg, ErrorCode.InsufficientCapacity, auth.key);
    }
    if (!alloc.permissions.has(peer.ip) && alloc.permissions.size >= this.opts.maxPermissionsPerAllocation) {
      this.counters.quotaPermissions++;
      return this.replyError(client, msg, ErrorCode.InsufficientCapacity, auth.key);
    }
    // 4. Install or refresh the binding (600 s) and the peer's permission (300 s).
    const perm = this.installPermission(alloc, peer.ip, now);
    if (byNumber) {
      byNumber.expiresAt = now + CHANNEL_LIFETIME_S * 1000;
      byNumber.permission = perm;
      this.heap.schedule(byNumber);
    } else {
      const ch: Channel = {
        kind: 'channel',
        alloc,
        number: cn.value,
        peerIp: peer.ip,
        peerPort: peer.port,
        toRelay: peer.ip === this.relayIpOf(alloc.family),
        permission: perm,
        expiresAt: now + CHANNEL_LIFETIME_S * 1000,
        scheduled: false,
        dead: false,
      };
      if (alloc.channels === NO_CHANNELS) alloc.channels = new Map();
      if (alloc.channelsByPeer === NO_CHANNELS_BY_PEER) alloc.channelsByPeer = new Map();
      alloc.channels.set(ch.number, ch);
      let ports = alloc.channelsByPeer.get(peer.ip);
      if (!ports) alloc.channelsByPeer.set(peer.ip, (ports = new Map()));
      ports.set(peer.port, ch);
      this.counters.channels++;
      this.heap.schedule(ch);
    }
    this.route(alloc.channels.get(cn.value)!);
    const w = this.writer(msg.method, StunClass.SuccessResponse, msg.transactionId);
    this.actions.push({ type: 'send-client', to: client, data: this.seal(w, auth.key, this.hasFingerprint(msg)) });
  }

  /** Send indication (RFC 8656 §10.2): no authentication; silently dropped unless everything checks out. */
  private onSend(alloc: Allocation | null, msg: StunMessage, now: number): void {
    if (!alloc || !alloc.active) {
      this.counters.dropNoAllocation++;
      return;
    }
    // Unknown comprehension-required attributes (DONT-FRAGMENT included: unsupported) discard it.
    if (unknownRequired(msg).length > 0) {
      this.counters.dropMalformed++;
      return;
    }
    const peerA = findAttr(msg, Attr.XorPeerAddress);
    const dataA = findAttr(msg, Attr.Data);
    const peer = peerA && decodeXorAddress(peerA.value, msg.transactionId);
    if (!peer?.ok || !dataA || peer.value.family !== alloc.family) {
      this.counters.dropMalformed++;
      return;
    }
    if (!this.peerAllowed(peer.value.ip, peer.value.port)) return;
    const perm = alloc.permissions.get(peer.value.ip);
    if (!perm || perm.expiresAt <= now) {
      this.counters.dropNoPermission++;
      return;
    }
    if (!this.takeTokens(alloc, dataA.value.length, now)) return;
    this.counters.packetsToPeer++;
    this.counters.bytesToPeer += dataA.value.length;
    if (peer.value.ip === this.relayIpOf(alloc.family)) {
      const r = this.hairpin(alloc, peer.value.port, dataA.value, now);
      if (r === FAST_TO_CLIENT) this.actions.push({ type: 'send-channel-data', to: this.fast.client!, channel: this.fast.channel, data: dataA.value });
      if (r !== NOT_LOCAL) return;
    }
    this.actions.push({ type: 'send-peer', relayId: alloc.id, ip: peer.value.ip, port: peer.value.port, data: dataA.value });
  }

  // -------------------------------------------------------------- state upkeep

  private installPermission(alloc: Allocation, ip: string, now: number): Permission {
    let perm = alloc.permissions.get(ip);
    if (!perm) {
      perm = { kind: 'permission', alloc, ip, expiresAt: 0, scheduled: false, dead: false };
      if (alloc.permissions === NO_PERMISSIONS) alloc.permissions = new Map();
      alloc.permissions.set(ip, perm);
      this.counters.permissions++;
      // Channels to this peer follow the new permission object.
      const ports = alloc.channelsByPeer.get(ip);
      if (ports) for (const ch of ports.values()) ch.permission = perm;
    }
    perm.expiresAt = now + PERMISSION_LIFETIME_S * 1000;
    this.heap.schedule(perm);
    // A refreshed permission extends the routes of the channels to this peer.
    if (this.opts.fastRoutes) {
      const ports = alloc.channelsByPeer.get(ip);
      if (ports) for (const ch of ports.values()) this.route(ch);
    }
    return perm;
  }

  /** Marks an entity gone; its heap entry is skipped, and compacted away when such entries dominate. */
  private bury(e: Expiring): void {
    e.dead = true;
    if (!e.scheduled) return;
    this.deadScheduled++;
    if (this.deadScheduled > DEAD_ENTRIES_BEFORE_COMPACT && this.deadScheduled * 2 > this.heap.size) {
      this.heap.compact();
      this.deadScheduled = 0;
    }
  }

  private removePermission(perm: Permission): void {
    if (perm.dead) return;
    this.bury(perm);
    if (perm.alloc.permissions.get(perm.ip) === perm) {
      perm.alloc.permissions.delete(perm.ip);
      this.counters.permissions--;
    }
  }

  private removeChannel(ch: Channel): void {
    if (ch.dead) return;
    this.bury(ch);
    const a = ch.alloc;
    if (a.channels.get(ch.number) === ch) {
      a.channels.delete(ch.number);
      this.counters.channels--;
    }
    const ports = a.channelsByPeer.get(ch.peerIp);
    if (ports?.get(ch.peerPort) === ch) {
      ports.delete(ch.peerPort);
      if (ports.size === 0) a.channelsByPeer.delete(ch.peerIp);
    }
    // An ending allocation's routes go with its relay socket (release-relay).
    if (this.opts.fastRoutes && a.active && !a.dead && a.client.kind === 'udp') this.actions.push({ type: 'unroute', relayId: a.id, channel: ch.number });
  }

  /** With `fastRoutes`: (re)installs `ch`'s route, valid until its channel or its permission expires. */
  private route(ch: Channel): void {
    const a = ch.alloc;
    if (!this.opts.fastRoutes || a.client.kind !== 'udp' || !a.active) return;
    // To another allocation of this process: a hairpin route. (A sibling worker's port, or in a lab
    // an allowed port on the relay's address, goes through the kernel as any peer does.)
    const target = ch.toRelay ? (a.family === 4 ? this.localRelays4 : this.localRelays6).get(ch.peerPort) : undefined;
    this.actions.push({
      type: 'route',
      relayId: a.id,
      channel: ch.number,
      client: a.client,
      peerIp: ch.peerIp,
      peerPort: ch.peerPort,
      expiresAt: Math.min(ch.expiresAt, ch.permission.expiresAt),
      ...(target ? { hairpin: { relayId: target.id, fromIp: ch.peerIp, fromPort: a.relayPort } } : {}),
    });
  }

  private removeAllocation(alloc: Allocation, why: string, release = true): void {
    if (alloc.dead) return;
    if (alloc.active) {
      const local = alloc.family === 4 ? this.localRelays4 : this.localRelays6;
      if (local.get(alloc.relayPort) === alloc) local.delete(alloc.relayPort);
    }
    this.bury(alloc);
    for (const p of alloc.permissions.values()) this.removePermission(p);
    for (const c of [...alloc.channels.values()]) this.removeChannel(c);
    this.allocations.delete(alloc.id);
    const n = (this.perUsername.get(alloc.username) ?? 1) - 1;
    if (n <= 0) this.perUsername.delete(alloc.username);
    else this.perUsername.set(alloc.username, n);
    const c = alloc.client;
    if (c.kind === 'udp') {
      const cur = this.udpClients.get(c.ip);
      if (cur === alloc) this.udpClients.delete(c.ip);
      else if (cur instanceof Map) {
        const k = c.listener * 65536 + c.port;
        if (cur.get(k) === alloc) cur.delete(k);
        if (cur.size === 0) this.udpClients.delete(c.ip);
      }
    } else {
      const conn = this.conns.get(c.connId);
      if (conn?.alloc === alloc) conn.alloc = null;
    }
    this.counters.allocations--;
    // A pending allocation's port is released when (if) its bind result arrives.
    if (release && (alloc.active || alloc.relayPort !== 0)) this.actions.push({ type: 'release-relay', relayId: alloc.id });
    alloc.active = false;
    this.log('info', 'allocation_deleted', { relayId: alloc.id, reason: why });
  }

  /**
   * A stream connection reached its deadline. Mid-handshake: closed. Holding an allocation: kept
   * (clients with one are quiet for minutes between refreshes; the allocation's own lifetime
   * bounds it, and when it ends the connection is back on the idle rule). Otherwise no whole
   * frame came for `streamIdleTimeoutMs`: closed.
   */
  private streamDeadline(conn: StreamConn, now: number): void {
    if (conn.phase === 'handshake') {
      this.counters.streamHandshakeTimeouts++;
      return this.failStream(conn, 'handshake_timeout');
    }
    if (conn.alloc) {
      conn.expiresAt = now + this.opts.streamIdleTimeoutMs;
      this.heap.schedule(conn);
      return;
    }
    this.counters.streamIdleTimeouts++;
    this.failStream(conn, 'idle_timeout');
  }

  private failStream(conn: StreamConn, reason: string): void {
    this.actions.push({ type: 'close-client', connId: conn.client.connId, reason });
    this.closeStream(conn.client.connId);
  }

  // ------------------------------------------------------------------ replies

  private writer(method: number, cls: StunClass, tid: Uint8Array): StunWriter {
    const w = new StunWriter(method, cls, tid);
    if (this.opts.software) w.add(Attr.Software, encodeText(this.opts.software));
    return w;
  }

  private seal(w: StunWriter, key: Uint8Array | null, fingerprint: boolean): Uint8Array {
    if (key) w.addMessageIntegrity(key, this.opts.crypto.hmacSha1);
    if (fingerprint) w.addFingerprint();
    return w.finish();
  }

  private hasFingerprint(msg: StunMessage): boolean {
    return findAttr(msg, Attr.Fingerprint) !== undefined;
  }

  /** The client's reflexive address; an IPv4 client seen through a dual-stack socket (::ffff:a.b.c.d) is reported as IPv4. */
  private mapped(client: ClientAddr): TransportAddress {
    const ip = client.ip;
    if (ip.startsWith('::ffff:') && ip.includes('.')) return { family: 4, ip: ip.slice(7), port: client.port };
    return { family: ip.includes(':') ? 6 : 4, ip, port: client.port };
  }

  private transportOf(client: ClientAddr): string {
    return client.kind === 'udp' ? 'udp' : client.transport;
  }

  private queueError(client: ClientAddr, method: number, tid: Uint8Array, code: ErrorCode, key: Uint8Array | null, fingerprint: boolean, extra?: (w: StunWriter) => void): void {
    const w = this.writer(method, StunClass.ErrorResponse, tid).add(Attr.ErrorCode, encodeErrorCode({ code, reason: ERROR_REASONS[code] }));
    extra?.(w);
    this.actions.push({ type: 'send-client', to: client, data: this.seal(w, key, fingerprint) });
  }

  private replyError(client: ClientAddr, msg: StunMessage, code: ErrorCode, key: Uint8Array | null): void {
    this.queueError(client, msg.method, msg.transactionId, code, key, this.hasFingerprint(msg));
  }

  private replyUnknown(client: ClientAddr, msg: StunMessage, types: number[], key: Uint8Array | null): void {
    this.queueError(client, msg.method, msg.transactionId, ErrorCode.UnknownAttribute, key, this.hasFingerprint(msg), (w) =>
      w.add(Attr.UnknownAttributes, encodeUnknownAttributes(types.slice(0, 16))),
    );
  }

  /** 401 or 438 with REALM and a fresh NONCE, without MESSAGE-INTEGRITY (RFC 8489 §9.2.4). */
  private replyChallenge(client: ClientAddr, msg: StunMessage, code: ErrorCode, nowS: number): void {
    this.queueError(client, msg.method, msg.transactionId, code, null, this.hasFingerprint(msg), (w) =>
      w.add(Attr.Realm, encodeText(this.opts.realm)).add(Attr.Nonce, encodeText(this.nonces.mint(nowS, client.ip))),
    );
  }

  private indicationTid(): Uint8Array {
    const t = new Uint8Array(12);
    t.set(this.tidPrefix);
    const n = ++this.tidCounter >>> 0;
    t[8] = n >>> 24;
    t[9] = (n >>> 16) & 0xff;
    t[10] = (n >>> 8) & 0xff;
    t[11] = n & 0xff;
    return t;
  }

  private log(level: 'info' | 'warn', event: string, fields: Record<string, string | number>): void {
    this.actions.push({ type: 'log', level, event, fields });
  }
}

/** Exhaustiveness check for switches over unions. */
export function assertNever(x: never): never {
  throw new Error(`unexpected value: ${JSON.stringify(x)}`);
}
