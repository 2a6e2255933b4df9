/**
 * What a ticketed room leaves in storage after its end (run by hand, not by `npm test`):
 *
 *   npx tsx bench/signaling/room-leftovers.ts [--k 5] [--before <commit>]
 *
 * K sessions, two in three between endpoints that declare room tickets (as the library does) and
 * the rest without (a room made by `init`, which stores its record), each join their room, end it
 * with `bye` and close, on a service with 3 s sessions and a 200 ms grace; past every
 * deadline and grace, each Room object's SQLite database (local workerd keeps one file per object)
 * is opened read-only and its rows counted. A Durable Object whose storage is not empty goes on
 * existing, and being billed for its storage, after its last event; Cloudflare's docs say that
 * setting an alarm is a write like any other, so only `deleteAll` empties an object that set one.
 * With `--before`, that commit's worker runs too, on its own service.
 */
import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CAP_ROOM_TICKET, TICKET_PARAM } from '../../protocol/messages.js';
import { bundleWorkerAtCommit, startSignaling } from '../../test/support/signaling.js';
import { connect, sessionPair, type Frame } from '../../test/worker/helpers.js';

/** Rows in every table of each Room database under `storage` (read from a copy: workerd has them open). */
async function roomRows(storage: string): Promise<number[]> {
  const { DatabaseSync } = await import('node:sqlite');
  const dir = join(storage, 'do');
  const rooms = readdirSync(dir).filter((d) => d.endsWith('-Room')).map((d) => join(dir, d));
  const out: number[] = [];
  const tmp = mkdtempSync(join(tmpdir(), 'homelink-leftovers-'));
  try {
    for (const r of rooms) {
      for (const f of readdirSync(r).filter((f) => f.endsWith('.sqlite') && f !== 'metadata.sqlite')) {
        const copy = join(tmp, f);
        for (const ext of ['', '-wal', '-shm']) if (existsSync(join(r, f + ext))) copyFileSync(join(r, f + ext), copy + ext);
        const db = new DatabaseSync(copy);
        let rows = 0;
        for (const t of db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as Array<{ name: string }>) {
          rows += (db.prepare(`SELECT count(*) AS n FROM "${t.name.replace(/"/g, '""')}"`).get() as { n: number }).n;
        }
        db.close();
        out.push(rows);
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return out;
}

async function run(label: string, k: number, bundle?: string): Promise<void> {
  const sig = await startSignaling({ sessionTtlSeconds: 3, roomGraceMs: 200, ...(bundle !== undefined ? { bundle } : {}) });
  try {
    for (let i = 0; i < k; i++) {
      // Every third session without tickets: its room is made by `init` and stores its record.
      const caps = i % 3 === 2 ? '' : CAP_ROOM_TICKET;
      const p = await sessionPair(sig, `left${i}`, caps, caps);
      const path = (s: Frame): string => `/v1/rooms/${s.sessionId as string}${s.ticket !== undefined ? `?${TICKET_PARAM}=${s.ticket as string}` : ''}`;
      const ra = await connect(sig.url, path(p.sa), p.at);
      await ra.next('joined');
      const rb = await connect(sig.url, path(p.sb), p.ht);
      await rb.next('joined');
      rb.send({ type: 'signal', data: { kind: 'bye' } });
      await ra.next('closed');
      for (const x of [ra, rb, p.app, p.hub]) x.close();
    }
    // Past every deadline (3 s) and grace, with a margin for the alarms to run.
    await new Promise((r) => setTimeout(r, 6000));
    const rows = await roomRows(sig.storagePath);
    const left = rows.filter((n) => n > 0);
    console.log(`${label}: ${k} rooms ended with bye (${k - Math.floor(k / 3)} ticketed); ${rows.length} room databases, ${left.length} with rows left (${left.reduce((a, b) => a + b, 0)} rows)`);
  } finally {
    await sig.close();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { k: { type: 'string', default: '5' }, before: { type: 'string' } } });
  const k = Number(values.k);
  if (!Number.isInteger(k) || k < 1 || k > 100) throw new Error('--k takes 1..100');
  await run('this tree', k);
  if (values.before !== undefined) await run(`before (${values.before})`, k, await bundleWorkerAtCommit(values.before));
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
