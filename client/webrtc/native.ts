/**
 * The browser backend: the platform's own `RTCPeerConnection` (libwebrtc, Gecko, WebKit).
 * Portable: DOM types only, no Node import. Browsers already use every ICE server URL given and
 * fail ICE on their own; the session's deadlines still apply on top.
 *
 * The presented DTLS certificate comes from `RTCDtlsTransport.getRemoteCertificates()` and is
 * hashed here with WebCrypto, so the identity check compares against what the handshake carried.
 */
import {
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

/** A `PeerBackend` on the browser's `RTCPeerConnection`. */
export class NativeBackend implements PeerBackend {
  onCandidate: ((c: CandidateInit | null) => void) | null = null;
  onState: ((s: TransportState) => void) | null = null;
  onChannel: ((c: RawChannel) => void) | null = null;
  private readonly pc: RTCPeerConnection;
  private localFp: string | null = null;
  private servers: readonly IceServerConfig[];

  constructor(opts: PeerOptions) {
    this.servers = opts.iceServers;
    this.pc = new RTCPeerConnection({ iceServers: toServers(opts.iceServers), iceTransportPolicy: opts.iceTransportPolicy ?? 'all' });
    this.pc.onicecandidate = (ev) => {
      if (!ev.candidate || ev.candidate.candidate === '') return this.onCandidate?.(null);
      const c = ev.candidate;
      this.onCandidate?.({ candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex, usernameFragment: c.usernameFragment });
    };
    this.pc.onconnectionstatechange = () => this.onState?.(this.pc.connectionState as TransportState);
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
    return new NativeChannel(
      this.pc.createDataChannel(label, {
        ordered: opts?.ordered ?? true,
        ...(opts?.maxRetransmits !== undefined ? { maxRetransmits: opts.maxRetransmits } : {}),
        ...(opts?.negotiatedId !== undefined ? { negotiated: true, id: opts.negotiatedId } : {}),
      }),
    );
  }

  async localFingerprint(): Promise<string> {
    if (!this.localFp) throw new Error('no local description yet');
    return this.localFp;
  }

  async remoteCertificateFingerprint(): Promise<string | null> {
    const t = this.pc.sctp?.transport as (RTCDtlsTransport & { getRemoteCertificates?: () => ArrayBuffer[] }) | undefined;
    const certs = t?.getRemoteCertificates?.();
    if (!certs || certs.length === 0) return null;
    return normaliseFingerprint(hex(await crypto.subtle.digest('SHA-256', certs[0]!)));
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

  async close(): Promise<void> {
    this.pc.close();
  }
}

/** Creates a browser backend. */
export async function createNativeBackend(opts: PeerOptions): Promise<PeerBackend> {
  return new NativeBackend(opts);
}
