/**
 * bench/connect/natlab-native.ts: connect time of node-datachannel dials in NAT lab cells (root,
 * network namespaces of its own, test/natlab/), with node-datachannel's reflexive-check ordering
 * off (the order before the fix) and on, interleaved in one run. Each cell run is a fresh pair of
 * homes and endpoint processes; the time is the dialer's, from `dial()` to the open,
 * identity-verified link. Prints each run's path as the dialer saw it.
 *
 *   flock /tmp/natlab.lock npx tsx bench/connect/natlab-native.ts [rounds=10] [cells=symmetric--symmetric]
 */
import { matrixCells, runCell } from '../../test/natlab/cells.js';
import { makeLabTls } from '../../test/natlab/coturn.js';
import { Lab } from '../../test/natlab/lab.js';
import { labAvailable, SKIP_LINE } from '../../test/natlab/support.js';
import { startHomelinkStack, type HomelinkStackOptions } from '../../test/natlab/stack-homelink.js';
import { median, quantile } from './stack.js';

const ROUNDS = Number(process.argv[2] ?? 10);
const CELLS = (process.argv[3] ?? 'symmetric--symmetric').split(',');
/** A dial this slow waited for a DTLS retransmission (OpenSSL's first one is 1 s after the ClientHello). */
const STALL_MS = 900;

async function main(): Promise<void> {
  if (!labAvailable()) return void console.log(SKIP_LINE);
  const lab = await Lab.create();
  const tls = makeLabTls(lab.runId);
  const opts: HomelinkStackOptions = { backend: 'node-datachannel' };
  const stack = await startHomelinkStack(lab, tls, opts);
  const rows: Record<string, { ms: number[]; paths: string[]; failed: number }> = {};
  try {
    for (let r = 0; r < ROUNDS; r++) {
      for (const id of CELLS) {
        const spec = matrixCells().find((c) => c.id === id);
        if (!spec) throw new Error(`no cell ${id}`);
        for (const order of [false, true]) {
          opts.nativeOptions = { orderReflexiveChecks: order };
          const res = await runCell(lab, stack, spec);
          const row = (rows[`${id}, reflexive-check order ${order ? 'on (after)' : 'off (before)'}`] ??= { ms: [], paths: [], failed: 0 });
          const p = res.dialer.path;
          if (res.transferOk && res.dialer.openMs !== undefined) row.ms.push(res.dialer.openMs);
          else row.failed++;
          row.paths.push(p ? `${p.kind} ${p.local}-${p.remote}` : `none (${res.error ?? '?'})`);
          process.stderr.write(`${id} order ${order}: ${res.dialer.openMs?.toFixed(0) ?? '-'} ms ${row.paths.at(-1)}\n`);
        }
      }
    }
  } finally {
    await stack.stop();
    await lab.destroy();
    tls.dispose();
  }
  console.log(`native dials in the NAT lab, ${ROUNDS} rounds, before/after interleaved; dialer's dial() to open link`);
  console.log('| cell, ordering | p50 ms | p95 ms | dials > 900 ms | failed | runs (ms) | paths (dialer local-remote) |');
  console.log('|---|---|---|---|---|---|---|');
  for (const [k, v] of Object.entries(rows)) {
    const paths = Object.entries(v.paths.reduce<Record<string, number>>((a, p) => ({ ...a, [p]: (a[p] ?? 0) + 1 }), {})).map(([p, n]) => `${p} x${n}`).join(', ');
    console.log(`| ${k} | ${v.ms.length ? median(v.ms).toFixed(0) : '-'} | ${v.ms.length ? quantile(v.ms, 0.95).toFixed(0) : '-'} | ${v.ms.filter((x) => x > STALL_MS).length}/${v.ms.length} | ${v.failed} | ${v.ms.map((x) => x.toFixed(0)).join(' ')} | ${paths} |`);
  }
}

void main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
