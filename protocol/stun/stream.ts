/**
 * Splits a TCP/TLS byte stream into STUN messages and ChannelData frames
 * (RFC 8656 §12.5, RFC 8489 §6.2.2): the first two bits say which; a STUN
 * message is 20 + Length bytes, a ChannelData frame 4 + Length rounded up to 4.
 *
 * Frames that arrive whole inside one chunk are returned as views of that chunk
 * (no copy). A frame split across chunks is collected in a fresh buffer that is
 * never reused after it is returned, so a returned frame stays valid while a
 * driver's asynchronous send still holds it. Buffered bytes are bounded.
 */
import { CHANNEL_DATA_HEADER } from './channel-data.js';
import { HEADER_LENGTH } from './constants.js';
import { decoded, refused, type Decoded } from './result.js';

/** A frame from the stream: its kind and bytes (the whole message, including any padding). */
export interface StreamFrame {
  readonly kind: 'stun' | 'channel-data';
  readonly bytes: Uint8Array;
}

/** Smallest buffer for an incomplete frame: a STUN header and typical request fit without regrowth. */
const MIN_PARTIAL_BYTES = 64;

/** Longest possible frame: a ChannelData with 65535 bytes of data, padded (65,540 bytes). */
export const MAX_STREAM_FRAME = CHANNEL_DATA_HEADER + 65536;

/**
 * Stream framer with a bound on buffered bytes.
 * @example
 * const f = new StreamFramer(70_000);
 * f.push(chunk);
 * for (let r = f.next(); r.ok && r.value; r = f.next()) handle(r.value);
 */
export class StreamFramer {
  private chunk: Uint8Array | null = null;
  private pos = 0;
  private partial: Uint8Array | null = null;
  private partialLen = 0;
  private failed = false;

  /**
   * @param maxBuffered the largest frame accepted, and so the most bytes held for an
   *   incomplete frame; a frame announcing more fails the stream (`oversized`).
   */
  constructor(private readonly maxBuffered: number) {}

  /** Bytes held for an incomplete frame. */
  get buffered(): number {
    return this.partialLen + (this.chunk ? this.chunk.length - this.pos : 0);
  }

  /** Bytes reserved for an incomplete frame (memory held; at most twice what arrived, or 64). */
  get capacity(): number {
    return this.partial?.length ?? 0;
  }

  /** Queues a chunk. Call {@link next} until it returns null before the next push. */
  push(chunk: Uint8Array): Decoded<null> {
    if (this.failed) return refused('bad_length', 'stream already failed');
    if (this.chunk && this.pos < this.chunk.length) this.absorbRest();
    this.chunk = chunk;
    this.pos = 0;
    return decoded(null);
  }

  private absorbRest(): void {
    const rest = this.chunk!.subarray(this.pos);
    this.appendPartial(rest);
    this.chunk = null;
    this.pos = 0;
  }

  /**
   * Appends to the incomplete frame. Capacity doubles (capped at the frame's length once its
   * header is known), so a frame delivered one byte per chunk costs O(length) copying in all,
   * not O(length²) (with exact growth a 64 KiB frame sent a byte at a time copied about 2 GB),
   * while memory stays within twice the bytes actually received: a 4-byte header announcing
   * 64 KiB does not make us allocate 64 KiB.
   */
  private appendPartial(bytes: Uint8Array): void {
    const need = this.partialLen + bytes.length;
    if (!this.partial || this.partial.length < need) {
      let capacity = Math.max(need, (this.partial?.length ?? 0) * 2, MIN_PARTIAL_BYTES);
      const header = this.partialLen >= 4 ? this.partial! : this.partialLen === 0 && bytes.length >= 4 ? bytes : null;
      if (header) capacity = Math.max(need, Math.min(capacity, this.declaredLength(header[0]!, header[2]!, header[3]!)));
      this.reserve(capacity);
    }
    this.partial!.set(bytes, this.partialLen);
    this.partialLen = need;
  }

  /** Makes the partial buffer hold at least `capacity` bytes, keeping its contents. */
  private reserve(capacity: number): void {
    if (this.partial && this.partial.length >= capacity) return;
    const next = new Uint8Array(capacity);
    if (this.partial) next.set(this.partial.subarray(0, this.partialLen));
    this.partial = next;
  }

  private fail(kind: 'oversized' | 'not_stun' | 'bad_length', detail: string): Decoded<never> {
    this.failed = true;
    this.chunk = null;
    this.partial = null;
    this.partialLen = 0;
    return refused(kind, detail);
  }

  /** The length a frame header declares (no checks: {@link frameLength} validates). */
  private declaredLength(b0: number, b2: number, b3: number): number {
    const len = (b2 << 8) | b3;
    return (b0 & 0xc0) === 0 ? HEADER_LENGTH + len : CHANNEL_DATA_HEADER + ((len + 3) & ~3);
  }

  /** Length of the frame starting with `b0 b1 b2 b3`, or an error. */
  private frameLength(b0: number, b2: number, b3: number): Decoded<number> {
    const len = (b2 << 8) | b3;
    const top = b0 & 0xc0;
    let total: number;
    if (top === 0) {
      if (len % 4 !== 0) return this.fail('bad_length', 'STUN length not a multiple of 4');
      total = HEADER_LENGTH + len;
    } else if (top === 0x40) {
      total = CHANNEL_DATA_HEADER + ((len + 3) & ~3);
    } else {
      return this.fail('not_stun', 'neither STUN nor ChannelData');
    }
    if (total > this.maxBuffered) return this.fail('oversized', 'frame larger than the buffer bound');
    return decoded(total);
  }

  /** The next complete frame, null when more bytes are needed, or an error (the stream is then dead). */
  next(): Decoded<StreamFrame | null> {
    if (this.failed) return refused('bad_length', 'stream already failed');
    // Complete a frame that started in an earlier chunk.
    if (this.partialLen > 0) {
      const c = this.chunk;
      const avail = c ? c.length - this.pos : 0;
      if (this.partialLen < 4) {
        const take = Math.min(4 - this.partialLen, avail);
        if (take > 0) {
          this.appendPartial(c!.subarray(this.pos, this.pos + take));
          this.pos += take;
        }
        if (this.partialLen < 4) return decoded(null);
      }
      const p = this.partial!;
      const total = this.frameLength(p[0]!, p[2]!, p[3]!);
      if (!total.ok) return total;
      const missing = total.value - this.partialLen;
      const remaining = c ? c.length - this.pos : 0;
      if (missing > remaining) {
        if (remaining > 0) {
          this.appendPartial(c!.subarray(this.pos));
          this.pos = c!.length;
        }
        return decoded(null);
      }
      // The partial buffer becomes the frame: it is dropped here and never written again.
      this.reserve(total.value);
      const buf = this.partial!;
      if (missing > 0) buf.set(c!.subarray(this.pos, this.pos + missing), this.partialLen);
      const frame = buf.length === total.value ? buf : buf.subarray(0, total.value);
      this.pos += missing;
      this.partial = null;
      this.partialLen = 0;
      return this.emit(frame);
    }
    const c = this.chunk;
    if (!c || this.pos >= c.length) {
      this.chunk = null;
      return decoded(null);
    }
    if (c.length - this.pos < 4) {
      this.absorbRest();
      return decoded(null);
    }
    const total = this.frameLength(c[this.pos]!, c[this.pos + 2]!, c[this.pos + 3]!);
    if (!total.ok) return total;
    if (c.length - this.pos < total.value) {
      this.absorbRest();
      return decoded(null);
    }
    const bytes = c.subarray(this.pos, this.pos + total.value);
    this.pos += total.value;
    return this.emit(bytes);
  }

  /** A STUN frame without the magic cookie means the stream is out of step (or is not TURN): fail it. */
  private emit(bytes: Uint8Array): Decoded<StreamFrame | null> {
    if ((bytes[0]! & 0xc0) !== 0) return decoded({ kind: 'channel-data', bytes });
    if (bytes[4] !== 0x21 || bytes[5] !== 0x12 || bytes[6] !== 0xa4 || bytes[7] !== 0x42) {
      return this.fail('not_stun', 'STUN frame without the magic cookie');
    }
    return decoded({ kind: 'stun', bytes });
  }
}
