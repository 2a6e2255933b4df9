/**
 * The lab's own plumbing under the matrix's concurrency: cells set up and tear down homes
 * while other cells run, so nothing shared in `pub` may change when a home comes or goes.
 *
 * A Linux bridge without an address of its own takes the lowest MAC among its ports and
 * changes it whenever ports join or leave. The relay and the signaling service live on br0,
 * so every router and open host holding a neighbour entry for them kept sending to a MAC the
 * bridge no longer owned: their relayed paths and signaling went silent until the entry went
 * stale and was probed again (tens of seconds), which made relayed cells fail under
 * NATLAB_CONCURRENCY=2.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab } from './lab.js';
import { labAvailable } from './support.js';

async function bridgeMac(lab: Lab): Promise<string> {
  const r = await lab.exec(lab.pub, 'cat', ['/sys/class/net/br0/address']);
  return r.stdout.trim();
}

describe.skipIf(!labAvailable())('NAT lab plumbing', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create();
  });

  afterAll(async () => {
    const runId = lab?.runId;
    await lab?.destroy();
    if (runId) expect(Lab.existingNamespaces(runId)).toEqual([]);
  });

  it("pub's bridge keeps its MAC while homes and open hosts come and go", async () => {
    const mac = await bridgeMac(lab);
    const seen: string[] = [];
    const a = await lab.addHome('port-restricted');
    seen.push(await bridgeMac(lab));
    const b = await lab.addOpenHost();
    seen.push(await bridgeMac(lab));
    const c = await lab.addHome('symmetric');
    seen.push(await bridgeMac(lab));
    await lab.removeHome(a);
    seen.push(await bridgeMac(lab));
    await lab.removeOpenHost(b);
    seen.push(await bridgeMac(lab));
    await lab.removeHome(c);
    seen.push(await bridgeMac(lab));
    expect(seen).toEqual(seen.map(() => mac));
  });
});
