/**
 * Cost of a 64 KiB frame sent one byte per write (issue 9 item 6), as a ratio against the same
 * frame sent in one write, measured in the same run:
 *
 *  1. core: the TURN core's stream path (TurnServer.handleStream: StreamFramer + dispatch) in
 *     this process, fed 65,540 one-byte chunks vs one 65,540-byte chunk; CPU from
 *     process.cpuUsage(). Isolates the framer's buffering (quadratic before geometric growth).
 *  2. socket: a relay process (relay/main.ts) on 127.0.0.1; a client writes the frame one byte
 *     per write (TCP_NODELAY, yielding between writes so each leaves as its own segment) vs in
 *     one write; relay CPU from /proc/<pid>/stat. Includes Node's per-read cost, which no framer
 *     can remove: the per-source cap and the whole-frame idle deadline bound how much of it one
 *     host can make the relay spend.
 *
 *   node --import tsx bench/relay/dribble.ts [--frames 3] [--whole 300]
 *
 * The frames are ChannelData for a channel the connection has no allocation for, so they are
 * framed, counted and dropped: the cost measured is getting the frame off the stream.
 */
import { spawn } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { TurnServer } from '../../relay/turn/index.js';
import { freePort } from '../../test/support/ports.js';
import { TICK_US, cpuTicksOf } from './proc.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
}
/** Dribbled frames per case (each is 65,540 writes). */
const FRAMES = Number(arg('frames', '3'));
/** Whole frames per case: enough to rise well above the clock tick (10 ms) of /proc. */
const WHOLE = Number(arg('whole', '300'));
const HOST = '127.0.0.1';
const SECRET = randomBytes(24).toString('base64url');

/** A ChannelData frame with 65,535 bytes of data, padded to 65,540 on a stream (RFC 8656 §12.5). */
function bigFrame(): Uint8Array {
  const f = new Uint8Array(4 + 65_536);
  f.set([0x40, 0x00, 0xff, 0xff]);
  return f;
}

function coreServer(): TurnServer {
  return new TurnServer({
    realm: 'bench',
    secrets: [SECRET],
    software: '',
    relayAddressV4: HOST,
    defaultLifetimeS: 600,
    maxLifetimeS: 3600,
    nonceLifetimeS: 600,
    maxAllocationsPerUsername: 10,
    maxAllocations: 100,
    maxPermissionsPerAllocation: 8,
    maxChannelsPerAllocation: 8,
    bandwidthBytesPerSecond: 0,
    bandwidthBurstBytes: 1 << 20,
    maxStreamBufferBytes: 66 * 1024,
    streamHandshakeTimeoutMs: 10_000,
    streamIdleTimeoutMs: 30_000,
    maxStreamsPerIp: 1_000_000,
    crypto: {
      hmacSha1: (k, d) => new Uint8Array(createHmac('sha1', k).update(d).digest()),
      md5: (d) => new Uint8Array(createHash('md5').update(d).digest()),
    },
    checkPeer: () => ({ allowed: false, reason: 'private', canonical: null }),
    randomBytes: (n) => new Uint8Array(randomBytes(n)),
  });
}

function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

function core(): { dribbleUs: number; wholeUs: number } {
  const server = coreServer();
  const frame = bigFrame();
  // One connection per case, as on a socket: what is measured is frames, not connection set-up.
  server.openStream(1, 'tcp', HOST, 40000, 0);
  server.openStream(2, 'tcp', HOST, 40001, 0);
  // Warm-up: let V8 optimise both paths.
  for (let i = 0; i < 20; i++) server.handleStream(1, frame, 0);
  for (let i = 0; i < 4096; i++) server.handleStream(2, frame.subarray(i, i + 1), 0);
  for (let i = 4096; i < frame.length; i++) server.handleStream(2, frame.subarray(i, i + 1), 0);
  let t = cpuUs();
  for (let i = 0; i < WHOLE * 10; i++) server.handleStream(1, frame, 0);
  const wholeUs = (cpuUs() - t) / (WHOLE * 10);
  t = cpuUs();
  for (let f = 0; f < FRAMES; f++) {
    for (let i = 0; i < frame.length; i++) server.handleStream(2, frame.subarray(i, i + 1), 0);
  }
  const dribbleUs = (cpuUs() - t) / FRAMES;
  if (server.counters.dropNoAllocation !== WHOLE * 10 + 21 + FRAMES) throw new Error(`frames lost: ${server.counters.dropNoAllocation}`);
  return { dribbleUs, wholeUs };
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: HOST, noDelay: true }, () => resolve(s));
    s.once('error', reject);
  });
}

async function metric(url: string, series: string): Promise<number> {
  const text = await (await fetch(url)).text();
  return Number(text.split('\n').find((l) => l.startsWith(series + ' '))?.split(' ')[1] ?? NaN);
}

/** Waits until the relay has dropped `count` ChannelData frames in all (bounded). */
async function framesSeen(url: string, count: number): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if ((await metric(url, 'homelink_relay_dropped_packets_total{reason="no_allocation"}')) >= count) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the relay did not see every frame');
}

async function socket(): Promise<{ dribbleUs: number; wholeUs: number }> {
  const tcpPort = await freePort();
  const metricsPort = await freePort();
  const relay = spawn(process.execPath, [
    '--import', 'tsx', 'relay/main.ts', '--secret', SECRET, '--listen-host', HOST, '--relay-host', HOST,
    '--udp-port', '0', '--tcp-port', String(tcpPort), '--metrics-port', String(metricsPort), '--log-level', 'warn', '--drain-ms', '0',
  ], { stdio: ['ignore', 'inherit', 'inherit'] });
  const url = `http://${HOST}:${metricsPort}/metrics`;
  try {
    for (let i = 0; i < 200; i++) {
      if (await metric(url, 'homelink_relay_allocations').catch(() => NaN) === 0) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const frame = bigFrame();
    const pid = relay.pid!;
    let seen = 0;
    // Warm-up.
    const w = await connect(tcpPort);
    for (let i = 0; i < 20; i++) w.write(frame);
    await framesSeen(url, (seen += 20));
    w.destroy();

    const s1 = await connect(tcpPort);
    let t = cpuTicksOf(pid);
    for (let i = 0; i < WHOLE; i++) s1.write(frame);
    await framesSeen(url, (seen += WHOLE));
    const wholeUs = ((cpuTicksOf(pid) - t) * TICK_US) / WHOLE;
    s1.destroy();

    const s2 = await connect(tcpPort);
    t = cpuTicksOf(pid);
    for (let f = 0; f < FRAMES; f++) {
      for (let i = 0; i < frame.length; i++) {
        s2.write(frame.subarray(i, i + 1));
        // Yield so that each byte leaves in its own segment instead of being coalesced here.
        if (i % 4 === 3) await new Promise((r) => setImmediate(r));
      }
    }
    await framesSeen(url, (seen += FRAMES));
    const dribbleUs = ((cpuTicksOf(pid) - t) * TICK_US) / FRAMES;
    s2.destroy();
    return { dribbleUs, wholeUs };
  } finally {
    relay.kill('SIGTERM');
    await new Promise((r) => relay.once('exit', r));
  }
}

const c = core();
console.log(`core   (TurnServer.handleStream): whole frame ${c.wholeUs.toFixed(1)} µs, one byte per chunk ${(c.dribbleUs / 1000).toFixed(1)} ms, ratio ${(c.dribbleUs / c.wholeUs).toFixed(0)}x`);
const s = await socket();
console.log(`socket (relay process, /proc CPU): whole frame ${s.wholeUs.toFixed(1)} µs, one byte per write ${(s.dribbleUs / 1000).toFixed(1)} ms, ratio ${(s.dribbleUs / s.wholeUs).toFixed(0)}x`);
console.log(`settings: ${FRAMES} dribbled frames, ${WHOLE} whole frames (core: ${WHOLE * 10}); load ${readFileSync('/proc/loadavg', 'latin1').trim()}`);
