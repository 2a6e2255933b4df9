/**
 * bench/connect: time from `dial()` to an open, identity-verified link, direct and relayed, and
 * relayed with UDP to the relay black-holed (only TURN over TCP/TLS works), against two bare
 * werift peers exchanging offer/answer in-process (no signaling service, no identity) in the same
 * run, and werift handed the service's URLs as they come with UDP blocked. Run by hand:
 *
 * Each homelink row runs on both Node backends (werift, node-datachannel) in the same run;
 * node-datachannel skips `relay-udp-blocked` (libjuice relays over UDP only).
 *
 *   npx tsx bench/connect/run.ts [iterations=10]
 */
import { barePair, median, ourPair, quantile, startStack } from './stack.js';

const N = Number(process.argv[2] ?? 10);
const BACKENDS = ['werift', 'node-datachannel'] as const;

async function main(): Promise<void> {
  const stack = await startStack();
  const rows: Array<{ name: string; ms: number[] }> = [];
  const naive: string[] = [];
  const phases: Array<{ mode: string; perPhase: Record<string, number[]> }> = [];
  const kinds: Record<string, string[]> = {};
  const time = async (name: string, fn: () => Promise<() => Promise<void> | void>): Promise<void> => {
    const ms: number[] = [];
    for (let i = 0; i < N + 1; i++) {
      const t0 = performance.now();
      const done = await fn();
      const dt = performance.now() - t0;
      if (i > 0) ms.push(dt); // first run warms up JIT and the worker's isolates
      process.stderr.write(`${name}: ${dt.toFixed(0)} ms\n`);
      await done();
    }
    rows.push({ name, ms });
  };
  try {
    await time('bare werift, direct (in-process offer/answer)', async () => {
      const p = await barePair(stack, 'direct');
      return () => p.close();
    });
    await time('bare werift, relay (TURN/UDP)', async () => {
      const p = await barePair(stack, 'relay');
      return () => p.close();
    });
    // werift given the service's URLs as they come, UDP black-holed: at most 2 tries, 15 s cap each.
    for (let i = 0; i < 2; i++) {
      const t0 = performance.now();
      const p = barePair(stack, 'relay-udp-blocked');
      const r = await Promise.race([p.then(() => 'ok'), new Promise<string>((res) => setTimeout(() => res('timeout'), 15_000))]);
      naive.push(r === 'ok' ? `${(performance.now() - t0).toFixed(0)} ms` : 'no link within 15 s');
      void p.then((x) => x.close(), () => undefined);
    }
    process.stderr.write(`naive werift, UDP blocked: ${naive.join(', ')}\n`);
    for (const backend of BACKENDS)
    for (const mode of ['direct', 'relay', 'relay-udp-blocked'] as const) {
      if (backend === 'node-datachannel' && mode === 'relay-udp-blocked') continue;
      let t0 = 0;
      let current: Record<string, number> = {};
      const perPhase: Record<string, number[]> = {};
      const pair = await ourPair(stack, mode, (side, phase) => {
        const k = `${side}:${phase}`;
        if (current[k] === undefined) current[k] = performance.now() - t0;
      }, backend);
      await time(`homelink dial, ${backend}, ${mode}`, async () => {
        current = {};
        t0 = performance.now();
        const { link } = await pair.dial();
        for (const [k, v] of Object.entries(current)) (perPhase[k] ??= []).push(v);
        // The path each dial ended on: a relay case that ended direct is not a relayed figure.
        (kinds[`${backend}, ${mode}`] ??= []).push(link.path?.kind ?? '?');
        return () => link.close();
      });
      pair.close();
      phases.push({ mode: `${backend}, ${mode}`, perPhase });
    }
  } finally {
    await stack.close();
  }
  const base = { direct: median(rows[0]!.ms), relay: median(rows[1]!.ms) };
  console.log(`connect, ${N} iterations each (after 1 warm-up)`);
  console.log('| case | median ms | p90 ms | vs bare werift (same path) |');
  console.log('|---|---|---|---|');
  for (const r of rows) {
    const b = r.name.includes('direct') && !r.name.includes('blocked') ? base.direct : base.relay;
    console.log(`| ${r.name} | ${median(r.ms).toFixed(0)} | ${quantile(r.ms, 0.9).toFixed(0)} | ${(median(r.ms) / b).toFixed(2)}x |`);
  }
  console.log(`| bare werift, UDP to the relay blocked, service URL order as given | ${naive.join('; ')} | | |`);
  console.log('\npath each homelink dial ended on (warm-up first):');
  for (const [k, v] of Object.entries(kinds)) console.log(`- ${k}: ${v.join(', ')}`);
  console.log('\nphases of homelink dial, median ms since dial() (app = dialer, hub = acceptor):');
  for (const p of phases) {
    const list = Object.entries(p.perPhase)
      .map(([k, v]) => [k, median(v)] as const)
      .sort((a, b) => a[1] - b[1])
      .map(([k, v]) => `${k} ${v.toFixed(0)}`);
    console.log(`- ${p.mode}: ${list.join(', ')}`);
  }
}

void main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
