/**
 * Where werift's data channel spends its time: one bare werift pair moves 32 MiB on loopback
 * under the V8 CPU profiler; prints self time by werift module and the top functions. Run by hand:
 *
 *   npx tsx bench/throughput/profile.ts
 */
import { Session } from 'node:inspector/promises';
import { randomBytes } from 'node:crypto';
import { RTCPeerConnection, type RTCDataChannel } from 'werift';

const TOTAL = 32 * 1024 * 1024;
const CHUNK = randomBytes(16 * 1024);

interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number; children?: number[] }

async function pair(): Promise<{ a: RTCPeerConnection; b: RTCPeerConnection; tx: RTCDataChannel; rx: RTCDataChannel }> {
  const cfg = { iceServers: [], iceUseIpv4: false, iceUseIpv6: false, iceAdditionalHostAddresses: ['127.0.0.1'] };
  const a = new RTCPeerConnection(cfg);
  const b = new RTCPeerConnection(cfg);
  a.onIceCandidate.subscribe((c) => c && void b.addIceCandidate(c));
  b.onIceCandidate.subscribe((c) => c && void a.addIceCandidate(c));
  const tx = a.createDataChannel('bulk');
  for (const t of a.iceTransports) (t.connection as unknown as { stunServer?: unknown }).stunServer = undefined;
  const rxP = new Promise<RTCDataChannel>((r) => b.onDataChannel.subscribe(r));
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription!);
  for (const t of b.iceTransports) (t.connection as unknown as { stunServer?: unknown }).stunServer = undefined;
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription!);
  await new Promise<void>((r) => tx.stateChanged.subscribe((s) => s === 'open' && r()));
  return { a, b, tx, rx: await rxP };
}

async function main(): Promise<void> {
  const { a, b, tx, rx } = await pair();
  const s = new Session();
  s.connect();
  await s.post('Profiler.enable');
  await s.post('Profiler.setSamplingInterval', { interval: 200 });
  await s.post('Profiler.start');
  let got = 0;
  const done = new Promise<void>((r) => rx.onMessage.subscribe((m) => (got += (m as Buffer).byteLength) >= TOTAL && r()));
  const t0 = performance.now();
  tx.bufferedAmountLowThreshold = 256 * 1024;
  for (let sent = 0; sent < TOTAL; sent += CHUNK.length) {
    tx.send(CHUNK);
    if (tx.bufferedAmount > 1024 * 1024) await new Promise<void>((r) => tx.bufferedAmountLow.once(() => r()));
  }
  await done;
  const secs = (performance.now() - t0) / 1000;
  const { profile } = (await s.post('Profiler.stop')) as { profile: { nodes: Node[] } };
  await Promise.all([a.close(), b.close()]);
  const byFile = new Map<string, number>();
  const byFn = new Map<string, number>();
  let total = 0;
  for (const n of profile.nodes) {
    const hits = n.hitCount ?? 0;
    total += hits;
    const url = n.callFrame.url;
    const m = /werift\/lib\/(.*)$/.exec(url);
    const file = m ? m[1]! : url.includes('node:') || url === '' ? `(${n.callFrame.functionName || 'native/idle'})` : url.replace(/.*node_modules\//, '');
    byFile.set(file, (byFile.get(file) ?? 0) + hits);
    const fn = `${n.callFrame.functionName || '(anonymous)'} ${file}:${n.callFrame.lineNumber}`;
    byFn.set(fn, (byFn.get(fn) ?? 0) + hits);
  }
  console.log(`32 MiB in ${secs.toFixed(2)} s = ${(TOTAL / 1e6 / secs).toFixed(2)} MB/s (both peers in this process)`);
  const top = (m: Map<string, number>, k: number): void => {
    for (const [name, h] of [...m].sort((x, y) => y[1] - x[1]).slice(0, k)) console.log(`${((100 * h) / total).toFixed(1).padStart(5)}%  ${name}`);
  };
  console.log('self time by file:');
  top(byFile, 12);
  console.log('top functions:');
  top(byFn, 15);
}

void main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
