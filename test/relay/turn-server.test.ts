/**
 * Scenario tests of the sans-IO TURN core on virtual time (RFC 8656): no
 * sockets, the real policy module and real hashes.
 */
import { describe, expect, it } from 'vitest';
import {
  Attr,
  StunClass,
  StunMethod,
  decodeChannelData,
  decodeUnknownAttributes,
  encodeChannelData,
  encodeRequestedAddressFamily,
  encodeRequestedTransport,
  findAttr,
} from '../../protocol/stun/index.js';
import { A, TestTurnClient, restCredential, type AttrList, type Response } from './helpers/turn-client.js';
import { Harness, RELAY_V4, RELAY_V6, SECRET } from './helpers/virtual.js';

class VClient {
  readonly turn: TestTurnClient;
  constructor(
    readonly h: Harness,
    readonly ip: string,
    readonly port: number,
    id = 'ep-1',
    secret = SECRET,
    expiresAt = Math.floor(h.now / 1000) + 3600,
  ) {
    const c = restCredential(secret, id, expiresAt);
    this.turn = new TestTurnClient(c.username, c.password);
  }
  get to(): string {
    return `udp:${this.ip}:${this.port}`;
  }
  send(bytes: Uint8Array): void {
    this.h.udp(this.ip, this.port, bytes);
  }
  /** One request and its answer; like real clients, retries once on 438 with the fresh nonce. */
  call(method: number, attrs: AttrList = [], sign?: boolean, retryStale = true): Response {
    this.send(this.turn.request(method, attrs, sign).bytes);
    const out = this.h.take(this.to);
    expect(out.length).toBe(1);
    const r = this.turn.read(out[0]!);
    if (r.code === 438 && retryStale && sign !== false) return this.call(method, attrs, sign, false);
    return r;
  }
  /** 401 challenge then the signed Allocate. */
  allocate(attrs: AttrList = [A.transportUdp()]): Response {
    if (this.turn.nonce === null) expect(this.call(StunMethod.Allocate, attrs, false).code).toBe(401);
    return this.call(StunMethod.Allocate, attrs);
  }
  relayId(): number {
    return [...this.h.bound.keys()].at(-1)!;
  }
}

const ok = (r: Response) => expect(r.cls, `code ${r.code}`).toBe(StunClass.SuccessResponse);

describe('Binding', () => {
  it('answers without credentials, with XOR-MAPPED-ADDRESS and FINGERPRINT', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    const r = c.call(StunMethod.Binding, [], false);
    ok(r);
    expect(r.mapped).toEqual({ family: 4, ip: '198.51.100.7', port: 40000 });
    expect(findAttr(r.msg, Attr.Fingerprint)).toBeDefined();
  });

  it('reports an IPv4 client seen through a dual-stack socket as IPv4', () => {
    const h = new Harness();
    const c = new VClient(h, '::ffff:198.51.100.7', 40000);
    expect(c.call(StunMethod.Binding, [], false).mapped).toEqual({ family: 4, ip: '198.51.100.7', port: 40000 });
    const v6 = new VClient(h, '2001:db8::7', 40000);
    expect(v6.call(StunMethod.Binding, [], false).mapped).toEqual({ family: 6, ip: '2001:db8::7', port: 40000 });
  });

  it('420 lists unknown comprehension-required attributes', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    const r = c.call(StunMethod.Binding, [[0x0024, new Uint8Array(4)], [0x7777, new Uint8Array(0)], [0x8888, new Uint8Array(0)]], false);
    expect(r.code).toBe(420);
    const u = decodeUnknownAttributes(findAttr(r.msg, Attr.UnknownAttributes)!.value);
    expect(u.ok && u.value).toEqual([0x0024, 0x7777]);
  });
});

describe('Allocate and authentication', () => {
  it('401 without credentials (REALM, NONCE, no integrity), then success with integrity', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    const ch = c.call(StunMethod.Allocate, [A.transportUdp()], false);
    expect(ch.code).toBe(401);
    expect(c.turn.realm).toBe('homelink');
    expect(c.turn.nonce).toMatch(/^[0-9a-f]{32}$/);
    expect(findAttr(ch.msg, Attr.MessageIntegrity)).toBeUndefined();
    const r = c.call(StunMethod.Allocate, [A.transportUdp()]);
    ok(r);
    expect(r.integrityOk).toBe(true);
    expect(r.relayed).toEqual({ family: 4, ip: RELAY_V4, port: h.bound.get(c.relayId()) });
    expect(r.mapped).toEqual({ family: 4, ip: '198.51.100.7', port: 40000 });
    expect(r.lifetime).toBe(600);
    expect(h.server.counters.allocations).toBe(1);
  });

  it('a retransmitted Allocate gets the same answer; another transaction gets 437', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    c.call(StunMethod.Allocate, [A.transportUdp()], false);
    const req = c.turn.request(StunMethod.Allocate, [A.transportUdp()]);
    c.send(req.bytes);
    const first = h.take(c.to);
    c.send(req.bytes);
    const again = h.take(c.to);
    expect(again).toEqual(first);
    expect(h.server.allocationCount).toBe(1);
    expect(c.call(StunMethod.Allocate, [A.transportUdp()]).code).toBe(437);
  });

  it('refuses a wrong password, an expired username, a malformed username (401) and missing fields (400)', () => {
    const h = new Harness();
    const bad = new VClient(h, '198.51.100.7', 40001, 'ep-1', 'not-the-secret');
    expect(bad.allocate().code).toBe(401);
    const expired = new VClient(h, '198.51.100.7', 40002, 'ep-1', SECRET, Math.floor(h.now / 1000) - 1);
    expect(expired.allocate().code).toBe(401);
    const malformed = new VClient(h, '198.51.100.7', 40003);
    malformed.turn.username = 'no-expiry-here';
    expect(malformed.allocate().code).toBe(401);
    expect(h.server.counters.authBadIntegrity).toBe(1);
    expect(h.server.counters.authExpired).toBe(1);
    expect(h.server.counters.authBadUsername).toBe(1);
    // MESSAGE-INTEGRITY without REALM/NONCE: 400.
    const c = new VClient(h, '198.51.100.7', 40004);
    c.turn.realm = 'homelink';
    c.turn.nonce = null;
    const w = c.turn.request(StunMethod.Allocate, [A.transportUdp()], true); // nonce attribute "x": stale, not missing
    c.send(w.bytes);
    expect(c.turn.read(h.take(c.to)[0]!).code).toBe(438);
    expect(h.server.allocationCount).toBe(0);
  });

  it('accepts every configured secret (rotation)', () => {
    const h = new Harness({ secrets: ['new-secret-2', SECRET] });
    expect(new VClient(h, '198.51.100.7', 40000, 'ep-1', SECRET).allocate().cls).toBe(StunClass.SuccessResponse);
    expect(new VClient(h, '198.51.100.7', 40001, 'ep-2', 'new-secret-2').allocate().cls).toBe(StunClass.SuccessResponse);
  });

  it('438 on a stale nonce, with a fresh one that works', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    c.call(StunMethod.Allocate, [A.transportUdp()], false);
    const old = c.turn.nonce;
    h.advance(601_000);
    const r = c.call(StunMethod.Allocate, [A.transportUdp()], undefined, false);
    expect(r.code).toBe(438);
    expect(c.turn.nonce).not.toBe(old);
    ok(c.call(StunMethod.Allocate, [A.transportUdp()]));
  });

  it('a nonce minted for one client address is stale at another', () => {
    const h = new Harness();
    const a = new VClient(h, '198.51.100.7', 40000);
    a.call(StunMethod.Allocate, [A.transportUdp()], false);
    const b = new VClient(h, '198.51.100.8', 40000);
    b.turn.realm = a.turn.realm;
    b.turn.nonce = a.turn.nonce;
    expect(b.call(StunMethod.Allocate, [A.transportUdp()], undefined, false).code).toBe(438);
  });

  it('400 without REQUESTED-TRANSPORT, 442 for TCP, 420 for DONT-FRAGMENT, 440 for an unsupported family', () => {
    const h = new Harness({ relayAddressV6: undefined });
    const c = new VClient(h, '198.51.100.7', 40000);
    c.call(StunMethod.Allocate, [], false);
    expect(c.call(StunMethod.Allocate, []).code).toBe(400);
    expect(c.call(StunMethod.Allocate, [[Attr.RequestedTransport, encodeRequestedTransport(6)]]).code).toBe(442);
    const df = c.call(StunMethod.Allocate, [A.transportUdp(), [Attr.DontFragment, new Uint8Array(0)]]);
    expect(df.code).toBe(420);
    expect(df.integrityOk).toBe(true);
    expect(c.call(StunMethod.Allocate, [A.transportUdp(), [Attr.RequestedAddressFamily, encodeRequestedAddressFamily(6)]]).code).toBe(440);
    expect(h.server.allocationCount).toBe(0);
  });

  it('EVEN-PORT gets an even relay port; with the R bit (a reservation) 508', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    expect(c.allocate([A.transportUdp(), [Attr.EvenPort, new Uint8Array([0x80])]]).code).toBe(508);
    const r = c.allocate([A.transportUdp(), [Attr.EvenPort, new Uint8Array([0x00])]]);
    ok(r);
    expect(r.relayed!.port % 2).toBe(0);
  });

  it('allocates IPv6 relayed addresses when asked and configured', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    const r = c.allocate([A.transportUdp(), [Attr.RequestedAddressFamily, encodeRequestedAddressFamily(6)]]);
    ok(r);
    expect(r.relayed?.ip).toBe(RELAY_V6);
  });

  it('441 when a request on an allocation uses another username', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    ok(c.allocate());
    const other = restCredential(SECRET, 'someone-else', Math.floor(h.now / 1000) + 3600);
    c.turn.username = other.username;
    c.turn.password = other.password;
    expect(c.call(StunMethod.Refresh, []).code).toBe(441);
  });
});

describe('Refresh and expiry', () => {
  it('refresh extends; lifetime is clamped to the maximum; lifetime 0 deletes; then 437', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    ok(c.allocate());
    const id = c.relayId();
    h.advance(500_000);
    expect(c.call(StunMethod.Refresh, [A.lifetime(99_999)]).lifetime).toBe(3600);
    h.advance(500_000); // past the original 600 s: still alive
    expect(h.released).toEqual([]);
    expect(c.call(StunMethod.Refresh, [A.lifetime(0)]).lifetime).toBe(0);
    expect(h.released).toEqual([id]);
    expect(h.server.allocationCount).toBe(0);
    expect(c.call(StunMethod.Refresh, []).code).toBe(437);
  });

  it('allocating and deleting in a loop does not grow the timer heap', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    for (let i = 0; i < 3000; i++) {
      ok(c.allocate());
      ok(c.call(StunMethod.CreatePermission, [A.peer('198.18.1.2', 1)]));
      ok(c.call(StunMethod.Refresh, [A.lifetime(0)]));
    }
    expect(h.server.allocationCount).toBe(0);
    expect(h.server.timerEntries).toBeLessThan(2100);
  });

  it('an allocation expires after its lifetime and its relay port is released', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    ok(c.allocate());
    const id = c.relayId();
    h.advance(599_000);
    expect(h.released).toEqual([]);
    h.advance(2_000);
    expect(h.released).toEqual([id]);
    expect(h.server.counters.allocationsExpired).toBe(1);
    expect(c.call(StunMethod.CreatePermission, [A.peer('198.18.1.2', 5000)]).code).toBe(437);
  });

  it('permissions expire after 300 s, channels after 600 s, each unless refreshed', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    ok(c.allocate([A.transportUdp(), A.lifetime(3600)]));
    const id = c.relayId();
    ok(c.call(StunMethod.CreatePermission, [A.peer('198.18.1.2', 5000)]));
    h.peer(id, '198.18.1.2', 5000, new Uint8Array([1]));
    expect(h.take(c.to).length).toBe(1); // Data indication
    h.advance(301_000);
    h.peer(id, '198.18.1.2', 5000, new Uint8Array([2]));
    expect(h.take(c.to).length).toBe(0);
    expect(h.server.counters.permissions).toBe(0);

    ok(c.call(StunMethod.ChannelBind, [A.channel(0x4000), A.peer('198.18.1.2', 5000)]));
    // Keep the permission alive with CreatePermission, let the channel lapse at 600 s.
    for (let i = 0; i < 3; i++) {
      h.advance(200_000);
      ok(c.call(StunMethod.CreatePermission, [A.peer('198.18.1.2', 5000)]));
    }
    h.udp(c.ip, c.port, encodeChannelData(0x4000, new Uint8Array([3]), false));
    expect(h.take(`peer:${id}:198.18.1.2:5000`).length).toBe(0);
    expect(h.server.counters.channels).toBe(0);
    expect(h.server.counters.dropNoChannel).toBe(1);
  });
});

describe('permissions, channels and data', () => {
  it('relays Send/Data and ChannelData both ways, only with a permission', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    ok(c.allocate());
    const id = c.relayId();
    c.send(c.turn.indication(StunMethod.Send, [A.peer('198.18.1.2', 5000), A.data(new Uint8Array([1, 2]))]));
    expect(h.take(`peer:${id}:198.18.1.2:5000`)).toEqual([]);
    ok(c.call(StunMethod.CreatePermission, [A.peer('198.18.1.2', 1)]));
    c.send(c.turn.indication(StunMethod.Send, [A.peer('198.18.1.2', 5000), A.data(new Uint8Array([1, 2]))]));
    expect(h.take(`peer:${id}:198.18.1.2:5000`)).toEqual([new Uint8Array([1, 2])]);
    // From a peer without permission: dropped.
    h.peer(id, '198.18.9.9', 5000, new Uint8Array([7]));
    expect(h.take(c.to)).toEqual([]);
    // Data indication for a peer with permission but no channel.
    h.peer(id, '198.18.1.2', 5000, new Uint8Array([8, 9]));
    const di = c.turn.read(h.take(c.to)[0]!);
    expect(di.method).toBe(StunMethod.Data);
    expect(di.peer).toEqual({ family: 4, ip: '198.18.1.2', port: 5000 });
    expect([...di.data!]).toEqual([8, 9]);
    // Channel both ways.
    ok(c.call(StunMethod.ChannelBind, [A.channel(0x4fff), A.peer('198.18.1.2', 5000)]));
    h.udp(c.ip, c.port, encodeChannelData(0x4fff, new Uint8Array([5, 6, 7]), false));
    expect(h.take(`peer:${id}:198.18.1.2:5000`)).toEqual([new Uint8Array([5, 6, 7])]);
    h.peer(id, '198.18.1.2', 5000, new Uint8Array([4]));
    const cd = decodeChannelData(h.take(c.to)[0]!, false);
    expect(cd.ok && cd.value.channel).toBe(0x4fff);
    // A channel number nobody bound: dropped.
    h.udp(c.ip, c.port, encodeChannelData(0x4001, new Uint8Array([1]), false));
    expect(h.sent).toEqual([]);
  });

  it('ChannelBind: 400 for a number out of range, a rebinding to another peer, a peer on another channel', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    ok(c.allocate());
    expect(c.call(StunMethod.ChannelBind, [A.channel(0x3fff), A.peer('198.18.1.2', 5000)]).code).toBe(400);
    expect(c.call(StunMethod.ChannelBind, [A.channel(0x8000), A.peer('198.18.1.2', 5000)]).code).toBe(400);
    ok(c.call(StunMethod.ChannelBind, [A.channel(0x7fff), A.peer('198.18.1.9', 5000)])); // RFC 5766 range, for old clients
    expect(c.call(StunMethod.ChannelBind, [A.channel(0x4000)]).code).toBe(400);
    ok(c.call(StunMethod.ChannelBind, [A.channel(0x4000), A.peer('198.18.1.2', 5000)]));
    ok(c.call(StunMethod.ChannelBind, [A.channel(0x4000), A.peer('198.18.1.2', 5000)])); // refresh
    expect(c.call(StunMethod.ChannelBind, [A.channel(0x4000), A.peer('198.18.1.2', 5001)]).code).toBe(400);
    expect(c.call(StunMethod.ChannelBind, [A.channel(0x4001), A.peer('198.18.1.2', 5000)]).code).toBe(400);
  });

  it('443 for a peer of the other family', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    ok(c.allocate());
    expect(c.call(StunMethod.CreatePermission, [A.peer('2001:4860::1', 5000)]).code).toBe(443);
  });

  it('a failed send to a peer drops that packet, never the allocation', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    ok(c.allocate());
    const id = c.relayId();
    ok(c.call(StunMethod.ChannelBind, [A.channel(0x4000), A.peer('198.18.1.2', 5000)]));
    h.server.peerSendFailed();
    h.udp(c.ip, c.port, encodeChannelData(0x4000, new Uint8Array([1]), false));
    expect(h.take(`peer:${id}:198.18.1.2:5000`).length).toBe(1);
    expect(h.server.counters.dropSendFailed).toBe(1);
    expect(h.server.allocationCount).toBe(1);
  });
});

describe('peer policy: every denied form gets 403', () => {
  const v4Denied = [
    '127.0.0.1', '127.255.255.254', '0.0.0.0', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1',
    '100.64.0.1', '169.254.169.254', '224.0.0.1', '239.255.255.250', '255.255.255.255', '240.0.0.1',
    '192.0.0.1', '203.0.113.99', RELAY_V4,
  ];
  const v6Denied = [
    '::1', '::', 'fe80::1', 'fc00::1', 'fd12:3456::1', 'ff02::1', '::ffff:127.0.0.1', '::ffff:10.0.0.1',
    '::ffff:169.254.169.254', '::127.0.0.1', '64:ff9b::a00:1', '64:ff9b::7f00:1', '2002:a00:1::1', '2002:7f00:1::1',
    '2001:db8::1', RELAY_V6,
  ];

  it('CreatePermission and ChannelBind refuse each; Send to each is dropped', () => {
    const h = new Harness();
    const c4 = new VClient(h, '198.51.100.7', 40000);
    ok(c4.allocate());
    const c6 = new VClient(h, '198.51.100.7', 40001, 'ep-6');
    ok(c6.allocate([A.transportUdp(), [Attr.RequestedAddressFamily, encodeRequestedAddressFamily(6)]]));
    for (const [c, list] of [[c4, v4Denied], [c6, v6Denied]] as const) {
      for (const ip of list) {
        expect(c.call(StunMethod.CreatePermission, [A.peer(ip, 5000)]).code, ip).toBe(403);
        expect(c.call(StunMethod.ChannelBind, [A.channel(0x4000), A.peer(ip, 5000)]).code, ip).toBe(403);
        c.send(c.turn.indication(StunMethod.Send, [A.peer(ip, 5000), A.data(new Uint8Array([1]))]));
      }
    }
    expect(h.sent.filter((s) => s.to.startsWith('peer:'))).toEqual([]);
    expect(h.server.counters.permissions).toBe(0);
    expect(h.server.counters.peersDenied).toBe((v4Denied.length + v6Denied.length) * 3);
    // One bad peer in a list refuses the whole request.
    expect(c4.call(StunMethod.CreatePermission, [A.peer('8.8.8.8', 1), A.peer('10.0.0.1', 1)]).code).toBe(403);
    expect(h.server.counters.permissions).toBe(0);
  });

  it('the relay\'s own address is a peer only at live relay ports (allocation to allocation)', () => {
    const h = new Harness();
    const a = new VClient(h, '198.51.100.7', 40000, 'ep-a');
    const b = new VClient(h, '198.51.100.8', 40000, 'ep-b');
    ok(a.allocate());
    const aId = a.relayId();
    ok(b.allocate());
    const bId = b.relayId();
    const aPort = h.bound.get(aId)!;
    const bPort = h.bound.get(bId)!;
    // Both ends behind UDP-blocking firewalls: each names the other's relayed address. Both
    // allocations live in this process, so the Send reaches b's client directly (hairpin), on
    // b's channel for a's relayed address, and no relay socket sends anything.
    ok(a.call(StunMethod.CreatePermission, [A.peer(RELAY_V4, bPort)]));
    ok(b.call(StunMethod.ChannelBind, [A.channel(0x4000), A.peer(RELAY_V4, aPort)]));
    a.send(a.turn.indication(StunMethod.Send, [A.peer(RELAY_V4, bPort), A.data(new Uint8Array([1]))]));
    expect(h.take(b.to)).toEqual([encodeChannelData(0x4000, new Uint8Array([1]), false)]);
    expect(h.sent).toEqual([]);
    expect(h.server.counters.hairpinPackets).toBe(1);
    // Any other port of the relay stays closed: listening ports, metrics, free relay ports.
    for (const port of [3478, 5349, 9100, bPort + 100]) {
      expect(a.call(StunMethod.CreatePermission, [A.peer(RELAY_V4, port)]).code, String(port)).toBe(403);
      expect(a.call(StunMethod.ChannelBind, [A.channel(0x4001), A.peer(RELAY_V4, port)]).code, String(port)).toBe(403);
      a.send(a.turn.indication(StunMethod.Send, [A.peer(RELAY_V4, port), A.data(new Uint8Array([2]))]));
      expect(h.sent, String(port)).toEqual([]);
    }
    // Once b's allocation is gone, its port is no longer a peer.
    ok(b.call(StunMethod.Refresh, [A.lifetime(0)]));
    a.send(a.turn.indication(StunMethod.Send, [A.peer(RELAY_V4, bPort), A.data(new Uint8Array([3]))]));
    expect(h.sent).toEqual([]);
    expect(h.server.counters.hairpinPackets).toBe(1);
  });

  it("a sibling worker's relayed port is a peer through the kernel; a port outside its share is not", () => {
    // This process owns 50000-50099 (the harness binds from 50000); a sibling worker 50100-50199.
    const h = new Harness({ siblingRelayPort: (p) => p >= 50100 && p <= 50199 });
    const a = new VClient(h, '198.51.100.7', 40000, 'ep-a');
    ok(a.allocate());
    const aId = a.relayId();
    ok(a.call(StunMethod.CreatePermission, [A.peer(RELAY_V4, 50150)]));
    ok(a.call(StunMethod.ChannelBind, [A.channel(0x4000), A.peer(RELAY_V4, 50150)]));
    a.send(encodeChannelData(0x4000, new Uint8Array([9]), false));
    // Not in this process: sent from a's relay socket to the sibling's port, not hairpinned.
    expect(h.sent).toEqual([{ to: `peer:${aId}:${RELAY_V4}:50150`, data: new Uint8Array([9]) }]);
    expect(h.server.counters.hairpinPackets).toBe(0);
    // And the sibling's packets from that port reach a's client on the channel.
    h.sent.length = 0;
    h.peer(aId, RELAY_V4, 50150, new Uint8Array([8]));
    expect(h.take(a.to)).toEqual([encodeChannelData(0x4000, new Uint8Array([8]), false)]);
    for (const port of [3478, 50099, 50200]) expect(a.call(StunMethod.CreatePermission, [A.peer(RELAY_V4, port)]).code, String(port)).toBe(403);
  });

  it('allows global addresses and the allow-listed lab range; loopback only with the flag', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    ok(c.allocate());
    ok(c.call(StunMethod.CreatePermission, [A.peer('8.8.8.8', 1), A.peer('198.18.200.1', 1), A.peer('198.19.0.1', 1)]));
    const h2 = new Harness({ allowLoopback: true });
    const c2 = new VClient(h2, '127.0.0.1', 40000);
    ok(c2.allocate());
    ok(c2.call(StunMethod.CreatePermission, [A.peer('127.0.0.1', 1)]));
    expect(c2.call(StunMethod.CreatePermission, [A.peer('10.0.0.1', 1)]).code).toBe(403);
  });
});

describe('quotas', () => {
  it('486 past the per-username quota, 508 past the total', () => {
    const h = new Harness({ maxAllocationsPerUsername: 2, maxAllocations: 3 });
    for (let p = 0; p < 2; p++) ok(new VClient(h, '198.51.100.7', 40000 + p, 'ep-a').allocate());
    expect(new VClient(h, '198.51.100.7', 40010, 'ep-a').allocate().code).toBe(486);
    ok(new VClient(h, '198.51.100.7', 40011, 'ep-b').allocate());
    expect(new VClient(h, '198.51.100.7', 40012, 'ep-c').allocate().code).toBe(508);
    expect(h.server.counters.quotaAllocationsPerUser).toBe(1);
    expect(h.server.counters.quotaAllocationsTotal).toBe(1);
  });

  it('508 past the permissions per allocation', () => {
    const h = new Harness({ maxPermissionsPerAllocation: 2 });
    const c = new VClient(h, '198.51.100.7', 40000);
    ok(c.allocate());
    ok(c.call(StunMethod.CreatePermission, [A.peer('198.18.0.1', 1), A.peer('198.18.0.2', 1)]));
    expect(c.call(StunMethod.CreatePermission, [A.peer('198.18.0.3', 1)]).code).toBe(508);
    ok(c.call(StunMethod.CreatePermission, [A.peer('198.18.0.1', 1)])); // refreshing an existing one is fine
  });

  it('508 when no relay port can be bound, and nothing is left behind', () => {
    const h = new Harness();
    h.failBinds = true;
    expect(new VClient(h, '198.51.100.7', 40000).allocate().code).toBe(508);
    expect(h.server.allocationCount).toBe(0);
    expect(h.server.counters.quotaRelayPorts).toBe(1);
  });

  it('the bandwidth cap drops what exceeds it and refills with time', () => {
    const h = new Harness({ bandwidthBytesPerSecond: 10_000, bandwidthBurstBytes: 2_000 });
    const c = new VClient(h, '198.51.100.7', 40000);
    ok(c.allocate());
    const id = c.relayId();
    ok(c.call(StunMethod.ChannelBind, [A.channel(0x4000), A.peer('198.18.1.2', 5000)]));
    const pkt = encodeChannelData(0x4000, new Uint8Array(500), false);
    for (let i = 0; i < 10; i++) h.udp(c.ip, c.port, pkt);
    expect(h.take(`peer:${id}:198.18.1.2:5000`).length).toBe(4);
    expect(h.server.counters.dropBandwidth).toBe(6);
    h.advance(100); // 1,000 bytes of tokens
    for (let i = 0; i < 10; i++) h.udp(c.ip, c.port, pkt);
    expect(h.take(`peer:${id}:198.18.1.2:5000`).length).toBe(2);
  });

  it('a draining server refuses new allocations with 508 and keeps existing ones', () => {
    const h = new Harness();
    const c = new VClient(h, '198.51.100.7', 40000);
    ok(c.allocate());
    h.server.startDrain();
    expect(new VClient(h, '198.51.100.7', 40001).allocate().code).toBe(508);
    ok(c.call(StunMethod.Refresh, []));
  });
});

/** Two UDP clients with an allocation each (for channels to the other's relayed address). */
function pair(h = new Harness()) {
  const a = new VClient(h, '198.51.100.7', 40000, 'ep-a');
  const b = new VClient(h, '198.51.100.8', 41000, 'ep-b');
  ok(a.allocate());
  const aId = a.relayId();
  ok(b.allocate());
  const bId = b.relayId();
  return { h, a, b, aId, bId, aPort: h.bound.get(aId)!, bPort: h.bound.get(bId)! };
}

/** A TCP client on connection `connId` with an allocation (after the 401 round); its TURN client. */
function streamAllocation(h: Harness, connId: number, ip: string, id: string): TestTurnClient {
  h.server.openStream(connId, 'tcp', ip, 50000, h.now);
  const cred = restCredential(SECRET, id, Math.floor(h.now / 1000) + 3600);
  const t = new TestTurnClient(cred.username, cred.password);
  h.stream(connId, t.request(StunMethod.Allocate, [A.transportUdp()], false).bytes);
  expect(t.read(h.take(`conn:${connId}`)[0]!).code).toBe(401);
  h.stream(connId, t.request(StunMethod.Allocate, [A.transportUdp()]).bytes);
  ok(t.read(h.take(`conn:${connId}`)[0]!));
  return t;
}

describe('hairpin: allocation to allocation inside one relay process', () => {

  it('ChannelData goes from one client to the other on the receiver\'s channel number, both ways, with no relay socket in between', () => {
    const { h, a, b, aPort, bPort } = pair();
    ok(a.call(StunMethod.ChannelBind, [A.channel(0x4001), A.peer(RELAY_V4, bPort)]));
    ok(b.call(StunMethod.ChannelBind, [A.channel(0x4abc), A.peer(RELAY_V4, aPort)]));
    // Padding after the length (allowed over UDP) is not forwarded.
    const padded = new Uint8Array([...encodeChannelData(0x4001, new Uint8Array([1, 2, 3]), false), 0, 0, 0]);
    a.send(padded);
    expect(h.take(b.to)).toEqual([encodeChannelData(0x4abc, new Uint8Array([1, 2, 3]), false)]);
    b.send(encodeChannelData(0x4abc, new Uint8Array(1200).fill(7), false));
    expect(h.take(a.to)).toEqual([encodeChannelData(0x4001, new Uint8Array(1200).fill(7), false)]);
    expect(h.sent).toEqual([]);
    const c = h.server.counters;
    expect([c.hairpinPackets, c.packetsToPeer, c.packetsToClient, c.bytesToPeer, c.bytesToClient]).toEqual([2, 2, 2, 1203, 1203]);
  });

  it('the receiving allocation\'s rules still apply: no permission drops, no channel gives a Data indication from the sender\'s relayed address', () => {
    const { h, a, b, aPort, bPort } = pair();
    ok(a.call(StunMethod.ChannelBind, [A.channel(0x4001), A.peer(RELAY_V4, bPort)]));
    // b has no permission for the relay's address yet: dropped there, as from the kernel.
    a.send(encodeChannelData(0x4001, new Uint8Array([1]), false));
    expect(h.sent).toEqual([]);
    expect(h.server.counters.dropNoPermission).toBe(1);
    // A permission without a channel: a Data indication naming a's relayed address.
    ok(b.call(StunMethod.CreatePermission, [A.peer(RELAY_V4, aPort)]));
    a.send(encodeChannelData(0x4001, new Uint8Array([2, 3]), false));
    const [ind] = h.take(b.to);
    const r = b.turn.read(ind!);
    expect([r.method, r.cls]).toEqual([StunMethod.Data, StunClass.Indication]);
    expect(r.peer).toEqual({ family: 4, ip: RELAY_V4, port: aPort });
    expect([...r.data!]).toEqual([2, 3]);
    expect(h.sent).toEqual([]);
  });

  it('a TCP client reaches a UDP client\'s allocation (padded in, unpadded out), and the reverse is padded', () => {
    const h = new Harness();
    const b = new VClient(h, '198.51.100.8', 41000, 'ep-b');
    ok(b.allocate());
    const bPort = h.bound.get(b.relayId())!;
    const t = streamAllocation(h, 7, '198.51.100.7', 'ep-s');
    const tPort = h.bound.get([...h.bound.keys()].at(-1)!)!;
    h.stream(7, t.request(StunMethod.ChannelBind, [A.channel(0x4002), A.peer(RELAY_V4, bPort)]).bytes);
    ok(t.read(h.take('conn:7')[0]!));
    ok(b.call(StunMethod.ChannelBind, [A.channel(0x4003), A.peer(RELAY_V4, tPort)]));
    h.stream(7, encodeChannelData(0x4002, new Uint8Array([1, 2, 3]), true));
    expect(h.take(b.to)).toEqual([encodeChannelData(0x4003, new Uint8Array([1, 2, 3]), false)]);
    b.send(encodeChannelData(0x4003, new Uint8Array([4, 5]), false));
    expect(h.take('conn:7')).toEqual([encodeChannelData(0x4002, new Uint8Array([4, 5]), true)]);
    expect(h.sent).toEqual([]);
    expect(h.server.counters.hairpinPackets).toBe(2);
  });

  it('IPv6 allocations hairpin by the canonical relay address; a port of the other family is no peer', () => {
    const h = new Harness({ relayAddressV6: '2001:0db8:0:0::0010' }); // the same address as RELAY_V6, written long
    const a = new VClient(h, '2001:db8:1::7', 40000, 'ep-a');
    const b = new VClient(h, '2001:db8:1::8', 41000, 'ep-b');
    const v4 = new VClient(h, '198.51.100.9', 42000, 'ep-c');
    const six: AttrList = [A.transportUdp(), [Attr.RequestedAddressFamily, encodeRequestedAddressFamily(6)]];
    ok(a.allocate(six));
    const aPort = h.bound.get(a.relayId())!;
    ok(b.allocate(six));
    const bPort = h.bound.get(b.relayId())!;
    ok(v4.allocate());
    const v4Port = h.bound.get(v4.relayId())!;
    ok(a.call(StunMethod.ChannelBind, [A.channel(0x4001), A.peer(RELAY_V6, bPort)]));
    ok(b.call(StunMethod.ChannelBind, [A.channel(0x4002), A.peer(RELAY_V6, aPort)]));
    a.send(encodeChannelData(0x4001, new Uint8Array([9]), false));
    expect(h.take(b.to)).toEqual([encodeChannelData(0x4002, new Uint8Array([9]), false)]);
    // The v4 allocation's port named on the v6 relay address is no v6 allocation: not a peer.
    expect(a.call(StunMethod.ChannelBind, [A.channel(0x4003), A.peer(RELAY_V6, v4Port)]).code).toBe(403);
    expect(h.sent).toEqual([]);
    expect(h.server.counters.hairpinPackets).toBe(1);
  });
});

describe('stream connections', () => {
  it('serves TURN over a stream; closing the connection deletes the allocation', () => {
    const h = new Harness();
    h.server.openStream(7, 'tcp', '198.51.100.7', 50000, h.now);
    const cred = restCredential(SECRET, 'ep-s', Math.floor(h.now / 1000) + 3600);
    const t = new TestTurnClient(cred.username, cred.password);
    // Challenge and allocate in one write, the second request split over two writes.
    const first = t.request(StunMethod.Allocate, [A.transportUdp()], false).bytes;
    h.stream(7, first);
    expect(t.read(h.take('conn:7')[0]!).code).toBe(401);
    const req = t.request(StunMethod.Allocate, [A.transportUdp()]).bytes;
    h.stream(7, req.subarray(0, 10));
    expect(h.take('conn:7')).toEqual([]);
    h.stream(7, req.subarray(10));
    ok(t.read(h.take('conn:7')[0]!));
    const id = [...h.bound.keys()].at(-1)!;
    h.stream(7, t.request(StunMethod.ChannelBind, [A.channel(0x4002), A.peer('198.18.1.2', 5000)]).bytes);
    ok(t.read(h.take('conn:7')[0]!));
    h.stream(7, encodeChannelData(0x4002, new Uint8Array([1, 2, 3]), true));
    expect(h.take(`peer:${id}:198.18.1.2:5000`)).toEqual([new Uint8Array([1, 2, 3])]);
    h.peer(id, '198.18.1.2', 5000, new Uint8Array([4, 5]));
    const back = h.take('conn:7')[0]!;
    expect(back.length).toBe(8); // padded on a stream
    h.server.closeStream(7);
    h.flush();
    expect(h.released).toEqual([id]);
    expect(h.server.allocationCount).toBe(0);
  });

  it('closes a connection that announces a frame over the buffer bound or sends garbage', () => {
    const h = new Harness({ maxStreamBufferBytes: 1024 });
    h.server.openStream(1, 'tcp', '198.51.100.7', 50000, h.now);
    h.stream(1, new Uint8Array([0x40, 0x00, 0x08, 0x00]));
    expect(h.closed).toEqual([1]);
    h.server.openStream(2, 'tls', '198.51.100.7', 50001, h.now);
    // A TLS ClientHello on a plain TCP port: its first bytes parse as a STUN length, the cookie is wrong.
    const hello = new Uint8Array(300);
    hello.set([0x16, 0x03, 0x01, 0x00, 0x2c, 0x01, 0x00, 0x00, 0x28, 0x03, 0x03]);
    h.stream(2, hello);
    expect(h.closed).toEqual([1, 2]);
    expect(h.server.counters.quotaStreamBuffer).toBe(1);
  });
});

describe('routes for a driver that forwards channel traffic itself (fastRoutes)', () => {
  it('a channel gets a route valid until the earlier of its and its permission\'s expiry; refreshes move it; expiry removes it', () => {
    const h = new Harness({ fastRoutes: true });
    const c = new VClient(h, '198.51.100.7', 40000);
    ok(c.allocate([A.transportUdp(), A.lifetime(3600)]));
    const id = c.relayId();
    ok(c.call(StunMethod.CreatePermission, [A.peer('198.18.1.2', 1)]));
    expect(h.routes).toEqual([]); // a permission alone: Data indications, the core's path
    const t0 = h.now;
    ok(c.call(StunMethod.ChannelBind, [A.channel(0x4001), A.peer('198.18.1.2', 5000)]));
    const client = { kind: 'udp', listener: 0, ip: '198.51.100.7', port: 40000 };
    // The bind refreshes the permission (300 s), which bounds the channel's 600 s.
    expect(h.routes.at(-1)).toEqual({ type: 'route', relayId: id, channel: 0x4001, client, peerIp: '198.18.1.2', peerPort: 5000, expiresAt: t0 + 300_000 });
    h.routes.length = 0;
    h.advance(200_000);
    ok(c.call(StunMethod.CreatePermission, [A.peer('198.18.1.2', 1)]));
    expect(h.routes).toEqual([{ type: 'route', relayId: id, channel: 0x4001, client, peerIp: '198.18.1.2', peerPort: 5000, expiresAt: t0 + 500_000 }]);
    h.routes.length = 0;
    h.advance(200_000);
    ok(c.call(StunMethod.CreatePermission, [A.peer('198.18.1.2', 1)]));
    // Now the channel's own 600 s come first.
    expect(h.routes).toEqual([{ type: 'route', relayId: id, channel: 0x4001, client, peerIp: '198.18.1.2', peerPort: 5000, expiresAt: t0 + 600_000 }]);
    h.routes.length = 0;
    h.advance(200_001);
    expect(h.routes).toEqual([{ type: 'unroute', relayId: id, channel: 0x4001 }]);
    expect(h.server.counters.channels).toBe(0);
  });

  it('an ending allocation takes its routes with its relay socket (no unroute), and without fastRoutes there are none', () => {
    const h = new Harness({ fastRoutes: true });
    const c = new VClient(h, '198.51.100.7', 40000);
    ok(c.allocate());
    const id = c.relayId();
    ok(c.call(StunMethod.ChannelBind, [A.channel(0x4001), A.peer('198.18.1.2', 5000)]));
    ok(c.call(StunMethod.ChannelBind, [A.channel(0x4002), A.peer('198.18.1.3', 5000)]));
    expect(h.routes.map((r) => r.type)).toEqual(['route', 'route']);
    ok(c.call(StunMethod.Refresh, [A.lifetime(0)]));
    expect(h.released).toEqual([id]);
    expect(h.routes.map((r) => r.type)).toEqual(['route', 'route']);

    const plain = new Harness();
    const d = new VClient(plain, '198.51.100.7', 40000);
    ok(d.allocate());
    ok(d.call(StunMethod.ChannelBind, [A.channel(0x4001), A.peer('198.18.1.2', 5000)]));
    expect(plain.routes).toEqual([]);
  });

  it('a channel to another allocation of this process names it (hairpin); a stream client gets no route', () => {
    const { h, a, aId, bId, aPort, bPort } = pair(new Harness({ fastRoutes: true }));
    ok(a.call(StunMethod.ChannelBind, [A.channel(0x4001), A.peer(RELAY_V4, bPort)]));
    expect(h.routes.at(-1)).toMatchObject({ type: 'route', relayId: aId, channel: 0x4001, peerIp: RELAY_V4, peerPort: bPort, hairpin: { relayId: bId, fromIp: RELAY_V4, fromPort: aPort } });
    // A sibling worker's port on the relay's address: through the kernel, a plain route.
    const lab = new Harness({ fastRoutes: true, siblingRelayPort: (p) => p === 9 });
    const l = new VClient(lab, '198.51.100.7', 40000, 'ep-l');
    ok(l.allocate());
    ok(l.call(StunMethod.ChannelBind, [A.channel(0x4001), A.peer(RELAY_V4, 9)]));
    expect(lab.routes.at(-1)).not.toHaveProperty('hairpin');
    h.routes.length = 0;
    const t = streamAllocation(h, 7, '198.51.100.9', 'ep-s');
    h.stream(7, t.request(StunMethod.ChannelBind, [A.channel(0x4002), A.peer('198.18.1.2', 5000)]).bytes);
    ok(t.read(h.take('conn:7')[0]!));
    expect(h.routes).toEqual([]);
  });

  it('the driver\'s token bucket is the one the core takes from, and a refusal counts as a bandwidth drop', () => {
    const asked: Array<[number, number]> = [];
    let allow = true;
    const h = new Harness({ bandwidthBytesPerSecond: 1000, takeTokens: (relayId, bytes) => (asked.push([relayId, bytes]), allow) });
    const c = new VClient(h, '198.51.100.7', 40000);
    ok(c.allocate());
    const id = c.relayId();
    ok(c.call(StunMethod.ChannelBind, [A.channel(0x4001), A.peer('198.18.1.2', 5000)]));
    c.send(encodeChannelData(0x4001, new Uint8Array(100), false));
    expect(h.take(`peer:${id}:198.18.1.2:5000`).length).toBe(1);
    allow = false;
    h.peer(id, '198.18.1.2', 5000, new Uint8Array(50));
    expect(h.take(c.to)).toEqual([]);
    expect(asked).toEqual([[id, 100], [id, 50]]);
    expect(h.server.counters.dropBandwidth).toBe(1);
  });
});
