/**
 * The client side of one session, as a sans-IO state machine: it takes events (room frames,
 * backend results, timers) with the current time and returns actions for the driver
 * (`client/link.ts`) to carry out. It owns every deadline, because werift's ICE never fails.
 *
 * Flow (both sides joined the pair room):
 *   initiator: create-offer -> send offer -> (answer) accept-answer
 *   responder: (offer) accept-offer -> send answer
 *   both:      trickle candidates (remote ones buffered until the remote description is applied),
 *              sign-proof over both fingerprints -> send identity; verify the peer's identity;
 *              once the transport is connected, check the fingerprint DTLS presented -> opened.
 * While open:  a lost path (transport disconnected/failed, or the liveness probe silent) starts an
 *              ICE restart through the room after a short grace, retried with a bound, then NoPath;
 *              a relayed path retries direct every `directRetryMs` (a link that probes: first
 *              after `firstProbeMs`); TURN credentials are renewed
 *              through the room `ice_servers` message before they expire.
 * Direct retry: an ICE restart that checks direct pairs only (`create-offer` with `directOnly`;
 *              the relayed pair keeps carrying data meanwhile). A direct path selected ends it;
 *              no direct path within `directAttemptMs` (or the attempt failing) restarts once
 *              more with the relay allowed. A peer that signals relayed candidates only is forced
 *              onto the relay (its policy): no direct retries then.
 * Network change (local addresses changed): the room socket is reconnected at once (it belonged
 *              to the old address) and the initiator restarts ICE as soon as it is back in the room
 *              (`joined`); a responder's reconnect reaches the initiator as `peer-joined`, which
 *              restarts ICE from its side. No waiting for the liveness probe to hear silence.
 * Rebuild instead of restart: when either side's stack cannot restart ICE (libdatachannel,
 *              `noRestart` in its identity message) and both speak the rebuild protocol
 *              (`resume`), every restart above becomes a rebuild: the driver drops the peer
 *              connection and builds a new one (`rebuild`), the initiator offers it with
 *              `rebuild: true`, and the responder, on that offer, rebuilds too. Each connection
 *              of a link presents the one DTLS certificate the identity proof signed at setup, so
 *              the signed fingerprints stay valid: a rebuild offer or answer whose fingerprint
 *              differs is an IdentityMismatch, and once the new transport is up the certificate
 *              DTLS presented is checked again before the link resumes (`rebuilt`). Channels
 *              carry on across it (protocol/resume.ts, client/channel.ts).
 * Direct probe:  on such a link a direct retry cannot be an ICE restart, and a rebuild would
 *              stop the data. So the initiator builds a second connection beside the current
 *              one (`probe-start`), with the one certificate and no TURN server on either side,
 *              so every pair it can find is direct, and offers it with `probe: true`; its answer
 *              and candidates carry `probe` too. The relayed connection carries the data
 *              meanwhile. Once the probe connects and presented the signed certificate, the link
 *              moves its channels onto it (the initiator first, telling the responder on the
 *              probe's control channel) and drops the relayed one (`probe-switched`); channels
 *              resume as after a rebuild. No connection within `directAttemptMs`: the probe is
 *              dropped (`probe-stop`) and the next retry comes `directRetryMs` later. Both sides
 *              must say they take probes (`probe` in the identity message).
 */
import type { IceServer, Role, SignalData } from '../protocol/messages.js';
import { parseTurnUsername } from '../protocol/turn-credentials.js';
import type { LinkErrorCode } from './errors.js';
import type { PeerVerdict } from './identity.js';
import { parseCandidate, sdpFingerprints, type CandidateInit, type TransportState } from './webrtc/backend.js';

/** Named defaults, with the reason beside each. */
export const SESSION_DEFAULTS = {
  /** From joining the room to an open, verified link: a relayed connect over TCP/TLS takes well under 2 s; 15 s covers slow networks. */
  connectTimeoutMs: 15_000,
  /** A disconnected path may come back by itself (a Wi-Fi hiccup); wait this long before restarting ICE. */
  disconnectGraceMs: 1_500,
  /** One ICE restart attempt gets this long to reconnect before the next one. */
  restartTimeoutMs: 8_000,
  /** Restarts before the link is declared dead (NoPath): about 40 s of trying in total. */
  maxRestarts: 5,
  /** While relayed, try for a direct path this often (a restart costs a few packets and no data). */
  directRetryMs: 60_000,
  /**
   * The first direct retry of a link that looks for direct paths with probes (a backend without
   * ICE restart: node-datachannel) comes this soon after it opened relayed. libjuice, as the
   * controlling agent, keeps the first pair it nominated, and that is the relayed one whenever
   * its direct checks needed a round trip more to open a NAT (NAT lab: full-cone to
   * address-restricted); a probe costs two connections without TURN and disturbs nothing.
   * werift replaces a relayed nomination by a later direct one itself (docs/NATLAB.md), so links
   * that restart ICE keep `directRetryMs`.
   */
  firstProbeMs: 5_000,
  /**
   * A direct-only attempt gets this long to select a direct pair before the relay is allowed again.
   * Checks retransmit for about 8 s (RFC 8445 §14.3 pacing, werift's 4 retries), but two NATs
   * open to each other within the first round trips once both sides send, so 5 s is plenty.
   */
  directAttemptMs: 5_000,
  /** Renew TURN credentials this long before they expire (a restart needs a valid credential). */
  credentialLeadMs: 60_000,
  /** Remote candidates buffered per negotiation before the remote description is applied; bounds a hostile room. */
  maxBufferedCandidates: 256,
} as const;

export type SessionOptions = {
  readonly sessionId: string;
  readonly role: Role;
  /** The endpoint id we expect on the other side. */
  readonly peer: string;
  /** Test hook and privacy option: relay only, no direct retry. */
  readonly forceRelay?: boolean;
} & Partial<{ -readonly [K in keyof typeof SESSION_DEFAULTS]: number }>;

export type TimerName = 'connect' | 'grace' | 'restart' | 'direct-retry' | 'direct-attempt' | 'renew';

export type SessionEvent =
  | { readonly type: 'joined'; readonly peerPresent: boolean; readonly iceServers: readonly IceServer[] }
  | { readonly type: 'peer-joined' }
  | { readonly type: 'signal'; readonly data: SignalData }
  /**
   * `canRestartIce` (default true): the backend restarts ICE in place. `keepsCertificate`
   * (default false): the driver can give a rebuilt connection this one's certificate, so this
   * side can take part in rebuilds.
   */
  | { readonly type: 'backend-ready'; readonly canRestartIce?: boolean; readonly keepsCertificate?: boolean; readonly holdsEarlyDtls?: boolean }
  | { readonly type: 'local-description'; readonly kind: 'offer' | 'answer'; readonly sdp: string; readonly fingerprint: string; readonly restart: boolean; readonly rebuild?: boolean }
  | { readonly type: 'answer-applied' }
  | { readonly type: 'local-candidate'; readonly candidate: CandidateInit | null }
  | { readonly type: 'proof-signed'; readonly cert: string; readonly proof: string }
  | { readonly type: 'peer-verdict'; readonly verdict: PeerVerdict }
  | { readonly type: 'transport'; readonly state: TransportState }
  | { readonly type: 'liveness'; readonly alive: boolean }
  | { readonly type: 'presented'; readonly verdict: PeerVerdict | null }
  | { readonly type: 'path'; readonly kind: 'direct' | 'relay' }
  | { readonly type: 'ice-servers'; readonly iceServers: readonly IceServer[] }
  /** The backend saw the local addresses change (Node backends poll the interfaces). */
  | { readonly type: 'network-change' }
  /** The probe connection made its description (see "Direct probe" in the module header). */
  | { readonly type: 'probe-description'; readonly kind: 'offer' | 'answer'; readonly sdp: string; readonly fingerprint: string }
  | { readonly type: 'probe-candidate'; readonly candidate: CandidateInit | null }
  /** The link now runs on the probe connection; the relayed one is dropped. */
  | { readonly type: 'probe-switched' }
  /** The probe connection failed or broke before the switch. */
  | { readonly type: 'probe-failed' }
  | { readonly type: 'room-closed'; readonly reason: string }
  | { readonly type: 'backend-error'; readonly message: string }
  | { readonly type: 'timer'; readonly name: TimerName }
  | { readonly type: 'close'; readonly reason?: string };

export type SessionAction =
  | { readonly type: 'create-backend'; readonly iceServers: readonly IceServer[]; readonly policy: 'all' | 'relay' }
  | { readonly type: 'create-offer'; readonly restart: boolean; readonly directOnly?: boolean; readonly rebuild?: boolean }
  /** Drop the peer connection (keeping the application's channels) and build a new one, then `backend-ready`. */
  | { readonly type: 'rebuild' }
  /** The rebuilt connection is verified: channels resume on it. */
  | { readonly type: 'rebuilt' }
  /** The peer keeps DTLS records that arrive early: our first flight may leave as soon as ICE connects. */
  | { readonly type: 'peer-early-dtls' }
  | { readonly type: 'accept-offer'; readonly sdp: string }
  | { readonly type: 'accept-answer'; readonly sdp: string }
  | { readonly type: 'add-candidate'; readonly candidate: CandidateInit | null }
  | { readonly type: 'send'; readonly data: SignalData }
  | { readonly type: 'sign-proof'; readonly fp: readonly [string, string] }
  | { readonly type: 'verify-peer'; readonly cert: string; readonly proof: string; readonly localFingerprint: string; readonly remoteSdpFingerprint: string }
  | { readonly type: 'check-presented'; readonly signed: string }
  | { readonly type: 'set-ice-servers'; readonly iceServers: readonly IceServer[] }
  | { readonly type: 'request-ice-servers' }
  /** Drop the room socket without a close handshake and join again now (it may sit on a gone address). */
  | { readonly type: 'reconnect-signaling' }
  | { readonly type: 'set-timer'; readonly name: TimerName; readonly at: number }
  | { readonly type: 'clear-timer'; readonly name: TimerName }
  | { readonly type: 'read-path' }
  /** Build the probe connection (direct candidates only) and offer it. */
  | { readonly type: 'probe-start' }
  /** Build the probe connection on the peer's probe offer and answer it. */
  | { readonly type: 'probe-accept'; readonly sdp: string }
  | { readonly type: 'probe-answer'; readonly sdp: string }
  | { readonly type: 'probe-add-candidate'; readonly candidate: CandidateInit | null }
  /** Drop the probe connection; the current one carries on. */
  | { readonly type: 'probe-stop' }
  /** `resumable`: the link rebuilds instead of restarting, so channels keep what they send until acked. */
  | { readonly type: 'opened'; readonly resumable?: boolean }
  | { readonly type: 'path-lost' }
  | { readonly type: 'path-restored' }
  | { readonly type: 'failed'; readonly code: LinkErrorCode; readonly message: string }
  | { readonly type: 'closed'; readonly reason: string };

export type SessionPhase = 'joining' | 'negotiating' | 'open' | 'done';

/** The message of a link whose libdatachannel connection failed before it opened (Endpoint.dial tries again, up to three times). */
export const EARLY_FAILURE = 'the connection failed before it opened';

/** Earliest expiry (unix ms) among the TURN REST usernames in a server list, or null. */
export function credentialExpiry(servers: readonly IceServer[]): number | null {
  let min: number | null = null;
  for (const s of servers) {
    const u = s.username ? parseTurnUsername(s.username) : null;
    if (u) min = min === null ? u.expiresAt * 1000 : Math.min(min, u.expiresAt * 1000);
  }
  return min;
}

export class Session {
  phase: SessionPhase = 'joining';
  private readonly o: Required<Omit<SessionOptions, 'forceRelay'>> & { forceRelay: boolean };
  private backendReady = false;
  private offerSent = false;
  private remoteApplied = false;
  private negotiating = false;
  private pendingCandidates: (CandidateInit | null)[] = [];
  private localFp: string | null = null;
  private remoteFp: string | null = null;
  private peerIdentity: { cert: string; proof: string } | null = null;
  private proofSent = false;
  private verified: string | null = null; // the peer's signed fingerprint, once its proof checked out
  private connected = false;
  private presentedOk = false;
  private restarts = 0;
  private pathLost = false;
  private lastPath: 'direct' | 'relay' | null = null;
  private peerPresent = false;
  private heldOffer: SignalData | null = null;
  private joined = false;
  /** A direct-only restart is in flight (see the module header). */
  private directAttempt = false;
  /** Candidate types the peer signaled: only `relay` means it is forced onto the relay. */
  private peerRelayed = false;
  private peerDirect = false;
  /** What each side said of itself (see "Rebuild instead of restart" in the module header). */
  private localNoRestart = false;
  /** Our libdatachannel connection failed before the link opened (see onTransport). */
  private earlyFailed = false;
  private localResume = false;
  /** Our connection keeps DTLS records that arrive before its handshake (said in our identity). */
  private localEarlyDtls = false;
  private peerNoRestart = false;
  private peerResume = false;
  /** A rebuild is under way: the new connection is not yet connected and verified. */
  private rebuilding = false;
  /** The peer takes probe offers; a probe connection is being built beside the current one. */
  private peerProbe = false;
  private probing = false;
  /** A probe was started on this link (later retries wait `directRetryMs`, the first `firstProbeMs`). */
  private probed = false;

  constructor(opts: SessionOptions) {
    this.o = { ...SESSION_DEFAULTS, forceRelay: false, ...opts } as typeof this.o;
  }

  /** The peer's fingerprint its identity proof signed, once verified: what every connection of the link must present. */
  get signedPeerFingerprint(): string | null {
    return this.verified;
  }

  /**
   * Starts the connect deadline. With the ICE servers from the presence `session` message the
   * peer connection is built at once, while the room socket is still joining.
   */
  start(now: number, iceServers?: readonly IceServer[]): SessionAction[] {
    const out: SessionAction[] = [{ type: 'set-timer', name: 'connect', at: now + this.o.connectTimeoutMs }];
    if (iceServers) out.push(...this.createBackend(iceServers, now));
    return out;
  }

  private createBackend(iceServers: readonly IceServer[], now: number): SessionAction[] {
    this.phase = 'negotiating';
    return [{ type: 'create-backend', iceServers, policy: this.o.forceRelay ? 'relay' : 'all' }, ...this.scheduleRenew(iceServers, now)];
  }

  handle(ev: SessionEvent, now: number): SessionAction[] {
    if (this.phase === 'done') return [];
    const out: SessionAction[] = [];
    switch (ev.type) {
      case 'joined': {
        if (ev.peerPresent) this.peerPresent = true;
        if (this.joined) {
          // A re-join after the room socket dropped: nothing to renegotiate unless the path is down.
          if (this.pathLost && this.o.role === 'initiator') out.push(...this.restart(now));
          break;
        }
        this.joined = true;
        if (this.phase === 'joining') out.push(...this.createBackend(ev.iceServers, now));
        out.push(...this.maybeOffer());
        break;
      }
      case 'peer-joined':
        this.peerPresent = true;
        out.push(...this.maybeOffer());
        // The peer came back to the room while the link is open: its signaling dropped, most
        // likely because its network changed (it reconnects at once when it notices). Its old
        // path is then dead or about to be; restart now rather than after the silence.
        if (this.o.role === 'initiator' && this.phase === 'open') out.push(...this.restart(now));
        break;
      case 'network-change':
        out.push({ type: 'reconnect-signaling' });
        if (this.phase !== 'open') break;
        if (!this.pathLost) {
          this.pathLost = true;
          out.push({ type: 'path-lost' });
        }
        this.endDirectAttempt(out);
        // The restart itself waits for the room (`joined`); this bounds the wait.
        out.push({ type: 'clear-timer', name: 'grace' }, { type: 'set-timer', name: 'restart', at: now + this.o.restartTimeoutMs });
        break;
      case 'backend-ready': {
        this.backendReady = true;
        this.localEarlyDtls = ev.holdsEarlyDtls === true;
        if (!this.rebuilding) {
          this.localNoRestart = ev.canRestartIce === false;
          this.localResume = ev.keepsCertificate === true;
        }
        out.push(...this.maybeOffer());
        const held = this.heldOffer;
        this.heldOffer = null;
        if (held) out.push(...(this.rebuilding && held.kind === 'offer' ? this.acceptOffer(held) : this.onSignal(held, now)));
        break;
      }
      case 'signal':
        out.push(...this.onSignal(ev.data, now));
        break;
      case 'local-description': {
        if (this.localFp === null) this.localFp = ev.fingerprint;
        // A rebuilt connection must present the certificate our proof signed.
        else if (ev.fingerprint !== this.localFp) return this.fail('IdentityMismatch', 'our DTLS certificate changed mid-session');
        this.negotiating = ev.kind === 'offer';
        out.push({
          type: 'send',
          data:
            ev.kind === 'offer' && ev.restart
              ? { kind: 'offer', sdp: ev.sdp, restart: true }
              : ev.kind === 'offer' && ev.rebuild
                ? { kind: 'offer', sdp: ev.sdp, rebuild: true }
                : { kind: ev.kind, sdp: ev.sdp },
        });
        if (ev.kind === 'answer') out.push(...this.remoteDescriptionApplied());
        out.push(...this.maybeProve());
        break;
      }
      case 'answer-applied':
        this.negotiating = false;
        out.push(...this.remoteDescriptionApplied());
        out.push(...this.maybeProve());
        break;
      case 'local-candidate':
        out.push({
          type: 'send',
          data: ev.candidate
            ? { kind: 'candidate', candidate: ev.candidate.candidate, sdpMid: ev.candidate.sdpMid ?? null, sdpMLineIndex: ev.candidate.sdpMLineIndex ?? null }
            : { kind: 'candidate', candidate: '' },
        });
        break;
      case 'proof-signed':
        out.push({
          type: 'send',
          // A driver that keeps the certificate for rebuilds builds probes with it too.
          data: {
            kind: 'identity',
            cert: ev.cert,
            proof: ev.proof,
            ...(this.localResume ? { resume: true, probe: true } : {}),
            ...(this.localNoRestart ? { noRestart: true } : {}),
            ...(this.localEarlyDtls ? { earlyDtls: true } : {}),
          },
        });
        break;
      case 'peer-verdict':
        if (!ev.verdict.ok) return this.fail(ev.verdict.code, ev.verdict.message);
        this.verified = ev.verdict.peerFingerprint;
        // The connection already failed, and the peer is who it says: a plain early failure.
        if (this.earlyFailed && this.phase === 'negotiating') return this.fail('NoPath', EARLY_FAILURE);
        out.push(...this.maybeCheckPresented(), ...this.maybeOpen());
        break;
      case 'presented':
        if (ev.verdict) return this.fail(ev.verdict.ok ? 'IdentityMismatch' : ev.verdict.code, ev.verdict.ok ? 'presented certificate check failed' : ev.verdict.message);
        this.presentedOk = true;
        out.push(...this.maybeOpen(), ...this.maybeRebuilt());
        break;
      case 'transport':
        out.push(...this.onTransport(ev.state, now));
        break;
      case 'liveness':
        // While rebuilding, the probe reads a connection that is still being set up.
        if (this.phase !== 'open' || this.rebuilding) break;
        out.push(...this.onTransport(ev.alive ? 'connected' : 'disconnected', now));
        break;
      case 'path':
        if (this.rebuilding) break;
        if (ev.kind === 'direct') this.endDirectAttempt(out);
        // A new pair selected while the path was lost: the restart found one and bytes flow on
        // it (the driver reads the path as they arrive). werift does not always report the
        // transport connected again after a restart, so this is the recovery signal too.
        if (this.pathLost && this.phase === 'open') {
          this.pathLost = false;
          this.restarts = 0;
          out.push({ type: 'clear-timer', name: 'grace' }, { type: 'clear-timer', name: 'restart' }, { type: 'path-restored' });
        }
        if (ev.kind !== this.lastPath) {
          this.lastPath = ev.kind;
          if (ev.kind === 'relay' && this.directRetryUseful()) {
            const soon = this.probes() && !this.probed;
            out.push({ type: 'set-timer', name: 'direct-retry', at: now + (soon ? this.o.firstProbeMs : this.o.directRetryMs) });
          } else out.push({ type: 'clear-timer', name: 'direct-retry' });
        }
        break;
      case 'ice-servers':
        out.push({ type: 'set-ice-servers', iceServers: ev.iceServers }, ...this.scheduleRenew(ev.iceServers, now));
        break;
      case 'room-closed':
        // The room ends at its deadline; an open link lives on without it (no more restarts).
        if (this.phase !== 'open') return this.fail('Closed', `room closed (${ev.reason})`);
        if (ev.reason === 'bye') return this.finish('peer closed the link');
        break;
      case 'backend-error':
        // A rebuilt connection that breaks (libdatachannel can refuse a well-formed answer when
        // both ends handshake on a busy CPU) is a failed attempt: the initiator rebuilds again,
        // within maxRestarts; a responder waits for that next offer.
        if (this.rebuilding && this.phase === 'open') return this.o.role === 'initiator' ? this.restart(now) : [];
        return this.fail(this.phase === 'open' ? 'NoPath' : 'Protocol', ev.message);
      case 'timer':
        out.push(...this.onTimer(ev.name, now));
        break;
      case 'probe-description':
        if (!this.probing) break;
        // The probe presents the certificate our proof signed, like every connection of the link.
        if (ev.fingerprint !== this.localFp) return this.fail('IdentityMismatch', 'our DTLS certificate changed mid-session');
        out.push({ type: 'send', data: { kind: ev.kind, sdp: ev.sdp, probe: true } });
        break;
      case 'probe-candidate':
        if (!this.probing) break;
        out.push({ type: 'send', data: ev.candidate ? { kind: 'candidate', candidate: ev.candidate.candidate, sdpMid: ev.candidate.sdpMid ?? null, sdpMLineIndex: ev.candidate.sdpMLineIndex ?? null, probe: true } : { kind: 'candidate', candidate: '', probe: true } });
        break;
      case 'probe-switched': {
        // The driver moved to the probe once it connected and presented the signed certificate.
        this.probing = false;
        this.connected = true;
        this.remoteApplied = true;
        this.negotiating = false;
        this.pendingCandidates = [];
        this.restarts = 0;
        this.lastPath = null;
        out.push({ type: 'clear-timer', name: 'direct-attempt' }, { type: 'clear-timer', name: 'grace' }, { type: 'clear-timer', name: 'restart' });
        if (this.pathLost) {
          this.pathLost = false;
          out.push({ type: 'path-restored' });
        }
        out.push({ type: 'read-path' });
        break;
      }
      case 'probe-failed':
        if (this.probing) out.push(...this.stopProbe());
        break;
      case 'close':
        out.push({ type: 'send', data: ev.reason ? { kind: 'bye', reason: ev.reason } : { kind: 'bye' } });
        out.push(...this.finish(ev.reason ?? 'closed locally'));
        break;
    }
    return out;
  }

  /** The room buffers signals for a side that has not joined yet, so the offer need not wait for the peer. */
  private maybeOffer(): SessionAction[] {
    if (this.rebuilding && this.o.role === 'initiator' && this.backendReady && !this.negotiating && !this.remoteApplied) {
      this.negotiating = true;
      return [{ type: 'create-offer', restart: false, rebuild: true }];
    }
    if (this.o.role !== 'initiator' || !this.backendReady || !this.joined || this.offerSent) return [];
    this.offerSent = true;
    return [{ type: 'create-offer', restart: false }];
  }

  private onSignal(d: SignalData, now: number): SessionAction[] {
    if ((d.kind === 'offer' || d.kind === 'answer' || d.kind === 'candidate') && d.probe) return this.onProbeSignal(d, now);
    switch (d.kind) {
      case 'offer': {
        if (this.o.role !== 'responder') return this.fail('Protocol', 'unexpected offer');
        if (d.rebuild) return this.onRebuildOffer(d, now);
        if (!this.backendReady) {
          // The initiator can be quicker than our relay probe: hold the offer until we are ready.
          if (this.heldOffer !== null) return this.fail('Protocol', 'second offer before the first was applied');
          this.heldOffer = d;
          return [];
        }
        return this.acceptOffer(d);
      }
      case 'answer': {
        if (this.o.role !== 'initiator' || !this.negotiating) return this.fail('Protocol', 'unexpected answer');
        const fp = sdpFingerprints(d.sdp);
        if (fp.length !== 1) return this.fail('IdentityMismatch', 'answer must carry exactly one sha-256 fingerprint');
        if (this.remoteFp !== null && fp[0] !== this.remoteFp) return this.fail('IdentityMismatch', 'peer fingerprint changed mid-session');
        this.remoteFp = fp[0]!;
        return [{ type: 'accept-answer', sdp: d.sdp }];
      }
      case 'candidate': {
        const c: CandidateInit | null = d.candidate === '' ? null : { candidate: d.candidate, sdpMid: d.sdpMid ?? null, sdpMLineIndex: d.sdpMLineIndex ?? null };
        const type = c ? parseCandidate(c.candidate)?.type : undefined;
        if (type === 'relay') this.peerRelayed = true;
        else if (type !== undefined) this.peerDirect = true;
        if (this.remoteApplied && !this.negotiating) return [{ type: 'add-candidate', candidate: c }];
        // Trickled candidates can overtake the description they belong to: buffer per negotiation.
        if (this.pendingCandidates.length < this.o.maxBufferedCandidates) this.pendingCandidates.push(c);
        return [];
      }
      case 'identity': {
        if (this.peerIdentity !== null) {
          // Re-sent after a room reconnect: identical is fine, different is an attack.
          return d.cert === this.peerIdentity.cert && d.proof === this.peerIdentity.proof ? [] : this.fail('IdentityMismatch', 'peer identity changed mid-session');
        }
        this.peerIdentity = { cert: d.cert, proof: d.proof };
        this.peerResume = d.resume === true;
        this.peerNoRestart = d.noRestart === true;
        this.peerProbe = d.probe === true;
        return [...(d.earlyDtls === true ? [{ type: 'peer-early-dtls' } as const] : []), ...this.maybeVerify()];
      }
      case 'bye':
        // A bye back through the room: the peer's may come over the control channel first, and
        // this side's room socket then closes before the room heard of the end; the room, seeing
        // a side leave mid-session, would store what it keeps for a side's return. Now the room
        // ends while both sides are in it, whichever bye it reads first (the other is refused).
        if (this.phase === 'open') return [{ type: 'send', data: { kind: 'bye' } }, ...this.finish(d.reason ? `peer closed: ${d.reason}` : 'peer closed the link')];
        // A peer that gave up at the dial's deadline says why (its bye carries its code); both
        // sides keep to the one deadline the dialer set, so this side's outcome is the same one.
        return this.fail(d.reason === 'identity' ? 'IdentityMismatch' : d.reason === 'Timeout' || d.reason === 'NoPath' ? d.reason : 'Closed', d.reason ? `peer ended the session (${d.reason})` : 'peer ended the session');
      case 'batch': {
        // Each as if it had come alone, in order; nothing after one that ended the session.
        const out: SessionAction[] = [];
        for (const item of d.items) {
          if (this.phase === 'done') break;
          out.push(...this.onSignal(item, now));
        }
        return out;
      }
    }
  }

  private acceptOffer(d: SignalData & { kind: 'offer' }): SessionAction[] {
    const fp = sdpFingerprints(d.sdp);
    if (fp.length !== 1) return this.fail('IdentityMismatch', 'offer must carry exactly one sha-256 fingerprint');
    if (this.remoteFp !== null && fp[0] !== this.remoteFp) return this.fail('IdentityMismatch', 'peer fingerprint changed mid-session');
    this.remoteFp = fp[0]!;
    this.remoteApplied = false;
    return [{ type: 'accept-offer', sdp: d.sdp }];
  }

  /** The link rebuilds: both sides said so in their identity messages. */
  private rebuilds(): boolean {
    return this.localResume && this.peerResume && (this.localNoRestart || this.peerNoRestart);
  }

  /**
   * The initiator offers a rebuilt connection. Its fingerprint is checked now, before anything is
   * torn down: a rebuild offer presenting another certificate (a MITM in the room) ends the link.
   * A second rebuild offer (the initiator gave up on the first) starts over.
   */
  private onRebuildOffer(d: SignalData & { kind: 'offer' }, now: number): SessionAction[] {
    if (this.phase !== 'open') return this.fail('Protocol', 'rebuild offer before the link opened');
    if (!this.rebuilds()) return this.fail('Protocol', 'unexpected rebuild offer');
    const fp = sdpFingerprints(d.sdp);
    if (fp.length !== 1) return this.fail('IdentityMismatch', 'offer must carry exactly one sha-256 fingerprint');
    if (fp[0] !== this.remoteFp) return this.fail('IdentityMismatch', 'peer fingerprint changed mid-session');
    const out = this.beginRebuild(now);
    this.heldOffer = d;
    return out;
  }

  /** Drops this connection's negotiation state; the verified identity and fingerprints stay. */
  private beginRebuild(now: number): SessionAction[] {
    const out: SessionAction[] = [];
    this.endDirectAttempt(out);
    if (this.probing) out.push(...this.stopProbe());
    this.rebuilding = true;
    this.backendReady = false;
    this.remoteApplied = false;
    this.negotiating = false;
    this.pendingCandidates = [];
    this.heldOffer = null;
    this.connected = false;
    this.presentedOk = false;
    if (!this.pathLost) {
      this.pathLost = true;
      out.push({ type: 'path-lost' });
    }
    out.push({ type: 'clear-timer', name: 'grace' }, { type: 'clear-timer', name: 'direct-retry' }, { type: 'rebuild' }, { type: 'set-timer', name: 'restart', at: now + this.o.restartTimeoutMs });
    return out;
  }

  /** The rebuilt connection is up and presented the signed certificate: the link resumes on it. */
  private maybeRebuilt(): SessionAction[] {
    if (!this.rebuilding || !this.connected || !this.presentedOk || this.phase !== 'open') return [];
    this.rebuilding = false;
    this.pathLost = false;
    this.restarts = 0;
    this.lastPath = null;
    return [{ type: 'clear-timer', name: 'grace' }, { type: 'clear-timer', name: 'restart' }, { type: 'rebuilt' }, { type: 'path-restored' }, { type: 'read-path' }];
  }

  private remoteDescriptionApplied(): SessionAction[] {
    this.remoteApplied = true;
    const buffered = this.pendingCandidates;
    this.pendingCandidates = [];
    return buffered.map((candidate) => ({ type: 'add-candidate', candidate }) as const);
  }

  private maybeProve(): SessionAction[] {
    if (this.proofSent || !this.localFp || !this.remoteFp || !this.remoteApplied) return [];
    this.proofSent = true;
    return [{ type: 'sign-proof', fp: [this.localFp, this.remoteFp] }, ...this.maybeVerify()];
  }

  private maybeVerify(): SessionAction[] {
    if (!this.peerIdentity || !this.localFp || !this.remoteFp || !this.proofSent || this.verified) return [];
    return [{ type: 'verify-peer', cert: this.peerIdentity.cert, proof: this.peerIdentity.proof, localFingerprint: this.localFp, remoteSdpFingerprint: this.remoteFp }];
  }

  private maybeCheckPresented(): SessionAction[] {
    if (!this.verified || !this.connected || this.presentedOk) return [];
    return [{ type: 'check-presented', signed: this.verified }];
  }

  private maybeOpen(): SessionAction[] {
    if (this.phase !== 'negotiating' || !this.verified || !this.connected || !this.presentedOk) return [];
    this.phase = 'open';
    return [{ type: 'clear-timer', name: 'connect' }, { type: 'opened', ...(this.rebuilds() ? { resumable: true } : {}) }];
  }

  private onTransport(s: TransportState, now: number): SessionAction[] {
    const out: SessionAction[] = [];
    if (this.rebuilding) {
      // The new connection failing is a failed attempt (see `backend-error`); a responder's is
      // left to the initiator, whose side fails too, and to the restart timer.
      if (s === 'failed' && this.o.role === 'initiator' && this.phase === 'open') return this.restart(now);
      if (s !== 'connected' || this.connected) return [];
      this.connected = true;
      return [...this.maybeCheckPresented(), ...this.maybeRebuilt()];
    }
    if (s === 'failed' && this.phase === 'negotiating' && this.localNoRestart && !this.earlyFailed) {
      // A libdatachannel connection that failed never recovers (it closes itself), so waiting
      // for the connect deadline only delays the error. Seen on one CPU core: libdatachannel
      // 0.24.5 can start the offerer's DTLS before it has stored the answer's fingerprint and
      // then refuses the peer's certificate ("unknown CA"; fixed upstream after 0.24.5). A
      // fingerprint a MITM rewrote fails DTLS the same way: the identity verdict decides which
      // it was, so the link fails once the peer is verified (or with IdentityMismatch).
      this.earlyFailed = true;
      if (this.verified) return this.fail('NoPath', EARLY_FAILURE);
      return [];
    }
    if (s === 'connected') {
      const first = !this.connected;
      this.connected = true;
      if (first) out.push(...this.maybeCheckPresented(), ...this.maybeOpen());
      // Connected again after a restart: the selected pair may be another one (relay to direct).
      else if (this.phase === 'open' && !this.pathLost) out.push({ type: 'read-path' });
      if (this.pathLost) {
        this.pathLost = false;
        this.restarts = 0;
        out.push({ type: 'clear-timer', name: 'grace' }, { type: 'clear-timer', name: 'restart' }, { type: 'path-restored' }, { type: 'read-path' });
      }
      return out;
    }
    if ((s === 'disconnected' || s === 'failed') && this.phase === 'open' && this.directAttempt) {
      // The direct-only attempt found nothing (its checks all failed, or the carried-over pair
      // went quiet): allow the relay again at once.
      return this.fallBack(now);
    }
    if ((s === 'disconnected' || s === 'failed') && this.phase === 'open' && !this.pathLost) {
      this.pathLost = true;
      out.push({ type: 'path-lost' }, { type: 'set-timer', name: 'grace', at: now + this.o.disconnectGraceMs });
    }
    if (s === 'closed' && this.phase === 'open') return this.fail('NoPath', 'transport closed');
    return out;
  }

  /** Relayed, and a direct path could exist: we drive restarts, nothing forces the relay here or at the peer. */
  private directRetryUseful(): boolean {
    return !this.o.forceRelay && this.o.role === 'initiator' && !(this.peerRelayed && !this.peerDirect) && (!this.rebuilds() || this.probes());
  }

  /** A rebuilding link looks for a direct path with probe connections: both sides take them. */
  private probes(): boolean {
    return this.rebuilds() && this.peerProbe;
  }

  private stopProbe(): SessionAction[] {
    this.probing = false;
    return [{ type: 'probe-stop' }, { type: 'clear-timer', name: 'direct-attempt' }];
  }

  /**
   * A signal of the probe connection. The offer's and answer's fingerprint must be the signed
   * one (a probe presenting another certificate is a MITM in the room); anything for a probe
   * that is gone (stopped, or superseded by a rebuild) is stale and dropped.
   */
  private onProbeSignal(d: SignalData & { kind: 'offer' | 'answer' | 'candidate' }, now: number): SessionAction[] {
    if (d.kind === 'candidate') {
      if (!this.probing) return [];
      return [{ type: 'probe-add-candidate', candidate: d.candidate === '' ? null : { candidate: d.candidate, sdpMid: d.sdpMid ?? null, sdpMLineIndex: d.sdpMLineIndex ?? null } }];
    }
    if ((d.kind === 'offer') !== (this.o.role === 'responder')) return this.fail('Protocol', `unexpected probe ${d.kind}`);
    if (this.phase !== 'open' || !this.probes()) return this.fail('Protocol', `unexpected probe ${d.kind}`);
    const fp = sdpFingerprints(d.sdp);
    if (fp.length !== 1 || fp[0] !== this.remoteFp) return this.fail('IdentityMismatch', 'peer fingerprint changed mid-session');
    if (d.kind === 'answer') return this.probing ? [{ type: 'probe-answer', sdp: d.sdp }] : [];
    // A rebuild under way supersedes it (the initiator stops its probe when it rebuilds).
    if (this.rebuilding) return [];
    this.probing = true;
    return [{ type: 'probe-accept', sdp: d.sdp }, { type: 'set-timer', name: 'direct-attempt', at: now + this.o.directAttemptMs }];
  }

  private endDirectAttempt(out: SessionAction[]): void {
    if (!this.directAttempt) return;
    this.directAttempt = false;
    out.push({ type: 'clear-timer', name: 'direct-attempt' });
  }

  /** Ends a direct-only attempt that found no direct path: one restart with the relay allowed. */
  private fallBack(now: number): SessionAction[] {
    const out: SessionAction[] = [];
    this.endDirectAttempt(out);
    this.remoteApplied = false;
    out.push({ type: 'create-offer', restart: true }, { type: 'set-timer', name: 'direct-retry', at: now + this.o.directRetryMs });
    return out;
  }

  private restart(now: number): SessionAction[] {
    if (this.o.role !== 'initiator') return [{ type: 'set-timer', name: 'restart', at: now + this.o.restartTimeoutMs }];
    this.endDirectAttempt([]);
    if (this.restarts >= this.o.maxRestarts) return this.fail('NoPath', 'no path after ICE restarts');
    this.restarts++;
    if (this.rebuilds()) return this.beginRebuild(now);
    this.remoteApplied = false;
    return [{ type: 'create-offer', restart: true }, { type: 'set-timer', name: 'restart', at: now + this.o.restartTimeoutMs }];
  }

  private onTimer(name: TimerName, now: number): SessionAction[] {
    switch (name) {
      case 'connect':
        if (this.phase === 'open') return [];
        return this.fail(this.verified && this.remoteApplied && !this.connected ? 'NoPath' : 'Timeout', 'link not established before the deadline');
      case 'grace':
        return this.pathLost ? this.restart(now) : [];
      case 'restart':
        if (!this.pathLost) return [];
        if (this.o.role === 'responder') {
          // The initiator drives restarts; a responder that hears nothing for long gives up.
          if (++this.restarts > this.o.maxRestarts) return this.fail('NoPath', 'no path after ICE restarts');
          return [{ type: 'set-timer', name: 'restart', at: now + this.o.restartTimeoutMs }];
        }
        return this.restart(now);
      case 'direct-retry':
        if (this.phase !== 'open' || this.pathLost || this.lastPath !== 'relay' || !this.directRetryUseful()) return [];
        if (this.rebuilds()) {
          if (this.probing || this.rebuilding) return [{ type: 'set-timer', name: 'direct-retry', at: now + this.o.directRetryMs }];
          this.probing = true;
          this.probed = true;
          return [
            { type: 'probe-start' },
            { type: 'set-timer', name: 'direct-attempt', at: now + this.o.directAttemptMs },
            { type: 'set-timer', name: 'direct-retry', at: now + this.o.directRetryMs },
          ];
        }
        this.remoteApplied = false;
        this.directAttempt = true;
        return [
          { type: 'create-offer', restart: true, directOnly: true },
          { type: 'set-timer', name: 'direct-attempt', at: now + this.o.directAttemptMs },
          { type: 'set-timer', name: 'direct-retry', at: now + this.o.directRetryMs },
        ];
      case 'direct-attempt':
        if (this.probing) return this.stopProbe();
        return this.directAttempt && this.phase === 'open' ? this.fallBack(now) : [];
      case 'renew':
        return [{ type: 'request-ice-servers' }];
    }
  }

  private scheduleRenew(servers: readonly IceServer[], now: number): SessionAction[] {
    const exp = credentialExpiry(servers);
    if (exp === null) return [];
    // Renew at the lead time before expiry, but never sooner than half the remaining life.
    const at = Math.max(exp - this.o.credentialLeadMs, now + (exp - now) / 2);
    return [{ type: 'set-timer', name: 'renew', at }];
  }

  private fail(code: LinkErrorCode, message: string): SessionAction[] {
    const wasOpen = this.phase === 'open';
    this.phase = 'done';
    const out: SessionAction[] = [...this.clearAll()];
    if (code === 'IdentityMismatch' || code === 'Unauthorized') out.push({ type: 'send', data: { kind: 'bye', reason: 'identity' } });
    else if (code !== 'Closed') out.push({ type: 'send', data: { kind: 'bye', reason: code } });
    out.push(wasOpen ? { type: 'closed', reason: `${code}: ${message}` } : { type: 'failed', code, message });
    return out;
  }

  private finish(reason: string): SessionAction[] {
    const wasOpen = this.phase === 'open';
    this.phase = 'done';
    return [...this.clearAll(), wasOpen ? { type: 'closed', reason } : { type: 'failed', code: 'Closed', message: reason }];
  }

  private clearAll(): SessionAction[] {
    return (['connect', 'grace', 'restart', 'direct-retry', 'direct-attempt', 'renew'] as const).map((name) => ({ type: 'clear-timer', name }) as const);
  }
}
