/**
 * bench/throughput/threads.ts: where a node-datachannel link's CPU goes, per thread, direct
 * against relay-to-relay through a relay process (`relay/main.ts`, cap off). Both endpoints live
 * in this process; each run moves 16 MiB of 16 KiB messages on one link, and the CPU of each of
 * this process's threads over the transfer (/proc/self/task/<tid>/stat, grouped by thread name:
 * `node` is the JavaScript thread, `RTC worker` libdatachannel's DTLS/SCTP pool, `juice poll`
 * libjuice's sockets) is summed over the runs and divided by the MiB moved. The link's SCTP
 * round trip is sampled every 20 ms during each transfer. Run by hand:
 *
 *   npx tsx bench/throughput/threads.ts direct|relay [runs=8]
 *
 * `relay` announces relayed candidates only on both sides, each endpoint on its own loopback
 * address (`relayedOnly`, test/client/relay-helpers.ts), as `bench/throughput/run.ts --relay-relay`.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import type { Channel } from '../../client/channel.js';
import type { BackendFactory } from '../../client/webrtc/backend.js';
import { createNodeDatachannelBackend } from '../../client/webrtc/node-datachannel.js';
import { RELAYED_ONLY_HOSTS, relayedOnly } from '../../test/client/relay-helpers.js';
import { ourPairWith, received, signalingFor, startRelayProcess, startStack } from '../connect/stack.js';

const mode = process.argv[2];
if (mode !== 'direct' && mode !== 'relay') throw new Error('usage: threads.ts direct|relay [runs]');
const RUNS = Number(process.argv[3] ?? 8);
const MIB = 16;
const TOTAL = MIB * 1024 * 1024;
const MSG = randomBytes(16 * 1024);
const TICK_MS = 10; // CLK_TCK 100

/** CPU ticks of each thread of this process, keyed `name#tid`. */
function threads(): Map<string, number> {
  const m = new Map<string, number>();
  for (const t of readdirSync('/proc/self/task')) {
    try {
      const comm = readFileSync(`/proc/self/task/${t}/comm`, 'latin1').trim();
      const f = readFileSync(`/proc/self/task/${t}/stat`, 'latin1').split(') ')[1]!.split(' ');
      m.set(`${comm}#${t}`, Number(f[11]) + Number(f[12]));
    } catch {
      // the thread ended meanwhile
    }
  }
  return m;
}

const ndc: BackendFactory = (o) => createNodeDatachannelBackend(o);
const relayed = relayedOnly(ndc);
const stack = await startStack();
const relay = await startRelayProcess({ portMin: 48300, portMax: 48599, bandwidth: 0 });
const sig = await signalingFor(relay.entry);
const perName: Record<string, number> = {};
const rtts: number[] = [];
const rates: string[] = [];
try {
  for (let i = 0; i < RUNS; i++) {
    const pair =
      mode === 'relay'
        ? await ourPairWith({ ...stack, sig }, 'direct', {
            hub: { backend: relayed, hostAddresses: [RELAYED_ONLY_HOSTS.answerer] },
            app: { backend: relayed, hostAddresses: [RELAYED_ONLY_HOSTS.offerer] },
          })
        : await ourPairWith({ ...stack, sig }, 'direct', { hub: { backend: ndc }, app: { backend: ndc } });
    try {
      const { link, peer } = await pair.dial();
      const incoming = new Promise<Channel>((res) => peer.once('channel', res));
      const ch = await link.channel('bulk');
      const rx = await incoming;
      const done = received(rx, TOTAL);
      const sample = setInterval(() => void link.stats().then((s) => s.rttMs !== undefined && rtts.push(s.rttMs)), 20);
      const before = threads();
      const t0 = performance.now();
      for (let sent = 0; sent < TOTAL; sent += MSG.length) await ch.send(MSG);
      await done;
      const ms = performance.now() - t0;
      clearInterval(sample);
      for (const [k, v] of threads()) {
        const name = k.slice(0, k.lastIndexOf('#'));
        perName[name] = (perName[name] ?? 0) + (v - (before.get(k) ?? v));
      }
      rates.push(`${(TOTAL / 1e6 / (ms / 1000)).toFixed(1)} (${link.path?.kind ?? '?'})`);
    } finally {
      pair.close();
    }
    await new Promise((r) => setTimeout(r, 300));
  }
} finally {
  await sig.close();
  await relay.close();
  await stack.close();
}
rtts.sort((a, b) => a - b);
const q = (p: number): number | undefined => rtts[Math.min(rtts.length - 1, Math.floor(rtts.length * p))];
console.log(`${mode}: MB/s per run ${rates.join(', ')}`);
console.log(`${mode}: SCTP RTT during transfers p50 ${q(0.5)} ms, p90 ${q(0.9)} ms (${rtts.length} samples)`);
const perMiB = Object.entries(perName).filter(([, v]) => v > 0).map(([k, v]) => [k, (v * TICK_MS) / (MIB * RUNS)] as const);
console.log(`${mode}: CPU ms per MiB by thread: ${perMiB.map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')}; total ${perMiB.reduce((n, [, v]) => n + v, 0).toFixed(2)}`);
process.exit(0);
