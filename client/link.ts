/**
 * `Link`: the driver of one `Session` (client/session.ts). It owns the room socket, the WebRTC
 * backend, the timers and the liveness probe, carries out the session's actions, and turns its
 * outcome into the public API: `opened()`, channels, `path`, `stats()`, `close()`.
 */
import { MAX_BATCH_ITEMS, parseSignalData, type IceServer, type Role, type RoomServerMessage, type SignalData, type SignalItem } from '../protocol/messages.js';
import { encodeResumeFrame, isResumeFrame, parseResumeFrame } from '../protocol/resume.js';
import { Channel, type ChannelInit } from './channel.js';
import { Emitter } from './emitter.js';
import { PathClassifier, type LinkPath } from './path.js';
import { LinkError } from './errors.js';
import { checkPresentedFingerprint, signProof, verifyPeer, type DeviceIdentity, type Trust } from './identity.js';
import type { KeepaliveOptions } from './keepalive.js';
import { RoomLease } from './room-lease.js';
import { Session, type SessionAction, type SessionEvent, type SessionOptions, type TimerName } from './session.js';
import { RoomSocket, type TokenSource, type WebSocketFactory } from './signaling.js';
import type { BackendFactory, CandidateInit, DtlsCertificate, IceServerConfig, PeerBackend, RawChannel, SelectedPair, TransportState } from './webrtc/backend.js';

/** How often the liveness probe pings over the control channel when the link is idle. */
export const LIVENESS_INTERVAL_MS = 1_000;
/** No byte received for this long means the path is gone (werift's own consent check takes 30 s). */
export const LIVENESS_TIMEOUT_MS = 4_000;
/** Stream id of the pre-negotiated control channel; user channels get ids from the stack. */
const CONTROL_CHANNEL_ID = 0;
const CONTROL_LABEL = 'homelink-control';
/** Channels the peer may open before we verified it; they are held, not handed out. */
const MAX_HELD_CHANNELS = 64;
/**
 * Closing waits at most this long for the bye on the control channel to leave before the peer
 * connection closes (DTLS and SCTP shut down with it, and would drop a message still queued).
 */
export const CONTROL_BYE_FLUSH_MS = 250;
/** A control-channel frame longer than this is not a bye (a bye with the longest reason is < 300 bytes). */
const MAX_CONTROL_FRAME = 1024;
/** The initiator's first frame on a probe's control channel: it now runs on the probe (client/session.ts, "Direct probe"). */
const SWITCH_FRAME = 'switch';
/**
 * After switching to a probe the initiator keeps the relayed connection this long (detached, it
 * carries nothing) so the responder, which switches when the switch frame arrives, does not see
 * it die first and take that for a lost path. A few round trips of a slow link.
 */
export const PROBE_LINGER_MS = 1_000;
/** Control frames a probe's responder keeps until it switched (the initiator's resume frames, one per channel). */
const MAX_PROBE_FRAMES = 256;

/** A probe connection being built beside the current one (client/session.ts, "Direct probe"). */
interface Probe {
  readonly backend: PeerBackend;
  readonly control: RawChannel;
  /** Its description went to the peer; local candidates wait for that. */
  described: boolean;
  readonly early: (CandidateInit | null)[];
  connected: boolean;
  /** DTLS presented the certificate the peer's proof signed. */
  verified: boolean;
  /** Responder: the initiator switched (its switch frame arrived). */
  switchAsked: boolean;
  /** Responder: control frames after the switch frame, replayed once switched. */
  readonly frames: string[];
}

/** The servers a probe may use: STUN only (no TURN, so every pair it finds is direct). */
function stunOnly(servers: readonly IceServer[]): IceServerConfig[] {
  return servers.flatMap((s) => {
    const urls = s.urls.filter((u) => u.startsWith('stun:'));
    return urls.length > 0 ? [{ urls }] : [];
  });
}

export type { LinkPath };

export interface LinkStats {
  readonly bytesSent: number;
  readonly bytesReceived: number;
  readonly rttMs?: number;
  readonly path: LinkPath | null;
  /** ICE restarts (and connection rebuilds, on a stack without ICE restart) done since the link opened. */
  readonly restarts: number;
  /** Of those, rebuilds of the peer connection. */
  readonly rebuilds: number;
  /** Times the link moved from a relayed connection onto a direct probe connection (client/session.ts, "Direct probe"). */
  readonly probeSwitches: number;
  /** Server frames that failed to parse (a hostile or buggy signaling service). */
  readonly badFrames: number;
  /** TURN credentials renewed through the room since the link started. */
  readonly credentialRenewals: number;
}

export interface LinkEvents {
  /** A channel the peer opened (only after the link is verified). */
  channel: [ch: Channel];
  /**
   * The selected path changed (first selection, ICE restart, relay to direct), or a candidate the
   * peer signaled late showed the selected pair to be relayed after all.
   */
  path: [p: LinkPath];
  /** Connectivity was lost; an ICE restart is under way. Channels stay open. */
  interrupted: [];
  /** Connectivity came back after an interruption. */
  resumed: [];
  close: [reason: string];
}

/** @internal Everything a link needs from its endpoint. */
export interface LinkInit {
  readonly signalingUrl: string;
  readonly token: TokenSource;
  readonly webSocket: WebSocketFactory;
  readonly backend: BackendFactory;
  readonly identity: DeviceIdentity;
  readonly trust: Trust;
  readonly sessionId: string;
  /** The session's room ticket from `session`, when the service issued one: every room (re)join presents it. */
  readonly ticket?: string;
  readonly role: Role;
  readonly peer: string;
  /** ICE servers from the presence `session` message: the backend is built before the room is joined. */
  readonly iceServers?: readonly import('../protocol/messages.js').IceServer[];
  readonly forceRelay?: boolean;
  readonly hostAddresses?: readonly string[];
  readonly turnTlsOptions?: { readonly ca?: string | Uint8Array; readonly rejectUnauthorized?: boolean; readonly servername?: string };
  readonly session?: Partial<SessionOptions>;
  readonly trace?: TraceFn;
  /** Keepalive of the room socket (see `EndpointOptions.keepalive`). */
  readonly keepalive?: KeepaliveOptions;
  /**
   * The session said `batch` (both sides read signal batches): signals sent within this many ms
   * go in one room frame (see `SignalOutbox`). Absent or 0: each signal alone.
   */
  readonly batchMs?: number;
}

/** Diagnostics hook: called with a phase name at each session step (benchmarks, debugging). Never given secrets. */
export type TraceFn = (phase: string, sessionId: string) => void;

/**
 * An encrypted, identity-verified link to one peer. Get one from `ep.dial()` or `req.accept()`.
 *
 * @example
 * ```ts
 * const link = await ep.dial('hub-1');
 * console.log(link.peer, link.path?.kind); // 'hub-1' 'direct'
 * const ch = await link.channel('control');
 * await ch.send('hello');
 * link.on('channel', (c) => c.on('message', console.log));
 * link.close();
 * ```
 */
export class Link extends Emitter<LinkEvents> {
  /** The verified endpoint id of the peer. */
  readonly peer: string;
  readonly sessionId: string;
  private readonly session: Session;
  private readonly room: RoomSocket;
  private backend: PeerBackend | null = null;
  /** The peer said it keeps early DTLS records (its identity's `earlyDtls`): told to every connection we build. */
  private peerEarlyDtls = false;
  private control: RawChannel | null = null;
  private readonly timers = new Map<TimerName, ReturnType<typeof setTimeout>>();
  private liveness: ReturnType<typeof setInterval> | null = null;
  private lastBytes = -1;
  private lastProgress = 0;
  private alive = true;
  private held: Channel[] = [];
  private currentPath: LinkPath | null = null;
  /** The selected pair as the backend last reported it (the remote may be peer-reflexive). */
  private currentPair: SelectedPair | null = null;
  private readonly paths = new PathClassifier();
  private restarts = 0;
  /**
   * An ICE restart (ours or the peer's offer) cleared the selected pair and none was read since.
   * The next pair read is the restart's result even when it is the pair from before (a network
   * change that left the old address working restarts onto the same pair): the session must hear
   * of it, or it keeps restarting a working link until NoPath.
   */
  private awaitingNomination = false;
  private renewals = 0;
  private state: 'connecting' | 'open' | 'closed' = 'connecting';
  private readonly openWaiters: Array<{ resolve: () => void; reject: (e: LinkError) => void }> = [];
  private failure: LinkError | null = null;
  private chain: Promise<void> = Promise.resolve();
  /** Settles once the closed link released its sockets, timers and TURN allocations. */
  private released: Promise<void> | null = null;
  /** Renews the room before its deadline, so an old link can still restart ICE (client/room-lease.ts). */
  private readonly lease = new RoomLease();
  private leaseTimer: ReturnType<typeof setTimeout> | null = null;
  private roomRenewals = 0;
  /** Every open application channel, so a rebuild can move it to the new connection. */
  private readonly channels = new Set<Channel>();
  /** The link rebuilds instead of restarting ICE (client/session.ts): channels hold and ack. */
  private resumable = false;
  private rebuildCount = 0;
  /** Resume frames are due on the rebuilt connection's control channel once it opens. */
  private resumeDue = false;
  /** The first connection's certificate, given to every rebuilt one (the proof signed its fingerprint). */
  private certificate: DtlsCertificate | null = null;
  private iceServers: readonly IceServer[] = [];
  private policy: 'all' | 'relay' = 'all';
  /** Ack and resume frames that named no channel or a count that cannot be (a buggy or hostile peer). */
  private badResumeFrames = 0;
  /** The probe connection, once built; `probeGen` changes whenever one is dropped or taken over. */
  private probe: Probe | null = null;
  private probeGen = 0;
  private probeChain: Promise<void> = Promise.resolve();
  /** Relayed connections a switch left behind, closed after `PROBE_LINGER_MS` (or with the link). */
  private readonly lingering = new Set<PeerBackend>();
  private probeSwitches = 0;
  /** Signals on their way to the room, coalesced when the session allows batches. */
  private readonly outbox: SignalOutbox;

  /** @internal */
  constructor(private readonly init: LinkInit) {
    super();
    this.peer = init.peer;
    this.sessionId = init.sessionId;
    this.session = new Session({ ...init.session, sessionId: init.sessionId, role: init.role, peer: init.peer, forceRelay: init.forceRelay ?? false });
    this.room = new RoomSocket(init.signalingUrl, init.sessionId, init.ticket, init.token, init.webSocket, init.keepalive);
    this.room.on('message', (m) => this.onRoom(m));
    this.outbox = new SignalOutbox(init.batchMs ?? 0, (data) => void this.room.post({ type: 'signal', data }));
    if (init.iceServers) this.paths.setIceServers(init.iceServers);
  }

  /** @internal Joins the room and runs the session; resolves via `opened()`. */
  start(): void {
    this.apply(this.session.start(Date.now(), this.init.iceServers));
    this.room.connect().catch((e: unknown) => this.feed({ type: 'backend-error', message: e instanceof Error ? e.message : 'room unreachable' }));
  }

  /** Resolves once the link is open and verified; rejects with the typed reason otherwise. */
  opened(): Promise<void> {
    if (this.state === 'open') return Promise.resolve();
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => this.openWaiters.push({ resolve, reject }));
  }

  /** The selected path, once the link is open. */
  get path(): LinkPath | null {
    return this.currentPath;
  }

  get isOpen(): boolean {
    return this.state === 'open';
  }

  /**
   * Opens a data channel. Reliable and ordered by default; `{ ordered: false, maxRetransmits: 0 }`
   * gives fire-and-forget datagrams. Resolves when the channel is open.
   */
  async channel(label: string, opts?: ChannelInit): Promise<Channel> {
    if (this.state !== 'open' || !this.backend) throw new LinkError('Closed', 'link is not open');
    const raw = this.backend.createChannel(label, {
      ...(opts?.ordered !== undefined ? { ordered: opts.ordered } : {}),
      ...(opts?.maxRetransmits !== undefined ? { maxRetransmits: opts.maxRetransmits } : {}),
    });
    const ch = this.adopt(new Channel(raw, opts));
    await ch.opened();
    return ch;
  }

  /** Tracks a channel for rebuilds and, on a resumable link, turns on holding and acks. */
  private adopt(ch: Channel): Channel {
    this.channels.add(ch);
    ch.once('close', () => this.channels.delete(ch));
    if (this.resumable) this.makeResumable(ch);
    return ch;
  }

  private makeResumable(ch: Channel): void {
    ch.enableResume();
    ch.ackOut = (stream, count) => this.sendControl(encodeResumeFrame({ kind: 'ack', stream, count }));
    ch.closeOut = (stream, count) => this.sendControl(encodeResumeFrame({ kind: 'close', stream, count }));
  }

  async stats(): Promise<LinkStats> {
    const s = this.backend ? await this.backend.stats() : { bytesSent: 0, bytesReceived: 0 };
    return { ...s, path: this.currentPath, restarts: this.restarts, rebuilds: this.rebuildCount, probeSwitches: this.probeSwitches, badFrames: this.room.badFrames + this.badResumeFrames, credentialRenewals: this.renewals };
  }

  /**
   * Closes the link: the peer gets a bye (through the room and, when open, the control channel,
   * whichever arrives first) with `reason`, and hears of the close within about one round trip.
   * Resolves once sockets, timers and TURN allocations are released. Idempotent.
   */
  close(reason?: string): Promise<void> {
    this.feed({ type: 'close', ...(reason ? { reason } : {}) });
    return this.released ?? Promise.resolve();
  }

  /** Test and fault hook: drops the room socket as a network failure would (it reconnects). */
  dropSignaling(): void {
    this.room.drop();
  }

  // ---- driver ------------------------------------------------------------------------------

  private onRoom(m: RoomServerMessage): void {
    switch (m.type) {
      case 'joined':
        if (m.peer !== this.peer || m.sessionId !== this.sessionId) {
          this.feed({ type: 'backend-error', message: 'room names another peer or session' });
          return;
        }
        this.extendLease(m.deadline);
        if (m.peerPresent) this.outbox.peerHere();
        else this.outbox.peerAway();
        return this.feed({ type: 'joined', peerPresent: m.peerPresent, iceServers: m.iceServers });
      case 'peer_joined':
        this.outbox.peerHere();
        return this.feed({ type: 'peer-joined' });
      case 'signal':
        return this.feed({ type: 'signal', data: m.data });
      case 'ice_servers':
        this.renewals++;
        return this.feed({ type: 'ice-servers', iceServers: m.iceServers });
      case 'renewed':
        // Either side's renewal moves the room's deadline and re-mints TURN credentials.
        this.roomRenewals++;
        this.extendLease(m.deadline);
        this.renewals++;
        return this.feed({ type: 'ice-servers', iceServers: m.iceServers });
      case 'closed':
        // The room is gone for good (deadline, bye): stop reconnecting to it. An open link lives
        // on without signaling; it can no longer restart ICE or renew TURN credentials.
        this.lease.stop();
        this.armLease();
        setTimeout(() => this.room.close(), 0);
        return this.feed({ type: 'room-closed', reason: m.reason });
      case 'peer_left':
      case 'error':
        return;
    }
  }

  private extendLease(deadline: number): void {
    if (this.state === 'closed') return;
    this.lease.update(deadline, Date.now());
    this.armLease();
  }

  private armLease(): void {
    if (this.leaseTimer) clearTimeout(this.leaseTimer);
    this.leaseTimer = null;
    const at = this.lease.nextAt();
    if (at === null || this.state === 'closed') return;
    this.leaseTimer = setTimeout(() => {
      this.leaseTimer = null;
      if (this.lease.poll(Date.now())) this.room.post({ type: 'renew' });
      this.armLease();
    }, Math.max(0, at - Date.now()));
  }

  /** Times the room's deadline was extended (`renew` answered) since the link started. */
  get roomRenewalCount(): number {
    return this.roomRenewals;
  }

  private feed(ev: SessionEvent): void {
    if (this.init.trace && ev.type !== 'local-candidate' && ev.type !== 'signal' && ev.type !== 'timer') {
      this.init.trace(ev.type === 'transport' ? `transport-${ev.state}` : ev.type === 'local-description' ? `local-${ev.kind}` : ev.type, this.sessionId);
    } else if (this.init.trace && ev.type === 'signal') {
      for (const d of ev.data.kind === 'batch' ? ev.data.items : [ev.data]) if (d.kind !== 'candidate') this.init.trace(`peer-${d.kind}`, this.sessionId);
    }
    this.apply(this.session.handle(ev, Date.now()));
  }

  private apply(actions: SessionAction[]): void {
    for (const a of actions) this.act(a);
  }

  /** Backend calls run one at a time, in the order the session issued them. */
  private serial(fn: (b: PeerBackend) => Promise<void>): void {
    this.chain = this.chain.then(async () => {
      if (!this.backend || this.state === 'closed') return;
      try {
        await fn(this.backend);
      } catch (e) {
        this.feed({ type: 'backend-error', message: e instanceof Error ? e.message : 'backend error' });
      }
    });
  }

  private act(a: SessionAction): void {
    switch (a.type) {
      case 'create-backend':
        this.paths.setIceServers(a.iceServers);
        this.iceServers = a.iceServers;
        this.policy = a.policy;
        this.chain = this.chain.then(() => this.buildBackend(false));
        return;
      case 'rebuild': {
        // Break, then make: the old connection carries nothing any more (its path is lost, or
        // the peer already dropped it), and the resume protocol covers what was in flight.
        this.restarts++;
        this.rebuildCount++;
        const old = this.detachBackend();
        this.resumeDue = false;
        for (const ch of this.channels) ch.suspend();
        this.chain = this.chain.then(async () => {
          // A rebuild that began while the previous one was still building drops that one too.
          const building = this.detachBackend();
          await Promise.all([old, building].map((b) => b?.close().catch(() => undefined)));
          await this.buildBackend(true);
        });
        return;
      }
      case 'peer-early-dtls':
        this.peerEarlyDtls = true;
        this.backend?.peerHoldsEarlyDtls?.();
        this.probe?.backend.peerHoldsEarlyDtls?.();
        return;
      case 'rebuilt':
        this.resumeDue = true;
        this.awaitingNomination = true;
        this.sendResume();
        return;
      case 'create-offer':
        if (a.restart) this.restarts++;
        return this.serial(async (b) => {
          // A direct-only attempt skips pairs this link would call relayed (client/path.ts).
          const avoidRelay = (p: SelectedPair): boolean => this.paths.classify(p).kind === 'relay';
          const sdp = await b.createOffer(a.restart ? { iceRestart: true, ...(a.directOnly ? { avoidRelay } : {}) } : undefined);
          if (a.restart) this.awaitingNomination = true;
          this.feed({ type: 'local-description', kind: 'offer', sdp, fingerprint: await b.localFingerprint(), restart: a.restart, ...(a.rebuild ? { rebuild: true } : {}) });
        });
      case 'accept-offer':
        return this.serial(async (b) => {
          const sdp = await b.acceptOffer(a.sdp);
          this.awaitingNomination = true;
          this.feed({ type: 'local-description', kind: 'answer', sdp, fingerprint: await b.localFingerprint(), restart: false });
        });
      case 'accept-answer':
        return this.serial(async (b) => {
          await b.acceptAnswer(a.sdp);
          this.feed({ type: 'answer-applied' });
        });
      case 'add-candidate':
        if (a.candidate) this.paths.noteRemote(a.candidate.candidate);
        return this.serial(async (b) => {
          // A bad candidate from the peer is its problem, not a reason to drop the link.
          await b.addCandidate(a.candidate).catch(() => undefined);
          // A candidate signaled after checks began may show a peer-reflexive remote to be relayed.
          if (this.currentPair?.remote.type === 'prflx') this.readPath(await b.selectedPair());
        });
      case 'send':
        this.outbox.send(a.data);
        if (a.data.kind === 'bye') this.sendControlBye(a.data);
        return;
      case 'sign-proof':
        void signProof(this.init.identity, { sid: this.sessionId, role: this.init.role, fp: [a.fp[0], a.fp[1]] }).then(
          (proof) => this.feed({ type: 'proof-signed', cert: this.init.identity.certificate, proof }),
          () => this.feed({ type: 'backend-error', message: 'could not sign the identity proof' }),
        );
        return;
      case 'verify-peer':
        void verifyPeer({
          cert: a.cert,
          proof: a.proof,
          trust: this.init.trust,
          expectedSub: this.peer,
          sessionId: this.sessionId,
          peerRole: this.init.role === 'initiator' ? 'responder' : 'initiator',
          localFingerprint: a.localFingerprint,
          remoteSdpFingerprint: a.remoteSdpFingerprint,
        }).then((verdict) => this.feed({ type: 'peer-verdict', verdict }));
        return;
      case 'check-presented':
        return this.serial(async (b) => {
          const presented = await b.remoteCertificateFingerprint();
          this.feed({ type: 'presented', verdict: checkPresentedFingerprint(a.signed, presented) });
        });
      case 'set-ice-servers':
        this.paths.setIceServers(a.iceServers);
        this.iceServers = a.iceServers;
        this.backend?.setIceServers(a.iceServers, this.init.forceRelay ? 'relay' : 'all');
        return;
      case 'request-ice-servers':
        this.room.post({ type: 'ice_servers' });
        return;
      case 'reconnect-signaling':
        this.room.reconnectNow();
        return;
      case 'set-timer': {
        clearTimeout(this.timers.get(a.name));
        const name = a.name;
        this.timers.set(name, setTimeout(() => {
          this.timers.delete(name);
          this.feed({ type: 'timer', name });
        }, Math.max(0, a.at - Date.now())));
        return;
      }
      case 'clear-timer':
        clearTimeout(this.timers.get(a.name));
        this.timers.delete(a.name);
        return;
      case 'read-path':
        return this.serial(async (b) => this.readPath(await b.selectedPair()));
      case 'probe-start':
        return this.onProbe(async (gen) => {
          const p = await this.buildProbe(gen);
          if (p) this.describeProbe(p, 'offer', await p.backend.createOffer());
        });
      case 'probe-accept':
        this.dropProbe();
        return this.onProbe(async (gen) => {
          const p = await this.buildProbe(gen);
          if (p) this.describeProbe(p, 'answer', await p.backend.acceptOffer(a.sdp));
        });
      case 'probe-answer':
        return this.onProbe(async () => void (await this.probe?.backend.acceptAnswer(a.sdp)));
      case 'probe-add-candidate':
        return this.onProbe(async () => void (await this.probe?.backend.addCandidate(a.candidate).catch(() => undefined)));
      case 'probe-stop':
        this.dropProbe();
        return;
      case 'opened':
        if (a.resumable) {
          this.resumable = true;
          for (const ch of this.channels) this.makeResumable(ch);
        }
        // The path is read before callers hear of the open link, so `link.path` is set for them.
        return this.serial(async (b) => {
          this.readPath(await b.selectedPair());
          this.state = 'open';
          this.init.trace?.('open', this.sessionId);
          this.startLiveness();
          for (const w of this.openWaiters.splice(0)) w.resolve();
          this.flushHeld();
        });
      case 'path-lost':
        this.emit('interrupted');
        return;
      case 'path-restored':
        this.emit('resumed');
        return;
      case 'failed':
        this.failure = new LinkError(a.code, a.message);
        for (const w of this.openWaiters.splice(0)) w.reject(this.failure);
        this.teardown(`${a.code}: ${a.message}`);
        return;
      case 'closed':
        this.teardown(a.reason);
        return;
    }
  }

  /**
   * Builds a peer connection and wires it to the session. `rebuilt`: it replaces a dropped one;
   * it gets the first connection's certificate and the link's channels, negotiated on the stream
   * ids they had (both sides do the same, so they meet on those ids).
   */
  private async buildBackend(rebuilt: boolean): Promise<void> {
    try {
      const b = await this.init.backend({
        iceServers: this.iceServers,
        iceTransportPolicy: this.policy,
        ...(this.init.hostAddresses ? { hostAddresses: this.init.hostAddresses } : {}),
        ...(this.init.turnTlsOptions ? { turnTlsOptions: this.init.turnTlsOptions } : {}),
        ...(rebuilt && this.certificate ? { certificate: this.certificate } : {}),
      });
      if (this.state === 'closed') return await b.close();
      this.backend = b;
      if (this.peerEarlyDtls) b.peerHoldsEarlyDtls?.();
      if (!rebuilt) this.certificate = b.certificate();
      b.onCandidate = (candidate) => this.feed({ type: 'local-candidate', candidate });
      b.onState = (state) => this.feed({ type: 'transport', state });
      b.onChannel = (ch) => this.onRemoteChannel(ch);
      b.onNetworkChange = () => this.feed({ type: 'network-change' });
      b.onSelectedPairChange = () => this.pairChanged();
      const control = b.createChannel(CONTROL_LABEL, { negotiatedId: CONTROL_CHANNEL_ID });
      this.control = control;
      control.onMessage = (m) => this.onControl(m);
      control.onOpen = () => this.sendResume();
      if (rebuilt) this.attachChannels(b);
      this.feed({ type: 'backend-ready', canRestartIce: b.canRestartIce, keepsCertificate: this.certificate !== null, holdsEarlyDtls: b.holdsEarlyDtls === true });
    } catch (e) {
      this.feed({ type: 'backend-error', message: e instanceof Error ? e.message : 'backend failed' });
    }
  }

  /** The link's channels on connection `b`, negotiated on the stream ids they had (the peer does the same). */
  private attachChannels(b: PeerBackend): void {
    for (const ch of this.channels) {
      const id = ch.id;
      if (id === null || ch.state === 'closed') continue;
      ch.attach(
        b.createChannel(ch.label, {
          ordered: ch.ordered,
          ...(ch.maxRetransmits !== null ? { maxRetransmits: ch.maxRetransmits } : {}),
          negotiatedId: id,
        }),
      );
    }
  }

  /** Probe steps run one at a time; one that throws ends the probe (the current connection carries on). */
  private onProbe(fn: (gen: number) => Promise<void>): void {
    const gen = this.probeGen;
    this.probeChain = this.probeChain.then(async () => {
      if (this.state === 'closed' || gen !== this.probeGen) return;
      try {
        await fn(gen);
      } catch {
        if (gen === this.probeGen) this.feed({ type: 'probe-failed' });
      }
    });
  }

  /** Builds the probe connection: the link's certificate, STUN only, a control channel, no application channel yet. */
  private async buildProbe(gen: number): Promise<Probe | null> {
    const b = await this.init.backend({
      iceServers: stunOnly(this.iceServers),
      iceTransportPolicy: 'all',
      ...(this.init.hostAddresses ? { hostAddresses: this.init.hostAddresses } : {}),
      ...(this.certificate ? { certificate: this.certificate } : {}),
    });
    if (this.state === 'closed' || gen !== this.probeGen) {
      await b.close().catch(() => undefined);
      return null;
    }
    if (this.peerEarlyDtls) b.peerHoldsEarlyDtls?.();
    const control = b.createChannel(CONTROL_LABEL, { negotiatedId: CONTROL_CHANNEL_ID });
    const p: Probe = { backend: b, control, described: false, early: [], connected: false, verified: false, switchAsked: false, frames: [] };
    this.probe = p;
    b.onCandidate = (c) => {
      if (this.probe !== p) return;
      if (p.described) this.feed({ type: 'probe-candidate', candidate: c });
      else p.early.push(c);
    };
    b.onState = (st) => this.onProbeState(p, st);
    // The peer opens nothing on a probe before the switch; application channels come negotiated.
    b.onChannel = (ch) => ch.close();
    control.onOpen = () => void this.maybeSwitch(p);
    control.onMessage = (m) => this.onProbeControl(p, m);
    return p;
  }

  private describeProbe(p: Probe, kind: 'offer' | 'answer', sdp: string): void {
    if (this.probe !== p) return;
    void p.backend.localFingerprint().then((fingerprint) => {
      if (this.probe !== p) return;
      this.feed({ type: 'probe-description', kind, sdp, fingerprint });
      p.described = true;
      for (const c of p.early.splice(0)) this.feed({ type: 'probe-candidate', candidate: c });
    });
  }

  private onProbeState(p: Probe, st: TransportState): void {
    if (this.probe !== p) return;
    if (st === 'connected' && !p.connected) {
      p.connected = true;
      const signed = this.session.signedPeerFingerprint;
      void p.backend.remoteCertificateFingerprint().then(
        (presented) => {
          if (this.probe !== p) return;
          const verdict = signed === null ? null : checkPresentedFingerprint(signed, presented);
          // A probe presenting another certificate is a MITM on the direct path: the link ends.
          if (signed === null || verdict) return this.feed({ type: 'presented', verdict: verdict ?? { ok: false, code: 'IdentityMismatch', message: 'no signed fingerprint' } });
          p.verified = true;
          void this.maybeSwitch(p);
        },
        () => this.probe === p && this.feed({ type: 'probe-failed' }),
      );
    } else if (st === 'failed' || st === 'closed' || st === 'disconnected') {
      this.feed({ type: 'probe-failed' });
    }
  }

  private onProbeControl(p: Probe, m: Uint8Array | string): void {
    if (this.probe !== p || typeof m !== 'string') return;
    if (m === SWITCH_FRAME && this.init.role === 'responder') {
      p.switchAsked = true;
      void this.maybeSwitch(p);
    } else if (p.switchAsked && p.frames.length < MAX_PROBE_FRAMES && m.length <= MAX_CONTROL_FRAME) p.frames.push(m);
  }

  /**
   * Moves the link onto a connected, verified probe. The initiator decides (its probe must be
   * direct) and says so first on the probe's control channel; the responder follows that frame.
   */
  private async maybeSwitch(p: Probe): Promise<void> {
    if (this.probe !== p || !p.connected || !p.verified || p.control.state !== 'open') return;
    if (this.init.role === 'responder') {
      if (p.switchAsked) this.switchTo(p);
      return;
    }
    const pair = await p.backend.selectedPair().catch(() => null);
    if (this.probe !== p) return;
    if (!pair || this.paths.classify(pair).kind === 'relay') return this.feed({ type: 'probe-failed' });
    try {
      p.control.send(SWITCH_FRAME);
    } catch {
      return this.feed({ type: 'probe-failed' });
    }
    this.switchTo(p);
  }

  private switchTo(p: Probe): void {
    this.probe = null;
    this.probeGen++;
    this.probeSwitches++;
    const old = this.detachBackend();
    for (const ch of this.channels) ch.suspend();
    const b = p.backend;
    this.backend = b;
    this.control = p.control;
    b.onCandidate = (candidate) => this.feed({ type: 'local-candidate', candidate });
    b.onState = (state) => this.feed({ type: 'transport', state });
    b.onChannel = (ch) => this.onRemoteChannel(ch);
    b.onNetworkChange = () => this.feed({ type: 'network-change' });
    b.onSelectedPairChange = () => this.pairChanged();
    p.control.onMessage = (m) => this.onControl(m);
    p.control.onOpen = () => this.sendResume();
    this.attachChannels(b);
    this.awaitingNomination = true;
    this.resumeDue = true;
    this.sendResume();
    for (const f of p.frames.splice(0)) this.onControl(f);
    this.feed({ type: 'probe-switched' });
    if (!old) return;
    // The initiator's old connection goes a moment later (see PROBE_LINGER_MS); the responder's at once.
    this.lingering.add(old);
    const t = setTimeout(() => {
      if (this.lingering.delete(old)) void old.close().catch(() => undefined);
    }, this.init.role === 'initiator' ? PROBE_LINGER_MS : 0);
    t.unref?.();
  }

  /** Drops the probe connection, if any (stopped, or superseded by another probe or a rebuild); `keep`: the caller closes it. */
  private dropProbe(keep = false): void {
    this.probeGen++;
    const p = this.probe;
    this.probe = null;
    if (!p) return;
    p.backend.onCandidate = p.backend.onState = p.backend.onChannel = null;
    p.control.onMessage = p.control.onOpen = null;
    if (!keep) void p.backend.close().catch(() => undefined);
  }

  /** Takes the current backend out of the link: its events no longer reach the session. */
  private detachBackend(): PeerBackend | null {
    const b = this.backend;
    const control = this.control;
    this.backend = null;
    this.control = null;
    if (b) b.onCandidate = b.onState = b.onChannel = b.onNetworkChange = b.onSelectedPairChange = null;
    if (control) control.onMessage = control.onOpen = null;
    return b;
  }

  /** After a rebuild: tells the peer how many messages arrived on each channel (protocol/resume.ts). */
  private sendResume(): void {
    if (!this.resumeDue || this.control?.state !== 'open') return;
    this.resumeDue = false;
    for (const ch of this.channels) {
      const id = ch.id;
      if (id !== null && ch.state !== 'closed') this.sendControl(encodeResumeFrame({ kind: 'resume', stream: id, count: ch.receivedCount }));
    }
  }

  private sendControl(frame: string): void {
    if (this.control?.state !== 'open') return;
    try {
      this.control.send(frame);
    } catch {
      // the transport is going; a rebuild resends what the acks did not cover
    }
  }

  private onResumeFrame(m: string): void {
    const f = parseResumeFrame(m);
    if (!f.ok) {
      this.badResumeFrames++;
      return;
    }
    let ch: Channel | undefined;
    for (const c of this.channels) if (c.id === f.value.stream) ch = c;
    if (ch === undefined) {
      // A close frame can overtake nothing we know of once the channel is gone; anything else names a stream we never had.
      if (f.value.kind !== 'close') this.badResumeFrames++;
      return;
    }
    const fine = f.value.kind === 'ack' ? ch.acked(f.value.count) : f.value.kind === 'resume' ? ch.resume(f.value.count) : (ch.peerClosed(), true);
    if (!fine) this.badResumeFrames++;
  }

  /** The backend's selected pair may be another one: an open link re-reads its path (before open, `opened` reads it). */
  private pairChanged(): void {
    if (this.state === 'open') this.apply([{ type: 'read-path' }]);
  }

  private readPath(p: SelectedPair | null): void {
    if (!p || this.state === 'closed') return;
    const path = this.paths.classify(p);
    const prev = this.currentPath;
    const changed = !prev || prev.local !== path.local || prev.remote !== path.remote || prev.kind !== path.kind;
    const renominated = this.awaitingNomination;
    this.awaitingNomination = false;
    this.currentPair = p;
    this.currentPath = path;
    if (changed) this.emit('path', path);
    if (changed || renominated) this.feed({ type: 'path', kind: path.kind });
  }

  /**
   * Channels the peer opened are held until the link is verified and someone listens for them:
   * a `channel` listener added right after `dial()` / `accept()` resolve still gets them.
   */
  private onRemoteChannel(ch: RawChannel): void {
    // Wrapped at once, so its first messages are kept until the application reads them.
    const c = this.adopt(new Channel(ch));
    if (this.state === 'open' && this.held.length === 0 && this.listenerCount('channel') > 0) return this.emit('channel', c);
    if (this.held.length < MAX_HELD_CHANNELS) this.held.push(c);
    else c.close();
  }

  private flushHeld(): void {
    if (this.state !== 'open' || this.listenerCount('channel') === 0) return;
    for (const ch of this.held.splice(0)) this.emit('channel', ch);
  }

  override on<K extends keyof LinkEvents>(event: K, fn: (...args: LinkEvents[K]) => void): () => void {
    const off = super.on(event, fn);
    if (event === 'channel' && this.held.length > 0) queueMicrotask(() => this.flushHeld());
    return off;
  }

  /** Bytes received are the heartbeat: idle links ping over the control channel to keep some flowing. */
  private startLiveness(): void {
    this.lastProgress = Date.now();
    this.liveness = setInterval(() => {
      const b = this.backend;
      if (!b) return;
      if (this.control?.state === 'open') {
        try {
          this.control.send('p');
        } catch {
          // the transport is down; the probe below notices
        }
      }
      void b.stats().then((s) => {
        const now = Date.now();
        if (s.bytesReceived !== this.lastBytes) {
          this.lastBytes = s.bytesReceived;
          this.lastProgress = now;
          if (!this.alive) {
            this.alive = true;
            this.feed({ type: 'liveness', alive: true });
          }
          // Bytes arrive: the pair they arrive on may be new (an ICE restart selected it).
          this.apply([{ type: 'read-path' }]);
          // Acks of messages that arrived since the last one (a sender that went quiet keeps copies).
          if (this.resumable) for (const ch of this.channels) ch.flushAck();
        } else if (this.alive && now - this.lastProgress > LIVENESS_TIMEOUT_MS) {
          this.alive = false;
          this.feed({ type: 'liveness', alive: false });
        }
      });
    }, LIVENESS_INTERVAL_MS);
  }

  /**
   * The control channel carries the liveness pings (`p`, ignored here) and a bye, as the
   * `SignalData` JSON the room carries: the peer hears of a close over the data path even when
   * signaling is slow or down. Anything else is ignored.
   */
  private onControl(m: Uint8Array | string): void {
    if (typeof m !== 'string' || m.length > MAX_CONTROL_FRAME) return;
    if (isResumeFrame(m)) return this.resumable ? this.onResumeFrame(m) : undefined;
    if (m[0] !== '{') return;
    let v: unknown;
    try {
      v = JSON.parse(m);
    } catch {
      return;
    }
    const d = parseSignalData(v);
    if (d.ok && d.value.kind === 'bye') this.feed({ type: 'signal', data: d.value });
  }

  private sendControlBye(bye: SignalData): void {
    if (this.control?.state !== 'open') return;
    try {
      this.control.send(JSON.stringify(bye));
    } catch {
      // the transport is gone; the room carries the bye
    }
  }

  /**
   * Order of release: the room socket closes after the bye it already carries (its close frame
   * follows it on the same connection); the peer connection closes once pending backend calls
   * settled and the control-channel bye left; closing the werift backend releases its TURN
   * allocations (client/webrtc/werift.ts).
   */
  private teardown(reason: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.liveness) clearInterval(this.liveness);
    if (this.leaseTimer) clearTimeout(this.leaseTimer);
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    for (const ch of this.held.splice(0)) ch.close();
    // Channels end with the link (on a resumable link a closing stream alone would wait for a rebuild).
    for (const ch of [...this.channels]) ch.end();
    // A probe being built and a relayed connection a switch left behind go now, with the link.
    const probe = this.probe?.backend ?? null;
    this.dropProbe(true);
    const others = [...this.lingering, ...(probe ? [probe] : [])];
    this.lingering.clear();
    // Nothing held back is lost: it leaves ahead of the room socket's close.
    this.outbox.flush();
    const room = this.room.close();
    const b = this.backend;
    const control = this.control;
    this.backend = null;
    this.released = (async () => {
      await this.chain;
      if (b) {
        await flushed(control, CONTROL_BYE_FLUSH_MS);
        await b.close().catch(() => undefined);
      }
      await Promise.all(others.map((o) => o.close().catch(() => undefined)));
      await room;
    })();
    this.emit('close', reason);
  }
}

/**
 * Coalesces a link's outgoing signals into `batch` frames (protocol/messages.ts `SignalData`):
 * every room frame is a billed WebSocket message and per-frame work on the service, and a setup's
 * signals come in bursts (an SDP and its first candidate within a millisecond or two, the
 * server-reflexive and relayed ones a round trip or two later, each trickled alone). The rules,
 * which bound the delay any signal sees to `windowMs`:
 *
 * - a held signal leaves at most `windowMs` after the first of its group;
 * - a description waits only for its first candidate: the two leave together at once (the
 *   peer can do nothing with a candidate before its description, so this costs no time);
 * - an identity proof leaves at once, with whatever is held (it gates the link's opening);
 * - a `bye` leaves at once, after whatever is held and alone (the room must read it);
 * - a full group (`MAX_BATCH_ITEMS`) leaves at once.
 *
 * A group of one leaves as a plain signal. With `windowMs` 0 every signal leaves alone, as
 * before batches (a session without `batch`, or batching turned off).
 *
 * While the peer is not in the room (`peerAway`: this side joined first, e.g. a dialer that joined
 * early), everything is held, whatever `windowMs`: the room would store it for the peer (storage
 * writes are the service's largest cost per setup), and the peer's join (`peer_joined`) reaches
 * this side as soon as the room could hand it the stored copy. `peerHere` sends what is held,
 * in groups of at most `MAX_BATCH_ITEMS` (each alone when batches are off). A `bye` while the peer
 * is away drops what is held: the session is over before the peer saw any of it.
 */
export class SignalOutbox {
  private held: SignalItem[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  private away = false;

  constructor(
    private readonly windowMs: number,
    private readonly post: (data: SignalData) => void,
  ) {}

  /** The peer is not in the room: hold everything until `peerHere`. */
  peerAway(): void {
    this.away = true;
  }

  /** The peer is in the room: what is held leaves now. */
  peerHere(): void {
    if (!this.away) return;
    this.away = false;
    this.flush();
  }

  send(data: SignalData): void {
    if (data.kind === 'bye') {
      if (this.away) this.held = [];
      this.flush();
      return this.post(data);
    }
    if (this.away) {
      if (data.kind === 'batch') this.held.push(...data.items);
      else this.held.push(data);
      return;
    }
    if (this.windowMs <= 0 || data.kind === 'batch') return this.post(data);
    const follows = this.held.length > 0 && isDescription(this.held[this.held.length - 1]!) && data.kind === 'candidate';
    this.held.push(data);
    if (follows || data.kind === 'identity' || this.held.length >= MAX_BATCH_ITEMS) return this.flush();
    this.timer ??= setTimeout(() => this.flush(), this.windowMs);
  }

  /** Sends what is held now (nothing while the peer is away). */
  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.away || this.held.length === 0) return;
    const items = this.held;
    this.held = [];
    if (this.windowMs <= 0) {
      for (const d of items) this.post(d);
      return;
    }
    for (let i = 0; i < items.length; i += MAX_BATCH_ITEMS) {
      const group = items.slice(i, i + MAX_BATCH_ITEMS);
      this.post(group.length === 1 ? group[0]! : { kind: 'batch', items: group });
    }
  }
}

const isDescription = (d: SignalItem): boolean => d.kind === 'offer' || d.kind === 'answer';

/** Resolves when the channel has nothing left to send (or is not open), or after `maxMs`. */
async function flushed(ch: RawChannel | null, maxMs: number): Promise<void> {
  const until = Date.now() + maxMs;
  while (ch?.state === 'open' && ch.bufferedAmount > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
}
