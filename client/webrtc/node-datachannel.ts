/**
 * The native Node backend: libdatachannel (C++: libjuice ICE, OpenSSL DTLS, usrsctp) through the
 * `node-datachannel` bindings. An optional dependency: `loadNodeDatachannel()` resolves to null
 * where the package or its prebuilt binary for this platform is missing, and `client/index.ts`
 * then falls back to werift.
 *
 * We drive libdatachannel's own `PeerConnection` rather than the package's W3C polyfill: the
 * polyfill splices TURN credentials into the URL (`turn:user:pass@host`), which breaks on the
 * TURN REST usernames we use (`expiry:id` has a colon), and it adds an EventTarget hop per
 * message on the hot path. The raw API also exposes what identity binding and path reporting
 * need directly: `remoteFingerprint()` (the fingerprint libdatachannel computed from the
 * certificate the peer presented in the DTLS handshake, after checking it against the SDP),
 * `getSelectedCandidatePair()`, and `bindAddress` for loopback-only tests.
 *
 * Why connects stalled for about 1 s (bench/connect, docs/BENCHMARKS.md): libdatachannel creates
 * its DTLS transport only once its own ICE agent reports `connected`, and a DTLS record that
 * arrives earlier is dropped. The answerer learns the offer and the offerer's candidates first,
 * so its checks succeed (the offerer answers checks before it even has the answer) and it
 * reaches `connected` tens of milliseconds before the offerer. With the default roles the
 * answerer is the DTLS client (RFC 8842 §5.3: it answers `actpass` with `active`), so its
 * ClientHello reaches an offerer that has no DTLS transport yet and is lost; the next try comes
 * from OpenSSL's retransmission timer, whose first interval is 1 s (RFC 6347 §4.2.4.1). The
 * fix orders the roles so the side that is ready first waits: the node-datachannel answerer is
 * always the DTLS server (`a=setup:passive`, RFC 4145 §4; `actpass` lets the answerer choose) and a
 * node-datachannel offerer offers `active`. The offerer's ICE can only complete after the answer
 * arrived, by which time the answerer's DTLS server exists. Chromium accepts either role. werift
 * 0.24.4 answers `active` whatever the offer says; libdatachannel keeps its own offer `actpass`
 * internally (only the SDP we send is rewritten), so it then takes the server role, and werift's
 * client waits 100 ms after its ICE completes before its ClientHello, long enough for ours. As an
 * offerer told `passive`, werift becomes the DTLS client but numbers its channels by its ICE role
 * (RFC 8832 §6 wants the DTLS role); werift.ts aligns that (`alignStreamParity`).
 * Measured (docs/BENCHMARKS.md): werift -> node-datachannel went from about 1,030 ms to about
 * 140 ms (werift <-> werift takes the same), node-datachannel <-> node-datachannel 3-5 ms.
 *
 * Limits (reported by the session as a failed restart, recovered by dialing again):
 * - no ICE restart (libdatachannel issue #545): `createOffer({ iceRestart: true })` and a
 *   restart offer from the peer reject with `BackendUnsupportedError`;
 * - ICE servers cannot be replaced on a live connection: `setIceServers` keeps them for
 *   reporting only; libjuice refreshes an allocation with the credentials it started with;
 * - TURN over TCP and TLS: libjuice (the ICE agent in the prebuilt binaries) relays over UDP
 *   only, so `turn:...?transport=tcp` and `turns:` URLs are not used by this backend.
 */
import {
  dataChannelInit,
  normaliseFingerprint,
  parseCandidate,
  sdpFingerprints,
  type CandidateInfo,
  type CandidateInit,
  type ChannelOptions,
  type ChannelState,
  type IceServerConfig,
  type PeerBackend,
  type PeerOptions,
  type RawChannel,
  type SelectedPair,
  type TransportState,
  type TransportStats,
} from './backend.js';

/**
 * `stun:`/`turn:`/`turns:` URL fields (RFC 7064 / RFC 7065), null for anything else. The same
 * grammar as turn-probe.ts's parser, kept local: importing that Node-socket module here changes
 * the type checker's file order and trips a DOM/Node `TextDecoder` typing clash.
 */
function parseIceUrl(url: string): { kind: 'stun' | 'turn'; transport: 'udp' | 'tcp' | 'tls'; host: string; port: number } | null {
  const m = /^(stuns?|turns?):(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?(?:\?transport=(udp|tcp))?$/i.exec(url.trim());
  if (!m) return null;
  const scheme = m[1]!.toLowerCase();
  const secure = scheme.endsWith('s');
  const port = m[3] ? Number(m[3]) : secure ? 5349 : 3478;
  if (port < 1 || port > 65535) return null;
  const transport = secure ? 'tls' : m[4]?.toLowerCase() === 'tcp' ? 'tcp' : 'udp';
  return { kind: scheme.startsWith('stun') ? 'stun' : 'turn', transport, host: m[2]!.replace(/^\[|\]$/g, ''), port };
}

/**
 * The part of node-datachannel 0.33's API this backend uses, declared here rather than imported:
 * the package is optional (type checking must not need it), and its own typings pull Node's
 * stream typings into the program, which changes the global `TextDecoder` options type.
 */
declare namespace Ndc {
  interface IceServer {
    hostname: string;
    port: number;
    username?: string;
    password?: string;
    relayType?: 'TurnUdp' | 'TurnTcp' | 'TurnTls';
  }
  interface RtcConfig {
    iceServers: IceServer[];
    iceTransportPolicy?: 'all' | 'relay';
    disableAutoNegotiation?: boolean;
    bindAddress?: string;
  }
  interface SelectedCandidateInfo {
    address: string;
    port: number;
    type: string;
    transportType: string;
    candidate: string;
  }
  interface DataChannel {
    getLabel(): string;
    close(): void;
    sendMessage(msg: string): boolean;
    sendMessageBinary(buffer: Uint8Array): boolean;
    isOpen(): boolean;
    bufferedAmount(): number;
    setBufferedAmountLowThreshold(newSize: number): void;
    onOpen(cb: () => void): void;
    onClosed(cb: () => void): void;
    onError(cb: (err: string) => void): void;
    onBufferedAmountLow(cb: () => void): void;
    onMessage(cb: (msg: string | Uint8Array | ArrayBuffer) => void): void;
  }
  interface PeerConnection {
    close(): void;
    setLocalDescription(type?: 'offer' | 'answer'): void;
    setRemoteDescription(sdp: string, type: 'offer' | 'answer'): void;
    localDescription(): { type: string; sdp: string } | null;
    remoteDescription(): { type: string; sdp: string } | null;
    remoteFingerprint(): { value: string; algorithm: string } | null;
    addRemoteCandidate(candidate: string, mid: string): void;
    createDataChannel(label: string, config?: { negotiated?: boolean; id?: number; unordered?: boolean; maxRetransmits?: number }): DataChannel;
    state(): string;
    onLocalCandidate(cb: (candidate: string, mid: string) => void): void;
    onStateChange(cb: (state: string) => void): void;
    onGatheringStateChange(cb: (state: string) => void): void;
    onDataChannel(cb: (dc: DataChannel) => void): void;
    bytesSent(): number;
    bytesReceived(): number;
    rtt(): number;
    getSelectedCandidatePair(): { local: SelectedCandidateInfo; remote: SelectedCandidateInfo } | null;
  }
}
interface NdcModule {
  PeerConnection: new (peerName: string, config: Ndc.RtcConfig) => Ndc.PeerConnection;
  cleanup(): void;
}

/** A variable, so the type checker does not resolve the optional package. */
const NDC_PACKAGE = 'node-datachannel';

/** A feature the native stack does not have; the caller may fall back to werift or a new connection. */
export class BackendUnsupportedError extends Error {
  override readonly name = 'BackendUnsupportedError';
}

let loaded: Promise<NdcModule | null> | undefined;

/**
 * Loads `node-datachannel` once; null when it is not installed or its native binary does not
 * load on this platform (an optional dependency may be absent).
 */
export function loadNodeDatachannel(): Promise<NdcModule | null> {
  loaded ??= import(NDC_PACKAGE).then(
    (m: { default?: NdcModule }) => m.default ?? null,
    () => null,
  );
  return loaded;
}

/** The one `a=setup` line per media section of our SDP (RFC 4145 §4). */
const SETUP_RE = /^a=setup:(actpass|active|passive|holdconn)\r?$/gm;

/** Rewrites every `a=setup:actpass` to `role`; other values are the peer's choice and stay. */
function pinSetup(sdp: string, role: 'active' | 'passive'): string {
  return sdp.replace(SETUP_RE, (line, v: string) => (v === 'actpass' ? line.replace('actpass', role) : line));
}

/**
 * Interop rewrite of our SDP. libdatachannel writes `a=fingerprint` at session level only; RFC 8122 §5 allows that, but
 * werift 0.24.4 reads it per media section and fails the DTLS setup without it. Each media
 * section gets a copy (the session-level line stays; both carry the same value).
 */
function fingerprintPerMedia(sdp: string): string {
  const eol = sdp.includes('\r\n') ? '\r\n' : '\n';
  const lines = sdp.split(eol);
  const firstMedia = lines.findIndex((l) => l.startsWith('m='));
  if (firstMedia < 0) return sdp;
  const session = lines.slice(0, firstMedia).filter((l) => l.startsWith('a=fingerprint:'));
  if (session.length === 0) return sdp;
  const out: string[] = [];
  let inMedia = false;
  let mediaHasFp = false;
  const flush = (): void => {
    if (inMedia && !mediaHasFp) out.push(...session);
  };
  for (const l of lines) {
    if (l.startsWith('m=')) {
      flush();
      inMedia = true;
      mediaHasFp = false;
    } else if (inMedia && l.startsWith('a=fingerprint:')) {
      mediaHasFp = true;
    }
    if (inMedia && l === '') continue;
    // The end-of-candidates mark (RFC 8840 §4.1) is left out: werift 0.24.4 then starts its
    // checks before its own gathering and fails at once with no pairs; trickle ends it instead.
    if (l === 'a=end-of-candidates') continue;
    out.push(l);
  }
  flush();
  return out.join(eol) + eol;
}

/** ICE username fragment of a description (RFC 8839 §5.4); a change marks an ICE restart. */
function iceUfrag(sdp: string): string | null {
  return /^a=ice-ufrag:(\S+)/m.exec(sdp)?.[1] ?? null;
}

/** The mid of the application m-section; libdatachannel needs it with every remote candidate. */
function applicationMid(sdp: string): string | null {
  const m = /^m=application[^\n]*\n(?:(?!m=)[^\n]*\n)*?a=mid:(\S+)/m.exec(sdp);
  return m?.[1] ?? null;
}

/**
 * Converts ICE servers to libdatachannel's structured form (hostname, port, credentials as
 * fields, never spliced into a URL). `stun:` and UDP `turn:` are kept; TCP and TLS relays are
 * left out because libjuice only relays over UDP (see the module header).
 */
export function toNdcIceServers(servers: readonly IceServerConfig[]): Ndc.IceServer[] {
  const out: Ndc.IceServer[] = [];
  for (const s of servers) {
    for (const url of s.urls) {
      const u = parseIceUrl(url);
      if (!u) continue;
      if (u.kind === 'stun') {
        if (u.transport === 'udp') out.push({ hostname: u.host, port: u.port });
      } else if (u.transport === 'udp' && s.username !== undefined && s.credential !== undefined) {
        out.push({ hostname: u.host, port: u.port, username: s.username, password: s.credential, relayType: 'TurnUdp' });
      }
    }
  }
  return out;
}

class NdcChannel implements RawChannel {
  onOpen: (() => void) | null = null;
  onClose: (() => void) | null = null;
  onMessage: ((data: Uint8Array | string) => void) | null = null;
  onBufferedAmountLow: (() => void) | null = null;
  onError: ((err: Error) => void) | null = null;
  private st: ChannelState;
  private lowThreshold = 0;

  constructor(
    private readonly dc: Ndc.DataChannel,
    readonly label: string,
    readonly ordered: boolean,
    readonly maxRetransmits: number | null,
  ) {
    this.st = dc.isOpen() ? 'open' : 'connecting';
    dc.onOpen(() => {
      this.st = 'open';
      this.onOpen?.();
    });
    dc.onClosed(() => {
      if (this.st === 'closed') return;
      this.st = 'closed';
      this.onClose?.();
    });
    dc.onError((e) => this.onError?.(new Error(`data channel error: ${e}`)));
    dc.onBufferedAmountLow(() => this.onBufferedAmountLow?.());
    dc.onMessage((m) => {
      if (typeof m === 'string') return this.onMessage?.(m);
      this.onMessage?.(m instanceof ArrayBuffer ? new Uint8Array(m) : new Uint8Array(m.buffer, m.byteOffset, m.byteLength));
    });
  }
  get state(): ChannelState {
    return this.st;
  }
  get bufferedAmount(): number {
    return this.st === 'open' ? this.dc.bufferedAmount() : 0;
  }
  get bufferedAmountLowThreshold(): number {
    return this.lowThreshold;
  }
  set bufferedAmountLowThreshold(v: number) {
    this.lowThreshold = v;
    this.dc.setBufferedAmountLowThreshold(v);
  }
  send(data: Uint8Array | string): void {
    if (this.st !== 'open') throw new Error(`data channel ${this.label} is ${this.st}`);
    // `false` means libdatachannel queued the message (its buffer, counted in bufferedAmount), not a loss.
    if (typeof data === 'string') this.dc.sendMessage(data);
    else this.dc.sendMessageBinary(data);
  }
  close(): void {
    if (this.st === 'closed') return;
    this.st = 'closing';
    this.dc.close();
  }

}

function toCandidateType(t: string): CandidateInfo['type'] {
  // libjuice names: host, srflx, prflx, relay (and long forms in some versions).
  if (t === 'srflx' || t === 'server_reflexive') return 'srflx';
  if (t === 'prflx' || t === 'peer_reflexive') return 'prflx';
  if (t === 'relay' || t === 'relayed') return 'relay';
  return 'host';
}

function toInfo(c: Ndc.SelectedCandidateInfo): CandidateInfo {
  const fromLine = parseCandidate(c.candidate);
  return {
    type: fromLine?.type ?? toCandidateType(c.type.toLowerCase()),
    address: c.address,
    port: c.port,
    protocol: c.transportType.toLowerCase().startsWith('tcp') ? 'tcp' : 'udp',
  };
}

const STATE_MAP: Readonly<Record<string, TransportState>> = {
  new: 'new',
  connecting: 'connecting',
  connected: 'connected',
  disconnected: 'disconnected',
  failed: 'failed',
  closed: 'closed',
};

let nextPeerId = 0;

/**
 * Bound on the wait in `close()` for a last message to leave: two round trips of a slow relayed
 * path fit, and a close to a vanished peer is not held for long (client/link.ts has its own bye wait).
 */
const CLOSE_FLUSH_MS = 500;
/** At least this long even where the round trip reads 0 (loopback) or unknown: scheduling on a loaded machine. */
const CLOSE_MIN_WAIT_MS = 20;

/** Remote candidates held until their description arrives; a peer gathers a handful, this bounds a flood. */
const MAX_EARLY_CANDIDATES = 64;

/** A `PeerBackend` on libdatachannel. Construct with `createNodeDatachannelBackend`. */
export class NodeDatachannelBackend implements PeerBackend {
  onCandidate: ((c: CandidateInit | null) => void) | null = null;
  onState: ((s: TransportState) => void) | null = null;
  onChannel: ((c: RawChannel) => void) | null = null;

  private readonly pc: Ndc.PeerConnection;
  private servers: readonly IceServerConfig[];
  private readonly hosts: ReadonlySet<string> | null;
  private readonly channels = new Set<NdcChannel>();
  private remoteMid = '0';
  private remoteUfrag: string | null = null;
  private closed = false;

  constructor(ndc: NdcModule, opts: PeerOptions) {
    this.servers = opts.iceServers;
    const host = opts.hostAddresses;
    this.hosts = host ? new Set(host) : null;
    this.pc = new ndc.PeerConnection(`homelink-${nextPeerId++}`, {
      iceServers: toNdcIceServers(opts.iceServers),
      iceTransportPolicy: opts.iceTransportPolicy ?? 'all',
      // Descriptions are made when we ask (createOffer / acceptOffer), as the session expects.
      disableAutoNegotiation: true,
      // One IPv4 address given: every ICE socket binds there (tests, the loopback-only stack).
      ...(host?.length === 1 && /^\d+\.\d+\.\d+\.\d+$/.test(host[0]!) ? { bindAddress: host[0]! } : {}),
    });
    this.pc.onLocalCandidate((candidate, mid) => {
      if (this.closed) return;
      const line = candidate.replace(/^a=/, '');
      const info = parseCandidate(line);
      // With several host addresses given, announce host candidates on those only (as native.ts).
      if (this.hosts && info && info.type === 'host' && !this.hosts.has(info.address)) return;
      this.onCandidate?.({ candidate: line, sdpMid: mid, sdpMLineIndex: 0 });
    });
    this.pc.onGatheringStateChange((s) => {
      if (s === 'complete' && !this.closed) this.onCandidate?.(null);
    });
    this.pc.onStateChange((s) => {
      const st = STATE_MAP[s];
      if (!st || this.closed) return;
      // libdatachannel says `closed` when the peer ended DTLS/SCTP too. W3C webrtc-pc keeps
      // `closed` for a local close(); a peer's close is a lost transport (`disconnected`), so the
      // session waits its grace for the peer's bye (room or control channel) instead of failing
      // the link with NoPath the moment the peer's close_notify arrives.
      this.onState?.(st === 'closed' ? 'disconnected' : st);
    });
    this.pc.onDataChannel((dc) => {
      // The peer's reliability parameters are not exposed by the bindings; report the defaults.
      const ch = this.track(new NdcChannel(dc, dc.getLabel(), true, null));
      this.onChannel?.(ch);
    });
  }

  private track(ch: NdcChannel): NdcChannel {
    this.channels.add(ch);
    return ch;
  }

  private localSdp(): string {
    const d = this.pc.localDescription();
    if (!d) throw new Error('node-datachannel produced no local description');
    return d.sdp;
  }

  async createOffer(opts?: { iceRestart?: boolean }): Promise<string> {
    if (opts?.iceRestart) throw new BackendUnsupportedError('node-datachannel cannot restart ICE (libdatachannel #545); dial again for a new connection');
    if (this.channels.size === 0) {
      // An application m-section needs a channel before the first offer; id 0 is reserved for it.
      this.createChannel('homelink', { negotiatedId: 0 });
    }
    this.pc.setLocalDescription('offer');
    // Offerer = DTLS client: see "Why connects stalled" in the module header.
    return fingerprintPerMedia(pinSetup(this.localSdp(), 'active'));
  }

  async acceptOffer(sdp: string): Promise<string> {
    this.checkRestart(sdp);
    this.remoteMid = applicationMid(sdp) ?? this.remoteMid;
    // We answer `passive` whatever the offer allows: the answerer's ICE completes first, so it
    // must be the DTLS side that waits (module header). An offer from node-datachannel already says
    // `active`; an `actpass` offer (werift, browsers) lets the answerer choose (RFC 4145 §4,
    // RFC 8842 §5.3 only recommends `active`). libdatachannel picks the role itself from the
    // remote offer, so it is shown the offer with `actpass` read as `active` and then answers
    // `passive`; the peer, which offered `actpass`, becomes the DTLS client as the answer says.
    this.pc.setRemoteDescription(pinSetup(sdp, 'active'), 'offer');
    await this.flushEarly();
    this.pc.setLocalDescription('answer');
    return fingerprintPerMedia(this.localSdp());
  }

  async acceptAnswer(sdp: string): Promise<void> {
    this.checkRestart(sdp);
    this.remoteMid = applicationMid(sdp) ?? this.remoteMid;
    this.pc.setRemoteDescription(sdp, 'answer');
    await this.flushEarly();
  }

  private early: CandidateInit[] = [];

  private async flushEarly(): Promise<void> {
    for (const c of this.early.splice(0)) await this.addCandidate(c);
  }

  /** A second remote description with new ICE credentials is a restart, which libdatachannel cannot do. */
  private checkRestart(sdp: string): void {
    const ufrag = iceUfrag(sdp);
    if (this.remoteUfrag !== null && ufrag !== null && ufrag !== this.remoteUfrag) {
      throw new BackendUnsupportedError('node-datachannel cannot accept an ICE restart (libdatachannel #545)');
    }
    this.remoteUfrag ??= ufrag;
  }

  async addCandidate(c: CandidateInit | null): Promise<void> {
    // libdatachannel has no end-of-candidates call; its checks end by themselves.
    if (c === null || c.candidate === '' || this.closed) return;
    // Trickled candidates can overtake the description they belong to (NATLAB.md); libdatachannel
    // then fails the description itself, so they wait here until it is applied.
    if (!this.pc.remoteDescription()) {
      if (this.early.length < MAX_EARLY_CANDIDATES) this.early.push(c);
      return;
    }
    try {
      this.pc.addRemoteCandidate(c.candidate.startsWith('a=') ? c.candidate : `a=${c.candidate}`, c.sdpMid ?? this.remoteMid);
    } catch (e) {
      // A candidate that trickles in after the peer ended the connection is moot (werift ignores
      // it too); the session hears of the end from the transport state and the room, with the
      // reason the peer gave (an identity verdict, a bye), not as a backend error.
      if (this.pc.state() === 'closed' || this.pc.state() === 'failed') return;
      throw e;
    }
  }

  createChannel(label: string, opts?: ChannelOptions): RawChannel {
    const init = dataChannelInit(opts);
    const dc = this.pc.createDataChannel(label, {
      unordered: !init.ordered,
      ...(init.maxRetransmits !== undefined ? { maxRetransmits: init.maxRetransmits } : {}),
      ...(init.negotiated ? { negotiated: true, id: init.id } : {}),
    });
    return this.track(new NdcChannel(dc, label, init.ordered, init.maxRetransmits ?? null));
  }

  async localFingerprint(): Promise<string> {
    const fp = sdpFingerprints(this.localSdp())[0];
    if (!fp) throw new Error('local DTLS certificate not ready');
    return fp;
  }

  async remoteCertificateFingerprint(): Promise<string | null> {
    if (this.closed || this.pc.state() !== 'connected') return null;
    // Set by libdatachannel from the certificate the peer presented (DtlsTransport's verify callback).
    const fp = this.pc.remoteFingerprint();
    if (!fp?.value || fp.algorithm.toLowerCase() !== 'sha-256') return null;
    return normaliseFingerprint(fp.value);
  }

  async selectedPair(): Promise<SelectedPair | null> {
    if (this.closed) return null;
    const p = this.pc.getSelectedCandidatePair();
    if (!p) return null;
    const local = toInfo(p.local);
    const rtt = this.pc.rtt();
    return {
      local,
      remote: toInfo(p.remote),
      ...(local.type === 'relay' ? { relayProtocol: 'udp' as const } : {}),
      ...(rtt >= 0 ? { rttMs: rtt } : {}),
    };
  }

  setIceServers(servers: readonly IceServerConfig[]): void {
    this.servers = servers;
  }

  /** The ICE servers last given (libdatachannel keeps the ones it was built with). */
  get iceServers(): readonly IceServerConfig[] {
    return this.servers;
  }

  async stats(): Promise<TransportStats> {
    if (this.closed) return { bytesSent: 0, bytesReceived: 0 };
    const rtt = this.pc.rtt();
    return { bytesSent: this.pc.bytesSent(), bytesReceived: this.pc.bytesReceived(), ...(rtt >= 0 ? { rttMs: rtt } : {}) };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // libdatachannel's close() tears the SCTP association down at once, and a message handed to
    // usrsctp a moment before (a bye on the control channel) can go with it: libdatachannel has
    // no "delivered" signal, and a closed channel reports closed before its stream reset is
    // acknowledged. So when a channel was open, wait about two round trips (the first
    // transmission arrives in one; RFC 9260 §6.3 retransmits only after the RTO) before closing,
    // bounded for a peer that is gone.
    // The wait comes before closing the channels: closing one drops what it still queues.
    const hadOpen = [...this.channels].some((ch) => ch.state === 'open');
    if (hadOpen && this.pc.state() === 'connected') {
      const rtt = this.pc.rtt();
      const wait = Math.min(CLOSE_FLUSH_MS, Math.max(CLOSE_MIN_WAIT_MS, 2 * (rtt > 0 ? rtt : 0)));
      await new Promise((r) => setTimeout(r, wait));
    }
    for (const ch of this.channels) ch.close();
    this.channels.clear();
    this.pc.close();
  }
}

/**
 * Creates a node-datachannel backend; rejects with `BackendUnsupportedError` when the package is
 * not installed (`client/index.ts` picks werift instead in `auto` mode).
 *
 * @example
 * ```ts
 * const pc = await createNodeDatachannelBackend({ iceServers, hostAddresses: ['127.0.0.1'] });
 * ```
 */
export async function createNodeDatachannelBackend(opts: PeerOptions): Promise<PeerBackend> {
  const ndc = await loadNodeDatachannel();
  if (!ndc) throw new BackendUnsupportedError('node-datachannel is not installed (optional dependency)');
  return new NodeDatachannelBackend(ndc, opts);
}
