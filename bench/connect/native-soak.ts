/**
 * bench/connect/native-soak.ts: many native dials in a row, each a fresh pair of endpoints (real
 * worker, node-datachannel on both sides, direct on loopback) moving 16 MiB, with every backend
 * call traced (bench/connect/traced.ts). Prints each dial's time, whether it opened only after an
 * early failure (a connection that failed before it opened, retried by `Endpoint.dial`), and the
 * whole timeline of every dial that failed. Meant to run under CPU pressure, where libdatachannel
 * 0.24.5's DTLS startup race shows (docs/BENCHMARKS.md, "Native dials on one CPU core"):
 *
 *   flock /tmp/bench.lock taskset -c 0 npx tsx bench/connect/native-soak.ts [dials=100]
 *
 * `NDC_LOG=Info` adds libdatachannel's own log to the timelines.
 */
import { randomBytes } from 'node:crypto';
import { createNodeDatachannelBackend, loadNodeDatachannel } from '../../client/webrtc/node-datachannel.js';
import type { Channel } from '../../client/channel.js';
import { ourPairWith, received, startStack } from './stack.js';
import { note, timeline, traced } from './traced.js';

const N = Number(process.argv[2] ?? 100);
const MIB = 16;

async function main(): Promise<void> {
  const ndc = (await loadNodeDatachannel()) as unknown as { initLogger(l: string, cb: (l: string, m: string) => void): void } | null;
  if (!ndc) throw new Error('node-datachannel not installed');
  if (process.env.NDC_LOG) ndc.initLogger(process.env.NDC_LOG, (_l, m) => note('ndc', m));
  const stack = await startStack();
  const msg = randomBytes(16 * 1024);
  let failed = 0;
  let retried = 0;
  try {
    for (let i = 0; i < N; i++) {
      const pair = await ourPairWith(stack, 'direct', {
        hub: { backend: traced('hub', createNodeDatachannelBackend), trace: (p: string) => note('hub', `session: ${p}`) },
        app: { backend: traced('app', createNodeDatachannelBackend), trace: (p: string) => note('app', `session: ${p}`) },
      });
      timeline.start();
      try {
        const { link, peer } = await pair.dial();
        const dialMs = performance.now() - timeline.t0;
        const incoming = new Promise<Channel>((res) => peer.once('channel', res));
        const ch = await link.channel('bulk');
        const rx = await incoming;
        const done = received(rx, MIB * 1048576);
        for (let s = 0; s < MIB * 1048576; s += msg.length) await ch.send(msg);
        await done;
        const early = timeline.events.filter((e) => e.includes('app transport failed')).length;
        if (early) retried++;
        console.log(`dial ${i}: ${dialMs.toFixed(0)} ms, ok${early ? ` after ${early} early failure(s)` : ''}`);
      } catch (e) {
        failed++;
        console.log(`dial ${i}: FAILED ${(e as Error).message}`);
        for (const line of timeline.events) console.log(line);
      } finally {
        pair.close();
      }
    }
  } finally {
    await stack.close();
  }
  console.log(`${N} dials: ${failed} failed, ${retried} opened after an early failure`);
}

void main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
