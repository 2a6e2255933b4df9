/**
 * The client side of a STUN/TURN transaction, sans-IO: signing a request with
 * long-term credentials and reading what a response tells the client. Sockets,
 * retransmission (RFC 8489 §6.2.1) and the hashes belong to the caller, so
 * the test client and the benchmark's load generator share this code.
 *
 * The long-term flow (RFC 8489 §9.2.4, RFC 8656 §7.2):
 * 1. send the request without credentials; the server answers 401 with REALM
 *    and NONCE;
 * 2. derive key = MD5(username ":" realm ":" password) ({@link longTermKey})
 *    and resend with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY
 *    ({@link addLongTermAuth});
 * 3. on 438 Stale Nonce, take the new NONCE and resend.
 *
 * Portable: Uint8Array only, hashes injected.
 */
import {
  decodeErrorCode,
  decodeLifetime,
  decodeNonce,
  decodeRealm,
  decodeXorAddress,
  encodeText,
  type TransportAddress,
} from './attributes.js';
import { Attr, type StunClass } from './constants.js';
import { findAttr, type HmacFn, type StunMessage, type StunWriter } from './message.js';

/** What signs a request: the credentials and what the server's last 401/438 said. */
export interface LongTermAuth {
  readonly username: string;
  readonly realm: string;
  readonly nonce: string;
  /** {@link longTermKey} of username, realm and password. */
  readonly key: Uint8Array;
}

/**
 * Appends USERNAME, REALM, NONCE and MESSAGE-INTEGRITY (RFC 8489 §9.2.4) to a
 * request whose other attributes are written; FINGERPRINT, if any, goes after.
 * @example
 * const bytes = addLongTermAuth(new StunWriter(StunMethod.Allocate, StunClass.Request, tid)
 *   .add(Attr.RequestedTransport, encodeRequestedTransport(TRANSPORT_UDP)), auth, hmacSha1).finish();
 */
export function addLongTermAuth(w: StunWriter, auth: LongTermAuth, hmacSha1: HmacFn): StunWriter {
  return w
    .add(Attr.Username, encodeText(auth.username))
    .add(Attr.Realm, encodeText(auth.realm))
    .add(Attr.Nonce, encodeText(auth.nonce))
    .addMessageIntegrity(auth.key, hmacSha1);
}

/** The fields of a response a client acts on; an absent or undecodable attribute is null. */
export interface ResponseFields {
  readonly cls: StunClass;
  readonly method: number;
  /** ERROR-CODE (RFC 8489 §14.8), e.g. 401, 438. */
  readonly code: number | null;
  readonly realm: string | null;
  readonly nonce: string | null;
  /** XOR-RELAYED-ADDRESS (RFC 8656 §14.5). */
  readonly relayed: TransportAddress | null;
  /** XOR-MAPPED-ADDRESS (RFC 8489 §14.2). */
  readonly mapped: TransportAddress | null;
  /** XOR-PEER-ADDRESS (RFC 8656 §14.3), in Data indications. */
  readonly peer: TransportAddress | null;
  /** LIFETIME in seconds (RFC 8656 §14.2). */
  readonly lifetime: number | null;
  /** DATA (RFC 8656 §14.4), a view into the message. */
  readonly data: Uint8Array | null;
}

/**
 * Reads the fields of a decoded response or indication. Never throws: a
 * malformed attribute reads as absent. Integrity is the caller's to check
 * (`verifyMessageIntegrity`), since only it holds the key.
 * @example
 * const r = readResponse(decoded.value);
 * if (r.code === 401 && r.realm !== null && r.nonce !== null) sign(r.realm, r.nonce);
 */
export function readResponse(m: StunMessage): ResponseFields {
  const text = (type: number, decode: typeof decodeRealm): string | null => {
    const a = findAttr(m, type);
    if (!a) return null;
    const d = decode(a.value);
    return d.ok ? d.value : null;
  };
  const addr = (type: number): TransportAddress | null => {
    const a = findAttr(m, type);
    if (!a) return null;
    const d = decodeXorAddress(a.value, m.transactionId);
    return d.ok ? d.value : null;
  };
  const ec = findAttr(m, Attr.ErrorCode);
  const code = ec ? decodeErrorCode(ec.value) : null;
  const lt = findAttr(m, Attr.Lifetime);
  const lifetime = lt ? decodeLifetime(lt.value) : null;
  return {
    cls: m.cls,
    method: m.method,
    code: code?.ok ? code.value.code : null,
    realm: text(Attr.Realm, decodeRealm),
    nonce: text(Attr.Nonce, decodeNonce),
    relayed: addr(Attr.XorRelayedAddress),
    mapped: addr(Attr.XorMappedAddress),
    peer: addr(Attr.XorPeerAddress),
    lifetime: lifetime?.ok ? lifetime.value : null,
    data: findAttr(m, Attr.Data)?.value ?? null,
  };
}
