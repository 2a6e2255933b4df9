/**
 * Where the CLI gets what an endpoint needs: an access token, an identity (certificate and
 * device key), the issuer keys it trusts for peers, and the signaling URL.
 *
 * - Explicit: `--token`, `--identity-cert` with `--identity-key` (a private JWK file),
 *   `--trust-jwks` with `--trust-issuer`, `--signaling`. This is how a real deployment runs.
 * - Development (the default): the running local stack (`<dir>/stack.json`, written by
 *   `npm start`) and its dev issuer mint a token and a certificate for `--as <id>`, with a device
 *   key kept in `<dir>/devices/<id>.jwk.json` so the same id keeps the same key.
 *
 * Node only.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, importJWK, type CryptoKey, type JSONWebKeySet, type JWK } from 'jose';
import { createDevIssuer, type DevIssuer } from '../dev/issuer.js';
import { IDENTITY_AUDIENCE, type DeviceIdentity, type Trust } from '../client/identity.js';
import { ENDPOINT_ID_RE } from '../protocol/turn-credentials.js';
import { readStack, type Stack } from './stack.js';

/** Home id of dev tokens unless `--home` says otherwise: the one `npm start` advertises. */
export const DEFAULT_DEV_HOME = 'home-1';

/** A problem with the user's input or files; the message says what to do. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** The access token is well-formed but cannot work (expired, not yet valid); the message says what to do. */
export class TokenProblem extends Error {
  override readonly name = 'TokenProblem';
}

/**
 * Why the service may have refused `token` (it answers every refusal with the same 401): the
 * pre-check's finding, or, for a well-formed token within its lifetime, the remaining causes.
 */
export function explainRejectedToken(token: string, nowMs: number = Date.now()): string {
  try {
    checkAccessToken(token, nowMs);
  } catch (e) {
    return (e as Error).message;
  }
  return 'the token is well-formed and within its lifetime: the service does not trust its issuer, audience or signature (a token of another deployment, or the service has other issuer keys)';
}

/** Access tokens carry this `typ`; identity certificates another (protocol/tokens.ts). */
const IDENTITY_CERT_TYP = 'homelink-identity+jwt';
/** The service accepts tokens up to this far past `exp` (worker/auth.ts clock tolerance). */
const SERVICE_CLOCK_TOLERANCE_S = 30;

const b64urlJson = (part: string): Record<string, unknown> | null => {
  if (!/^[A-Za-z0-9_-]+$/.test(part)) return null;
  try {
    const v: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
};

/**
 * Looks at an access token before it is sent, so that a garbled one and an expired one get
 * different advice (the service answers both with the same 401, on purpose: RFC 6750 §3.1 leaves
 * the detail to the client, and the service never explains refusals). Only the unsigned
 * header and claims are read; the signature is the service's to check. Messages never quote the token.
 *
 * @throws UsageError for something that is not a JWT (or is an identity certificate);
 *   TokenProblem for an expired or not yet valid token.
 */
export function checkAccessToken(token: string, nowMs: number = Date.now()): void {
  const parts = token.split('.');
  const header = parts.length === 3 ? b64urlJson(parts[0]!) : null;
  const claims = header ? b64urlJson(parts[1]!) : null;
  if (!header || !claims) {
    throw new UsageError('the access token is not a JWT (three base64url parts separated by dots): pass the token itself, or @FILE for a file holding it');
  }
  if (header['typ'] === IDENTITY_CERT_TYP) throw new UsageError('the access token given is an identity certificate: pass it as --identity-cert, and the access token as --token');
  const now = nowMs / 1000;
  const exp = claims['exp'];
  if (typeof exp === 'number' && exp + SERVICE_CLOCK_TOLERANCE_S < now) {
    const ago = Math.round((now - exp) / 60);
    throw new TokenProblem(`the access token expired at ${new Date(exp * 1000).toISOString()} (${ago < 120 ? `${ago} min` : `${Math.round(ago / 60)} h`} ago): get a fresh one from your issuer (homelink token for the local stack)`);
  }
  const nbf = claims['nbf'];
  if (typeof nbf === 'number' && nbf - SERVICE_CLOCK_TOLERANCE_S > now) {
    throw new TokenProblem(`the access token is valid only from ${new Date(nbf * 1000).toISOString()}: check this machine's clock`);
  }
}

/** What an endpoint needs to connect. */
export interface EndpointCredentials {
  readonly endpointId: string;
  readonly signalingUrl: string;
  readonly token: string;
  readonly identity: DeviceIdentity;
  readonly trust: Trust;
  /** The local stack, when running in development mode. */
  readonly stack: Stack | null;
}

export interface CredentialFlags {
  readonly as?: string;
  readonly home?: string[];
  readonly token?: string;
  readonly 'identity-cert'?: string;
  readonly 'identity-key'?: string;
  readonly 'trust-jwks'?: string;
  readonly 'trust-issuer'?: string;
  readonly signaling?: string;
}

async function readText(file: string, what: string): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch {
    throw new UsageError(`cannot read ${what} file ${file}: check the path`);
  }
}

async function readJson<T>(file: string, what: string): Promise<T> {
  const t = await readText(file, what);
  try {
    return JSON.parse(t) as T;
  } catch {
    throw new UsageError(`${what} file ${file} is not JSON`);
  }
}

/** Loads or creates the device key of `id` under `<dir>/devices/` (private JWK, mode 0600). */
export async function devDeviceKey(dir: string, id: string): Promise<{ privateKey: CryptoKey; publicJwk: JWK }> {
  const file = join(dir, 'devices', `${id}.jwk.json`);
  try {
    const jwk = JSON.parse(await readFile(file, 'utf8')) as JWK;
    const privateKey = (await importJWK(jwk, 'ES256')) as CryptoKey;
    return { privateKey, publicJwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } as JWK };
  } catch {
    // Extractable so it can be kept on disk (development only; a device keeps its key in its keystore).
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    await mkdir(join(dir, 'devices'), { recursive: true, mode: 0o700 });
    await writeFile(file, JSON.stringify(await exportJWK(privateKey)), { mode: 0o600 });
    const pub = await exportJWK(publicKey);
    return { privateKey, publicJwk: { kty: pub.kty, crv: pub.crv, x: pub.x, y: pub.y } as JWK };
  }
}

/** The dev issuer of the running local stack. */
export async function stackIssuer(dir: string): Promise<{ stack: Stack; issuer: DevIssuer }> {
  const stack = await readStack(dir);
  return { stack, issuer: await createDevIssuer({ dir: stack.issuerDir }) };
}

/**
 * Resolves the credentials for an endpoint command.
 *
 * @throws UsageError with what to do when something is missing.
 */
export async function resolveCredentials(flags: CredentialFlags, dir: string, defaultId: string): Promise<EndpointCredentials> {
  const id = flags.as ?? defaultId;
  if (!ENDPOINT_ID_RE.test(id)) throw new UsageError(`--as must be an endpoint id (letters, digits and ._~-, up to 128)`);
  if (flags.token) {
    const missing = (['identity-cert', 'identity-key', 'trust-jwks', 'trust-issuer', 'signaling'] as const).filter((k) => !flags[k]);
    if (missing.length > 0) throw new UsageError(`with --token also pass ${missing.map((m) => `--${m}`).join(', ')}`);
    const jwk = await readJson<JWK>(flags['identity-key']!, 'identity key');
    if (typeof jwk.d !== 'string') throw new UsageError('--identity-key must be a private JWK (with "d")');
    const privateKey = (await importJWK(jwk, 'ES256')) as CryptoKey;
    const jwks = await readJson<JSONWebKeySet>(flags['trust-jwks']!, 'trust JWKS');
    if (!Array.isArray(jwks.keys)) throw new UsageError('--trust-jwks must be a JWKS file ({"keys": [...]})');
    const token = flags.token.startsWith('@') ? await readText(flags.token.slice(1), 'token') : flags.token;
    checkAccessToken(token);
    return {
      endpointId: id,
      signalingUrl: flags.signaling!,
      token,
      identity: { certificate: await readText(flags['identity-cert']!, 'identity certificate'), privateKey },
      trust: { issuer: flags['trust-issuer']!, jwks, audience: IDENTITY_AUDIENCE },
      stack: null,
    };
  }
  const { stack, issuer } = await stackIssuer(dir);
  const key = await devDeviceKey(dir, id);
  const token = await issuer.accessToken({ sub: id, homes: flags.home && flags.home.length > 0 ? flags.home : [DEFAULT_DEV_HOME] });
  const certificate = await issuer.identityCertificate({ sub: id, publicJwk: key.publicJwk });
  return {
    endpointId: id,
    signalingUrl: flags.signaling ?? stack.signalingUrl,
    token,
    identity: { certificate, privateKey: key.privateKey },
    trust: { issuer: issuer.issuer, jwks: issuer.publicJwks as JSONWebKeySet, audience: issuer.peerAudience },
    stack,
  };
}
