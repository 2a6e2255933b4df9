/**
 * The werift backend and identity binding, on two real werift peers wired back to back in
 * process (no signaling service needed): fingerprints, the DTLS fingerprint check, proofs,
 * backpressured channels both ways, reliable and unreliable.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createWeriftBackend, newDtlsCertificate, prepareDtlsCertificate, readySpareCertificates, SPARE_DTLS_CERTIFICATES } from '../../client/webrtc/werift.js';
import { sdpFingerprints, type DtlsCertificate, type PeerBackend, type RawChannel } from '../../client/webrtc/backend.js';
import { Channel } from '../../client/channel.js';
import { checkPresentedFingerprint, signProof, verifyPeer } from '../../client/identity.js';
import { dtlsLog, handshakeRecords, sha256Of, testIssuer, transfer, within } from './helpers.js';

const LOOPBACK = { iceServers: [], hostAddresses: ['127.0.0.1'] } as const;
const open: PeerBackend[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((b) => b.close()));
});

/** Two werift backends on loopback, each handing its candidates to the other. */
async function wired(): Promise<{ a: PeerBackend; b: PeerBackend }> {
  const a = await createWeriftBackend(LOOPBACK);
  const b = await createWeriftBackend(LOOPBACK);
  open.push(a, b);
  a.onCandidate = (c) => void b.addCandidate(c);
  b.onCandidate = (c) => void a.addCandidate(c);
  return { a, b };
}

async function pair(rewriteOffer?: (sdp: string) => string): Promise<{ a: PeerBackend; b: PeerBackend; offer: string; answer: string }> {
  const { a, b } = await wired();
  const offer = await a.createOffer();
  const answer = await b.acceptOffer(rewriteOffer ? rewriteOffer(offer) : offer);
  await a.acceptAnswer(answer);
  return { a, b, offer, answer };
}

const state = (p: PeerBackend, want: string): Promise<void> =>
  new Promise((resolve) => {
    const prev = p.onState;
    p.onState = (s) => {
      prev?.(s);
      if (s === want) resolve();
    };
  });

const accepted = (p: PeerBackend): Promise<RawChannel> => new Promise((resolve) => (p.onChannel = resolve));

describe('werift backend', () => {
  it('connects on loopback, exposes fingerprints computed from the presented DTLS certificates', async () => {
    const { a, b, offer, answer } = await pair();
    await Promise.all([state(a, 'connected'), state(b, 'connected')]);
    const [fa, fb] = [await a.localFingerprint(), await b.localFingerprint()];
    expect(sdpFingerprints(offer)).toEqual([fa]);
    expect(sdpFingerprints(answer)).toEqual([fb]);
    expect(await a.remoteCertificateFingerprint()).toBe(fb);
    expect(await b.remoteCertificateFingerprint()).toBe(fa);
    const sel = await a.selectedPair();
    expect(sel?.local.address).toBe('127.0.0.1');
    expect(sel?.remote.address).toBe('127.0.0.1');
  });

  it('reports the end of candidates once per gathering, an ICE restart included (each report is a billed signal frame)', async () => {
    const a = await createWeriftBackend(LOOPBACK);
    const b = await createWeriftBackend(LOOPBACK);
    open.push(a, b);
    const ends = { a: 0, b: 0 };
    const gathered = (side: 'a' | 'b', n: number): Promise<void> =>
      new Promise((resolve) => {
        const peer = side === 'a' ? b : a;
        (side === 'a' ? a : b).onCandidate = (c) => {
          if (c === null && ++ends[side] >= n) resolve();
          void peer.addCandidate(c);
        };
      });
    let done = Promise.all([gathered('a', 1), gathered('b', 1)]);
    await b.acceptOffer(await a.createOffer()).then((answer) => a.acceptAnswer(answer));
    await Promise.all([done, state(a, 'connected'), state(b, 'connected')]);
    done = Promise.all([gathered('a', 2), gathered('b', 2)]);
    await b.acceptOffer(await a.createOffer({ iceRestart: true })).then((answer) => a.acceptAnswer(answer));
    await done;
    // werift reports each end twice (a null candidate, then the gathering state); a second report would have come by now.
    await new Promise((r) => setTimeout(r, 300));
    expect(ends).toEqual({ a: 2, b: 2 });
  });

  it('pairs no remote candidate handed over after the nomination (each such pair held "connected" back 20 ms)', async () => {
    const { a, b } = await pair();
    await Promise.all([state(a, 'connected'), state(b, 'connected')]);
    type Conn = { nominated?: unknown; checkList: unknown[] };
    const conn = (p: PeerBackend): Conn => (p as unknown as { pc: { iceTransports: Array<{ connection: Conn }> } }).pc.iceTransports[0]!.connection;
    for (const p of [a, b]) {
      expect(conn(p).nominated).toBeDefined();
      const pairs = conn(p).checkList.length;
      await p.addCandidate({ candidate: 'candidate:9 1 udp 2130706431 127.0.0.1 9 typ host', sdpMid: '0', sdpMLineIndex: 0 });
      expect(conn(p).checkList.length).toBe(pairs);
    }
  });

  /**
   * A pair whose DTLS server (the offerer, ICE-controlling) starts its handshake `serverLateMs`
   * after its ICE connected, so a ClientHello sent at once reaches it before it listens; the
   * answerer is the DTLS client. `early`: the client is told the server keeps early records.
   */
  async function dtlsPair(early: boolean, serverLateMs: number): Promise<{ server: ReturnType<typeof dtlsLog>; client: ReturnType<typeof dtlsLog> }> {
    const { a, b } = await wired();
    const offer = await a.createOffer();
    const t = (a as unknown as { pc: { dtlsTransports: Array<{ start(): Promise<void> }> } }).pc.dtlsTransports[0]!;
    const start = t.start.bind(t);
    t.start = async () => {
      await new Promise((r) => setTimeout(r, serverLateMs));
      return start();
    };
    const answer = await b.acceptOffer(offer);
    const clock = { n: 0 };
    const server = dtlsLog(a, clock);
    const client = dtlsLog(b, clock);
    if (early) b.peerHoldsEarlyDtls?.();
    await a.acceptAnswer(answer);
    await Promise.all([state(a, 'connected'), state(b, 'connected')]);
    return { server, client };
  }

  it('with a peer that keeps early DTLS records, the client sends its first flight at once, and the server keeps one that came before it listened', async () => {
    expect((await createWeriftBackend(LOOPBACK).then((p) => (open.push(p), p))).holdsEarlyDtls).toBe(true);
    const { server, client } = await dtlsPair(true, 40);
    const hello = client.sent.find((r) => r.type === 1)!;
    expect(hello).toBeDefined();
    // Before werift's own call (its 100 ms wait), and the server's handshake began 40 ms late.
    expect(hello.at).toBeLessThan(client.weriftConnectAt() ?? Infinity);
    expect(server.received.find((r) => r.type === 1)?.at).toBeLessThan(server.sent[0]!.at);
    // Nothing was lost: no flight went twice (werift's retransmission comes 500 ms later).
    expect(client.repeated()).toEqual([]);
    expect(server.repeated()).toEqual([]);
  });

  it('without that word from the peer, the client keeps werift\'s wait before its first flight', async () => {
    const { client } = await dtlsPair(false, 0);
    const hello = client.sent.find((r) => r.type === 1)!;
    expect(client.weriftConnectAt()).not.toBeNull();
    expect(hello.at).toBeGreaterThan(client.weriftConnectAt()!);
    expect(client.repeated()).toEqual([]);
  });

  /**
   * Faults of werift's DTLS that a slow or lossy path brings out, each made here on purpose on the
   * wire between two werift peers (the offerer `a` is the DTLS server): a copy of a datagram sent
   * again late, one sent twice, a flight dropped. Each pair must connect on both sides and carry
   * a message on a new channel (SCTP over DTLS: both handshakes and both keys agree).
   */
  describe('DTLS on a path that repeats, delays and drops datagrams', () => {
    type Wire = { send(d: Buffer): Promise<void>; onData: { subscribe(f: (d: Buffer) => void): unknown; execute(d: Buffer): void } };
    const wire = (p: PeerBackend): Wire => (p as unknown as { pc: { iceTransports: Array<{ connection: Wire }> } }).pc.iceTransports[0]!.connection;
    const carries = (type: number) => (d: Buffer) => handshakeRecords(d).some((r) => r.type === type);
    const [CLIENT_HELLO, SERVER_HELLO, HELLO_VERIFY, CLIENT_KEY_EXCHANGE, CHANGE_CIPHER_SPEC, APPLICATION_DATA] = [1, 2, 3, 16, 20, 23];

    /** `w` sends the first datagram `pick` matches once more, when it receives one `trigger` matches. */
    function sendAgainLater(w: Wire, pick: (d: Buffer) => boolean, trigger: (d: Buffer) => boolean): () => boolean {
      const send = w.send.bind(w);
      let kept: Buffer | undefined;
      let sent = false;
      w.send = (d) => {
        if (!kept && pick(d)) kept = Buffer.from(d);
        return send(d);
      };
      w.onData.subscribe((d) => {
        if (!sent && kept && trigger(d)) {
          sent = true;
          void send(kept);
        }
      });
      return () => sent;
    }

    async function connectsAndCarries(tamper: (server: Wire, client: Wire) => () => boolean): Promise<void> {
      const { a, b } = await wired();
      const answer = await b.acceptOffer(await a.createOffer());
      const happened = tamper(wire(a), wire(b));
      const up = Promise.all([state(a, 'connected'), state(b, 'connected')]);
      await a.acceptAnswer(answer);
      await within('both ends connected', up, 10_000);
      expect(happened()).toBe(true);
      const acc = accepted(b);
      const ca = new Channel(a.createChannel('after'));
      const cb = new Channel(await within('channel at the other end', acc, 5_000));
      const got = new Promise<unknown>((resolve) => cb.on('message', resolve));
      await ca.send('through');
      expect(await within('message', got, 5_000)).toBe('through');
    }

    it('a late copy of the first ClientHello, after the server answered the second, is not a new handshake (werift: new keys, neither side connected)', async () => {
      await connectsAndCarries((_, c) => sendAgainLater(c, carries(CLIENT_HELLO), carries(SERVER_HELLO)));
    });

    it('a ClientHello after the server connected does not renegotiate (werift: keys thrown away under the link)', async () => {
      await connectsAndCarries((_, c) => sendAgainLater(c, carries(CLIENT_HELLO), (d) => d[0] === CHANGE_CIPHER_SPEC));
    });

    it('a HelloVerifyRequest twice does not fail the client (werift: the transport failed)', async () => {
      await connectsAndCarries((s) => sendAgainLater(s, carries(HELLO_VERIFY), carries(CLIENT_HELLO)));
    });

    it('the server\'s last flight and its first SCTP packet in one read (TURN/TCP) start SCTP at once (the INIT is kept, not sent again after SCTP\'s 3 s timeout)', async () => {
      await connectsAndCarries((s, c) => {
        // The client's agent hands over what one stream read held, one datagram after another.
        const execute = c.onData.execute.bind(c.onData);
        const held: Buffer[] = [];
        let burst = false;
        c.onData.execute = (d) => {
          if (!burst && (held.length > 0 || d[0] === CHANGE_CIPHER_SPEC)) {
            held.push(d);
            if (d[0] !== APPLICATION_DATA) return;
            burst = true;
            for (const h of held.splice(0)) execute(h);
            return;
          }
          execute(d);
        };
        // The server's INIT went once: the client answered the first.
        let sentBeforeReply = 0;
        let replied = false;
        const send = s.send.bind(s);
        s.send = (d) => ((d[0] === APPLICATION_DATA && !replied && sentBeforeReply++), send(d));
        s.onData.subscribe((d) => void (d[0] === APPLICATION_DATA && (replied = true)));
        return () => burst && replied && sentBeforeReply === 1;
      });
    });

    it('with the server\'s last flight lost, SCTP waits for the client to connect (werift: association reset, the client\'s side dead)', async () => {
      await connectsAndCarries((s) => {
        const send = s.send.bind(s);
        let dropped = 0;
        // The last flight is two datagrams: ChangeCipherSpec, then the encrypted Finished.
        s.send = (d) => ((d[0] === CHANGE_CIPHER_SPEC || dropped === 1) && dropped < 2 ? (dropped++, Promise.resolve()) : send(d));
        let retransmitted = false;
        s.onData.subscribe((d) => void (dropped === 2 && carries(CLIENT_KEY_EXCHANGE)(d) && (retransmitted = true)));
        return () => dropped === 2 && retransmitted;
      });
    });
  });

  it('gives every connection a certificate no other connection had (a spare is made ahead, and handed out once)', async () => {
    prepareDtlsCertificate();
    const made = await Promise.all([0, 1, 2].map(() => createWeriftBackend(LOOPBACK)));
    open.push(...made);
    made.push(await createWeriftBackend(LOOPBACK));
    open.push(made[3]!);
    const pems = [...made.map((p) => p.certificate()?.certPem), ...(await Promise.all([newDtlsCertificate(), newDtlsCertificate()])).map((c) => c.certPem)];
    expect(pems.every((p) => p?.startsWith('-----BEGIN CERTIFICATE-----'))).toBe(true);
    expect(new Set(pems).size).toBe(6);
    // Two are kept ready (both sides of a dial in one process, or two dials at a hub), topped up after each take.
    await within('the spares', (async () => {
      while ((await readySpareCertificates()) < SPARE_DTLS_CERTIFICATES) await new Promise((r) => setTimeout(r, 20));
    })(), 10_000);
    // Both come from spares already made: they are there before the event loop turns once (a
    // certificate made on demand takes milliseconds on libuv's pool).
    let both: DtlsCertificate[] | null = null;
    void Promise.all([newDtlsCertificate(), newDtlsCertificate()]).then((c) => (both = c));
    await new Promise((r) => setImmediate(r));
    expect(both).not.toBeNull();
    expect(new Set(both!.map((c) => c.certPem)).size).toBe(2);
  });

  it('werift refuses a DTLS peer whose certificate differs from the SDP fingerprint', async () => {
    const fake = 'AA:'.repeat(31) + 'AA';
    const { a, b } = await pair((sdp) => sdp.replace(/^a=fingerprint:sha-256 .*$/gm, `a=fingerprint:sha-256 ${fake}`));
    // b checks a's certificate against the rewritten fingerprint and must not connect.
    await state(b, 'failed');
    expect(await b.remoteCertificateFingerprint()).toBeNull();
    void a;
  });

  it('binds both identities to the DTLS fingerprints and moves 20 MiB each way with SHA-256 intact', async () => {
    const issuer = await testIssuer();
    const [devA, devB] = await Promise.all([issuer.device('app-1'), issuer.device('hub-1')]);
    const { a, b } = await pair();
    const acc = accepted(b);
    const ca = new Channel(a.createChannel('bulk'));
    const cb = new Channel(await acc);
    await ca.opened(); // SCTP runs over DTLS: an open channel means both handshakes completed
    const [fa, fb] = [await a.localFingerprint(), await b.localFingerprint()];
    const sid = 'session-0123456789abcdef';
    const proofA = await signProof(devA, { sid, role: 'initiator', fp: [fa, fb] });
    const v = await verifyPeer({
      cert: devA.certificate,
      proof: proofA,
      trust: issuer.trust,
      expectedSub: 'app-1',
      sessionId: sid,
      peerRole: 'initiator',
      localFingerprint: fb,
      remoteSdpFingerprint: fa,
    });
    expect(v.ok).toBe(true);
    if (!v.ok) return;
    expect(checkPresentedFingerprint(v.peerFingerprint, await b.remoteCertificateFingerprint())).toBeNull();
    // The same proof for another expected id, session, or a swapped certificate is refused.
    const base = { cert: devA.certificate, proof: proofA, trust: issuer.trust, sessionId: sid, peerRole: 'initiator' as const, localFingerprint: fb, remoteSdpFingerprint: fa };
    expect(await verifyPeer({ ...base, expectedSub: 'app-2' })).toMatchObject({ ok: false, code: 'IdentityMismatch' });
    expect(await verifyPeer({ ...base, expectedSub: 'app-1', sessionId: 'session-other-000000' })).toMatchObject({ ok: false, code: 'IdentityMismatch' });
    expect(await verifyPeer({ ...base, expectedSub: 'hub-1', cert: devB.certificate })).toMatchObject({ ok: false, code: 'IdentityMismatch' });
    expect(await verifyPeer({ ...base, expectedSub: 'app-1', localFingerprint: fa })).toMatchObject({ ok: false, code: 'IdentityMismatch' });
    const other = await testIssuer();
    expect(await verifyPeer({ ...base, expectedSub: 'app-1', trust: other.trust })).toMatchObject({ ok: false, code: 'Unauthorized' });
    expect(await verifyPeer({ ...base, expectedSub: 'app-1', cert: 'garbage', proof: 'x.y.z' })).toMatchObject({ ok: false, code: 'Unauthorized' });

    const total = 20 * 1024 * 1024;
    const want = sha256Of(total);
    expect(await transfer(ca, cb, total)).toBe(want);
    expect(await transfer(cb, ca, total, 7)).toBe(sha256Of(total, 7));
  });

  it('offers unreliable unordered channels and keeps the send buffer bounded', async () => {
    const { a, b } = await pair();
    const acc = accepted(b);
    const ca = new Channel(a.createChannel('telemetry', { ordered: false, maxRetransmits: 0 }), { highWaterMark: 64 * 1024 });
    const rb = await acc;
    expect(ca.ordered).toBe(false);
    expect(rb.maxRetransmits).toBe(0);
    // werift 0.24.4 loses the unordered bit in DATA_CHANNEL_OPEN when maxRetransmits is set
    // (sctp.js assigns channelType = 1 over 0x80; RFC 8832 §5.1 wants 0x81). The sender still
    // sends unordered chunks; only the accepting side's `ordered` property is wrong. This
    // assertion documents it and fails once werift is fixed.
    expect(rb.ordered).toBe(true);
    await ca.opened();
    let peak = 0;
    for (let i = 0; i < 200; i++) {
      await ca.send(new Uint8Array(16 * 1024));
      peak = Math.max(peak, ca.bufferedAmount);
    }
    expect(peak).toBeLessThanOrEqual(64 * 1024 + 16 * 1024);
  });
});
