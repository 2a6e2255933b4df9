/**
 * The client library for Node: `Endpoint.connect` with node-datachannel (or werift where it is
 * not installed) and `ws` wired in.
 * Browsers import `client/browser.ts` instead (native RTCPeerConnection and WebSocket).
 *
 * @example
 * ```ts
 * import { Endpoint, generateDeviceKey } from 'homelink/client';
 *
 * const ep = await Endpoint.connect({ signalingUrl: 'wss://signal.example.com', token, identity, trust });
 * ep.on('request', (req) => (req.peer.startsWith('app-') ? req.accept() : req.reject('not now')));
 * const link = await ep.dial('hub-1', { timeoutMs: 10_000 });
 * const ch = await link.channel('control');
 * await ch.send(JSON.stringify({ lights: 'on' }));
 * ```
 */
import { EndpointCore, type EndpointOptions, type EndpointRuntime } from './endpoint.js';
import { nodeWebSocket } from './node-websocket.js';
import { parseIceUrl } from '../protocol/ice-url.js';
import { chooseBackend, parseBackendChoice, withNativeFallback, type BackendChoice, type BackendFactory, type BackendName, type DtlsCertificate, type PeerOptions } from './webrtc/backend.js';
import { createWeriftBackend, newDtlsCertificate, prepareDtlsCertificate } from './webrtc/werift.js';
import { createNodeDatachannelBackend, loadNodeDatachannel, type NodeDatachannelOptions } from './webrtc/node-datachannel.js';
import { orderIceServers } from './webrtc/turn-probe.js';

/**
 * The relay transport that answered the Happy Eyeballs probe first (client/webrtc/turn-probe.ts),
 * asked only when a TCP or TLS relay is offered (otherwise there is nothing werift could add, and
 * no probe round trip is spent); null when none is offered or none answered.
 */
async function firstRelayTransport(opts: PeerOptions): Promise<'udp' | 'tcp' | 'tls' | null> {
  const turns = opts.iceServers.flatMap((s) => s.urls.map((u) => parseIceUrl(u))).filter((u) => u?.kind === 'turn');
  if (!turns.some((u) => u!.transport !== 'udp')) return null;
  const ordered = await orderIceServers(opts.iceServers, opts.turnTlsOptions);
  for (const s of ordered) {
    for (const u of s.urls) {
      const p = parseIceUrl(u);
      if (p?.kind === 'turn') return p.transport;
    }
  }
  return null;
}

/**
 * node-datachannel with a certificate the link can give its rebuilt connections: libdatachannel
 * cannot hand out the one it makes, so each link's first connection gets one made here.
 */
const nativeWithCertificate: BackendFactory = nativeBackendWith();

/** @internal Tests and benches: node-datachannel as links get it, with this backend's own options. */
export function nativeBackendWith(extra?: NodeDatachannelOptions): BackendFactory {
  return async (opts) => createNodeDatachannelBackend(opts.certificate ? opts : { ...opts, certificate: await newDtlsCertificate() }, extra);
}

/**
 * Resolves a backend choice to a factory on Node: an explicit choice, else `HOMELINK_BACKEND`,
 * else `auto` (werift; see `chooseBackend`).
 * @example
 * const { name, factory } = await nodeBackend('auto');
 */
export async function nodeBackend(choice?: BackendChoice): Promise<{ name: BackendName; factory: BackendFactory }> {
  const c = choice ?? parseBackendChoice(process.env['HOMELINK_BACKEND'], 'HOMELINK_BACKEND');
  const name = chooseBackend(c, c === 'node-datachannel' ? (await loadNodeDatachannel()) !== null : false);
  // node-datachannel carries what it can; relay-only links and relays reachable over TCP/TLS only go to werift.
  return { name, factory: name === 'node-datachannel' ? withNativeFallback(nativeWithCertificate, createWeriftBackend, firstRelayTransport) : createWeriftBackend };
}

/** An endpoint on Node. */
export class Endpoint extends EndpointCore {
  /**
   * Joins presence at the signaling service and resolves once the service said hello.
   * Rejects with `Unauthorized` when the token is refused.
   */
  static async connect(opts: EndpointOptions & Partial<EndpointRuntime>): Promise<Endpoint> {
    const backend = opts.backend ?? (await nodeBackend(opts.webrtcBackend)).factory;
    prepareDtlsCertificate();
    const rt: EndpointRuntime = { webSocket: opts.webSocket ?? nodeWebSocket, backend };
    return EndpointCore.openWith(new Endpoint(opts, rt));
  }
}

export { Channel, DEFAULT_HIGH_WATER_MARK, MAX_MESSAGE_BYTES, type ChannelInit } from './channel.js';
export { DEFAULT_DIAL_TIMEOUT_MS, type DialOptions, type EndpointOptions, type IncomingRequest } from './endpoint.js';
export { LinkError, isLinkError, type LinkErrorCode } from './errors.js';
export { generateDeviceKey, IDENTITY_AUDIENCE, type DeviceIdentity, type Trust } from './identity.js';
export { Link, type LinkPath, type LinkStats } from './link.js';
export { SESSION_DEFAULTS } from './session.js';
export type { BackendChoice, BackendFactory, BackendName, PeerBackend } from './webrtc/backend.js';
