/**
 * `homelink netcheck`: what a user runs when a link does not come up. Measures, in about two
 * seconds:
 *
 *  1. UDP: does a STUN Binding to the relay come back; the server-reflexive address; whether a
 *     NAT sits in between (mapped address differs from the local one).
 *  2. NAT mapping (RFC 5780 §4.3, RFC 4787 §4.1): one socket asks the relay's two addresses;
 *     the same mapped address from both means endpoint-independent mapping (hole punching works),
 *     different ones mean endpoint-dependent mapping (direct links need the peer's NAT to be
 *     lenient, or the relay).
 *  3. NAT filtering (RFC 5780 §4.4, RFC 4787 §5): instead of RFC 5780's CHANGE-REQUEST, a TURN
 *     allocation on the relay sends us a packet from the relayed port (same address, port we never
 *     contacted), and, with a second relay address, from an address we never contacted.
 *     Arrives from the other address: endpoint-independent; only from the other port:
 *     address-dependent; neither: address-and-port-dependent.
 *  4. Each relay's UDP, TCP and TLS reachability and round-trip time.
 *  5. Whether the signaling service answers, and whether it accepts the token.
 *
 * Node only.
 */
import dgram from 'node:dgram';
import { readFile } from 'node:fs/promises';
import WebSocket from 'ws';
import { wsProtocols } from '../protocol/messages.js';
import { explainRejectedToken } from './credentials.js';
import { formatAddress, StunClientError, streamBinding, TurnAllocation, UdpStun, type TurnCredentials } from './stun-client.js';
import type { TransportAddress } from '../protocol/stun/index.js';

/** Bindings per relay over UDP for the RTT: the median of three smooths one scheduling hiccup. */
export const UDP_RTT_SAMPLES = 3;
/** How long the filtering test waits for the relay's packet to reach us. */
export const FILTER_WAIT_MS = 600;
/** Bound on the signaling checks (HTTP answer and WebSocket hello). */
export const SIGNALING_TIMEOUT_MS = 4_000;

/** One relay to test. */
export interface RelayTarget {
  readonly name: string;
  readonly host: string;
  readonly udpPort: number;
  readonly tcpPort: number;
  readonly tlsPort: number;
  /** The relay's second address (same ports), for the mapping and filtering tests. */
  readonly altHost?: string;
  /** PEM CA to trust for TLS (the local stack's self-signed certificate). */
  readonly caFile?: string;
  /** TLS server name, when it differs from `host`. */
  readonly servername?: string;
  /** TURN credentials for the filtering test; without them filtering is reported unknown. */
  readonly turn?: TurnCredentials;
}

export interface NetcheckOptions {
  readonly relays: readonly RelayTarget[];
  readonly signaling?: { readonly httpUrl: string; readonly wsUrl: string; readonly token?: string };
}

export type Mapping = 'no-nat' | 'endpoint-independent' | 'endpoint-dependent' | 'unknown';
export type Filtering = 'endpoint-independent' | 'address-dependent' | 'address-and-port-dependent' | 'unknown';

export interface TransportResult {
  readonly ok: boolean;
  readonly rttMs?: number;
  /** TCP/TLS: time to connect (and handshake). */
  readonly connectMs?: number;
  readonly error?: string;
  /** How it failed (StunClientError's kind): only `tls` is a certificate or handshake problem. */
  readonly failure?: StunClientError['kind'] | 'error';
}

export interface RelayResult {
  readonly name: string;
  readonly host: string;
  readonly udp: TransportResult;
  readonly tcp: TransportResult;
  readonly tls: TransportResult;
}

export interface NetcheckReport {
  readonly udp: boolean;
  readonly local: string | null;
  /** Server-reflexive address as the first relay saw it. */
  readonly mapped: string | null;
  readonly mapping: Mapping;
  readonly mappingDetail: string;
  readonly filtering: Filtering;
  readonly filteringDetail: string;
  /** Whether a relay would let this endpoint allocate (credentials checked), when tested. */
  readonly turnAllocate: 'ok' | 'refused' | 'not tested';
  readonly relays: readonly RelayResult[];
  readonly signaling: {
    readonly url: string | null;
    readonly reachable: boolean | null;
    readonly rttMs?: number;
    readonly token: 'accepted' | 'rejected' | 'not tested' | 'unknown';
    readonly detail?: string;
  };
  /** Short advice lines derived from the above. */
  readonly advice: readonly string[];
}

const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e));
const failed = (e: unknown): TransportResult => ({ ok: false, error: errText(e), failure: e instanceof StunClientError ? e.kind : 'error' });
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const sameAddr = (a: TransportAddress, b: TransportAddress): boolean => a.ip === b.ip && a.port === b.port;

/** The local IP the kernel picks towards `host` (a connected UDP socket sends nothing), with `port`. */
async function localAddressTowards(host: string, port: number, localPort: number): Promise<string> {
  const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.connect(port, host, () => resolve());
    });
    const ip = s.address().address;
    return formatAddress({ family: host.includes(':') ? 6 : 4, ip, port: localPort });
  } catch {
    return `0.0.0.0:${localPort}`;
  } finally {
    s.close();
  }
}

async function udpRtt(udp: UdpStun, host: string, port: number): Promise<{ mapped: TransportAddress; rttMs: number }> {
  const samples: number[] = [];
  let mapped: TransportAddress | null = null;
  for (let i = 0; i < UDP_RTT_SAMPLES; i++) {
    const r = await udp.binding(host, port);
    mapped = r.mapped;
    samples.push(r.rttMs);
  }
  return { mapped: mapped!, rttMs: median(samples) };
}

async function relayTransports(r: RelayTarget): Promise<RelayResult> {
  const ca = r.caFile ? await readFile(r.caFile).catch(() => undefined) : undefined;
  const stream = async (t: 'tcp' | 'tls', port: number): Promise<TransportResult> => {
    try {
      const x = await streamBinding(t, r.host, port, { ...(ca ? { ca } : {}), ...(r.servername ? { servername: r.servername } : {}) });
      return { ok: true, rttMs: x.rttMs, connectMs: x.connectMs };
    } catch (e) {
      return failed(e);
    }
  };
  const udp = async (): Promise<TransportResult> => {
    const s = await UdpStun.open();
    try {
      const x = await udpRtt(s, r.host, r.udpPort);
      return { ok: true, rttMs: x.rttMs };
    } catch (e) {
      return failed(e);
    } finally {
      s.close();
    }
  };
  const [u, t, s] = await Promise.all([udp(), stream('tcp', r.tcpPort), stream('tls', r.tlsPort)]);
  return { name: r.name, host: r.host, udp: u, tcp: t, tls: s };
}

/** Waits until a datagram from `from` carrying `marker` arrives on `udp`, or the deadline. */
function expectFrom(udp: UdpStun, marker: Buffer): { arrived: Promise<boolean> } {
  return {
    arrived: new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), FILTER_WAIT_MS);
      udp.onStray((data) => {
        if (data.includes(marker)) {
          clearTimeout(t);
          resolve(true);
        }
      });
    }),
  };
}

/**
 * Filtering: a fresh socket contacts only the relay's primary STUN port. A TURN allocation (made
 * from a second socket, so it cannot open the first socket's filter) then sends to the first
 * socket's mapped address from the relayed port; a second allocation on the relay's other address,
 * when there is one, does the same from an address never contacted.
 */
async function measureFiltering(primary: RelayTarget, turn: TurnCredentials, natless: boolean): Promise<{ filtering: Filtering; detail: string; allocate: 'ok' | 'refused' }> {
  const probe = await UdpStun.open();
  const side = await UdpStun.open();
  const side2 = await UdpStun.open();
  const allocations: TurnAllocation[] = [];
  try {
    const { mapped } = await probe.binding(primary.host, primary.udpPort);
    let alloc: TurnAllocation;
    try {
      alloc = await TurnAllocation.allocate(side, primary.host, primary.udpPort, turn);
    } catch (e) {
      return { filtering: 'unknown', detail: `TURN allocation refused (${errText(e)})`, allocate: 'refused' };
    }
    allocations.push(alloc);
    await alloc.permit(mapped);
    const markerPort = Buffer.from(`homelink-netcheck-port-${Math.random().toString(36).slice(2)}`);
    const otherPort = expectFrom(probe, markerPort);
    alloc.sendTo(mapped, markerPort);
    const portOk = await otherPort.arrived;
    let addrOk: boolean | null = null;
    if (primary.altHost) {
      try {
        const alt = await TurnAllocation.allocate(side2, primary.altHost, primary.udpPort, turn);
        allocations.push(alt);
        if (alt.relayed.ip !== alloc.relayed.ip) {
          await alt.permit(mapped);
          const markerAddr = Buffer.from(`homelink-netcheck-addr-${Math.random().toString(36).slice(2)}`);
          const otherAddr = expectFrom(probe, markerAddr);
          alt.sendTo(mapped, markerAddr);
          addrOk = await otherAddr.arrived;
        }
      } catch {
        addrOk = null;
      }
    }
    const via = `relayed ${formatAddress(alloc.relayed)}`;
    if (addrOk === true) return { filtering: 'endpoint-independent', detail: 'packets from an address never contacted get in', allocate: 'ok' };
    if (portOk && natless) return { filtering: 'endpoint-independent', detail: `no NAT: a packet from a port never contacted (${via}) arrived`, allocate: 'ok' };
    if (portOk && addrOk === false) return { filtering: 'address-dependent', detail: 'packets from a contacted address get in, from other addresses not', allocate: 'ok' };
    if (portOk) {
      return {
        filtering: 'address-dependent',
        detail: `packets from another port of a contacted address get in (${via}); a second relay address is needed to tell endpoint-independent apart`,
        allocate: 'ok',
      };
    }
    return { filtering: 'address-and-port-dependent', detail: `only the exact address and port contacted get in (${via} was dropped)`, allocate: 'ok' };
  } finally {
    await Promise.all(allocations.map((a) => a.release()));
    probe.close();
    side.close();
    side2.close();
  }
}

async function checkSignaling(s: NonNullable<NetcheckOptions['signaling']>): Promise<NetcheckReport['signaling']> {
  const t0 = performance.now();
  let reachable = false;
  let rttMs: number | undefined;
  let detail: string | undefined;
  try {
    await fetch(s.httpUrl, { signal: AbortSignal.timeout(SIGNALING_TIMEOUT_MS) });
    reachable = true;
    rttMs = performance.now() - t0;
  } catch (e) {
    detail = `no HTTP answer: ${errText((e as Error).cause ?? e)}`;
  }
  if (!reachable) return { url: s.httpUrl, reachable, token: 'not tested', ...(detail ? { detail } : {}) };
  if (!s.token) return { url: s.httpUrl, reachable, ...(rttMs !== undefined ? { rttMs } : {}), token: 'not tested', detail: 'no token given' };
  const token = await new Promise<{ token: 'accepted' | 'rejected' | 'unknown'; detail?: string }>((resolve) => {
    const ws = new WebSocket(`${s.wsUrl.replace(/\/$/, '')}/v1/presence`, wsProtocols(s.token!), { handshakeTimeout: SIGNALING_TIMEOUT_MS });
    const timer = setTimeout(() => {
      ws.terminate();
      resolve({ token: 'unknown', detail: 'no hello within the deadline' });
    }, SIGNALING_TIMEOUT_MS);
    const finish = (v: { token: 'accepted' | 'rejected' | 'unknown'; detail?: string }): void => {
      clearTimeout(timer);
      ws.removeAllListeners();
      ws.on('error', () => undefined);
      if (ws.readyState === WebSocket.OPEN) ws.close(1000);
      else ws.terminate();
      resolve(v);
    };
    ws.on('message', (d) => {
      let m: unknown;
      try {
        m = JSON.parse(d.toString());
      } catch {
        m = null;
      }
      const type = (m as { type?: unknown } | null)?.type;
      if (type === 'hello') finish({ token: 'accepted' });
      else finish({ token: 'unknown', detail: `unexpected first frame` });
    });
    ws.on('unexpected-response', (_req, res) => {
      const code = res.statusCode ?? 0;
      finish(code === 401 || code === 403 ? { token: 'rejected', detail: `HTTP ${code}: ${explainRejectedToken(s.token!)}` } : { token: 'unknown', detail: `HTTP ${code}` });
    });
    ws.on('error', (e) => finish({ token: 'unknown', detail: errText(e) }));
  });
  return { url: s.httpUrl, reachable, ...(rttMs !== undefined ? { rttMs } : {}), ...token };
}

/**
 * Runs every check and returns the report. Never throws for network conditions: each failure is
 * a field of the report.
 *
 * @example
 * const report = await netcheck({ relays: [{ name: 'local', host: '127.0.0.1', udpPort: 3478, tcpPort: 3478, tlsPort: 5349 }] });
 * process.stdout.write(formatReport(report));
 */
export async function netcheck(opts: NetcheckOptions): Promise<NetcheckReport> {
  const primary = opts.relays[0];
  const signalingP = opts.signaling ? checkSignaling(opts.signaling) : Promise.resolve<NetcheckReport['signaling']>({ url: null, reachable: null, token: 'not tested' });
  const relaysP = Promise.all(opts.relays.map(relayTransports));

  let udpOk = false;
  let local: string | null = null;
  let mapped: TransportAddress | null = null;
  let mapping: Mapping = 'unknown';
  let mappingDetail = 'no relay configured';
  let filtering: Filtering = 'unknown';
  let filteringDetail = 'not measured';
  let turnAllocate: NetcheckReport['turnAllocate'] = 'not tested';

  if (primary) {
    const udp = await UdpStun.open();
    try {
      const a = await udp.binding(primary.host, primary.udpPort);
      local = await localAddressTowards(primary.host, primary.udpPort, udp.socket.address().port);
      udpOk = true;
      mapped = a.mapped;
      const localPort = udp.socket.address().port;
      const natless = a.mapped.port === localPort && local === formatAddress(a.mapped);
      const second = primary.altHost ?? opts.relays.find((r) => r.host !== primary.host)?.host;
      if (second) {
        try {
          const b = await udp.binding(second, primary.altHost ? primary.udpPort : opts.relays.find((r) => r.host === second)!.udpPort);
          if (sameAddr(a.mapped, b.mapped)) {
            mapping = natless ? 'no-nat' : 'endpoint-independent';
            mappingDetail = natless ? 'the relay sees this host\'s own address and port' : `both relay addresses saw ${formatAddress(a.mapped)}`;
          } else {
            mapping = 'endpoint-dependent';
            mappingDetail = `${primary.host} saw ${formatAddress(a.mapped)}, ${second} saw ${formatAddress(b.mapped)}`;
          }
        } catch (e) {
          mappingDetail = `the second relay address ${second} did not answer (${errText(e)})`;
        }
      } else if (natless) {
        mapping = 'no-nat';
        mappingDetail = "the relay sees this host's own port (no second relay address to compare)";
      } else {
        mappingDetail = 'needs a second relay address (the relay has one)';
      }
    } catch (e) {
      mappingDetail = `UDP to ${primary.host}:${primary.udpPort} failed: ${errText(e)}`;
      filteringDetail = 'UDP blocked or relay down';
    } finally {
      udp.close();
    }
    if (udpOk && primary.turn) {
      try {
        const f = await measureFiltering(primary, primary.turn, mapping === 'no-nat');
        filtering = f.filtering;
        filteringDetail = f.detail;
        turnAllocate = f.allocate;
      } catch (e) {
        filteringDetail = `test failed: ${e instanceof StunClientError ? e.message : errText(e)}`;
      }
    } else if (udpOk) {
      filteringDetail = 'needs TURN credentials (run against the local stack, or pass --turn-user/--turn-pass)';
    }
  }

  const [relays, signaling] = await Promise.all([relaysP, signalingP]);
  const advice: string[] = [];
  if (!udpOk && relays.some((r) => r.tcp.ok || r.tls.ok)) advice.push('UDP is blocked: links will go through the relay over TCP/TLS (slower, but they work).');
  if (relays.length > 0 && relays.every((r) => !r.udp.ok && !r.tcp.ok && !r.tls.ok)) advice.push('No relay answers on any transport: check the relay address, the firewall, or that the relay runs.');
  if (mapping === 'endpoint-dependent') advice.push('Endpoint-dependent NAT mapping ("symmetric"): direct links need a lenient NAT on the other side; otherwise the relay is used.');
  if (mapping === 'endpoint-independent' || mapping === 'no-nat') advice.push('NAT mapping allows hole punching: direct links should work.');
  // Blame TLS only for a handshake or certificate failure: a relay that is down refuses TLS connections too.
  if (relays.some((r) => r.tls.failure === 'tls')) advice.push('TLS to a relay failed the certificate check: check its certificate (or --ca for a development relay).');
  else if (relays.some((r) => !r.tls.ok && r.tcp.ok)) advice.push('A relay answers over TCP but not on its TLS port: check the TLS port and that the relay listens on it.');
  if (turnAllocate === 'refused') advice.push('The relay refused the TURN credentials: the relay and the signaling service may not share a secret, or the clock is off.');
  if (signaling.reachable === false) advice.push('The signaling service does not answer: check the URL and that it runs.');
  if (signaling.token === 'rejected') advice.push('The signaling service rejected the token (the Signaling line says why): get a valid one (homelink token locally) from an issuer it trusts.');
  return { udp: udpOk, local, mapped: mapped ? formatAddress(mapped) : null, mapping, mappingDetail, filtering, filteringDetail, turnAllocate, relays, signaling, advice };
}

const ms = (v: number | undefined): string => (v === undefined ? '' : v < 1 ? `${v.toFixed(2)} ms` : `${v.toFixed(1)} ms`);
const tr = (t: TransportResult): string => (t.ok ? `ok ${ms(t.rttMs)}` : `FAIL (${t.error ?? 'no answer'})`);

/** The human-readable report: short lines, like `tailscale netcheck`. */
export function formatReport(r: NetcheckReport): string {
  const lines = ['Report:'];
  lines.push(`  * UDP: ${r.udp}`);
  lines.push(`  * Local address: ${r.local ?? '-'}`);
  lines.push(`  * Server-reflexive address: ${r.mapped ?? '-'}`);
  lines.push(`  * NAT mapping: ${r.mapping} (${r.mappingDetail})`);
  lines.push(`  * NAT filtering: ${r.filtering} (${r.filteringDetail})`);
  lines.push(`  * TURN allocation: ${r.turnAllocate}`);
  lines.push('  * Relays:');
  for (const x of r.relays) {
    lines.push(`    - ${x.name} (${x.host}): udp ${tr(x.udp)}, tcp ${tr(x.tcp)}, tls ${tr(x.tls)}`);
  }
  if (r.relays.length === 0) lines.push('    (none configured)');
  const s = r.signaling;
  lines.push(
    `  * Signaling: ${s.url === null ? 'not tested' : s.reachable ? `answers ${ms(s.rttMs)}` : `NO ANSWER${s.detail ? ` (${s.detail})` : ''}`}` +
      (s.url !== null && s.reachable ? `, token ${s.token}${s.detail && s.token !== 'accepted' ? ` (${s.detail})` : ''}` : ''),
  );
  for (const a of r.advice) lines.push(`=> ${a}`);
  return `${lines.join('\n')}\n`;
}
