/**
 * The port-prediction ("birthday") technique Tailscale describes for the one NAT pairing
 * ICE cannot punch: symmetric (address-and-port-dependent mapping) against port-restricted
 * (endpoint-independent mapping, address-and-port-dependent filtering).
 *
 *  - The easy side (port-restricted) learns its external address:port E from the probe
 *    server; its NAT keeps that port for every destination.
 *  - The hard side (symmetric) opens `sockets` sockets and sends one packet from each to E.
 *    Each creates a mapping S:random_i on the symmetric NAT that admits packets from E only.
 *    The easy side's filter drops them all (it never sent to those ports), and its router drops
 *    them in INPUT, so they leave no state behind.
 *  - The easy side sends `guesses` packets from E's socket to S at distinct random ports. A
 *    guess that lands on one of the hard side's ports passes the symmetric NAT (it is the reply
 *    direction of that mapping), the hard side answers from that socket, and the answer passes
 *    the port-restricted filter because the easy side sent to exactly that address:port.
 *
 * With n open ports out of R possible and g guesses, P(hit) = 1 - (1 - n/R)^g; for n = 256,
 * g = 1024, R = 64,512 (masquerade's 1024-65535) that is about 98%.
 *
 * Run: `node --import tsx test/natlab/birthday.ts hard|easy '<json>'` (see BirthdayHard/Easy).
 */
import dgram from 'node:dgram';
import { createInterface } from 'node:readline';
import { randomInt } from 'node:crypto';
import { pathToFileURL } from 'node:url';

/** Lowest and highest port Linux masquerade draws from when a packet's source port is >= 1024. */
export const MASQUERADE_PORT_MIN = 1024;
export const MASQUERADE_PORT_MAX = 65535;

/** Hard side: how many sockets (mappings) to open; Tailscale uses 256. */
export const DEFAULT_HARD_SOCKETS = 256;
/** Easy side: how many distinct ports to guess; bounds the packets an attempt may cost. */
export const DEFAULT_GUESSES = 1024;
/** How long the easy side waits for an answer after its last guess. */
const ANSWER_WAIT_MS = 1_000;
/** Bound on the hard side's whole life. */
const HARD_LIFETIME_MS = 15_000;

export interface BirthdayHard {
  readonly target: { host: string; port: number };
  readonly sockets: number;
}

export interface BirthdayEasy {
  readonly probe: { host: string; port: number };
  readonly hardAddress: string;
  readonly guesses: number;
}

export interface BirthdayResult {
  readonly hit: boolean;
  /** Packets the easy side sent (guesses) before a hit or the end. */
  readonly guessesSent: number;
  readonly hitPort?: number;
}

/** The theoretical hit probability, for the report. */
export function hitProbability(sockets: number, guesses: number): number {
  const range = MASQUERADE_PORT_MAX - MASQUERADE_PORT_MIN + 1;
  return 1 - Math.pow(1 - sockets / range, guesses);
}

async function bind(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  s.on('error', () => undefined);
  await new Promise<void>((r) => s.bind(0, r));
  return s;
}

async function hard(cfg: BirthdayHard): Promise<void> {
  const sockets = await Promise.all(Array.from({ length: cfg.sockets }, bind));
  for (const s of sockets) {
    s.on('message', (msg, rinfo) => {
      if (msg.toString() !== 'B!') return;
      s.send('B+', rinfo.port, rinfo.address);
      process.stdout.write(`hit ${s.address().port}\n`);
    });
    s.send('B?', cfg.target.port, cfg.target.host);
  }
  process.stdout.write('armed\n');
  setTimeout(() => process.exit(0), HARD_LIFETIME_MS).unref();
  await new Promise((r) => setTimeout(r, HARD_LIFETIME_MS));
}

async function easy(cfg: BirthdayEasy): Promise<void> {
  const s = await bind();
  // Learn E (probe.ts protocol: ask socket 0 of the probe server to answer).
  const mapped = await new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('probe server did not answer')), 2_000);
    s.once('message', (m) => {
      clearTimeout(t);
      resolve((JSON.parse(m.toString()) as { mapped: string }).mapped);
    });
    s.send(JSON.stringify({ id: 'bday', replyFrom: [0] }), cfg.probe.port, cfg.probe.host);
  });
  process.stdout.write(`mapped ${mapped}\n`);
  await new Promise<void>((resolve) => createInterface({ input: process.stdin }).on('line', (l) => l === 'go' && resolve()));
  let hitPort: number | undefined;
  s.on('message', (m, rinfo) => {
    if (m.toString() === 'B+' && rinfo.address === cfg.hardAddress) hitPort ??= rinfo.port;
  });
  const tried = new Set<number>();
  let sent = 0;
  while (sent < cfg.guesses && hitPort === undefined) {
    const port = randomInt(MASQUERADE_PORT_MIN, MASQUERADE_PORT_MAX + 1);
    if (tried.has(port)) continue;
    tried.add(port);
    s.send('B!', port, cfg.hardAddress);
    sent++;
    // Pace in bursts of 64 so the socket buffer never overflows and answers get a chance.
    if (sent % 64 === 0) await new Promise((r) => setTimeout(r, 5));
  }
  const deadline = Date.now() + ANSWER_WAIT_MS;
  while (hitPort === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const result: BirthdayResult = hitPort === undefined ? { hit: false, guessesSent: sent } : { hit: true, guessesSent: sent, hitPort };
  process.stdout.write(`R ${JSON.stringify(result)}\n`);
  s.close();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [mode, json] = process.argv.slice(2);
  const cfg = JSON.parse(json ?? '{}') as unknown;
  void (mode === 'hard' ? hard(cfg as BirthdayHard) : easy(cfg as BirthdayEasy)).then(() => process.exit(0));
}
