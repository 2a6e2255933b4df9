/**
 * The client library for Node: `Endpoint.connect` with werift and `ws` wired in.
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
import { createWeriftBackend } from './webrtc/werift.js';

/** An endpoint on Node. */
export class Endpoint extends EndpointCore {
  /**
   * Joins presence at the signaling service and resolves once the service said hello.
   * Rejects with `Unauthorized` when the token is refused.
   */
  static async connect(opts: EndpointOptions & Partial<EndpointRuntime>): Promise<Endpoint> {
    const rt: EndpointRuntime = { webSocket: opts.webSocket ?? nodeWebSocket, backend: opts.backend ?? createWeriftBackend };
    return EndpointCore.openWith(new Endpoint(opts, rt));
  }
}

export { Channel, DEFAULT_HIGH_WATER_MARK, MAX_MESSAGE_BYTES, type ChannelInit } from './channel.js';
export { DEFAULT_DIAL_TIMEOUT_MS, type DialOptions, type EndpointOptions, type IncomingRequest } from './endpoint.js';
export { LinkError, isLinkError, type LinkErrorCode } from './errors.js';
export { generateDeviceKey, IDENTITY_AUDIENCE, type DeviceIdentity, type Trust } from './identity.js';
export { Link, type LinkPath, type LinkStats } from './link.js';
export { SESSION_DEFAULTS } from './session.js';
export type { BackendFactory, PeerBackend } from './webrtc/backend.js';
