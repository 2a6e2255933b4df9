/**
 * bench/connect/pairs.ts: connect time of bare backend pairs wired back to back in process (no
 * signaling service, no identity): offer -> answer -> a channel open on both sides, for every
 * offerer -> answerer pairing of werift (w) and node-datachannel (n) on 127.0.0.1.
 *
 *   npx tsx bench/connect/pairs.ts [pairs=wn,nw,nn,ww] [runs=10]
 */
import { createWeriftBackend } from '../../client/webrtc/werift.js';
import { createNodeDatachannelBackend } from '../../client/webrtc/node-datachannel.js';
import type { BackendFactory, PeerBackend } from '../../client/webrtc/backend.js';
const LOOP = { iceServers: [], hostAddresses: ['127.0.0.1'] } as const;
const f: Record<string, BackendFactory> = { w: createWeriftBackend, n: createNodeDatachannelBackend };
async function once(fa: BackendFactory, fb: BackendFactory): Promise<number> {
  const a = await fa(LOOP); const b = await fb(LOOP);
  a.onCandidate = (c) => void b.addCandidate(c).catch(() => undefined);
  b.onCandidate = (c) => void a.addCandidate(c).catch(() => undefined);
  const t0 = performance.now();
  const opened = new Promise<void>((res) => { b.onChannel = (ch) => { if (ch.state === 'open') res(); else ch.onOpen = () => res(); }; });
  const ch = a.createChannel('x');
  const offer = await a.createOffer();
  const answer = await b.acceptOffer(offer);
  
  await a.acceptAnswer(answer);
  const o2 = new Promise<void>((res) => { if (ch.state === 'open') res(); else ch.onOpen = () => res(); });
  await Promise.race([Promise.all([opened, o2]), new Promise((_, rej) => setTimeout(() => rej(new Error('timeout')), 8000))]);
  const ms = performance.now() - t0;
  await a.close(); await b.close();
  return ms;
}
const runs = Number(process.argv[3] ?? 10);
for (const combo of (process.argv[2] ?? 'wn,nw,nn,ww').split(',')) {
  const [x, y] = combo.split('');
  const out: number[] = [];
  // The first run warms up (JIT, certificate generation, the native module) and is not counted.
  for (let i = 0; i <= runs; i++) {
    const ms = Math.round(await once(f[x!]!, f[y!]!));
    if (i > 0) out.push(ms);
  }
  const sorted = [...out].sort((a, b) => a - b);
  console.log(`${combo}: median ${sorted[Math.floor(sorted.length / 2)]} ms, max ${sorted.at(-1)} ms; runs ${out.join(' ')}`);
}
process.exit(0);
