/**
 * TURN REST-API credentials ("A REST API for Access to TURN Services",
 * draft-uberti-behave-turn-rest-00), the format coturn's `use-auth-secret`
 * accepts:
 *
 *   username = "<expiry-unix-seconds>:<endpoint id>"
 *   password = base64(HMAC-SHA1(shared secret, username))
 *
 * The signaling service mints them and every relay verifies them with nothing
 * but the shared secret, so relays hold no per-user state. Portable: WebCrypto only.
 */

/** Longest endpoint id we mint or accept; keeps USERNAME well under RFC 8489's 513-byte limit. */
export const MAX_ENDPOINT_ID_LENGTH = 128;

export interface TurnUsername {
  readonly expiresAt: number; // unix seconds
  readonly endpointId: string;
}

const USERNAME_RE = /^(\d{1,12}):([A-Za-z0-9._~-]{1,128})$/;

/** Endpoint ids are URL- and username-safe: letters, digits and `._~-`. */
export const ENDPOINT_ID_RE = /^[A-Za-z0-9._~-]{1,128}$/;

export function formatTurnUsername(u: TurnUsername): string {
  return `${Math.floor(u.expiresAt)}:${u.endpointId}`;
}

/** Parses a REST-API username; returns null for anything not of that exact form. */
export function parseTurnUsername(username: string): TurnUsername | null {
  const m = USERNAME_RE.exec(username);
  if (!m) return null;
  return { expiresAt: Number(m[1]), endpointId: m[2]! };
}

const encoder = new TextEncoder();

function toBase64(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** password = base64(HMAC-SHA1(secret, username)). */
export async function turnPassword(secret: string, username: string): Promise<string> {
  const key = await crypto.subtle.importKey(
    'raw',
    encoder.encode(secret),
    { name: 'HMAC', hash: 'SHA-1' },
    false,
    ['sign'],
  );
  const mac = await crypto.subtle.sign('HMAC', key, encoder.encode(username));
  return toBase64(new Uint8Array(mac));
}

export interface TurnCredential {
  readonly username: string;
  readonly credential: string;
  readonly expiresAt: number;
}

/** Mints a credential for `endpointId` valid for `ttlSeconds` from `nowSeconds`. */
export async function mintTurnCredential(
  secret: string,
  endpointId: string,
  ttlSeconds: number,
  nowSeconds: number,
): Promise<TurnCredential> {
  if (!ENDPOINT_ID_RE.test(endpointId)) throw new RangeError('endpoint id is not of the allowed form');
  const expiresAt = Math.floor(nowSeconds + ttlSeconds);
  const username = formatTurnUsername({ expiresAt, endpointId });
  return { username, credential: await turnPassword(secret, username), expiresAt };
}
