/**
 * Relay-to-direct upgrade (issue 9, item 3): two homes behind port-restricted NATs (direct
 * possible in theory) with a firewall rule on the app's router dropping UDP to and from the hub's
 * home, so the link opens relayed. The rule is lifted while a paced, sequence-numbered stream
 * flows; within two direct-retry intervals the link must switch to a direct path, and the stream
 * must arrive whole (every chunk once, in order, SHA-256 equal).
 *
 * The time from lifting the rule to the direct path is written to
 * `test-output/paths-upgrade.json` for docs/NATLAB.md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeLabTls, type LabTls } from './coturn.js';
import { Lab } from './lab.js';
import { startHomelinkStack, type HomelinkStack } from './stack-homelink.js';
import { startStreamPair, type StreamResult } from './stream-pair.js';
import { labAvailable } from './support.js';

/** Shortened retry interval (the default is 60 s): the assertion is "within 2 intervals". */
const DIRECT_RETRY_MS = 10_000;
/** How long the link runs relayed before the rule is lifted. */
const RELAYED_FOR_MS = 3_000;
/** Stream pacing: one 16 KiB chunk every 20 ms (about 800 KB/s), continuous through the switch. */
const PACE_MS = 20;
/** The stream runs on this long after the switch, so the direct path carries data too. */
const AFTER_SWITCH_MS = 3_000;
const SCENARIO_DEADLINE_MS = 120_000;

describe.skipIf(!labAvailable())('NAT lab: relay-to-direct upgrade', () => {
  let lab: Lab;
  let tls: LabTls;
  let stack: HomelinkStack;
  const figures: Record<string, unknown>[] = [];

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
      writeFileSync('test-output/paths-upgrade.json', JSON.stringify(figures, null, 2) + '\n');
    }
  });

  it('a firewall rule lifted after the link opened relayed: direct within 2 retry intervals, the stream arrives whole', async () => {
    const app = await lab.addHome('port-restricted');
    const hub = await lab.addHome('port-restricted');
    try {
      await lab.blockUdp(app, hub.wanAddress);
      const pair = await startStreamPair(
        lab,
        stack,
        tls.cert,
        { dialer: app.hosts[0]!, answerer: hub.hosts[0]! },
        { mode: 'paced', bytes: 0, paceMs: PACE_MS, deadlineMs: SCENARIO_DEADLINE_MS, pinDialer: true, directRetryMs: DIRECT_RETRY_MS },
      );
      try {
        const opened = await pair.dialer.waitEvent((e) => e.event === 'open', 60_000, 'link open');
        expect(opened.kind, 'opens relayed while the rule holds').toBe('relay');
        await new Promise((r) => setTimeout(r, RELAYED_FOR_MS));
        await lab.unblockUdp(app);
        const lifted = Date.now();
        const direct = await pair.dialer.waitEvent((e) => e.event === 'path' && e.kind === 'direct', 2 * DIRECT_RETRY_MS + 30_000, 'direct path');
        await new Promise((r) => setTimeout(r, AFTER_SWITCH_MS));
        pair.tell('stop');
        const [d, a]: [StreamResult, StreamResult] = await Promise.all([pair.dialer.result, pair.answerer.result]);
        const toDirectMs = direct.t - lifted;
        figures.push({
          scenario: 'port-restricted <-> port-restricted, UDP between the homes blocked, lifted after the link opened',
          directRetryMs: DIRECT_RETRY_MS,
          toDirectMs,
          stallMs: a.longestGapMs,
          chunks: a.chunks,
          restarts: d.restarts,
          pathBefore: `${opened.kind} ${opened.local} -> ${opened.remote}`,
          pathAfter: `${direct.kind} ${direct.local} -> ${direct.remote}`,
        });
        process.stdout.write(`upgrade: direct ${toDirectMs} ms after the rule was lifted (retry interval ${DIRECT_RETRY_MS} ms), longest gap ${a.longestGapMs} ms, ${a.chunks} chunks\n`);
        expect(toDirectMs, 'direct within 2 retry intervals').toBeLessThanOrEqual(2 * DIRECT_RETRY_MS);
        expect(d.error, 'dialer').toBeUndefined();
        expect(a.error, 'answerer').toBeUndefined();
        expect(d.ok && a.ok).toBe(true);
        expect(a.chunks).toBe(d.chunks);
        expect(a.sha256).toBe(d.sha256);
        expect(d.path?.kind, 'still direct at the end').toBe('direct');
        expect(a.path?.kind, 'the hub sees it direct too').toBe('direct');
      } finally {
        await pair.stop();
      }
    } finally {
      await lab.removeHome(app);
      await lab.removeHome(hub);
    }
  });
});
