/**
 * Per-socket token bucket (sans-IO: the caller passes the time). `RATE_LIMIT` in
 * protocol/messages.ts sets the burst and refill; the bucket lives in memory only, so a
 * hibernated object wakes with a full bucket, which is harmless: a flooding socket keeps the
 * object awake.
 */
import { RATE_LIMIT } from '../protocol/messages.js';

/** Bucket state: tokens left and when they were last counted. */
export interface Bucket {
  tokens: number;
  at: number;
}

/** A full bucket at `now`. */
export const fullBucket = (now: number): Bucket => ({ tokens: RATE_LIMIT.burst, at: now });

/**
 * Takes one token; returns false (and leaves the bucket empty) when none is left.
 *
 * @example
 * const b = fullBucket(Date.now());
 * if (!take(b, Date.now())) ws.send(encode({ type: 'error', code: 'rate_limited', message: 'slow down' }));
 */
export function take(b: Bucket, now: number, limit: { burst: number; perSecond: number } = RATE_LIMIT): boolean {
  const elapsed = Math.max(0, now - b.at);
  b.tokens = Math.min(limit.burst, b.tokens + (elapsed * limit.perSecond) / 1000);
  b.at = now;
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}
