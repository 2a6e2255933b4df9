/**
 * A min-heap of deadlines with at most one entry per entity: refreshing an
 * entity moves its `expiresAt` but never pushes a second entry, so a client
 * refreshing in a loop cannot grow the heap. When an entry comes due and its
 * entity was refreshed meanwhile, it is pushed again at the new deadline.
 */

/** Something that expires: allocations, permissions, channel bindings. */
export interface Expiring {
  expiresAt: number;
  /** True while this entity has an entry in the heap. */
  scheduled: boolean;
  /** True once removed; its heap entry is then skipped. */
  dead: boolean;
}

/** Binary min-heap on `expiresAt` at insertion time. */
export class DeadlineHeap<T extends Expiring> {
  private readonly at: number[] = [];
  private readonly items: T[] = [];

  get size(): number {
    return this.items.length;
  }

  /** Adds `item` unless it already has an entry. */
  schedule(item: T): void {
    if (item.scheduled) return;
    item.scheduled = true;
    this.at.push(item.expiresAt);
    this.items.push(item);
    let i = this.items.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.at[p]! <= this.at[i]!) break;
      this.swap(i, p);
      i = p;
    }
  }

  /**
   * Drops the entries of dead entities and rebuilds the heap. Callers run it when dead entries
   * outnumber live ones, so deleting and re-creating allocations in a loop cannot grow the heap.
   */
  compact(): void {
    let w = 0;
    for (let i = 0; i < this.items.length; i++) {
      const it = this.items[i]!;
      if (it.dead) {
        it.scheduled = false;
        continue;
      }
      this.items[w] = it;
      this.at[w] = this.at[i]!;
      w++;
    }
    this.items.length = w;
    this.at.length = w;
    for (let i = (w >> 1) - 1; i >= 0; i--) this.siftDown(i);
  }

  /** Earliest scheduled deadline, or undefined when empty. */
  peek(): number | undefined {
    return this.at[0];
  }

  /** Removes and returns the earliest entry if it is due at `now`. */
  popDue(now: number): T | undefined {
    if (this.items.length === 0 || this.at[0]! > now) return undefined;
    const top = this.items[0]!;
    const lastAt = this.at.pop()!;
    const last = this.items.pop()!;
    if (this.items.length > 0) {
      this.at[0] = lastAt;
      this.items[0] = last;
      this.siftDown(0);
    }
    top.scheduled = false;
    return top;
  }

  private siftDown(start: number): void {
    let i = start;
    for (;;) {
      const l = i * 2 + 1;
      const r = l + 1;
      let m = i;
      if (l < this.items.length && this.at[l]! < this.at[m]!) m = l;
      if (r < this.items.length && this.at[r]! < this.at[m]!) m = r;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
  }

  private swap(a: number, b: number): void {
    const t = this.at[a]!;
    this.at[a] = this.at[b]!;
    this.at[b] = t;
    const u = this.items[a]!;
    this.items[a] = this.items[b]!;
    this.items[b] = u;
  }
}
