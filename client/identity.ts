/**
 * Identity binding: the proof that lets each side of a link know it reached the endpoint it meant
 * to, even if the signaling service (or anyone between it and us) is hostile.
 *
 * Every device holds an ES256 key pair. The issuer signs an identity certificate for it: a JWT of
 * `typ: homelink-identity+jwt`, `aud: homelink-peer`, naming the endpoint (`sub`) and its public key
 * (`cnf.jwk`, RFC 7800). During setup each side sends, through the room,
 * `{ kind: 'identity', cert, proof }`, where `proof` is a compact JWS made with the device key over
 *
 *   { v: 1, sid: <session id>, role: <signer's role>, fp: [<signer's DTLS fp>, <peer's DTLS fp as the signer saw it>] }
 *
 * The receiver checks, in order: the certificate against the issuer keys it trusts (else
 * `Unauthorized`); that its `sub` is the peer it dialed or that asked (else `IdentityMismatch`);
 * the signature with `cnf.jwk`; the session id and role; that the second fingerprint is its own
 * certificate's (a rewritten offer/answer shows here); and, once DTLS is up, that the certificate
 * the handshake actually presented hashes to the first fingerprint. Only then does the link open.
 * Portable: jose and WebCrypto only.
 */
import {
  CompactSign,
  compactVerify,
  createLocalJWKSet,
  exportJWK,
  generateKeyPair,
  importJWK,
  type CryptoKey,
  type JSONWebKeySet,
  type JWK,
} from 'jose';
import { verifyIdentityCertificate, TokenError } from '../protocol/tokens.js';
import type { Role } from '../protocol/messages.js';

/** Audience of identity certificates: peers, never the service. */
export const IDENTITY_AUDIENCE = 'homelink-peer';
/** `typ` of the proof JWS, so a proof can never pass as a token of another kind. */
export const PROOF_TYP = 'homelink-proof+jws';
/** Device keys and proofs: ES256 (P-256), supported by WebCrypto everywhere we run. */
export const DEVICE_KEY_ALG = 'ES256';

/** What the endpoint proves itself with: its certificate and the private half of `cnf.jwk`. */
export interface DeviceIdentity {
  /** The identity certificate (compact JWT) from the issuer. */
  readonly certificate: string;
  /** The device's private key; never leaves the device. */
  readonly privateKey: CryptoKey;
}

/** The issuer keys an endpoint trusts for its peers' identity certificates. */
export interface Trust {
  /** `iss` the certificates must carry. */
  readonly issuer: string;
  /**
   * The issuer's public keys (JWKS); `kid` only selects among these. Read once per object: to
   * rotate, pass a new object rather than changing this one in place.
   */
  readonly jwks: JSONWebKeySet;
  /** Defaults to `IDENTITY_AUDIENCE`. */
  readonly audience?: string;
}

/**
 * Generates a device key pair. Send `publicJwk` to the issuer for a certificate; keep `privateKey`.
 *
 * @example
 * ```ts
 * const { privateKey, publicJwk } = await generateDeviceKey();
 * const certificate = await myIssuer.identityCertificate({ sub: 'hub-1', publicJwk });
 * const identity: DeviceIdentity = { certificate, privateKey };
 * ```
 */
export async function generateDeviceKey(): Promise<{ privateKey: CryptoKey; publicJwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair(DEVICE_KEY_ALG, { extractable: false });
  const publicJwk = await exportJWK(publicKey);
  return { privateKey, publicJwk: { kty: publicJwk.kty, crv: publicJwk.crv, x: publicJwk.x, y: publicJwk.y } as JWK };
}

/** The statement each side signs. */
export interface ProofClaims {
  readonly v: 1;
  readonly sid: string;
  readonly role: Role;
  /** [signer's own DTLS fingerprint, the peer's DTLS fingerprint as the signer received it]. */
  readonly fp: readonly [string, string];
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Signs the proof for our side of a session. */
export async function signProof(identity: DeviceIdentity, claims: Omit<ProofClaims, 'v'>): Promise<string> {
  const body: ProofClaims = { v: 1, sid: claims.sid, role: claims.role, fp: [claims.fp[0], claims.fp[1]] };
  return new CompactSign(enc.encode(JSON.stringify(body)))
    .setProtectedHeader({ alg: DEVICE_KEY_ALG, typ: PROOF_TYP })
    .sign(identity.privateKey);
}

/** Result of checking a peer's identity message. Failures are values: the caller maps them to errors. */
export type PeerVerdict =
  | { readonly ok: true; readonly sub: string; readonly peerFingerprint: string }
  | { readonly ok: false; readonly code: 'Unauthorized' | 'IdentityMismatch'; readonly message: string };

export interface VerifyPeerInput {
  readonly cert: string;
  readonly proof: string;
  readonly trust: Trust;
  /** The endpoint id we dialed, or that asked us. */
  readonly expectedSub: string;
  readonly sessionId: string;
  /** The peer's role in the session. */
  readonly peerRole: Role;
  /** Our own DTLS fingerprint (from our certificate). */
  readonly localFingerprint: string;
  /** The peer's fingerprint as it reached us in its SDP. */
  readonly remoteSdpFingerprint: string;
  readonly now?: Date;
}

const mismatch = (message: string): PeerVerdict => ({ ok: false, code: 'IdentityMismatch', message });

/**
 * Imported keys, so a dial does not import the same issuer and peer keys again: jose's local JWKS
 * keeps the issuer keys it imported, one per `trust.jwks` object (a rotated JWKS is a new object,
 * and jose copies the set when it is made); peers' device keys are kept by their JWK (as the
 * verified certificate carries it), the most recent `PEER_KEYS_KEPT`. Importing both took about a
 * millisecond of the event loop per dial here (docs/BENCHMARKS.md, "The native dial's event loop").
 */
const issuerKeys = new WeakMap<JSONWebKeySet, ReturnType<typeof createLocalJWKSet>>();
const PEER_KEYS_KEPT = 64;
const peerKeys = new Map<string, Promise<CryptoKey | Uint8Array>>();

function issuerKeySet(jwks: JSONWebKeySet): ReturnType<typeof createLocalJWKSet> {
  let set = issuerKeys.get(jwks);
  if (!set) issuerKeys.set(jwks, (set = createLocalJWKSet(jwks)));
  return set;
}

function peerKey(jwk: JWK): Promise<CryptoKey | Uint8Array> {
  const id = JSON.stringify(jwk);
  const hit = peerKeys.get(id);
  if (hit) {
    peerKeys.delete(id);
    peerKeys.set(id, hit);
    return hit;
  }
  const key = importJWK(jwk, DEVICE_KEY_ALG);
  peerKeys.set(id, key);
  key.catch(() => peerKeys.delete(id));
  if (peerKeys.size > PEER_KEYS_KEPT) peerKeys.delete(peerKeys.keys().next().value!);
  return key;
}

/**
 * Checks a peer's `{cert, proof}` against our trust and what we see of the session.
 * Never throws: hostile input yields a verdict. The DTLS-presented certificate is compared
 * afterwards with `peerFingerprint` (see `checkPresentedFingerprint`).
 */
export async function verifyPeer(input: VerifyPeerInput): Promise<PeerVerdict> {
  let claims: { sub: string; jwk: JWK };
  try {
    claims = await verifyIdentityCertificate(input.cert, issuerKeySet(input.trust.jwks), {
      issuer: input.trust.issuer,
      audience: input.trust.audience ?? IDENTITY_AUDIENCE,
      algorithms: ['ES256', 'EdDSA'],
      ...(input.now ? { currentDate: input.now } : {}),
    });
  } catch (e) {
    const reason = e instanceof TokenError ? e.reason : 'invalid';
    return { ok: false, code: 'Unauthorized', message: `peer identity certificate not trusted (${reason})` };
  }
  if (claims.sub !== input.expectedSub) return mismatch('peer certificate names another endpoint');
  let payload: Uint8Array;
  try {
    if (claims.jwk.kty !== 'EC' || claims.jwk.crv !== 'P-256') return mismatch('peer key is not a P-256 key');
    const key = await peerKey(claims.jwk);
    const r = await compactVerify(input.proof, key, { algorithms: [DEVICE_KEY_ALG] });
    if (r.protectedHeader.typ !== PROOF_TYP) return mismatch('proof has the wrong type');
    payload = r.payload;
  } catch {
    return mismatch('proof signature does not verify with the certified key');
  }
  let body: unknown;
  try {
    body = JSON.parse(dec.decode(payload));
  } catch {
    return mismatch('proof payload malformed');
  }
  const b = body as Partial<ProofClaims> | null;
  if (!b || typeof b !== 'object' || b.v !== 1 || !Array.isArray(b.fp) || b.fp.length !== 2 || !b.fp.every((x) => typeof x === 'string')) {
    return mismatch('proof payload malformed');
  }
  if (b.sid !== input.sessionId) return mismatch('proof is for another session');
  if (b.role !== input.peerRole) return mismatch('proof is for another role');
  if (b.fp[0] !== input.remoteSdpFingerprint) return mismatch('peer signed a DTLS fingerprint other than the one in its SDP');
  if (b.fp[1] !== input.localFingerprint) return mismatch('peer saw a DTLS fingerprint other than ours');
  return { ok: true, sub: claims.sub, peerFingerprint: b.fp[0] };
}

/** The final binding: the certificate DTLS actually presented must be the one the peer signed. */
export function checkPresentedFingerprint(signed: string, presented: string | null): PeerVerdict | null {
  if (presented === null) return mismatch('DTLS handshake presented no certificate');
  return presented === signed ? null : mismatch('DTLS certificate differs from the signed fingerprint');
}
