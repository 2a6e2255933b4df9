/**
 * Long-term credentials for the relay (RFC 8489 §9.2) with TURN REST-API
 * usernames (protocol/turn-credentials.ts): `<expiry-unix>:<endpoint id>`,
 * password = base64(HMAC-SHA1(secret, username)), key = MD5(username ":" realm ":" password).
 *
 * Nonces are stateless (RFC 8489 §9.2.2 leaves their form to the server):
 *   nonce = hex(issued-at seconds, 8 digits) || hex(HMAC-SHA1(nonceKey, issued-at || client ip))[0..24]
 * so any process holding the secrets can check one, a client cannot forge or
 * predict one, a nonce from one client address is stale at another, and it expires.
 *
 * Everything is synchronous: hashes are injected (node:crypto in the Node driver).
 */
import { parseTurnUsername } from '../../protocol/turn-credentials.js';
import { longTermKey, type HmacFn } from '../../protocol/stun/message.js';

/** Synchronous primitives the server needs; the Node driver passes node:crypto. */
export interface TurnCrypto {
  readonly hmacSha1: HmacFn;
  readonly md5: (data: Uint8Array) => Uint8Array;
}

const utf8 = new TextEncoder();

function base64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]!);
  return btoa(s);
}

function hex(bytes: Uint8Array, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += bytes[i]!.toString(16).padStart(2, '0');
  return s;
}

/** Why a username was refused before its integrity was checked. */
export type UsernameRefusal = 'malformed' | 'expired';

/** Parses and checks a REST username against `nowSeconds`. */
export function checkRestUsername(username: string, nowSeconds: number): { ok: true } | { ok: false; reason: UsernameRefusal } {
  const u = parseTurnUsername(username);
  if (!u) return { ok: false, reason: 'malformed' };
  if (u.expiresAt < nowSeconds) return { ok: false, reason: 'expired' };
  return { ok: true };
}

/**
 * Long-term keys for `username`, one per configured secret (rotation: any may match).
 * key = MD5(username ":" realm ":" base64(HMAC-SHA1(secret, username))).
 */
export function longTermKeys(crypto: TurnCrypto, secrets: readonly Uint8Array[], username: string, realm: string): Uint8Array[] {
  const user = utf8.encode(username);
  return secrets.map((secret) => {
    const password = base64(crypto.hmacSha1(secret, user));
    return longTermKey(crypto.md5, username, realm, password);
  });
}

/** Stateless nonce mint/check (see the module comment). */
export class NonceBook {
  private readonly key: Uint8Array;

  /**
   * @param crypto hashes
   * @param secrets the relay's secrets; the nonce key is derived from the first, so all
   *   processes and instances sharing the secrets accept each other's nonces
   * @param lifetimeSeconds how long a nonce stays valid
   */
  constructor(
    private readonly crypto: TurnCrypto,
    secrets: readonly Uint8Array[],
    private readonly lifetimeSeconds: number,
  ) {
    if (secrets.length === 0) throw new RangeError('at least one secret is required');
    this.key = crypto.hmacSha1(secrets[0]!, utf8.encode('homelink-relay nonce key v1'));
  }

  private mac(issued: number, clientIp: string): string {
    return hex(this.crypto.hmacSha1(this.key, utf8.encode(`${issued}|${clientIp}`)), 12);
  }

  /** A fresh nonce for `clientIp` at `nowSeconds`. */
  mint(nowSeconds: number, clientIp: string): string {
    const issued = Math.floor(nowSeconds) >>> 0;
    return issued.toString(16).padStart(8, '0') + this.mac(issued, clientIp);
  }

  /** True when `nonce` was minted by us for `clientIp` and has not expired. */
  check(nonce: string, nowSeconds: number, clientIp: string): boolean {
    if (nonce.length !== 32 || !/^[0-9a-f]{32}$/.test(nonce)) return false;
    const issued = parseInt(nonce.slice(0, 8), 16);
    if (issued > nowSeconds + 1 || nowSeconds - issued >= this.lifetimeSeconds) return false;
    const expected = this.mac(issued, clientIp);
    let d = 0;
    for (let i = 0; i < 24; i++) d |= expected.charCodeAt(i) ^ nonce.charCodeAt(8 + i);
    return d === 0;
  }
}
