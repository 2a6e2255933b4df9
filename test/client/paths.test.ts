/**
 * Path management (issue 9): network changes and the relay-to-direct upgrade, on virtual time
 * (the session state machine), plus the interface watch with an injected reader and a real
 * werift backend reporting a change of its (injected) interfaces. The lab scenarios that prove
 * the whole thing on real networks are test/natlab/roaming.test.ts and upgrade.test.ts.
 */
import type { NetworkInterfaceInfo } from 'node:os';
import { describe, expect, it } from 'vitest';
import { Session, SESSION_DEFAULTS, type SessionAction } from '../../client/session.js';
import { diffAddresses, NetworkWatch, pinnedChange, usableAddresses } from '../../client/webrtc/network-watch.js';
import { createWeriftBackend } from '../../client/webrtc/werift.js';

const FP_A = Array.from({ length: 32 }, () => 'AA').join(':');
const FP_B = Array.from({ length: 32 }, () => 'BB').join(':');
const sdp = (fp: string): string => `v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=fingerprint:sha-256 ${fp}\r\n`;
const types = (as: SessionAction[]): string[] => as.map((a) => a.type);
const ok = { ok: true as const, sub: 'peer', peerFingerprint: FP_B };
const SID = 'session-0123456789abcdef';

function candidate(type: 'host' | 'srflx' | 'relay', address: string): { kind: 'candidate'; candidate: string } {
  return { kind: 'candidate', candidate: `candidate:1 1 udp 2122260223 ${address} 50000 typ ${type}` };
}

/** Drives a session of either role to an open link; returns it and the time. */
function open(role: 'initiator' | 'responder'): { s: Session; t: number } {
  const s = new Session({ sessionId: SID, role, peer: 'peer' });
  let t = 1_000;
  s.start(t);
  s.handle({ type: 'joined', peerPresent: true, iceServers: [] }, t);
  s.handle({ type: 'backend-ready' }, t);
  if (role === 'initiator') {
    s.handle({ type: 'local-description', kind: 'offer', sdp: sdp(FP_A), fingerprint: FP_A, restart: false }, t);
    s.handle({ type: 'signal', data: { kind: 'answer', sdp: sdp(FP_B) } }, (t += 5));
    s.handle({ type: 'answer-applied' }, t);
  } else {
    s.handle({ type: 'signal', data: { kind: 'offer', sdp: sdp(FP_B) } }, t);
    s.handle({ type: 'local-description', kind: 'answer', sdp: sdp(FP_A), fingerprint: FP_A, restart: false }, (t += 5));
  }
  s.handle({ type: 'proof-signed', cert: 'c', proof: 'p' }, t);
  s.handle({ type: 'signal', data: { kind: 'identity', cert: 'c2', proof: 'p2' } }, t);
  s.handle({ type: 'peer-verdict', verdict: ok }, t);
  s.handle({ type: 'transport', state: 'connected' }, (t += 50));
  expect(types(s.handle({ type: 'presented', verdict: null }, t))).toEqual(['clear-timer', 'opened']);
  return { s, t };
}

describe('session: network change', () => {
  it('initiator: reconnects signaling at once, restarts ICE as soon as it is back in the room, recovers on the new pair', () => {
    const { s, t } = open('initiator');
    const out = s.handle({ type: 'network-change' }, t);
    expect(out[0]).toEqual({ type: 'reconnect-signaling' });
    expect(out).toContainEqual({ type: 'path-lost' });
    // No restart offer into a socket that may sit on a gone address; the bound is the restart timer.
    expect(types(out)).not.toContain('create-offer');
    expect(out).toContainEqual({ type: 'set-timer', name: 'restart', at: t + SESSION_DEFAULTS.restartTimeoutMs });
    expect(s.handle({ type: 'joined', peerPresent: true, iceServers: [] }, t + 40)).toContainEqual({ type: 'create-offer', restart: true });
    // The restart selected a new pair and bytes flow on it: that is the recovery.
    expect(types(s.handle({ type: 'path', kind: 'direct' }, t + 900))).toEqual(['clear-timer', 'clear-timer', 'path-restored', 'clear-timer']);
    // Recovered: the restart timer no longer restarts.
    expect(s.handle({ type: 'timer', name: 'restart' }, t + SESSION_DEFAULTS.restartTimeoutMs)).toEqual([]);
  });

  it('initiator: the room never comes back, the restart timer restarts anyway', () => {
    const { s, t } = open('initiator');
    s.handle({ type: 'network-change' }, t);
    expect(s.handle({ type: 'timer', name: 'restart' }, t + SESSION_DEFAULTS.restartTimeoutMs)).toContainEqual({ type: 'create-offer', restart: true });
  });

  it('responder: reconnects signaling; the initiator restarts when the peer re-joins the room of an open link', () => {
    const r = open('responder');
    const out = r.s.handle({ type: 'network-change' }, r.t);
    expect(out[0]).toEqual({ type: 'reconnect-signaling' });
    expect(types(out)).not.toContain('create-offer');
    const i = open('initiator');
    expect(i.s.handle({ type: 'peer-joined' }, i.t)).toContainEqual({ type: 'create-offer', restart: true });
  });

  it('before the link is open, only the signaling socket is renewed', () => {
    const s = new Session({ sessionId: SID, role: 'initiator', peer: 'peer' });
    s.start(0);
    expect(s.handle({ type: 'network-change' }, 1)).toEqual([{ type: 'reconnect-signaling' }]);
  });
});

describe('session: relay-to-direct upgrade', () => {
  it('the retry is a direct-only restart with its own deadline; a direct path ends it', () => {
    const { s, t } = open('initiator');
    s.handle({ type: 'path', kind: 'relay' }, t);
    const at = t + SESSION_DEFAULTS.directRetryMs;
    const out = s.handle({ type: 'timer', name: 'direct-retry' }, at);
    expect(out).toContainEqual({ type: 'create-offer', restart: true, directOnly: true });
    expect(out).toContainEqual({ type: 'set-timer', name: 'direct-attempt', at: at + SESSION_DEFAULTS.directAttemptMs });
    expect(out).toContainEqual({ type: 'set-timer', name: 'direct-retry', at: at + SESSION_DEFAULTS.directRetryMs });
    const direct = s.handle({ type: 'path', kind: 'direct' }, at + 300);
    expect(direct).toContainEqual({ type: 'clear-timer', name: 'direct-attempt' });
    expect(direct).toContainEqual({ type: 'clear-timer', name: 'direct-retry' });
    expect(s.handle({ type: 'timer', name: 'direct-attempt' }, at + SESSION_DEFAULTS.directAttemptMs)).toEqual([]);
  });

  it('no direct path before the attempt deadline: one restart with the relay allowed, retried later', () => {
    const { s, t } = open('initiator');
    s.handle({ type: 'path', kind: 'relay' }, t);
    const at = t + SESSION_DEFAULTS.directRetryMs;
    s.handle({ type: 'timer', name: 'direct-retry' }, at);
    const out = s.handle({ type: 'timer', name: 'direct-attempt' }, at + SESSION_DEFAULTS.directAttemptMs);
    expect(out).toContainEqual({ type: 'create-offer', restart: true });
    expect(out).not.toContainEqual(expect.objectContaining({ directOnly: true }));
    expect(out).toContainEqual({ type: 'set-timer', name: 'direct-retry', at: at + SESSION_DEFAULTS.directAttemptMs + SESSION_DEFAULTS.directRetryMs });
  });

  it('the attempt failing (all direct checks failed) falls back at once and does not count as a lost path', () => {
    const { s, t } = open('initiator');
    s.handle({ type: 'path', kind: 'relay' }, t);
    s.handle({ type: 'timer', name: 'direct-retry' }, t + SESSION_DEFAULTS.directRetryMs);
    const out = s.handle({ type: 'transport', state: 'failed' }, t + SESSION_DEFAULTS.directRetryMs + 2_000);
    expect(out).toContainEqual({ type: 'create-offer', restart: true });
    expect(types(out)).not.toContain('path-lost');
  });

  it('a peer that signals relayed candidates only is forced onto the relay: no direct retries', () => {
    const { s, t } = open('initiator');
    s.handle({ type: 'signal', data: candidate('relay', '203.0.113.10') }, t);
    expect(s.handle({ type: 'path', kind: 'relay' }, t)).toEqual([{ type: 'clear-timer', name: 'direct-retry' }]);
    expect(s.handle({ type: 'timer', name: 'direct-retry' }, t + SESSION_DEFAULTS.directRetryMs)).toEqual([]);
    // A peer with a host candidate as well is relayed by the network, not by its policy.
    const other = open('initiator');
    other.s.handle({ type: 'signal', data: candidate('relay', '203.0.113.10') }, other.t);
    other.s.handle({ type: 'signal', data: candidate('host', '198.18.2.2') }, other.t);
    expect(other.s.handle({ type: 'path', kind: 'relay' }, other.t)).toEqual([{ type: 'set-timer', name: 'direct-retry', at: other.t + SESSION_DEFAULTS.directRetryMs }]);
  });
});

const iface = (address: string, extra: Partial<NetworkInterfaceInfo> = {}): NetworkInterfaceInfo =>
  ({ address, netmask: '255.255.255.0', family: 'IPv4', mac: '02:00:00:00:00:01', internal: false, cidr: `${address}/24`, ...extra }) as NetworkInterfaceInfo;

describe('interface watch', () => {
  it('keeps addresses ICE may use: no loopback, no link-local, IPv6 only when asked', () => {
    const ifaces = {
      lo: [iface('127.0.0.1', { internal: true })],
      eth0: [iface('198.18.1.2'), iface('169.254.3.4'), iface('2001:db8::2', { family: 'IPv6' }), iface('fe80::1', { family: 'IPv6' })],
    };
    expect(usableAddresses(ifaces, false)).toEqual(['198.18.1.2']);
    expect(usableAddresses(ifaces, true)).toEqual(['198.18.1.2', '2001:db8::2']);
  });

  it('reports what was added and removed, nothing when the set is the same in another order', () => {
    expect(diffAddresses(['198.18.1.2', '198.18.9.2'], ['198.18.9.2', '198.18.1.2'])).toBeNull();
    expect(diffAddresses(['198.18.1.2'], ['198.18.1.3'])).toEqual({ added: ['198.18.1.3'], removed: ['198.18.1.2'], current: ['198.18.1.3'] });
  });

  it('polls an injected reader and reports each change once; a failing read is no change', () => {
    let now: NodeJS.Dict<NetworkInterfaceInfo[]> = { eth0: [iface('198.18.1.2')] };
    let fail = false;
    const seen: unknown[] = [];
    const w = new NetworkWatch((c) => seen.push(c), { pollMs: 3_600_000, read: () => (fail ? (() => { throw new Error('no getifaddrs'); })() : now) });
    try {
      expect(w.check()).toBeNull();
      now = { eth0: [iface('198.18.1.3')] };
      fail = true;
      expect(w.check()).toBeNull();
      fail = false;
      expect(w.check()).toEqual({ added: ['198.18.1.3'], removed: ['198.18.1.2'], current: ['198.18.1.3'] });
      expect(w.check()).toBeNull();
      expect(seen).toHaveLength(1);
      expect(w.addresses).toEqual(['198.18.1.3']);
    } finally {
      w.stop();
    }
  });

  it('pinned addresses: only their leaving or coming back is a change', () => {
    const pinned = ['198.18.1.2'];
    expect(pinnedChange(diffAddresses(['198.18.1.2', '198.18.9.2'], ['198.18.9.2']), pinned)).toEqual({ added: [], removed: ['198.18.1.2'], current: ['198.18.9.2'] });
    expect(pinnedChange(diffAddresses(['198.18.9.2'], ['198.18.1.2', '198.18.9.2']), pinned)).toEqual({ added: ['198.18.1.2'], removed: [], current: ['198.18.1.2', '198.18.9.2'] });
    expect(pinnedChange(diffAddresses(['198.18.1.2', '198.18.9.2'], ['198.18.1.2', '198.18.9.3']), pinned)).toBeNull();
    expect(pinnedChange(null, pinned)).toBeNull();
  });

  it('a pinned watch reports its address leaving and coming back, not other changes; vanished() says which addresses went away', () => {
    let now: NodeJS.Dict<NetworkInterfaceInfo[]> = { eth0: [iface('198.18.1.2')], wlan0: [iface('198.18.9.2')] };
    const seen: unknown[] = [];
    const w = new NetworkWatch((c) => seen.push(c), { pollMs: 3_600_000, read: () => now, pinned: ['198.18.1.2', '127.0.0.1'] });
    try {
      now = { eth0: [iface('198.18.1.2')], wlan0: [iface('198.18.9.3')] }; // another interface renumbered: not ours
      expect(w.check()).toBeNull();
      now = { wlan0: [iface('198.18.9.3')] }; // the pinned address is gone (cable pulled, lease lost)
      expect(w.check()).toEqual({ added: [], removed: ['198.18.1.2'], current: ['198.18.9.3'] });
      expect(w.vanished('198.18.1.2')).toBe(true);
      expect(w.vanished('127.0.0.1')).toBe(false); // never usable, so it cannot go away
      now = { eth0: [iface('198.18.1.2')], wlan0: [iface('198.18.9.3')] }; // back
      expect(w.check()).toEqual({ added: ['198.18.1.2'], removed: [], current: ['198.18.1.2', '198.18.9.3'] });
      expect(w.vanished('198.18.1.2')).toBe(false);
      expect(seen).toHaveLength(2);
    } finally {
      w.stop();
    }
  });

  it('a real werift backend with a pinned host address reports that address leaving and coming back (so the link restarts at once)', async () => {
    let now: NodeJS.Dict<NetworkInterfaceInfo[]> = { eth0: [iface('198.18.1.2')], eth1: [iface('198.18.7.2')] };
    const read = (): NodeJS.Dict<NetworkInterfaceInfo[]> => now;
    const pinned = await createWeriftBackend({ iceServers: [], hostAddresses: ['198.18.1.2'] }, { networkWatch: { read, pollMs: 20 } });
    const waitFor = async (cond: () => boolean): Promise<void> => {
      const deadline = Date.now() + 10_000;
      while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    };
    try {
      let changes = 0;
      pinned.onNetworkChange = () => changes++;
      now = { eth0: [iface('198.18.1.2')], eth1: [iface('198.18.7.3')] }; // not the pinned address
      await new Promise((r) => setTimeout(r, 200));
      expect(changes).toBe(0);
      now = { eth1: [iface('198.18.7.3')] };
      await waitFor(() => changes === 1);
      expect(changes).toBe(1);
      now = { eth0: [iface('198.18.1.2')], eth1: [iface('198.18.7.3')] };
      await waitFor(() => changes === 2);
      expect(changes).toBe(2);
    } finally {
      await pinned.close();
    }
  });

  it('a real werift backend reports a change of its interfaces, and none when its pinned host addresses are not affected', async () => {
    let now: NodeJS.Dict<NetworkInterfaceInfo[]> = { eth0: [iface('198.18.1.2')] };
    const read = (): NodeJS.Dict<NetworkInterfaceInfo[]> => now;
    const watched = await createWeriftBackend({ iceServers: [] }, { networkWatch: { read, pollMs: 20 } });
    const pinned = await createWeriftBackend({ iceServers: [], hostAddresses: ['127.0.0.1'] }, { networkWatch: { read, pollMs: 20 } });
    try {
      let changes = 0;
      let pinnedChanges = 0;
      watched.onNetworkChange = () => changes++;
      pinned.onNetworkChange = () => pinnedChanges++;
      now = { eth0: [iface('198.18.4.3')] };
      const deadline = Date.now() + 10_000;
      while (changes === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(changes).toBe(1);
      expect(pinnedChanges).toBe(0);
    } finally {
      await watched.close();
      await pinned.close();
    }
  });
});
