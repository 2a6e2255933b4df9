/**
 * The session state machine on virtual time: no sockets, no werift. Events in, actions out.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Session, SESSION_DEFAULTS, credentialExpiry, type SessionAction } from '../../client/session.js';
import { parsePresenceServerMessage, parseRoomServerMessage } from '../../protocol/messages.js';
import { parseIceUrl } from '../../client/webrtc/turn-probe.js';

const FP_A = Array.from({ length: 32 }, () => 'AA').join(':');
const FP_B = Array.from({ length: 32 }, () => 'BB').join(':');
const sdp = (fp: string): string => `v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=fingerprint:sha-256 ${fp}\r\n`;
const types = (as: SessionAction[]): string[] => as.map((a) => a.type);
const ok = { ok: true as const, sub: 'hub-1', peerFingerprint: FP_B };

/** Drives an initiator to an open link; returns it and the time. */
function openInitiator(): { s: Session; t: number } {
  const s = new Session({ sessionId: 'session-0123456789abcdef', role: 'initiator', peer: 'hub-1' });
  let t = 1_000;
  s.start(t);
  expect(types(s.handle({ type: 'joined', peerPresent: true, iceServers: [] }, t))).toEqual(['create-backend']);
  expect(types(s.handle({ type: 'backend-ready' }, t))).toEqual(['create-offer']);
  expect(types(s.handle({ type: 'local-description', kind: 'offer', sdp: sdp(FP_A), fingerprint: FP_A, restart: false }, t))).toEqual(['send']);
  expect(types(s.handle({ type: 'signal', data: { kind: 'answer', sdp: sdp(FP_B) } }, (t += 5)))).toEqual(['accept-answer']);
  expect(types(s.handle({ type: 'answer-applied' }, t))).toEqual(['sign-proof']);
  s.handle({ type: 'proof-signed', cert: 'c', proof: 'p' }, t);
  expect(types(s.handle({ type: 'signal', data: { kind: 'identity', cert: 'c2', proof: 'p2' } }, t))).toEqual(['verify-peer']);
  expect(types(s.handle({ type: 'peer-verdict', verdict: ok }, t))).toEqual([]);
  expect(types(s.handle({ type: 'transport', state: 'connected' }, (t += 50)))).toEqual(['check-presented']);
  expect(types(s.handle({ type: 'presented', verdict: null }, t))).toEqual(['clear-timer', 'opened']);
  return { s, t };
}

describe('session state machine', () => {
  it('opens only after the proof verified, the transport connected and the presented certificate matched', () => {
    const { s } = openInitiator();
    expect(s.phase).toBe('open');
  });

  it('early DTLS: says in its identity that its connection keeps early records, and passes the peer\'s word to the driver', () => {
    const s = new Session({ sessionId: 'session-0123456789abcdef', role: 'initiator', peer: 'hub-1' });
    s.start(1_000);
    s.handle({ type: 'joined', peerPresent: true, iceServers: [] }, 1_000);
    s.handle({ type: 'backend-ready', holdsEarlyDtls: true }, 1_000);
    s.handle({ type: 'local-description', kind: 'offer', sdp: sdp(FP_A), fingerprint: FP_A, restart: false }, 1_000);
    s.handle({ type: 'signal', data: { kind: 'answer', sdp: sdp(FP_B) } }, 1_005);
    s.handle({ type: 'answer-applied' }, 1_005);
    expect(s.handle({ type: 'proof-signed', cert: 'c', proof: 'p' }, 1_005)).toEqual([{ type: 'send', data: { kind: 'identity', cert: 'c', proof: 'p', earlyDtls: true } }]);
    expect(types(s.handle({ type: 'signal', data: { kind: 'identity', cert: 'c2', proof: 'p2', earlyDtls: true } }, 1_006))).toEqual(['peer-early-dtls', 'verify-peer']);
    // A peer that says nothing: only `verify-peer` (openInitiator asserts it), so werift keeps its wait.
    const { s: plain } = openInitiator();
    expect(plain.phase).toBe('open');
  });

  it('buffers candidates that overtake their description and applies them in order afterwards', () => {
    const s = new Session({ sessionId: 'session-0123456789abcdef', role: 'responder', peer: 'app-1' });
    s.handle({ type: 'joined', peerPresent: true, iceServers: [] }, 0);
    s.handle({ type: 'backend-ready' }, 0);
    expect(s.handle({ type: 'signal', data: { kind: 'candidate', candidate: 'candidate:1 1 udp 1 127.0.0.1 1 typ host' } }, 0)).toEqual([]);
    expect(types(s.handle({ type: 'signal', data: { kind: 'offer', sdp: sdp(FP_A) } }, 0))).toEqual(['accept-offer']);
    expect(s.handle({ type: 'signal', data: { kind: 'candidate', candidate: 'candidate:2 1 udp 1 127.0.0.1 2 typ host' } }, 0)).toEqual([]);
    const out = s.handle({ type: 'local-description', kind: 'answer', sdp: sdp(FP_B), fingerprint: FP_B, restart: false }, 0);
    expect(types(out)).toEqual(['send', 'add-candidate', 'add-candidate', 'sign-proof']);
    const added = out.filter((a) => a.type === 'add-candidate').map((a) => (a.type === 'add-candidate' ? a.candidate?.candidate : ''));
    expect(added).toEqual(['candidate:1 1 udp 1 127.0.0.1 1 typ host', 'candidate:2 1 udp 1 127.0.0.1 2 typ host']);
  });

  it('a batch is handled as its signals one after another; nothing after one that ends the session', () => {
    const responder = (): Session => {
      const s = new Session({ sessionId: 'session-0123456789abcdef', role: 'responder', peer: 'app-1' });
      s.handle({ type: 'joined', peerPresent: true, iceServers: [] }, 0);
      s.handle({ type: 'backend-ready' }, 0);
      return s;
    };
    const c1 = { kind: 'candidate' as const, candidate: 'candidate:1 1 udp 1 127.0.0.1 1 typ host' };
    const items = [{ kind: 'offer' as const, sdp: sdp(FP_A) }, c1, { kind: 'identity' as const, cert: 'c', proof: 'p' }];
    const alone = responder();
    const one = items.flatMap((d) => alone.handle({ type: 'signal', data: d }, 0));
    const batched = responder().handle({ type: 'signal', data: { kind: 'batch', items } }, 0);
    expect(batched).toEqual(one);
    expect(types(batched)).toEqual(['accept-offer']);
    // An answer to the responder is a protocol error: the offer after it is not handled (alone,
    // it would be accepted: 'accept-offer').
    const out = responder().handle({ type: 'signal', data: { kind: 'batch', items: [{ kind: 'answer', sdp: sdp(FP_B) }, items[0]!] } }, 0);
    expect(out.at(-1)).toMatchObject({ type: 'failed', code: 'Protocol' });
    expect(types(out)).not.toContain('accept-offer');
  });

  it('holds an offer that arrives before the backend is ready', () => {
    const s = new Session({ sessionId: 'session-0123456789abcdef', role: 'responder', peer: 'app-1' });
    s.handle({ type: 'joined', peerPresent: true, iceServers: [] }, 0);
    expect(s.handle({ type: 'signal', data: { kind: 'offer', sdp: sdp(FP_A) } }, 0)).toEqual([]);
    expect(types(s.handle({ type: 'backend-ready' }, 1))).toEqual(['accept-offer']);
  });

  it('bounds the candidate buffer against a flooding room', () => {
    const s = new Session({ sessionId: 'session-0123456789abcdef', role: 'responder', peer: 'app-1' });
    s.handle({ type: 'joined', peerPresent: true, iceServers: [] }, 0);
    s.handle({ type: 'backend-ready' }, 0);
    for (let i = 0; i < 10_000; i++) s.handle({ type: 'signal', data: { kind: 'candidate', candidate: `candidate:${i} 1 udp 1 127.0.0.1 1 typ host` } }, 0);
    s.handle({ type: 'signal', data: { kind: 'offer', sdp: sdp(FP_A) } }, 0);
    const out = s.handle({ type: 'local-description', kind: 'answer', sdp: sdp(FP_B), fingerprint: FP_B, restart: false }, 0);
    expect(out.filter((a) => a.type === 'add-candidate')).toHaveLength(SESSION_DEFAULTS.maxBufferedCandidates);
  });

  it('a failed identity verdict fails the dial with its code and says bye', () => {
    const s = new Session({ sessionId: 'session-0123456789abcdef', role: 'initiator', peer: 'hub-1' });
    s.handle({ type: 'joined', peerPresent: true, iceServers: [] }, 0);
    const out = s.handle({ type: 'peer-verdict', verdict: { ok: false, code: 'IdentityMismatch', message: 'x' } }, 0);
    expect(out.at(-1)).toEqual({ type: 'failed', code: 'IdentityMismatch', message: 'x' });
    expect(out).toContainEqual({ type: 'send', data: { kind: 'bye', reason: 'identity' } });
    expect(s.handle({ type: 'transport', state: 'connected' }, 1)).toEqual([]);
  });

  it('a peer that gave up at the dial deadline (bye Timeout/NoPath) ends this side with the same code; other byes are Closed', () => {
    const outcome = (reason?: string): SessionAction | undefined => {
      const s = new Session({ sessionId: 'session-0123456789abcdef', role: 'responder', peer: 'app-1' });
      s.handle({ type: 'joined', peerPresent: true, iceServers: [] }, 0);
      s.handle({ type: 'backend-ready' }, 0);
      return s.handle({ type: 'signal', data: reason ? { kind: 'bye', reason } : { kind: 'bye' } }, 1).at(-1);
    };
    expect(outcome('Timeout')).toMatchObject({ type: 'failed', code: 'Timeout' });
    expect(outcome('NoPath')).toMatchObject({ type: 'failed', code: 'NoPath' });
    expect(outcome('identity')).toMatchObject({ type: 'failed', code: 'IdentityMismatch' });
    expect(outcome('endpoint closed')).toMatchObject({ type: 'failed', code: 'Closed' });
    expect(outcome()).toMatchObject({ type: 'failed', code: 'Closed' });
  });

  it("an open link that hears the peer's bye says bye back through the room, then closes", () => {
    const { s, t } = openInitiator();
    const out = s.handle({ type: 'signal', data: { kind: 'bye', reason: 'done' } }, t + 1);
    // The room may not have heard the peer's bye yet (it came over the control channel): ending
    // the room from here too keeps it from storing a counter for a side that merely left.
    expect(out[0]).toEqual({ type: 'send', data: { kind: 'bye' } });
    expect(out.at(-1)).toEqual({ type: 'closed', reason: 'peer closed: done' });
    expect(s.handle({ type: 'signal', data: { kind: 'bye' } }, t + 2)).toEqual([]);
  });

  it('an SDP whose fingerprint changes mid-session is an identity failure', () => {
    const { s, t } = openInitiator();
    s.handle({ type: 'path', kind: 'relay' }, t);
    expect(s.handle({ type: 'timer', name: 'direct-retry' }, t + SESSION_DEFAULTS.directRetryMs)).toContainEqual({ type: 'create-offer', restart: true, directOnly: true });
    s.handle({ type: 'local-description', kind: 'offer', sdp: sdp(FP_A), fingerprint: FP_A, restart: true }, t);
    const out = s.handle({ type: 'signal', data: { kind: 'answer', sdp: sdp(FP_A) } }, t);
    expect(out.at(-1)).toMatchObject({ type: 'closed', reason: expect.stringMatching(/^IdentityMismatch/) });
  });

  it('connect deadline: Timeout before negotiation, NoPath when verified but never connected', () => {
    const a = new Session({ sessionId: 'session-0123456789abcdef', role: 'initiator', peer: 'hub-1', connectTimeoutMs: 100 });
    expect(a.start(0)).toEqual([{ type: 'set-timer', name: 'connect', at: 100 }]);
    expect(a.handle({ type: 'timer', name: 'connect' }, 100).at(-1)).toMatchObject({ type: 'failed', code: 'Timeout' });
    const b = new Session({ sessionId: 'session-0123456789abcdef', role: 'initiator', peer: 'hub-1' });
    b.handle({ type: 'joined', peerPresent: true, iceServers: [] }, 0);
    b.handle({ type: 'backend-ready' }, 0);
    b.handle({ type: 'local-description', kind: 'offer', sdp: sdp(FP_A), fingerprint: FP_A, restart: false }, 0);
    b.handle({ type: 'signal', data: { kind: 'answer', sdp: sdp(FP_B) } }, 0);
    b.handle({ type: 'answer-applied' }, 0);
    b.handle({ type: 'signal', data: { kind: 'identity', cert: 'c', proof: 'p' } }, 0);
    b.handle({ type: 'peer-verdict', verdict: ok }, 0);
    expect(b.handle({ type: 'timer', name: 'connect' }, 15_000).at(-1)).toMatchObject({ type: 'failed', code: 'NoPath' });
  });

  it('path lost: grace, ICE restart offers (flagged restart), bounded, then NoPath; recovery clears it', () => {
    const { s, t } = openInitiator();
    expect(types(s.handle({ type: 'liveness', alive: false }, t))).toEqual(['path-lost', 'set-timer']);
    let now = t + SESSION_DEFAULTS.disconnectGraceMs;
    const first = s.handle({ type: 'timer', name: 'grace' }, now);
    expect(first).toContainEqual({ type: 'create-offer', restart: true });
    expect(s.handle({ type: 'local-description', kind: 'offer', sdp: sdp(FP_A), fingerprint: FP_A, restart: true }, now)).toContainEqual({
      type: 'send',
      data: { kind: 'offer', sdp: sdp(FP_A), restart: true },
    });
    for (let i = 1; i < SESSION_DEFAULTS.maxRestarts; i++) {
      now += SESSION_DEFAULTS.restartTimeoutMs;
      expect(s.handle({ type: 'timer', name: 'restart' }, now)).toContainEqual({ type: 'create-offer', restart: true });
    }
    now += SESSION_DEFAULTS.restartTimeoutMs;
    expect(s.handle({ type: 'timer', name: 'restart' }, now).at(-1)).toMatchObject({ type: 'closed' });

    const r = openInitiator();
    r.s.handle({ type: 'transport', state: 'disconnected' }, r.t);
    r.s.handle({ type: 'timer', name: 'grace' }, r.t + 2000);
    expect(types(r.s.handle({ type: 'transport', state: 'connected' }, r.t + 2500))).toEqual(['clear-timer', 'clear-timer', 'path-restored', 'read-path']);
  });

  it('relayed path: retries direct periodically (not when relay is forced)', () => {
    const { s, t } = openInitiator();
    expect(s.handle({ type: 'path', kind: 'relay' }, t)).toEqual([{ type: 'set-timer', name: 'direct-retry', at: t + SESSION_DEFAULTS.directRetryMs }]);
    expect(s.handle({ type: 'timer', name: 'direct-retry' }, t + SESSION_DEFAULTS.directRetryMs)).toContainEqual({ type: 'create-offer', restart: true, directOnly: true });
    const forced = new Session({ sessionId: 'session-0123456789abcdef', role: 'initiator', peer: 'hub-1', forceRelay: true });
    expect(forced.handle({ type: 'path', kind: 'relay' }, 0)).toEqual([{ type: 'clear-timer', name: 'direct-retry' }]);
  });

  it('renews TURN credentials through the room before they expire', () => {
    const now = 1_700_000_000_000;
    const exp = Math.floor(now / 1000) + 600;
    const servers = [{ urls: ['turn:127.0.0.1:3478'], username: `${exp}:app-1`, credential: 'x' }];
    expect(credentialExpiry(servers)).toBe(exp * 1000);
    const s = new Session({ sessionId: 'session-0123456789abcdef', role: 'initiator', peer: 'hub-1' });
    const out = s.handle({ type: 'joined', peerPresent: false, iceServers: servers }, now);
    expect(out).toContainEqual({ type: 'set-timer', name: 'renew', at: exp * 1000 - SESSION_DEFAULTS.credentialLeadMs });
    expect(s.handle({ type: 'timer', name: 'renew' }, exp * 1000 - 60_000)).toEqual([{ type: 'request-ice-servers' }]);
    const fresh = [{ urls: ['turn:127.0.0.1:3478'], username: `${exp + 600}:app-1`, credential: 'y' }];
    const renewed = s.handle({ type: 'ice-servers', iceServers: fresh }, exp * 1000 - 60_000);
    expect(renewed[0]).toEqual({ type: 'set-ice-servers', iceServers: fresh });
    expect(renewed[1]).toMatchObject({ type: 'set-timer', name: 'renew' });
  });
});

describe('client-side parsing of server frames', () => {
  it('never throws on arbitrary input and rejects non-objects', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json(), fc.anything()), (v) => {
        const a = parsePresenceServerMessage(v);
        const b = parseRoomServerMessage(v);
        return typeof a.ok === 'boolean' && typeof b.ok === 'boolean';
      }),
      { numRuns: 3000 },
    );
  });

  it('rejects oversized frames, bad ICE server URLs and malformed sessions', () => {
    expect(parseRoomServerMessage('x'.repeat(70_000))).toMatchObject({ ok: false });
    expect(parseRoomServerMessage(JSON.stringify({ type: 'ice_servers', iceServers: [{ urls: ['http://evil'] }] }))).toMatchObject({ ok: false });
    expect(parsePresenceServerMessage(JSON.stringify({ type: 'session', reqId: 'r', sessionId: 'short', peer: 'p', role: 'initiator', iceServers: [], deadline: 1 }))).toMatchObject({ ok: false });
    expect(parsePresenceServerMessage(JSON.stringify({ type: 'hello', endpointId: 'app-1' }))).toEqual({ ok: true, value: { type: 'hello', endpointId: 'app-1' } });
  });

  it('parses stun/turn/turns URLs for the Happy Eyeballs probe', () => {
    expect(parseIceUrl('stun:127.0.0.1:3478')).toEqual({ kind: 'stun', transport: 'udp', host: '127.0.0.1', port: 3478 });
    expect(parseIceUrl('turn:relay.example:3478?transport=tcp')).toEqual({ kind: 'turn', transport: 'tcp', host: 'relay.example', port: 3478 });
    expect(parseIceUrl('turns:relay.example')).toEqual({ kind: 'turn', transport: 'tls', host: 'relay.example', port: 5349 });
    expect(parseIceUrl('turn:[::1]:3478')).toMatchObject({ host: '::1' });
    expect(parseIceUrl('http://x')).toBeNull();
    expect(parseIceUrl('turn:x:99999')).toBeNull();
  });
});
