/**
 * Application keepalive for one signaling socket, as a sans-IO state machine (time is passed in;
 * `client/signaling.ts` owns the timer and the socket).
 *
 * Why: a NAT or firewall that loses the TCP mapping of an idle socket (idle timeout, reboot,
 * conntrack flush) drops its packets without a RST, so neither side's TCP notices for many
 * minutes (RFC 5382 §5: mappings of idle connections may be dropped; TCP retransmits only when it
 * has data in flight). A hub then stays "online" at the service but unreachable. Sending a ping
 * on an idle socket both refreshes the mapping and, when no answer comes back, proves the path
 * dead so the socket is replaced by a fresh connection (a new mapping).
 *
 * Rules (protocol/messages.ts, "Keepalive"):
 *  - any frame received is proof of life, so a busy socket never pings;
 *  - after `intervalMs` without a received frame, send one `PING_FRAME`;
 *  - no frame at all within `timeoutMs` after that ping: the path is dead.
 * The service answers a ping with `PONG_FRAME` (Durable Object auto-response); a service that
 * does not know pings answers with an `error` frame, which counts as life just the same.
 */
import { KEEPALIVE_INTERVAL_MS, KEEPALIVE_TIMEOUT_MS } from '../protocol/messages.js';

export interface KeepaliveOptions {
  /** Ping after this long without a received frame (default `KEEPALIVE_INTERVAL_MS`, 25 s). */
  readonly intervalMs?: number;
  /** Declare the path dead when nothing arrived this long after a ping (default `KEEPALIVE_TIMEOUT_MS`, 10 s). */
  readonly timeoutMs?: number;
}

export type KeepaliveVerdict = 'ping' | 'dead' | null;

/** Smallest interval or timeout accepted: a guard against a busy loop from a bad option. */
export const MIN_KEEPALIVE_MS = 50;

export class Keepalive {
  readonly intervalMs: number;
  readonly timeoutMs: number;
  private lastReceived: number;
  /** When the outstanding ping left, or null when none is outstanding. */
  private pingSentAt: number | null = null;

  constructor(now: number, opts: KeepaliveOptions = {}) {
    this.intervalMs = Math.max(MIN_KEEPALIVE_MS, opts.intervalMs ?? KEEPALIVE_INTERVAL_MS);
    this.timeoutMs = Math.max(MIN_KEEPALIVE_MS, opts.timeoutMs ?? KEEPALIVE_TIMEOUT_MS);
    this.lastReceived = now;
  }

  /** A frame (any frame: a pong, a message, even one that failed to parse) arrived. */
  received(now: number): void {
    this.lastReceived = now;
    this.pingSentAt = null;
  }

  /** Whether a ping is waiting for its answer. */
  get awaitingPong(): boolean {
    return this.pingSentAt !== null;
  }

  /** When `poll` has something to say next (the driver sets its one timer for this). */
  nextAt(): number {
    return this.pingSentAt !== null ? this.pingSentAt + this.timeoutMs : this.lastReceived + this.intervalMs;
  }

  /** What to do now: send a ping, give the socket up, or nothing yet. */
  poll(now: number): KeepaliveVerdict {
    if (this.pingSentAt !== null) return now >= this.pingSentAt + this.timeoutMs ? 'dead' : null;
    if (now >= this.lastReceived + this.intervalMs) {
      this.pingSentAt = now;
      return 'ping';
    }
    return null;
  }
}
