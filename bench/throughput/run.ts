/**
 * bench/throughput: MB/s of one reliable, ordered data channel, direct and relayed through our
 * relay, for our stack (`link.channel()` + `Channel.send()` backpressure) against bare werift
 * peers (the same 16 KiB messages, the same 1 MiB / 256 KiB buffer marks, driven by hand) in the
 * same run. Run by hand:
 *
 * The homelink rows run on both Node backends (werift, node-datachannel) in the same run.
 *
 *   npx tsx bench/throughput/run.ts [MiB=32] [rounds=3]
 */
import { randomBytes } from 'node:crypto';
import { barePair, median, ourPair, startStack } from '../connect/stack.js';
import { DEFAULT_HIGH_WATER_MARK, DEFAULT_LOW_WATER_MARK } from '../../client/channel.js';
import type { RTCDataChannel } from 'werift';

const MIB = Number(process.argv[2] ?? 32);
const ROUNDS = Number(process.argv[3] ?? 3);
const TOTAL = MIB * 1024 * 1024;
const CHUNK = randomBytes(16 * 1024);

/** Bare werift: send with bufferedAmount backpressure, resolve when the receiver has everything. */
async function bareRun(tx: RTCDataChannel, rx: RTCDataChannel): Promise<{ mbps: number; cpu: number }> {
  let got = 0;
  const done = new Promise<void>((r) => {
    const sub = rx.onMessage.subscribe((m) => {
      got += typeof m === 'string' ? m.length : m.byteLength;
      if (got >= TOTAL) {
        sub.unSubscribe();
        r();
      }
    });
  });
  tx.bufferedAmountLowThreshold = DEFAULT_LOW_WATER_MARK;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let sent = 0; sent < TOTAL; sent += CHUNK.length) {
    tx.send(CHUNK);
    if (tx.bufferedAmount > DEFAULT_HIGH_WATER_MARK) await new Promise<void>((r) => tx.bufferedAmountLow.once(() => r()));
  }
  await done;
  return { mbps: TOTAL / 1e6 / ((performance.now() - t0) / 1000), cpu: cpuMsPerMiB(c0) };
}

/** CPU of this process (both peers, and the in-process relay when relayed) per MiB moved: steadier than MB/s on a shared machine. */
function cpuMsPerMiB(c0: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(c0);
  return (d.user + d.system) / 1000 / MIB;
}

async function main(): Promise<void> {
  const stack = await startStack();
  const results: Record<string, number[]> = {};
  const cpu: Record<string, number[]> = {};
  const add = (k: string, v: { mbps: number; cpu: number }): void => {
    (results[k] ??= []).push(v.mbps);
    (cpu[k] ??= []).push(v.cpu);
    process.stderr.write(`${k}: ${v.mbps.toFixed(2)} MB/s, ${v.cpu.toFixed(0)} ms CPU/MiB\n`);
  };
  try {
    for (let r = 0; r < ROUNDS; r++) {
      for (const mode of ['direct', 'relay'] as const) {
        const bare = await barePair(stack, mode);
        add(`bare werift, ${mode}`, await bareRun(bare.ca, bare.cb));
        await bare.close();

        for (const backend of ['werift', 'node-datachannel'] as const) {
        const pair = await ourPair(stack, mode, undefined, backend);
        const { link, peer } = await pair.dial();
        const incoming = new Promise<import('../../client/channel.js').Channel>((res) => peer.once('channel', res));
        const ch = await link.channel('bulk');
        const rx = await incoming;
        let got = 0;
        const done = new Promise<void>((res) => {
          const off = rx.on('message', (m) => {
            got += typeof m === 'string' ? m.length : m.byteLength;
            if (got >= TOTAL) {
              off();
              res();
            }
          });
        });
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        for (let sent = 0; sent < TOTAL; sent += CHUNK.length) await ch.send(CHUNK);
        await done;
        add(`homelink ${backend}, ${mode}`, { mbps: TOTAL / 1e6 / ((performance.now() - t0) / 1000), cpu: cpuMsPerMiB(c0) });
        pair.close();
        }
      }
    }
  } finally {
    await stack.close();
  }
  const m = (k: string): number => median(results[k]!);
  const c = (k: string): number => median(cpu[k]!);
  console.log(`throughput, ${MIB} MiB per run, median of ${ROUNDS} rounds (cases interleaved within each round)`);
  console.log('| case | MB/s | MB/s ratio | CPU ms per MiB (this process) | CPU ratio |');
  console.log('|---|---|---|---|---|');
  const row = (k: string, base: string, note: string): void =>
    console.log(`| ${k} | ${m(k).toFixed(2)} | ${(m(k) / m(base)).toFixed(2)} ${note} | ${c(k).toFixed(0)} | ${(c(k) / c(base)).toFixed(2)} |`);
  row('bare werift, direct', 'bare werift, direct', '');
  row('bare werift, relay', 'bare werift, direct', 'of bare direct');
  for (const b of ['werift', 'node-datachannel']) {
    row(`homelink ${b}, direct`, 'bare werift, direct', 'of bare direct');
    row(`homelink ${b}, relay`, 'bare werift, relay', 'of bare relay');
    console.log(`homelink ${b} relayed / direct: ${(m(`homelink ${b}, relay`) / m(`homelink ${b}, direct`)).toFixed(2)} (MB/s)`);
  }
}

void main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
