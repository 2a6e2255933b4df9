/**
 * The Node driver of the sans-IO TURN core: it owns the client listeners
 * (node:dgram, node:net, node:tls), the relay sockets and their port pool, and
 * one timer set from the core's next deadline, and carries out the core's
 * actions with an exhaustive switch.
 *
 * Hot path: a UDP ChannelData datagram is handed to the core, which answers
 * FAST_TO_PEER with the target in `server.fast`; the driver sends the payload
 * slice from the received buffer. A peer datagram on a channel comes back as
 * FAST_TO_CLIENT and the driver writes one buffer (4-byte header + payload).
 * Between two allocations of this process (two endpoints that both reach only
 * this relay), handleUdp answers FAST_TO_CLIENT itself (hairpin): the client's
 * datagram goes straight out to the other client, its channel number rewritten
 * in place, with no relay socket in between.
 * No promise, closure or action object is made per packet.
 *
 * A failed send to a peer costs that packet only (counted), never the
 * allocation.
 *
 * Native data path (config `dataPath`, relay/native/udp.c): the addon owns the UDP listener and
 * the relay sockets and forwards channel traffic of UDP clients on its own thread, from routes
 * the core emits (`route` / `unroute` actions); every other datagram reaches handleUdp and
 * handlePeer here as with node:dgram, and the core's answers go out through the addon. The
 * allocation's token bucket lives in the addon so both paths share one cap. TCP and TLS are
 * node:net either way.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { relayBindAddresses, type RelayConfig } from '../config.js';
import { checkPeer, createPeerPolicy } from '../policy.js';
import { assertNever, FAST_TO_CLIENT, FAST_TO_PEER, TurnServer, type ClientAddr, type RelayAction } from '../turn/server.js';
import type { TurnCrypto } from '../turn/auth.js';
import type { RelayMetrics } from '../metrics.js';
import type { LogFn } from './log.js';
import { RelayPortPool } from './pool.js';
import { errnoName, FROM_LISTENER, loadNativeUdp, NATIVE_STATS, type NativeEngine, type NativeUdpAddon } from './native-udp.js';

/** Test hook: sees every relayed payload (to prove only ciphertext crosses the relay). */
export type RelayedHook = (dir: 'to-peer' | 'to-client', payload: Uint8Array) => void;

/** An address a listener is bound to. */
export interface BoundAddress {
  readonly host: string;
  readonly port: number;
}

/** Node's synchronous hashes for the core. */
export const nodeTurnCrypto: TurnCrypto = {
  hmacSha1: (key, data) => {
    const d = createHmac('sha1', key).update(data).digest();
    return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  },
  md5: (data) => {
    const d = createHash('md5').update(data).digest();
    return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  },
};

/** Options of one relay process. */
export interface NodeRelayOptions {
  readonly config: RelayConfig;
  /** This process's relay port range (a worker's share of the configured one). */
  readonly relayPortMin: number;
  readonly relayPortMax: number;
  /** Listener ports of this process (worker 1..N-1 get the ports worker 0 bound, when the config says 0). */
  readonly udpPort: number;
  readonly tcpPort: number | null;
  readonly tlsPort: number;
  /**
   * Bind every listener with SO_REUSEPORT (workers > 1): all workers share the advertised ports
   * and the kernel hashes each client's 4-tuple to one of them, so a UDP client's datagrams,
   * and a TCP connection, always reach the process holding its allocation.
   */
  readonly reusePort: boolean;
  /**
   * Drop client datagrams until {@link NodeRelay.serve}. With SO_REUSEPORT the kernel's choice of
   * worker for a client depends on how many sockets the group holds, so a UDP allocation made
   * while only some workers were bound would later hash to another worker and go dark. Workers
   * hold UDP until all are bound; clients retransmit (RFC 8489 §6.2.1).
   */
  readonly holdUdp?: boolean;
  readonly log: LogFn;
  readonly onRelayed?: RelayedHook;
  /** Counters shared with the metrics server (incremented in place by the core). */
  readonly metrics?: RelayMetrics;
}

/**
 * Every address the relay sends to is an IP literal (from a datagram's source or a decoded
 * XOR-PEER-ADDRESS), so the DNS lookup dgram does per send (dns.lookup: a nextTick and a
 * closure per packet) is replaced by one that hands the literal straight back.
 */
function literalLookup(address: string, _options: unknown, callback: (err: Error | null, address: string, family: number) => void): void {
  const family = isIP(address);
  if (family === 0) callback(Object.assign(new Error('not an IP address'), { code: 'EINVAL' }), address, 4);
  else callback(null, address, family);
}

/** At most one log line per this interval for repeated socket errors, so a flood cannot fill the logs. */
const ERROR_LOG_INTERVAL_MS = 10_000;

/**
 * Kernel buffers of a client listener: every allocation's traffic to and from clients shares
 * it, so bursts need more than the default ~200 KB (the kernel caps it at net.core.rmem_max/wmem_max).
 */
const LISTENER_SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * How many ports to try when binds fail because other sockets hold the ports: enough to get
 * through a range that the host's ephemeral ports have mostly filled, bounded so one Allocate
 * costs at most that many bind calls.
 */
const BIND_ATTEMPTS = 64;

/** A relay socket carries its allocation id and port, so one shared listener serves them all. */
type RelaySocket = dgram.Socket & { relayId: number; relayPort: number };

/** The native data path of one relay process: the addon, its engine, and our slots in it. */
interface NativePath {
  readonly addon: NativeUdpAddon;
  readonly engine: NativeEngine;
  /** Listener index (as the core knows it) → the addon's socket slot. */
  readonly listeners: number[];
  /** Allocation id → its relay socket's slot and port. */
  readonly relays: Map<number, { readonly slot: number; readonly port: number }>;
}

/** One relay process: listeners, relay sockets, timers, and the TURN core. */
export class NodeRelay {
  readonly server: TurnServer;
  private readonly cfg: RelayConfig;
  private readonly udp: dgram.Socket[] = [];
  private tcpServer: net.Server | null = null;
  private tlsServer: net.Server | null = null;
  /** Certificate and key for TURN over TLS, loaded once; connections are wrapped with it at accept. */
  private tlsContext: tls.SecureContext | null = null;
  private readonly conns = new Map<number, net.Socket>();
  private nextConnId = 1;
  private readonly relays = new Map<number, RelaySocket>();
  private readonly pool: RelayPortPool;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = -1;
  private closed = false;
  private draining = false;
  /** False until {@link serve} when `holdUdp` is set: client datagrams are dropped. */
  private serving: boolean;
  private closing: Promise<void> | null = null;
  private readonly log: LogFn;
  private readonly onRelayed: RelayedHook | undefined;
  private readonly relayHost4: string | null;
  private readonly relayHost6: string | null;
  /** The UDP listener's port once bound (the configured one before). */
  private udpListenerPort: number;
  /** The native data path, when the config and the machine give one; else node:dgram. */
  private readonly native: NativePath | null;
  private nativeClosed = false;
  /** Rate limit of the log line for failed sends to clients. */
  private lastSendErrorLog = 0;

  constructor(private readonly opts: NodeRelayOptions) {
    const c = opts.config;
    this.cfg = c;
    this.serving = !opts.holdUdp;
    this.log = opts.log;
    this.onRelayed = opts.onRelayed;
    this.pool = new RelayPortPool(opts.relayPortMin, opts.relayPortMax);
    this.udpListenerPort = opts.udpPort;
    this.native = this.openNative(c);
    // The config checked that every advertised family has a bind address, so a family the core
    // relays (it has an advertised address for it) always gets sockets on the address it was given.
    const binds = relayBindAddresses(c);
    this.relayHost4 = binds[4];
    this.relayHost6 = binds[6];
    const v4 = binds[4] === null ? undefined : c.advertisedAddresses.find((a) => isIP(a) === 4);
    const v6 = binds[6] === null ? undefined : c.advertisedAddresses.find((a) => isIP(a) === 6);
    const policy = createPeerPolicy({
      allow: [...c.allow],
      allowLoopback: c.allowLoopback,
      // The relay's own addresses (advertised, relay sockets, listeners) are never peers: no loops through ourselves.
      relayAddresses: [...new Set([...c.advertisedAddresses, c.relayHost, c.relayHost6 ?? '::', c.listenHost].filter((a) => a !== '0.0.0.0' && a !== '::'))],
    });
    // With several workers, the other workers' shares of the relay port range on our own
    // address are peers too (allocation to allocation across workers), minus the UDP listener
    // port should a port-0 listener have landed in the range.
    const sibling =
      c.workers > 1
        ? (p: number): boolean => p >= c.relayPortMin && p <= c.relayPortMax && (p < opts.relayPortMin || p > opts.relayPortMax) && p !== this.udpListenerPort
        : undefined;
    this.server = new TurnServer({
      realm: c.realm,
      secrets: c.secrets,
      software: c.software,
      ...(v4 !== undefined ? { relayAddressV4: v4 } : {}),
      ...(v6 !== undefined ? { relayAddressV6: v6 } : {}),
      defaultLifetimeS: c.defaultLifetimeS,
      maxLifetimeS: c.maxLifetimeS,
      nonceLifetimeS: c.nonceLifetimeS,
      maxAllocationsPerUsername: c.maxAllocationsPerUsername,
      maxAllocations: c.maxAllocations,
      maxPermissionsPerAllocation: c.maxPermissionsPerAllocation,
      maxChannelsPerAllocation: c.maxChannelsPerAllocation,
      bandwidthBytesPerSecond: c.bandwidthBytesPerSecond,
      bandwidthBurstBytes: c.bandwidthBurstBytes,
      maxStreamBufferBytes: c.maxStreamBufferBytes,
      streamHandshakeTimeoutMs: c.streamHandshakeTimeoutMs,
      streamIdleTimeoutMs: c.streamIdleTimeoutMs,
      maxStreamsPerIp: c.maxStreamsPerIp,
      crypto: nodeTurnCrypto,
      checkPeer: (ip) => checkPeer(policy, ip),
      ...(sibling ? { siblingRelayPort: sibling } : {}),
      randomBytes: (n) => new Uint8Array(randomBytes(n)),
      ...(opts.metrics ? { counters: opts.metrics } : {}),
      ...(this.native ? this.nativeCoreOptions(this.native, c) : {}),
    });
    if (this.native && opts.metrics) opts.metrics.beforeRead = () => this.syncCounters();
  }

  /** The data path the config asks for: the addon's engine, or null for node:dgram. */
  private openNative(c: RelayConfig): NativePath | null {
    if (c.dataPath === 'node') return null;
    const { addon, why } = loadNativeUdp();
    if (!addon) {
      if (c.dataPath === 'native') throw new Error(`data path native: the native addon is ${why}`);
      this.log('info', 'relay_data_path', { path: 'node', why });
      return null;
    }
    const engine = addon.create(this.onNativeDatagram, c.bandwidthBytesPerSecond, c.bandwidthBurstBytes);
    this.log('info', 'relay_data_path', { path: 'native', forwarding: this.onRelayed ? 'off (relayed-payload hook set)' : 'on' });
    return { addon, engine, listeners: [], relays: new Map() };
  }

  /**
   * Core options for the native path: routes for the addon to forward on, unless a test hook must
   * see every payload (then all traffic takes the core's path through the addon's sockets), and
   * the token buckets kept in the addon.
   */
  private nativeCoreOptions(n: NativePath, c: RelayConfig): { fastRoutes: boolean; takeTokens?: (relayId: number, bytes: number, now: number) => boolean } {
    if (c.bandwidthBytesPerSecond === 0) return { fastRoutes: !this.onRelayed };
    return {
      fastRoutes: !this.onRelayed,
      takeTokens: (relayId, bytes, now) => {
        const r = n.relays.get(relayId);
        return r === undefined || n.addon.takeTokens(n.engine, r.slot, bytes, now);
      },
    };
  }

  /** Folds the addon's counts (packets it forwarded, its drops) into the core's counters. */
  syncCounters(): void {
    const n = this.native;
    if (!n || this.nativeClosed) return;
    const d = n.addon.stats(n.engine);
    const counters = this.server.counters;
    for (let i = 0; i < NATIVE_STATS.length; i++) counters[NATIVE_STATS[i]!] += d[i] ?? 0;
    counters.nativeForwarded += (d[NATIVE_STATS.indexOf('packetsToPeer')] ?? 0) + (d[NATIVE_STATS.indexOf('packetsToClient')] ?? 0);
  }

  /** A datagram the addon did not forward itself: the core's, as from node:dgram. */
  private readonly onNativeDatagram = (kind: number, id: number, ip: string, port: number, data: Buffer): void => {
    if (kind === FROM_LISTENER) {
      const listener = this.native!.listeners.indexOf(id);
      if (listener >= 0) this.onClientDatagram(listener, data, ip, port);
    } else {
      this.onPeerDatagram(id, data, ip, port);
      this.arm();
    }
  };

  /** Binds the listeners; resolves with their addresses. */
  async listen(): Promise<{ udp: BoundAddress; tcp: BoundAddress | null; tls: BoundAddress | null }> {
    const udpAddr = this.native ? this.listenNative(this.native) : await this.listenDgram();
    this.udpListenerPort = udpAddr.port;
    return this.listenStreams(udpAddr);
  }

  /** The UDP listener in the addon; its thread starts once it is bound. */
  private listenNative(n: NativePath): BoundAddress {
    const c = this.cfg;
    const slot = n.addon.listen(n.engine, isIP(c.listenHost) === 6 ? 6 : 4, c.listenHost, this.opts.udpPort, this.opts.reusePort, LISTENER_SOCKET_BUFFER_BYTES);
    if (slot < 0) {
      const code = errnoName(slot);
      throw Object.assign(new Error(`bind ${code} ${c.listenHost}:${this.opts.udpPort}`), { code });
    }
    n.listeners.push(slot);
    n.addon.start(n.engine);
    return { host: c.listenHost, port: n.addon.port(n.engine, slot) };
  }

  /** The UDP listener on node:dgram. */
  private async listenDgram(): Promise<BoundAddress> {
    const c = this.cfg;
    const sock = dgram.createSocket({
      type: isIP(c.listenHost) === 6 ? 'udp6' : 'udp4',
      lookup: literalLookup,
      recvBufferSize: LISTENER_SOCKET_BUFFER_BYTES,
      sendBufferSize: LISTENER_SOCKET_BUFFER_BYTES,
      reusePort: this.opts.reusePort,
    });
    const listener = this.udp.length;
    this.udp.push(sock);
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(this.opts.udpPort, c.listenHost, () => {
        sock.off('error', reject);
        resolve();
      });
    });
    // Errors here are failed sends to clients (ENOBUFS, EPERM from a firewall, ...): count each, log a few.
    sock.on('error', (err) => this.clientSendFailed((err as NodeJS.ErrnoException).code ?? 'unknown'));
    sock.on('message', (msg, rinfo) => this.onClientDatagram(listener, msg, rinfo.address, rinfo.port));
    const a = sock.address();
    return { host: a.address, port: a.port };
  }

  /** A send to a UDP client failed: counted, and logged at most once per interval. */
  private clientSendFailed(code: string): void {
    this.server.counters.dropSendFailed++;
    const now = Date.now();
    if (now - this.lastSendErrorLog < ERROR_LOG_INTERVAL_MS) return;
    this.lastSendErrorLog = now;
    this.log('warn', 'udp_listener_error', { code });
  }

  /** The TCP and TLS listeners (node:net on either data path). */
  private async listenStreams(udpAddr: BoundAddress): Promise<{ udp: BoundAddress; tcp: BoundAddress | null; tls: BoundAddress | null }> {
    const c = this.cfg;

    // Each TCP/TLS allocation needs one connection; twice the allocation quota leaves room for
    // connections still authenticating, and bounds file descriptors a connection flood can take.
    // Past it Node closes new connections at accept and emits 'drop' (counted).
    const maxConnections = c.maxAllocations * 2;
    const onDrop = (): void => {
      this.server.counters.streamRefusedTotal++;
    };
    const listen = async (port: number, transport: 'tcp' | 'tls'): Promise<BoundAddress> => {
      const srv = net.createServer({ noDelay: true }, (s) => this.onStream(s, transport));
      srv.maxConnections = maxConnections;
      srv.on('drop', onDrop);
      if (transport === 'tcp') this.tcpServer = srv;
      else this.tlsServer = srv;
      return listenServer(srv, port, c.listenHost, this.opts.reusePort);
    };
    const tcp = this.opts.tcpPort === null ? null : await listen(this.opts.tcpPort, 'tcp');
    // TLS: a plain TCP listener; each connection is counted and given its handshake deadline at
    // accept (relay/turn/server.ts openStream), then wrapped in TLS here.
    let tlsAddr: BoundAddress | null = null;
    if (c.tlsCert && c.tlsKey) {
      this.tlsContext = tls.createSecureContext({ cert: readFileSync(c.tlsCert), key: readFileSync(c.tlsKey) });
      tlsAddr = await listen(this.opts.tlsPort, 'tls');
    }
    this.log('info', 'relay_listening', {
      udp: `${udpAddr.host}:${udpAddr.port}`,
      tcp: tcp ? `${tcp.host}:${tcp.port}` : 'off',
      tls: tlsAddr ? `${tlsAddr.host}:${tlsAddr.port}` : 'off',
      relayPorts: `${this.opts.relayPortMin}-${this.opts.relayPortMax}`,
    });
    return { udp: udpAddr, tcp, tls: tlsAddr };
  }

  // ---------------------------------------------------------------- inputs

  private onClientDatagram(listener: number, msg: Buffer, ip: string, port: number): void {
    if (!this.serving) return;
    const server = this.server;
    const r = server.handleUdp(listener, ip, port, msg, Date.now());
    if (r === FAST_TO_PEER) {
      const f = server.fast;
      this.sendPeer(f.relayId, msg, f.offset, f.length, f.peerIp, f.peerPort);
    } else if (r === FAST_TO_CLIENT) {
      const f = server.fast;
      const to = f.client!;
      if (this.onRelayed) this.onRelayed('to-peer', msg.subarray(f.offset, f.offset + f.length));
      if (to.kind === 'udp') {
        // The datagram is ChannelData of the same length already: only the channel number changes.
        msg[0] = f.channel >> 8;
        msg[1] = f.channel & 0xff;
        this.sendClient(to.listener, msg, 0, 4 + f.length, to.ip, to.port);
        if (this.onRelayed) this.onRelayed('to-client', msg.subarray(4, 4 + f.length));
      } else {
        this.sendChannelData(to, f.channel, msg.subarray(f.offset, f.offset + f.length));
      }
    }
    if (server.hasActions) this.flush();
    this.arm();
  }

  /** Shared by every relay socket (no closure per allocation); `this` is the socket. */
  private readonly onRelayMessage = ((self: NodeRelay) =>
    function (this: RelaySocket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
      self.onPeerDatagram(this.relayId, msg, rinfo.address, rinfo.port);
    })(this);

  /** After bind, a relay socket's errors are failed sends to peers (ICMP unreachable and the like): count, keep going. */
  private readonly onRelayError = (): void => this.server.peerSendFailed();

  private onPeerDatagram(relayId: number, msg: Buffer, ip: string, port: number): void {
    const server = this.server;
    const r = server.handlePeer(relayId, ip, port, msg, Date.now());
    if (r === FAST_TO_CLIENT) this.sendChannelData(server.fast.client!, server.fast.channel, msg);
    if (server.hasActions) this.flush();
  }

  /**
   * A TCP connection accepted on the TCP or the TLS listener. The core counts it against its
   * source and sets its deadline (TLS: the handshake; TCP: the first whole frame) before any
   * byte is read; a refused one is destroyed at once. TLS is then terminated here, and only a
   * finished handshake starts the idle deadline (`streamSecured`).
   */
  private onStream(raw: net.Socket, transport: 'tcp' | 'tls'): void {
    const ip = raw.remoteAddress;
    const port = raw.remotePort;
    if (this.closed || ip === undefined || port === undefined) {
      raw.destroy();
      return;
    }
    const id = this.nextConnId++;
    if (!this.server.openStream(id, transport, ip, port, Date.now())) {
      raw.destroy();
      return;
    }
    raw.setNoDelay(true);
    let s: net.Socket = raw;
    if (transport === 'tls') {
      const t = new tls.TLSSocket(raw, { isServer: true, secureContext: this.tlsContext! });
      let secured = false;
      t.once('secure', () => {
        secured = true;
        this.server.streamSecured(id, Date.now());
        this.arm();
      });
      // A failed handshake (garbage, wrong version, no shared cipher) must close the connection:
      // a TLS socket does not destroy itself on a handshake error.
      t.on('error', () => {
        if (!secured) this.server.counters.streamTlsErrors++;
        t.destroy();
      });
      s = t;
    } else {
      s.on('error', () => {});
    }
    this.conns.set(id, s);
    this.server.counters.streamConnections++;
    s.on('data', (chunk: Buffer) => {
      this.server.handleStream(id, chunk, Date.now());
      if (this.server.hasActions) this.flush();
      this.arm();
    });
    s.on('close', () => {
      this.server.counters.streamConnections--;
      this.conns.delete(id);
      this.server.closeStream(id);
      if (this.server.hasActions) this.flush();
      this.arm();
    });
    this.arm();
  }

  // --------------------------------------------------------------- outputs

  private sendChannelData(to: ClientAddr, channel: number, payload: Buffer): void {
    const len = payload.length;
    if (to.kind === 'udp') {
      if (this.native) {
        // One buffer: the addon sends from a single one (this is its slow path; its routes gather).
        const out = Buffer.allocUnsafe(4 + len);
        out[0] = channel >> 8;
        out[1] = channel & 0xff;
        out[2] = len >> 8;
        out[3] = len & 0xff;
        payload.copy(out, 4);
        this.sendClient(to.listener, out, 0, out.length, to.ip, to.port);
      } else {
        // Gather send: a 4-byte header from Node's buffer pool and the received payload, no copy.
        const header = Buffer.allocUnsafe(4);
        header[0] = channel >> 8;
        header[1] = channel & 0xff;
        header[2] = len >> 8;
        header[3] = len & 0xff;
        this.udp[to.listener]?.send([header, payload], to.port, to.ip);
      }
    } else {
      // RFC 8656 §12.5: over streams ChannelData is padded to a multiple of 4.
      const total = (4 + len + 3) & ~3;
      const out = Buffer.alloc(total);
      out[0] = channel >> 8;
      out[1] = channel & 0xff;
      out[2] = len >> 8;
      out[3] = len & 0xff;
      payload.copy(out, 4);
      this.writeStream(to.connId, out);
    }
    if (this.onRelayed) this.onRelayed('to-client', payload);
  }

  /** A datagram from allocation `relayId`'s relay port to a peer (a failed send is counted, the allocation stays). */
  private sendPeer(relayId: number, data: Buffer, offset: number, length: number, ip: string, port: number): void {
    const n = this.native;
    if (n) {
      const r = n.relays.get(relayId);
      if (r === undefined) return;
      if (n.addon.send(n.engine, r.slot, data, offset, length, ip, port) < 0) this.server.peerSendFailed();
    } else {
      const relay = this.relays.get(relayId);
      if (!relay) return;
      relay.send(data, offset, length, port, ip);
    }
    if (this.onRelayed) this.onRelayed('to-peer', data.subarray(offset, offset + length));
  }

  /** A datagram from UDP listener `listener` to a client. */
  private sendClient(listener: number, data: Buffer, offset: number, length: number, ip: string, port: number): void {
    const n = this.native;
    if (n) {
      const slot = n.listeners[listener];
      if (slot === undefined) return;
      const rc = n.addon.send(n.engine, slot, data, offset, length, ip, port);
      if (rc < 0) this.clientSendFailed(errnoName(rc));
    } else {
      this.udp[listener]?.send(data, offset, length, port, ip);
    }
  }

  private writeStream(connId: number, data: Uint8Array): void {
    const s = this.conns.get(connId);
    if (!s || s.destroyed) return;
    // Bound what one slow TCP/TLS client can make us hold: drop past the quota.
    if (s.writableLength > this.cfg.maxStreamBufferBytes) {
      this.server.counters.dropBackpressure++;
      return;
    }
    s.write(data);
  }

  /** Carries out the core's actions, in order. */
  private flush(): void {
    // Actions an action adds (a native relay bind answers at once) run after the ones before them.
    while (this.server.hasActions) for (const a of this.server.takeActions()) this.execute(a);
  }

  private execute(a: RelayAction): void {
    switch (a.type) {
      case 'send-client':
        if (a.to.kind === 'udp') this.sendClient(a.to.listener, asBuffer(a.data), 0, a.data.byteLength, a.to.ip, a.to.port);
        else this.writeStream(a.to.connId, a.data);
        if (a.relayed && this.onRelayed) this.onRelayed('to-client', a.relayed);
        return;
      case 'send-channel-data':
        if (this.onRelayed) this.onRelayed('to-peer', a.data);
        return this.sendChannelData(a.to, a.channel, Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength));
      case 'send-peer':
        return this.sendPeer(a.relayId, asBuffer(a.data), 0, a.data.byteLength, a.ip, a.port);
      case 'bind-relay':
        if (this.native) return this.bindRelayNative(this.native, a.relayId, a.family, a.even);
        return this.bindRelay(a.relayId, a.family, a.even, BIND_ATTEMPTS);
      case 'route': {
        const n = this.native;
        const r = n?.relays.get(a.relayId);
        const listener = n?.listeners[a.client.listener];
        const hairpin = a.hairpin ? n?.relays.get(a.hairpin.relayId) : undefined;
        // A route that cannot be installed (cannot happen with the core's addresses) only means
        // that channel's traffic takes the core's path.
        if (!n || !r || listener === undefined || (a.hairpin && !hairpin)) return;
        n.addon.route(n.engine, listener, a.client.ip, a.client.port, a.channel, r.slot, a.peerIp, a.peerPort, a.expiresAt, hairpin?.slot ?? -1, a.hairpin?.fromIp ?? '', a.hairpin?.fromPort ?? 0);
        return;
      }
      case 'unroute': {
        const n = this.native;
        const r = n?.relays.get(a.relayId);
        if (n && r) n.addon.unroute(n.engine, r.slot, a.channel);
        return;
      }
      case 'release-relay': {
        const n = this.native;
        if (n) {
          const r = n.relays.get(a.relayId);
          if (r) {
            n.relays.delete(a.relayId);
            n.addon.closeSocket(n.engine, r.slot);
            this.pool.give(r.port);
          }
          return;
        }
        const relay = this.relays.get(a.relayId);
        if (relay) {
          this.relays.delete(a.relayId);
          relay.close();
          this.pool.give(relay.relayPort);
        }
        return;
      }
      case 'close-client':
        this.conns.get(a.connId)?.destroy();
        return;
      case 'log':
        this.log(a.level, a.event, a.fields);
        return;
      default:
        assertNever(a);
    }
  }

  /** Binds a relay socket in the addon (synchronous; the core's answer to it runs in the same flush). */
  private bindRelayNative(n: NativePath, relayId: number, family: 4 | 6, even: boolean): void {
    const host = family === 4 ? this.relayHost4 : this.relayHost6;
    for (let attempts = BIND_ATTEMPTS; ; ) {
      const port = host === null ? undefined : this.pool.take(even);
      if (port === undefined || host === null || this.closed) return this.server.relayFailed(relayId, 'no relay port available');
      const slot = n.addon.bindRelay(n.engine, relayId, family, host, port);
      if (slot >= 0) {
        n.relays.set(relayId, { slot, port });
        this.server.relayBound(relayId, port, Date.now());
        this.arm();
        return;
      }
      const code = errnoName(slot);
      if (code === 'EADDRINUSE') {
        this.pool.setAside(port);
        if (--attempts > 0) continue;
      } else {
        this.pool.give(port);
      }
      return this.server.relayFailed(relayId, code);
    }
  }

  private bindRelay(relayId: number, family: 4 | 6, even: boolean, attempts: number): void {
    const host = family === 4 ? this.relayHost4 : this.relayHost6;
    const port = host === null ? undefined : this.pool.take(even);
    if (port === undefined || host === null || this.closed) {
      this.server.relayFailed(relayId, 'no relay port available');
      if (this.server.hasActions) this.flush();
      return;
    }
    const socket = dgram.createSocket(
      family === 4 ? { type: 'udp4', lookup: literalLookup } : { type: 'udp6', ipv6Only: true, lookup: literalLookup },
    ) as RelaySocket;
    socket.relayId = relayId;
    socket.relayPort = port;
    const onBindError = (err: Error) => {
      socket.close();
      if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') this.pool.setAside(port);
      else this.pool.give(port);
      if (attempts > 1 && (err as NodeJS.ErrnoException).code === 'EADDRINUSE') return this.bindRelay(relayId, family, even, attempts - 1);
      this.server.relayFailed(relayId, (err as NodeJS.ErrnoException).code ?? 'bind error');
      if (this.server.hasActions) this.flush();
    };
    socket.once('error', onBindError);
    socket.bind(port, host, () => {
      socket.off('error', onBindError);
      socket.on('error', this.onRelayError);
      socket.on('message', this.onRelayMessage);
      this.relays.set(relayId, socket);
      this.server.relayBound(relayId, port, Date.now());
      if (this.server.hasActions) this.flush();
      this.arm();
    });
  }

  /** Starts answering client datagrams (see `holdUdp`). */
  serve(): void {
    this.serving = true;
  }

  /** Health: false while draining or closed, so a load balancer moves new clients elsewhere. */
  health(): { ok: boolean; draining: boolean; allocations: number; relayPortsFree: number } {
    return { ok: !this.draining && !this.closed, draining: this.draining, allocations: this.server.allocationCount, relayPortsFree: this.pool.available };
  }

  // ----------------------------------------------------------------- timers

  /** Keeps one timer at the core's next deadline. */
  private arm(): void {
    const at = this.server.pollTimeout();
    if (at === undefined || this.closed) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      this.timerAt = -1;
      return;
    }
    if (this.timer && at === this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    // Clamp: setTimeout takes at most 2^31-1 ms.
    this.timer = setTimeout(this.onTimer, Math.min(Math.max(0, at - Date.now()), 0x7fffffff));
    this.timer.unref();
  }

  private readonly onTimer = (): void => {
    this.timer = null;
    this.timerAt = -1;
    this.server.handleTimeout(Date.now());
    if (this.server.hasActions) this.flush();
    this.arm();
  };

  // --------------------------------------------------------------- shutdown

  /**
   * Graceful close: refuse new allocations, wait up to `drainMs` for the existing ones to
   * end (bounded), then delete the rest, close every socket and connection.
   */
  close(drainMs: number = this.cfg.shutdownDrainMs): Promise<void> {
    this.closing ??= this.shutdown(drainMs);
    return this.closing;
  }

  private async shutdown(drainMs: number): Promise<void> {
    this.draining = true;
    this.server.startDrain();
    this.log('info', 'relay_draining', { allocations: this.server.allocationCount, drainMs });
    const deadline = Date.now() + drainMs;
    while (this.server.allocationCount > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, Math.min(100, Math.max(1, deadline - Date.now()))));
    }
    this.closed = true;
    this.server.closeAll();
    this.flush();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const s of this.conns.values()) s.destroy();
    this.conns.clear();
    await Promise.all([
      ...this.udp.map((s) => new Promise<void>((r) => s.close(() => r()))),
      this.tcpServer ? new Promise<void>((r) => this.tcpServer!.close(() => r())) : undefined,
      this.tlsServer ? new Promise<void>((r) => this.tlsServer!.close(() => r())) : undefined,
    ]);
    for (const socket of this.relays.values()) socket.close();
    this.relays.clear();
    if (this.native) {
      this.syncCounters();
      this.nativeClosed = true;
      this.native.addon.close(this.native.engine);
      this.native.relays.clear();
    }
    this.log('info', 'relay_closed', {});
  }
}

/** A view of `data` as a Buffer (no copy): the addon sends from Buffers. */
function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

function listenServer(srv: net.Server, port: number, host: string, reusePort: boolean): Promise<BoundAddress> {
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen({ port, host, reusePort }, () => {
      srv.off('error', reject);
      const a = srv.address() as net.AddressInfo;
      resolve({ host: a.address, port: a.port });
    });
  });
}
