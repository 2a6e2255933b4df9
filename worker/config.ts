/**
 * The signaling service's configuration: one typed object, built and checked once from the
 * Worker's vars and secrets. A bad value fails with a `ConfigError` naming the field (never its
 * value, since some fields are secrets).
 *
 * Portable on purpose (no Workers or Node types): the development issuer imports `RelayEntry`
 * and `WorkerVars` from here to write the vars for local runs.
 */
import type { JWK } from 'jose';
import { PRESENCE_STALE_MS } from '../protocol/messages.js';

/** One TURN/STUN relay the service hands out to endpoints. */
export interface RelayEntry {
  /** Stable id, for logs and tests. */
  readonly id: string;
  /** Free-form region label (e.g. 'eu-west'); informational. */
  readonly region: string;
  /** Location used to pick the nearest relays for a request (degrees). */
  readonly lat: number;
  readonly lon: number;
  /** Host name or IP literal for `stun:`/`turn:` URLs. */
  readonly host: string;
  readonly udpPort: number;
  readonly tcpPort: number;
  readonly tlsPort: number;
  /** Host name for `turns:` URLs when it differs from `host` (the TLS certificate's name). */
  readonly tlsHost?: string;
}

/** The raw vars/secrets as the Worker receives them (all strings, all optional until checked). */
export interface WorkerVars {
  readonly JWT_ISSUER?: string;
  readonly JWT_AUDIENCE?: string;
  readonly JWKS?: string;
  readonly JWKS_URL?: string;
  readonly DEV_HS256_SECRET?: string;
  readonly TURN_SECRETS?: string;
  readonly TURN_TTL_SECONDS?: string;
  readonly RELAYS?: string;
  readonly OFFLINE_WAIT_MS?: string;
  readonly REQUEST_TIMEOUT_MS?: string;
  readonly SESSION_TTL_SECONDS?: string;
  readonly ROOM_GRACE_MS?: string;
  readonly PRESENCE_STALE_MS?: string;
  readonly PRESENCE_SWEEP_MS?: string;
  readonly DEBUG_TRACE_EVENTS?: string;
}

// ---- Defaults (named, with reasons) ------------------------------------------------------

/** TURN credentials outlive a typical session set-up plus a few ICE restarts; clients renew via `ice_servers`. */
export const DEFAULT_TURN_TTL_SECONDS = 3600;
/** A target that dropped its presence socket usually reconnects within a few seconds (mobile handover). */
export const DEFAULT_OFFLINE_WAIT_MS = 3000;
/** A person has to tap "accept" on a phone; 30 s is the usual ring time. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** Signaling for one session (set-up, renegotiation, ICE restarts) fits in 10 minutes; the link itself is P2P. */
export const DEFAULT_SESSION_TTL_SECONDS = 600;
/** An empty or ended room waits this long before it is deleted: a side that dropped rejoins within seconds. */
export const DEFAULT_ROOM_GRACE_MS = 15_000;
/**
 * How long a presence object keeps a request's deadline in an in-memory timer before it moves
 * the storage alarm for it (each move is a row written: worker/presence.ts `rearm`). Long enough
 * for most requests to end first (a hub that accepts on its own answers within a round trip or
 * two); short, because a pending timer makes the object non-hibernatable (billed duration), and
 * well under the ~10 s without events after which the runtime may hibernate an object.
 */
export const TIMER_HORIZON_MS = 2000;
/**
 * How often a presence object with nothing else to do wakes to close its socket if it went
 * silent (worker/presence.ts `nextWake`). Each wake is an alarm invocation and an alarm set (a
 * row written), so this is what an online endpoint costs at rest: once a minute (the staleness
 * bound, as before) that was about $0.60 per endpoint-year at list prices, once an hour it is
 * about 1 cent. Nothing waits for the sweep: a request for the endpoint checks the socket's
 * silence itself (`incoming`), and a client whose path died reconnects on its own keepalive.
 */
export const DEFAULT_PRESENCE_SWEEP_MS = 3_600_000;
/** An endpoint is handed at most this many relays, nearest first. */
export const MAX_RELAYS_PER_SESSION = 2;

const LIMITS = {
  turnTtl: [60, 86_400],
  offlineWait: [0, 60_000],
  requestTimeout: [100, 300_000],
  sessionTtl: [2, 86_400],
  roomGrace: [0, 600_000],
  // Below a second a loaded client's ping could be late; above an hour a dead hub lingers.
  presenceStale: [1000, 3_600_000],
  presenceSweep: [1000, 86_400_000],
  relays: 32,
  secrets: 8,
} as const;

/** The checked configuration. */
export interface Config {
  readonly issuer: string;
  readonly audience: string;
  /** Verification keys from the JWKS var; empty only when JWKS_URL or the dev secret supplies keys. */
  readonly jwks: { readonly keys: readonly JWK[] };
  readonly jwksUrl: string | null;
  /** Set only for local development; enables HS256. */
  readonly devHs256Secret: string | null;
  /** First one mints; all are listed so relays can accept the previous one during rotation. */
  readonly turnSecrets: readonly string[];
  readonly turnTtlSeconds: number;
  readonly relays: readonly RelayEntry[];
  readonly offlineWaitMs: number;
  readonly requestTimeoutMs: number;
  readonly sessionTtlSeconds: number;
  readonly roomGraceMs: number;
  /** Presence silent (no frame, no ping) this long is dropped. */
  readonly presenceStaleMs: number;
  /** A presence object with nothing else to do checks its socket this long after last hearing it (never sooner than `presenceStaleMs`). */
  readonly presenceSweepMs: number;
  /** Log one line per object event (wake, message); for tests, never on in production. */
  readonly traceEvents: boolean;
}

/** A configuration error; `field` names the offending var. The message never contains its value. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly field: keyof WorkerVars,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`config ${field}: ${message}`, options);
  }
}

const nonEmpty = (vars: WorkerVars, field: keyof WorkerVars): string => {
  const v = vars[field];
  if (typeof v !== 'string' || v.trim() === '') throw new ConfigError(field, 'is required');
  return v.trim();
};

const intField = (vars: WorkerVars, field: keyof WorkerVars, def: number, [min, max]: readonly [number, number]): number => {
  const raw = vars[field];
  if (raw === undefined || raw === '') return def;
  if (!/^\d{1,9}$/.test(raw.trim())) throw new ConfigError(field, 'must be a non-negative integer');
  const n = Number(raw.trim());
  if (n < min || n > max) throw new ConfigError(field, `must be between ${min} and ${max}`);
  return n;
};

const HOST_RE = /^(?:[A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}$|^\[?[0-9A-Fa-f:.]{2,45}\]?$/;
const ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

const isPort = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0 && (v as number) < 65536;

/** Checks one `RELAYS` entry; throws `ConfigError` naming the index and property. */
function relayEntry(v: unknown, i: number): RelayEntry {
  const bad = (what: string): never => {
    throw new ConfigError('RELAYS', `entry ${i}: ${what}`);
  };
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad('must be an object');
  const o = v as Record<string, unknown>;
  const { id, region, lat, lon, host, udpPort, tcpPort, tlsPort, tlsHost } = o;
  if (typeof id !== 'string' || !ID_RE.test(id)) bad('id must match [A-Za-z0-9._-]{1,64}');
  if (typeof region !== 'string' || region.length === 0 || region.length > 64) bad('region must be a short string');
  if (typeof lat !== 'number' || !(lat >= -90 && lat <= 90)) bad('lat must be a number in [-90, 90]');
  if (typeof lon !== 'number' || !(lon >= -180 && lon <= 180)) bad('lon must be a number in [-180, 180]');
  if (typeof host !== 'string' || !HOST_RE.test(host)) bad('host must be a host name or IP literal');
  if (!isPort(udpPort)) bad('udpPort must be a port number');
  if (!isPort(tcpPort)) bad('tcpPort must be a port number');
  if (!isPort(tlsPort)) bad('tlsPort must be a port number');
  if (tlsHost !== undefined && (typeof tlsHost !== 'string' || !HOST_RE.test(tlsHost))) bad('tlsHost must be a host name');
  return {
    id: id as string,
    region: region as string,
    lat: lat as number,
    lon: lon as number,
    host: host as string,
    udpPort: udpPort as number,
    tcpPort: tcpPort as number,
    tlsPort: tlsPort as number,
    ...(tlsHost !== undefined ? { tlsHost: tlsHost as string } : {}),
  };
}

/** Parses the RELAYS var (a JSON array). */
export function parseRelays(raw: string | undefined): RelayEntry[] {
  if (raw === undefined || raw.trim() === '') return [];
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch (e) {
    throw new ConfigError('RELAYS', 'is not valid JSON', { cause: e });
  }
  if (!Array.isArray(v)) throw new ConfigError('RELAYS', 'must be a JSON array');
  if (v.length > LIMITS.relays) throw new ConfigError('RELAYS', `lists more than ${LIMITS.relays} relays`);
  const relays = v.map(relayEntry);
  const ids = new Set(relays.map((r) => r.id));
  if (ids.size !== relays.length) throw new ConfigError('RELAYS', 'ids must be unique');
  return relays;
}

function parseJwks(raw: string | undefined): { keys: JWK[] } {
  if (raw === undefined || raw.trim() === '') return { keys: [] };
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch (e) {
    throw new ConfigError('JWKS', 'is not valid JSON', { cause: e });
  }
  const keys = (v as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) throw new ConfigError('JWKS', 'must be a JSON Web Key Set ({"keys": [...]})');
  keys.forEach((k: unknown, i) => {
    if (typeof k !== 'object' || k === null || typeof (k as JWK).kty !== 'string') {
      throw new ConfigError('JWKS', `key ${i} has no kty`);
    }
    // A private or symmetric key in a verification set is a deployment mistake (RFC 8725 §3.1).
    if ('d' in k || (k as JWK).kty === 'oct') throw new ConfigError('JWKS', `key ${i} is not a public key`);
  });
  return { keys: keys as JWK[] };
}

/**
 * Builds the checked configuration from the Worker's vars.
 *
 * @throws ConfigError naming the first bad field.
 * @example
 * const config = loadConfig(env); // at the top of the fetch handler, cached per isolate
 */
export function loadConfig(vars: WorkerVars): Config {
  const issuer = nonEmpty(vars, 'JWT_ISSUER');
  const audience = nonEmpty(vars, 'JWT_AUDIENCE');
  const jwks = parseJwks(vars.JWKS);
  let jwksUrl: string | null = null;
  if (vars.JWKS_URL !== undefined && vars.JWKS_URL.trim() !== '') {
    let u: URL;
    try {
      u = new URL(vars.JWKS_URL.trim());
    } catch (e) {
      throw new ConfigError('JWKS_URL', 'is not a URL', { cause: e });
    }
    // Keys fetched in clear could be swapped in transit; loopback is allowed for local issuers.
    const loopback = u.hostname === '127.0.0.1' || u.hostname === '[::1]' || u.hostname === 'localhost';
    if (u.protocol !== 'https:' && !(u.protocol === 'http:' && loopback)) throw new ConfigError('JWKS_URL', 'must be https');
    jwksUrl = u.href;
  }
  const devHs256Secret = vars.DEV_HS256_SECRET && vars.DEV_HS256_SECRET.length > 0 ? vars.DEV_HS256_SECRET : null;
  if (devHs256Secret !== null && devHs256Secret.length < 32) {
    throw new ConfigError('DEV_HS256_SECRET', 'must be at least 32 characters');
  }
  if (jwks.keys.length === 0 && jwksUrl === null && devHs256Secret === null) {
    throw new ConfigError('JWKS', 'no verification keys: set JWKS or JWKS_URL');
  }
  const turnSecrets = nonEmpty(vars, 'TURN_SECRETS')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (turnSecrets.length === 0) throw new ConfigError('TURN_SECRETS', 'is required');
  if (turnSecrets.length > LIMITS.secrets) throw new ConfigError('TURN_SECRETS', `lists more than ${LIMITS.secrets} secrets`);
  if (turnSecrets.some((s) => s.length < 16)) throw new ConfigError('TURN_SECRETS', 'each secret must be at least 16 characters');
  return {
    issuer,
    audience,
    jwks,
    jwksUrl,
    devHs256Secret,
    turnSecrets,
    turnTtlSeconds: intField(vars, 'TURN_TTL_SECONDS', DEFAULT_TURN_TTL_SECONDS, LIMITS.turnTtl),
    relays: parseRelays(vars.RELAYS),
    offlineWaitMs: intField(vars, 'OFFLINE_WAIT_MS', DEFAULT_OFFLINE_WAIT_MS, LIMITS.offlineWait),
    requestTimeoutMs: intField(vars, 'REQUEST_TIMEOUT_MS', DEFAULT_REQUEST_TIMEOUT_MS, LIMITS.requestTimeout),
    sessionTtlSeconds: intField(vars, 'SESSION_TTL_SECONDS', DEFAULT_SESSION_TTL_SECONDS, LIMITS.sessionTtl),
    roomGraceMs: intField(vars, 'ROOM_GRACE_MS', DEFAULT_ROOM_GRACE_MS, LIMITS.roomGrace),
    presenceStaleMs: intField(vars, 'PRESENCE_STALE_MS', PRESENCE_STALE_MS, LIMITS.presenceStale),
    presenceSweepMs: intField(vars, 'PRESENCE_SWEEP_MS', DEFAULT_PRESENCE_SWEEP_MS, LIMITS.presenceSweep),
    traceEvents: vars.DEBUG_TRACE_EVENTS === '1',
  };
}
