/**
 * Data channels with backpressure. `send()` returns a promise that resolves once the message is
 * queued and the channel's send buffer is below `highWaterMark`, so a producer that awaits it
 * never holds more than about `highWaterMark` bytes in memory, whatever it sends in total
 * (1 GiB included). `writable` is the same as a WHATWG `WritableStream`.
 *
 * On a link that rebuilds its peer connection (client/session.ts: a stack without ICE restart),
 * a `Channel` outlives the raw channel under it: the link detaches it (`suspend`) and attaches
 * the channel of the same stream id on the new connection (`attach`). Ordered reliable channels
 * then lose and duplicate nothing (protocol/resume.ts): each side counts the messages it
 * received, acks that count every `ACK_EVERY_BYTES` or `ACK_EVERY_MESSAGES`, and the sender
 * keeps a copy of every message until acked (at most `heldLimit` bytes: `send()` waits above
 * it, so memory stays bounded and backpressure honest). After a rebuild, the peer's count says
 * where to resend from. Unordered or unreliable channels hold nothing; what was in flight, and
 * what is sent while the link rebuilds, may be lost, as their contract allows.
 */
import { Emitter } from './emitter.js';
import { LinkError } from './errors.js';
import type { ChannelState, RawChannel } from './webrtc/backend.js';

/** The receiver acks after this many bytes... (a quarter of the default high-water mark keeps the sender's copies small). */
export const ACK_EVERY_BYTES = 256 * 1024;
/** ...or this many messages, whichever comes first (small messages: one ack frame per 64). */
export const ACK_EVERY_MESSAGES = 64;

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
  private raw: RawChannel;
  /** The stream id, kept across rebuilds (the new raw channel is negotiated on the same one). */
  private streamId: number | null;
  /** Messages received on this channel since it opened, across rebuilds: the next one's sequence number. */
  private received = 0;
  private recvSinceAck = 0;
  private recvBytesSinceAck = 0;
  /** Messages sent (held or handed to the raw channel) since it opened. */
  private sent = 0;
  /** Copies of sent messages not yet acked (ordered reliable channels on a resumable link). */
  private held: Array<Uint8Array | string> = [];
  private heldHead = 0;
  private heldBytes = 0;
  private holding = false;
  private readonly heldLimit: number;
  /** Between `suspend` and `resume`: no raw channel to send on; the app still sees the channel open. */
  private suspended = false;
  private peerCount: number | null = null;
  private closedForGood = false;
  /** On a resumable link a stream that closes may come back on the rebuilt connection (see `wire`). */
  private resumeMode = false;
  /** The application closed it here, or the peer said it closes it (a `close` frame). */
  private closing = false;
  /** @internal Set by the link on a resumable link: sends an ack frame for this channel. */
  ackOut: ((stream: number, count: number) => void) | null = null;
  /** @internal Set by the link on a resumable link: tells the peer this channel closes for good. */
  closeOut: ((stream: number, count: number) => void) | null = null;

  /** @internal */
  constructor(raw: RawChannel, init?: ChannelInit) {
    super();
    this.hwm = init?.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
    // The copies held until acked: the send buffer plus what is in flight plus one ack interval.
    this.heldLimit = 2 * this.hwm + 2 * ACK_EVERY_BYTES;
    this.raw = raw;
    this.streamId = raw.id;
    this.wire(raw);
  }

  private wire(raw: RawChannel): void {
    raw.bufferedAmountLowThreshold = Math.min(DEFAULT_LOW_WATER_MARK, Math.floor(this.hwm / 4));
    raw.onBufferedAmountLow = () => this.wake();
    raw.onOpen = () => {
      this.streamId ??= raw.id;
      if (this.suspended) return this.maybeResume();
      this.emit('open');
    };
    raw.onMessage = (d) => this.deliver(d);
    raw.onError = (e) => this.emit('error', e);
    raw.onClose = () => {
      // On a resumable link a stream closes with its connection when the peer drops it to
      // rebuild, before this side hears of the rebuild: the channel waits for the new connection.
      // Only a close the application asked for, here or at the peer, is final.
      if (this.resumeMode && !this.closing) return this.suspend();
      this.finish();
    };
  }

  /** Closed for good: the application hears `close` once. */
  private finish(): void {
    if (this.closedForGood) return;
    this.closedForGood = true;
    this.suspended = false;
    this.dropHeld();
    this.wake();
    this.emit('close');
  }

  /** @internal The peer closes this channel (its `close` frame); final once the stream closed too. */
  peerClosed(): void {
    this.closing = true;
    if (this.suspended) this.finish();
  }

  /**
   * @internal The link ended: a channel ends with it when its stream closes (the peer connection
   * closes after the bye left, so what is queued still goes), or now if it has no stream.
   */
  end(): void {
    this.closing = true;
    if (this.suspended) this.finish();
  }

  /** @internal The stream id both ends name this channel by (protocol/resume.ts). */
  get id(): number | null {
    return this.streamId ?? this.raw.id;
  }

  /** @internal Ordered and reliable: what the resume protocol covers. */
  get reliable(): boolean {
    return this.raw.ordered && this.raw.maxRetransmits === null;
  }

  /** @internal Messages received so far (the count a resume frame carries). */
  get receivedCount(): number {
    return this.received;
  }

  /** @internal The link rebuilds instead of restarting: keep copies of what is sent until the peer acks them. */
  enableResume(): void {
    this.resumeMode = true;
    if (this.reliable && this.raw.state !== 'closed') this.holding = true;
  }

  /** @internal The peer received `count` messages: drop the copies up to there. Ignores counts that cannot be. */
  acked(count: number): boolean {
    // An unreliable channel holds nothing; its peer's count may trail what was sent (losses).
    if (!this.holding) return count <= this.sent;
    const base = this.sent - (this.held.length - this.heldHead);
    if (count < base || count > this.sent) return false;
    this.dropUpTo(count);
    this.wake();
    return true;
  }

  /** @internal The link drops the connection under this channel; until `resume` it sends nothing. */
  suspend(): void {
    if (this.closedForGood) return;
    this.streamId ??= this.raw.id;
    // Also when already suspended: a rebuild can replace one that had attached a stream already.
    const old = this.raw;
    old.onOpen = old.onClose = old.onMessage = old.onError = old.onBufferedAmountLow = null;
    this.suspended = true;
    this.peerCount = null;
  }

  /** @internal The same channel on the rebuilt connection (negotiated on `id`). */
  attach(raw: RawChannel): void {
    if (this.closedForGood) return raw.close();
    this.raw = raw;
    this.wire(raw);
    this.maybeResume();
  }

  /**
   * @internal The peer's resume frame: it received `count` messages. Resends what it lacks, then
   * lets `send()` go on. False (and the channel closes with an error) for a count it cannot have.
   */
  resume(count: number): boolean {
    if (!this.suspended || this.closedForGood) return false;
    const base = this.sent - (this.held.length - this.heldHead);
    if (count > this.sent || (this.holding && count < base)) {
      this.fault('peer resumed from a message count this side never sent or no longer holds');
      return false;
    }
    this.peerCount = count;
    this.maybeResume();
    return true;
  }

  private maybeResume(): void {
    if (!this.suspended || this.peerCount === null || this.raw.state !== 'open') return;
    this.suspended = false;
    if (this.holding) {
      this.dropUpTo(this.peerCount);
      for (let i = this.heldHead; i < this.held.length && !this.suspended; i++) this.rawSend(this.held[i]!);
    }
    this.wake();
  }

  /**
   * On a resumable link the stream can die with its connection before its close event arrived
   * (the peer dropped the connection to rebuild): a send that throws then suspends the channel,
   * and the held copy goes again on the rebuilt one.
   */
  private rawSend(data: Uint8Array | string): void {
    try {
      this.raw.send(data);
    } catch (e) {
      if (this.closing || this.closedForGood) throw e;
      this.suspend();
    }
  }

  private dropUpTo(count: number): void {
    let base = this.sent - (this.held.length - this.heldHead);
    while (base < count) {
      const m = this.held[this.heldHead]!;
      this.held[this.heldHead++] = '';
      this.heldBytes -= typeof m === 'string' ? m.length : m.byteLength;
      base++;
    }
    // Compact once the dropped head is large, so the array does not grow for the link's life.
    if (this.heldHead > 1024 && this.heldHead * 2 > this.held.length) {
      this.held = this.held.slice(this.heldHead);
      this.heldHead = 0;
    }
  }

  private dropHeld(): void {
    this.held = [];
    this.heldHead = 0;
    this.heldBytes = 0;
    this.holding = false;
  }

  private fault(message: string): void {
    this.emit('error', new LinkError('Protocol', message));
    this.close();
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
    if (this.suspended) return 'open';
    return this.raw.state;
  }
  /** Bytes in the send buffer; while the link rebuilds, the copies waiting to be resent. */
  get bufferedAmount(): number {
    return this.suspended ? this.heldBytes : this.raw.bufferedAmount;
  }

  /** Resolves when the channel is open; rejects with `Closed` if it closes first. */
  opened(): Promise<void> {
    if (this.raw.state === 'open' || this.suspended) return Promise.resolve();
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
    if (this.raw.state === 'connecting' && !this.suspended) await this.opened();
    if (this.state !== 'open') throw new LinkError('Closed', 'channel is not open');
    if (this.holding) {
      // A copy: the caller may reuse its buffer once send() resolved, and a resend must carry what
      // was sent. The stack gets the copy too (werift queues the buffer it is given, uncopied).
      const copy = typeof data === 'string' ? data : data.slice();
      this.held.push(copy);
      this.heldBytes += size;
      this.sent++;
      if (!this.suspended) this.rawSend(copy);
    } else if (!this.suspended) {
      this.sent++;
      if (this.resumeMode) this.rawSend(data);
      else this.raw.send(data);
    }
    // else: an unreliable channel while the link rebuilds; the message is lost, as one in flight would be.
    while (this.suspended ? this.heldBytes > this.heldLimit : this.raw.bufferedAmount > this.hwm || this.heldBytes > this.heldLimit) {
      if (this.state !== 'open') throw new LinkError('Closed', 'channel closed while sending');
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        this.poll ??= setInterval(() => this.wake(), DRAIN_POLL_MS);
      });
    }
  }

  /** Resolves when everything queued has left the send buffer (or the channel closed). */
  async drained(): Promise<void> {
    while (this.suspended || (this.raw.state === 'open' && this.raw.bufferedAmount > 0)) {
      if (this.closedForGood) return;
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
    if (this.closedForGood || this.closing) return;
    this.closing = true;
    const id = this.id;
    if (this.resumeMode && id !== null) this.closeOut?.(id, this.sent);
    if (this.suspended) {
      // No live raw channel to close through: close here; the peer's copy ends on the close frame.
      this.raw.close();
      this.finish();
      return;
    }
    this.raw.close();
    this.wake();
  }

  override on<K extends keyof ChannelEvents>(event: K, fn: (...args: ChannelEvents[K]) => void): () => void {
    const off = super.on(event, fn);
    if (event === 'message' && this.unread.length > 0) queueMicrotask(() => this.flushUnread());
    return off;
  }

  private deliver(d: Uint8Array | string): void {
    this.received++;
    if (this.ackOut !== null) this.countForAck(typeof d === 'string' ? d.length : d.byteLength);
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

  private countForAck(bytes: number): void {
    this.recvBytesSinceAck += bytes;
    if (++this.recvSinceAck < ACK_EVERY_MESSAGES && this.recvBytesSinceAck < ACK_EVERY_BYTES) return;
    this.flushAck();
  }

  /** @internal Sends an ack for what arrived since the last one (also called by the link's idle timer). */
  flushAck(): void {
    if (this.recvSinceAck === 0 || this.ackOut === null || this.streamId === null || this.suspended) return;
    this.recvSinceAck = 0;
    this.recvBytesSinceAck = 0;
    this.ackOut(this.streamId, this.received);
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
