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
 * Why relayed connects stalled for about 1 s (bench/connect/native-relayed.ts,
 * bench/connect/natlab-native.ts, docs/BENCHMARKS.md): the role order above assumes the answerer's
 * ICE completes first, and on a relayed path it does not. A check relayed into the peer's
 * allocation is dropped until that allocation has a permission for the sender's address (RFC 8656
 * §9), and the peer installs that permission only when it sends its own first check there. So the
 * first relayed check of whichever side checks first is lost and the side that checks second
 * connects first; the answerer learns the offerer's relayed candidate first (the offerer allocated
 * before it made the offer), so it checked first and the offerer, the DTLS client, connected first
 * (34 of 34 relay-to-relay loopback dials; libjuice's triggered check back waits a 50 ms pacing
 * slot). Its ClientHello then reaches an answerer whose DTLS transport does not exist yet.
 * libdatachannel 0.24.5 buffers it (`Transport::recv`) and replays it when the transport starts,
 * but `DtlsTransport::start` registers the receive callback before it enters its connecting state,
 * and the receive worker that the replay wakes returns early when it runs in between, leaving the
 * ClientHello unread until the next datagram: the client's retransmission, 1 s later (RFC 6347
 * §4.2.4.1). Seen with libdatachannel's Verbose log ("Incoming size=232" right after "Starting
 * DTLS transport", no answer, then "DTLS retransmit" at +1 s) and with the relay counting
 * ClientHellos (2 in every slow dial, 1 in every fast one). How often the worker loses that race
 * depends on load: 13 of 21 dials stalled at load 3-5, 1 of 33 on a quiet machine. The lab path is
 * the same race with NATs: the answerer's check from its relay to the offerer's server-reflexive
 * address opens its allocation to the offerer's NAT, and the offerer's host-socket check to the
 * answerer's relayed address then passes first.
 * The fix (our side; the race itself is libdatachannel's; since 2026-12-06 off by default, see
 * `NodeDatachannelOptions.orderReflexiveChecks`: in the NAT lab it cost whole dials), for the relay-to-relay path: a
 * node-datachannel offerer that is the DTLS client holds its relayed candidates (and its end of
 * candidates) back until the answerer's relayed candidate or end of candidates arrived, plus one
 * pacing slot per pair those form with our bases, so our relayed checks (which open our
 * allocation to the relay's address) have left before the answerer can check us. The answerer's
 * relayed check then passes first and it connects first, as on a direct path. Host and
 * server-reflexive candidates are never held (direct paths are unchanged), a werift answerer (we
 * are then the DTLS server) releases them at once, and a peer that sends neither still gets them
 * 1 s after the answer. Cost: relayed dials wait those slots (loopback relay-to-relay p50 128 ->
 * 238 ms on a quiet machine), for no retransmission.
 * Not fixed: the NAT lab's relayed path (symmetric on both sides) is host-socket-to-relay
 * (prflx -> relay), opened by the answerer's relay -> server-reflexive check. Holding our
 * server-reflexive candidates too fixed that cell (0 of 10 stalls against 1-5 of 10) but made
 * full-cone -> address-restricted dials stall (3 of 5 against 0 of 5): where the offerer's NAT
 * admits unsolicited packets, the answerer's early check is what made it connect first. So that
 * variant was withdrawn. Also not covered: an answerer that admits unsolicited packets while the
 * offerer is behind a filtering NAT (the offerer's first check succeeds at once).
 * test/client/native-relayed-order.test.ts holds the mechanism (server connected first, one
 * ClientHello per dial). Seen on the way: libjuice does not release its TURN allocation when the
 * agent is destroyed (no Refresh with lifetime 0), so every dial leaves one allocation per side for
 * its lifetime and an endpoint hits the relay's 10 allocations per username after about ten dials
 * (fixed: see below).
 *
 * TURN allocations: libjuice never deletes its allocation when a connection closes (each closed
 * link held one per side on the relay for libjuice's 600 s lifetime, so about ten links in ten
 * minutes reached the relay's per-user quota). `close()` deletes it from the same 5-tuple after
 * libjuice let go of its socket (client/webrtc/turn-release.ts; test/client/native-turn-release.test.ts).
 *
 * Limits:
 * - no ICE restart (libdatachannel issue #545): `createOffer({ iceRestart: true })` and a
 *   restart offer from the peer reject with `BackendUnsupportedError`. `canRestartIce` is false,
 *   so the link rebuilds the connection instead (client/session.ts); for that it gives this
 *   backend a certificate (`PeerOptions.certificate`: libdatachannel takes it as PEM files and
 *   cannot hand out the one it makes), the same for every connection of the link;
 * - ICE servers cannot be replaced on a live connection: `setIceServers` keeps them for
 *   reporting only; libjuice refreshes an allocation with the credentials it started with;
 * - TURN over TCP and TLS: libjuice (the ICE agent in the prebuilt binaries) relays over UDP
 *   only, so `turn:...?transport=tcp` and `turns:` URLs are not used by this backend;
 * - no relay-only policy: this backend refuses `iceTransportPolicy: 'relay'` (see below), and
 *   `client/index.ts` builds relay-only links on werift.
 *
 * Why relay-only is refused (the leak it caused, found with test/client/path.test.ts): the
 * policy reaches libdatachannel's own candidate signalling, but its libjuice ICE transport has no
 * such setting. libjuice's one UDP socket is the host candidate and the TURN client alike, it
 * pairs that socket with every remote candidate, and it learns a peer-reflexive candidate from
 * every verified Binding request, including one that reached it through its own relay. A peer
 * that is not relay-only sends checks from its host or server-reflexive address to our relayed
 * candidate; libjuice then adds that address as peer-reflexive and checks it from the host
 * socket, straight past the relay. Seen on loopback: the forced side's selected pair was host to
 * the peer's host, and the relay carried 0 of the 2 MiB the forced side sent, so the peer (and
 * anyone on the path) saw the address the application asked to hide. W3C webrtc-pc §4.2.1
 * ('relay': use only relayed candidates) forbids exactly that. Filtering candidates in the SDP
 * and trickle does not stop it (the peer-reflexive candidate comes from the check itself), so the
 * policy is not offered on this stack at all.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetworkWatch, type NetworkWatchOptions } from './network-watch.js';
import { releaseAllocations, type HeldAllocation } from './turn-release.js';
import {
  dataChannelInit,
  normaliseFingerprint,
  parseCandidate,
  sdpFingerprints,
  type CandidateInfo,
  type CandidateInit,
  type ChannelOptions,
  type ChannelState,
  type DtlsCertificate,
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
    certificatePemFile?: string;
    keyPemFile?: string;
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
    getId(): number;
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
    onIceStateChange(cb: (state: string) => void): void;
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

/**
 * A description without its candidate lines, and those lines (`candidate:...`). libdatachannel
 * applies the candidates of a remote description inside `setRemoteDescription`, and on a busy
 * CPU that has failed the whole description with "Got a remote candidate without ICE transport"
 * (client suite, native run: one dial in about 130 lost that way). Added one by one afterwards,
 * a candidate that fails is just one candidate (see `addCandidate`).
 */
function splitCandidates(sdp: string): { sdp: string; candidates: string[] } {
  const candidates: string[] = [];
  const lines = sdp.split(/\r?\n/).filter((l) => {
    if (!l.startsWith('a=candidate:')) return l !== 'a=end-of-candidates';
    candidates.push(l.slice(2));
    return false;
  });
  return { sdp: lines.join('\r\n'), candidates };
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
 *
 * A `stun:` server at the same host and port as a UDP `turn:` server given with credentials is
 * left out too: the Allocate success response carries the server-reflexive address
 * (XOR-MAPPED-ADDRESS, RFC 8656 §7.3) and libjuice gathers it from there, so the Binding request
 * adds nothing but one more transaction. That transaction is what cost a homelink dial about
 * 100 ms: libjuice paces every transaction it starts, gathering and connectivity checks alike, at
 * least `Ta` = 50 ms apart (RFC 8445 §14.2), and places a new one in the first free 50 ms slot
 * after those already armed. The offerer arms its server transactions when it makes the offer
 * (STUN Binding, TURN Allocate, the Allocate again after the 401 challenge, RFC 8656 §7.2), so
 * the check it arms on the answer, a few ms later, waited behind all three (bench/connect,
 * docs/BENCHMARKS.md). Dropping the duplicate STUN entry removes one slot from that queue.
 * The relay policy never reaches this backend (the constructor refuses it), so the list is the
 * one for the `all` policy.
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
  const turnAt = new Set(out.filter((e) => e.relayType).map((e) => `${e.hostname.toLowerCase()}|${e.port}`));
  return out.filter((e) => e.relayType !== undefined || !turnAt.has(`${e.hostname.toLowerCase()}|${e.port}`));
}

class NdcChannel implements RawChannel {
  onOpen: (() => void) | null = null;
  /** The backend's own hook, called before `onOpen` (see `NodeDatachannelBackend.passDone`). */
  libOpen: (() => void) | null = null;
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
    remote = false,
  ) {
    this.st = 'connecting';
    dc.onOpen(() => this.opened());
    dc.onClosed(() => {
      if (this.st === 'closed') return;
      this.st = 'closed';
      this.onClose?.();
    });
    dc.onError((e) => this.onError?.(new Error(`data channel error: ${e}`)));
    dc.onBufferedAmountLow(() => this.onBufferedAmountLow?.());
    this.listen();
    // Read after the callbacks are in: an open that came before them was not delivered to us
    // (on loopback the peer's acknowledgement can beat the registration).
    if (dc.isOpen()) this.opened();
    if (remote && this.st === 'connecting') this.watchOpen();
  }

  private listen(): void {
    this.dc.onMessage((m) => {
      if (typeof m === 'string') return this.onMessage?.(m);
      this.onMessage?.(m instanceof ArrayBuffer ? new Uint8Array(m) : new Uint8Array(m.buffer, m.byteOffset, m.byteLength));
    });
  }

  private opened(): void {
    if (this.st !== 'connecting') return;
    this.st = 'open';
    this.libOpen?.();
    this.onOpen?.();
  }

  /**
   * A channel the peer opened normally arrives open (libdatachannel hands it over from its open
   * event). Under load it was seen arriving not yet open, and then neither its open event nor a
   * message ever reached us while the peer's data filled the stream (NAT lab, 2 of 8 loaded runs;
   * see docs/NATLAB.md). Watch it: once libdatachannel says it is open, take it as open and
   * register the message callback again, which makes libdatachannel deliver what it queued.
   * (Likely cause, found later: the offerer's double open that `passDone` now prevents; with it,
   * bench/connect/channel-race.ts sees no channel arrive not open. The watch stays as a guard.)
   */
  private watchOpen(): void {
    const until = Date.now() + REMOTE_OPEN_WATCH_MS;
    const t = setInterval(() => {
      if (this.st !== 'connecting' || Date.now() > until) return clearInterval(t);
      if (!this.dc.isOpen()) return;
      clearInterval(t);
      this.listen();
      this.opened();
    }, REMOTE_OPEN_POLL_MS);
    t.unref?.();
  }
  get id(): number | null {
    if (this.st === 'closed') return this.streamId;
    const id = this.dc.getId();
    // libdatachannel reports 65535 (no id) until the association assigned one.
    if (id >= 0 && id < 65535) this.streamId = id;
    return this.streamId;
  }
  private streamId: number | null = null;
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

/** A channel the peer opened that arrives not open is watched this long, this often (see `NdcChannel.watchOpen`). */
const REMOTE_OPEN_WATCH_MS = 10_000;
const REMOTE_OPEN_POLL_MS = 20;

/** A remote candidate that finds libdatachannel's ICE transport not there yet is tried again this often, this many times (1 s). */
const ICE_TRANSPORT_WAIT_MS = 20;
const ICE_TRANSPORT_WAIT_TRIES = 50;

/** Remote candidates held until their description arrives; a peer gathers a handful, this bounds a flood. */
const MAX_EARLY_CANDIDATES = 64;

/**
 * libjuice's pacing interval `Ta` (its STUN_PACING_TIME, RFC 8445 §14.2): it starts one
 * connectivity check per 50 ms, in pair priority order, so a pair with a relayed local candidate
 * (the lowest priority) leaves last. See "Why relayed connects stalled" in the module header.
 */
const CHECK_PACING_MS = 50;
/**
 * Bound on holding our relayed candidates back after the answer: a peer
 * that never trickles a relayed candidate nor its end of candidates still gets them.
 */
const REFLEXIVE_HOLD_MAX_MS = 1_000;

/**
 * Bound on holding `connected` back until libdatachannel has opened the channels made before the
 * offer or answer (`NodeDatachannelBackend.passDone`); that takes a thread hop, milliseconds.
 */
const CONNECTED_HOLD_MAX_MS = 1_000;

/** Options of this backend that the `PeerBackend` contract does not have (benches and tests). */
export interface NodeDatachannelOptions {
  /**
   * Offerer only: hold our relayed candidates back until our own checks
   * towards the answerer's have left (module header, "Why relayed connects stalled"). Default
   * false: it removes the 1 s DTLS stall on a relay-to-relay path, but in the NAT lab (two
   * port-restricted homes whose direct UDP is blocked, test/natlab/upgrade.test.ts) 2 of 5 links
   * held this way never connected, against 0 of 11 without it (2026-12-06). A stall is cheaper
   * than a dial that fails. Turn it on for a relay-to-relay path (only on loopback: a deployed
   * relay refuses peers at its own address): there an early ClientHello can deadlock
   * libdatachannel 0.24.5 (upstream PR #1630; test/client/relay-helpers.ts RELAY_TO_RELAY_NATIVE).
   */
  readonly orderReflexiveChecks?: boolean;
  /**
   * Local address watch, as on werift (client/webrtc/network-watch.ts); `false` turns it off.
   * With `hostAddresses` it watches those addresses only. A change reaches the link as
   * `onNetworkChange`, which rebuilds the connection from the new address at once instead of
   * waiting for the liveness probe to hear the silence.
   */
  readonly networkWatch?: NetworkWatchOptions | false;
}

/**
 * The process's folder for certificate files (0700, made once, removed at exit): a folder per
 * connection (mkdtemp, then a recursive remove) was 90 % of this backend's construction, about
 * 2 ms per connection on a busy CPU (docs/BENCHMARKS.md).
 */
let pemDir: string | null = null;
let pemSeq = 0;

/** @internal The folder certificate files pass through (tests: it holds nothing between constructions). */
export const dtlsFileFolder = (): string | null => pemDir;

function pemFolder(): string {
  if (pemDir !== null && existsSync(pemDir)) return pemDir;
  const dir = mkdtempSync(join(tmpdir(), 'homelink-dtls-'));
  if (pemDir === null) process.once('exit', () => pemDir !== null && rmSync(pemDir, { recursive: true, force: true }));
  pemDir = dir;
  return dir;
}

/**
 * Runs `fn` with the certificate written to two files only the owner can read (in a folder only
 * the owner can enter), removed as soon as `fn` returns. libdatachannel takes a certificate by
 * file name only (`certificatePemFile`, `keyPemFile`) and reads both in the PeerConnection
 * constructor, before it returns.
 */
function withPemFiles<T>(cert: DtlsCertificate, fn: (files: { certificatePemFile: string; keyPemFile: string }) => T): T {
  const dir = pemFolder();
  const n = pemSeq++;
  const certificatePemFile = join(dir, `${n}-cert.pem`);
  const keyPemFile = join(dir, `${n}-key.pem`);
  try {
    writeFileSync(keyPemFile, cert.keyPem, { mode: 0o600, flag: 'wx' });
    writeFileSync(certificatePemFile, cert.certPem, { mode: 0o600, flag: 'wx' });
    return fn({ certificatePemFile, keyPemFile });
  } finally {
    rmSync(keyPemFile, { force: true });
    rmSync(certificatePemFile, { force: true });
  }
}

/** A `PeerBackend` on libdatachannel. Construct with `createNodeDatachannelBackend`. */
export class NodeDatachannelBackend implements PeerBackend {
  onCandidate: ((c: CandidateInit | null) => void) | null = null;
  onState: ((s: TransportState) => void) | null = null;
  onChannel: ((c: RawChannel) => void) | null = null;
  onNetworkChange: (() => void) | null = null;
  onSelectedPairChange: (() => void) | null = null;
  /** libdatachannel #545: a lost path is recovered by rebuilding the connection (client/session.ts). */
  readonly canRestartIce = false;
  /**
   * libdatachannel 0.24.5 keeps up to 8 records that reach the ICE transport before the DTLS
   * transport took them (`Transport::recv`, upstream PR #1554) and hands them over when it starts;
   * its own client sends its first flight at once, so there is no `peerHoldsEarlyDtls` here.
   */
  readonly holdsEarlyDtls = true;

  private readonly pc: Ndc.PeerConnection;
  private readonly cert: DtlsCertificate | null;
  private servers: readonly IceServerConfig[];
  private readonly hosts: ReadonlySet<string> | null;
  private readonly channels = new Set<NdcChannel>();
  private remoteMid = '0';
  private remoteUfrag: string | null = null;
  private closed = false;
  /** Offerer that orders reflexive checks: our relayed candidates and end of candidates wait here. */
  private holding = false;
  private readonly orderReflexive: boolean;
  private readonly held: Array<CandidateInit | null> = [];
  /** Local candidates with their own socket or allocation (host, relay): one check per remote candidate each. */
  private localBases = 0;
  /** Remote relayed candidates added since the answer. */
  private remoteReflexive = 0;
  private releaseTimer: ReturnType<typeof setTimeout> | null = null;
  /** libjuice's one UDP socket (the port its host candidates announce) and what it is bound to. */
  private juicePort: number | null = null;
  private readonly juiceAddress: string;
  /** The TURN servers libjuice was built with (it allocates on each as soon as it gathers). */
  private readonly turnServers: HeldAllocation[];
  private readonly watch: NetworkWatch | null;
  /** An offer or answer was made: channels made from now on are opened by libdatachannel at once. */
  private sdpStarted = false;
  /** A negotiated channel made before that exists (the link's control channel always is one). */
  private preSdpChannel = false;
  /** libdatachannel's open pass over those channels has run (`passDone`). */
  private libOpened = false;
  private connectedHold: ReturnType<typeof setTimeout> | null = null;

  constructor(ndc: NdcModule, opts: PeerOptions, extra: NodeDatachannelOptions = {}) {
    this.orderReflexive = extra.orderReflexiveChecks ?? false;
    if (opts.iceTransportPolicy === 'relay') throw new BackendUnsupportedError('node-datachannel cannot keep a link relay-only (libjuice checks peer-reflexive addresses from its host socket); use werift');
    this.servers = opts.iceServers;
    const host = opts.hostAddresses;
    this.hosts = host ? new Set(host) : null;
    const ndcServers = toNdcIceServers(opts.iceServers);
    this.turnServers = ndcServers.flatMap((e) => (e.relayType && e.username !== undefined && e.password !== undefined ? [{ host: e.hostname, port: e.port, username: e.username, password: e.password }] : []));
    this.juiceAddress = host?.length === 1 && /^\d+\.\d+\.\d+\.\d+$/.test(host[0]!) ? host[0]! : '0.0.0.0';
    this.cert = opts.certificate ?? null;
    const config: Ndc.RtcConfig = {
      iceServers: ndcServers,
      iceTransportPolicy: 'all',
      // Descriptions are made when we ask (createOffer / acceptOffer), as the session expects.
      disableAutoNegotiation: true,
      // One IPv4 address given: every ICE socket binds there (tests, the loopback-only stack).
      ...(host?.length === 1 && /^\d+\.\d+\.\d+\.\d+$/.test(host[0]!) ? { bindAddress: host[0]! } : {}),
    };
    this.pc = this.cert ? withPemFiles(this.cert, (files) => new ndc.PeerConnection(`homelink-${nextPeerId++}`, { ...config, ...files })) : new ndc.PeerConnection(`homelink-${nextPeerId++}`, config);
    // Made once the connection exists (a constructor that throws leaves no timer). libjuice gathers on what the interfaces held when the connection was made and never looks
    // again, so a renumbered or moved host keeps checking from sockets whose address is gone.
    this.watch =
      extra.networkWatch === false
        ? null
        : new NetworkWatch(() => void (this.closed || this.onNetworkChange?.()), { ...(extra.networkWatch ?? {}), ...(host ? { pinned: host } : {}) });
    this.pc.onLocalCandidate((candidate, mid) => {
      if (this.closed) return;
      const line = candidate.replace(/^a=/, '');
      const info = parseCandidate(line);
      if (info?.type === 'host' && info.protocol === 'udp') this.juicePort ??= info.port;
      // With several host addresses given, announce host candidates on those only (as native.ts).
      if (this.hosts && info && info.type === 'host' && !this.hosts.has(info.address)) return;
      if (info?.type === 'host' || info?.type === 'relay') this.localBases++;
      const c = { candidate: line, sdpMid: mid, sdpMLineIndex: 0 };
      if (this.holding && info?.type === 'relay') this.held.push(c);
      else this.onCandidate?.(c);
    });
    this.pc.onGatheringStateChange((s) => {
      if (s !== 'complete' || this.closed) return;
      if (this.holding) this.held.push(null);
      else this.onCandidate?.(null);
    });
    this.pc.onStateChange((s) => {
      const st = STATE_MAP[s];
      if (!st || this.closed) return;
      if (st === 'connected' && this.preSdpChannel && !this.libOpened) {
        this.connectedHold ??= setTimeout(() => this.passDone(), CONNECTED_HOLD_MAX_MS);
        return;
      }
      if (this.connectedHold !== null) {
        clearTimeout(this.connectedHold);
        this.connectedHold = null;
      }
      // libdatachannel says `closed` when the peer ended DTLS/SCTP too. W3C webrtc-pc keeps
      // `closed` for a local close(); a peer's close is a lost transport (`disconnected`), so the
      // session waits its grace for the peer's bye (room or control channel) instead of failing
      // the link with NoPath the moment the peer's close_notify arrives.
      this.onState?.(st === 'closed' ? 'disconnected' : st);
    });
    // libjuice, the controlled side, reports `connected` on the first pair whose check succeeded
    // and takes the nominated one when the controlling peer's nomination completes (`completed`).
    // A browser nominates its host pair a few tens of ms after libjuice's relayed pair answered
    // first (seen on loopback: the link opened on the relay and stayed reported so). Each of
    // those ICE states may name another selected pair.
    this.pc.onIceStateChange((s) => {
      if (!this.closed && (s === 'connected' || s === 'completed')) this.onSelectedPairChange?.();
    });
    this.pc.onDataChannel((dc) => {
      // The peer's reliability parameters are not exposed by the bindings; report the defaults.
      const ch = this.track(new NdcChannel(dc, dc.getLabel(), true, null, true));
      this.onChannel?.(ch);
    });
  }

  certificate(): DtlsCertificate | null {
    return this.cert;
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
    this.sdpStarted = true;
    this.holding = this.orderReflexive;
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
    const { sdp: bare, candidates } = splitCandidates(pinSetup(sdp, 'active'));
    this.sdpStarted = true;
    this.pc.setRemoteDescription(bare, 'offer');
    this.early.unshift(...candidates.map((candidate) => ({ candidate, sdpMid: this.remoteMid, sdpMLineIndex: 0 })));
    await this.flushEarly();
    this.pc.setLocalDescription('answer');
    return fingerprintPerMedia(this.localSdp());
  }

  async acceptAnswer(sdp: string): Promise<void> {
    this.checkRestart(sdp);
    this.remoteMid = applicationMid(sdp) ?? this.remoteMid;
    const { sdp: bare, candidates } = splitCandidates(sdp);
    this.pc.setRemoteDescription(bare, 'answer');
    this.early.unshift(...candidates.map((candidate) => ({ candidate, sdpMid: this.remoteMid, sdpMLineIndex: 0 })));
    // We are the DTLS client only when the answer says `passive`; as the server we have nothing to order.
    if (!/^a=setup:passive\r?$/m.test(sdp)) this.releaseHeld();
    else if (this.holding) this.scheduleRelease(REFLEXIVE_HOLD_MAX_MS);
    await this.flushEarly();
  }

  /** Releases held candidates after `ms`, or sooner if a release is already due sooner. */
  private scheduleRelease(ms: number): void {
    const at = performance.now() + ms;
    if (this.releaseTimer !== null && this.releaseAt <= at) return;
    if (this.releaseTimer !== null) clearTimeout(this.releaseTimer);
    this.releaseAt = at;
    this.releaseTimer = setTimeout(() => this.releaseHeld(), ms);
  }
  private releaseAt = 0;

  /** Announces the held candidates (and the held end of candidates) in the order they were gathered. */
  private releaseHeld(): void {
    if (!this.holding) return;
    this.holding = false;
    if (this.releaseTimer !== null) clearTimeout(this.releaseTimer);
    this.releaseTimer = null;
    if (this.closed) return;
    for (const c of this.held.splice(0)) this.onCandidate?.(c);
  }

  /**
   * Held candidates go once our checks towards the answerer's relayed candidates have left:
   * when its relayed candidate or its end of candidates arrived, after one pacing slot per pair
   * those candidates form with our bases (libjuice checks them in priority order, ours with a
   * relayed local candidate last).
   */
  private noteRemote(c: CandidateInit | null): void {
    if (!this.holding || !this.pc.remoteDescription()) return;
    const type = c && c.candidate !== '' ? parseCandidate(c.candidate)?.type : null;
    if (type === 'relay') this.remoteReflexive++;
    if (type !== 'relay' && type !== null) return;
    const pairs = Math.max(1, this.localBases) * Math.max(1, this.remoteReflexive);
    this.scheduleRelease(Math.min(REFLEXIVE_HOLD_MAX_MS, pairs * CHECK_PACING_MS));
  }

  private early: Array<CandidateInit | null> = [];

  /** Candidates that waited for the description; one that fails is one path less, not a failed description. */
  private async flushEarly(): Promise<void> {
    for (const c of this.early.splice(0)) await this.addCandidate(c).catch(() => undefined);
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
    if (this.closed) return;
    // Trickled candidates can overtake the description they belong to (NATLAB.md); libdatachannel
    // then fails the description itself, so they wait here until it is applied.
    if (!this.pc.remoteDescription()) {
      if (this.early.length < MAX_EARLY_CANDIDATES) this.early.push(c);
      return;
    }
    this.noteRemote(c);
    // libdatachannel has no end-of-candidates call; its checks end by themselves.
    if (c === null || c.candidate === '') return;
    const line = c.candidate.startsWith('a=') ? c.candidate : `a=${c.candidate}`;
    try {
      // libdatachannel's ICE transport can lag its description on a busy CPU (see `splitCandidates`): wait for it, bounded.
      for (let i = 0; ; i++) {
        try {
          this.pc.addRemoteCandidate(line, c.sdpMid ?? this.remoteMid);
          break;
        } catch (e) {
          // A failed or closed connection has no ICE transport any more and never gets one again.
          const dead = this.pc.state() === 'closed' || this.pc.state() === 'failed';
          if (i >= ICE_TRANSPORT_WAIT_TRIES || this.closed || dead || !/without ICE transport/.test(String(e))) throw e;
          await new Promise((r) => setTimeout(r, ICE_TRANSPORT_WAIT_MS));
        }
      }
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
    const ch = this.track(new NdcChannel(dc, label, init.ordered, init.maxRetransmits ?? null));
    if (init.negotiated && !this.sdpStarted) {
      this.preSdpChannel = true;
      ch.libOpen = () => this.passDone();
    }
    return ch;
  }

  /**
   * libdatachannel 0.24.5 sends a channel's DCEP open twice when the channel is created between
   * SCTP connecting and its own pass that opens the channels it holds (PeerConnection's
   * `openDataChannels`, queued to another thread at connect; it sends open again for every channel
   * not yet acknowledged). The peer then sees an open on a stream already in use and closes the
   * channel: it never delivers (the NAT lab's relayed native cell stalled so on a loaded machine,
   * libdatachannel's log showing "Got open message on already used stream"). The link opens its
   * channels right after `connected`, so `connected` is held until that pass has run: it opens
   * the negotiated channels made before the offer or answer (there is always one, the control
   * channel), whose open we hear. Bounded by CONNECTED_HOLD_MAX_MS.
   */
  private passDone(): void {
    if (this.libOpened) return;
    this.libOpened = true;
    if (this.connectedHold === null) return;
    clearTimeout(this.connectedHold);
    this.connectedHold = null;
    if (!this.closed && this.pc.state() === 'connected') this.onState?.('connected');
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
    this.watch?.stop();
    if (this.releaseTimer !== null) clearTimeout(this.releaseTimer);
    if (this.connectedHold !== null) clearTimeout(this.connectedHold);
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
    // libjuice leaves its allocation on the relay for its whole lifetime (600 s): delete it from
    // the same 5-tuple (client/webrtc/turn-release.ts), bounded by RELEASE_TIMEOUT_MS. Gathering
    // started once a host candidate named the socket, and libjuice asks for its allocations right
    // then: a close before the relayed candidate came up (a link that failed or was cancelled
    // early) can still leave one, so the release runs whether or not a relayed candidate was seen
    // (a relay holding none answers 437).
    if (this.juicePort !== null) await releaseAllocations({ address: this.juiceAddress, port: this.juicePort }, this.turnServers);
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
export async function createNodeDatachannelBackend(opts: PeerOptions, extra?: NodeDatachannelOptions): Promise<PeerBackend> {
  const ndc = await loadNodeDatachannel();
  if (!ndc) throw new BackendUnsupportedError('node-datachannel is not installed (optional dependency)');
  return new NodeDatachannelBackend(ndc, opts, extra);
}
