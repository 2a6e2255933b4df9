/**
 * The signaling service's Worker: HTTP routing and authentication at the edge. Each WebSocket
 * upgrade is verified here (token from `Sec-WebSocket-Protocol`) before any Durable Object wakes,
 * then handed to the object that owns it with the verified identity attached:
 *
 *   GET /v1/presence           -> Presence object named by the caller's endpoint id
 *   GET /v1/rooms/:sessionId   -> Room object named by the session id (132 random bits the service
 *                                 chose); the room admits only its two members (`?ticket=` when
 *                                 the session has one: the room may be created from it)
 *   GET /healthz               -> 200
 */
import { Hono, type Context } from 'hono';
import { SESSION_ID_RE } from '../protocol/messages.js';
import { makeVerifier, tokenFromRequest, type Verifier } from './auth.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { IDENTITY_HEADER, REFUSE_HEADER, type Env, type Identity } from './env.js';
import { locationFromCf } from './ice.js';
import { roomKey } from './room.js';

export { Presence } from './presence.js';
export { Room } from './room.js';

/** Config and verifier are built once per isolate and env object. */
const built = new WeakMap<object, { config: Config; verifier: Verifier }>();

function setup(env: Env): { config: Config; verifier: Verifier } {
  let b = built.get(env);
  if (!b) {
    const config = loadConfig(env);
    b = { config, verifier: makeVerifier(config) };
    built.set(env, b);
  }
  return b;
}

type Ctx = Context<{ Bindings: Env }>;

const json = (status: number, error: string): Response =>
  new Response(JSON.stringify({ error }), { status, headers: { 'content-type': 'application/json' } });

/** Verifies the upgrade request; a Response when it must be refused, else the identity. */
async function authenticate(c: Ctx): Promise<Response | Identity> {
  // A billable Worker request (bench/signaling counts these with DEBUG_TRACE_EVENTS).
  if (setup(c.env).config.traceEvents) console.log('homelink-meter worker request 1');
  if (c.req.header('Upgrade')?.toLowerCase() !== 'websocket') return json(426, 'websocket upgrade required');
  const token = tokenFromRequest(c.req.raw);
  if (token === null) return json(401, 'unauthorized');
  let claims;
  try {
    claims = await setup(c.env).verifier.verify(token);
  } catch {
    // One answer for every failure: which check failed is of use only to an attacker.
    return json(401, 'unauthorized');
  }
  const loc = locationFromCf((c.req.raw as { cf?: unknown }).cf);
  return { sub: claims.sub, homes: claims.homes, exp: claims.exp, lat: loc?.lat ?? null, lon: loc?.lon ?? null };
}

/** The upgrade request to hand to an object: the client's headers minus anything it must not set. */
function forward(req: Request, id: Identity): Request {
  const headers = new Headers(req.headers);
  headers.delete(IDENTITY_HEADER);
  headers.delete(REFUSE_HEADER);
  // The token has done its job; it does not travel further.
  headers.delete('Sec-WebSocket-Protocol');
  headers.set(IDENTITY_HEADER, JSON.stringify(id));
  return new Request(req.url, { method: 'GET', headers });
}

/**
 * Refuses a room join: the caller's own presence object accepts the upgrade only to close it with
 * a policy code (RFC 6455 §7.4.1, 1008), the same answer whether the session is unknown, foreign
 * or malformed. A Durable Object does it with the hibernation API: a socket accepted and closed
 * in the Worker itself made the runtime log an uncaught "Network connection lost" for every
 * refused join.
 */
function refuseSocket(c: Ctx, id: Identity): Promise<Response> {
  const stub = c.env.PRESENCE.get(c.env.PRESENCE.idFromName(id.sub));
  const req = forward(c.req.raw, id);
  req.headers.set(REFUSE_HEADER, 'not a member of this session');
  return stub.fetch(req);
}

export const app = new Hono<{ Bindings: Env }>();

app.onError((err, c) => {
  // Never echo the error text: it may carry request data.
  console.error('signaling: unhandled', err instanceof ConfigError ? err.message : err.name);
  return c.json({ error: err instanceof ConfigError ? 'misconfigured' : 'internal' }, 500);
});

app.get('/healthz', (c) => {
  setup(c.env);
  return c.text('ok');
});

app.get('/v1/presence', async (c) => {
  const id = await authenticate(c);
  if (id instanceof Response) return id;
  const stub = c.env.PRESENCE.get(c.env.PRESENCE.idFromName(id.sub));
  return stub.fetch(forward(c.req.raw, id));
});

app.get('/v1/rooms/:sessionId', async (c) => {
  const id = await authenticate(c);
  if (id instanceof Response) return id;
  const sessionId = c.req.param('sessionId');
  if (!SESSION_ID_RE.test(sessionId)) return refuseSocket(c, id);
  const room = c.env.ROOM.get(c.env.ROOM.idFromName(roomKey(sessionId)));
  return room.fetch(forward(c.req.raw, id));
});

app.notFound((c) => c.json({ error: 'not found' }, 404));

export default app;
