/**
 * Signaling cost of a connection setup made by the client library itself (run by hand):
 *
 *   npx tsx bench/signaling/library.ts [--k 20] [--backend werift|node-datachannel] [--batch-ms 10] [--early-join on|off]
 *
 * bench/signaling/run.ts measures a modelled exchange (offer, answer and 10 candidates plus
 * end-of-candidates each way, N pairs at once). This runs what an application pays for: K setups
 * by real `Endpoint`s, one after another, each `dial()` to an open, identity-verified link through
 * our relay's URLs (so the candidates are whatever the backend gathers: host, server-reflexive and
 * relayed), one message over a channel, then `link.close()`. Per setup, over its whole life on
 * the service (the room's end included: one grace later, or at the deadline, on 5 s sessions):
 *
 * - workerd's CPU from /proc (the whole process: our isolate, Miniflare's proxy isolate and the
 *   runtime's I/O, so an upper bound on what Cloudflare would bill), on a service of its own;
 * - the billable units the worker's own meters count (`DEBUG_TRACE_EVENTS`, on a second service so
 *   the logging does not touch the first): requests, incoming WebSocket messages, rows, alarms.
 *
 * V8's sampling profiler (bench/signaling/run.ts `--profile`) is not used here: with setups one at
 * a time the isolate is idle most of the time, and the estimate from its samples (not-idle samples
 * x the median sample period) then runs far high (26 ms per setup in a trial run against ~5 ms of
 * whole-process CPU).
 *
 * The endpoints connect (presence sockets) before either pass; only the setups are measured.
 * `--batch-ms` is the endpoints' `signalBatchMs` (default the library's; 0: each signal alone).
 * `--early-join` is the endpoints' `earlyJoin` (default on, as in the library).
 */
import { parseArgs } from 'node:util';
import type { BackendName, Endpoint } from '../../client/index.js';
import { SIGNAL_BATCH_MS } from '../../client/endpoint.js';
import { Meters, METER_UNITS, startSignaling, type SignalingHandle } from '../../test/support/signaling.js';
import { dialUseClose, endpointFor } from '../../test/client/helpers.js';
import { TURN_SECRET, testRelay } from '../../test/client/relay-helpers.js';
import { childCpuMs } from './profile.js';

const GRACE_MS = 1500;
/**
 * Sessions of 5 s: a ticketed room ended with both sides told is deleted by its deadline's alarm
 * (worker/room.ts `setAlarm`), which then falls inside the measured window. A setup here takes
 * well under a second.
 */
const SESSION_TTL_S = 5;
/** After the last setup: the rooms' ends (one grace, or the deadline) and the meter lines' way out. */
const SETTLE_MS = Math.max(GRACE_MS, SESSION_TTL_S * 1000) + 1500;

interface Pair {
  readonly app: Endpoint;
  readonly hub: Endpoint;
}

async function pairs(sig: SignalingHandle, k: number, tag: string, backend: BackendName, signalBatchMs: number, earlyJoin: boolean): Promise<Pair[]> {
  const out: Pair[] = [];
  for (let i = 0; i < k; i++) {
    const home = `lib-${tag}-home-${i}`;
    const hub = await endpointFor(sig, `lib-${tag}-hub-${i}`, [home], { webrtcBackend: backend, signalBatchMs, earlyJoin });
    const app = await endpointFor(sig, `lib-${tag}-app-${i}`, [home], { webrtcBackend: backend, signalBatchMs, earlyJoin });
    hub.on('request', (r) => void r.accept().catch(() => undefined));
    out.push({ app, hub });
  }
  return out;
}

/** One setup: dial, one message over a channel, close, and the peer hears the close. */
const setup = (p: Pair): Promise<void> => dialUseClose(p.app, p.hub);

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { k: { type: 'string', default: '20' }, backend: { type: 'string', default: 'werift' }, 'batch-ms': { type: 'string', default: String(SIGNAL_BATCH_MS) }, 'early-join': { type: 'string', default: 'on' } },
  });
  const k = Number(values.k);
  const batchMs = Number(values['batch-ms']);
  if (!Number.isInteger(batchMs) || batchMs < 0 || batchMs > 1000) throw new Error('--batch-ms takes 0..1000');
  const backend = values.backend as BackendName;
  if (values['early-join'] !== 'on' && values['early-join'] !== 'off') throw new Error('--early-join is on or off');
  const earlyJoin = values['early-join'] === 'on';
  if (!Number.isInteger(k) || k < 1 || k > 200) throw new Error('--k takes 1..200');
  if (backend !== 'werift' && backend !== 'node-datachannel') throw new Error('--backend is werift or node-datachannel');
  const relay = await testRelay(45000, 45999, () => undefined);
  const meters = new Meters();
  const all: Pair[] = [];
  let cpuPerSetup = 0;
  try {
    // Pass 1, CPU: a service of its own (the only workerd this script runs meanwhile).
    const timed = await startSignaling({ relays: [relay.entry], turnSecret: TURN_SECRET, roomGraceMs: GRACE_MS, sessionTtlSeconds: SESSION_TTL_S });
    try {
      // Warm-up (not measured): JIT on both sides, the bundle's isolate.
      const warm = await pairs(timed, 3, 'warm', backend, batchMs, earlyJoin);
      all.push(...warm);
      for (const p of warm) await setup(p);
      const measured = await pairs(timed, k, 'timed', backend, batchMs, earlyJoin);
      all.push(...measured);
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      const cpu0 = childCpuMs('workerd');
      for (const p of measured) await setup(p);
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      cpuPerSetup = (childCpuMs('workerd') - cpu0) / k;
      await Promise.all(all.splice(0).flatMap((p) => [p.app.close(), p.hub.close()]));
    } finally {
      await timed.close();
    }
    // Pass 2, units: the worker's meters on.
    const counted = await startSignaling({
      relays: [relay.entry],
      turnSecret: TURN_SECRET,
      roomGraceMs: GRACE_MS,
      sessionTtlSeconds: SESSION_TTL_S,
      vars: { DEBUG_TRACE_EVENTS: '1' },
      onOutput: meters.onOutput,
    });
    try {
      const countPairs = await pairs(counted, k, 'count', backend, batchMs, earlyJoin);
      all.push(...countPairs);
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      meters.reset();
      for (const p of countPairs) await setup(p);
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      await Promise.all(all.splice(0).flatMap((p) => [p.app.close(), p.hub.close()]));
    } finally {
      await counted.close();
    }

    const per = (key: string): string => (meters.count(key) / k).toFixed(2);
    console.log(`${k} setups by the library (${backend}, signalBatchMs ${batchMs}, earlyJoin ${earlyJoin}), one at a time, each: dial to an open link through the relay's URLs, one message, close\n`);
    console.log(`workerd CPU per setup, its whole life on the service (whole process, /proc): ${cpuPerSetup.toFixed(2)} ms`);
    console.log('\n| unit per setup | presence | room | worker |');
    console.log('|---|---:|---:|---:|');
    for (const [label, unit] of METER_UNITS) {
      console.log(`| ${label} | ${per(`presence.${unit}`)} | ${per(`room.${unit}`)} | ${per(`worker.${unit}`)} |`);
    }
  } finally {
    await Promise.all(all.flatMap((p) => [p.app.close(), p.hub.close()]));
    await relay.close();
  }
}

await main();
