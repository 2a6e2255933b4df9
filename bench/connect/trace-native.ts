/**
 * bench/connect/trace-native.ts: where the time of one homelink dial on node-datachannel goes.
 * Wraps the native backend of both endpoints and prints, per dial, the ms since `dial()` of every
 * backend call and event (descriptions, each candidate sent and received, transport states,
 * channel opens) merged with the session trace, and optionally libdatachannel's own log.
 *
 *   npx tsx bench/connect/trace-native.ts [dials=3] [--log Debug] [--mode direct|relay]
 */
import { createNodeDatachannelBackend, loadNodeDatachannel } from '../../client/webrtc/node-datachannel.js';
import type { BackendFactory, PeerBackend, RawChannel } from '../../client/webrtc/backend.js';
import { ourPairWith, startStack } from './stack.js';

const args = process.argv.slice(2);
const DIALS = Number(args.find((a) => /^\d+$/.test(a)) ?? 3);
const logLevel = args.includes('--log') ? args[args.indexOf('--log') + 1] : undefined;
const mode = args.includes('--mode') ? (args[args.indexOf('--mode') + 1] as 'direct' | 'relay') : 'direct';

let t0 = 0;
const events: string[] = [];
const note = (who: string, what: string): void => {
  events.push(`${(performance.now() - t0).toFixed(1).padStart(7)} ${who.padEnd(3)} ${what}`);
};

function traced(who: string, factory: BackendFactory): BackendFactory {
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

async function main(): Promise<void> {
  const ndc = (await loadNodeDatachannel()) as unknown as { initLogger(l: string, cb: (l: string, m: string) => void): void } | null;
  if (!ndc) throw new Error('node-datachannel not installed');
  if (logLevel) ndc.initLogger(logLevel, (_l, m) => note('ndc', m));
  const stack = await startStack();
  try {
    const pair = await ourPairWith(stack, mode, {
      hub: { backend: traced('hub', createNodeDatachannelBackend), trace: (p: string) => note('hub', `session: ${p}`) },
      app: { backend: traced('app', createNodeDatachannelBackend), trace: (p: string) => note('app', `session: ${p}`) },
    });
    for (let i = 0; i < DIALS + 1; i++) {
      events.length = 0;
      t0 = performance.now();
      const { link } = await pair.dial();
      const total = performance.now() - t0;
      if (i > 0 || DIALS === 0) {
        console.log(`--- dial ${i}: ${total.toFixed(1)} ms`);
        for (const e of events) console.log(e);
      }
      await link.close();
    }
    pair.close();
  } finally {
    await stack.close();
  }
}

void main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
