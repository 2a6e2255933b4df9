/**
 * The product on the native backend (node-datachannel, libdatachannel) through the NAT lab: a
 * representative subset of the matrix (matrix.test.ts runs all 41 cells on werift), each NAT
 * behaviour at least once and the relay cell (symmetric on both sides), both endpoints on
 * libdatachannel, with our relay and the signaling worker in `pub`. Asserts what the matrix asserts
 * for those cells: a checked transfer, the path theory predicts, two hosts of one home stay on the
 * LAN, and the relay only ever carried ciphertext. Results go to test-output/NATLAB.native.md.
 * One failed cell per run gets a second run (printed; see the test).
 *
 * One UDP-blocked cell runs too: libjuice (the ICE agent in node-datachannel's prebuilt binary)
 * relays over UDP only, so there the node-datachannel choice builds the link on werift (the relay
 * answers the Happy Eyeballs probe over TCP/TLS first; `withNativeFallback`, client/index.ts) and
 * the link must still relay, over TCP or TLS.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { failedCells, matrixCells, renderReport, runCell, runCells, type CellResult } from './cells.js';
import { makeLabTls, type LabTls } from './coturn.js';
import { Lab } from './lab.js';
import { startRelayCapture, type RelayCapture } from './capture.js';
import { labAvailable } from './support.js';
import { startHomelinkStack, type HomelinkStack } from './stack-homelink.js';
import { loadNodeDatachannel } from '../../client/webrtc/node-datachannel.js';

/** One cell per behaviour (as dialer or answerer), the relay-only cell, and one LAN pair. */
const NATIVE_CELLS = [
  'full-cone--address-restricted',
  'port-restricted--port-restricted',
  'symmetric--full-cone',
  'symmetric--symmetric',
  'open--symmetric',
  'same-lan--port-restricted',
  'udp-blocked--port-restricted',
];
const nativeInstalled = (await loadNodeDatachannel()) !== null;
if (labAvailable() && !nativeInstalled) console.log('skipped: needs node-datachannel (optional dependency) for the native NAT lab subset');

describe.skipIf(!labAvailable() || !nativeInstalled)('NAT lab subset on the native backend (node-datachannel)', () => {
  let lab: Lab;
  let tls: LabTls;
  let stack: HomelinkStack | undefined;
  let capture: RelayCapture;

  beforeAll(async () => {
    lab = await Lab.create();
    tls = makeLabTls(lab.runId);
    capture = await startRelayCapture(lab);
    stack = await startHomelinkStack(lab, tls, { backend: 'node-datachannel' });
  });

  afterAll(async () => {
    await capture?.stop().catch(() => undefined);
    await stack?.stop().catch(() => undefined);
    const runId = lab?.runId;
    await lab?.destroy();
    if (runId) expect(Lab.existingNamespaces(runId), 'namespaces left behind').toEqual([]);
    tls?.dispose();
    capture?.dispose();
  });

  it('each NAT behaviour and the relay cell connect on libdatachannel (a UDP-blocked home on the werift fallback, TURN over TCP/TLS), direct when theory allows, relay sees only ciphertext', async () => {
    const cells = matrixCells().filter((c) => NATIVE_CELLS.includes(c.id));
    expect(cells.map((c) => c.id).sort()).toEqual([...NATIVE_CELLS].sort());
    const t0 = performance.now();
    const first: CellResult[] = await runCells(lab, stack!, cells, 1);
    // libdatachannel 0.24.5 fails a link now and then on a loaded machine (the known causes are in
    // client/webrtc/backend.ts, chooseBackend; why werift stays the automatic choice). One failed
    // cell per run is run again and its first failure printed; a second failed cell, or a cell
    // failing twice, fails the test.
    const once = failedCells(first);
    const results = [...first];
    if (once.failed.length === 1) {
      const i = first.findIndex((r) => r.spec.id === once.failed[0]!.cell);
      console.log(`native: ${once.message.replace(/^cells that failed/, 'a cell failed once, run again')}`);
      results[i] = await runCell(lab, stack!, cells[i]!);
    }
    const durationS = (performance.now() - t0) / 1000;
    await capture.sendControl();
    await capture.stop();
    const scan = capture.scan([...new Set([...first, ...results])].map((r) => r.marker));
    mkdirSync('test-output', { recursive: true });
    writeFileSync(
      'test-output/NATLAB.native.md',
      renderReport({ stack: stack!.name, results, durationS, captureBytes: scan.bytes, controlMarkerFound: scan.controlFound, markersFound: scan.found }),
    );
    const table = results.map((r) => ({ cell: r.spec.id, expected: r.spec.expected, observed: r.kind, transfer: r.transferOk, error: r.error }));
    expect(once.failed.length, once.message).toBeLessThanOrEqual(1);
    const { failed, message } = failedCells(results);
    expect(failed, message).toEqual([]);
    // A cell theory calls relay must relay (no direct path can exist there). A direct cell that
    // ends on the relay is reported, not failed: libjuice nominates the first pair that answers and
    // keeps it (werift replaces it, see upgrade.test.ts); the link's first direct probe, 5 s after
    // it opened relayed (`firstProbeMs`), comes after the cell's transfer ended. Seen in CI under load.
    expect(table.filter((c) => c.expected === 'relay' && c.observed !== 'relay'), 'relay cells that did not relay').toEqual([]);
    for (const c of table.filter((c) => c.expected === 'direct' && c.observed !== 'direct')) console.log(`native: cell ${c.cell} expected direct, observed ${c.observed} (libjuice nominated the relay pair first)`);
    // The relay cell really went through our relay over UDP (the only relay transport libjuice has).
    const relayed = results.find((r) => r.spec.id === 'symmetric--symmetric')!;
    expect(relayed.dialer.path?.protocol ?? relayed.answerer.path?.protocol).toBe('udp');
    // UDP blocked: the link ran on the werift fallback and relayed over a stream transport.
    const blocked = results.find((r) => r.spec.id === 'udp-blocked--port-restricted')!;
    expect(['tcp', 'tls']).toContain(blocked.dialer.path?.protocol);
    const sameLan = results.filter((r) => r.spec.sameLan);
    expect(sameLan.filter((r) => !r.dialer.path?.remoteAddress?.startsWith(`${r.answererAddress}:`)).map((r) => r.spec.id), 'same-LAN cells whose path leaves the LAN').toEqual([]);
    expect(scan.controlFound, 'control marker visible in the relay capture').toBe(true);
    expect(scan.found, 'plaintext markers seen by the relay').toEqual([]);
  });
});
