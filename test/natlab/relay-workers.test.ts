/**
 * Relay-to-relay links through a relay running two worker processes on one advertised port.
 *
 * Two homes whose firewalls drop UDP reach nothing but the relay, over TCP/TLS, so each end
 * relays and names the other end's relayed address as its peer (allocation to allocation).
 * The kernel hashes each client's connection to one of the relay's workers. When both
 * allocations land on one worker its packets go from one allocation to the other inside the
 * process (hairpin); when they land on two, through the kernel, from one worker's relay socket
 * to the other's. Until the workers admitted each other's relay ports as peers, that second case
 * (half of all such pairs with two workers) was refused with 403 and the link never came up.
 *
 * Cells run one after another until two pairs split over the workers (at most 10 cells: no
 * split in 10 has probability 2^-10); which case a pair hit shows in the relay's hairpin
 * counter (a pair on one worker moves hundreds of packets through it, a split pair none).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { failedCells, matrixCells, runCell, type CellResult } from './cells.js';
import { makeLabTls, type LabTls } from './coturn.js';
import { Lab } from './lab.js';
import { startHomelinkStack, type HomelinkStack } from './stack-homelink.js';
import { labAvailable } from './support.js';

/** Relay metrics inside `pub` (loopback there). */
const METRICS_PORT = 9478;
/** Workers push their counters to the primary every second. */
const COUNTER_PUSH_MS = 1_500;
const MAX_CELLS = 10;
const SPLITS_WANTED = 2;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe.skipIf(!labAvailable())('NAT lab: relay-to-relay through a two-worker relay', () => {
  let lab: Lab;
  let tls: LabTls;
  let stack: HomelinkStack;

  beforeAll(async () => {
    lab = await Lab.create();
    tls = makeLabTls(lab.runId);
    stack = await startHomelinkStack(lab, tls, { metricsPort: METRICS_PORT, relayWorkers: 2 });
  });

  afterAll(async () => {
    await stack?.stop().catch(() => undefined);
    const runId = lab?.runId;
    await lab?.destroy();
    if (runId) expect(Lab.existingNamespaces(runId), 'namespaces left behind').toEqual([]);
    tls?.dispose();
  });

  it('both UDP-blocked homes link over the relay whether their allocations share a worker or not', async () => {
    const spec = matrixCells().find((c) => c.id === 'udp-blocked--udp-blocked')!;
    expect(spec.expected).toBe('relay');
    const results: CellResult[] = [];
    const hairpinned: number[] = [];
    let splits = 0;
    while (results.length < MAX_CELLS && splits < SPLITS_WANTED) {
      await sleep(COUNTER_PUSH_MS);
      const before = await stack.metric('hairpin_packets_total');
      const r = await runCell(lab, stack, spec);
      results.push(r);
      await sleep(COUNTER_PUSH_MS);
      const n = (await stack.metric('hairpin_packets_total')) - before;
      hairpinned.push(n);
      if (r.kind !== 'none' && n === 0) splits++;
      if (r.kind === 'none') break;
    }
    console.log(`relay workers: ${results.length} pairs, ${splits} split over the two workers, hairpinned packets per pair: ${hairpinned.join(', ')}`);
    const { failed, message } = failedCells(results);
    expect(failed, message).toEqual([]);
    expect(results.filter((r) => r.kind !== 'relay').map((r) => r.kind), 'pairs not on the relay').toEqual([]);
    expect(splits, `pairs split over the workers in ${results.length}`).toBeGreaterThan(0);
  });
});
