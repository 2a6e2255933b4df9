/**
 * Attribute value codecs (RFC 8489 §14, RFC 8656 §14). Each attribute has an
 * encoder and a decoder side by side; decoders check the length before reading
 * a byte and return a typed error for anything malformed.
 */
import { FAMILY_IPV4, FAMILY_IPV6, MAGIC_COOKIE } from './constants.js';
import { formatIp, parseIp } from './ip.js';
import { decoded, refused, type Decoded } from './result.js';

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }); // ignoreBOM spelled out: one of the Node/DOM typings requires it

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

// ---------------------------------------------------------------- addresses

/** A transport address as carried by the XOR-*-ADDRESS attributes. */
export interface TransportAddress {
  readonly family: 4 | 6;
  readonly ip: string;
  readonly port: number;
}

/**
 * XOR-MAPPED-ADDRESS (RFC 8489 §14.2), XOR-PEER-ADDRESS and XOR-RELAYED-ADDRESS
 * (RFC 8656 §14.3, §14.5) share one layout: 0, family, port XOR the cookie's top
 * 16 bits, address XOR the cookie (IPv4) or cookie || transaction id (IPv6).
 * Throws RangeError for an unparsable `ip` (a programming error, not wire input).
 */
export function encodeXorAddress(addr: TransportAddress, transactionId: Uint8Array): Uint8Array {
  const ip = parseIp(addr.ip);
  if (!ip || (ip.length === 4) !== (addr.family === 4)) throw new RangeError('address does not match its family');
  if (!Number.isInteger(addr.port) || addr.port < 0 || addr.port > 0xffff) throw new RangeError('port out of range');
  const out = new Uint8Array(4 + ip.length);
  const dv = view(out);
  out[1] = addr.family === 4 ? FAMILY_IPV4 : FAMILY_IPV6;
  dv.setUint16(2, addr.port ^ (MAGIC_COOKIE >>> 16));
  xorAddress(ip, transactionId, out, 4);
  return out;
}

function xorAddress(src: Uint8Array, tid: Uint8Array, out: Uint8Array, at: number): void {
  const mask = [0x21, 0x12, 0xa4, 0x42];
  for (let i = 0; i < src.length; i++) out[at + i] = src[i]! ^ (i < 4 ? mask[i]! : tid[i - 4]!);
}

/** Decodes any XOR-*-ADDRESS value. */
export function decodeXorAddress(value: Uint8Array, transactionId: Uint8Array): Decoded<TransportAddress> {
  if (value.length < 4) return refused('truncated', 'address attribute shorter than 4 bytes');
  const family = value[1];
  const expected = family === FAMILY_IPV4 ? 8 : family === FAMILY_IPV6 ? 20 : -1;
  if (expected < 0) return refused('bad_value', 'unknown address family');
  if (value.length !== expected) return refused('bad_value', 'address length does not match its family');
  const port = view(value).getUint16(2) ^ (MAGIC_COOKIE >>> 16);
  const ip = new Uint8Array(expected - 4);
  xorAddress(value.subarray(4), transactionId, ip, 0);
  return decoded({ family: family === FAMILY_IPV4 ? 4 : 6, ip: formatIp(ip), port });
}

// ------------------------------------------------------------------ strings

/** RFC 8489 §14.3: USERNAME is at most 513 bytes. */
export const MAX_USERNAME_BYTES = 513;
/** RFC 8489 §14.9, §14.10, §14.14: REALM, NONCE and SOFTWARE are under 128 characters, at most 763 bytes. */
export const MAX_TEXT_BYTES = 763;
const MAX_TEXT_CHARS = 127;

/** Encodes a UTF-8 text attribute (USERNAME, REALM, NONCE, SOFTWARE). */
export function encodeText(text: string): Uint8Array {
  return utf8.encode(text);
}

function decodeUtf8(value: Uint8Array, maxBytes: number, maxChars: number, what: string): Decoded<string> {
  if (value.length > maxBytes) return refused('oversized', `${what} too long`);
  let s: string;
  try {
    s = utf8Strict.decode(value);
  } catch {
    return refused('bad_value', `${what} is not UTF-8`);
  }
  if (maxChars > 0 && [...s].length > maxChars) return refused('oversized', `${what} too long`);
  return decoded(s);
}

/** USERNAME (RFC 8489 §14.3). */
export const decodeUsername = (v: Uint8Array): Decoded<string> => decodeUtf8(v, MAX_USERNAME_BYTES, 0, 'USERNAME');
/** REALM (RFC 8489 §14.9). */
export const decodeRealm = (v: Uint8Array): Decoded<string> => decodeUtf8(v, MAX_TEXT_BYTES, MAX_TEXT_CHARS, 'REALM');
/** NONCE (RFC 8489 §14.10). */
export const decodeNonce = (v: Uint8Array): Decoded<string> => decodeUtf8(v, MAX_TEXT_BYTES, MAX_TEXT_CHARS, 'NONCE');
/** SOFTWARE (RFC 8489 §14.14). */
export const decodeSoftware = (v: Uint8Array): Decoded<string> => decodeUtf8(v, MAX_TEXT_BYTES, MAX_TEXT_CHARS, 'SOFTWARE');

// --------------------------------------------------------------- ERROR-CODE

/** ERROR-CODE value (RFC 8489 §14.8). */
export interface ErrorCodeValue {
  readonly code: number;
  readonly reason: string;
}

/** Encodes ERROR-CODE: 21 zero bits, class (hundreds), number (code mod 100), reason phrase. */
export function encodeErrorCode(e: ErrorCodeValue): Uint8Array {
  if (!Number.isInteger(e.code) || e.code < 300 || e.code > 699) throw new RangeError('error code out of range');
  const reason = utf8.encode(e.reason);
  const out = new Uint8Array(4 + reason.length);
  out[2] = Math.floor(e.code / 100);
  out[3] = e.code % 100;
  out.set(reason, 4);
  return out;
}

/** Decodes ERROR-CODE; class must be 3..6 and number 0..99. */
export function decodeErrorCode(value: Uint8Array): Decoded<ErrorCodeValue> {
  if (value.length < 4) return refused('truncated', 'ERROR-CODE shorter than 4 bytes');
  const cls = value[2]! & 0x07;
  const num = value[3]!;
  if (cls < 3 || cls > 6 || num > 99) return refused('bad_value', 'ERROR-CODE out of range');
  const reason = decodeUtf8(value.subarray(4), MAX_TEXT_BYTES, MAX_TEXT_CHARS, 'reason phrase');
  if (!reason.ok) return reason;
  return decoded({ code: cls * 100 + num, reason: reason.value });
}

// ------------------------------------------------------- UNKNOWN-ATTRIBUTES

/** UNKNOWN-ATTRIBUTES (RFC 8489 §14.13): a list of 16-bit types. */
export function encodeUnknownAttributes(types: readonly number[]): Uint8Array {
  const out = new Uint8Array(types.length * 2);
  const dv = view(out);
  types.forEach((t, i) => dv.setUint16(i * 2, t));
  return out;
}

/** Decodes UNKNOWN-ATTRIBUTES; the length must be even. */
export function decodeUnknownAttributes(value: Uint8Array): Decoded<number[]> {
  if (value.length % 2 !== 0) return refused('bad_value', 'UNKNOWN-ATTRIBUTES length is odd');
  const dv = view(value);
  const out: number[] = [];
  for (let i = 0; i < value.length; i += 2) out.push(dv.getUint16(i));
  return decoded(out);
}

// ------------------------------------------------------------ fixed 32 bits

function encodeU32(n: number): Uint8Array {
  const out = new Uint8Array(4);
  view(out).setUint32(0, n >>> 0);
  return out;
}

/** LIFETIME (RFC 8656 §14.2): seconds, 32 bits. */
export function encodeLifetime(seconds: number): Uint8Array {
  if (!Number.isInteger(seconds) || seconds < 0 || seconds > 0xffffffff) throw new RangeError('lifetime out of range');
  return encodeU32(seconds);
}

/** Decodes LIFETIME. */
export function decodeLifetime(value: Uint8Array): Decoded<number> {
  if (value.length !== 4) return refused('bad_value', 'LIFETIME is not 4 bytes');
  return decoded(view(value).getUint32(0));
}

/** CHANNEL-NUMBER (RFC 8656 §14.1): 16-bit number then 16 RFFU bits. */
export function encodeChannelNumber(channel: number): Uint8Array {
  if (!Number.isInteger(channel) || channel < 0 || channel > 0xffff) throw new RangeError('channel out of range');
  return encodeU32((channel << 16) >>> 0);
}

/** Decodes CHANNEL-NUMBER (any 16-bit value; the server checks the 0x4000-0x4FFF range). */
export function decodeChannelNumber(value: Uint8Array): Decoded<number> {
  if (value.length !== 4) return refused('bad_value', 'CHANNEL-NUMBER is not 4 bytes');
  return decoded(view(value).getUint16(0));
}

/** REQUESTED-TRANSPORT (RFC 8656 §14.7): protocol number then 24 RFFU bits. */
export function encodeRequestedTransport(protocol: number): Uint8Array {
  if (!Number.isInteger(protocol) || protocol < 0 || protocol > 255) throw new RangeError('protocol out of range');
  return encodeU32((protocol << 24) >>> 0);
}

/** Decodes REQUESTED-TRANSPORT. */
export function decodeRequestedTransport(value: Uint8Array): Decoded<number> {
  if (value.length !== 4) return refused('bad_value', 'REQUESTED-TRANSPORT is not 4 bytes');
  return decoded(value[0]!);
}

/** REQUESTED-ADDRESS-FAMILY (RFC 8656 §14.8): family octet (1 IPv4, 2 IPv6) then 24 reserved bits. */
export function encodeRequestedAddressFamily(family: 4 | 6): Uint8Array {
  return encodeU32(((family === 4 ? FAMILY_IPV4 : FAMILY_IPV6) << 24) >>> 0);
}

/** Decodes REQUESTED-ADDRESS-FAMILY; other family values are refused. */
export function decodeRequestedAddressFamily(value: Uint8Array): Decoded<4 | 6> {
  if (value.length !== 4) return refused('bad_value', 'REQUESTED-ADDRESS-FAMILY is not 4 bytes');
  if (value[0] === FAMILY_IPV4) return decoded(4);
  if (value[0] === FAMILY_IPV6) return decoded(6);
  return refused('bad_value', 'unknown address family');
}

/** DONT-FRAGMENT (RFC 8656 §14.8) has no value; a non-empty one is malformed. */
export function decodeDontFragment(value: Uint8Array): Decoded<true> {
  return value.length === 0 ? decoded(true) : refused('bad_value', 'DONT-FRAGMENT has a value');
}

/** DATA (RFC 8656 §14.4): any bytes; the view is returned without a copy. */
export function decodeData(value: Uint8Array): Decoded<Uint8Array> {
  return decoded(value);
}

/** FINGERPRINT value (RFC 8489 §14.7) as a 32-bit number; checking it is done by `decodeStun`. */
export function decodeFingerprint(value: Uint8Array): Decoded<number> {
  if (value.length !== 4) return refused('bad_value', 'FINGERPRINT is not 4 bytes');
  return decoded(view(value).getUint32(0));
}

/** MESSAGE-INTEGRITY value (RFC 8489 §14.5): exactly 20 bytes. */
export function decodeMessageIntegrity(value: Uint8Array): Decoded<Uint8Array> {
  return value.length === 20 ? decoded(value) : refused('bad_value', 'MESSAGE-INTEGRITY is not 20 bytes');
}

/** MESSAGE-INTEGRITY-SHA256 value (RFC 8489 §14.6): 16 to 32 bytes, a multiple of 4. */
export function decodeMessageIntegritySha256(value: Uint8Array): Decoded<Uint8Array> {
  return value.length >= 16 && value.length <= 32 && value.length % 4 === 0
    ? decoded(value)
    : refused('bad_value', 'MESSAGE-INTEGRITY-SHA256 has a bad length');
}
