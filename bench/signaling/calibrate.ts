/**
 * Checks the per-isolate CPU estimate of bench/signaling/profile.ts against /proc (run by hand):
 *
 *   npx tsx bench/signaling/calibrate.ts
 *
 * A Worker that only burns CPU in JS is profiled while it serves 20 requests; its isolate's
 * estimate (not-idle samples x median sampling period) should match the workerd thread's CPU from
 * /proc, and Miniflare's entry isolate should show little. The same check at a 500 µs sampling
 * period found the estimate off by an order of magnitude for the idle isolate, hence 100 µs.
 */
import { convertV4MiniflareOptions, Miniflare } from 'miniflare';
import { COMPATIBILITY_DATE } from '../../test/support/signaling.js';
import { profileIsolates, threadDelta, workerdThreadsMs } from './profile.js';

/** Iterations per request: ~20 ms of JS on this machine. */
const BURN = 3_000_000;
const REQUESTS = 20;
const ROUNDS = 3;

const code = `export default { fetch(req) {
  const n = Number(new URL(req.url).searchParams.get('n'));
  let x = 0;
  for (let i = 0; i < n; i++) x = (x * 31 + i) % 1000003;
  return new Response(String(x));
} };`;

const mf = new Miniflare(
  convertV4MiniflareOptions({
    modules: [{ type: 'ESModule', path: 'burn.mjs', contents: code }],
    compatibilityDate: COMPATIBILITY_DATE,
    host: '127.0.0.1',
    port: 0,
    cf: false,
    inspectorPort: 0,
  }),
);
try {
  const url = await mf.ready;
  console.log(`load: ${(await import('node:fs')).readFileSync('/proc/loadavg', 'utf8').trim()}`);
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = workerdThreadsMs();
    const isolates = await profileIsolates(await mf.getInspectorURL(), async () => {
      for (let i = 0; i < REQUESTS; i++) await (await fetch(`${url}?n=${BURN}`)).text();
    });
    const threads = threadDelta(t0, workerdThreadsMs(), 1).filter((t) => t.ms > 0);
    const est = (id: string): string => (isolates.find((i) => i.isolate === id)?.sampledMs ?? 0).toFixed(0);
    console.log(`round ${r + 1}: /proc ${threads.map((t) => `${t.thread} ${t.ms.toFixed(0)} ms`).join(', ')}; estimate core:user: ${est('core:user:')} ms, core:entry ${est('core:entry')} ms`);
  }
} finally {
  await mf.dispose();
}
