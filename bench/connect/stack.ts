/**
 * Shared set-up for the client benchmarks: our relay and the real worker in workerd on loopback,
 * endpoint pairs of our stack, and bare werift peer pairs (the baseline) wired in-process.
 */
import type { BackendName } from '../../client/index.js';
import dgram from 'node:dgram';
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { RelayEntry } from '../../worker/config.js';
import { RTCPeerConnection, type RTCDataChannel } from 'werift';
import { mintTurnCredential } from '../../protocol/turn-credentials.js';
import { startSignaling, type SignalingHandle } from '../../test/support/signaling.js';
import { endpointFor, nextLink } from '../../test/client/helpers.js';
import { TURN_SECRET, testRelay, type TestRelay } from '../../test/client/relay-helpers.js';
import type { Endpoint } from '../../client/index.js';
import type { EndpointOptions, EndpointRuntime } from '../../client/endpoint.js';
import type { Link } from '../../client/link.js';

export interface Stack {
  relay: TestRelay;
  sig: SignalingHandle;
  /** A second worker whose relay UDP port is a black hole: only TURN over TCP/TLS works. */
  sigUdpBlocked: SignalingHandle;
  /** The black-holed UDP port. */
  holePort: number;
  close(): Promise<void>;
}

export async function startStack(): Promise<Stack> {
  const relay = await testRelay(44000, 44999, () => undefined);
  const sig = await startSignaling({ relays: [relay.entry], turnSecret: TURN_SECRET });
  const hole = dgram.createSocket('udp4');
  await new Promise<void>((r) => hole.bind(0, '127.0.0.1', r));
  const sigUdpBlocked = await startSignaling({ relays: [{ ...relay.entry, udpPort: (hole.address() as { port: number }).port }], turnSecret: TURN_SECRET });
  return {
    relay,
    sig,
    sigUdpBlocked,
    holePort: (hole.address() as { port: number }).port,
    async close() {
      await sig.close();
      await sigUdpBlocked.close();
      hole.close();
      await relay.close();
    },
  };
}

export interface OurPair {
  app: Endpoint;
  hub: Endpoint;
  dial(): Promise<{ link: Link; peer: Link }>;
  close(): void;
}

let n = 0;
export async function ourPair(
  stack: Stack,
  mode: 'direct' | 'relay' | 'relay-udp-blocked',
  trace?: (side: 'app' | 'hub', phase: string) => void,
  backend: BackendName = 'werift',
): Promise<OurPair> {
  const sigUrl = mode === 'relay-udp-blocked' ? stack.sigUdpBlocked : stack.sig;
  const extra = { webrtcBackend: backend, ...(mode === 'direct' ? {} : { turnTlsOptions: { ca: stack.relay.ca } }) };
  const side = (s: 'app' | 'hub') => ({ ...extra, ...(trace ? { trace: (p: string) => trace(s, p) } : {}) });
  return ourPairWith({ ...stack, sig: sigUrl }, mode === 'direct' ? 'direct' : 'relay', { hub: side('hub'), app: side('app') });
}

/** A pair whose endpoints take options of the caller's (a wrapped backend factory, a trace hook). */
export async function ourPairWith(
  stack: Stack,
  mode: 'direct' | 'relay',
  opts: { hub: Partial<EndpointOptions & EndpointRuntime>; app: Partial<EndpointOptions & EndpointRuntime> },
): Promise<OurPair> {
  const home = `bench-home-${n++}`;
  const extra = mode === 'direct' ? {} : { iceTransportPolicy: 'relay' as const };
  const hub = await endpointFor(stack.sig, `bench-hub-${n}`, [home], { ...extra, ...opts.hub });
  const app = await endpointFor(stack.sig, `bench-app-${n}`, [home], { ...extra, ...opts.app });
  hub.on('request', (r) => void r.accept().catch(() => undefined));
  return {
    app,
    hub,
    async dial() {
      const peer = nextLink(hub);
      const link = await app.dial(hub.id, { timeoutMs: 20_000 });
      return { link, peer: await peer };
    },
    close() {
      app.close();
      hub.close();
    },
  };
}

export interface BarePair {
  a: RTCPeerConnection;
  b: RTCPeerConnection;
  /** The offerer's channel and the answerer's, both open. */
  ca: RTCDataChannel;
  cb: RTCDataChannel;
  close(): Promise<void>;
}

/** Two bare werift peers exchanging offer/answer and candidates in-process; resolves when the channel is open on both sides. */
export async function barePair(stack: Stack, mode: 'direct' | 'relay' | 'relay-udp-blocked'): Promise<BarePair> {
  let iceServers: { urls: string; username?: string; credential?: string }[] = [];
  if (mode === 'relay-udp-blocked') {
    // The service's URL order (UDP first) with UDP black-holed, handed to werift as is.
    const c = await mintTurnCredential(TURN_SECRET, `bare-${n++}`, 600, Date.now() / 1000);
    const holePort = stack.holePort;
    iceServers = [
      { urls: `stun:127.0.0.1:${holePort}` },
      { urls: `turn:127.0.0.1:${holePort}`, username: c.username, credential: c.credential },
      { urls: `turn:127.0.0.1:${stack.relay.entry.tcpPort}?transport=tcp`, username: c.username, credential: c.credential },
    ];
  }
  if (mode === 'relay') {
    const c = await mintTurnCredential(TURN_SECRET, `bare-${n++}`, 600, Date.now() / 1000);
    iceServers = [
      { urls: `stun:127.0.0.1:${stack.relay.entry.udpPort}` },
      { urls: `turn:127.0.0.1:${stack.relay.entry.udpPort}`, username: c.username, credential: c.credential },
    ];
  }
  const cfg = {
    iceServers,
    iceUseIpv4: false,
    iceUseIpv6: false,
    iceAdditionalHostAddresses: ['127.0.0.1'],
    iceTransportPolicy: mode === 'direct' ? ('all' as const) : ('relay' as const),
  };
  const a = new RTCPeerConnection(cfg);
  const b = new RTCPeerConnection(cfg);
  if (mode === 'direct') {
    // Same as the library: no public STUN default (there is no internet here).
    for (const pc of [a, b]) pc.onIceCandidate.subscribe(() => undefined);
  }
  a.onIceCandidate.subscribe((c) => c && void b.addIceCandidate(c).catch(() => undefined));
  b.onIceCandidate.subscribe((c) => c && void a.addIceCandidate(c).catch(() => undefined));
  const ca = a.createDataChannel('bulk');
  if (mode === 'direct') for (const t of a.iceTransports) (t.connection as unknown as { stunServer?: unknown }).stunServer = undefined;
  const cbP = new Promise<RTCDataChannel>((r) => b.onDataChannel.subscribe(r));
  const offer = await a.createOffer();
  await a.setLocalDescription(offer);
  await b.setRemoteDescription(a.localDescription!);
  if (mode === 'direct') for (const t of b.iceTransports) (t.connection as unknown as { stunServer?: unknown }).stunServer = undefined;
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription!);
  const opened = new Promise<void>((r) => (ca.readyState === 'open' ? r() : ca.stateChanged.subscribe((s) => s === 'open' && r())));
  const cb = await cbP;
  await opened;
  return { a, b, ca, cb, close: async () => void (await Promise.all([a.close(), b.close()])) };
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((p, q) => p - q);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
export const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((p, r) => p - r);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

/** Our relay as operators run it: `relay/main.ts` in its own Node process, UDP and TCP on loopback. */
export interface RelayProcess {
  entry: RelayEntry;
  pid: number;
  /** utime+stime of the relay process in ms (/proc), for CPU per MiB. */
  cpuMs(): number;
  /** `dropped_packets_total` by reason, from the relay's metrics endpoint. */
  drops(): Promise<Record<string, number>>;
  close(): Promise<void>;
}

async function freeLoopbackPort(kind: 'udp' | 'tcp'): Promise<number> {
  if (kind === 'udp') {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
    const p = (s.address() as { port: number }).port;
    await new Promise<void>((r) => s.close(r));
    return p;
  }
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const p = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return p;
}

/**
 * Starts `relay/main.ts` in a child process. `bandwidth` is the per-allocation cap in bytes/s
 * (the relay's default when undefined, 0 = off); `cwd` runs the relay of another checkout (an
 * earlier commit's, for before/after in one run; it needs `node_modules`, e.g. a symlink). The
 * child is stopped with SIGTERM by `close()`.
 */
export async function startRelayProcess(opts: { bandwidth?: number; portMin: number; portMax: number; cwd?: string }): Promise<RelayProcess> {
  let port = 0;
  for (let i = 0; i < 20 && !port; i++) {
    const p = await freeLoopbackPort('udp');
    const t = createServer();
    const ok = await new Promise<boolean>((r) => {
      t.once('error', () => r(false));
      t.listen(p, '127.0.0.1', () => r(true));
    });
    if (ok) await new Promise<void>((r) => t.close(() => r()));
    if (ok) port = p;
  }
  if (!port) throw new Error('no free UDP+TCP port for the relay');
  const metricsPort = await freeLoopbackPort('tcp');
  // HOMELINK_BENCH_RELAY_PROF=<dir>: V8 CPU profile of the relay process, written when it exits.
  const prof = process.env.HOMELINK_BENCH_RELAY_PROF;
  const args = ['--import', 'tsx', ...(prof ? ['--cpu-prof', `--cpu-prof-dir=${prof}`] : []), 'relay/main.ts', '--secret', TURN_SECRET, '--listen-host', '127.0.0.1', '--relay-host', '127.0.0.1',
    '--udp-port', String(port), '--tcp-port', String(port), '--relay-port-min', String(opts.portMin), '--relay-port-max', String(opts.portMax),
    '--allow-loopback', '--metrics-port', String(metricsPort), '--log-level', 'warn', '--drain-ms', '0',
    ...(opts.bandwidth !== undefined ? ['--bandwidth', String(opts.bandwidth)] : [])];
  // HOMELINK_BENCH_RELAY_CPUS=<list>: the relay process runs on those CPUs only (taskset), e.g. a
  // core of its own while the bench runs under `taskset -c 0`, as a relay on its own machine.
  const cpus = process.env.HOMELINK_BENCH_RELAY_CPUS;
  const [cmd, argv] = cpus ? ['taskset', ['-c', cpus, process.execPath, ...args]] : [process.execPath, args];
  const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NODE_ENV: 'production' }, ...(opts.cwd ? { cwd: opts.cwd } : {}) });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4096)));
  const metrics = async (): Promise<string> => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`relay exited: ${err}`);
    try {
      await metrics();
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`relay did not start: ${err}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const tickMs = 1000 / (Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100);
  return {
    entry: { id: 'rp', region: 'test', lat: 0, lon: 0, host: '127.0.0.1', udpPort: port, tcpPort: port, tlsPort: port, tlsHost: 'localhost' },
    pid: child.pid!,
    cpuMs() {
      try {
        const st = readFileSync(`/proc/${child.pid}/stat`, 'latin1');
        const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
        return (Number(f[11]) + Number(f[12])) * tickMs;
      } catch {
        return 0;
      }
    },
    async drops() {
      const out: Record<string, number> = {};
      for (const m of (await metrics()).matchAll(/^homelink_relay_dropped_packets_total\{reason="(\w+)"\} (\d+)/gm)) out[m[1]!] = Number(m[2]);
      return out;
    },
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const done = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await done;
      clearTimeout(t);
    },
  };
}

/** A signaling service whose only relay is `relay` (e.g. a relay process). */
export async function signalingFor(relay: RelayEntry): Promise<SignalingHandle> {
  return startSignaling({ relays: [relay], turnSecret: TURN_SECRET });
}

/** Resolves once `rx` has received `total` bytes (the end of a bulk transfer). */
export function received(rx: import('../../client/channel.js').Channel, total: number): Promise<void> {
  let got = 0;
  return new Promise<void>((res) => {
    const off = rx.on('message', (m) => {
      got += typeof m === 'string' ? m.length : m.byteLength;
      if (got >= total) {
        off();
        res();
      }
    });
  });
}
