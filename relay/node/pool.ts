/**
 * The relay port pool: the ports of one process's range not in use, handed out
 * in random order (RFC 8656 §7.2: relayed transport addresses should be hard to
 * predict), returned on release. A port that fails to bind (taken by another
 * program) goes back at the end of the line.
 */
import { randomInt } from 'node:crypto';

/** A pool of UDP relay ports. */
export class RelayPortPool {
  private readonly free: number[] = [];

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
}
