/**
 * Access-token verification at the edge, before any Durable Object wakes (RFC 8725).
 *
 * The token rides in `Sec-WebSocket-Protocol` (see protocol/messages.ts `wsProtocols`): browsers
 * cannot set headers on a WebSocket, and a token in the URL would end up in access logs. Keys
 * come from configuration only: the JWKS var, optionally a JWKS URL (fetched and cached by jose),
 * and the HS256 secret only when DEV_HS256_SECRET is set. A token's `kid` merely selects among
 * those keys; its `alg` must be one the verifier pinned.
 */
import { createLocalJWKSet, createRemoteJWKSet, type JWTVerifyGetKey } from 'jose';
import { tokenFromProtocolHeader } from '../protocol/messages.js';
import { ASYMMETRIC_ALGORITHMS, DEV_SYMMETRIC_ALGORITHM, TokenError, verifyAccessToken, type AccessClaims } from '../protocol/tokens.js';
import type { Config } from './config.js';

/** Remote JWKS are refetched at most this often when an unknown `kid` shows up (jose's cooldown). */
export const JWKS_COOLDOWN_MS = 30_000;
/** A remote JWKS is considered fresh this long (jose's cache max age): keys rotate over days. */
export const JWKS_CACHE_MAX_AGE_MS = 10 * 60_000;

/**
 * Verified tokens are remembered briefly, since an endpoint presents the same token for its
 * presence socket and for every room it joins. Bounded so memory stays small (~2.5 MB).
 */
export const VERIFIED_CACHE_ENTRIES = 4096;
/** A key withdrawn from a remote JWKS stops being honoured through the cache within this time. */
export const VERIFIED_CACHE_MS = 60_000;

/** Verifies tokens against one configuration. Built once per isolate. */
export interface Verifier {
  verify(token: string): Promise<AccessClaims>;
}

/**
 * Builds the verifier for `config`.
 *
 * @example
 * const claims = await makeVerifier(config).verify(token); // throws TokenError
 */
export function makeVerifier(config: Config): Verifier {
  const local = config.jwks.keys.length > 0 ? createLocalJWKSet({ keys: [...config.jwks.keys] }) : null;
  const remote = config.jwksUrl
    ? createRemoteJWKSet(new URL(config.jwksUrl), { cooldownDuration: JWKS_COOLDOWN_MS, cacheMaxAge: JWKS_CACHE_MAX_AGE_MS })
    : null;
  const hs = config.devHs256Secret ? new TextEncoder().encode(config.devHs256Secret) : null;
  const algorithms: string[] = [...ASYMMETRIC_ALGORITHMS, ...(hs ? [DEV_SYMMETRIC_ALGORITHM] : [])];
  const getKey: JWTVerifyGetKey = async (header, token) => {
    if (header.alg === DEV_SYMMETRIC_ALGORITHM) {
      // Only reachable when HS256 is in `algorithms`, i.e. the dev secret is set.
      if (hs) return hs;
      throw new TokenError('invalid', 'algorithm not allowed');
    }
    if (local) {
      try {
        return await local(header, token);
      } catch (e) {
        if (!remote) throw e;
      }
    }
    if (remote) return remote(header, token);
    throw new TokenError('invalid', 'no key');
  };
  // Only successes are kept; a hit is re-checked against the clock (exp) and its own age.
  const verified = new Map<string, { claims: AccessClaims; until: number }>();
  return {
    async verify(token) {
      const now = Date.now();
      const hit = verified.get(token);
      if (hit && now < hit.until && now < hit.claims.exp * 1000) return hit.claims;
      if (hit) verified.delete(token);
      const claims = await verifyAccessToken(token, getKey, { issuer: config.issuer, audience: config.audience, algorithms });
      if (verified.size >= VERIFIED_CACHE_ENTRIES) verified.delete(verified.keys().next().value!);
      verified.set(token, { claims, until: now + VERIFIED_CACHE_MS });
      return claims;
    },
  };
}

/** The token from the upgrade request, or null. Only ever read from the subprotocol header. */
export function tokenFromRequest(req: Request): string | null {
  return tokenFromProtocolHeader(req.headers.get('Sec-WebSocket-Protocol'));
}

export { TokenError };
