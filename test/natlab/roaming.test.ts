/**
 * Network change mid-transfer (issue 9, item 2): the app host (the dialer) is renumbered on its
 * LAN, or moved to another home behind a different NAT, while it sends a large transfer to the
 * hub. The link must notice the local address change, restart ICE from the new address (fresh
 * host, server-reflexive and relayed candidates on new sockets) and finish the transfer with the
 * right SHA-256 and every chunk in order.
 *
 * The stall (longest time between two chunks at the receiver) is measured and written to
 * `test-output/paths-roaming.json` for docs/NATLAB.md; it is not asserted (a loaded machine
 * must not fail the suite), the path moving onto the new address is.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeLabTls, type LabTls } from './coturn.js';
import { Lab, type Home } from './lab.js';
import { startHomelinkStack, type HomelinkStack } from './stack-homelink.js';
import { startStreamPair, type StreamResult } from './stream-pair.js';
import { labAvailable } from './support.js';

/** The transfer size: 50 MiB (werift moves about 10 MB/s here, so about 10 s of sending). */
const TRANSFER_BYTES = 50 * 1024 * 1024;
/** The network changes once the hub has this much: well inside the transfer. */
const CHANGE_AT_BYTES = 10 * 1024 * 1024;
/** Bound on one scenario: a slow loaded machine sends 50 MiB in well under a minute. */
const SCENARIO_DEADLINE_MS = 150_000;

interface Figure {
  readonly scenario: string;
  readonly stallMs: number | undefined;
  readonly restarts: number | undefined;
  readonly pathBefore: string;
  readonly pathAfter: string;
  readonly sendMs?: number | undefined;
}
const figures: Figure[] = [];

describe.skipIf(!labAvailable())('NAT lab: network change mid-transfer', () => {
  let lab: Lab;
  let tls: LabTls;
  let stack: HomelinkStack;

  beforeAll(async () => {
    lab = await Lab.create();
    tls = makeLabTls(lab.runId);
    stack = await startHomelinkStack(lab, tls);
  });

  afterAll(async () => {
    await stack?.stop().catch(() => undefined);
    const runId = lab?.runId;
    await lab?.destroy();
    if (runId) expect(Lab.existingNamespaces(runId), 'namespaces left behind').toEqual([]);
    tls?.dispose();
    if (figures.length > 0) {
      mkdirSync('test-output', { recursive: true });
      writeFileSync('test-output/paths-roaming.json', JSON.stringify(figures, null, 2) + '\n');
    }
  });

  /** Runs one transfer, applies `change` to the dialer's host mid-way, checks the outcome. */
  async function roam(scenario: string, homes: { dialer: Home; answerer: Home }, change: () => Promise<string>): Promise<void> {
    const pair = await startStreamPair(
      lab,
      stack,
      tls.cert,
      { dialer: homes.dialer.hosts[0]!, answerer: homes.answerer.hosts[0]! },
      // The dialer discovers its interfaces itself (no pinned host address), as an app does.
      { mode: 'bulk', bytes: TRANSFER_BYTES, paceMs: 0, deadlineMs: SCENARIO_DEADLINE_MS, pinDialer: false },
    );
    try {
      const opened = await pair.dialer.waitEvent((e) => e.event === 'open', 60_000, 'link open');
      await pair.answerer.waitEvent((e) => e.event === 'progress' && (e.bytes ?? 0) >= CHANGE_AT_BYTES, 120_000, 'transfer under way');
      const newAddress = await change();
      const [d, a]: [StreamResult, StreamResult] = await Promise.all([pair.dialer.result, pair.answerer.result]);
      const after = [...pair.dialer.events].reverse().find((e) => e.event === 'path');
      figures.push({
        scenario,
        stallMs: a.longestGapMs,
        restarts: d.restarts,
        pathBefore: `${opened.kind} ${opened.local} -> ${opened.remote}`,
        pathAfter: `${d.path?.kind} ${d.path?.local} -> ${d.path?.remote}`,
        sendMs: (d as { sendMs?: number }).sendMs,
      });
      process.stdout.write(`roaming ${scenario}: stall ${a.longestGapMs} ms, restarts ${d.restarts}, path ${figures.at(-1)!.pathBefore} => ${figures.at(-1)!.pathAfter}\n`);
      expect(d.error, 'dialer').toBeUndefined();
      expect(a.error, 'answerer').toBeUndefined();
      expect(d.ok && a.ok).toBe(true);
      expect(a.bytes).toBe(TRANSFER_BYTES);
      expect(a.sha256).toBe(d.sha256);
      expect(d.restarts, 'ICE restarts').toBeGreaterThanOrEqual(1);
      // The path now leaves from the new address (a host candidate there, or a relayed or
      // server-reflexive one whose base is there: the selected local candidate is what we see).
      expect(after, 'a path event after the change').toBeDefined();
      expect(d.path?.local.startsWith(`${opened.local?.split(':')[0]}:`), 'path still on the old address').toBe(false);
      expect(newAddress).not.toBe(homes.dialer.hosts[0]!.address);
    } finally {
      await pair.stop();
    }
  }

  it('renumbering the app host on its LAN mid-transfer: ICE restarts from the new address, the transfer completes intact', async () => {
    const home = await lab.addHome('port-restricted');
    const hub = await lab.addHome('port-restricted');
    try {
      await roam('renumber on the same LAN (port-restricted, hub port-restricted)', { dialer: home, answerer: hub }, async () => (await lab.renumberHost(home, home.hosts[0]!)).address);
    } finally {
      await lab.removeHome(home);
      await lab.removeHome(hub);
    }
  });

  it('moving the app host to another home (a different NAT) mid-transfer: ICE restarts there, the transfer completes intact', async () => {
    const home = await lab.addHome('port-restricted');
    const away = await lab.addHome('full-cone');
    const hub = await lab.addHome('port-restricted');
    try {
      await roam('move to another home (port-restricted -> full-cone, hub port-restricted)', { dialer: home, answerer: hub }, async () => (await lab.moveHost(home.hosts[0]!, away)).address);
    } finally {
      await lab.removeHome(home);
      await lab.removeHome(away);
      await lab.removeHome(hub);
    }
  });
});
