/**
 * STUN message framing (RFC 8489 §5, §6, §14): the 20-byte header, the
 * attribute list, MESSAGE-INTEGRITY (§14.5), MESSAGE-INTEGRITY-SHA256 (§14.6)
 * and FINGERPRINT (§14.7).
 *
 *   0                   1                   2                   3
 *   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *  |0 0|     STUN Message Type     |         Message Length        |
 *  |                         Magic Cookie                          |
 *  |                     Transaction ID (96 bits)                  |
 *
 * Decoding never copies: attribute values are views into the input. HMACs are
 * injected functions so the codec stays portable and the server can verify
 * synchronously (the Node driver passes node:crypto).
 */
import {
  Attr,
  FINGERPRINT_XOR,
  HEADER_LENGTH,
  MAGIC_COOKIE,
  StunClass,
  TRANSACTION_ID_LENGTH,
} from './constants.js';
import { crc32 } from './crc32.js';
import { decoded, refused, type Decoded } from './result.js';

/** A synchronous HMAC: `(key, data) => mac`. HMAC-SHA1 for MESSAGE-INTEGRITY, HMAC-SHA256 for MESSAGE-INTEGRITY-SHA256. */
export type HmacFn = (key: Uint8Array, data: Uint8Array) => Uint8Array;

/** One attribute as it appeared on the wire; `value` is a view into the message bytes. */
export interface StunAttribute {
  readonly type: number;
  readonly value: Uint8Array;
  /** Offset of this attribute's 4-byte header from the start of the message. */
  readonly offset: number;
}

/** A decoded STUN message. `raw` is exactly the message's bytes (header plus `length`). */
export interface StunMessage {
  readonly method: number;
  readonly cls: StunClass;
  readonly transactionId: Uint8Array;
  readonly attributes: readonly StunAttribute[];
  readonly raw: Uint8Array;
}

/** Bound on attributes per message, so a 64 KiB message of empty attributes costs bounded work. */
export const MAX_ATTRIBUTES = 64;

/** RFC 8489 §5: method bits M0-M11 and class bits C0, C1 interleave in the 14-bit type. */
export function messageType(method: number, cls: StunClass): number {
  return ((method & 0xf80) << 2) | ((method & 0x070) << 1) | (method & 0x00f) | ((cls & 2) << 7) | ((cls & 1) << 4);
}

/** True when the first bytes look like a STUN message (leading bits 00 and the magic cookie). */
export function looksLikeStun(bytes: Uint8Array): boolean {
  return (
    bytes.length >= HEADER_LENGTH &&
    (bytes[0]! & 0xc0) === 0 &&
    bytes[4] === 0x21 &&
    bytes[5] === 0x12 &&
    bytes[6] === 0xa4 &&
    bytes[7] === 0x42
  );
}

/**
 * Decodes one STUN message occupying all of `bytes` (RFC 8489 §6, §14).
 * Refuses: short input, wrong leading bits or cookie, a length not a multiple of 4 or not
 * matching the input, attributes overrunning the message, more than {@link MAX_ATTRIBUTES},
 * attributes after FINGERPRINT, and a wrong FINGERPRINT. Attributes after MESSAGE-INTEGRITY
 * other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are ignored (§14.5).
 * @example
 * const r = decodeStun(datagram);
 * if (r.ok && r.value.method === StunMethod.Binding) { ... }
 */
export function decodeStun(bytes: Uint8Array): Decoded<StunMessage> {
  if (bytes.length < HEADER_LENGTH) return refused('truncated', 'shorter than a STUN header');
  if ((bytes[0]! & 0xc0) !== 0) return refused('not_stun', 'leading bits not 00');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(4) !== MAGIC_COOKIE) return refused('not_stun', 'no magic cookie');
  const type = view.getUint16(0);
  const length = view.getUint16(2);
  if (length % 4 !== 0) return refused('bad_length', 'message length not a multiple of 4');
  if (HEADER_LENGTH + length !== bytes.length) return refused('bad_length', 'message length disagrees with the bytes');
  const method = ((type & 0x3e00) >> 2) | ((type & 0x00e0) >> 1) | (type & 0x000f);
  const cls = (((type & 0x0100) >> 7) | ((type & 0x0010) >> 4)) as StunClass;
  const attributes: StunAttribute[] = [];
  let offset = HEADER_LENGTH;
  let sawIntegrity = false;
  let sawFingerprint = false;
  while (offset < bytes.length) {
    if (sawFingerprint) return refused('bad_attribute', 'attribute after FINGERPRINT');
    if (offset + 4 > bytes.length) return refused('truncated', 'attribute header overruns the message');
    const atype = view.getUint16(offset);
    const alen = view.getUint16(offset + 2);
    const padded = (alen + 3) & ~3;
    if (offset + 4 + padded > bytes.length) return refused('truncated', 'attribute value overruns the message');
    if (attributes.length >= MAX_ATTRIBUTES) return refused('oversized', 'too many attributes');
    const keep =
      !sawIntegrity || atype === Attr.MessageIntegritySha256 || atype === Attr.Fingerprint;
    if (keep) attributes.push({ type: atype, value: bytes.subarray(offset + 4, offset + 4 + alen), offset });
    if (atype === Attr.MessageIntegrity || atype === Attr.MessageIntegritySha256) sawIntegrity = true;
    if (atype === Attr.Fingerprint) {
      if (alen !== 4) return refused('bad_value', 'FINGERPRINT is not 4 bytes');
      const expected = (crc32(bytes, 0, offset) ^ FINGERPRINT_XOR) >>> 0;
      if (view.getUint32(offset + 4) !== expected) return refused('bad_fingerprint', 'FINGERPRINT mismatch');
      sawFingerprint = true;
    }
    offset += 4 + padded;
  }
  return decoded({
    method,
    cls,
    transactionId: bytes.subarray(8, 8 + TRANSACTION_ID_LENGTH),
    attributes,
    raw: bytes,
  });
}

/** First attribute of `type`, or undefined. */
export function findAttr(msg: StunMessage, type: number): StunAttribute | undefined {
  for (const a of msg.attributes) if (a.type === type) return a;
  return undefined;
}

/** Constant-time equality of two byte strings (length is not secret). */
export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

/**
 * Checks an integrity attribute (RFC 8489 §14.5/§14.6): the HMAC over the message up to
 * the attribute, with the header length rewritten to end just after it.
 * Returns false when the attribute is absent or wrong.
 */
function verifyIntegrity(msg: StunMessage, type: number, key: Uint8Array, hmac: HmacFn, fullLen: number): boolean {
  const attr = findAttr(msg, type);
  if (!attr) return false;
  if (type === Attr.MessageIntegrity ? attr.value.length !== 20 : attr.value.length < 16 || attr.value.length > 32 || attr.value.length % 4 !== 0) {
    return false;
  }
  const input = msg.raw.slice(0, attr.offset);
  const adjusted = attr.offset + 4 + attr.value.length - HEADER_LENGTH;
  input[2] = adjusted >> 8;
  input[3] = adjusted & 0xff;
  const mac = hmac(key, input);
  if (mac.length < fullLen) return false;
  return timingSafeEqual(mac.subarray(0, attr.value.length), attr.value);
}

/** Verifies MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) with `key`. */
export function verifyMessageIntegrity(msg: StunMessage, key: Uint8Array, hmacSha1: HmacFn): boolean {
  return verifyIntegrity(msg, Attr.MessageIntegrity, key, hmacSha1, 20);
}

/** Verifies MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, possibly truncated, RFC 8489 §14.6) with `key`. */
export function verifyMessageIntegritySha256(msg: StunMessage, key: Uint8Array, hmacSha256: HmacFn): boolean {
  return verifyIntegrity(msg, Attr.MessageIntegritySha256, key, hmacSha256, 32);
}

/**
 * The long-term credential key (RFC 8489 §9.2.2): MD5(username ":" realm ":" password),
 * the text UTF-8 encoded (after OpaqueString processing, which REST usernames and
 * base64 passwords need none of). MD5 is injected: WebCrypto has none, and callers
 * need it synchronously.
 * @example
 * const key = longTermKey(md5, '1700000000:hub-1', 'homelink', password);
 */
export function longTermKey(md5: (data: Uint8Array) => Uint8Array, username: string, realm: string, password: string): Uint8Array {
  return md5(new TextEncoder().encode(`${username}:${realm}:${password}`));
}

const EMPTY = new Uint8Array(0);

/**
 * Builds one STUN message. Attributes are written in call order; integrity and
 * fingerprint attributes cover everything written before them (RFC 8489 §14.5-14.7).
 * `padByte` sets the value of padding bytes (any value is legal, §14; RFC 5769's
 * samples use 0x20), so decoded messages can be re-encoded byte for byte.
 * @example
 * const bytes = new StunWriter(StunMethod.Binding, StunClass.SuccessResponse, tid)
 *   .add(Attr.XorMappedAddress, encodeXorAddress({ family: 4, ip: '203.0.113.5', port: 4000 }, tid))
 *   .addFingerprint()
 *   .finish();
 */
export class StunWriter {
  private buf: Uint8Array;
  private len = HEADER_LENGTH;
  private readonly padByte: number;

  constructor(method: number, cls: StunClass, transactionId: Uint8Array, options?: { padByte?: number; capacity?: number }) {
    if (transactionId.length !== TRANSACTION_ID_LENGTH) throw new RangeError('transaction id must be 12 bytes');
    this.buf = new Uint8Array(Math.max(options?.capacity ?? 128, HEADER_LENGTH + 64));
    this.padByte = options?.padByte ?? 0;
    const t = messageType(method, cls);
    this.buf[0] = t >> 8;
    this.buf[1] = t & 0xff;
    this.buf[4] = 0x21;
    this.buf[5] = 0x12;
    this.buf[6] = 0xa4;
    this.buf[7] = 0x42;
    this.buf.set(transactionId, 8);
  }

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  private setLength(bodyEnd: number): void {
    const l = bodyEnd - HEADER_LENGTH;
    this.buf[2] = l >> 8;
    this.buf[3] = l & 0xff;
  }

  /** Appends an attribute with its padding. Throws RangeError past 65535 bytes (a programming error). */
  add(type: number, value: Uint8Array = EMPTY): this {
    const padded = (value.length + 3) & ~3;
    if (value.length > 0xffff || this.len + 4 + padded - HEADER_LENGTH > 0xffff) throw new RangeError('STUN message too long');
    this.reserve(4 + padded);
    const b = this.buf;
    b[this.len] = type >> 8;
    b[this.len + 1] = type & 0xff;
    b[this.len + 2] = value.length >> 8;
    b[this.len + 3] = value.length & 0xff;
    b.set(value, this.len + 4);
    b.fill(this.padByte, this.len + 4 + value.length, this.len + 4 + padded);
    this.len += 4 + padded;
    this.setLength(this.len);
    return this;
  }

  private addMac(type: number, key: Uint8Array, hmac: HmacFn, size: number): this {
    this.setLength(this.len + 4 + size);
    const mac = hmac(key, this.buf.subarray(0, this.len));
    return this.add(type, mac.subarray(0, size));
  }

  /** Appends MESSAGE-INTEGRITY (HMAC-SHA1 with `key`, RFC 8489 §14.5). */
  addMessageIntegrity(key: Uint8Array, hmacSha1: HmacFn): this {
    return this.addMac(Attr.MessageIntegrity, key, hmacSha1, 20);
  }

  /** Appends MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6), 32 bytes. */
  addMessageIntegritySha256(key: Uint8Array, hmacSha256: HmacFn): this {
    return this.addMac(Attr.MessageIntegritySha256, key, hmacSha256, 32);
  }

  /** Appends FINGERPRINT (RFC 8489 §14.7); it must be the last attribute. */
  addFingerprint(): this {
    this.setLength(this.len + 8);
    const v = (crc32(this.buf, 0, this.len) ^ FINGERPRINT_XOR) >>> 0;
    const value = new Uint8Array([v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff]);
    return this.add(Attr.Fingerprint, value);
  }

  /** The finished message (a copy sized exactly). */
  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}
