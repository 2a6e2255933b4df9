/**
 * A tiny typed event emitter, portable (Node's `events` is not available in browsers).
 * A listener that throws is isolated: the error goes to `onListenerError`, never into our state machines.
 */
export type Listener<A extends unknown[]> = (...args: A) => void;

export class Emitter<E extends { [K in keyof E]: unknown[] }> {
  private readonly listeners = new Map<keyof E, Set<Listener<never[]>>>();

  /** Called when a listener throws; defaults to rethrowing asynchronously so it is visible. */
  protected onListenerError(err: unknown): void {
    queueMicrotask(() => {
      throw err;
    });
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof E>(event: K, fn: Listener<E[K]>): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn as unknown as Listener<never[]>);
    return () => this.off(event, fn);
  }

  /** Adds a listener that runs at most once. */
  once<K extends keyof E>(event: K, fn: Listener<E[K]>): () => void {
    const off = this.on(event, ((...args: E[K]) => {
      off();
      fn(...args);
    }) as Listener<E[K]>);
    return off;
  }

  off<K extends keyof E>(event: K, fn: Listener<E[K]>): void {
    this.listeners.get(event)?.delete(fn as unknown as Listener<never[]>);
  }

  protected emit<K extends keyof E>(event: K, ...args: E[K]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        (fn as unknown as Listener<E[K]>)(...args);
      } catch (e) {
        this.onListenerError(e);
      }
    }
  }

  protected listenerCount<K extends keyof E>(event: K): number {
    return this.listeners.get(event)?.size ?? 0;
  }

  protected removeAllListeners(): void {
    this.listeners.clear();
  }
}
