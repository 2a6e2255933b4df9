/**
 * Happy Eyeballs for relays (Node only; RFC 8305's idea applied to TURN transports).
 *
 * werift uses only the first `stun:` and the first `turn:` URL it is given, and waits up to 5 s
 * for a STUN server that does not answer before its checks start. So before a peer connection is
 * built we send one STUN Binding request (RFC 8489 §6.1: no authentication needed) over every
 * relay transport offered, UDP first and TCP / TLS a few milliseconds later, and put first the
 * TURN URL whose transport answered first. A `stun:` URL that stays silent for a grace period
 * after a relay answered is dropped: on a network that blocks UDP it would only cost seconds.
 * If nothing answers before the deadline, the servers are returned unchanged.
 *
 * Where UDP reached the relay first, the next dials on the same network reuse that verdict and
 * probe again in the background instead of waiting a round trip to the relay (`PROBE_REUSE_MS`).
 */
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';
import { networkInterfaces } from 'node:os';
import { parseIceUrl, type IceTransport, type IceUrl } from '../../protocol/ice-url.js';
import { encodeBindingRequest, readBindingResponse } from '../../protocol/stun/binding.js';
import type { IceServerConfig } from './backend.js';

/** Delay between starting successive transports: UDP wins on any network where it works (RFC 8305 §5 uses 250 ms for TCP; ours is a one-RTT probe). */
export const PROBE_STAGGER_MS = 30;
/** Overall bound on the probe: past this the connection is built anyway with the given order. */
export const PROBE_DEADLINE_MS = 1_500;
/**
 * After the first relay answered, a silent STUN URL still gets twice the time that answer took
 * (it goes to a relay of similar distance), but at least this long, before it is dropped.
 */
export const STUN_GRACE_MIN_MS = 25;

type Transport = IceTransport;

/** The ICE URL parser lives in protocol/ice-url.ts; re-exported for this module's callers. */
export { parseIceUrl };

/** Largest Binding response read from a stream: an answer is well under 100 bytes; a bigger one is not an answer. */
const MAX_STREAM_RESPONSE_BYTES = 1280;

/** Any response (success or error class) to our transaction proves the transport reaches the relay. */
const answers = (bytes: Uint8Array, tid: Uint8Array): boolean => readBindingResponse(bytes, tid) !== null;

/**
 * Sends one Binding request; resolves true when answered, false on error, abort or deadline.
 * `background`: its socket and timer do not keep the process alive.
 */
function probe(u: IceUrl, signal: AbortSignal, tlsOptions: tls.ConnectionOptions | undefined, background: boolean): Promise<boolean> {
  return new Promise((resolve) => {
    const tid = new Uint8Array(randomBytes(12));
    const msg = encodeBindingRequest(tid);
    let done = false;
    let cleanup = (): void => undefined;
    const finish = (v: boolean): void => {
      if (done) return;
      done = true;
      signal.removeEventListener('abort', onAbort);
      cleanup();
      resolve(v);
    };
    const onAbort = (): void => finish(false);
    signal.addEventListener('abort', onAbort);
    if (signal.aborted) return finish(false);
    if (u.transport === 'udp') {
      const sock = dgram.createSocket(net.isIPv6(u.host) ? 'udp6' : 'udp4');
      if (background) sock.unref();
      cleanup = () => sock.close();
      sock.on('error', () => finish(false));
      sock.on('message', (b) => answers(b, tid) && finish(true));
      // Retransmit once (RFC 8489 §6.2.1 uses an RTO; one resend covers a lost first packet).
      const resend = setTimeout(() => !done && sock.send(msg, u.port, u.host, () => undefined), 250);
      if (background) resend.unref();
      const prev = cleanup;
      cleanup = () => {
        clearTimeout(resend);
        prev();
      };
      sock.send(msg, u.port, u.host, (err) => err && finish(false));
      return;
    }
    const sock =
      u.transport === 'tls'
        ? tls.connect({ host: u.host, port: u.port, servername: net.isIP(u.host) ? undefined : u.host, ...tlsOptions })
        : net.connect({ host: u.host, port: u.port });
    if (background) sock.unref();
    cleanup = () => sock.destroy();
    let acc = Buffer.alloc(0);
    sock.on('error', () => finish(false));
    sock.on('close', () => finish(false));
    sock.on(u.transport === 'tls' ? 'secureConnect' : 'connect', () => sock.write(msg));
    sock.on('data', (b: Buffer) => {
      acc = Buffer.concat([acc, b]);
      if (acc.length < 20) return;
      // Over a stream a STUN message is its 20-byte header plus the header's length (RFC 8489 §6.2.2).
      const total = 20 + acc.readUInt16BE(2);
      if (total > MAX_STREAM_RESPONSE_BYTES) return finish(false);
      if (acc.length >= total) finish(answers(new Uint8Array(acc.buffer, acc.byteOffset, total), tid));
    });
  });
}

/** Where a probe sends its request: the URL without its credentials (one per relay transport). */
type Entry = { url: string; parsed: IceUrl; server: IceServerConfig };
const reachKey = (e: Entry): string => `${e.parsed.kind}:${e.parsed.transport}:${e.parsed.host}:${e.parsed.port}`;

/** What a probe found: the TURN URL whose transport answered first, and the STUN URLs that answered (by `reachKey`). */
interface Verdict {
  readonly firstTurn: string | null;
  readonly firstTransport: Transport | null;
  readonly liveStun: ReadonlySet<string>;
  readonly at: number;
  readonly network: string;
}

/**
 * How long a verdict that UDP reaches the relay first is used without waiting for a new probe.
 * Each use still sends a probe in the background, whose verdict the next dial uses; so a
 * network that stopped passing UDP costs at most one dial the UDP-first order, and none when the
 * host's addresses changed (a new network) or the verdict is older than this.
 */
export const PROBE_REUSE_MS = 10 * 60_000;
const verdicts = new Map<string, Verdict>();
const refreshing = new Set<string>();

/** The host's interface addresses, as a verdict's network: another set is another network. */
function networkId(): string {
  try {
    return Object.values(networkInterfaces())
      .flatMap((l) => (l ?? []).map((a) => a.address))
      .sort()
      .join(',');
  } catch {
    return '';
  }
}

/** @internal Tests: forget every verdict. */
export function forgetProbeVerdicts(): void {
  verdicts.clear();
}

/**
 * Returns the ICE servers reordered for werift: a live `stun:` URL first (or none), then the
 * TURN URL that answered first, then the rest. Never throws.
 *
 * A verdict that UDP reached the relays first is reused for `PROBE_REUSE_MS` on the same network,
 * without waiting: a dial on a network where UDP works then spends no round trip to the relay
 * before its connection is built (docs/BENCHMARKS.md, "The native dial's event loop").
 */
export async function orderIceServers(
  servers: readonly IceServerConfig[],
  tlsOptions?: tls.ConnectionOptions | { readonly ca?: string | Uint8Array; readonly rejectUnauthorized?: boolean; readonly servername?: string },
): Promise<IceServerConfig[]> {
  const entries: Entry[] = [];
  for (const server of servers) {
    for (const url of server.urls) {
      const parsed = parseIceUrl(url);
      if (parsed) entries.push({ url, parsed, server });
    }
  }
  const turns = entries.filter((e) => e.parsed.kind === 'turn');
  const stuns = entries.filter((e) => e.parsed.kind === 'stun' && e.parsed.transport === 'udp');
  if (turns.length === 0 && stuns.length === 0) return [...servers];

  const key = [...new Set([...stuns, ...turns].map(reachKey))].sort().join(' ');
  const network = networkId();
  const known = verdicts.get(key);
  let verdict: Verdict;
  if (known && known.firstTransport === 'udp' && known.network === network && Date.now() - known.at < PROBE_REUSE_MS) {
    verdict = known;
    if (!refreshing.has(key)) {
      refreshing.add(key);
      void probeAll(stuns, turns, tlsOptions, network, true)
        .then((v) => verdicts.set(key, v))
        .finally(() => refreshing.delete(key));
    }
  } else {
    verdict = await probeAll(stuns, turns, tlsOptions, network, false);
    verdicts.set(key, verdict);
  }

  if (!verdict.firstTurn && verdict.liveStun.size === 0) return [...servers];
  const out: IceServerConfig[] = [];
  for (const s of stuns) if (verdict.liveStun.has(reachKey(s))) out.push({ urls: [s.url] });
  const chosen = turns.find((t) => reachKey(t) === verdict.firstTurn) ?? null;
  const rest = turns.filter((t) => t !== chosen);
  for (const t of chosen ? [chosen, ...rest] : rest) {
    out.push({ urls: [t.url], ...(t.server.username ? { username: t.server.username } : {}), ...(t.server.credential ? { credential: t.server.credential } : {}) });
  }
  return out;
}

/**
 * Probes every URL (UDP first, TCP and TLS staggered) until a TURN URL answered and the STUN URLs
 * had their grace, or the deadline. `background` (a reused verdict's refresh): nothing of it keeps
 * the process alive, so an application that dials and exits is not held up to the deadline.
 */
async function probeAll(stuns: readonly Entry[], turns: readonly Entry[], tlsOptions: unknown, network: string, background: boolean): Promise<Verdict> {
  const weak = <T extends { unref(): unknown }>(t: T): T => (background && t.unref(), t);
  const ac = new AbortController();
  const order: Record<Transport, number> = { udp: 0, tcp: 1, tls: 2 };
  let firstTurn: Entry | null = null;
  const liveStun = new Set<string>();
  let graceTimer: ReturnType<typeof setTimeout> | undefined;

  const started = Date.now();
  await new Promise<void>((resolveAll) => {
    const deadline = weak(setTimeout(() => ac.abort(), PROBE_DEADLINE_MS));
    let pending = 0;
    const settle = (): void => {
      if (--pending === 0 || (firstTurn && stuns.every((s) => liveStun.has(reachKey(s))))) ac.abort();
    };
    ac.signal.addEventListener('abort', () => {
      clearTimeout(deadline);
      clearTimeout(graceTimer);
      resolveAll();
    });
    const start = (e: Entry, delay: number): void => {
      pending++;
      const go = (): void => {
        void probe(e.parsed, ac.signal, tlsOptions as tls.ConnectionOptions | undefined, background).then((okay) => {
          if (okay && e.parsed.kind === 'stun') liveStun.add(reachKey(e));
          if (okay && e.parsed.kind === 'turn' && !firstTurn) {
            firstTurn = e;
            if (stuns.length === 0) ac.abort();
            else graceTimer = weak(setTimeout(() => ac.abort(), Math.max(STUN_GRACE_MIN_MS, 2 * (Date.now() - started))));
          }
          settle();
        });
      };
      if (delay === 0) go();
      else {
        const t = weak(setTimeout(go, delay));
        ac.signal.addEventListener('abort', () => clearTimeout(t));
      }
    };
    for (const s of stuns) start(s, 0);
    for (const t of [...turns].sort((a, b) => order[a.parsed.transport] - order[b.parsed.transport])) {
      start(t, order[t.parsed.transport] * PROBE_STAGGER_MS);
    }
  });
  const first = firstTurn as Entry | null;
  return { firstTurn: first ? reachKey(first) : null, firstTransport: first ? first.parsed.transport : null, liveStun, at: Date.now(), network };
}
