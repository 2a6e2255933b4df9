/**
 * The client library for browsers: `Endpoint.connect` with the native `RTCPeerConnection` and
 * `WebSocket`. Nothing Node-only is reachable from this entry point.
 *
 * @example
 * ```ts
 * import { Endpoint } from 'homelink/client/browser';
 * const ep = await Endpoint.connect({ signalingUrl, token, identity, trust });
 * const link = await ep.dial('hub-1');
 * ```
 */
import { EndpointCore, type EndpointOptions, type EndpointRuntime } from './endpoint.js';
import type { WebSocketFactory, WebSocketLike } from './signaling.js';
import { createNativeBackend } from './webrtc/native.js';

/** The browser's own WebSocket; the token rides in the subprotocol list, never the URL. */
export const browserWebSocket: WebSocketFactory = (url, protocols) => new WebSocket(url, protocols) as unknown as WebSocketLike;

/** An endpoint in a browser. */
export class Endpoint extends EndpointCore {
  /** Joins presence at the signaling service and resolves once the service said hello. */
  static async connect(opts: EndpointOptions & Partial<EndpointRuntime>): Promise<Endpoint> {
    const rt: EndpointRuntime = { webSocket: opts.webSocket ?? browserWebSocket, backend: opts.backend ?? createNativeBackend };
    return EndpointCore.openWith(new Endpoint(opts, rt));
  }
}

export { Channel, type ChannelInit } from './channel.js';
export { type DialOptions, type EndpointOptions, type IncomingRequest } from './endpoint.js';
export { LinkError, isLinkError, type LinkErrorCode } from './errors.js';
export { generateDeviceKey, type DeviceIdentity, type Trust } from './identity.js';
export { Link, type LinkPath, type LinkStats } from './link.js';
