/**
 * The Node WebSocket factory, on the `ws` package (Node 20 has no global WebSocket). An HTTP
 * 401/403 answer to the upgrade is reported as close code 4401/4403, so the presence socket can
 * tell "token refused" from "network down" and stop retrying.
 *
 * `close()` starts the close handshake and drops the TCP connection after `CLOSE_HANDSHAKE_MS`
 * if the server has not closed it by then: workerd keeps the connection of a closed hibernatable
 * socket until the object hibernates, and `ws` would hold it (and the process) for its 30 s
 * close timeout. RFC 6455 §7.1.1 lets the client close the TCP connection once it sent its close.
 *
 * No permessage-deflate (`ws` offers it by default): signaling frames are small JSON, and each
 * compressed frame went through zlib on libuv's pool on both ends, with a compression context per
 * socket (docs/BENCHMARKS.md, "The native dial's event loop"). The service declines it too, for
 * clients that cannot stop offering it (browsers).
 */
import WebSocket from 'ws';
import { CLOSE_HANDSHAKE_MS, type WebSocketFactory, type WebSocketLike } from './signaling.js';

/** Largest frame we accept from the service (protocol MAX_FRAME_BYTES is 64 KiB; ws enforces this before parsing). */
const MAX_PAYLOAD = 64 * 1024;

export const nodeWebSocket: WebSocketFactory = (url, protocols) => {
  const ws = new WebSocket(url, protocols, { maxPayload: MAX_PAYLOAD, handshakeTimeout: 10_000, perMessageDeflate: false });
  let status = 0;
  ws.on('unexpected-response', (_req, res) => {
    status = res.statusCode ?? 0;
    res.resume();
    ws.terminate();
  });
  const like: WebSocketLike = {
    get readyState() {
      return ws.readyState;
    },
    send: (d) => ws.send(d),
    close: (code, reason) => {
      if (ws.readyState === WebSocket.CLOSED) return;
      try {
        ws.close(code, reason);
      } catch {
        ws.terminate();
        return;
      }
      const t = setTimeout(() => ws.terminate(), CLOSE_HANDSHAKE_MS);
      ws.once('close', () => clearTimeout(t));
    },
    terminate: () => ws.terminate(),
    onopen: null,
    onmessage: null,
    onclose: null,
    onerror: null,
  };
  ws.on('open', () => like.onopen?.(undefined));
  ws.on('message', (data, isBinary) => like.onmessage?.({ data: isBinary ? data : data.toString() }));
  ws.on('error', (e) => like.onerror?.(e));
  ws.on('close', (code, reason) => {
    const c = status === 401 ? 4401 : status === 403 ? 4403 : code;
    like.onclose?.({ code: c, reason: reason.toString() });
  });
  return like;
};
