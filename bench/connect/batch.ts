/**
 * Signal batches (client/link.ts `SignalOutbox`) against signals sent one per frame, in one run:
 * two endpoint pairs on the same service and relay, one with `signalBatchMs: 0` (each signal
 * alone, as before batches) and one with the default window, dialled in alternation so the
 * machine's drift falls on both alike. Per backend and path: time from `dial()` to an open,
 * identity-verified link (median and p90), and the ratio batched / one per frame. The frames each
 * way cost on the service is counted by bench/signaling/library.ts (`--batch-ms 0` and default).
 *
 *   npx tsx bench/connect/batch.ts [rounds=20]
 */
import { SIGNAL_BATCH_MS } from '../../client/endpoint.js';
import { median, ourPairWith, quantile, startStack, type OurPair } from './stack.js';

const ROUNDS = Number(process.argv[2] ?? 20);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1 || ROUNDS > 500) throw new Error('rounds: 1..500');
const BACKENDS = ['werift', 'node-datachannel'] as const;
const MODES = ['direct', 'relay'] as const;

async function dialOnce(pair: OurPair): Promise<number> {
  const t0 = performance.now();
  const { link, peer } = await pair.dial();
  const ms = performance.now() - t0;
  const closed = new Promise<void>((r) => peer.once('close', () => r()));
  await link.close();
  await closed;
  return ms;
}

async function main(): Promise<void> {
  const stack = await startStack();
  const lines: string[] = [];
  try {
    for (const backend of BACKENDS) {
      for (const mode of MODES) {
        const ca = mode === 'direct' ? {} : { turnTlsOptions: { ca: stack.relay.ca } };
        const side = (signalBatchMs: number) => ({ webrtcBackend: backend, signalBatchMs, ...ca });
        const single = await ourPairWith(stack, mode, { hub: side(0), app: side(0) });
        const batched = await ourPairWith(stack, mode, { hub: side(SIGNAL_BATCH_MS), app: side(SIGNAL_BATCH_MS) });
        const ms = { single: [] as number[], batched: [] as number[] };
        try {
          // Warm-up, not measured: JIT on both sides, the rooms' code paths.
          await dialOnce(single);
          await dialOnce(batched);
          for (let i = 0; i < ROUNDS; i++) {
            // Alternate which goes first, so neither always follows the other's teardown.
            const order = i % 2 === 0 ? (['single', 'batched'] as const) : (['batched', 'single'] as const);
            for (const k of order) ms[k].push(await dialOnce(k === 'single' ? single : batched));
          }
        } finally {
          single.close();
          batched.close();
        }
        const m = { single: median(ms.single), batched: median(ms.batched) };
        const row = `| ${backend} | ${mode} | ${m.single.toFixed(1)} / ${quantile(ms.single, 0.9).toFixed(1)} | ${m.batched.toFixed(1)} / ${quantile(ms.batched, 0.9).toFixed(1)} | ${(m.batched / m.single).toFixed(2)} |`;
        process.stderr.write(`${row}\n`);
        lines.push(row);
      }
    }
  } finally {
    await stack.close();
  }
  console.log(`dial() to an open, verified link, ${ROUNDS} rounds alternated, ms (median / p90); window ${SIGNAL_BATCH_MS} ms\n`);
  console.log('| backend | path | one signal per frame | batched | ratio of medians |');
  console.log('|---|---|---:|---:|---:|');
  for (const l of lines) console.log(l);
}

await main();
