/**
 * A small RFC 5780-style NAT behaviour probe of our own, independent of the product's stack,
 * so the lab's rule sets are validated by something that does not share their bugs.
 *
 * Server (in `pub`): UDP sockets on the relay's two addresses and two ports
 * (A:p1, A:p2, B:p1), plus TCP listeners. A request is a JSON datagram
 * `{ id, replyFrom: number[] }`; the server answers `{ id, mapped, from }` from each socket
 * index in `replyFrom` (RFC 5780's CHANGE-REQUEST), `mapped` being the source it saw
 * (XOR-MAPPED-ADDRESS).
 *
 * Client (in a host namespace):
 *  - mapping (RFC 5780 section 4.3): one socket sends to A:p1, A:p2 and B:p1 and compares
 *    the mapped addresses: all equal = endpoint-independent, equal per address =
 *    address-dependent, all different = address-and-port-dependent;
 *  - filtering (section 4.4): a fresh socket sends only to A:p1 and asks for replies from
 *    B:p1 (other address) and A:p2 (other port): B arrives = endpoint-independent, only A:p2 =
 *    address-dependent, neither = address-and-port-dependent;
 *  - TCP: which of the given ports accept a connection.
 *
 * Run: `node --import tsx test/natlab/probe.ts server <json config>` or `... client <json>`.
 * The server prints `ready` once bound; the client prints one JSON result line.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { pathToFileURL } from 'node:url';
import type { Filtering, Mapping } from './nat.js';

/** How long a probe waits for the answers to one request; lab round trips are sub-millisecond. */
const ANSWER_WAIT_MS = 400;
/** Attempts per request: UDP in the lab does not lose packets, one retry covers start-up races. */
const ATTEMPTS = 2;
/** Bound on a TCP connect attempt through the lab. */
const TCP_CONNECT_TIMEOUT_MS = 1_500;
/** Largest request or answer datagram accepted. */
const MAX_DATAGRAM = 512;

export interface ProbeServerConfig {
  /** Socket 0 = A:p1, 1 = A:p2, 2 = B:p1. */
  readonly udp: readonly { readonly host: string; readonly port: number }[];
  readonly tcp: readonly { readonly host: string; readonly port: number }[];
}

export interface ProbeClientConfig {
  readonly udp: ProbeServerConfig['udp'];
  readonly tcp: ProbeServerConfig['tcp'];
}

export interface ProbeResult {
  /** Mapped address:port seen by A:p1, A:p2, B:p1 (null = no answer). */
  readonly mapped: readonly (string | null)[];
  readonly local: string;
  readonly mapping: Mapping | 'address-dependent' | 'no-udp';
  /** Which of [A:p1 (control), A:p2, B:p1] answered the filtering socket. */
  readonly filteringReplies: readonly boolean[];
  readonly filtering: Filtering | 'no-udp';
  /** TCP reachability per configured TCP endpoint. */
  readonly tcp: readonly boolean[];
}

/** Classifies mapping from the three mapped addresses (A:p1, A:p2, B:p1). */
export function classifyMapping(mapped: readonly (string | null)[]): ProbeResult['mapping'] {
  const [a1, a2, b1] = mapped;
  if (!a1 || !a2 || !b1) return 'no-udp';
  if (a1 === a2 && a1 === b1) return 'endpoint-independent';
  if (a1 === a2) return 'address-dependent';
  return 'address-and-port-dependent';
}

/** Classifies filtering from which of [A:p1, A:p2, B:p1] could answer a socket that sent only to A:p1. */
export function classifyFiltering(replies: readonly boolean[]): ProbeResult['filtering'] {
  const [control, otherPort, otherAddress] = replies;
  if (!control) return 'no-udp';
  if (otherAddress) return 'endpoint-independent';
  if (otherPort) return 'address-dependent';
  return 'address-and-port-dependent';
}

interface Answer {
  readonly id: string;
  readonly mapped: string;
  readonly from: number;
}

function parseAnswer(msg: Buffer): Answer | null {
  if (msg.length > MAX_DATAGRAM) return null;
  try {
    const v = JSON.parse(msg.toString('utf8')) as unknown;
    if (typeof v !== 'object' || v === null) return null;
    const o = v as Record<string, unknown>;
    if (typeof o['id'] !== 'string' || typeof o['mapped'] !== 'string' || !Number.isInteger(o['from'])) return null;
    return { id: o['id'], mapped: o['mapped'], from: o['from'] as number };
  } catch {
    return null;
  }
}

function parseRequest(msg: Buffer, sockets: number): { id: string; replyFrom: number[] } | null {
  if (msg.length > MAX_DATAGRAM) return null;
  try {
    const v = JSON.parse(msg.toString('utf8')) as unknown;
    if (typeof v !== 'object' || v === null) return null;
    const o = v as Record<string, unknown>;
    const rf = o['replyFrom'];
    if (typeof o['id'] !== 'string' || o['id'].length > 64 || !Array.isArray(rf) || rf.length > sockets) return null;
    if (!rf.every((i) => Number.isInteger(i) && i >= 0 && i < sockets)) return null;
    return { id: o['id'], replyFrom: rf as number[] };
  } catch {
    return null;
  }
}

/** Starts the probe server; resolves once every socket is bound. */
export async function startProbeServer(cfg: ProbeServerConfig): Promise<() => Promise<void>> {
  const sockets = cfg.udp.map(() => dgram.createSocket('udp4'));
  sockets.forEach((s) => {
    s.on('error', () => undefined); // a send to an address that vanished must not stop the server
    s.on('message', (msg, rinfo) => {
      const req = parseRequest(msg, sockets.length);
      if (!req) return;
      const mapped = `${rinfo.address}:${rinfo.port}`;
      for (const from of req.replyFrom) {
        sockets[from]!.send(JSON.stringify({ id: req.id, mapped, from }), rinfo.port, rinfo.address);
      }
    });
  });
  await Promise.all(sockets.map((s, i) => new Promise<void>((res) => s.bind(cfg.udp[i]!.port, cfg.udp[i]!.host, res))));
  const servers = cfg.tcp.map(() =>
    net.createServer((c) => {
      c.on('error', () => undefined); // probes reset their connections on purpose
      c.end('ok\n');
    }),
  );
  await Promise.all(servers.map((s, i) => new Promise<void>((res) => s.listen(cfg.tcp[i]!.port, cfg.tcp[i]!.host, res))));
  return async () => {
    for (const s of sockets) s.close();
    await Promise.all(servers.map((s) => new Promise<void>((res) => s.close(() => res()))));
  };
}

/** Sends one request from `sock` to `target`, returns the answers (by socket index) within the bound. */
async function ask(
  sock: dgram.Socket,
  target: { host: string; port: number },
  replyFrom: number[],
  tag: string,
): Promise<Map<number, string>> {
  const got = new Map<number, string>();
  for (let attempt = 0; attempt < ATTEMPTS && got.size < replyFrom.length; attempt++) {
    const id = `${tag}-${attempt}`;
    const onMsg = (msg: Buffer): void => {
      const a = parseAnswer(msg);
      if (a && a.id.startsWith(`${tag}-`)) got.set(a.from, a.mapped);
    };
    sock.on('message', onMsg);
    sock.send(JSON.stringify({ id, replyFrom }), target.port, target.host);
    await new Promise((r) => setTimeout(r, ANSWER_WAIT_MS));
    sock.off('message', onMsg);
  }
  return got;
}

function tcpReachable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean): void => {
      clearTimeout(t);
      s.destroy();
      resolve(ok);
    };
    const t = setTimeout(() => done(false), TCP_CONNECT_TIMEOUT_MS);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

async function boundSocket(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  s.on('error', () => undefined); // sends blocked by a firewall surface as errors on some kernels
  await new Promise<void>((res) => s.bind(0, res));
  return s;
}

/** Runs the whole probe from the current namespace. */
export async function runProbeClient(cfg: ProbeClientConfig): Promise<ProbeResult> {
  const m = await boundSocket();
  const mapped: (string | null)[] = [];
  for (let i = 0; i < cfg.udp.length; i++) {
    const got = await ask(m, cfg.udp[i]!, [i], `map${i}`);
    mapped.push(got.get(i) ?? null);
  }
  const local = `${m.address().address}:${m.address().port}`;
  m.close();
  const f = await boundSocket();
  const got = await ask(f, cfg.udp[0]!, [0, 1, 2], 'filter');
  f.close();
  const filteringReplies = [got.has(0), got.has(1), got.has(2)];
  const tcp = await Promise.all(cfg.tcp.map((t) => tcpReachable(t.host, t.port)));
  return {
    mapped,
    local,
    mapping: classifyMapping(mapped),
    filteringReplies,
    filtering: classifyFiltering(filteringReplies),
    tcp,
  };
}

async function main(): Promise<void> {
  const [mode, json] = process.argv.slice(2);
  const cfg = JSON.parse(json ?? '{}') as ProbeServerConfig;
  if (mode === 'server') {
    const stop = await startProbeServer(cfg);
    process.stdout.write('ready\n');
    const shutdown = (): void => void stop().then(() => process.exit(0));
    process.once('SIGTERM', shutdown);
    process.once('SIGINT', shutdown);
  } else if (mode === 'client') {
    const r = await runProbeClient(cfg);
    process.stdout.write(JSON.stringify(r) + '\n');
  } else {
    process.stderr.write('usage: probe.ts server|client <json config>\n');
    process.exitCode = 2;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main();
}
