/**
 * Real WebSocket clients (the `ws` package) for the signaling suites: a socket that queues the
 * frames it receives so tests can await them in order, with bounded waits.
 */
import WebSocket from 'ws';
import { wsProtocols } from '../../protocol/messages.js';

/** Every wait in these suites is bounded; generous because the machine is shared. */
export const WAIT_MS = 10_000;

export type Frame = { type: string } & Record<string, unknown>;

export class TestSocket {
  readonly frames: Frame[] = [];
  private waiters: Array<() => void> = [];
  closeCode: number | null = null;
  closeReason = '';
  protocol = '';

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      const text = isBinary ? '' : data.toString();
      try {
        this.frames.push(JSON.parse(text) as Frame);
      } catch {
        this.frames.push({ type: '<unparsable>', text });
      }
      this.wake();
    });
    ws.on('close', (code, reason) => {
      if (this.closeCode !== null) return this.wake();
      this.closeCode = code;
      this.closeReason = reason.toString();
      this.wake();
    });
  }

  /**
   * Counts the socket as closed once the server's close frame arrives. workerd keeps the TCP
   * connection of a hibernatable socket it closed open until the object hibernates (about 10 s),
   * so `ws` would report the close only then; RFC 6455 §7.1.1 lets a client stop there.
   */
  watchCloseFrame(): void {
    const receiver = (this.ws as unknown as { _receiver?: { on(ev: 'conclude', f: (code: number, reason: Buffer) => void): void } })._receiver;
    receiver?.on('conclude', (code, reason) => {
      this.closeCode ??= code;
      this.closeReason = reason.toString();
      this.wake();
      this.ws.terminate();
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private async until<T>(probe: () => T | undefined, what: string, ms = WAIT_MS): Promise<T> {
    const end = Date.now() + ms;
    for (;;) {
      const v = probe();
      if (v !== undefined) return v;
      const left = end - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.frames.map((f) => f.type))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Removes and returns the first frame of `type` (waiting for it). */
  async next(type: string, ms = WAIT_MS): Promise<Frame> {
    return this.until(() => {
      const i = this.frames.findIndex((f) => f.type === type);
      return i < 0 ? undefined : this.frames.splice(i, 1)[0];
    }, `a '${type}' frame`, ms);
  }

  /** Removes and returns the next frame whatever its type. */
  async shift(ms = WAIT_MS): Promise<Frame> {
    return this.until(() => this.frames.shift(), 'any frame', ms);
  }

  /** Resolves with the close code once the socket closed. */
  async closed(ms = WAIT_MS): Promise<number> {
    return this.until(() => this.closeCode ?? undefined, 'close');
  }

  send(v: unknown): void {
    this.ws.send(typeof v === 'string' ? v : JSON.stringify(v));
  }

  close(): void {
    this.ws.close(1000);
  }

  /** Closes and waits until the server saw it. */
  async closeAndWait(): Promise<void> {
    if (this.closeCode !== null) return;
    this.ws.close(1000);
    await this.closed();
  }
}

/** What a refused upgrade answered (status and body), or the open socket. */
export type Connected = { ok: true; socket: TestSocket } | { ok: false; status: number; body: string };

/** Opens a socket with raw subprotocols; resolves on open or on a refused upgrade. */
export function connectRaw(url: string, protocols: string[] | undefined, ms = WAIT_MS): Promise<Connected> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    const socket = new TestSocket(ws);
    const t = setTimeout(() => {
      ws.terminate();
      reject(new Error(`connect to ${new URL(url).pathname} timed out`));
    }, ms);
    ws.once('open', () => {
      clearTimeout(t);
      socket.protocol = ws.protocol;
      socket.watchCloseFrame();
      resolve({ ok: true, socket });
    });
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(t);
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ ok: false, status: res.statusCode ?? 0, body }));
    });
    ws.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

/** Opens a socket authenticated with `token`; throws when refused. */
export async function connect(base: string, path: string, token: string): Promise<TestSocket> {
  const r = await connectRaw(base.replace(/^http/, 'ws') + path, wsProtocols(token));
  if (!r.ok) throw new Error(`upgrade to ${path} refused: ${r.status}`);
  return r.socket;
}

/** A presence socket (declaring `caps`, comma-separated, when given), after its `hello`. */
export async function online(base: string, token: string, caps = ''): Promise<TestSocket> {
  const s = await connect(base, `/v1/presence${caps ? `?caps=${caps}` : ''}`, token);
  await s.next('hello');
  return s;
}

/** Both sides of an accepted session: tokens, presence sockets and `session` frames. */
export interface SessionPair {
  readonly at: string;
  readonly ht: string;
  readonly app: TestSocket;
  readonly hub: TestSocket;
  readonly sa: Frame;
  readonly sb: Frame;
}

/** `app-<tag>` (declaring `appCaps`) dials `hub-<tag>` (declaring `hubCaps`), which accepts. */
export async function sessionPair(
  sig: { readonly url: string; readonly issuer: { accessToken(c: { sub: string; homes: string[] }): Promise<string> } },
  tag: string,
  appCaps: string,
  hubCaps: string,
): Promise<SessionPair> {
  const at = await sig.issuer.accessToken({ sub: `app-${tag}`, homes: [`home-${tag}`] });
  const ht = await sig.issuer.accessToken({ sub: `hub-${tag}`, homes: [`home-${tag}`] });
  const app = await online(sig.url, at, appCaps);
  const hub = await online(sig.url, ht, hubCaps);
  app.send({ type: 'dial', reqId: tag, to: `hub-${tag}` });
  const req = await hub.next('request');
  hub.send({ type: 'answer', reqId: req.reqId, accept: true });
  return { at, ht, app, hub, sa: await app.next('session'), sb: await hub.next('session') };
}
