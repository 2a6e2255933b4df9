/**
 * The Worker's bindings, and the internal headers the Worker uses to hand a verified identity to
 * a Durable Object. Those headers are set by the Worker after verifying the token (any copy a
 * client sent is dropped first); objects are reachable only through the Worker.
 */
import type { WorkerVars } from './config.js';
import type { Presence } from './presence.js';
import type { Room } from './room.js';

export interface Env extends WorkerVars {
  readonly PRESENCE: DurableObjectNamespace<Presence>;
  readonly ROOM: DurableObjectNamespace<Room>;
}

/** Verified identity of the caller, JSON: `Identity`. */
export const IDENTITY_HEADER = 'x-homelink-identity';

/**
 * Set by the Worker (never by a client: any copy is dropped) on an upgrade the object must accept
 * only to close with 1008; the value is the close reason.
 */
export const REFUSE_HEADER = 'x-homelink-refuse';

/** What the Worker proved about the caller, passed to the object that owns the socket. */
export interface Identity {
  readonly sub: string;
  readonly homes: readonly string[];
  /** Token expiry, unix seconds: the socket is closed once it passes. */
  readonly exp: number;
  /** From request.cf, for relay choice; null when absent. */
  readonly lat: number | null;
  readonly lon: number | null;
}

/** Parses the identity header the Worker set; null when absent or not of that shape. */
export function readIdentity(req: Request): Identity | null {
  const raw = req.headers.get(IDENTITY_HEADER);
  if (!raw) return null;
  try {
    const v = JSON.parse(raw) as Identity;
    if (typeof v.sub !== 'string' || !Array.isArray(v.homes) || typeof v.exp !== 'number') return null;
    return { sub: v.sub, homes: v.homes.map(String), exp: v.exp, lat: typeof v.lat === 'number' ? v.lat : null, lon: typeof v.lon === 'number' ? v.lon : null };
  } catch {
    return null;
  }
}
