/**
 * Ctrl-C on the `homelink` command (issue 9, item 4) against the real local stack (`npm start`):
 * an interrupted `dial --relay` closes its endpoint before it exits, so the listening peer hears
 * a bye at once (not an ICE restart cycle ending in NoPath) and the relay's allocation gauge
 * returns to where it was.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnCli, startStack, type RunningStack } from './support.js';

/** Bound on the gauge returning; the deallocation is one round trip, this only bounds a failure. */
const GAUGE_BOUND_MS = 15_000;

describe('Ctrl-C on homelink dial', () => {
  let st: RunningStack;
  beforeAll(async () => {
    st = await startStack();
  });
  afterAll(async () => {
    await st?.dispose();
  });

  const allocations = async (): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${st.ports.metrics}/metrics`)).text();
    const m = /^homelink_relay_allocations (\d+)$/m.exec(text);
    if (!m) throw new Error(`no allocations gauge in:\n${text}`);
    return Number(m[1]);
  };

  it('the peer learns of the close through a bye, the dialer exits 130, the allocations are released', async () => {
    const dir = ['--dir', st.dir];
    const baseline = await allocations();
    const listener = spawnCli(['listen', '--as', 'hub-9', ...dir], { stdin: 'keep-open' });
    await listener.waitForStderr('waiting for a peer');
    const dialer = spawnCli(['dial', 'hub-9', '--as', 'app-9', '--relay', ...dir], { stdin: 'keep-open' });
    try {
      await dialer.waitForStderr(/link to hub-9 open: via relay/);
      await listener.waitForStderr(/link to app-9 open/);
      expect(await allocations()).toBeGreaterThanOrEqual(baseline + 2);
      const t0 = performance.now();
      dialer.proc.kill('SIGINT');
      const d = await dialer.done(20_000);
      const dialerMs = performance.now() - t0;
      await listener.waitForStderr(/link closed \(/, 20_000);
      const peerMs = performance.now() - t0;
      expect(d.code, d.stderr).toBe(130);
      expect(listener.stderr()).toContain('link closed (peer closed: endpoint closed)');
      const l = await listener.done(20_000);
      expect(l.code).toBe(1);
      const until = Date.now() + GAUGE_BOUND_MS;
      let now = await allocations();
      while (now !== baseline && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 100));
        now = await allocations();
      }
      expect(now).toBe(baseline);
      console.log(`dialer exited ${dialerMs.toFixed(0)} ms after SIGINT; listener reported the close ${peerMs.toFixed(0)} ms after SIGINT`);
    } finally {
      dialer.kill();
      listener.kill();
    }
  });
});
