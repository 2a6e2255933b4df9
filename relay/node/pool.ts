/**
 * The relay port pool: the ports of one process's range not in use, handed out
 * in random order (RFC 8656 §7.2: relayed transport addresses should be hard to
 * predict), returned on release. A port that fails to bind because another
 * socket holds it (Linux hands out ephemeral ports 32768-60999, which overlaps
 * the default relay range) is set aside and tried again only when the rest of
 * the pool is used up.
 */
import { randomInt } from 'node:crypto';

/** A pool of UDP relay ports. */
export class RelayPortPool {
  private free: number[] = [];
  private busy: number[] = [];

  /** @param min first port, @param max last port (inclusive). */
  constructor(min: number, max: number) {
    for (let p = min; p <= max; p++) this.free.push(p);
  }

  /** Ports available. */
  get available(): number {
    return this.free.length;
  }

  /** A random free port (an even one if `even`, RFC 8656 EVEN-PORT), or undefined when none is left. */
  take(even = false): number | undefined {
    if (this.free.length === 0 && this.busy.length > 0) {
      this.free = this.busy;
      this.busy = [];
    }
    const n = this.free.length;
    if (n === 0) return undefined;
    let i = randomInt(n);
    if (even) {
      let k = 0;
      while (k < n && this.free[(i + k) % n]! % 2 !== 0) k++;
      if (k === n) return undefined;
      i = (i + k) % n;
    }
    const port = this.free[i]!;
    this.free[i] = this.free[n - 1]!;
    this.free.pop();
    return port;
  }

  /** Returns a port to the pool. */
  give(port: number): void {
    this.free.push(port);
  }

  /** Sets aside a port another program holds, to be retried when the free ones run out. */
  setAside(port: number): void {
    this.busy.push(port);
  }
}
