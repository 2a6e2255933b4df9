/**
 * The one small interface the rest of the library sees of a WebRTC stack.
 *
 * Three implementations: `werift.ts` (Node, pure JS; the only file that imports werift),
 * `node-datachannel.ts` (Node, libdatachannel's native stack, an optional dependency) and
 * `native.ts` (browsers' `RTCPeerConnection`). `chooseBackend` below is the selection rule on
 * Node; `client/index.ts` applies it.
 *
 * The interface is deliberately narrower than `RTCPeerConnection`: SDP travels as strings,
 * `createOffer`/`acceptOffer` hand the description back as soon as it exists (before gathering
 * ends, so it can be signalled early), candidates trickle through `onCandidate`, and the
 * fingerprints are exposed as normalised strings so identity binding can compare them.
 * Portable: no Node-only import may be reachable from this file.
 */

/** An ICE server as the signaling service hands it out (TURN REST credentials included). */
export interface IceServerConfig {
  readonly urls: readonly string[];
  readonly username?: string;
  readonly credential?: string;
}

/**
 * A DTLS certificate and its private key, PEM (ECDSA P-256). Given to every peer connection of
 * one link, so a rebuilt connection presents the fingerprint the identity proof signed at setup
 * (client/session.ts). Never logged; it lives as long as its link.
 */
export interface DtlsCertificate {
  readonly certPem: string;
  readonly keyPem: string;
}

/** Construction options common to every backend. */
export interface PeerOptions {
  /** Present this certificate instead of a fresh one (a rebuilt connection of the same link). */
  readonly certificate?: DtlsCertificate;
  readonly iceServers: readonly IceServerConfig[];
  /** `'relay'` forces TURN (tests and privacy-sensitive deployments). */
  readonly iceTransportPolicy?: 'all' | 'relay';
  /**
   * The local addresses host candidates may use. Node: gathered on these only, replacing
   * interface discovery (tests pass `['127.0.0.1']` so nothing probes other interfaces).
   * Browsers gather by themselves: host candidates on other addresses are not announced.
   */
  readonly hostAddresses?: readonly string[];
  /** Node only: TLS options for `turns:` (for example a test CA). */
  readonly turnTlsOptions?: { readonly ca?: string | Uint8Array; readonly rejectUnauthorized?: boolean; readonly servername?: string };
}

export interface CandidateInit {
  readonly candidate: string;
  readonly sdpMid?: string | null;
  readonly sdpMLineIndex?: number | null;
  readonly usernameFragment?: string | null;
}

export type CandidateType = 'host' | 'srflx' | 'prflx' | 'relay';

export interface CandidateInfo {
  readonly type: CandidateType;
  readonly address: string;
  readonly port: number;
  /** Transport between this candidate and its peer (`udp` for relayed candidates, RFC 8656). */
  readonly protocol: 'udp' | 'tcp';
}

export interface SelectedPair {
  readonly local: CandidateInfo;
  readonly remote: CandidateInfo;
  /** Client-to-relay transport when the local candidate is relayed. */
  readonly relayProtocol?: 'udp' | 'tcp' | 'tls';
  /** Latest STUN round-trip time on the pair, when measured. */
  readonly rttMs?: number;
}

/** Aggregate transport state: what the session reacts to. */
export type TransportState = 'new' | 'connecting' | 'connected' | 'disconnected' | 'failed' | 'closed';

export interface ChannelOptions {
  /** Deliver in order (default true). */
  readonly ordered?: boolean;
  /** Give up on a message after this many retransmissions (unreliable when set). */
  readonly maxRetransmits?: number;
  /** Pre-agreed stream id: both sides create the channel, no in-band open. */
  readonly negotiatedId?: number;
}

export type ChannelState = 'connecting' | 'open' | 'closing' | 'closed';

/** A data channel as the backend exposes it; `client/channel.ts` adds backpressure on top. */
export interface RawChannel {
  readonly label: string;
  /** SCTP stream id (RFC 8832 §6), the same at both ends; null until the stack assigned one. */
  readonly id: number | null;
  readonly ordered: boolean;
  readonly maxRetransmits: number | null;
  readonly state: ChannelState;
  readonly bufferedAmount: number;
  bufferedAmountLowThreshold: number;
  send(data: Uint8Array | string): void;
  close(): void;
  onOpen: (() => void) | null;
  onClose: (() => void) | null;
  onMessage: ((data: Uint8Array | string) => void) | null;
  onBufferedAmountLow: (() => void) | null;
  onError: ((err: Error) => void) | null;
}

export interface TransportStats {
  readonly bytesSent: number;
  readonly bytesReceived: number;
  readonly rttMs?: number;
}

/** Options of `createOffer`. */
export interface OfferOptions {
  /** New ICE credentials: every pair is checked again and a new one selected (RFC 8445 §9). */
  readonly iceRestart?: boolean;
  /**
   * With `iceRestart`: a direct-only attempt. Pairs this predicate calls relayed are not checked,
   * so the first pair to succeed (the one nominated) is direct; the path in use keeps carrying
   * data until then. Backends that cannot filter pairs may ignore it.
   */
  readonly avoidRelay?: (pair: SelectedPair) => boolean;
}

/** One peer connection. Every method may be called once the previous promise settled. */
export interface PeerBackend {
  /**
   * The stack restarts ICE on a live connection (`createOffer({ iceRestart })`, RFC 8445 §9).
   * False for libdatachannel (its issue #545): such a link recovers by rebuilding the connection.
   */
  readonly canRestartIce: boolean;
  /**
   * DTLS records that reach this connection before its own handshake started are kept for it, so
   * the peer may send its first flight as soon as its ICE connects (the identity signal says so,
   * `earlyDtls`). Absent: not known to (browsers; older builds).
   */
  readonly holdsEarlyDtls?: boolean;
  /**
   * The peer keeps early DTLS records: a backend that holds its first flight back to give the peer
   * time (werift waits 100 ms) may send it as soon as its ICE connects. Optional.
   */
  peerHoldsEarlyDtls?(): void;
  /** The certificate this connection presents, when the backend can hand it to the next one; else null. */
  certificate(): DtlsCertificate | null;
  /** Creates an offer, applies it locally and returns its SDP before gathering completes. */
  createOffer(opts?: OfferOptions): Promise<string>;
  /** Applies a remote offer, creates and applies the answer, returns its SDP. */
  acceptOffer(sdp: string): Promise<string>;
  acceptAnswer(sdp: string): Promise<void>;
  /** `null` marks the end of the peer's candidates. */
  addCandidate(c: CandidateInit | null): Promise<void>;
  /** Local candidates as gathered; `null` when gathering ended. */
  onCandidate: ((c: CandidateInit | null) => void) | null;
  onState: ((s: TransportState) => void) | null;
  /**
   * Backends that discover local interfaces (Node): the usable local addresses changed. The next
   * ICE restart gathers from the new addresses on new sockets. Optional; never called elsewhere.
   */
  onNetworkChange?: (() => void) | null;
  /**
   * The selected candidate pair may have changed without the transport state changing: an agent
   * that reports `connected` on its first working pair and moves to the nominated one later
   * (libjuice as the controlled side; a browser's `selectedcandidatepairchange`). The link
   * re-reads its path. Optional; backends without such a signal are re-read as bytes arrive.
   */
  onSelectedPairChange?: (() => void) | null;
  /** A channel the peer opened. */
  onChannel: ((c: RawChannel) => void) | null;
  createChannel(label: string, opts?: ChannelOptions): RawChannel;
  /** `sha-256` fingerprint of our DTLS certificate, upper-case hex pairs joined by ':'. */
  localFingerprint(): Promise<string>;
  /**
   * Fingerprint of the certificate the peer actually presented in the DTLS handshake, computed
   * from the certificate bytes (not copied from SDP); null before the handshake completed.
   */
  remoteCertificateFingerprint(): Promise<string | null>;
  selectedPair(): Promise<SelectedPair | null>;
  /** Replaces the ICE servers (renewed TURN credentials) for the next gathering. */
  setIceServers(servers: readonly IceServerConfig[], policy?: 'all' | 'relay'): void;
  stats(): Promise<TransportStats>;
  close(): Promise<void>;
}

/** Creates backends; the endpoint receives one so it never imports a WebRTC stack itself. */
export type BackendFactory = (opts: PeerOptions) => Promise<PeerBackend>;

/** The WebRTC stacks a Node endpoint can run on. */
export const BACKEND_NAMES = ['werift', 'node-datachannel'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
/** `auto`: werift, the backend with every recovery feature (see `chooseBackend`). */
export type BackendChoice = BackendName | 'auto';

/** A backend name that is not one of `BACKEND_NAMES` or `auto`. */
export class BackendChoiceError extends Error {
  override readonly name = 'BackendChoiceError';
}

/**
 * Parses a backend choice from configuration (an option or the `HOMELINK_BACKEND` variable);
 * `undefined` or empty is `auto`. `source` names the setting in the error.
 * @example
 * parseBackendChoice(process.env['HOMELINK_BACKEND'], 'HOMELINK_BACKEND'); // 'auto' when unset
 */
export function parseBackendChoice(v: string | undefined, source = 'backend'): BackendChoice {
  if (v === undefined || v === '' || v === 'auto') return 'auto';
  if ((BACKEND_NAMES as readonly string[]).includes(v)) return v as BackendName;
  throw new BackendChoiceError(`${source} must be one of auto, ${BACKEND_NAMES.join(', ')} (got ${JSON.stringify(v.slice(0, 40))})`);
}

/**
 * The selection rule: an explicit name is taken as is (asking for node-datachannel where it is
 * missing is a configuration error, not a silent fallback). `auto` is werift even where
 * node-datachannel is installed. A link on libdatachannel now has every recovery feature a werift
 * one has, by other means (client/session.ts): a lost path or a network change (the backend
 * watches the interfaces) rebuilds the peer connection, a relayed link looks for a direct path
 * with a probe connection, closing one deletes the TURN allocation libjuice leaves behind; the NAT
 * lab runs relay-to-direct and roaming on it (test/natlab/upgrade.test.ts, roaming.test.ts).
 * What keeps it from being the automatic choice is what libdatachannel itself does: above all,
 * 0.24.5 (node-datachannel 0.33.4, the newest in the registry) can deadlock when a ClientHello
 * waits for the DTLS transport over a relayed pair (upstream PR #1630, merged after that release):
 * the process's main thread then blocks for good in the connection's close(); a CI run hung so.
 * And under load in the last runs: a channel the peer opened arrived not open and delivered nothing (2 of 8 loaded
 * NAT lab runs and one CI run; watched and recovered since, 0 of 16 loaded runs; the likely cause
 * is the double open below: bench/connect/channel-race.ts shows that symptom, 8 of 150 pairs,
 * only without the `connected` hold), `setRemoteDescription` failing with "remote candidate without ICE
 * transport" on a busy CPU (worked around since: descriptions go in without their candidates,
 * which follow one by one and are retried), and relayed dials that
 * wait for a 1 s DTLS retransmission, and on one CPU core about one dial in eight whose DTLS
 * refuses the peer's certificate because the offerer checks it before storing the answer
 * (upstream 93f4373a, unreleased; the dial retries since, client/endpoint.ts), and a channel made
 * right at `connected` whose DCEP open libdatachannel sent twice, so the peer closed it and a
 * relayed NAT lab link carried nothing (held off since: `connected` waits for libdatachannel's own
 * open pass, client/webrtc/node-datachannel.ts `passDone`). werift stays the default until those have a record as clean
 * as werift's. (Relay-only links and UDP-blocked relays run on werift under either choice,
 * `withNativeFallback`.)
 * @example
 * chooseBackend('auto', true); // 'werift'
 */
export function chooseBackend(choice: BackendChoice, nativeAvailable: boolean): BackendName {
  if (choice === 'auto') return 'werift';
  if (choice === 'node-datachannel' && !nativeAvailable) throw new BackendChoiceError('backend node-datachannel was asked for but is not installed (optional dependency)');
  return choice;
}

/** Why a link that would run on node-datachannel is built on werift instead. */
export type NativeFallbackReason = 'relay-only' | 'relay-over-tcp-only';

/**
 * The per-link rule of the node-datachannel choice: werift carries the links libjuice cannot
 * carry as asked. `relay-only`: libjuice cannot keep a link relay-only (it checks peer-reflexive
 * addresses from its host socket, client/webrtc/node-datachannel.ts). `relay-over-tcp-only`: the
 * relay answered over TCP or TLS first (`firstRelayTransport`, from the Happy Eyeballs probe), so
 * UDP to it is blocked or slower, and libjuice relays over UDP only. `null`: node-datachannel.
 * @example
 * nativeFallbackReason({ iceServers, iceTransportPolicy: 'relay' }, 'udp'); // 'relay-only'
 */
export function nativeFallbackReason(opts: PeerOptions, firstRelayTransport: 'udp' | 'tcp' | 'tls' | null): NativeFallbackReason | null {
  if (opts.iceTransportPolicy === 'relay') return 'relay-only';
  if (firstRelayTransport === 'tcp' || firstRelayTransport === 'tls') return 'relay-over-tcp-only';
  return null;
}

/**
 * A factory that builds each link on `native` unless `nativeFallbackReason` sends it to
 * `fallback`. `firstRelayTransport` is asked only for links that are not relay-only; it returns
 * the relay transport that answered first, or null (no TCP/TLS relay offered, none answered).
 * `onFallback` hears which links went to the fallback and why (diagnostics, tests).
 * @example
 * const factory = withNativeFallback(createNodeDatachannelBackend, createWeriftBackend, probe);
 */
export function withNativeFallback(
  native: BackendFactory,
  fallback: BackendFactory,
  firstRelayTransport: (opts: PeerOptions) => Promise<'udp' | 'tcp' | 'tls' | null>,
  onFallback?: (reason: NativeFallbackReason) => void,
): BackendFactory {
  return async (opts) => {
    const reason = nativeFallbackReason(opts, opts.iceTransportPolicy === 'relay' ? null : await firstRelayTransport(opts));
    if (reason === null) return native(opts);
    onFallback?.(reason);
    return fallback(opts);
  };
}

/** A data channel's init dictionary (W3C webrtc-pc RTCDataChannelInit), as both backends take it. */
export interface DataChannelInit {
  readonly ordered: boolean;
  readonly maxRetransmits?: number;
  readonly negotiated?: boolean;
  readonly id?: number;
}

/**
 * Maps our channel options to `RTCDataChannelInit`: ordered unless said otherwise; a
 * `negotiatedId` means both sides create the channel with that stream id (RFC 8832 §6 is skipped).
 * @example
 * pc.createDataChannel('stdio', dataChannelInit({ ordered: true }));
 */
export function dataChannelInit(opts?: ChannelOptions): DataChannelInit {
  return {
    ordered: opts?.ordered ?? true,
    ...(opts?.maxRetransmits !== undefined ? { maxRetransmits: opts.maxRetransmits } : {}),
    ...(opts?.negotiatedId !== undefined ? { negotiated: true, id: opts.negotiatedId } : {}),
  };
}

/** Normalises a fingerprint to upper-case hex pairs joined by ':' (RFC 8122 §5 form). */
export function normaliseFingerprint(v: string): string {
  const hex = v.replace(/[^0-9a-fA-F]/g, '').toUpperCase();
  return (hex.match(/.{2}/g) ?? []).join(':');
}

/**
 * The `sha-256` fingerprints in an SDP (session and media level), normalised.
 * RFC 8122 §5: `a=fingerprint:<hash-func> <fingerprint>`. Bounded: at most 8 are read.
 */
export function sdpFingerprints(sdp: string): string[] {
  const out: string[] = [];
  const re = /^a=fingerprint:(\S+) ([0-9A-Fa-f:]{2,200})\s*$/gm;
  let m: RegExpExecArray | null;
  while ((m = re.exec(sdp)) !== null && out.length < 8) {
    if (m[1]!.toLowerCase() === 'sha-256') {
      const fp = normaliseFingerprint(m[2]!);
      if (!out.includes(fp)) out.push(fp);
    }
  }
  return out;
}

/** Parses the type/address/port/protocol of an `a=candidate` line (RFC 8839 §5.1); null if malformed. */
export function parseCandidate(line: string): CandidateInfo | null {
  const m = /^(?:a=)?candidate:\S+ \d+ (udp|tcp) \d+ (\S+) (\d{1,5}) typ (host|srflx|prflx|relay)/i.exec(line);
  if (!m) return null;
  return { protocol: m[1]!.toLowerCase() as 'udp' | 'tcp', address: m[2]!, port: Number(m[3]), type: m[4]!.toLowerCase() as CandidateType };
}
