/**
 * The TURN core's rules for TCP/TLS connections (issue 9 item 6) on virtual time: a handshake
 * deadline, an idle deadline that only whole frames push back, and a per-source connection
 * cap. The same rules run on real sockets in stream-limits.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { StreamFramer, StunClass, StunMethod, StunWriter } from '../../protocol/stun/index.js';
import { streamSourceKey } from '../../relay/turn/server.js';
import { A, TestTurnClient, restCredential } from './helpers/turn-client.js';
import { Harness, SECRET } from './helpers/virtual.js';

const IP = '198.51.100.7';
const OTHER = '198.51.100.8';

function binding(seq: number): Uint8Array {
  return new StunWriter(StunMethod.Binding, StunClass.Request, new Uint8Array(12).fill(seq & 0xff)).finish();
}

describe('TLS handshake deadline', () => {
  it('closes a TLS connection whose handshake has not finished in time, and counts it', () => {
    const h = new Harness({ streamHandshakeTimeoutMs: 10_000 });
    expect(h.server.openStream(1, 'tls', IP, 40000, h.now)).toBe(true);
    h.advance(9_999);
    expect(h.closed).toEqual([]);
    h.advance(1);
    expect(h.closed).toEqual([1]);
    expect(h.server.counters.streamHandshakeTimeouts).toBe(1);
    expect(h.server.counters.streamIdleTimeouts).toBe(0);
  });

  it('a finished handshake switches to the idle deadline', () => {
    const h = new Harness({ streamHandshakeTimeoutMs: 10_000, streamIdleTimeoutMs: 30_000 });
    h.server.openStream(1, 'tls', IP, 40000, h.now);
    h.advance(2_000);
    h.server.streamSecured(1, h.now);
    h.advance(20_000); // past the handshake deadline: still open
    expect(h.closed).toEqual([]);
    h.advance(10_000); // 30 s after the handshake with no frame
    expect(h.closed).toEqual([1]);
    expect(h.server.counters.streamIdleTimeouts).toBe(1);
    expect(h.server.counters.streamHandshakeTimeouts).toBe(0);
  });
});

describe('idle deadline on whole frames', () => {
  it('closes a connection dribbling one byte at a time although bytes keep coming', () => {
    const h = new Harness({ streamIdleTimeoutMs: 30_000 });
    h.server.openStream(1, 'tcp', IP, 40000, h.now);
    const frame = binding(1);
    // One byte every 2 s: under the old byte-based timer this kept the slot for ever.
    for (let i = 0; i < frame.length - 1 && h.closed.length === 0; i++) {
      h.stream(1, frame.subarray(i, i + 1));
      h.advance(2_000);
    }
    expect(h.closed).toEqual([1]);
    expect(h.server.counters.streamIdleTimeouts).toBe(1);
    expect(h.take('conn:1')).toEqual([]);
  });

  it('keeps a slow client that sends whole frames within the deadline', () => {
    const h = new Harness({ streamIdleTimeoutMs: 30_000 });
    h.server.openStream(1, 'tcp', IP, 40000, h.now);
    for (let i = 0; i < 20; i++) {
      h.advance(25_000);
      h.stream(1, binding(i));
      expect(h.take('conn:1')).toHaveLength(1);
    }
    expect(h.closed).toEqual([]);
  });

  it('keeps a quiet connection while it holds an allocation, and applies the rule again once it ends', () => {
    const h = new Harness({ streamIdleTimeoutMs: 30_000 });
    h.server.openStream(1, 'tcp', IP, 40000, h.now);
    const cred = restCredential(SECRET, 'ep-quiet', Math.floor(h.now / 1000) + 7200);
    const t = new TestTurnClient(cred.username, cred.password);
    h.stream(1, t.request(StunMethod.Allocate, [A.transportUdp()], false).bytes);
    expect(t.read(h.take('conn:1')[0]!).code).toBe(401);
    h.stream(1, t.request(StunMethod.Allocate, [A.transportUdp(), A.lifetime(600)]).bytes);
    expect(t.read(h.take('conn:1')[0]!).cls).toBe(StunClass.SuccessResponse);
    h.advance(590_000); // silent for almost the whole allocation lifetime
    expect(h.closed).toEqual([]);
    h.advance(10_000); // the allocation expires
    expect(h.server.allocationCount).toBe(0);
    h.advance(30_000);
    expect(h.closed).toEqual([1]);
  });
});

describe('per-source connection cap', () => {
  it('refuses the N+1th connection from one address while another address still gets in', () => {
    const h = new Harness({ maxStreamsPerIp: 3 });
    for (let i = 1; i <= 3; i++) expect(h.server.openStream(i, i % 2 ? 'tcp' : 'tls', IP, 40000 + i, h.now)).toBe(true);
    expect(h.server.openStream(4, 'tcp', IP, 40004, h.now)).toBe(false);
    expect(h.server.openStream(5, 'tls', IP, 40005, h.now)).toBe(false);
    expect(h.server.counters.streamRefusedPerIp).toBe(2);
    expect(h.server.openStream(6, 'tcp', OTHER, 40006, h.now)).toBe(true);
    // A refused connection holds nothing: bytes for it are ignored.
    h.stream(4, binding(4));
    expect(h.take('conn:4')).toEqual([]);
    // Closing one frees its slot.
    h.server.closeStream(2);
    expect(h.server.openStream(7, 'tcp', IP, 40007, h.now)).toBe(true);
    expect(h.server.openStream(8, 'tcp', IP, 40008, h.now)).toBe(false);
  });

  it('frees the slot of a connection closed by a deadline', () => {
    const h = new Harness({ maxStreamsPerIp: 1, streamHandshakeTimeoutMs: 1_000 });
    h.server.openStream(1, 'tls', IP, 40000, h.now);
    expect(h.server.openStream(2, 'tls', IP, 40001, h.now)).toBe(false);
    h.advance(1_000);
    expect(h.closed).toEqual([1]);
    expect(h.server.openStream(3, 'tls', IP, 40002, h.now)).toBe(true);
  });

  it('counts an IPv6 /64 as one source, and IPv4-mapped addresses as IPv4', () => {
    expect(streamSourceKey('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(streamSourceKey('2001:DB8:1:2:bbbb:cccc:dddd:eeee')).toBe('2001:db8:1:2::/64');
    expect(streamSourceKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(streamSourceKey('::1')).toBe('0:0:0:0::/64');
    expect(streamSourceKey('::ffff:198.51.100.7')).toBe('198.51.100.7');
    expect(streamSourceKey('198.51.100.7')).toBe('198.51.100.7');
    const h = new Harness({ maxStreamsPerIp: 2 });
    expect(h.server.openStream(1, 'tcp', '2001:db8:1:2::a', 40000, h.now)).toBe(true);
    expect(h.server.openStream(2, 'tcp', '2001:db8:1:2::b', 40000, h.now)).toBe(true);
    expect(h.server.openStream(3, 'tcp', '2001:db8:1:2:ffff::c', 40000, h.now)).toBe(false);
    expect(h.server.openStream(4, 'tcp', '2001:db8:1:3::a', 40000, h.now)).toBe(true);
    expect(h.server.openStream(5, 'tcp', '::ffff:198.51.100.7', 40000, h.now)).toBe(true);
    expect(h.server.openStream(6, 'tcp', '198.51.100.7', 40001, h.now)).toBe(true);
    expect(h.server.openStream(7, 'tcp', '198.51.100.7', 40002, h.now)).toBe(false);
  });

  it('keeps the timer heap bounded when connections come and go', () => {
    const h = new Harness({ maxStreamsPerIp: 5 });
    for (let i = 1; i <= 20_000; i++) {
      h.server.openStream(i, 'tls', IP, 40000 + (i % 20000), h.now);
      h.server.closeStream(i);
    }
    expect(h.server.timerEntries).toBeLessThan(3_000);
  });
});

describe('stream framer buffer growth', () => {
  it('grows geometrically for a 64 KiB frame sent one byte per chunk, and bounds memory by what arrived', () => {
    const f = new StreamFramer(70_000);
    const frame = new Uint8Array(4 + 65_536);
    frame.set([0x40, 0x00, 0xff, 0xff]); // ChannelData, 65,535 bytes of data, padded to 65,536
    for (let i = 4; i < frame.length; i++) frame[i] = i & 0xff;
    const capacities = new Set<number>();
    for (let i = 0; i < frame.length; i++) {
      expect(f.push(frame.subarray(i, i + 1)).ok).toBe(true);
      const r = f.next();
      expect(r.ok).toBe(true);
      if (i < frame.length - 1) {
        expect(r.ok && r.value).toBeNull();
        capacities.add(f.capacity);
        // Never more than twice what arrived (plus the small first buffer): a header alone buys no 64 KiB.
        expect(f.capacity).toBeLessThanOrEqual(Math.max(64, 2 * (i + 1)));
      } else {
        expect(r.ok && r.value && r.value.bytes).toEqual(frame);
      }
    }
    // Doubling from 64 B to 64 KiB: about 11 sizes. Exact growth had one per byte.
    expect(capacities.size).toBeLessThanOrEqual(12);
  });
});
