/**
 * Loader and typed face of the native UDP data path (relay/native/udp.c): an addon that owns the
 * relay's UDP sockets and forwards channel traffic on a thread of its own with recvmmsg/sendmmsg,
 * handing everything else to the TURN core here. Built by `npm install` (the `prepare` step,
 * scripts/build-relay-native.mjs) where a C compiler exists; RELAY_DATA_PATH picks it.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

/** Which socket a datagram handed to JavaScript arrived on. */
export const FROM_LISTENER = 1;
export const FROM_RELAY = 2;

/** Order of the counters {@link NativeUdpAddon.stats} returns (deltas since the last call). */
export const NATIVE_STATS = ['packetsToPeer', 'bytesToPeer', 'packetsToClient', 'bytesToClient', 'dropBandwidth', 'dropSendFailed', 'dropBackpressure', 'hairpinPackets'] as const;

/** An engine handle: opaque to JavaScript. */
export type NativeEngine = { readonly __nativeUdpEngine: unique symbol };

/**
 * The addon's functions. Socket calls return a slot number (≥ 0) or a negative errno, so the
 * driver handles EADDRINUSE and friends without exceptions; misuse (wrong types, a closed engine)
 * throws.
 */
export interface NativeUdpAddon {
  /** `onDatagram(kind, id, ip, port, data)`: kind FROM_LISTENER (id: listener slot) or FROM_RELAY (id: relay id). */
  create(onDatagram: (kind: number, id: number, ip: string, port: number, data: Buffer) => void, bandwidthBytesPerSecond: number, burstBytes: number): NativeEngine;
  listen(e: NativeEngine, family: 4 | 6, host: string, port: number, reusePort: boolean, bufferBytes: number): number;
  bindRelay(e: NativeEngine, relayId: number, family: 4 | 6, host: string, port: number): number;
  port(e: NativeEngine, slot: number): number;
  closeSocket(e: NativeEngine, slot: number): void;
  send(e: NativeEngine, slot: number, data: Buffer, offset: number, length: number, ip: string, port: number): number;
  /**
   * Installs or refreshes `channel`'s route. With `hairpinSlot` ≥ 0 the peer is that relay socket's
   * allocation (which knows this one as `fromIp:fromPort`): its packets go straight to that
   * allocation's client while it has a live route for `fromIp:fromPort`, else to the core.
   */
  route(
    e: NativeEngine,
    listenerSlot: number,
    clientIp: string,
    clientPort: number,
    channel: number,
    relaySlot: number,
    peerIp: string,
    peerPort: number,
    expiresAt: number,
    hairpinSlot: number,
    fromIp: string,
    fromPort: number,
  ): number;
  unroute(e: NativeEngine, relaySlot: number, channel: number): void;
  takeTokens(e: NativeEngine, relaySlot: number, bytes: number, now: number): boolean;
  stats(e: NativeEngine): number[];
  start(e: NativeEngine): void;
  close(e: NativeEngine): void;
}

/**
 * Where the addon is looked for, relative to this module: `relay/native/build` beside the relay's
 * modules (the sources, where the build puts it; or a built tree that carries it, such as
 * `dist/js/relay/native/build`), then the repository's `relay/native/build` seen from `dist/js`.
 */
const CANDIDATES = ['../native/build/homelink-udp.node', '../../../../relay/native/build/homelink-udp.node'];

let cached: { addon: NativeUdpAddon | null; why: string; path?: string } | undefined;

/** The addon and the file it came from, or null with the reason it is not available (not Linux, not built, failed to load). */
export function loadNativeUdp(): { addon: NativeUdpAddon | null; why: string; path?: string } {
  if (cached) return cached;
  if (process.platform !== 'linux') return (cached = { addon: null, why: `not Linux (${process.platform})` });
  const path = CANDIDATES.map((c) => fileURLToPath(new URL(c, import.meta.url))).find((p) => existsSync(p));
  if (path === undefined) return (cached = { addon: null, why: 'not built (npm install builds it where a C compiler exists; or node scripts/build-relay-native.mjs)' });
  try {
    return (cached = { addon: createRequire(import.meta.url)(path) as NativeUdpAddon, why: 'loaded', path });
  } catch (e) {
    return (cached = { addon: null, why: `failed to load: ${(e as Error).message.split('\n')[0]}` });
  }
}

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/** `-98` → `EADDRINUSE` (the addon returns socket errors as negative errno values). */
export function errnoName(rc: number): string {
  return ERRNO_NAMES.get(-rc) ?? `errno ${-rc}`;
}
