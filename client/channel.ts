/**
 * Data channels with backpressure. `send()` returns a promise that resolves once the message is
 * queued and the channel's send buffer is below `highWaterMark`, so a producer that awaits it
 * never holds more than about `highWaterMark` bytes in memory, whatever it sends in total
 * (1 GiB included). `writable` is the same as a WHATWG `WritableStream`.
 */
import { Emitter } from './emitter.js';
import { LinkError } from './errors.js';
import type { ChannelState, RawChannel } from './webrtc/backend.js';

/** Send buffer size above which `send()` waits: enough to keep a relayed path busy, small enough to be harmless. */
export const DEFAULT_HIGH_WATER_MARK = 1024 * 1024;
/** `bufferedamountlow` fires below this; a quarter of the high mark refills before the buffer runs dry. */
export const DEFAULT_LOW_WATER_MARK = 256 * 1024;
/** Safety net while waiting for drain, in case a backend misses a low-buffer event. */
const DRAIN_POLL_MS = 50;
/**
 * Messages that arrive before the application listens for them are kept, up to this many bytes
 * (a peer that sends right after opening must not lose its first messages); beyond it the channel
 * is closed with an error rather than silently dropping reliable data.
 */
export const MAX_UNREAD_BYTES = 4 * 1024 * 1024;
/** Largest message we send in one piece: SCTP implementations interoperate up to 64 KiB (RFC 8831 §6.6). */
export const MAX_MESSAGE_BYTES = 64 * 1024;

export interface ChannelEvents {
  open: [];
  message: [data: Uint8Array | string];
  close: [];
  error: [err: Error];
}

/** Options of `link.channel()`. */
export interface ChannelInit {
  /** Deliver in order (default true). */
  readonly ordered?: boolean;
  /** Retransmissions before a message is dropped; set for unreliable delivery (e.g. 0 for sensor readings). */
  readonly maxRetransmits?: number;
  /** `send()` waits while more than this many bytes are buffered (default 1 MiB). */
  readonly highWaterMark?: number;
}

/**
 * A data channel of a `Link`.
 *
 * @example
 * ```ts
 * const ch = await link.channel('files');
 * for await (const chunk of file) await ch.send(chunk); // bounded memory
 * ch.on('message', (m) => console.log(m));
 * ```
 */
export class Channel extends Emitter<ChannelEvents> {
  private readonly hwm: number;
  private waiters: Array<() => void> = [];
  private poll: ReturnType<typeof setInterval> | null = null;
  private unread: Array<Uint8Array | string> = [];
  private unreadBytes = 0;

  /** @internal */
  constructor(
    private readonly raw: RawChannel,
    init?: ChannelInit,
  ) {
    super();
    this.hwm = init?.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
    raw.bufferedAmountLowThreshold = Math.min(DEFAULT_LOW_WATER_MARK, Math.floor(this.hwm / 4));
    raw.onBufferedAmountLow = () => this.wake();
    raw.onOpen = () => this.emit('open');
    raw.onMessage = (d) => this.deliver(d);
    raw.onError = (e) => this.emit('error', e);
    raw.onClose = () => {
      this.wake();
      this.emit('close');
    };
  }

  get label(): string {
    return this.raw.label;
  }
  get ordered(): boolean {
    return this.raw.ordered;
  }
  get maxRetransmits(): number | null {
    return this.raw.maxRetransmits;
  }
  get state(): ChannelState {
    return this.raw.state;
  }
  get bufferedAmount(): number {
    return this.raw.bufferedAmount;
  }

  /** Resolves when the channel is open; rejects with `Closed` if it closes first. */
  opened(): Promise<void> {
    if (this.raw.state === 'open') return Promise.resolve();
    if (this.raw.state !== 'connecting') return Promise.reject(new LinkError('Closed', 'channel closed'));
    return new Promise((resolve, reject) => {
      const offOpen = this.once('open', () => {
        offClose();
        resolve();
      });
      const offClose = this.once('close', () => {
        offOpen();
        reject(new LinkError('Closed', 'channel closed before it opened'));
      });
    });
  }

  /**
   * Queues one message and resolves when the send buffer has room again.
   * Rejects with `Closed` when the channel is not open, `RangeError` above `MAX_MESSAGE_BYTES`.
   */
  async send(data: Uint8Array | string): Promise<void> {
    const size = typeof data === 'string' ? new TextEncoder().encode(data).length : data.byteLength;
    if (size > MAX_MESSAGE_BYTES) throw new RangeError(`message larger than ${MAX_MESSAGE_BYTES} bytes`);
    if (this.raw.state === 'connecting') await this.opened();
    if (this.raw.state !== 'open') throw new LinkError('Closed', 'channel is not open');
    this.raw.send(data);
    while (this.raw.bufferedAmount > this.hwm) {
      if (this.raw.state !== 'open') throw new LinkError('Closed', 'channel closed while sending');
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        this.poll ??= setInterval(() => this.wake(), DRAIN_POLL_MS);
      });
    }
  }

  /** Resolves when everything queued has left the send buffer (or the channel closed). */
  async drained(): Promise<void> {
    while (this.raw.state === 'open' && this.raw.bufferedAmount > 0) {
      await new Promise<void>((r) => setTimeout(r, DRAIN_POLL_MS / 5));
    }
  }

  /** A `WritableStream` over `send()`; chunks above 64 KiB are split. */
  get writable(): WritableStream<Uint8Array> {
    return new WritableStream<Uint8Array>({
      write: async (chunk) => {
        for (let off = 0; off < chunk.byteLength; off += MAX_MESSAGE_BYTES) {
          await this.send(chunk.subarray(off, Math.min(chunk.byteLength, off + MAX_MESSAGE_BYTES)));
        }
      },
      close: () => this.drained(),
    });
  }

  close(): void {
    this.raw.close();
    this.wake();
  }

  override on<K extends keyof ChannelEvents>(event: K, fn: (...args: ChannelEvents[K]) => void): () => void {
    const off = super.on(event, fn);
    if (event === 'message' && this.unread.length > 0) queueMicrotask(() => this.flushUnread());
    return off;
  }

  private deliver(d: Uint8Array | string): void {
    if (this.listenerCount('message') > 0 && this.unread.length === 0) return this.emit('message', d);
    this.unreadBytes += typeof d === 'string' ? d.length : d.byteLength;
    if (this.unreadBytes > MAX_UNREAD_BYTES) {
      this.unread = [];
      this.emit('error', new LinkError('Protocol', 'too much unread data on a channel nobody listens to'));
      this.close();
      return;
    }
    this.unread.push(d);
  }

  private flushUnread(): void {
    while (this.unread.length > 0 && this.listenerCount('message') > 0) {
      const d = this.unread.shift()!;
      this.unreadBytes -= typeof d === 'string' ? d.length : d.byteLength;
      this.emit('message', d);
    }
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    if (this.poll) {
      clearInterval(this.poll);
      this.poll = null;
    }
    for (const r of w) r();
  }
}
