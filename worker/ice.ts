/**
 * ICE servers for one endpoint: STUN and TURN URLs (UDP, TCP and TLS, RFC 7064/7065 URI forms)
 * of at most two relays, nearest first, with a TURN REST-API credential minted for that endpoint.
 */
import type { IceServer } from '../protocol/messages.js';
import { mintTurnCredential } from '../protocol/turn-credentials.js';
import { MAX_RELAYS_PER_SESSION, type Config, type RelayEntry } from './config.js';

/** Where a request came from, from `request.cf`; null when the platform gave no location. */
export interface Location {
  readonly lat: number;
  readonly lon: number;
}

/** Reads latitude/longitude from `request.cf`; anything missing or odd yields null. */
export function locationFromCf(cf: unknown): Location | null {
  if (typeof cf !== 'object' || cf === null) return null;
  const o = cf as Record<string, unknown>;
  const lat = Number(o['latitude']);
  const lon = Number(o['longitude']);
  if (o['latitude'] === undefined || o['longitude'] === undefined) return null;
  if (!Number.isFinite(lat) || !Number.isFinite(lon) || Math.abs(lat) > 90 || Math.abs(lon) > 180) return null;
  return { lat, lon };
}

const rad = (d: number): number => (d * Math.PI) / 180;

/** Great-circle distance in km (haversine); plenty precise for ranking relays. */
export function distanceKm(a: Location, b: Location): number {
  const dLat = rad(b.lat - a.lat);
  const dLon = rad(b.lon - a.lon);
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(rad(a.lat)) * Math.cos(rad(b.lat)) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371 * Math.asin(Math.min(1, Math.sqrt(h)));
}

/** At most two relays, nearest to `loc` first; config order when the location is unknown. */
export function chooseRelays(relays: readonly RelayEntry[], loc: Location | null): RelayEntry[] {
  if (loc === null) return relays.slice(0, MAX_RELAYS_PER_SESSION);
  return relays
    .map((r, i) => ({ r, i, d: distanceKm(loc, r) }))
    .sort((x, y) => x.d - y.d || x.i - y.i)
    .slice(0, MAX_RELAYS_PER_SESSION)
    .map((x) => x.r);
}

const hostPart = (h: string): string => (h.includes(':') && !h.startsWith('[') ? `[${h}]` : h);

/** The ICE server entries for one relay, sharing one credential. */
export function relayIceServers(r: RelayEntry, cred: { username: string; credential: string }): IceServer[] {
  const host = hostPart(r.host);
  const tlsHost = hostPart(r.tlsHost ?? r.host);
  return [
    { urls: [`stun:${host}:${r.udpPort}`] },
    {
      urls: [
        `turn:${host}:${r.udpPort}?transport=udp`,
        `turn:${host}:${r.tcpPort}?transport=tcp`,
        `turns:${tlsHost}:${r.tlsPort}?transport=tcp`,
      ],
      username: cred.username,
      credential: cred.credential,
    },
  ];
}

/**
 * Mints the ICE servers for `endpointId` at `nowMs` (first TURN secret signs).
 *
 * @example
 * const iceServers = await iceServersFor(config, 'hub-1', locationFromCf(request.cf), Date.now());
 */
export async function iceServersFor(config: Config, endpointId: string, loc: Location | null, nowMs: number): Promise<IceServer[]> {
  const chosen = chooseRelays(config.relays, loc);
  if (chosen.length === 0) return [];
  const cred = await mintTurnCredential(config.turnSecrets[0]!, endpointId, config.turnTtlSeconds, Math.floor(nowMs / 1000));
  return chosen.flatMap((r) => relayIceServers(r, cred));
}
