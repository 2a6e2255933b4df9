/**
 * ChannelData messages (RFC 8656 §12.4):
 *
 *   0                   1                   2                   3
 *  |         Channel Number        |            Length             |
 *  |                       Application Data ...                    |
 *
 * Over UDP the datagram may carry padding past `Length`, which the receiver
 * ignores; over TCP/TLS the message is padded to a multiple of 4 (§12.5).
 */
import { CHANNEL_MAX_LEGACY, CHANNEL_MIN } from './constants.js';
import { decoded, refused, type Decoded } from './result.js';

/** A decoded ChannelData message; `data` is a view into the input. */
export interface ChannelData {
  readonly channel: number;
  readonly data: Uint8Array;
}

/** Header length of a ChannelData message. */
export const CHANNEL_DATA_HEADER = 4;

/** True when the first two bits are 01 (RFC 8656 §12: channel numbers 0x4000-0x7FFF demultiplex as ChannelData). */
export function looksLikeChannelData(bytes: Uint8Array): boolean {
  return bytes.length >= CHANNEL_DATA_HEADER && (bytes[0]! & 0xc0) === 0x40;
}

/**
 * Decodes one ChannelData message. With `stream` the message must fill `bytes`
 * exactly including padding to 4; without, `bytes` may be longer (UDP padding).
 * The channel must be in 0x4000-0x7FFF (RFC 5766's range, a superset of RFC 8656's 0x4000-0x4FFF).
 */
export function decodeChannelData(bytes: Uint8Array, stream: boolean): Decoded<ChannelData> {
  if (bytes.length < CHANNEL_DATA_HEADER) return refused('truncated', 'shorter than a ChannelData header');
  const channel = (bytes[0]! << 8) | bytes[1]!;
  if (channel < CHANNEL_MIN || channel > CHANNEL_MAX_LEGACY) return refused('bad_value', 'channel number out of range');
  const length = (bytes[2]! << 8) | bytes[3]!;
  const total = CHANNEL_DATA_HEADER + (stream ? (length + 3) & ~3 : length);
  if (bytes.length < total) return refused('truncated', 'ChannelData shorter than its length');
  if (stream && bytes.length !== total) return refused('bad_length', 'ChannelData frame length mismatch');
  return decoded({ channel, data: bytes.subarray(CHANNEL_DATA_HEADER, CHANNEL_DATA_HEADER + length) });
}

/**
 * Encodes a ChannelData message, padded to 4 when `stream`. Throws RangeError for a
 * channel outside 0x4000-0x7FFF or data over 65535 bytes (programming errors).
 * @example encodeChannelData(0x4000, payload, false)
 */
export function encodeChannelData(channel: number, data: Uint8Array, stream: boolean): Uint8Array {
  if (channel < CHANNEL_MIN || channel > CHANNEL_MAX_LEGACY) throw new RangeError('channel number out of range');
  if (data.length > 0xffff) throw new RangeError('ChannelData payload too long');
  const total = CHANNEL_DATA_HEADER + (stream ? (data.length + 3) & ~3 : data.length);
  const out = new Uint8Array(total);
  writeChannelDataHeader(out, 0, channel, data.length);
  out.set(data, CHANNEL_DATA_HEADER);
  return out;
}

/** Writes a 4-byte ChannelData header at `at` (the hot path builds frames in place). */
export function writeChannelDataHeader(out: Uint8Array, at: number, channel: number, length: number): void {
  out[at] = channel >> 8;
  out[at + 1] = channel & 0xff;
  out[at + 2] = length >> 8;
  out[at + 3] = length & 0xff;
}
