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
 */
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';
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

const MAGIC_COOKIE = 0x2112a442;

type Transport = 'udp' | 'tcp' | 'tls';

interface ParsedUrl {
  readonly kind: 'stun' | 'turn';
  readonly transport: Transport;
  readonly host: string;
  readonly port: number;
}

/** Parses `stun:`, `turn:` and `turns:` URLs (RFC 7064 / RFC 7065); null for anything else. */
export function parseIceUrl(url: string): ParsedUrl | null {
  const m = /^(stuns?|turns?):(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?(?:\?transport=(udp|tcp))?$/i.exec(url.trim());
  if (!m) return null;
  const scheme = m[1]!.toLowerCase();
  const secure = scheme.endsWith('s');
  const transport: Transport = secure ? 'tls' : ((m[4]?.toLowerCase() as Transport | undefined) ?? 'udp');
  const port = m[3] ? Number(m[3]) : secure ? 5349 : 3478;
  if (port < 1 || port > 65535) return null;
  return { kind: scheme.startsWith('stun') ? 'stun' : 'turn', transport, host: m[2]!.replace(/^\[|\]$/g, ''), port };
}

function bindingRequest(): { msg: Buffer; tid: Buffer } {
  const tid = randomBytes(12);
  const msg = Buffer.alloc(20);
  msg.writeUInt16BE(0x0001, 0); // Binding request
  msg.writeUInt16BE(0, 2);
  msg.writeUInt32BE(MAGIC_COOKIE, 4);
  tid.copy(msg, 8);
  return { msg, tid };
}

/** Any STUN response (success or error class) carrying our transaction id proves reachability. */
function isResponseTo(buf: Buffer, tid: Buffer): boolean {
  if (buf.length < 20) return false;
  const type = buf.readUInt16BE(0);
  const isResponse = (type & 0x0110) === 0x0100 || (type & 0x0110) === 0x0110;
  return isResponse && buf.readUInt32BE(4) === MAGIC_COOKIE && buf.subarray(8, 20).equals(tid);
}

/** Sends one Binding request; resolves true when answered, false on error, abort or deadline. */
function probe(u: ParsedUrl, signal: AbortSignal, tlsOptions?: tls.ConnectionOptions): Promise<boolean> {
  return new Promise((resolve) => {
    const { msg, tid } = bindingRequest();
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
      cleanup = () => sock.close();
      sock.on('error', () => finish(false));
      sock.on('message', (b) => isResponseTo(b, tid) && finish(true));
      // Retransmit once (RFC 8489 §6.2.1 uses an RTO; one resend covers a lost first packet).
      const resend = setTimeout(() => !done && sock.send(msg, u.port, u.host, () => undefined), 250);
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
    cleanup = () => sock.destroy();
    let acc = Buffer.alloc(0);
    sock.on('error', () => finish(false));
    sock.on('close', () => finish(false));
    sock.on(u.transport === 'tls' ? 'secureConnect' : 'connect', () => sock.write(msg));
    sock.on('data', (b: Buffer) => {
      acc = Buffer.concat([acc, b]).subarray(0, 64); // only the header matters
      if (acc.length >= 20) finish(isResponseTo(acc, tid));
    });
  });
}

/**
 * Returns the ICE servers reordered for werift: a live `stun:` URL first (or none), then the
 * TURN URL that answered first, then the rest. Never throws.
 */
export async function orderIceServers(
  servers: readonly IceServerConfig[],
  tlsOptions?: tls.ConnectionOptions | { readonly ca?: string | Uint8Array; readonly rejectUnauthorized?: boolean; readonly servername?: string },
): Promise<IceServerConfig[]> {
  type Entry = { url: string; parsed: ParsedUrl; server: IceServerConfig };
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

  const ac = new AbortController();
  const order: Record<Transport, number> = { udp: 0, tcp: 1, tls: 2 };
  let firstTurn: Entry | null = null;
  const liveStun = new Set<Entry>();
  let graceTimer: ReturnType<typeof setTimeout> | undefined;

  const started = Date.now();
  await new Promise<void>((resolveAll) => {
    const deadline = setTimeout(() => ac.abort(), PROBE_DEADLINE_MS);
    let pending = 0;
    const settle = (): void => {
      if (--pending === 0 || (firstTurn && stuns.every((s) => liveStun.has(s)))) ac.abort();
    };
    ac.signal.addEventListener('abort', () => {
      clearTimeout(deadline);
      clearTimeout(graceTimer);
      resolveAll();
    });
    const start = (e: Entry, delay: number): void => {
      pending++;
      const go = (): void => {
        void probe(e.parsed, ac.signal, tlsOptions as tls.ConnectionOptions).then((okay) => {
          if (okay && e.parsed.kind === 'stun') liveStun.add(e);
          if (okay && e.parsed.kind === 'turn' && !firstTurn) {
            firstTurn = e;
            if (stuns.length === 0) ac.abort();
            else graceTimer = setTimeout(() => ac.abort(), Math.max(STUN_GRACE_MIN_MS, 2 * (Date.now() - started)));
          }
          settle();
        });
      };
      if (delay === 0) go();
      else {
        const t = setTimeout(go, delay);
        ac.signal.addEventListener('abort', () => clearTimeout(t));
      }
    };
    for (const s of stuns) start(s, 0);
    for (const t of [...turns].sort((a, b) => order[a.parsed.transport] - order[b.parsed.transport])) {
      start(t, order[t.parsed.transport] * PROBE_STAGGER_MS);
    }
  });

  if (!firstTurn && liveStun.size === 0) return [...servers];
  const out: IceServerConfig[] = [];
  for (const s of stuns) if (liveStun.has(s)) out.push({ urls: [s.url] });
  const chosen = firstTurn as Entry | null;
  const rest = turns.filter((t) => t !== chosen);
  for (const t of chosen ? [chosen, ...rest] : rest) {
    out.push({ urls: [t.url], ...(t.server.username ? { username: t.server.username } : {}), ...(t.server.credential ? { credential: t.server.credential } : {}) });
  }
  return out;
}
