/**
 * The demo page's HTTP server, part of the local stack (`npm start`). Development only: it also
 * hands out dev credentials, so it binds to loopback and must never be exposed.
 *
 *   GET  /              web/index.html
 *   GET  /app.js        the browser bundle (web/app.ts + client/ with the native backend), built
 *                       by esbuild on each request (development: edits show on reload)
 *   GET  /config.json   signaling URL and the issuer keys peers' identity certificates are checked with
 *   POST /dev/credentials  {sub, homes, publicJwk} -> {token, certificate} from the dev issuer
 *
 * Node only.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import type { JWK } from 'jose';
import type { DevIssuer } from '../dev/issuer.js';
import { ENDPOINT_ID_RE } from '../protocol/turn-credentials.js';
import { bundleBrowserApp } from './bundle.js';

/** Largest request body the dev endpoints read: a public JWK and a few ids fit in 1 KiB. */
export const MAX_BODY_BYTES = 16 * 1024;
/** At most this many home ids per demo credential (the issuer allows more; the page needs one). */
const MAX_DEMO_HOMES = 8;

/** What the page learns from `/config.json`. */
export interface WebConfig {
  readonly signalingUrl: string;
  readonly trust: { readonly issuer: string; readonly audience: string; readonly jwks: { keys: JWK[] } };
  /** Home id the page puts in its token by default, the same the CLI uses. */
  readonly defaultHome: string;
  /** The stack runs on loopback: the page announces only 127.0.0.0/8 candidates. */
  readonly loopbackOnly: boolean;
}

/** Options of {@link startWebServer}. */
export interface WebServerOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly signalingUrl: string;
  readonly issuer: DevIssuer;
  readonly defaultHome: string;
}

/** A running web server. */
export interface WebServer {
  readonly url: string;
  close(): Promise<void>;
}

const webDir = fileURLToPath(new URL('.', import.meta.url));

const send = (res: ServerResponse, status: number, type: string, body: string | Uint8Array): void => {
  res.writeHead(status, {
    'content-type': type,
    'cache-control': 'no-store',
    // The page talks only to itself and the local signaling service.
    'x-content-type-options': 'nosniff',
  });
  res.end(body);
};

const sendJson = (res: ServerResponse, status: number, v: unknown): void => send(res, status, 'application/json', JSON.stringify(v));

function readBody(req: IncomingMessage): Promise<string | null> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        // Stop reading; the handler answers 413 and closes the connection.
        req.removeAllListeners('data');
        req.pause();
        resolve(null);
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', () => resolve(null));
  });
}

/** Parses the credentials request; a string is the reason it was refused. */
function parseCredentialRequest(text: string): { sub: string; homes: string[]; publicJwk: JWK } | string {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return 'body is not JSON';
  }
  if (typeof v !== 'object' || v === null) return 'body must be an object';
  const o = v as Record<string, unknown>;
  if (typeof o['sub'] !== 'string' || !ENDPOINT_ID_RE.test(o['sub'])) return 'sub must be an endpoint id (letters, digits, ._~-)';
  const homes = o['homes'];
  if (!Array.isArray(homes) || homes.length === 0 || homes.length > MAX_DEMO_HOMES || !homes.every((h) => typeof h === 'string' && ENDPOINT_ID_RE.test(h))) {
    return 'homes must list 1 to 8 home ids';
  }
  const jwk = o['publicJwk'];
  if (typeof jwk !== 'object' || jwk === null || 'd' in jwk || (jwk as JWK).kty !== 'EC') return 'publicJwk must be a public EC key';
  return { sub: o['sub'], homes: homes as string[], publicJwk: jwk as JWK };
}

/**
 * Starts the demo page server.
 *
 * @example
 * const web = await startWebServer({ host: '127.0.0.1', port: 8080, signalingUrl, issuer, defaultHome: 'home-1' });
 * console.log(web.url);
 */
export async function startWebServer(opts: WebServerOptions): Promise<WebServer> {
  const config: WebConfig = {
    signalingUrl: opts.signalingUrl,
    trust: { issuer: opts.issuer.issuer, audience: opts.issuer.peerAudience, jwks: opts.issuer.publicJwks },
    defaultHome: opts.defaultHome,
    loopbackOnly: opts.host.startsWith('127.'),
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (req.method === 'GET' && (path === '/' || path === '/index.html')) {
      send(res, 200, 'text/html; charset=utf-8', await readFile(`${webDir}index.html`));
    } else if (req.method === 'GET' && path === '/app.js') {
      // Built per request (esbuild takes a few hundred ms): edits to client/ or web/ show on reload.
      try {
        send(res, 200, 'text/javascript; charset=utf-8', await bundleBrowserApp());
      } catch (e) {
        send(res, 500, 'text/plain', `bundle failed: ${(e as Error).message}`);
      }
    } else if (req.method === 'GET' && path === '/config.json') {
      sendJson(res, 200, config);
    } else if (req.method === 'GET' && path === '/health') {
      sendJson(res, 200, { ok: true });
    } else if (req.method === 'POST' && path === '/dev/credentials') {
      const body = await readBody(req);
      if (body === null) {
        res.setHeader('connection', 'close');
        res.once('finish', () => req.destroy());
        return sendJson(res, 413, { error: `body larger than ${MAX_BODY_BYTES} bytes` });
      }
      const r = parseCredentialRequest(body);
      if (typeof r === 'string') return sendJson(res, 400, { error: r });
      const token = await opts.issuer.accessToken({ sub: r.sub, homes: r.homes });
      const certificate = await opts.issuer.identityCertificate({ sub: r.sub, publicJwk: r.publicJwk });
      sendJson(res, 200, { token, certificate });
    } else {
      send(res, 404, 'text/plain', 'not found');
    }
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) send(res, 500, 'text/plain', `internal error: ${(e as Error).name}`);
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${opts.host}:${port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
