/**
 * Rebuild instead of ICE restart, on the session state machine (virtual time, no sockets):
 * when either side cannot restart ICE and both speak the rebuild protocol, a lost path rebuilds
 * the connection; the fingerprints signed at setup must hold on the rebuilt one.
 */
import { describe, expect, it } from 'vitest';
import { Session, SESSION_DEFAULTS, type SessionAction, type SessionEvent } from '../../client/session.js';

const FP_A = Array.from({ length: 32 }, () => 'AA').join(':');
const FP_B = Array.from({ length: 32 }, () => 'BB').join(':');
const FP_X = Array.from({ length: 32 }, () => 'EE').join(':');
const sdp = (fp: string): string => `v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=fingerprint:sha-256 ${fp}\r\n`;
const types = (as: SessionAction[]): string[] => as.map((a) => a.type);
const SID = 'session-0123456789abcdef';

interface Caps {
  readonly local: { canRestartIce: boolean; keepsCertificate: boolean };
  readonly peer: { resume?: boolean; noRestart?: boolean; probe?: boolean };
}
const NATIVE = { canRestartIce: false, keepsCertificate: true };
const WERIFT = { canRestartIce: true, keepsCertificate: true };

/** An initiator driven to an open link; returns it, the time and what it sent as its identity. */
function openInitiator(c: Caps): { s: Session; t: number; identity: SessionAction | undefined; opened: SessionAction | undefined } {
  const s = new Session({ sessionId: SID, role: 'initiator', peer: 'hub-1' });
  let t = 1_000;
  s.start(t);
  s.handle({ type: 'joined', peerPresent: true, iceServers: [] }, t);
  s.handle({ type: 'backend-ready', ...c.local }, t);
  s.handle({ type: 'local-description', kind: 'offer', sdp: sdp(FP_A), fingerprint: FP_A, restart: false }, t);
  s.handle({ type: 'signal', data: { kind: 'answer', sdp: sdp(FP_B) } }, (t += 5));
  s.handle({ type: 'answer-applied' }, t);
  const identity = s.handle({ type: 'proof-signed', cert: 'c', proof: 'p' }, t).find((a) => a.type === 'send');
  s.handle({ type: 'signal', data: { kind: 'identity', cert: 'c2', proof: 'p2', ...c.peer } }, t);
  s.handle({ type: 'peer-verdict', verdict: { ok: true, sub: 'hub-1', peerFingerprint: FP_B } }, t);
  s.handle({ type: 'transport', state: 'connected' }, (t += 50));
  const opened = s.handle({ type: 'presented', verdict: null }, t).find((a) => a.type === 'opened');
  return { s, t, identity, opened };
}

function openResponder(c: Caps): { s: Session; t: number } {
  const s = new Session({ sessionId: SID, role: 'responder', peer: 'app-1' });
  let t = 1_000;
  s.start(t);
  s.handle({ type: 'joined', peerPresent: true, iceServers: [] }, t);
  s.handle({ type: 'backend-ready', ...c.local }, t);
  s.handle({ type: 'signal', data: { kind: 'offer', sdp: sdp(FP_A) } }, t);
  s.handle({ type: 'local-description', kind: 'answer', sdp: sdp(FP_B), fingerprint: FP_B, restart: false }, t);
  s.handle({ type: 'proof-signed', cert: 'c', proof: 'p' }, t);
  s.handle({ type: 'signal', data: { kind: 'identity', cert: 'c2', proof: 'p2', ...c.peer } }, t);
  s.handle({ type: 'peer-verdict', verdict: { ok: true, sub: 'app-1', peerFingerprint: FP_A } }, t);
  s.handle({ type: 'transport', state: 'connected' }, (t += 50));
  s.handle({ type: 'presented', verdict: null }, t);
  expect(s.phase).toBe('open');
  return { s, t };
}

const feed = (s: Session, evs: SessionEvent[], t: number): SessionAction[] => evs.flatMap((e) => s.handle(e, t));

describe('session: a native connection that fails before it opens', () => {
  const negotiating = (local: typeof NATIVE): Session => {
    const s = new Session({ sessionId: SID, role: 'initiator', peer: 'hub-1' });
    s.start(1_000);
    s.handle({ type: 'joined', peerPresent: true, iceServers: [] }, 1_000);
    s.handle({ type: 'backend-ready', ...local }, 1_000);
    s.handle({ type: 'local-description', kind: 'offer', sdp: sdp(FP_A), fingerprint: FP_A, restart: false }, 1_000);
    s.handle({ type: 'signal', data: { kind: 'answer', sdp: sdp(FP_B) } }, 1_005);
    return s;
  };

  it('fails the dial (NoPath) as soon as the peer is verified: a failed libdatachannel connection is closed for good', () => {
    const s = negotiating(NATIVE);
    expect(types(s.handle({ type: 'transport', state: 'failed' }, 1_010))).not.toContain('failed');
    const out = s.handle({ type: 'peer-verdict', verdict: { ok: true, sub: 'hub-1', peerFingerprint: FP_B } }, 1_012);
    expect(out).toContainEqual({ type: 'failed', code: 'NoPath', message: 'the connection failed before it opened' });
    expect(s.phase).toBe('done');
    // Verified first, failed after: at once.
    const s2 = negotiating(NATIVE);
    s2.handle({ type: 'peer-verdict', verdict: { ok: true, sub: 'hub-1', peerFingerprint: FP_B } }, 1_010);
    expect(s2.handle({ type: 'transport', state: 'failed' }, 1_012)).toContainEqual({ type: 'failed', code: 'NoPath', message: 'the connection failed before it opened' });
  });

  it('a failure caused by a rewritten fingerprint is still IdentityMismatch (the verdict decides)', () => {
    const s = negotiating(NATIVE);
    s.handle({ type: 'transport', state: 'failed' }, 1_010);
    const out = s.handle({ type: 'peer-verdict', verdict: { ok: false, code: 'IdentityMismatch', message: 'fingerprint not the signed one' } }, 1_012);
    expect(out).toContainEqual({ type: 'failed', code: 'IdentityMismatch', message: 'fingerprint not the signed one' });
  });

  it('werift keeps trying until the connect deadline (its ICE can still succeed)', () => {
    const s = negotiating(WERIFT);
    expect(types(s.handle({ type: 'transport', state: 'failed' }, 1_010))).not.toContain('failed');
    expect(s.phase).toBe('negotiating');
  });
});

describe('session: rebuild instead of ICE restart', () => {
  it('says what it can in its identity message and opens resumable only when the link will rebuild', () => {
    const native = openInitiator({ local: NATIVE, peer: { resume: true } });
    expect(native.identity).toMatchObject({ data: { kind: 'identity', resume: true, noRestart: true } });
    expect(native.opened).toEqual({ type: 'opened', resumable: true });
    // werift on both sides: ICE restarts as before, nothing held.
    const werift = openInitiator({ local: WERIFT, peer: { resume: true } });
    expect(werift.identity).toMatchObject({ data: { kind: 'identity', resume: true } });
    expect(werift.identity).not.toMatchObject({ data: { noRestart: true } });
    expect(werift.opened).toEqual({ type: 'opened' });
    // A werift side whose peer cannot restart rebuilds too.
    expect(openInitiator({ local: WERIFT, peer: { resume: true, noRestart: true } }).opened).toEqual({ type: 'opened', resumable: true });
    // An older peer (no flags): no rebuild, no holding.
    expect(openInitiator({ local: NATIVE, peer: {} }).opened).toEqual({ type: 'opened' });
  });

  it('initiator: path lost -> grace -> rebuild, rebuild offer flagged, resumes only after the presented certificate checked', () => {
    const { s, t } = openInitiator({ local: NATIVE, peer: { resume: true } });
    expect(types(s.handle({ type: 'transport', state: 'disconnected' }, t))).toEqual(['path-lost', 'set-timer']);
    let now = t + SESSION_DEFAULTS.disconnectGraceMs;
    const out = s.handle({ type: 'timer', name: 'grace' }, now);
    expect(out).toContainEqual({ type: 'rebuild' });
    expect(out).not.toContainEqual(expect.objectContaining({ type: 'create-offer' }));
    // The probe reading the half-built connection changes nothing.
    expect(s.handle({ type: 'liveness', alive: true }, now)).toEqual([]);
    expect(s.handle({ type: 'path', kind: 'direct' }, now)).toEqual([]);
    expect(s.handle({ type: 'backend-ready', ...NATIVE }, (now += 5))).toEqual([{ type: 'create-offer', restart: false, rebuild: true }]);
    expect(s.handle({ type: 'local-description', kind: 'offer', sdp: sdp(FP_A), fingerprint: FP_A, restart: false, rebuild: true }, now)).toContainEqual({
      type: 'send',
      data: { kind: 'offer', sdp: sdp(FP_A), rebuild: true },
    });
    // Candidates of the new negotiation wait for its answer.
    expect(s.handle({ type: 'signal', data: { kind: 'candidate', candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host' } }, now)).toEqual([]);
    expect(types(s.handle({ type: 'signal', data: { kind: 'answer', sdp: sdp(FP_B) } }, now))).toEqual(['accept-answer']);
    expect(types(s.handle({ type: 'answer-applied' }, now))).toEqual(['add-candidate']);
    // The identity is not proven again: the fingerprints are the signed ones.
    expect(s.handle({ type: 'transport', state: 'connected' }, (now += 20))).toEqual([{ type: 'check-presented', signed: FP_B }]);
    expect(types(s.handle({ type: 'presented', verdict: null }, now))).toEqual(['clear-timer', 'clear-timer', 'rebuilt', 'path-restored', 'read-path']);
    expect(s.phase).toBe('open');
  });

  it('initiator: a peer rejoining the room on an open link sets off a rebuild at once', () => {
    const { s, t } = openInitiator({ local: WERIFT, peer: { resume: true, noRestart: true } });
    expect(types(s.handle({ type: 'peer-joined' }, t))).toEqual(['path-lost', 'clear-timer', 'clear-timer', 'rebuild', 'set-timer']);
  });

  it('responder: a rebuild offer rebuilds, is held until the new connection exists, then answered', () => {
    const { s, t } = openResponder({ local: NATIVE, peer: { resume: true } });
    const out = s.handle({ type: 'signal', data: { kind: 'offer', sdp: sdp(FP_A), rebuild: true } }, t);
    expect(types(out)).toEqual(['path-lost', 'clear-timer', 'clear-timer', 'rebuild', 'set-timer']);
    expect(s.handle({ type: 'backend-ready', ...NATIVE }, t + 5)).toEqual([{ type: 'accept-offer', sdp: sdp(FP_A) }]);
    expect(types(s.handle({ type: 'local-description', kind: 'answer', sdp: sdp(FP_B), fingerprint: FP_B, restart: false }, t + 6))).toEqual(['send']);
    expect(types(feed(s, [{ type: 'transport', state: 'connected' }, { type: 'presented', verdict: null }], t + 20))).toEqual(['check-presented', 'clear-timer', 'clear-timer', 'rebuilt', 'path-restored', 'read-path']);
  });

  it('a rebuild offer whose fingerprint differs from the signed one ends the link with IdentityMismatch, nothing rebuilt', () => {
    const { s, t } = openResponder({ local: NATIVE, peer: { resume: true } });
    const out = s.handle({ type: 'signal', data: { kind: 'offer', sdp: sdp(FP_X), rebuild: true } }, t);
    expect(out).not.toContainEqual({ type: 'rebuild' });
    expect(out).toContainEqual({ type: 'send', data: { kind: 'bye', reason: 'identity' } });
    expect(out.at(-1)).toMatchObject({ type: 'closed', reason: expect.stringMatching(/^IdentityMismatch/) });
  });

  it('an answer to a rebuild with another fingerprint, or a rebuilt connection presenting another certificate, is IdentityMismatch', () => {
    const a = openInitiator({ local: NATIVE, peer: { resume: true } });
    a.s.handle({ type: 'peer-joined' }, a.t);
    a.s.handle({ type: 'backend-ready', ...NATIVE }, a.t);
    a.s.handle({ type: 'local-description', kind: 'offer', sdp: sdp(FP_A), fingerprint: FP_A, restart: false, rebuild: true }, a.t);
    expect(a.s.handle({ type: 'signal', data: { kind: 'answer', sdp: sdp(FP_X) } }, a.t).at(-1)).toMatchObject({ type: 'closed', reason: expect.stringMatching(/^IdentityMismatch/) });

    const b = openInitiator({ local: NATIVE, peer: { resume: true } });
    b.s.handle({ type: 'peer-joined' }, b.t);
    b.s.handle({ type: 'backend-ready', ...NATIVE }, b.t);
    b.s.handle({ type: 'local-description', kind: 'offer', sdp: sdp(FP_A), fingerprint: FP_A, restart: false, rebuild: true }, b.t);
    b.s.handle({ type: 'signal', data: { kind: 'answer', sdp: sdp(FP_B) } }, b.t);
    b.s.handle({ type: 'answer-applied' }, b.t);
    b.s.handle({ type: 'transport', state: 'connected' }, b.t);
    const out = b.s.handle({ type: 'presented', verdict: { ok: false, code: 'IdentityMismatch', message: 'DTLS certificate differs from the signed fingerprint' } }, b.t);
    expect(out.at(-1)).toMatchObject({ type: 'closed', reason: expect.stringMatching(/^IdentityMismatch/) });

    // Our own rebuilt connection must present our signed certificate too.
    const c = openInitiator({ local: NATIVE, peer: { resume: true } });
    c.s.handle({ type: 'peer-joined' }, c.t);
    c.s.handle({ type: 'backend-ready', ...NATIVE }, c.t);
    expect(c.s.handle({ type: 'local-description', kind: 'offer', sdp: sdp(FP_X), fingerprint: FP_X, restart: false, rebuild: true }, c.t).at(-1)).toMatchObject({
      type: 'closed',
      reason: expect.stringMatching(/^IdentityMismatch: our DTLS certificate changed/),
    });
  });

  it('a rebuild offer where none is expected (werift link, or before open) is a protocol failure, not a hang', () => {
    const { s, t } = openResponder({ local: WERIFT, peer: { resume: true } });
    expect(s.handle({ type: 'signal', data: { kind: 'offer', sdp: sdp(FP_A), rebuild: true } }, t).at(-1)).toMatchObject({ type: 'closed', reason: 'Protocol: unexpected rebuild offer' });
    const r = new Session({ sessionId: SID, role: 'responder', peer: 'app-1' });
    r.handle({ type: 'joined', peerPresent: true, iceServers: [] }, 0);
    r.handle({ type: 'backend-ready', ...NATIVE }, 0);
    expect(r.handle({ type: 'signal', data: { kind: 'offer', sdp: sdp(FP_A), rebuild: true } }, 0).at(-1)).toMatchObject({ type: 'failed', code: 'Protocol' });
  });

  it('rebuilds that never connect are bounded: maxRestarts, then NoPath; no direct retries on a rebuilding link', () => {
    const { s, t } = openInitiator({ local: NATIVE, peer: { resume: true } });
    expect(s.handle({ type: 'path', kind: 'relay' }, t)).not.toContainEqual(expect.objectContaining({ type: 'set-timer', name: 'direct-retry' }));
    s.handle({ type: 'transport', state: 'disconnected' }, t);
    let now = t + SESSION_DEFAULTS.disconnectGraceMs;
    let rebuilds = s.handle({ type: 'timer', name: 'grace' }, now).filter((a) => a.type === 'rebuild').length;
    let last: SessionAction[] = [];
    for (let i = 0; i < 10 && s.phase === 'open'; i++) {
      s.handle({ type: 'backend-ready', ...NATIVE }, now);
      now += SESSION_DEFAULTS.restartTimeoutMs;
      last = s.handle({ type: 'timer', name: 'restart' }, now);
      rebuilds += last.filter((a) => a.type === 'rebuild').length;
    }
    expect(rebuilds).toBe(SESSION_DEFAULTS.maxRestarts);
    expect(last.at(-1)).toMatchObject({ type: 'closed', reason: expect.stringMatching(/^NoPath/) });
  });
});

describe('session: a rebuilt connection that breaks', () => {
  it('initiator: a backend error or a failed transport while rebuilding rebuilds again instead of ending the link', () => {
    const { s, t } = openInitiator({ local: NATIVE, peer: { resume: true } });
    s.handle({ type: 'peer-joined' }, t);
    s.handle({ type: 'backend-ready', ...NATIVE }, t);
    s.handle({ type: 'local-description', kind: 'offer', sdp: sdp(FP_A), fingerprint: FP_A, restart: false, rebuild: true }, t);
    s.handle({ type: 'signal', data: { kind: 'answer', sdp: sdp(FP_B) } }, t);
    expect(s.handle({ type: 'backend-error', message: 'Got a remote candidate without ICE transport' }, t + 1)).toContainEqual({ type: 'rebuild' });
    expect(s.phase).toBe('open');
    s.handle({ type: 'backend-ready', ...NATIVE }, t + 2);
    expect(s.handle({ type: 'transport', state: 'failed' }, t + 3)).toContainEqual({ type: 'rebuild' });
    expect(s.phase).toBe('open');
  });

  it('responder: a backend error while rebuilding waits for the next rebuild offer', () => {
    const { s, t } = openResponder({ local: NATIVE, peer: { resume: true } });
    s.handle({ type: 'signal', data: { kind: 'offer', sdp: sdp(FP_A), rebuild: true } }, t);
    expect(s.handle({ type: 'backend-error', message: 'x' }, t + 1)).toEqual([]);
    expect(types(s.handle({ type: 'signal', data: { kind: 'offer', sdp: sdp(FP_A), rebuild: true } }, t + 2))).toContain('rebuild');
    expect(s.phase).toBe('open');
  });
});

describe('session: a node-datachannel side with an older peer', () => {
  it('no rebuild protocol on the other side: the lost path is an ICE restart the native stack refuses, and the link ends with NoPath, not a hang', () => {
    const { s, t, opened } = openInitiator({ local: NATIVE, peer: {} });
    expect(opened).toEqual({ type: 'opened' });
    s.handle({ type: 'transport', state: 'disconnected' }, t);
    const out = s.handle({ type: 'timer', name: 'grace' }, t + SESSION_DEFAULTS.disconnectGraceMs);
    expect(out).toContainEqual({ type: 'create-offer', restart: true });
    const end = s.handle({ type: 'backend-error', message: 'node-datachannel cannot restart ICE (libdatachannel #545)' }, t + SESSION_DEFAULTS.disconnectGraceMs + 1);
    expect(end.at(-1)).toMatchObject({ type: 'closed', reason: expect.stringMatching(/^NoPath/) });
    expect(s.phase).toBe('done');
  });
});

describe('session: direct probe on a relayed link that rebuilds', () => {
  const relayed = (s: Session, t: number): SessionAction[] => s.handle({ type: 'path', kind: 'relay' }, t);

  it('initiator: relayed -> a probe soon (firstProbeMs), then every retry interval, its signals flagged; no connection within the attempt -> stopped, the relayed one untouched', () => {
    const { s, t, identity } = openInitiator({ local: NATIVE, peer: { resume: true, probe: true } });
    expect(identity).toMatchObject({ data: { kind: 'identity', resume: true, probe: true } });
    expect(relayed(s, t)).toContainEqual({ type: 'set-timer', name: 'direct-retry', at: t + SESSION_DEFAULTS.firstProbeMs });
    let now = t + SESSION_DEFAULTS.firstProbeMs;
    expect(s.handle({ type: 'timer', name: 'direct-retry' }, now)).toEqual([
      { type: 'probe-start' },
      { type: 'set-timer', name: 'direct-attempt', at: now + SESSION_DEFAULTS.directAttemptMs },
      { type: 'set-timer', name: 'direct-retry', at: now + SESSION_DEFAULTS.directRetryMs },
    ]);
    expect(s.handle({ type: 'probe-description', kind: 'offer', sdp: sdp(FP_A), fingerprint: FP_A }, now)).toEqual([{ type: 'send', data: { kind: 'offer', sdp: sdp(FP_A), probe: true } }]);
    expect(s.handle({ type: 'probe-candidate', candidate: { candidate: 'candidate:1 1 udp 1 198.18.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0 } }, now)).toEqual([
      { type: 'send', data: { kind: 'candidate', candidate: 'candidate:1 1 udp 1 198.18.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0, probe: true } },
    ]);
    expect(s.handle({ type: 'signal', data: { kind: 'answer', sdp: sdp(FP_B), probe: true } }, now)).toEqual([{ type: 'probe-answer', sdp: sdp(FP_B) }]);
    now += SESSION_DEFAULTS.directAttemptMs;
    expect(types(s.handle({ type: 'timer', name: 'direct-attempt' }, now))).toEqual(['probe-stop', 'clear-timer']);
    // Late signals of the stopped probe are dropped; the link is still open and never lost its path.
    expect(s.handle({ type: 'signal', data: { kind: 'candidate', candidate: '', probe: true } }, now)).toEqual([]);
    expect(s.handle({ type: 'signal', data: { kind: 'answer', sdp: sdp(FP_B), probe: true } }, now)).toEqual([]);
    expect(s.phase).toBe('open');
    // Only the first probe comes soon: relayed again after a direct spell waits the full interval.
    s.handle({ type: 'path', kind: 'direct' }, now);
    expect(relayed(s, now)).toContainEqual({ type: 'set-timer', name: 'direct-retry', at: now + SESSION_DEFAULTS.directRetryMs });
  });

  it('a link that restarts ICE (werift) waits the full retry interval before its first direct retry', () => {
    const { s, t } = openInitiator({ local: WERIFT, peer: {} });
    expect(relayed(s, t)).toEqual([{ type: 'set-timer', name: 'direct-retry', at: t + SESSION_DEFAULTS.directRetryMs }]);
  });

  it('initiator: the switch to the probe restores nothing it did not lose and reads the new path; a direct path ends the retries', () => {
    const { s, t } = openInitiator({ local: NATIVE, peer: { resume: true, probe: true } });
    relayed(s, t);
    const now = t + SESSION_DEFAULTS.firstProbeMs;
    s.handle({ type: 'timer', name: 'direct-retry' }, now);
    const out = s.handle({ type: 'probe-switched' }, now + 100);
    expect(types(out)).toEqual(['clear-timer', 'clear-timer', 'clear-timer', 'read-path']);
    expect(s.handle({ type: 'path', kind: 'direct' }, now + 101)).toContainEqual({ type: 'clear-timer', name: 'direct-retry' });
  });

  it('a peer that does not take probes (older version) gets no probe: no direct retry on a rebuilding link', () => {
    const { s, t, identity } = openInitiator({ local: NATIVE, peer: { resume: true } });
    expect(identity).toMatchObject({ data: { probe: true } });
    expect(relayed(s, t)).toContainEqual({ type: 'clear-timer', name: 'direct-retry' });
  });

  it('responder: a probe offer is answered on a probe connection, checked against the signed fingerprint first', () => {
    const ok = openResponder({ local: NATIVE, peer: { resume: true, probe: true } });
    expect(types(ok.s.handle({ type: 'signal', data: { kind: 'offer', sdp: sdp(FP_A), probe: true } }, ok.t))).toEqual(['probe-accept', 'set-timer']);
    expect(ok.s.handle({ type: 'probe-description', kind: 'answer', sdp: sdp(FP_B), fingerprint: FP_B }, ok.t)).toEqual([{ type: 'send', data: { kind: 'answer', sdp: sdp(FP_B), probe: true } }]);
    // Our probe presenting another certificate than the one our proof signed is a bug we refuse to hide.
    const mine = openResponder({ local: NATIVE, peer: { resume: true, probe: true } });
    mine.s.handle({ type: 'signal', data: { kind: 'offer', sdp: sdp(FP_A), probe: true } }, mine.t);
    expect(mine.s.handle({ type: 'probe-description', kind: 'answer', sdp: sdp(FP_X), fingerprint: FP_X }, mine.t)).toContainEqual({ type: 'closed', reason: 'IdentityMismatch: our DTLS certificate changed mid-session' });

    const mitm = openResponder({ local: NATIVE, peer: { resume: true, probe: true } });
    const out = mitm.s.handle({ type: 'signal', data: { kind: 'offer', sdp: sdp(FP_X), probe: true } }, mitm.t);
    expect(out).toContainEqual({ type: 'closed', reason: 'IdentityMismatch: peer fingerprint changed mid-session' });
    expect(types(out)).not.toContain('probe-accept');

    const uninvited = openResponder({ local: NATIVE, peer: { resume: true } });
    expect(uninvited.s.handle({ type: 'signal', data: { kind: 'offer', sdp: sdp(FP_A), probe: true } }, uninvited.t)).toContainEqual({ type: 'closed', reason: 'Protocol: unexpected probe offer' });
  });

  it('a rebuild while a probe is being built stops the probe first', () => {
    const { s, t } = openInitiator({ local: NATIVE, peer: { resume: true, probe: true } });
    relayed(s, t);
    let now = t + SESSION_DEFAULTS.firstProbeMs;
    s.handle({ type: 'timer', name: 'direct-retry' }, now);
    s.handle({ type: 'transport', state: 'disconnected' }, now);
    now += SESSION_DEFAULTS.disconnectGraceMs;
    const out = s.handle({ type: 'timer', name: 'grace' }, now);
    expect(types(out).indexOf('probe-stop')).toBeGreaterThanOrEqual(0);
    expect(types(out).indexOf('probe-stop')).toBeLessThan(types(out).indexOf('rebuild'));
  });
});
