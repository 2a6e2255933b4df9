/**
 * Shared set-up for the client benchmarks: our relay and the real worker in workerd on loopback,
 * endpoint pairs of our stack, and bare werift peer pairs (the baseline) wired in-process.
 */
import type { BackendName } from '../../client/index.js';
import dgram from 'node:dgram';
import { RTCPeerConnection, type RTCDataChannel } from 'werift';
import { mintTurnCredential } from '../../protocol/turn-credentials.js';
import { startSignaling, type SignalingHandle } from '../../test/support/signaling.js';
import { endpointFor, nextLink } from '../../test/client/helpers.js';
import { TURN_SECRET, testRelay, type TestRelay } from '../../test/client/relay-helpers.js';
import type { Endpoint } from '../../client/index.js';
import type { Link } from '../../client/link.js';

export interface Stack {
  relay: TestRelay;
  sig: SignalingHandle;
  /** A second worker whose relay UDP port is a black hole: only TURN over TCP/TLS works. */
  sigUdpBlocked: SignalingHandle;
  /** The black-holed UDP port. */
  holePort: number;
  close(): Promise<void>;
}

export async function startStack(): Promise<Stack> {
  const relay = await testRelay(44000, 44999, () => undefined);
  const sig = await startSignaling({ relays: [relay.entry], turnSecret: TURN_SECRET });
  const hole = dgram.createSocket('udp4');
  await new Promise<void>((r) => hole.bind(0, '127.0.0.1', r));
  const sigUdpBlocked = await startSignaling({ relays: [{ ...relay.entry, udpPort: (hole.address() as { port: number }).port }], turnSecret: TURN_SECRET });
  return {
    relay,
    sig,
    sigUdpBlocked,
    holePort: (hole.address() as { port: number }).port,
    async close() {
      await sig.close();
      await sigUdpBlocked.close();
      hole.close();
      await relay.close();
    },
  };
}

export interface OurPair {
  app: Endpoint;
  hub: Endpoint;
  dial(): Promise<{ link: Link; peer: Link }>;
  close(): void;
}

let n = 0;
export async function ourPair(
  stack: Stack,
  mode: 'direct' | 'relay' | 'relay-udp-blocked',
  trace?: (side: 'app' | 'hub', phase: string) => void,
  backend: BackendName = 'werift',
): Promise<OurPair> {
  const sig = mode === 'relay-udp-blocked' ? stack.sigUdpBlocked : stack.sig;
  const home = `bench-home-${n++}`;
  const extra = { webrtcBackend: backend, ...(mode === 'direct' ? {} : { iceTransportPolicy: 'relay' as const, turnTlsOptions: { ca: stack.relay.ca } }) };
  const hub = await endpointFor(sig, `bench-hub-${n}`, [home], { ...extra, ...(trace ? { trace: (p: string) => trace('hub', p) } : {}) });
  const app = await endpointFor(sig, `bench-app-${n}`, [home], { ...extra, ...(trace ? { trace: (p: string) => trace('app', p) } : {}) });
  hub.on('request', (r) => void r.accept().catch(() => undefined));
  return {
    app,
    hub,
    async dial() {
      const peer = nextLink(hub);
      const link = await app.dial(hub.id, { timeoutMs: 20_000 });
      return { link, peer: await peer };
    },
    close() {
      app.close();
      hub.close();
    },
  };
}

export interface BarePair {
  a: RTCPeerConnection;
  b: RTCPeerConnection;
  /** The offerer's channel and the answerer's, both open. */
  ca: RTCDataChannel;
  cb: RTCDataChannel;
  close(): Promise<void>;
}

/** Two bare werift peers exchanging offer/answer and candidates in-process; resolves when the channel is open on both sides. */
export async function barePair(stack: Stack, mode: 'direct' | 'relay' | 'relay-udp-blocked'): Promise<BarePair> {
  let iceServers: { urls: string; username?: string; credential?: string }[] = [];
  if (mode === 'relay-udp-blocked') {
    // The service's URL order (UDP first) with UDP black-holed, handed to werift as is.
    const c = await mintTurnCredential(TURN_SECRET, `bare-${n++}`, 600, Date.now() / 1000);
    const holePort = stack.holePort;
    iceServers = [
      { urls: `stun:127.0.0.1:${holePort}` },
      { urls: `turn:127.0.0.1:${holePort}`, username: c.username, credential: c.credential },
      { urls: `turn:127.0.0.1:${stack.relay.entry.tcpPort}?transport=tcp`, username: c.username, credential: c.credential },
    ];
  }
  if (mode === 'relay') {
    const c = await mintTurnCredential(TURN_SECRET, `bare-${n++}`, 600, Date.now() / 1000);
    iceServers = [
      { urls: `stun:127.0.0.1:${stack.relay.entry.udpPort}` },
      { urls: `turn:127.0.0.1:${stack.relay.entry.udpPort}`, username: c.username, credential: c.credential },
    ];
  }
  const cfg = {
    iceServers,
    iceUseIpv4: false,
    iceUseIpv6: false,
    iceAdditionalHostAddresses: ['127.0.0.1'],
    iceTransportPolicy: mode === 'direct' ? ('all' as const) : ('relay' as const),
  };
  const a = new RTCPeerConnection(cfg);
  const b = new RTCPeerConnection(cfg);
  if (mode === 'direct') {
    // Same as the library: no public STUN default (there is no internet here).
    for (const pc of [a, b]) pc.onIceCandidate.subscribe(() => undefined);
  }
  a.onIceCandidate.subscribe((c) => c && void b.addIceCandidate(c).catch(() => undefined));
  b.onIceCandidate.subscribe((c) => c && void a.addIceCandidate(c).catch(() => undefined));
  const ca = a.createDataChannel('bulk');
  if (mode === 'direct') for (const t of a.iceTransports) (t.connection as unknown as { stunServer?: unknown }).stunServer = undefined;
  const cbP = new Promise<RTCDataChannel>((r) => b.onDataChannel.subscribe(r));
  const offer = await a.createOffer();
  await a.setLocalDescription(offer);
  await b.setRemoteDescription(a.localDescription!);
  if (mode === 'direct') for (const t of b.iceTransports) (t.connection as unknown as { stunServer?: unknown }).stunServer = undefined;
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription!);
  const opened = new Promise<void>((r) => (ca.readyState === 'open' ? r() : ca.stateChanged.subscribe((s) => s === 'open' && r())));
  const cb = await cbP;
  await opened;
  return { a, b, ca, cb, close: async () => void (await Promise.all([a.close(), b.close()])) };
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((p, q) => p - q);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
export const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((p, r) => p - r);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};
