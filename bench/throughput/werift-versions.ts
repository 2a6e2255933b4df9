/**
 * Two werift versions in one process, alternated: MB/s and CPU per MiB of one bare pair (both
 * peers here) moving the same data over a reliable channel on loopback, so that a version bump
 * is judged on a ratio measured side by side rather than on runs minutes apart (this machine's
 * MB/s drifts by 20 % over minutes). Run by hand, with the two versions installed under aliases
 * in any folder:
 *
 *   npm i --prefix /tmp/wab werift-a@npm:werift@0.24.4 werift-b@npm:werift@0.25.2
 *   npx tsx bench/throughput/werift-versions.ts /tmp/wab/node_modules/werift-a /tmp/wab/node_modules/werift-b [MiB=16] [rounds=8]
 *
 * Each round runs both versions, the order alternating by round; the ratio b/a is taken per round.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { median } from '../connect/stack.js';

type Werift = typeof import('werift');
const [dirA, dirB] = [process.argv[2], process.argv[3]];
if (!dirA || !dirB) {
  console.error('usage: werift-versions.ts <werift dir a> <werift dir b> [MiB] [rounds]');
  process.exit(2);
}
const TOTAL = Number(process.argv[4] ?? 16) * 1024 * 1024;
const ROUNDS = Number(process.argv[5] ?? 8);
const CHUNK = randomBytes(16 * 1024);
/** Bounds every wait: a pair that takes longer is a failure, not a data point. */
const RUN_TIMEOUT_MS = 120_000;

async function load(dir: string): Promise<{ version: string; w: Werift }> {
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string; main: string };
  const w = (await import(pathToFileURL(join(dir, pkg.main)).href)) as Werift & { default?: Werift };
  return { version: pkg.version, w: w.RTCPeerConnection ? w : w.default! };
}

async function run(w: Werift): Promise<{ mbps: number; cpuPerMiB: number }> {
  const cfg = { iceServers: [], iceUseIpv4: false, iceUseIpv6: false, iceAdditionalHostAddresses: ['127.0.0.1'] };
  const a = new w.RTCPeerConnection(cfg);
  const b = new w.RTCPeerConnection(cfg);
  try {
    a.onIceCandidate.subscribe((c) => c && void b.addIceCandidate(c));
    b.onIceCandidate.subscribe((c) => c && void a.addIceCandidate(c));
    const tx = a.createDataChannel('bulk');
    // werift's agent has a public STUN server by default: cleared, nothing leaves loopback.
    const noStun = (pc: InstanceType<Werift['RTCPeerConnection']>): void => {
      for (const t of pc.iceTransports) (t.connection as unknown as { stunServer?: unknown }).stunServer = undefined;
    };
    noStun(a);
    const rxP = new Promise<import('werift').RTCDataChannel>((r) => b.onDataChannel.subscribe(r));
    await a.setLocalDescription(await a.createOffer());
    await b.setRemoteDescription(a.localDescription!);
    noStun(b);
    await b.setLocalDescription(await b.createAnswer());
    await a.setRemoteDescription(b.localDescription!);
    await new Promise<void>((r) => tx.stateChanged.subscribe((s) => s === 'open' && r()));
    const rx = await rxP;
    let got = 0;
    const done = new Promise<void>((r) => rx.onMessage.subscribe((m) => (got += (m as Buffer).byteLength) >= TOTAL && r()));
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    tx.bufferedAmountLowThreshold = 256 * 1024;
    for (let sent = 0; sent < TOTAL; sent += CHUNK.length) {
      tx.send(CHUNK);
      if (tx.bufferedAmount > 1024 * 1024) await new Promise<void>((r) => tx.bufferedAmountLow.once(() => r()));
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([done, new Promise((_, j) => (timer = setTimeout(() => j(new Error('run timed out')), RUN_TIMEOUT_MS)))]);
    clearTimeout(timer);
    const secs = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    return { mbps: TOTAL / 1e6 / secs, cpuPerMiB: (cpu.user + cpu.system) / 1000 / (TOTAL / 1024 / 1024) };
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}

async function main(): Promise<void> {
  const A = await load(dirA!);
  const B = await load(dirB!);
  await run(A.w);
  await run(B.w); // warm-up of both, not reported
  const rows: Array<{ a: Awaited<ReturnType<typeof run>>; b: Awaited<ReturnType<typeof run>> }> = [];
  for (let i = 0; i < ROUNDS; i++) {
    const first = i % 2 === 0 ? A : B;
    const r1 = await run(first.w);
    const r2 = await run((first === A ? B : A).w);
    const row = first === A ? { a: r1, b: r2 } : { a: r2, b: r1 };
    rows.push(row);
    console.log(`round ${i + 1}: ${A.version} ${row.a.mbps.toFixed(2)} MB/s ${row.a.cpuPerMiB.toFixed(0)} ms/MiB; ${B.version} ${row.b.mbps.toFixed(2)} MB/s ${row.b.cpuPerMiB.toFixed(0)} ms/MiB`);
  }
  const f = (x: number): string => x.toFixed(2);
  console.log(`\n| werift | MB/s (median) | CPU ms per MiB, both peers (median) |\n|---|---:|---:|`);
  console.log(`| ${A.version} | ${f(median(rows.map((r) => r.a.mbps)))} | ${median(rows.map((r) => r.a.cpuPerMiB)).toFixed(0)} |`);
  console.log(`| ${B.version} | ${f(median(rows.map((r) => r.b.mbps)))} | ${median(rows.map((r) => r.b.cpuPerMiB)).toFixed(0)} |`);
  const mb = rows.map((r) => r.b.mbps / r.a.mbps);
  const cpu = rows.map((r) => r.b.cpuPerMiB / r.a.cpuPerMiB);
  console.log(`\nper-round ratio ${B.version}/${A.version}: MB/s median ${f(median(mb))} (${f(Math.min(...mb))}-${f(Math.max(...mb))}), CPU per MiB median ${f(median(cpu))} (${f(Math.min(...cpu))}-${f(Math.max(...cpu))})`);
}

void main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
