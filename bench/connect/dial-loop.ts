/**
 * bench/connect/dial-loop.ts: direct homelink dials on loopback for one backend, and how long the
 * event loop of the endpoints' process was held during them: the dial time (median, p90) and,
 * per dial, the sum of the loop's stalls over 2 ms (a 1 ms timer that came late). Made to compare
 * trees A/B (`git archive` a baseline, run this script in both, alternated).
 *
 *   npx tsx bench/connect/dial-loop.ts [dials=40] [node-datachannel|werift]
 */
import type { BackendName } from '../../client/index.js';
import { ourPair, startStack } from './stack.js';

const N = Number(process.argv[2] ?? 40);
const backend = (process.argv[3] ?? 'node-datachannel') as BackendName;

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

async function main(): Promise<void> {
  const stack = await startStack();
  const pair = await ourPair(stack, 'direct', undefined, backend);
  let stalled = 0;
  let last = performance.now();
  const iv = setInterval(() => {
    const now = performance.now();
    if (now - last > 2) stalled += now - last - 1;
    last = now;
  }, 1);
  const dials: number[] = [];
  const stalls: number[] = [];
  try {
    for (let i = 0; i < N + 3; i++) {
      stalled = 0;
      const t0 = performance.now();
      const { link } = await pair.dial();
      const ms = performance.now() - t0;
      if (i >= 3) {
        dials.push(ms);
        stalls.push(stalled);
      }
      await link.close();
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    clearInterval(iv);
    pair.close();
    await stack.close();
  }
  console.log(
    `${backend} direct, ${N} dials: median ${pct(dials, 50).toFixed(1)} ms, p90 ${pct(dials, 90).toFixed(1)} ms; ` +
      `loop stalls per dial: median ${pct(stalls, 50).toFixed(1)} ms, p90 ${pct(stalls, 90).toFixed(1)} ms`,
  );
}

void main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
