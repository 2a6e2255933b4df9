/**
 * The werift backend (Node). The only file in the project that imports werift.
 *
 * werift 0.24.4 is driven rather than trusted (see NATLAB.md):
 * - it uses only the first `stun:` and first `turn:` URL, so the Happy Eyeballs probe in
 *   `turn-probe.ts` picks which relay transport (UDP, TCP, TLS) goes first, and drops a STUN URL
 *   that does not answer (werift would wait 5 s for it before checks start);
 * - with no `stun:` URL it falls back to `stun.l.google.com`, so we clear that default;
 * - its ICE never reports `failed`, so deadlines live in the session, not here;
 * - a pair learned from the peer's early check keeps its peer-reflexive remote candidate even
 *   after the peer's signaled candidate for the same address arrives, so `selectedPair()` may
 *   report `prflx` for the peer's relayed address; client/path.ts resolves it;
 * - `setLocalDescription` waits for gathering, so the SDP is returned from `createOffer` /
 *   `createAnswer` before it, and gathering runs in the background while candidates trickle.
 *
 * - its TURN client never releases an allocation (no Refresh with LIFETIME 0 on close) and
 *   sleeps between refreshes on a timer nothing can cancel, so a closed connection leaves its
 *   allocation on the relay for the whole lifetime and keeps the process alive for minutes;
 *   `releaseTurnOnClose` below replaces both (see there).
 * - its DTLS client waits a fixed 100 ms after ICE connected before its first flight, because its
 *   DTLS server drops records that arrive before the handshake started; `earlyDtls` below keeps
 *   those records and lets the client go at once where the peer says it keeps them.
 *
 * DTLS: every link gets its own certificate (`newDtlsKeys`; a rebuilt connection of the link is given the same one, `PeerOptions.certificate`). werift itself refuses a peer whose certificate does not match the SDP fingerprint
 * (`RTCDtlsTransport.verifyRemoteCertificateFingerprint`, checked in test/client/backend.test.ts);
 * we still compute the presented certificate's fingerprint ourselves from its DER bytes so the
 * identity check compares against what the handshake carried, not what SDP claimed.
 */
import { createHash } from 'node:crypto';
import {
  HashAlgorithm,
  Message,
  RTCPeerConnection,
  serverReflexiveCandidate,
  SignatureAlgorithm,
  TurnProtocol,
  type DtlsKeys,
  type RTCDataChannel,
} from 'werift';
import {
  dataChannelInit,
  normaliseFingerprint,

  sdpFingerprints,
  type CandidateInfo,
  type CandidateInit,
  type ChannelOptions,
  type ChannelState,
  type DtlsCertificate,
  type IceServerConfig,
  type OfferOptions,
  type PeerBackend,
  type PeerOptions,
  type RawChannel,
  type SelectedPair,
  type TransportState,
  type TransportStats,
} from './backend.js';
import { parseIceUrl } from '../../protocol/ice-url.js';
import { NetworkWatch, type NetworkWatchOptions } from './network-watch.js';
import { orderIceServers } from './turn-probe.js';
import { selfSignedP256 } from './certificate.js';

/** Minimal view of werift internals we read (typed loosely: they are not public API). */
interface CandidateInternals {
  type: string;
  host: string;
  port: number;
  transport: string;
}
interface ProtocolInternals {
  localIp?: string;
  localCandidate?: CandidateInternals;
  sendData(data: Buffer, addr: [string, number]): Promise<void>;
  close(): Promise<void>;
}
interface PairInternals {
  id: string;
  protocol: ProtocolInternals;
  remoteAddr: [string, number];
  localCandidate: CandidateInternals;
  remoteCandidate: CandidateInternals;
  rtt?: number;
  state: number;
  nominated: boolean;
  updateState(state: number): void;
}
/** werift's `RTCSctpTransport` fields `alignStreamParity` adjusts. */
interface SctpTransportInternals {
  start(remotePort?: number): Promise<void>;
  dataChannelId: number;
  readonly dtlsTransport: { readonly role: string };
}

/** werift's `RTCDtlsTransport` fields `earlyDtls` reads and wraps. */
interface DtlsTransportInternals {
  /** `auto` until `start()` resolves it from the ICE role, before the state turns `connecting`. */
  readonly role: string;
  /** The handshake object, built synchronously in `start()` right after the state turned `connecting`. */
  readonly dtls?: DtlsSocketInternals;
  readonly onStateChange: { subscribe(fn: (s: string) => void): unknown };
  readonly iceTransport: { readonly connection: IceConnectionInternals };
  readonly state: string;
  /** Where werift hands decrypted application data (SCTP); set by its SCTP transport. */
  dataReceiver: (data: Buffer) => void;
}

/** werift's `DtlsSocket` (its `DtlsClient` or `DtlsServer`), as `earlyDtls` and `guardHandshakes` use it. */
interface DtlsSocketInternals {
  connect(): Promise<void>;
  readonly connected: boolean;
  /** The handshake's state: the flight it is at (1-6; 7 on a connected client). */
  readonly dtls: { readonly flight: number };
  readonly transport?: { readonly socket?: { onData?: (data: Buffer) => void } };
  /** The handshake messages of one arriving record, reassembled, ordered by type. */
  onHandleHandshakes: (assembled: Array<{ readonly msg_type: number; readonly fragment: Buffer }>) => Promise<void>;
}

interface IceConnectionInternals {
  stunServer?: [string, number] | undefined;
  turnServer?: [string, number] | undefined;
  generation: number;
  nominated?: PairInternals;
  options: { turnUsername?: string; turnPassword?: string };
  protocols: ProtocolInternals[];
  send: (data: Buffer) => Promise<void>;
  /** Every datagram of application data (DTLS) that reached any of the agent's sockets. */
  onData: { subscribe(fn: (data: Buffer) => void): { unSubscribe(): void } };
  checkStart: (pair: PairInternals) => { awaitable: Promise<unknown>; resolve: () => void };
  checkComplete(pair: PairInternals): void;
  appendLocalCandidate(c: unknown): void;
}

/** werift's `CandidatePairState` values (ice/src/iceBase.ts). */
const PAIR_SUCCEEDED = 3;
const PAIR_FAILED = 4;
/**
 * How long the pair in use before an ICE restart keeps carrying data while the restart finds a
 * new one: RFC 7675 §5.1 lets an agent send for 30 s after its last consent response.
 */
const CARRY_OVER_MS = 30_000;
/**
 * DTLS records kept for a handshake that has not started (`earlyDtls`): a first flight is one or
 * two records, a retransmitted one as many again. libdatachannel keeps 8 (`Transport::recv`).
 */
const EARLY_DTLS_MAX_RECORDS = 8;

/** DTLS 1.2 handshake message types (RFC 6347 §4.3.2; RFC 5246 §7.4) that `guardHandshakes` looks at. */
const CLIENT_HELLO = 1;
const HELLO_VERIFY_REQUEST = 3;

/** A ClientHello without a cookie (the first of the two, RFC 6347 §4.2.1): version, random, session id, then the cookie's length. */
const withoutCookie = (hello: Buffer): boolean => {
  const at = 2 + 32 + 1 + (hello[34] ?? 0);
  return at >= hello.length || hello[at] === 0;
};

/** Application data (SCTP) kept until its DTLS transport is connected (`dataOnceConnected`): an INIT, a DCEP or two. */
const EARLY_DATA_MAX_RECORDS = 16;

/** RFC 7983 §7: a datagram whose first byte is 20-63 is DTLS. */
const isDtlsRecord = (b: Buffer): boolean => b.length > 0 && b[0]! >= 20 && b[0]! <= 63;

/** Node-only options of the werift backend (tests inject the interface reader). */
export interface WeriftOptions {
  /** Local address watch; `false` turns it off. With `hostAddresses` it watches those addresses only. */
  readonly networkWatch?: NetworkWatchOptions | false;
}

function toChannelState(s: string): ChannelState {
  return s === 'open' || s === 'closing' || s === 'closed' ? s : 'connecting';
}

class WeriftChannel implements RawChannel {
  onOpen: (() => void) | null = null;
  onClose: (() => void) | null = null;
  onMessage: ((data: Uint8Array | string) => void) | null = null;
  onBufferedAmountLow: (() => void) | null = null;
  onError: ((err: Error) => void) | null = null;

  constructor(private readonly dc: RTCDataChannel) {
    dc.stateChanged.subscribe((s) => {
      if (s === 'open') this.onOpen?.();
      else if (s === 'closed') this.onClose?.();
    });
    dc.onMessage.subscribe((m) => {
      this.onMessage?.(typeof m === 'string' ? m : new Uint8Array(m.buffer, m.byteOffset, m.byteLength));
    });
    dc.bufferedAmountLow.subscribe(() => this.onBufferedAmountLow?.());
    dc.error.subscribe((e) => this.onError?.(e));
  }
  get label(): string {
    return this.dc.label;
  }
  get id(): number | null {
    return this.dc.id ?? null;
  }
  get ordered(): boolean {
    return this.dc.ordered;
  }
  get maxRetransmits(): number | null {
    return this.dc.maxRetransmits;
  }
  get state(): ChannelState {
    return toChannelState(this.dc.readyState);
  }
  get bufferedAmount(): number {
    return this.dc.bufferedAmount;
  }
  get bufferedAmountLowThreshold(): number {
    return this.dc.bufferedAmountLowThreshold;
  }
  set bufferedAmountLowThreshold(v: number) {
    this.dc.bufferedAmountLowThreshold = v;
  }
  send(data: Uint8Array | string): void {
    this.dc.send(typeof data === 'string' ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  }
  close(): void {
    this.dc.close();
  }
}

function toInfo(c: { type: string; host: string; port: number; transport: string }): CandidateInfo {
  const type = c.type === 'srflx' || c.type === 'prflx' || c.type === 'relay' ? c.type : 'host';
  return { type, address: c.host, port: c.port, protocol: c.transport.toLowerCase() === 'tcp' ? 'tcp' : 'udp' };
}

function isRelayedPair(p: PairInternals): boolean {
  return p.localCandidate.type === 'relay' || p.remoteCandidate.type === 'relay';
}

/** Both ends host or server-reflexive (a peer-reflexive remote may be the peer's relay). */
function isDirectPair(p: PairInternals): boolean {
  const direct = (t: string): boolean => t === 'host' || t === 'srflx';
  return direct(p.localCandidate.type) && direct(p.remoteCandidate.type);
}

/** A werift candidate pair as the portable `SelectedPair`. */
function pairInfo(pair: PairInternals, servers: readonly IceServerConfig[]): SelectedPair {
  const local = toInfo(pair.localCandidate);
  const relayProtocol = local.type === 'relay' ? relayTransportOf(servers) : undefined;
  return { local, remote: toInfo(pair.remoteCandidate), ...(relayProtocol ? { relayProtocol } : {}) };
}

function relayTransportOf(servers: readonly IceServerConfig[]): 'udp' | 'tcp' | 'tls' | undefined {
  for (const s of servers) {
    for (const u of s.urls) {
      const url = parseIceUrl(u);
      if (url?.kind === 'turn') return url.transport;
    }
  }
  return undefined;
}

function hasStun(servers: readonly IceServerConfig[]): boolean {
  return servers.some((s) => s.urls.some((u) => parseIceUrl(u)?.kind === 'stun'));
}

/** A `PeerBackend` on werift. Construct with `createWeriftBackend`. */
export class WeriftBackend implements PeerBackend {
  onCandidate: ((c: CandidateInit | null) => void) | null = null;
  onState: ((s: TransportState) => void) | null = null;
  onChannel: ((c: RawChannel) => void) | null = null;
  onNetworkChange: (() => void) | null = null;
  readonly canRestartIce = true;
  /** DTLS records that arrive before our handshake starts are kept for it (`earlyDtls`). */
  readonly holdsEarlyDtls = true;

  private readonly pc: RTCPeerConnection;
  private servers: readonly IceServerConfig[];
  private localFp: string | null = null;
  private closed = false;
  private readonly watch: NetworkWatch | null;
  /** Local addresses that went away since the last restart: their sockets and relay allocations are dropped on the next one. */
  private networkChanged = false;
  /** The pair in use when a restart began, carrying data until the restart nominates another (see `carryOver`). */
  private held: { pair: PairInternals; until: number } | null = null;
  /** A direct-only attempt: the restart generation it applies to, and what counts as relayed. */
  private avoid: { generation: number; relayed: (p: SelectedPair) => boolean } | null = null;
  private readonly patched = new WeakSet<object>();

  constructor(
    private readonly opts: PeerOptions,
    servers: readonly IceServerConfig[],
    private readonly keys: DtlsKeys,
    nodeOpts: WeriftOptions = {},
  ) {
    this.servers = servers;
    // We gather on what the interfaces hold, so we watch them. With pinned host addresses only
    // those matter: one that leaves the interfaces takes its sockets' path along, and its return
    // lets a restart bind there again; either way the link restarts at once instead of waiting
    // for the liveness timeout to hear the silence.
    this.watch =
      nodeOpts.networkWatch === false
        ? null
        : new NetworkWatch(
            (c) => {
              if (this.closed) return;
              if (c.removed.length > 0) this.networkChanged = true;
              this.onNetworkChange?.();
            },
            { ...(nodeOpts.networkWatch ?? {}), ...(opts.hostAddresses ? { pinned: opts.hostAddresses } : {}) },
          );
    const host = opts.hostAddresses;
    this.pc = new RTCPeerConnection({
      iceServers: servers.map((s) => ({ urls: [...s.urls], username: s.username, credential: s.credential })),
      iceTransportPolicy: opts.iceTransportPolicy ?? 'all',
      dtls: { keys },
      // With an explicit host list, interface discovery is off (deterministic tests, no eth0
      // probe); a single IPv4 address is also what every socket binds to, relay sockets included.
      ...(host ? { iceUseIpv4: false, iceUseIpv6: false, iceAdditionalHostAddresses: [...host] } : { iceUseIpv6: false }),
      ...(host?.length === 1 && /^\d+\.\d+\.\d+\.\d+$/.test(host[0]!) ? { iceInterfaceAddresses: { udp4: host[0]! } } : {}),
      ...(opts.turnTlsOptions ? { turnTlsOptions: { ...opts.turnTlsOptions } as never } : {}),
    });
    this.pc.onIceCandidate.subscribe((c) => {
      if (this.closed) return;
      if (!c) return this.endOfCandidates();
      const j = c.toJSON();
      this.onCandidate?.({ candidate: j.candidate, sdpMid: j.sdpMid ?? null, sdpMLineIndex: j.sdpMLineIndex ?? null });
    });
    this.pc.iceGatheringStateChange.subscribe((s) => {
      if (s === 'complete' && !this.closed) this.endOfCandidates();
    });
    this.pc.connectionStateChange.subscribe((s) => {
      if (!this.closed) this.onState?.(s);
    });
    this.pc.onDataChannel.subscribe((dc) => this.onChannel?.(new WeriftChannel(dc)));
  }

  /**
   * RFC 8832 §6: the DTLS client opens data channels on even SCTP stream ids, the DTLS server on
   * odd ones, so the two sides never pick the same id. werift 0.24.4 takes the parity from the ICE
   * role instead (`RTCSctpTransport.start`: controlled = even), which agrees with the DTLS role only
   * when werift picked that role itself from `actpass`. A peer that fixes the roles otherwise
   * (node-datachannel answers a werift offer `passive` and offers `active`, RFC 4145 §4) would see
   * werift's channels on ids of its own parity, and libdatachannel refuses those (it resets the
   * stream). Once werift started SCTP, its DTLS role is final; the id counter follows it.
   */
  private alignStreamParity(): void {
    const sctp = this.pc.sctpTransport as unknown as SctpTransportInternals | undefined;
    if (!sctp || this.parityAligned.has(sctp)) return;
    this.parityAligned.add(sctp);
    const start = sctp.start.bind(sctp);
    sctp.start = (remotePort) => {
      // `start` assigns `dataChannelId` synchronously before its first await; channels get ids
      // only once the association is up (`dataChannelFlush`), so overriding it here is in time.
      const started = start(remotePort);
      const role = sctp.dtlsTransport.role;
      if (role === 'client' || role === 'server') sctp.dataChannelId = role === 'client' ? 0 : 1;
      return started;
    };
  }

  private readonly parityAligned = new WeakSet<object>();

  private connections(): IceConnectionInternals[] {
    return this.pc.iceTransports.map((t) => t.connection as unknown as IceConnectionInternals);
  }

  /**
   * Clears werift's built-in public STUN default when we configured none (no internet here, and
   * no leak there), and wraps each ICE agent once (`countBytes`, `carryOver`, `filterChecks`).
   */
  private patchTransports(): void {
    this.alignStreamParity();
    for (const t of this.pc.dtlsTransports as unknown as DtlsTransportInternals[]) {
      if (this.patched.has(t)) continue;
      this.patched.add(t);
      this.earlyDtls(t);
      dataOnceConnected(t);
    }
    for (const conn of this.connections()) {
      if (!hasStun(this.servers)) conn.stunServer = undefined;
      if (this.patched.has(conn)) continue;
      this.patched.add(conn);
      this.carryOver(conn);
      this.filterChecks(conn);
      this.preferDirect(conn);
      this.countBytes(conn);
    }
  }

  /** The peer keeps DTLS records that arrive before its handshake starts (`peerHoldsEarlyDtls`). */
  private peerHolds = false;
  /** Our DTLS client's first flight, waiting for the peer to say it holds early records. */
  private readonly waitingFlights: Array<() => void> = [];

  /**
   * The peer keeps DTLS records that reach it before its own handshake started, so ours may start
   * as soon as our ICE connects, without werift's fixed 100 ms wait (`earlyDtls`). Called by the
   * link when the peer's identity says so; a client waiting out that 100 ms starts at once.
   */
  peerHoldsEarlyDtls(): void {
    this.peerHolds = true;
    for (const start of this.waitingFlights.splice(0)) start();
  }

  /**
   * The first DTLS flight without werift's fixed wait, and without losing it.
   *
   * werift's DTLS client (`RTCDtlsTransport.start`, the ICE-controlled side) sleeps 100 ms after
   * its ICE connected before it sends its ClientHello, because werift's DTLS server drops every
   * record that arrives before its own handshake object exists: the controlled side's ICE
   * completes about one one-way delay before the controlling side's, so a ClientHello sent at
   * once reaches a werift server that is not listening yet (measured on loopback: 15-19 of 20
   * bare pairs then waited for werift's retransmission, 500 ms later). The 100 ms is most of what
   * a werift dial spends after ICE (BENCHMARKS.md).
   *
   * Here, as the server, records that arrive before the handshake object exists are kept (at most
   * `EARLY_DTLS_MAX_RECORDS`) and handed to it as soon as it exists, as libdatachannel and
   * Chromium do; a peer's DTLS checks them like any other record (the certificate is still
   * checked against the fingerprint). As the client, the first flight leaves as soon as ICE
   * connected, once the peer said it keeps early records (`peerHoldsEarlyDtls`); a peer that did
   * not say so (an older werift build drops them) gets werift's wait. werift's own call 100 ms
   * later then returns the flight already under way.
   */
  private earlyDtls(t: DtlsTransportInternals): void {
    const held: Buffer[] = [];
    const hold = t.iceTransport.connection.onData.subscribe((data) => {
      if (t.dtls === undefined && held.length < EARLY_DTLS_MAX_RECORDS && isDtlsRecord(data)) held.push(data);
    });
    t.onStateChange.subscribe((state) => {
      if (state !== 'connecting') return;
      // `start()` builds the handshake object synchronously right after this state change.
      queueMicrotask(() => {
        hold.unSubscribe();
        const d = t.dtls;
        const records = held.splice(0);
        if (!d || this.closed) return;
        guardHandshakes(d, t.role);
        if (t.role === 'server') {
          for (const r of records) d.transport?.socket?.onData?.(r);
          return;
        }
        if (t.role !== 'client') return;
        const connect = d.connect.bind(d);
        let flight: Promise<void> | undefined;
        const once = (): Promise<void> => (flight ??= connect());
        d.connect = once;
        // werift's own call attaches its failure handling to the same promise.
        const start = (): void => void (this.closed ? undefined : once().catch(() => undefined));
        if (this.peerHolds) start();
        else this.waitingFlights.push(start);
      });
    });
  }

  /**
   * Transport byte counters for `stats()`, the link's liveness signal. werift 0.24.4 counts bytes
   * only on its nominated pair, and only for data that arrives on that pair's socket. With
   * aggressive nomination the two agents can nominate different pairs (seen in the NAT lab: the
   * dialer sending from its relay allocation to the hub's server-reflexive address, the hub from
   * its allocation to the dialer's), so every byte the peer sends arrives on a socket the
   * receiver's nominated pair does not use: its counter stood still on a link carrying 800 KB/s,
   * and the liveness probe called the path lost after 4 s and restarted ICE. So count what werift
   * hands to DTLS from any socket, and what it sends, ourselves.
   */
  private bytesIn = 0;
  private bytesOut = 0;

  private countBytes(conn: IceConnectionInternals): void {
    conn.onData.subscribe((data) => {
      this.bytesIn += data.length;
    });
    const send = conn.send;
    conn.send = (data) => {
      this.bytesOut += data.length;
      return send(data);
    };
  }

  /**
   * Make before break. werift 0.24.4 drops its selected pair the moment an ICE restart begins
   * (`Connection.restart` clears `nominated`), so nothing is sent until the restart nominates a
   * new pair: a restart to try a direct path would stall a relayed link that works. Browsers keep
   * sending on the old pair until the new one is selected (RFC 8445 §9 leaves it to the agent);
   * so do we, for at most `CARRY_OVER_MS`. Data that arrives on the old pair is delivered anyway
   * (werift hands every non-STUN datagram of any of its sockets to DTLS).
   */
  private carryOver(conn: IceConnectionInternals): void {
    const send = conn.send;
    conn.send = async (data) => {
      const held = this.held;
      if (conn.nominated || !held) {
        if (held && conn.nominated) {
          this.held = null;
          this.pruneRelays(conn);
        }
        return send(data);
      }
      if (Date.now() > held.until) {
        this.held = null;
        return;
      }
      await held.pair.protocol.sendData(data, held.pair.remoteAddr).catch(() => undefined);
    };
  }

  /**
   * A direct-only attempt (`createOffer({ avoidRelay })`): werift nominates the first pair whose
   * check succeeds (aggressive nomination), and a relayed pair answers at once while a direct one
   * waits for both NATs to open, so a restart lands on the relay again however direct the
   * network has become. While the attempt runs, relayed pairs fail without a packet sent, both
   * ordinary and triggered checks (an incoming check from the peer's relay triggers one).
   */
  private filterChecks(conn: IceConnectionInternals): void {
    const start = conn.checkStart;
    conn.checkStart = (pair) => {
      const avoid = this.avoid;
      if (avoid && avoid.generation === conn.generation && avoid.relayed(pairInfo(pair, this.servers))) {
        pair.updateState(PAIR_FAILED);
        conn.checkComplete(pair);
        return { awaitable: Promise.resolve(), resolve: () => undefined };
      }
      return start(pair);
    };
  }

  /**
   * werift keeps the first pair nominated in a generation (RFC 8445 §8.1.1: nominating concludes
   * ICE for the component). With werift's aggressive nomination that is the first pair whose
   * check succeeded, and on each side its own first: a relayed pair answers within one round trip
   * to the relay while a direct pair between two restricted NATs needs both sides to have sent,
   * so a link with a working direct path could start relayed, and the two agents could settle on
   * different pairs (each sending through its own allocation). Here a direct pair (host or
   * server-reflexive candidates on both ends, not peer-reflexive: those may be the peer's relay)
   * that succeeds and is nominated later in the same generation replaces a relayed one, on both
   * sides alike: the controlled side only marks pairs the controlling side nominated. Data moves
   * to it as werift's selection moves; DTLS and SCTP do not notice. Relayed never replaces direct.
   */
  private preferDirect(conn: IceConnectionInternals): void {
    const complete = conn.checkComplete.bind(conn);
    conn.checkComplete = (pair) => {
      const current = conn.nominated;
      if (current && current !== pair && pair.state === PAIR_SUCCEEDED && pair.nominated && isRelayedPair(current) && isDirectPair(pair)) {
        // werift nominates `pair` and restarts consent on it when nothing is nominated.
        conn.nominated = undefined;
      }
      complete(pair);
      if (!conn.nominated) conn.nominated = current;
    };
  }

  /**
   * werift allocates on the relay at every gathering and keeps (and refreshes) every earlier
   * allocation for the life of the connection: a link retrying direct every minute would hold
   * one more allocation each time. Once a restart nominated its pair, only the allocation that
   * pair uses and the newest one stay.
   */
  private pruneRelays(conn: IceConnectionInternals): void {
    const relays = conn.protocols.filter((p) => p.localCandidate?.type === 'relay');
    const keep = new Set([conn.nominated?.protocol, relays.at(-1)]);
    const drop = relays.filter((p) => !keep.has(p));
    if (drop.length === 0) return;
    conn.protocols = conn.protocols.filter((p) => !drop.includes(p));
    for (const p of drop) void p.close().catch(() => undefined);
  }

  /** Before a restart: keep the pair in use (make before break). */
  private holdPath(): void {
    const pair = this.connections()[0]?.nominated;
    if (pair) this.held = { pair, until: Date.now() + CARRY_OVER_MS };
  }

  /**
   * After werift restarted an agent (new credentials): werift keeps every socket of earlier
   * generations and advertises their host and relayed candidates again, but queries STUN only
   * from sockets it creates now, for addresses it had none on. So:
   *  - after a network change, sockets on addresses that are gone and every relay allocation
   *    (its 5-tuple to the relay is gone too) are closed, so gathering starts over on new sockets
   *    (the pair carrying data is dropped with them: it is dead);
   *  - sockets that stay get their server-reflexive candidate again (a NAT behind which the
   *    address did not change may still have mapped it anew), or a peer behind a port-restricted
   *    NAT never learns where to punch and a direct path cannot open after a restart.
   * Every relay allocation closed here or in `pruneRelays` goes through `releaseTurnOnClose`: a
   * Refresh with LIFETIME 0 from the allocation's own socket first. That deletes it where the
   * socket can still reach the relay from the address it allocated from (the change only added
   * an address, or took away another one; test/natlab/relay-release.test.ts). Where that address
   * is gone it cannot: a socket bound to it can no longer send, and an unbound one now leaves
   * from another address, a 5-tuple the relay knows no allocation for (RFC 8656 §7.3 answers
   * 437). Such an allocation stays on the relay until its lifetime runs out (werift asks for
   * 600 s), bounded by the relay's per-user quota; the attempt costs at most
   * `DEALLOCATE_TIMEOUT_MS` in the background.
   */
  private refreshSockets(): void {
    const stale = this.networkChanged;
    this.networkChanged = false;
    for (const conn of this.connections()) {
      if (stale) {
        const keep: ProtocolInternals[] = [];
        for (const p of conn.protocols) {
          const gone = p.localCandidate?.type === 'relay' || (p.localIp !== undefined && this.watch?.vanished(p.localIp) === true);
          if (gone) void p.close().catch(() => undefined);
          else keep.push(p);
        }
        conn.protocols = keep;
        if (this.held && !keep.includes(this.held.pair.protocol)) this.held = null;
      }
      const stun = conn.stunServer;
      if (!stun) continue;
      for (const p of conn.protocols) {
        if (p.localCandidate?.type !== 'host' || p.localCandidate.transport.toLowerCase() !== 'udp') continue;
        void serverReflexiveCandidate(p as never, stun).then(
          (c) => c && !this.closed && conn.appendLocalCandidate(c),
          () => undefined,
        );
      }
    }
  }

  private gathering: Promise<void> = Promise.resolve();
  /** End of candidates was reported for the current gathering (see `endOfCandidates`). */
  private gatheringEnded = false;

  /**
   * Reports the end of the current gathering once. werift signals it twice (a null candidate and
   * the gathering state's `complete`), and each became a signal frame the service relayed and
   * billed; either may come first, so the first one counts.
   */
  private endOfCandidates(): void {
    if (this.gatheringEnded) return;
    this.gatheringEnded = true;
    this.onCandidate?.(null);
  }

  private startGathering(desc: Parameters<RTCPeerConnection['setLocalDescription']>[0]): void {
    this.patchTransports();
    this.gatheringEnded = false;
    // Gathering runs inside setLocalDescription; candidates trickle meanwhile.
    this.gathering = this.pc.setLocalDescription(desc).then(
      () => undefined,
      () => {
        if (!this.closed) this.onState?.('failed');
      },
    );
  }

  /**
   * werift 0.24.4 skips ICE checks after an ICE restart: `RTCPeerConnection.connect()` returns
   * early when DTLS is already connected, so the restarted agent never runs its checks and the
   * link stays on the dead pair. Once both descriptions of a restart are applied and gathering is
   * done, start the agent ourselves; DTLS and SCTP carry on over the newly nominated pair.
   */
  private kickedGeneration = 0;

  private async kickRestartedIce(): Promise<void> {
    await this.gathering;
    for (const d of this.pc.dtlsTransports) {
      const ice = d.iceTransport;
      const conn = ice.connection as unknown as IceConnectionInternals & { generation: number; remoteUsername: string };
      // After a restart the agent has new remote credentials and no nominated pair; its state
      // reads 'completed' because werift reports end-of-gathering as a connection state.
      if (d.state === 'connected' && !conn.nominated && conn.remoteUsername && this.kickedGeneration !== conn.generation) {
        this.kickedGeneration = conn.generation;
        ice.start().catch(() => undefined);
      }
    }
  }

  async createOffer(opts?: OfferOptions): Promise<string> {
    if (this.pc.sctpTransport === undefined) {
      // An application m-section needs a channel before the first offer; id 0 is reserved for it.
      this.pc.createDataChannel('homelink', { negotiated: true, id: 0 });
    }
    this.patchTransports();
    if (opts?.iceRestart) this.holdPath();
    const offer = await this.pc.createOffer(opts?.iceRestart ? { iceRestart: true } : {});
    this.localFp ??= sdpFingerprints(offer.sdp)[0] ?? null;
    const conn = this.connections()[0];
    this.avoid = opts?.iceRestart && opts.avoidRelay && conn ? { generation: conn.generation, relayed: opts.avoidRelay } : null;
    if (opts?.iceRestart) this.refreshSockets();
    // A direct-only attempt needs no new relay allocation (the one in use is advertised again).
    const turn = conn?.turnServer;
    if (this.avoid && conn) conn.turnServer = undefined;
    this.startGathering(offer);
    if (this.avoid && conn) void this.gathering.then(() => void (conn.turnServer = turn));
    return offer.sdp;
  }

  async acceptOffer(sdp: string): Promise<string> {
    this.patchTransports();
    const before = this.connections()[0]?.generation;
    this.holdPath();
    await this.pc.setRemoteDescription({ type: 'offer', sdp });
    // A new generation means the offer restarted ICE (new credentials): werift restarted the agent.
    if (before !== undefined && this.connections()[0]?.generation !== before) this.refreshSockets();
    else this.held = null;
    this.patchTransports();
    const answer = await this.pc.createAnswer();
    this.localFp ??= sdpFingerprints(answer.sdp)[0] ?? null;
    this.startGathering(answer);
    void this.kickRestartedIce();
    return answer.sdp;
  }

  async acceptAnswer(sdp: string): Promise<void> {
    await this.pc.setRemoteDescription({ type: 'answer', sdp });
    void this.kickRestartedIce();
  }

  async addCandidate(c: CandidateInit | null): Promise<void> {
    if (c === null || c.candidate === '') return; // werift ends checks on its own; we own the deadline
    // werift pairs every candidate it is given and checks the pairs one per 20 ms, and reports ICE
    // connected (so DTLS starts) only once none is left unchecked. A pair formed after one was
    // nominated can never be selected (the nomination ends the component's checks, RFC 8445
    // §8.1.2), so a candidate trickled in after it only held the link back, 20 ms per pair. An
    // ICE restart clears the nomination; its generation's candidates are added as before.
    if (this.connections().some((conn) => conn.nominated !== undefined)) return;
    await this.pc.addIceCandidate({
      candidate: c.candidate,
      sdpMid: c.sdpMid ?? undefined,
      sdpMLineIndex: c.sdpMLineIndex ?? undefined,
    } as never);
  }

  createChannel(label: string, opts?: ChannelOptions): RawChannel {
    return new WeriftChannel(this.pc.createDataChannel(label, dataChannelInit(opts)));
  }

  certificate(): DtlsCertificate {
    return { certPem: this.keys.certPem, keyPem: this.keys.keyPem };
  }

  async localFingerprint(): Promise<string> {
    if (this.localFp) return this.localFp;
    const cert = this.pc.dtlsTransports[0]?.localCertificate;
    const fp = cert?.getFingerprints().find((f) => f.algorithm === 'sha-256');
    if (!fp) throw new Error('local DTLS certificate not ready');
    return (this.localFp = normaliseFingerprint(fp.value));
  }

  async remoteCertificateFingerprint(): Promise<string | null> {
    const dtls = this.pc.dtlsTransports[0];
    if (!dtls || dtls.state !== 'connected') return null;
    const der = dtls.dtls?.remoteCertificate;
    if (!der || der.length === 0) return null;
    return normaliseFingerprint(createHash('sha256').update(der).digest('hex'));
  }

  async selectedPair(): Promise<SelectedPair | null> {
    const conn = this.pc.iceTransports[0]?.connection as unknown as IceConnectionInternals | undefined;
    const pair = conn?.nominated;
    if (!pair) return null;
    const local = toInfo(pair.localCandidate);
    const relayProtocol = local.type === 'relay' ? relayTransportOf(this.servers) : undefined;
    return {
      local,
      remote: toInfo(pair.remoteCandidate),
      ...(relayProtocol ? { relayProtocol } : {}),
      ...(pair.rtt !== undefined ? { rttMs: pair.rtt * 1000 } : {}),
    };
  }

  setIceServers(servers: readonly IceServerConfig[], policy?: 'all' | 'relay'): void {
    this.servers = servers;
    this.pc.setConfiguration({
      iceServers: servers.map((s) => ({ urls: [...s.urls], username: s.username, credential: s.credential })),
      ...(policy ? { iceTransportPolicy: policy } : {}),
    });
    // Existing ICE agents keep their options object: renew the TURN credential there too.
    const turn = servers.find((s) => s.urls.some((u) => /^turns?:/i.test(u)));
    for (const t of this.pc.iceTransports) {
      const c = t.connection as unknown as IceConnectionInternals;
      if (turn?.username && turn.credential) {
        c.options.turnUsername = turn.username;
        c.options.turnPassword = turn.credential;
      }
    }
  }

  async stats(): Promise<TransportStats> {
    const pair = (this.pc.iceTransports[0]?.connection as unknown as IceConnectionInternals | undefined)?.nominated;
    return { bytesSent: this.bytesOut, bytesReceived: this.bytesIn, ...(pair?.rtt !== undefined ? { rttMs: pair.rtt * 1000 } : {}) };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watch?.stop();
    const connections = this.connections();
    await this.pc.close().catch(() => undefined);
    for (const c of connections) closeLateProtocols(c);
  }
}

/**
 * Data reaches SCTP once its DTLS transport is connected, not before. werift's DTLS client can
 * decrypt the server's data before it has the server's last flight (the keys come from its own
 * flight), and its SCTP association takes it before the transport started SCTP: where the
 * server's last flight was lost, the server's INIT came through, the association came up, and
 * the transport's own SCTP start a moment later set it back to `connecting` for good: a link
 * open on the server's side and dead on the client's (reproduced in test/client/backend.test.ts).
 * Over TURN/TCP the same order is the rule, not a loss: the server's Finished and INIT arrive in
 * one TCP read and are handed over in one go. So what arrives before `connected` is kept (at most
 * `EARLY_DATA_MAX_RECORDS`) and handed over after the transport's start has run, in order.
 */
function dataOnceConnected(t: DtlsTransportInternals): void {
  let receiver = t.dataReceiver;
  const early: Buffer[] = [];
  const gated = (data: Buffer): void => {
    if (t.state === 'connected') {
      if (early.length === 0) receiver(data);
      else early.push(data); // behind what waits for the hand-over below, within this turn
    } else if ((t.state === 'new' || t.state === 'connecting') && early.length < EARLY_DATA_MAX_RECORDS) early.push(data);
  };
  Object.defineProperty(t, 'dataReceiver', {
    configurable: true,
    get: () => gated,
    set: (f: (data: Buffer) => void) => void (receiver = f),
  });
  t.onStateChange.subscribe((state) => {
    if (state !== 'connected' || early.length === 0) return;
    // After the microtasks in which werift's connect() starts SCTP on this transport.
    setImmediate(() => {
      for (const data of early.splice(0)) {
        if (t.state !== 'connected') break;
        try {
          receiver(data);
        } catch {
          // As werift's own dispatch (`udpOnMessage`): a record SCTP cannot take is dropped.
        }
      }
    });
  });
}

/**
 * werift's DTLS handshake held to one handshake per transport. Each fault below was reproduced on
 * two werift peers (test/client/backend.test.ts); the first is what the NAT lab's starvation round
 * showed (a dial open on one side, dead on the other):
 *
 * - a server that already sent its second flight (ServerHello ...) answers a late copy of the
 *   client's first ClientHello (no cookie) as a new handshake: a new server random and the flight
 *   counter back at 2, so the two sides derive different keys. Late copies are what a starved
 *   client sends: Node runs expired timers before it reads its sockets, so werift's retransmission
 *   fires while the server's answer already waits in the socket. Dropped;
 * - a connected server renegotiates on any ClientHello, throwing its keys away under a link in
 *   use. A WebRTC peer never renegotiates DTLS; dropped;
 * - a client past its ClientHello with cookie answers a second HelloVerifyRequest (a duplicate)
 *   by failing the transport, or, further on, by clearing its handshake transcript. Dropped.
 *
 * A lost last server flight werift handles itself (it sends the flight again for the client's
 * repeated Finished, a record of its own); what it got wrong there is `dataOnceConnected`'s.
 */
function guardHandshakes(d: DtlsSocketInternals, role: string): void {
  const handle = d.onHandleHandshakes;
  d.onHandleHandshakes = (assembled) => {
    const keep = assembled.filter((h) => {
      if (role === 'server' && h.msg_type === CLIENT_HELLO) return !d.connected && (d.dtls.flight < 4 || (d.dtls.flight === 4 && !withoutCookie(h.fragment)));
      if (role === 'client' && h.msg_type === HELLO_VERIFY_REQUEST) return d.dtls.flight <= 1;
      return true;
    });
    return keep.length > 0 ? handle(keep) : Promise.resolve();
  };
}

/**
 * werift's gathering goes on after its connection closed: a host socket still binding, or a TURN
 * allocation still in flight (one round trip plus the 401 challenge), is pushed onto the closed
 * connection's `protocols` when it completes, and nothing ever closes it: its socket stays open,
 * the relay keeps the allocation, and the refresh timer keeps the process alive. Measured: a link
 * closed 0-2 ms after its offer left one allocation per close on the relay. So the closed
 * connection's list closes what arrives late (the TURN client then deletes its allocation, see
 * `releaseTurnOnClose`).
 */
function closeLateProtocols(connection: IceConnectionInternals): void {
  const late = connection.protocols;
  const closing: ProtocolInternals[] = [];
  closing.push = (...ps: ProtocolInternals[]): number => {
    for (const p of ps) void p.close().catch(() => undefined);
    return 0;
  };
  connection.protocols = closing;
  // Anything that arrived between the connection's own close and this point.
  for (const p of late) void p.close().catch(() => undefined);
}

// ---- TURN allocation release -------------------------------------------------------------

/** RFC 8489 §5 / RFC 8656 §7.2 method and class numbers of a Refresh request. */
const STUN_METHOD_REFRESH = 0x004;
const STUN_CLASS_REQUEST = 0x000;
/**
 * How long closing waits for the relay to confirm the deallocation. One round trip to a relay is
 * tens of milliseconds; after this the allocation is left to expire on the relay rather than
 * keeping the application's close (and its process) waiting on an unreachable relay.
 */
export const DEALLOCATE_TIMEOUT_MS = 1_000;
/** Refresh this long before the allocation would expire, as a fraction of its lifetime (werift's own 5/6). */
const REFRESH_AT_FRACTION = 5 / 6;

/** The parts of werift's `TurnProtocol` (0.24.4) this patch reads and replaces; not public API. */
interface TurnInternals {
  server: unknown;
  relayedAddress?: unknown;
  transport: { closed?: boolean };
  transactions: Record<string, { cancel(): void }>;
  refresh: (lifetimeSeconds: number) => void;
  requestWithRetry(request: Message, addr: unknown): Promise<[Message, unknown]>;
  connectionMade(): Promise<void>;
  close(): Promise<void>;
  /** Set by this patch: the pending refresh timer, and whether the allocation was released. */
  homelinkRefreshTimer?: ReturnType<typeof setTimeout>;
  homelinkReleased?: boolean;
}

const PATCHED = Symbol.for('homelink.werift.turnRelease');

/**
 * Makes werift's TURN client release what it holds when its connection closes:
 *  1. the refresh loop runs on a timer kept on the instance (werift awaits an uncancellable
 *     `timers/promises` sleep of 5/6 of the lifetime, 500 s by default, which outlives `close()`
 *     and keeps Node running);
 *  2. `close()` first deletes the allocation with a Refresh request carrying LIFETIME 0
 *     (RFC 8656 §7.2: "a Refresh request with a requested lifetime of 0 ... deletes the
 *     allocation"), bounded by `DEALLOCATE_TIMEOUT_MS`, cancels any transaction still
 *     retransmitting (their timers would run up to 39.5 s, RFC 8489 §6.2.1), then closes the socket.
 * Patched once per process on the prototype, since werift creates its TURN clients internally
 * during gathering. Every connection of this backend closes through it.
 */
function releaseTurnOnClose(): void {
  const proto = TurnProtocol.prototype as unknown as TurnInternals & { [PATCHED]?: true };
  if (proto[PATCHED]) return;
  proto[PATCHED] = true;
  const connectionMade = proto.connectionMade;
  const close = proto.close;
  proto.connectionMade = function (this: TurnInternals): Promise<void> {
    this.refresh = (lifetimeSeconds) => scheduleRefresh(this, lifetimeSeconds);
    return connectionMade.call(this);
  };
  proto.close = async function (this: TurnInternals): Promise<void> {
    clearTimeout(this.homelinkRefreshTimer);
    if (!this.homelinkReleased && this.relayedAddress && !this.transport.closed) {
      this.homelinkReleased = true;
      await deallocate(this);
    }
    for (const t of Object.values(this.transactions)) t.cancel();
    return close.call(this);
  };
}

function scheduleRefresh(turn: TurnInternals, lifetimeSeconds: number): void {
  clearTimeout(turn.homelinkRefreshTimer);
  if (turn.homelinkReleased || !(lifetimeSeconds > 0)) return;
  turn.homelinkRefreshTimer = setTimeout(() => {
    const request = new Message(STUN_METHOD_REFRESH, STUN_CLASS_REQUEST).setAttribute('LIFETIME', lifetimeSeconds);
    turn.requestWithRetry(request, turn.server).then(
      ([response]) => scheduleRefresh(turn, Number(response.getAttributeValue('LIFETIME') ?? lifetimeSeconds)),
      // A lost refresh is retried on the same schedule, as werift does.
      () => scheduleRefresh(turn, lifetimeSeconds),
    );
  }, REFRESH_AT_FRACTION * lifetimeSeconds * 1000);
}

async function deallocate(turn: TurnInternals): Promise<void> {
  const request = new Message(STUN_METHOD_REFRESH, STUN_CLASS_REQUEST).setAttribute('LIFETIME', 0);
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    turn.requestWithRetry(request, turn.server).catch(() => undefined),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, DEALLOCATE_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
}

releaseTurnOnClose();

/**
 * A fresh ECDSA P-256 DTLS certificate per connection. werift otherwise shares one certificate
 * across every connection of the process (a static on RTCDtlsTransport), which makes sessions
 * linkable by fingerprint and makes two endpoints in one process indistinguishable to the
 * identity check.
 */
async function newDtlsKeys(): Promise<DtlsKeys> {
  return { ...(await selfSignedP256()), signatureHash: DTLS_SIGNATURE };
}

const DTLS_SIGNATURE = { signature: SignatureAlgorithm.ecdsa_3, hash: HashAlgorithm.sha256_4 };

/**
 * The next connections' certificates, made while earlier ones connect: making one
 * (`selfSignedP256`: a few ms on libuv's pool, well under one on the event loop) is then not on a
 * dial's path. Each is handed out once. Two spares for the whole process: a dial needs one per
 * side, and a hub that several phones dial at once, or a process that runs both sides (tests,
 * benches), takes two in a row; with one, the second waited for the remade spare (the dialer's
 * connection ready 10-13 ms after its early session on loopback, docs/BENCHMARKS.md).
 */
export const SPARE_DTLS_CERTIFICATES = 2;
const spareKeys: Array<Promise<DtlsKeys>> = [];

function makeSpareKeys(): void {
  while (spareKeys.length < SPARE_DTLS_CERTIFICATES) {
    const s = newDtlsKeys();
    spareKeys.push(s);
    s.catch(() => {
      const i = spareKeys.indexOf(s);
      if (i >= 0) spareKeys.splice(i, 1);
    });
  }
}

/** A certificate no other connection had: a spare (a fresh one if making it failed), and the spares topped up. */
function takeDtlsKeys(): Promise<DtlsKeys> {
  const spare = spareKeys.shift();
  const next = spare ? spare.catch(() => newDtlsKeys()) : newDtlsKeys();
  makeSpareKeys();
  return next;
}

/** @internal Spares made and not yet handed out (tests). */
export async function readySpareCertificates(): Promise<number> {
  const done = await Promise.all(spareKeys.map((s) => s.then(() => true, () => false)));
  return done.filter(Boolean).length;
}

/**
 * Starts the spare certificates ahead of the first dial (`Endpoint.connect` calls it), so that
 * dial does not make one either. Idempotent.
 */
export function prepareDtlsCertificate(): void {
  makeSpareKeys();
}

/** A given certificate (a rebuilt connection of the same link) as werift's keys, else one of its own. */
function dtlsKeys(cert: DtlsCertificate | undefined): Promise<DtlsKeys> {
  return cert ? Promise.resolve({ certPem: cert.certPem, keyPem: cert.keyPem, signatureHash: DTLS_SIGNATURE }) : takeDtlsKeys();
}

/**
 * An ECDSA P-256 DTLS certificate as PEM that no other connection has, for backends that cannot
 * export the one they make (node-datachannel): the link gives it to each connection it builds,
 * so a rebuild keeps the fingerprint the identity proof signed. Taken from the spare.
 * @example
 * const cert = await newDtlsCertificate(); // { certPem, keyPem }
 */
export async function newDtlsCertificate(): Promise<DtlsCertificate> {
  const k = await takeDtlsKeys();
  return { certPem: k.certPem, keyPem: k.keyPem };
}

/**
 * Creates a werift backend after ordering the ICE servers Happy Eyeballs style (see
 * `turn-probe.ts`): the relay transport that answers first goes first, a silent STUN URL is dropped.
 *
 * @example
 * ```ts
 * const pc = await createWeriftBackend({ iceServers, hostAddresses: ['127.0.0.1'] });
 * ```
 */
export async function createWeriftBackend(opts: PeerOptions, nodeOpts: WeriftOptions = {}): Promise<PeerBackend> {
  const [servers, keys] = await Promise.all([orderIceServers(opts.iceServers, opts.turnTlsOptions), dtlsKeys(opts.certificate)]);
  return new WeriftBackend(opts, servers, keys, nodeOpts);
}

