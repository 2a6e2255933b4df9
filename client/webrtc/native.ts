/**
 * The browser backend: the platform's own `RTCPeerConnection` (libwebrtc, Gecko, WebKit).
 * Portable: DOM types only, no Node import. Browsers already use every ICE server URL given and
 * fail ICE on their own; the session's deadlines still apply on top.
 *
 * The presented DTLS certificate is read where the browser exposes it and hashed here with
 * WebCrypto (SHA-256 of the DER bytes), so the identity check compares against what the handshake
 * carried, never against a fingerprint string copied from SDP or from stats:
 * - `RTCDtlsTransport.getRemoteCertificates()` (W3C webrtc-pc, RTCDtlsTransport) where the browser implements it;
 * - otherwise `getStats()`: the `transport` entry's `remoteCertificateId` names the `certificate`
 *   entry whose `base64Certificate` is the DER (W3C webrtc-stats RTCTransportStats,
 *   RTCCertificateStats). Chromium implements only this one.
 *
 * `hostAddresses`, when given, limits which host candidates are announced: a browser gathers on
 * every interface by itself, and the local stack is reachable on loopback only.
 */
import {
  dataChannelInit,
  normaliseFingerprint,
  parseCandidate,
  sdpFingerprints,
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

class NativeChannel implements RawChannel {
  onOpen: (() => void) | null = null;
  onClose: (() => void) | null = null;
  onMessage: ((data: Uint8Array | string) => void) | null = null;
  onBufferedAmountLow: (() => void) | null = null;
  onError: ((err: Error) => void) | null = null;

  constructor(private readonly dc: RTCDataChannel) {
    dc.binaryType = 'arraybuffer';
    dc.onopen = () => this.onOpen?.();
    dc.onclose = () => this.onClose?.();
    dc.onmessage = (ev: MessageEvent) => this.onMessage?.(typeof ev.data === 'string' ? ev.data : new Uint8Array(ev.data as ArrayBuffer));
    dc.onbufferedamountlow = () => this.onBufferedAmountLow?.();
    dc.onerror = () => this.onError?.(new Error('data channel error'));
  }
  get label(): string {
    return this.dc.label;
  }
  get id(): number | null {
    return this.dc.id;
  }
  get ordered(): boolean {
    return this.dc.ordered;
  }
  get maxRetransmits(): number | null {
    return this.dc.maxRetransmits;
  }
  get state(): ChannelState {
    return this.dc.readyState as ChannelState;
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
    if (typeof data === 'string') this.dc.send(data);
    else this.dc.send(data as Uint8Array<ArrayBuffer>);
  }
  close(): void {
    this.dc.close();
  }
}

const toServers = (s: readonly IceServerConfig[]): RTCIceServer[] =>
  s.map((x) => ({ urls: [...x.urls], ...(x.username ? { username: x.username } : {}), ...(x.credential ? { credential: x.credential } : {}) }));

function hex(buf: ArrayBuffer): string {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * A DER certificate is a few hundred bytes to a few KiB; base64 text beyond this is not one we
 * hash (a bound on what a buggy stats implementation can make us decode).
 */
const MAX_CERT_BASE64_CHARS = 64 * 1024;

/** Decodes standard base64 into bytes; null when the text is not base64 or is out of bounds. */
function fromBase64(b64: string): Uint8Array<ArrayBuffer> | null {
  if (b64.length === 0 || b64.length > MAX_CERT_BASE64_CHARS || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return null;
  try {
    return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

/**
 * DER bytes of the peer's DTLS certificate from a stats report: the `transport` entry's
 * `remoteCertificateId` names the `certificate` entry (W3C webrtc-stats: RTCTransportStats,
 * RTCCertificateStats.base64Certificate). Only the leaf is used; null when absent or malformed.
 */
export function remoteCertificateFromReport(report: { forEach(fn: (s: Record<string, unknown>) => void): void; get(id: string): unknown }): Uint8Array<ArrayBuffer> | null {
  let der: Uint8Array<ArrayBuffer> | null = null;
  report.forEach((s) => {
    if (der || s['type'] !== 'transport' || typeof s['remoteCertificateId'] !== 'string') return;
    const cert = report.get(s['remoteCertificateId']) as Record<string, unknown> | undefined;
    if (cert?.['type'] !== 'certificate' || typeof cert['base64Certificate'] !== 'string') return;
    der = fromBase64(cert['base64Certificate']);
  });
  return der;
}

/** A `PeerBackend` on the browser's `RTCPeerConnection`. */
export class NativeBackend implements PeerBackend {
  onCandidate: ((c: CandidateInit | null) => void) | null = null;
  onState: ((s: TransportState) => void) | null = null;
  onChannel: ((c: RawChannel) => void) | null = null;
  onSelectedPairChange: (() => void) | null = null;
  /** Browsers restart ICE in place (W3C webrtc-pc `restartIce`). */
  readonly canRestartIce = true;
  private readonly pc: RTCPeerConnection;
  private localFp: string | null = null;
  private servers: readonly IceServerConfig[];

  constructor(opts: PeerOptions) {
    this.servers = opts.iceServers;
    const hosts = opts.hostAddresses ? new Set(opts.hostAddresses) : null;
    this.pc = new RTCPeerConnection({ iceServers: toServers(opts.iceServers), iceTransportPolicy: opts.iceTransportPolicy ?? 'all' });
    this.pc.onicecandidate = (ev) => {
      if (!ev.candidate || ev.candidate.candidate === '') return this.onCandidate?.(null);
      const c = ev.candidate;
      // Relayed candidates are the relay's addresses and always usable; the others only on the given hosts.
      const info = hosts ? parseCandidate(c.candidate) : null;
      if (hosts && (!info || (info.type !== 'relay' && !hosts.has(info.address)))) return;
      this.onCandidate?.({ candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex, usernameFragment: c.usernameFragment });
    };
    this.pc.onconnectionstatechange = () => {
      this.watchSelectedPair();
      this.onState?.(this.pc.connectionState as TransportState);
    };
    this.pc.ondatachannel = (ev) => this.onChannel?.(new NativeChannel(ev.channel));
  }

  async createOffer(opts?: { iceRestart?: boolean }): Promise<string> {
    const offer = await this.pc.createOffer(opts?.iceRestart ? { iceRestart: true } : {});
    await this.pc.setLocalDescription(offer);
    const sdp = this.pc.localDescription?.sdp ?? offer.sdp ?? '';
    this.localFp ??= sdpFingerprints(sdp)[0] ?? null;
    return sdp;
  }

  async acceptOffer(sdp: string): Promise<string> {
    await this.pc.setRemoteDescription({ type: 'offer', sdp });
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    const out = this.pc.localDescription?.sdp ?? answer.sdp ?? '';
    this.localFp ??= sdpFingerprints(out)[0] ?? null;
    return out;
  }

  async acceptAnswer(sdp: string): Promise<void> {
    await this.pc.setRemoteDescription({ type: 'answer', sdp });
  }

  async addCandidate(c: CandidateInit | null): Promise<void> {
    await this.pc.addIceCandidate(c === null ? undefined : { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null });
  }

  createChannel(label: string, opts?: ChannelOptions): RawChannel {
    return new NativeChannel(this.pc.createDataChannel(label, dataChannelInit(opts)));
  }

  /** A browser's certificate is an `RTCCertificate` with no PEM; ICE restarts, so no rebuild needs it. */
  certificate(): null {
    return null;
  }

  async localFingerprint(): Promise<string> {
    if (!this.localFp) throw new Error('no local description yet');
    return this.localFp;
  }

  async remoteCertificateFingerprint(): Promise<string | null> {
    const t = this.pc.sctp?.transport as (RTCDtlsTransport & { getRemoteCertificates?: () => ArrayBuffer[] }) | undefined;
    const certs = typeof t?.getRemoteCertificates === 'function' ? t.getRemoteCertificates() : undefined;
    const der: ArrayBuffer | Uint8Array<ArrayBuffer> | null = certs?.[0] ?? remoteCertificateFromReport(await this.pc.getStats());
    if (!der || der.byteLength === 0) return null;
    return normaliseFingerprint(hex(await crypto.subtle.digest('SHA-256', der)));
  }

  async selectedPair(): Promise<SelectedPair | null> {
    const report = await this.pc.getStats();
    let pair: Record<string, unknown> | undefined;
    report.forEach((s: Record<string, unknown>) => {
      if (s['type'] === 'transport' && typeof s['selectedCandidatePairId'] === 'string') pair = report.get(s['selectedCandidatePairId']);
    });
    if (!pair) report.forEach((s: Record<string, unknown>) => (s['type'] === 'candidate-pair' && s['nominated'] && s['state'] === 'succeeded' ? (pair = s) : undefined));
    if (!pair) return null;
    const l = report.get(pair['localCandidateId'] as string) as Record<string, unknown> | undefined;
    const r = report.get(pair['remoteCandidateId'] as string) as Record<string, unknown> | undefined;
    if (!l || !r) return null;
    const info = (c: Record<string, unknown>) =>
      parseCandidate(`candidate:x 1 ${String(c['protocol'])} 1 ${String(c['address'] ?? c['ip'])} ${String(c['port'])} typ ${String(c['candidateType'])}`);
    const local = info(l);
    const remote = info(r);
    if (!local || !remote) return null;
    const relayProtocol = typeof l['relayProtocol'] === 'string' ? (l['relayProtocol'] as 'udp' | 'tcp' | 'tls') : undefined;
    const rtt = typeof pair['currentRoundTripTime'] === 'number' ? (pair['currentRoundTripTime'] as number) * 1000 : undefined;
    return { local, remote, ...(relayProtocol ? { relayProtocol } : {}), ...(rtt !== undefined ? { rttMs: rtt } : {}) };
  }

  setIceServers(servers: readonly IceServerConfig[], policy?: 'all' | 'relay'): void {
    this.servers = servers;
    this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: toServers(this.servers), ...(policy ? { iceTransportPolicy: policy } : {}) });
  }

  async stats(): Promise<TransportStats> {
    const report = await this.pc.getStats();
    let out: TransportStats = { bytesSent: 0, bytesReceived: 0 };
    report.forEach((s: Record<string, unknown>) => {
      if (s['type'] === 'transport') out = { bytesSent: Number(s['bytesSent'] ?? 0), bytesReceived: Number(s['bytesReceived'] ?? 0) };
    });
    return out;
  }

  /**
   * Listens for the ICE transport's `selectedcandidatepairchange` (W3C webrtc-pc §5.6) once the
   * SCTP transport exists: a controlling browser can select another pair after it reported
   * connected. Browsers without the event are re-read as bytes arrive (client/link.ts).
   */
  private watchSelectedPair(): void {
    const ice = this.pc.sctp?.transport.iceTransport;
    if (!ice || ice.onselectedcandidatepairchange) return;
    ice.onselectedcandidatepairchange = () => {
      if (this.pc.connectionState !== 'closed') this.onSelectedPairChange?.();
    };
  }

  async close(): Promise<void> {
    this.pc.close();
  }
}

/** Creates a browser backend. */
export async function createNativeBackend(opts: PeerOptions): Promise<PeerBackend> {
  return new NativeBackend(opts);
}
