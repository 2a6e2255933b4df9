/**
 * The two token types our issuer signs, and their verification (RFC 8725).
 *
 * - Access token (`typ: homelink-access+jwt`, `aud` = the signaling service):
 *   lets an endpoint use the signaling service. `sub` is the endpoint id,
 *   `homes` the home/group ids it belongs to (authorization is decided from
 *   these signed claims only).
 * - Identity certificate (`typ: homelink-identity+jwt`, `aud` = peers):
 *   names an endpoint (`sub`) and its device public key (`cnf.jwk`, RFC 7800).
 *   It grants nothing at the service and is safe to show to a peer.
 *
 * Explicit `typ` plus distinct audiences mean neither can stand in for the other.
 * Algorithms are pinned by the verifier, never taken from the token; `kid`
 * only selects among keys the verifier was configured with.
 */
import { jwtVerify, type JWTPayload, type JWTVerifyGetKey, type CryptoKey, type JWK } from 'jose';
import { ENDPOINT_ID_RE } from './turn-credentials.js';

export const ACCESS_TOKEN_TYP = 'homelink-access+jwt';
export const IDENTITY_CERT_TYP = 'homelink-identity+jwt';

/** Asymmetric algorithms accepted in production. */
export const ASYMMETRIC_ALGORITHMS = ['ES256', 'EdDSA'] as const;
/** Added only when a deployment explicitly enables HS256 for local development. */
export const DEV_SYMMETRIC_ALGORITHM = 'HS256';

/** Clock skew tolerated on exp/nbf: small, devices have NTP. */
export const CLOCK_TOLERANCE_SECONDS = 30;

/** Upper bound on a compact JWT we are willing to parse at all. */
export const MAX_TOKEN_LENGTH = 4096;
/** Upper bound on the number of homes a token may list. */
export const MAX_HOMES = 64;

export interface AccessClaims {
  readonly sub: string;
  readonly homes: readonly string[];
  readonly exp: number;
}

export interface IdentityClaims {
  readonly sub: string;
  readonly jwk: JWK;
  readonly exp: number;
}

export class TokenError extends Error {
  override readonly name = 'TokenError';
  constructor(
    /** Stable reason, safe to log: never contains the token. */
    readonly reason: 'malformed' | 'invalid' | 'expired' | 'claims',
    message: string,
  ) {
    super(message);
  }
}

export interface VerifyOptions {
  readonly issuer: string;
  readonly audience: string;
  /** Defaults to ES256 + EdDSA. Pass HS256 only for explicitly configured dev setups. */
  readonly algorithms?: readonly string[];
  readonly currentDate?: Date;
}

export type KeySource = JWTVerifyGetKey | CryptoKey | Uint8Array;

const HOME_RE = /^[A-Za-z0-9._~-]{1,128}$/;

async function verifyTyped(
  token: string,
  key: KeySource,
  typ: string,
  opts: VerifyOptions,
): Promise<JWTPayload> {
  if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
    throw new TokenError('malformed', 'token missing or too long');
  }
  try {
    const { payload } = await jwtVerify(token, key as JWTVerifyGetKey, {
      algorithms: [...(opts.algorithms ?? ASYMMETRIC_ALGORITHMS)],
      issuer: opts.issuer,
      audience: opts.audience,
      typ,
      clockTolerance: CLOCK_TOLERANCE_SECONDS,
      requiredClaims: ['iss', 'aud', 'exp', 'nbf', 'sub'],
      ...(opts.currentDate ? { currentDate: opts.currentDate } : {}),
    });
    return payload;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ERR_JWT_EXPIRED') throw new TokenError('expired', 'token expired');
    if (code === 'ERR_JWS_INVALID' || code === 'ERR_JWT_INVALID') throw new TokenError('malformed', 'token malformed');
    // Claim, signature, algorithm and key failures all look the same from outside.
    throw new TokenError('invalid', `token rejected (${code ?? 'error'})`);
  }
}

/**
 * The `sub` claim as an endpoint id. Checked as a string first: `RegExp.test` turns its argument
 * into text, so a numeric `sub` (12345) or an array (["hub-1"]) would otherwise pass as an id
 * (RFC 7519 §4.1.2: `sub` is a StringOrURI).
 */
function endpointSub(p: JWTPayload): string {
  const sub: unknown = p.sub;
  if (typeof sub !== 'string' || !ENDPOINT_ID_RE.test(sub)) throw new TokenError('claims', 'sub is not a valid endpoint id');
  return sub;
}

/** Verifies an access token and returns its typed claims. Throws TokenError. */
export async function verifyAccessToken(token: string, key: KeySource, opts: VerifyOptions): Promise<AccessClaims> {
  const p = await verifyTyped(token, key, ACCESS_TOKEN_TYP, opts);
  const sub = endpointSub(p);
  const homes = p['homes'];
  if (!Array.isArray(homes) || homes.length > MAX_HOMES || !homes.every((h) => typeof h === 'string' && HOME_RE.test(h))) {
    throw new TokenError('claims', 'homes claim missing or invalid');
  }
  return { sub, homes: homes as string[], exp: p.exp! };
}

/** Verifies an identity certificate and returns the endpoint id and its public key. Throws TokenError. */
export async function verifyIdentityCertificate(
  cert: string,
  key: KeySource,
  opts: VerifyOptions,
): Promise<IdentityClaims> {
  const p = await verifyTyped(cert, key, IDENTITY_CERT_TYP, opts);
  const sub = endpointSub(p);
  const cnf = p['cnf'] as { jwk?: JWK } | undefined;
  const jwk = cnf?.jwk;
  if (!jwk || typeof jwk !== 'object' || typeof jwk.kty !== 'string' || 'd' in jwk) {
    throw new TokenError('claims', 'cnf.jwk missing or not a public key');
  }
  return { sub, jwk, exp: p.exp! };
}
