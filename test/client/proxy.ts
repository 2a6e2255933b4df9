/**
 * A WebSocket proxy between one endpoint and the real signaling worker, for tests that play a
 * hostile or slow network path. Frames to the server pass unchanged (buffered until the upstream
 * socket opens); frames to the client go through `toClient`, which forwards them with `deliver`
 * now, later, rewritten, with extra frames, or never.
 */
import WebSocket, { WebSocketServer } from 'ws';

export type Deliver = (frame: string | Uint8Array) => void;

export interface SignalingProxy {
  /** http URL to give an endpoint as its signaling URL. */
  readonly url: string;
  close(): Promise<void>;
}

export async function signalingProxy(upstreamUrl: string, toClient: (text: string, deliver: Deliver) => void): Promise<SignalingProxy> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (p) => (p.has('homelink.v1') ? 'homelink.v1' : false) });
  await new Promise<void>((r) => wss.once('listening', r));
  const upstreams = new Set<WebSocket>();
  wss.on('connection', (down, req) => {
    // The access token rides in the subprotocols: offer the upstream exactly what the client offered.
    const protocols = String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim());
    const up = new WebSocket(upstreamUrl.replace('http', 'ws') + (req.url ?? '/'), protocols);
    upstreams.add(up);
    const early: string[] = [];
    up.on('open', () => early.splice(0).forEach((f) => up.send(f)));
    down.on('message', (d) => (up.readyState === WebSocket.OPEN ? up.send(d.toString()) : early.push(d.toString())));
    const deliver: Deliver = (frame) => {
      if (down.readyState !== WebSocket.OPEN) return;
      if (typeof frame === 'string') down.send(frame);
      else down.send(frame, { binary: true });
    };
    up.on('message', (d) => toClient(d.toString(), deliver));
    up.on('close', () => down.close());
    down.on('close', () => up.close());
    up.on('error', () => down.close());
  });
  return {
    url: `http://127.0.0.1:${(wss.address() as { port: number }).port}`,
    close: () =>
      new Promise<void>((r) => {
        for (const u of upstreams) u.terminate();
        for (const c of wss.clients) c.terminate();
        wss.close(() => r());
      }),
  };
}

/**
 * A proxy whose client-bound JSON frames go through `rewrite` (which may change them in place);
 * frames that are not JSON pass unchanged. Returns null from `rewrite` to drop a frame.
 */
export function jsonRewritingProxy(upstreamUrl: string, rewrite: (frame: Record<string, unknown>) => Record<string, unknown> | string | null): Promise<SignalingProxy> {
  return signalingProxy(upstreamUrl, (text, deliver) => {
    let f: Record<string, unknown>;
    try {
      f = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return deliver(text);
    }
    const out = rewrite(f);
    if (out !== null) deliver(typeof out === 'string' ? out : JSON.stringify(out));
  });
}

/**
 * The signals a room frame carries, as objects a rewrite may change in place: a `signal` frame's
 * data, or each item of a batch (what two endpoints of this library send each other), so a MITM
 * sees every offer, answer, candidate and identity however they were grouped.
 */
export function signalsOf(f: Record<string, unknown>): Array<Record<string, unknown>> {
  const d = f['type'] === 'signal' && typeof f['data'] === 'object' && f['data'] !== null ? (f['data'] as Record<string, unknown>) : null;
  if (d === null) return [];
  return d['kind'] === 'batch' && Array.isArray(d['items']) ? (d['items'] as Array<Record<string, unknown>>) : [d];
}

/** `sdp` with its DTLS fingerprint replaced by one no certificate here has (a MITM swapping keys). */
export function withForeignFingerprint(sdp: string): string {
  return sdp.replace(/^a=fingerprint:sha-256 .*$/gm, `a=fingerprint:sha-256 ${Array.from({ length: 32 }, () => 'AB').join(':')}`);
}
