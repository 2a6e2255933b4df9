/**
 * The memory floor of a relay that holds one Node `dgram` socket per
 * allocation: RSS, V8 heap and external memory per bound UDP socket with a
 * 'message' listener, nothing else. Compare with the relay's bytes per idle
 * allocation from bench/relay/run.ts.
 *
 *   node --expose-gc --import tsx bench/relay/socket-memory.ts [count]
 */
import { createSocket, type Socket } from 'node:dgram';

/** Enough sockets that per-socket cost dominates heap growth slack; well under the 20,000 fd limit here. */
const COUNT = Number(process.argv[2] ?? 10_000);
/** Not 127.0.0.1, so the ephemeral ports taken here never collide with relays running on the machine. */
const HOST = '127.0.0.5';

const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});
const settle = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

gc();
await settle(300);
const before = process.memoryUsage();
const socks: Socket[] = [];
for (let i = 0; i < COUNT; i++) {
  const s = createSocket('udp4');
  s.on('message', () => {});
  s.bind(0, HOST);
  socks.push(s);
}
await settle(1500);
gc();
const after = process.memoryUsage();
const per = (k: 'rss' | 'heapUsed' | 'external'): string => ((after[k] - before[k]) / COUNT).toFixed(0);
console.log(`${COUNT} bound dgram sockets: RSS ${per('rss')} B, heapUsed ${per('heapUsed')} B, external ${per('external')} B per socket`);
await Promise.all(socks.map((s) => new Promise<void>((r) => s.close(() => r()))));
