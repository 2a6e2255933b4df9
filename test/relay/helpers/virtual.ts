/**
 * A virtual-time harness around the sans-IO TURN core: the real core, the real
 * peer policy and real hashes, with no sockets. Relay ports are "bound" at once
 * (or refused on demand); actions are recorded per destination.
 */
import { createHash, createHmac } from 'node:crypto';
import { checkPeer, createPeerPolicy } from '../../../relay/policy.js';
import {
  FAST_TO_CLIENT,
  FAST_TO_PEER,
  TurnServer,
  assertNever,
  type RelayAction,
  type TurnServerOptions,
} from '../../../relay/turn/index.js';
import { encodeChannelData } from '../../../protocol/stun/index.js';

export const SECRET = 'virtual-secret-1';
export const RELAY_V4 = '203.0.113.10';
export const RELAY_V6 = '2001:db8::10';

export interface Sent {
  to: string; // "udp:ip:port" or "conn:N" or "peer:relayId:ip:port"
  data: Uint8Array;
}

export class Harness {
  now = 1_800_000_000_000; // a fixed epoch (ms) so tests are deterministic
  readonly server: TurnServer;
  readonly sent: Sent[] = [];
  readonly bound = new Map<number, number>();
  readonly released: number[] = [];
  /** `route` / `unroute` actions (with `fastRoutes`), in order. */
  readonly routes: Extract<RelayAction, { type: 'route' | 'unroute' }>[] = [];
  readonly closed: number[] = [];
  failBinds = false;
  private nextPort = 50000;

  constructor(overrides: Partial<TurnServerOptions> & { allow?: string[]; allowLoopback?: boolean } = {}) {
    const policy = createPeerPolicy({
      allow: overrides.allow ?? ['198.18.0.0/15'],
      allowLoopback: overrides.allowLoopback ?? false,
      relayAddresses: [RELAY_V4, RELAY_V6],
    });
    let seed = 1;
    this.server = new TurnServer({
      realm: 'homelink',
      secrets: [SECRET],
      software: 'homelink-relay',
      relayAddressV4: RELAY_V4,
      relayAddressV6: RELAY_V6,
      defaultLifetimeS: 600,
      maxLifetimeS: 3600,
      nonceLifetimeS: 600,
      maxAllocationsPerUsername: 10,
      maxAllocations: 100,
      maxPermissionsPerAllocation: 8,
      maxChannelsPerAllocation: 8,
      bandwidthBytesPerSecond: 0,
      bandwidthBurstBytes: 1 << 20,
      maxStreamBufferBytes: 66 * 1024,
      streamHandshakeTimeoutMs: 10_000,
      streamIdleTimeoutMs: 30_000,
      maxStreamsPerIp: 64,
      crypto: {
        hmacSha1: (k, d) => new Uint8Array(createHmac('sha1', k).update(d).digest()),
        md5: (d) => new Uint8Array(createHash('md5').update(d).digest()),
      },
      checkPeer: (ip) => checkPeer(policy, ip),
      randomBytes: (n) => Uint8Array.from({ length: n }, () => (seed = (seed * 1103515245 + 12345) >>> 0) & 0xff),
      ...overrides,
    });
  }

  /** Advances virtual time, running due timers. */
  advance(ms: number): void {
    const target = this.now + ms;
    for (;;) {
      const at = this.server.pollTimeout();
      if (at === undefined || at > target) break;
      this.now = Math.max(this.now, at);
      this.server.handleTimeout(this.now);
      this.flush();
    }
    this.now = target;
  }

  udp(ip: string, port: number, data: Uint8Array, listener = 0): void {
    const r = this.server.handleUdp(listener, ip, port, data, this.now);
    if (r === FAST_TO_PEER) {
      const f = this.server.fast;
      this.sent.push({ to: `peer:${f.relayId}:${f.peerIp}:${f.peerPort}`, data: data.slice(f.offset, f.offset + f.length) });
    } else if (r === FAST_TO_CLIENT) {
      this.sendChannelData(data.slice(this.server.fast.offset, this.server.fast.offset + this.server.fast.length));
    }
    this.flush();
  }

  stream(connId: number, data: Uint8Array): void {
    this.server.handleStream(connId, data, this.now);
    this.flush();
  }

  peer(relayId: number, ip: string, port: number, data: Uint8Array): void {
    const r = this.server.handlePeer(relayId, ip, port, data, this.now);
    if (r === FAST_TO_CLIENT) this.sendChannelData(data);
    this.flush();
  }

  /** A FAST_TO_CLIENT answer: `payload` to `fast.client` as ChannelData on `fast.channel`. */
  private sendChannelData(payload: Uint8Array, client = this.server.fast.client!, channel = this.server.fast.channel): void {
    const to = client.kind === 'udp' ? `udp:${client.ip}:${client.port}` : `conn:${client.connId}`;
    this.sent.push({ to, data: encodeChannelData(channel, payload, client.kind === 'stream') });
  }

  flush(): void {
    for (const a of this.server.takeActions()) this.exec(a);
  }

  private exec(a: RelayAction): void {
    switch (a.type) {
      case 'send-client':
        this.sent.push({ to: a.to.kind === 'udp' ? `udp:${a.to.ip}:${a.to.port}` : `conn:${a.to.connId}`, data: a.data });
        return;
      case 'send-peer':
        this.sent.push({ to: `peer:${a.relayId}:${a.ip}:${a.port}`, data: a.data });
        return;
      case 'send-channel-data':
        this.sendChannelData(a.data, a.to, a.channel);
        return;
      case 'bind-relay':
        if (this.failBinds) this.server.relayFailed(a.relayId, 'test');
        else {
          if (a.even && this.nextPort % 2 !== 0) this.nextPort++;
          const port = this.nextPort++;
          this.bound.set(a.relayId, port);
          this.server.relayBound(a.relayId, port, this.now);
        }
        this.flush();
        return;
      case 'release-relay':
        this.released.push(a.relayId);
        return;
      case 'close-client':
        this.closed.push(a.connId);
        return;
      case 'route':
      case 'unroute':
        this.routes.push(a);
        return;
      case 'log':
        return;
      default:
        assertNever(a);
    }
  }

  /** Removes and returns everything sent to `to`. */
  take(to: string): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (let i = 0; i < this.sent.length; ) {
      if (this.sent[i]!.to === to) out.push(this.sent.splice(i, 1)[0]!.data);
      else i++;
    }
    return out;
  }
}
