/**
 * What a Durable Object costs by itself in local workerd (run by hand, not by `npm test`):
 *
 *   npx tsx bench/signaling/do-cost.ts [--n 300] [--rounds 2]
 *
 * bench/signaling/run.ts shows where an exchange's CPU goes by function; this asks the question
 * underneath it: how much of that is the per-session room object being created, and how much its
 * SQLite storage (the one row, the alarm, the deletion), apart from our code. A minimal Durable
 * Object class (SQLite-backed, as ours are) is called once per object by RPC, N objects at a time,
 * in these modes; each mode runs on a fresh workerd so no object or file is left from another:
 *
 * - `same object`: every call to one of 4 live objects (the cost of an RPC call alone, the baseline);
 * - `new object`: every call to a new object that touches no storage;
 * - `+ kv.get`: the new object reads a key (what our room's constructor does);
 * - `+ kv.put`: and writes one row (the room row);
 * - `+ setAlarm`: and sets an alarm (the room's one alarm);
 * - `+ deleteAll`: and then deletes everything (the room's end).
 *
 * The figure is workerd's whole-process CPU (/proc, every thread) per call, so it includes
 * Miniflare's proxy and the runtime's I/O; the differences between modes are the point, each
 * also given as a ratio to the baseline of the same round.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { convertV4MiniflareOptions, Miniflare } from 'miniflare';
import { COMPATIBILITY_DATE } from '../../test/support/signaling.js';
import { childCpuMs } from './profile.js';

const MODES = ['same', 'none', 'get', 'put', 'alarm', 'delete'] as const;
type Mode = (typeof MODES)[number];
const LABEL: Record<Mode, string> = {
  same: 'same object (RPC only)',
  none: 'new object',
  get: 'new object + kv.get',
  put: '+ kv.put (one row)',
  alarm: '+ setAlarm',
  delete: '+ deleteAll',
};

/** The object and a Worker that makes `n` calls at once and answers when all are done. */
const CODE = `
import { DurableObject } from 'cloudflare:workers';
export class D extends DurableObject {
  async go(mode) {
    const s = this.ctx.storage;
    if (mode === 'same' || mode === 'none') return 0;
    s.kv.get('room');
    if (mode === 'get') return 1;
    s.kv.put('room', { meta: { sessionId: 'x'.repeat(22), initiator: 'app-1', responder: 'hub-1', deadline: Date.now() }, ended: null });
    if (mode === 'put') return 2;
    await s.setAlarm(Date.now() + 3_600_000);
    if (mode === 'alarm') return 3;
    await s.deleteAll();
    return 4;
  }
  alarm() {}
}
export default {
  async fetch(req, env) {
    const u = new URL(req.url);
    const mode = u.searchParams.get('mode');
    const n = Number(u.searchParams.get('n'));
    const calls = [];
    for (let i = 0; i < n; i++) {
      const name = mode === 'same' ? 'fixed-' + (i % 4) : mode + '-' + crypto.randomUUID();
      calls.push(env.D.get(env.D.idFromName(name)).go(mode));
    }
    await Promise.all(calls);
    return new Response('ok');
  },
};`;

/** CPU ms per call of one mode on a fresh workerd (after a warm-up batch on the same one). */
async function measure(mode: Mode, n: number): Promise<number> {
  // In memory where there is /dev/shm, as test/support/signaling.ts keeps the service's storage.
  const dir = await mkdtemp(join('/dev/shm', 'homelink-do-cost-')).catch(() => mkdtemp(join(tmpdir(), 'homelink-do-cost-')));
  const mf = new Miniflare(
    convertV4MiniflareOptions({
      modules: [{ type: 'ESModule', path: 'index.mjs', contents: CODE }],
      compatibilityDate: COMPATIBILITY_DATE,
      durableObjects: { D: { className: 'D', useSQLite: true } },
      resourcePersistencePath: dir,
    }),
  );
  try {
    const url = await mf.ready;
    const call = async (k: number): Promise<void> => {
      const res = await fetch(`${url}?mode=${mode}&n=${k}`, { signal: AbortSignal.timeout(60_000) });
      if (!res.ok || (await res.text()) !== 'ok') throw new Error(`${mode}: ${res.status}`);
    };
    await call(50);
    const cpu0 = childCpuMs('workerd');
    await call(n);
    return (childCpuMs('workerd') - cpu0) / n;
  } finally {
    await mf.dispose();
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { n: { type: 'string', default: '300' }, rounds: { type: 'string', default: '2' } } });
  const n = Number(values.n);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(n) || n < 10 || n > 1000 || !Number.isInteger(rounds) || rounds < 1 || rounds > 5) {
    throw new Error('--n takes 10..1000, --rounds 1..5');
  }
  const figures: Record<Mode, number[]> = { same: [], none: [], get: [], put: [], alarm: [], delete: [] };
  for (let r = 0; r < rounds; r++) for (const m of MODES) figures[m].push(await measure(m, n));
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const base = median(figures.same);
  console.log(`N = ${n} calls per mode, ${rounds} round(s); workerd CPU per call (ms, whole process)\n`);
  console.log('| mode | per call (each round) | median | vs same object | added by this step |');
  console.log('|---|---:|---:|---:|---:|');
  let prev = base;
  for (const m of MODES) {
    const med = median(figures[m]);
    console.log(`| ${LABEL[m]} | ${figures[m].map((x) => x.toFixed(3)).join(' / ')} | ${med.toFixed(3)} | ${(med / base).toFixed(1)}x | ${m === 'same' ? '' : (med - prev).toFixed(3)} |`);
    prev = med;
  }
}

await main();
