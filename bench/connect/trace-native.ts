/**
 * bench/connect/trace-native.ts: where the time of one homelink dial on node-datachannel goes.
 * Wraps the native backend of both endpoints and prints, per dial, the ms since `dial()` of every
 * backend call and event (descriptions, each candidate sent and received, transport states,
 * channel opens) merged with the session trace, and optionally libdatachannel's own log.
 *
 *   npx tsx bench/connect/trace-native.ts [dials=3] [--log Debug] [--mode direct|relay] [--frames]
 *
 * `--frames`: also every signaling frame each side sends and receives (its type; for a signal
 * frame the signal kinds), and when each socket opens.
 */
import { createNodeDatachannelBackend, loadNodeDatachannel } from '../../client/webrtc/node-datachannel.js';
import { ourPairWith, startStack } from './stack.js';
import { note, timeline, traced } from './traced.js';
import { nodeWebSocket } from '../../client/node-websocket.js';
import type { WebSocketFactory } from '../../client/signaling.js';

const args = process.argv.slice(2);
const DIALS = Number(args.find((a) => /^\d+$/.test(a)) ?? 3);
const logLevel = args.includes('--log') ? args[args.indexOf('--log') + 1] : undefined;
const mode = args.includes('--mode') ? (args[args.indexOf('--mode') + 1] as 'direct' | 'relay') : 'direct';
const frames = args.includes('--frames');

/** What a frame is, without its contents: its type, and a signal frame's signal kinds. */
function kindOf(data: unknown): string {
  try {
    const f = JSON.parse(String(data)) as { type?: string; data?: { kind?: string; items?: { kind?: string }[] } };
    const d = f.data;
    const kinds = d?.kind === 'batch' ? (d.items ?? []).map((i) => i.kind).join('+') : d?.kind;
    return kinds ? `${f.type}(${kinds})` : String(f.type);
  } catch {
    return '?';
  }
}

/** The Node socket, noting each frame and the open on the timeline. */
function tracedSocket(who: string): WebSocketFactory {
  return (url, protocols) => {
    const ws = nodeWebSocket(url, protocols);
    const path = new URL(url).pathname.startsWith('/v1/rooms') ? 'room' : 'presence';
    const send = ws.send.bind(ws);
    ws.send = (d) => {
      note(who, `${path} sends ${kindOf(d)}`);
      send(d);
    };
    let onmessage: typeof ws.onmessage = null;
    let onopen: typeof ws.onopen = null;
    Object.defineProperty(ws, 'onmessage', {
      get: () => (onmessage ? (ev: { data: unknown }) => (note(who, `${path} got ${kindOf(ev.data)}`), onmessage!(ev)) : null),
      set: (fn: typeof ws.onmessage) => void (onmessage = fn),
    });
    Object.defineProperty(ws, 'onopen', {
      get: () => (onopen ? (ev: unknown) => (note(who, `${path} open`), onopen!(ev)) : null),
      set: (fn: typeof ws.onopen) => void (onopen = fn),
    });
    return ws;
  };
}

async function main(): Promise<void> {
  const ndc = (await loadNodeDatachannel()) as unknown as { initLogger(l: string, cb: (l: string, m: string) => void): void } | null;
  if (!ndc) throw new Error('node-datachannel not installed');
  if (logLevel) ndc.initLogger(logLevel, (_l, m) => note('ndc', m));
  const stack = await startStack();
  try {
    const pair = await ourPairWith(stack, mode, {
      hub: { backend: traced('hub', createNodeDatachannelBackend), trace: (p: string) => note('hub', `session: ${p}`), ...(frames ? { webSocket: tracedSocket('hub') } : {}) },
      app: { backend: traced('app', createNodeDatachannelBackend), trace: (p: string) => note('app', `session: ${p}`), ...(frames ? { webSocket: tracedSocket('app') } : {}) },
    });
    for (let i = 0; i < DIALS + 1; i++) {
      timeline.start();
      const { link } = await pair.dial();
      const total = performance.now() - timeline.t0;
      if (i > 0 || DIALS === 0) {
        console.log(`--- dial ${i}: ${total.toFixed(1)} ms`);
        for (const e of timeline.events) console.log(e);
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
