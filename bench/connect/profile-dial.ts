/**
 * bench/connect/profile-dial.ts: where the event loop's time goes in homelink dials. Direct
 * native dials on loopback (both endpoints and the relay in this process, as bench/connect/run.ts)
 * under V8's sampling profiler (100 µs); prints the busy time per dial and the functions by self
 * and by inclusive time, per dial. The profiler's own cost is in the figures (compare runs of
 * this script, not its figures with the unprofiled benches).
 *
 *   npx tsx bench/connect/profile-dial.ts [dials=20]
 */
import { Session } from 'node:inspector/promises';
import { ourPair, startStack } from './stack.js';
interface N { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number; children?: number[] }
const DIALS = Number(process.argv[2] ?? 20);
async function main(): Promise<void> {
  const stack = await startStack();
  const pair = await ourPair(stack, 'direct', undefined, 'node-datachannel');
  for (let i = 0; i < 3; i++) { const { link } = await pair.dial(); await link.close(); }
  const s = new Session(); s.connect();
  await s.post('Profiler.enable'); await s.post('Profiler.setSamplingInterval', { interval: 100 }); await s.post('Profiler.start');
  const t0 = performance.now(); let inDial = 0;
  for (let i = 0; i < DIALS; i++) { const a = performance.now(); const { link } = await pair.dial(); inDial += performance.now() - a; await link.close(); await new Promise((r) => setTimeout(r, 50)); }
  const { profile } = (await s.post('Profiler.stop')) as { profile: { nodes: N[]; samples: number[]; timeDeltas: number[] } };
  const wall = performance.now() - t0;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const name = (n: N) => `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.replace(/.*node_modules\//, '').replace(/.*work\/main\//, '')}:${n.callFrame.lineNumber}`;
  const self = new Map<string, number>(); const incl = new Map<string, number>();
  let total = 0, idle = 0;
  profile.samples.forEach((id, k) => {
    const dt = (profile.timeDeltas[k] ?? 0) / 1000; total += dt;
    const n = byId.get(id)!; if (n.callFrame.functionName === '(idle)') { idle += dt; return; }
    self.set(name(n), (self.get(name(n)) ?? 0) + dt);
    const seen = new Set<string>(); let cur: number | undefined = id;
    while (cur !== undefined) { const nm = name(byId.get(cur)!); if (!seen.has(nm)) { seen.add(nm); incl.set(nm, (incl.get(nm) ?? 0) + dt); } cur = parent.get(cur); }
  });
  console.log(`${DIALS} dials, wall ${wall.toFixed(0)} ms (in dial ${inDial.toFixed(0)}), profiled ${total.toFixed(0)} ms, busy ${(total - idle).toFixed(0)} ms = ${((total - idle) / DIALS).toFixed(1)} ms/dial`);
  const top = (m: Map<string, number>, k: number) => { for (const [n, v] of [...m].sort((x, y) => y[1] - x[1]).slice(0, k)) console.log(`${(v / DIALS).toFixed(2).padStart(7)} ms/dial  ${n}`); };
  console.log('--- self'); top(self, 25);
  console.log('--- inclusive'); top(incl, 60);
  pair.close(); await stack.close();
}
void main().then(() => process.exit(0), (e: unknown) => { console.error(e); process.exit(1); });
