/**
 * The development issuer: signs the two token types of protocol/tokens.ts for local runs and
 * tests, with the same claims and headers a production issuer uses.
 *
 * - access tokens (`typ: homelink-access+jwt`, aud `homelink-signaling`) for the signaling service;
 * - identity certificates (`typ: homelink-identity+jwt`, aud `homelink-peer`) binding an
 *   endpoint id to its device public key (`cnf.jwk`, RFC 7800), shown to peers.
 *
 * The ES256 signing key is created on first use and, when a directory is given, persisted there
 * as a private JWK (the folder is git-ignored), so a restarted stack keeps trusting old tokens.
 * Node only: it touches the file system.
 */
import { mkdir, readFile, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import {
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
  SignJWT,
  type CryptoKey,
  type JWK,
} from 'jose';
import { ACCESS_TOKEN_TYP, IDENTITY_CERT_TYP, MAX_HOMES } from '../protocol/tokens.js';
import { ENDPOINT_ID_RE } from '../protocol/turn-credentials.js';
import type { RelayEntry, WorkerVars } from '../worker/config.js';

/** `iss` of every dev token. */
export const DEV_ISSUER = 'homelink-dev';
/** `aud` of access tokens: the signaling service. */
export const DEV_AUDIENCE = 'homelink-signaling';
/** `aud` of identity certificates: peers (matches client/identity.ts IDENTITY_AUDIENCE). */
export const DEV_PEER_AUDIENCE = 'homelink-peer';
/** Access tokens are short-lived: an hour covers a dev session; clients refresh by asking again. */
export const DEFAULT_ACCESS_TTL_SECONDS = 3600;
/** Identity certificates name a device for a day in dev; production would use weeks with rotation. */
export const DEFAULT_IDENTITY_TTL_SECONDS = 86_400;
/** File name of the persisted private key inside the issuer directory. */
export const KEY_FILE = 'signing-key.jwk.json';

/** A development token issuer. */
export interface DevIssuer {
  /** `iss` claim of every token ('homelink-dev'). */
  readonly issuer: string;
  /** `aud` of access tokens ('homelink-signaling'). */
  readonly audience: string;
  /** `aud` of identity certificates ('homelink-peer'). */
  readonly peerAudience: string;
  /** The public verification key set (one ES256 key with `kid`). */
  readonly publicJwks: { keys: JWK[] };
  /** Signs an access token for endpoint `sub` in `homes`. */
  accessToken(o: { sub: string; homes: string[]; ttlSeconds?: number }): Promise<string>;
  /** Signs an identity certificate binding `sub` to its device public key. */
  identityCertificate(o: { sub: string; publicJwk: JWK; ttlSeconds?: number }): Promise<string>;
}

/** Bad input to the dev issuer (a caller bug, not a wire failure). */
export class DevIssuerError extends Error {
  override readonly name = 'DevIssuerError';
}

async function loadOrCreateKey(dir: string | undefined): Promise<JWK> {
  if (dir !== undefined) {
    try {
      const jwk = JSON.parse(await readFile(join(dir, KEY_FILE), 'utf8')) as JWK;
      if (jwk.kty === 'EC' && jwk.crv === 'P-256' && typeof jwk.d === 'string') return jwk;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new DevIssuerError(`cannot read the dev signing key in ${dir}`, { cause: e });
      }
    }
  }
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  const kid = await calculateJwkThumbprint(jwk);
  const full: JWK = { ...jwk, kid, alg: 'ES256', use: 'sig' };
  if (dir !== undefined) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // Write then rename so a concurrent starter never reads half a key.
    const tmp = join(dir, `${KEY_FILE}.${process.pid}.tmp`);
    await writeFile(tmp, JSON.stringify(full), { mode: 0o600 });
    await rename(tmp, join(dir, KEY_FILE));
  }
  return full;
}

const checkTtl = (ttl: number): number => {
  if (!Number.isInteger(ttl) || ttl <= 0 || ttl > 366 * 86_400) throw new DevIssuerError('ttlSeconds must be a positive integer');
  return ttl;
};

const checkSub = (sub: string): string => {
  if (!ENDPOINT_ID_RE.test(sub)) throw new DevIssuerError('sub is not a valid endpoint id');
  return sub;
};

/**
 * Creates (or reopens) the development issuer.
 *
 * @param opts.dir where the signing key is persisted (e.g. `.dev/issuer`); in memory when absent.
 * @example
 * const issuer = await createDevIssuer({ dir: '.dev/issuer' });
 * const token = await issuer.accessToken({ sub: 'app-1', homes: ['home-1'] });
 */
export async function createDevIssuer(opts: { dir?: string } = {}): Promise<DevIssuer> {
  const privateJwk = await loadOrCreateKey(opts.dir);
  const kid = privateJwk.kid ?? (await calculateJwkThumbprint(privateJwk));
  const key = (await importJWK({ ...privateJwk, kid }, 'ES256')) as CryptoKey;
  const { d: _d, ...pub } = privateJwk;
  const publicJwk: JWK = { ...pub, kid, alg: 'ES256', use: 'sig' };

  const sign = (payload: Record<string, unknown>, typ: string, aud: string, sub: string, ttl: number): Promise<string> =>
    new SignJWT(payload)
      .setProtectedHeader({ alg: 'ES256', typ, kid })
      .setIssuer(DEV_ISSUER)
      .setAudience(aud)
      .setSubject(sub)
      .setIssuedAt()
      .setNotBefore('0s')
      .setExpirationTime(`${ttl}s`)
      .sign(key);

  return {
    issuer: DEV_ISSUER,
    audience: DEV_AUDIENCE,
    peerAudience: DEV_PEER_AUDIENCE,
    publicJwks: { keys: [publicJwk] },
    async accessToken({ sub, homes, ttlSeconds = DEFAULT_ACCESS_TTL_SECONDS }) {
      if (!Array.isArray(homes) || homes.length > MAX_HOMES) throw new DevIssuerError(`homes must list at most ${MAX_HOMES} ids`);
      return sign({ homes: [...homes] }, ACCESS_TOKEN_TYP, DEV_AUDIENCE, checkSub(sub), checkTtl(ttlSeconds));
    },
    async identityCertificate({ sub, publicJwk: devicePublic, ttlSeconds = DEFAULT_IDENTITY_TTL_SECONDS }) {
      if (typeof devicePublic !== 'object' || devicePublic === null || 'd' in devicePublic) {
        throw new DevIssuerError('publicJwk must be a public key');
      }
      return sign({ cnf: { jwk: devicePublic } }, IDENTITY_CERT_TYP, DEV_PEER_AUDIENCE, checkSub(sub), checkTtl(ttlSeconds));
    },
  };
}

/** Options for `devWorkerVars`; unset timings fall back to the worker's defaults. */
export interface DevWorkerVarsOptions {
  /** Shared TURN REST secret (the relay is started with the same one). */
  readonly turnSecret: string;
  readonly relays: readonly RelayEntry[];
  readonly turnTtlSeconds?: number;
  readonly offlineWaitMs?: number;
  readonly requestTimeoutMs?: number;
  readonly sessionTtlSeconds?: number;
}

/**
 * The worker vars for a local run that trusts `issuer`: feed them to Miniflare `bindings`, to
 * `wrangler dev --var`, or write them to `.dev.vars`.
 *
 * @example
 * const vars = devWorkerVars(issuer, { turnSecret, relays: [{ id: 'local', region: 'local', lat: 0, lon: 0,
 *   host: '127.0.0.1', udpPort: 3478, tcpPort: 3478, tlsPort: 5349 }] });
 */
export function devWorkerVars(issuer: DevIssuer, opts: DevWorkerVarsOptions): Record<string, string> & WorkerVars {
  const vars: Record<string, string> = {
    JWT_ISSUER: issuer.issuer,
    JWT_AUDIENCE: issuer.audience,
    JWKS: JSON.stringify(issuer.publicJwks),
    TURN_SECRETS: opts.turnSecret,
    RELAYS: JSON.stringify(opts.relays),
  };
  if (opts.turnTtlSeconds !== undefined) vars['TURN_TTL_SECONDS'] = String(opts.turnTtlSeconds);
  if (opts.offlineWaitMs !== undefined) vars['OFFLINE_WAIT_MS'] = String(opts.offlineWaitMs);
  if (opts.requestTimeoutMs !== undefined) vars['REQUEST_TIMEOUT_MS'] = String(opts.requestTimeoutMs);
  if (opts.sessionTtlSeconds !== undefined) vars['SESSION_TTL_SECONDS'] = String(opts.sessionTtlSeconds);
  return vars;
}

/**
 * Formats vars as a `.dev.vars` file. Values are single-quoted (dotenv takes them literally), which
 * suits JSON; a value holding a quote or a line break cannot be written that way and is refused.
 */
export function formatDevVars(vars: Record<string, string>): string {
  return (
    Object.entries(vars)
      .map(([k, v]) => {
        if (/['\r\n]/.test(v)) throw new DevIssuerError(`var ${k} cannot be written to .dev.vars`);
        return `${k}='${v}'`;
      })
      .join('\n') + '\n'
  );
}
