/**
 * bench/connect/traced.ts: a timeline of one dial on node-datachannel, shared by the benches that
 * print one. `traced(who, factory)` wraps a backend factory so that every backend call and event
 * (descriptions, each candidate sent and received, transport states, channel opens) lands in
 * `timeline.events` as ms since `timeline.start()`; `note` adds lines of the caller's own.
 */
import type { BackendFactory, PeerBackend, RawChannel } from '../../client/webrtc/backend.js';

export const timeline = {
  t0: 0,
  events: [] as string[],
  /** Clears the events and starts the clock. */
  start(): void {
    this.events.length = 0;
    this.t0 = performance.now();
  },
};

export const note = (who: string, what: string): void => {
  timeline.events.push(`${(performance.now() - timeline.t0).toFixed(1).padStart(7)} ${who.padEnd(3)} ${what}`);
};

export function traced(who: string, factory: BackendFactory): BackendFactory {
  return async (opts) => {
    const b = await factory(opts);
    const wrapChannel = (ch: RawChannel, how: string): RawChannel => {
      note(who, `${how} channel ${ch.label} (${ch.state})`);
      const prev = Object.getOwnPropertyDescriptor(ch, 'onOpen');
      let userOpen: (() => void) | null = (prev?.value as (() => void) | null) ?? null;
      Object.defineProperty(ch, 'onOpen', {
        configurable: true,
        get: () => () => {
          note(who, `channel ${ch.label} open`);
          userOpen?.();
        },
        set: (fn: (() => void) | null) => void (userOpen = fn),
      });
      return ch;
    };
    const wrapped: PeerBackend = new Proxy(b, {
      get(target, prop, recv) {
        const v = Reflect.get(target, prop, recv) as unknown;
        if (typeof v !== 'function') return v;
        if (prop === 'createOffer' || prop === 'acceptOffer' || prop === 'acceptAnswer') {
          return async (...a: unknown[]) => {
            note(who, `${String(prop)} start`);
            const r = await (v as (...x: unknown[]) => Promise<unknown>).apply(target, a);
            note(who, `${String(prop)} done`);
            return r;
          };
        }
        if (prop === 'addCandidate') {
          return async (c: { candidate: string } | null) => {
            note(who, `add remote candidate ${c ? c.candidate.split(' ').slice(4, 8).join(' ') : 'end'}`);
            return (v as (x: unknown) => Promise<void>).call(target, c);
          };
        }
        if (prop === 'createChannel') return (...a: unknown[]) => wrapChannel((v as (...x: unknown[]) => RawChannel).apply(target, a), 'created');
        return (v as (...x: unknown[]) => unknown).bind(target);
      },
      set(target, prop, value: unknown) {
        if (prop === 'onCandidate') {
          const fn = value as (c: { candidate: string } | null) => void;
          return Reflect.set(target, prop, (c: { candidate: string } | null) => {
            note(who, `local candidate ${c ? c.candidate.split(' ').slice(4, 8).join(' ') : 'end (gathering complete)'}`);
            fn(c);
          });
        }
        if (prop === 'onState') {
          const fn = value as (s: string) => void;
          return Reflect.set(target, prop, (s: string) => {
            note(who, `transport ${s}`);
            fn(s);
          });
        }
        if (prop === 'onChannel') {
          const fn = value as (c: RawChannel) => void;
          return Reflect.set(target, prop, (c: RawChannel) => fn(wrapChannel(c, 'remote')));
        }
        return Reflect.set(target, prop, value);
      },
    });
    return wrapped;
  };
}
