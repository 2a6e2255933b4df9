/**
 * When to renew the pair room, as a sans-IO state machine (time is passed in; `client/link.ts`
 * owns the timer and sends the `renew` frame).
 *
 * Why: the service closes a room at its deadline (`SESSION_TTL_SECONDS` after accept, 10 min by
 * default). An open link outlives it easily, and without a room it can no longer restart ICE or
 * renew TURN credentials, so the first relay restart or network change after the deadline kills
 * it. The room is renewed (`renew` -> `ice_servers` with the new `deadline`) ahead of the deadline.
 *
 * Schedule: renew `RENEW_LEAD_MS` before the deadline, or at half the remaining time when less is
 * left. An unanswered renew is retried at half the time that remains, never sooner than
 * `MIN_RETRY_MS` after the previous try, and once more when the deadline has passed: a room that
 * stores nothing has no alarm to close it at its deadline (worker/room.ts `setAlarm`), and that
 * last `renew` is its first event after it, answered with `closed{deadline}`, so the room socket
 * closes instead of pinging on for the link's life. (A service that does not know `renew` answers
 * `error`; one whose room closed at its deadline has closed the socket already.)
 */

/** Renew this long before the deadline: several round trips and retries fit before it passes. */
export const RENEW_LEAD_MS = 60_000;
/** Smallest gap between two renew attempts: bounds the frames a silent service gets. */
export const MIN_RETRY_MS = 1_000;

export class RoomLease {
  private deadline: number | null = null;
  private renewAt: number | null = null;

  /** The room's deadline as the service last stated it (`joined`, or `ice_servers` after a renew). */
  update(deadline: number, now: number): void {
    if (this.deadline !== null && deadline <= this.deadline) return;
    this.deadline = deadline;
    this.renewAt = deadline - Math.min(RENEW_LEAD_MS, Math.max(0, deadline - now) / 2);
  }

  /** The room ended for good (bye, or its deadline passed): nothing more to renew. */
  stop(): void {
    this.renewAt = null;
  }

  /** When `poll` next has something to do, or null. */
  nextAt(): number | null {
    return this.renewAt;
  }

  /** True when a `renew` should be sent now: before the deadline, and one last time after it. */
  poll(now: number): boolean {
    if (this.renewAt === null || this.deadline === null || now < this.renewAt) return false;
    if (now >= this.deadline) {
      this.renewAt = null;
      return true;
    }
    this.renewAt = now + Math.max(MIN_RETRY_MS, (this.deadline - now) / 2);
    return true;
  }
}
