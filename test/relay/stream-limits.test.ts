/**
 * TCP/TLS lockout without credentials (issue 9 item 6) on real sockets: a TLS handshake that
 * never finishes is closed, a client dribbling bytes without completing frames is closed, a
 * slow client that sends whole frames stays, and one source address cannot take more than
 * `maxStreamsPerIp` connections while another address still gets in. Each test connects from
 * its own loopback address (127.0.0.x), so their per-source counts do not mix.
 */
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StartedRelay } from '../../relay/index.js';
import { StreamFramer } from '../../protocol/stun/index.js';
import { StunMethod, restClient } from './helpers/turn-client.js';
import { StreamEndpoint } from './helpers/sockets.js';
import { selfSignedCertificate, startLoopbackRelay, type TestCertificate } from './helpers/relay.js';

const SECRET = 'stream-limits-secret';
/** Short deadlines so the suite runs in seconds; the legit client below keeps a 6x margin. */
const HANDSHAKE_MS = 1_000;
const IDLE_MS = 2_500;
/** How long a test waits for the relay to close a connection: generous, for a loaded machine. */
const CLOSE_WAIT_MS = 20_000;

let cert: TestCertificate;
let fast: StartedRelay;
let capped: StartedRelay;

beforeAll(async () => {
  cert = selfSignedCertificate('relay-limits-');
  const tlsConfig = { tlsPort: 0, tlsCert: cert.certPath, tlsKey: cert.keyPath, metricsPort: 0 };
  fast = await startLoopbackRelay({
    secret: SECRET,
    relayPorts: [46100, 46199],
    config: { ...tlsConfig, streamHandshakeTimeoutMs: HANDSHAKE_MS, streamIdleTimeoutMs: IDLE_MS },
  });
  capped = await startLoopbackRelay({ secret: SECRET, relayPorts: [46200, 46299], config: { ...tlsConfig, maxStreamsPerIp: 4 } });
});

afterAll(async () => {
  await fast?.close();
  await capped?.close();
  cert?.dispose();
});

/** A plain TCP connection from `from` (a 127.0.0.x address). */
function rawConnect(port: number, from: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: from }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Resolves when `s` is closed by the other side (or errors), with how it ended; rejects after `ms`. */
function closedByPeer(s: net.Socket, ms = CLOSE_WAIT_MS): Promise<'closed'> {
  return new Promise((resolve, reject) => {
    if (s.destroyed || s.readyState === 'closed') return resolve('closed');
    const t = setTimeout(() => reject(new Error('the relay kept the connection open')), ms);
    s.on('error', () => {});
    s.once('close', () => {
      clearTimeout(t);
      resolve('closed');
    });
  });
}

async function counter(relay: StartedRelay, series: string): Promise<number> {
  // Counters are read live from the core (single process), no push delay.
  const text = await (await fetch(`${relay.metricsUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return Number(line?.split(' ')[1] ?? NaN);
}

function binding(): Uint8Array {
  return restClient(SECRET, 'x').request(StunMethod.Binding, [], false).bytes;
}

/** Sends a Binding request and waits for one whole frame back on a raw socket. */
function bindingRoundTrip(s: net.Socket, ms = 5_000): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const framer = new StreamFramer(70_000);
    const t = setTimeout(() => {
      s.off('data', onData);
      reject(new Error('no answer to Binding'));
    }, ms);
    const onData = (chunk: Buffer) => {
      framer.push(chunk);
      const r = framer.next();
      if (r.ok && r.value) {
        clearTimeout(t);
        s.off('data', onData);
        resolve(r.value.bytes);
      }
    };
    s.on('data', onData);
    s.write(binding());
  });
}

describe('TLS handshake deadline', () => {
  it('closes connections that never start, or never finish, their TLS handshake', async () => {
    const before = await counter(fast, 'homelink_relay_stream_timeouts_total{phase="handshake"}');
    const silent = await rawConnect(fast.tls!.port, '127.0.0.11');
    // Half a ClientHello: a record header announcing 512 bytes, then a few of them.
    const half = await rawConnect(fast.tls!.port, '127.0.0.11');
    half.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]));
    await Promise.all([closedByPeer(silent), closedByPeer(half)]);
    expect(await counter(fast, 'homelink_relay_stream_timeouts_total{phase="handshake"}')).toBeGreaterThanOrEqual(before + 2);
  });

  it('closes a connection whose handshake fails at once, and counts the TLS error', async () => {
    const before = await counter(fast, 'homelink_relay_stream_tls_errors_total');
    const junk = await rawConnect(fast.tls!.port, '127.0.0.11');
    junk.write('GET / HTTP/1.1\r\nHost: relay\r\n\r\n');
    await closedByPeer(junk);
    expect(await counter(fast, 'homelink_relay_stream_tls_errors_total')).toBeGreaterThanOrEqual(before + 1);
  });
});

describe('idle deadline on whole frames', () => {
  it('closes a TCP client that dribbles a byte every 100 ms without completing a frame', async () => {
    const before = await counter(fast, 'homelink_relay_stream_timeouts_total{phase="idle"}');
    const s = await rawConnect(fast.tcp.port, '127.0.0.12');
    // A ChannelData header announcing 60,000 bytes, then one byte at a time: bytes keep coming,
    // frames never do. With a byte-based timer this connection lived for ever.
    s.write(Buffer.from([0x40, 0x00, 0xea, 0x60]));
    const dribble = setInterval(() => {
      if (!s.destroyed) s.write(Buffer.from([0x55]));
    }, 100);
    try {
      await closedByPeer(s);
    } finally {
      clearInterval(dribble);
    }
    expect(await counter(fast, 'homelink_relay_stream_timeouts_total{phase="idle"}')).toBeGreaterThanOrEqual(before + 1);
  });

  it('keeps slow TCP and TLS clients that send a whole frame every 400 ms', async () => {
    const tcp = await rawConnect(fast.tcp.port, '127.0.0.13');
    const tlsEp = await StreamEndpoint.connectTls(fast.tls!.port, cert.ca);
    let closed = false;
    tcp.once('close', () => (closed = true));
    tlsEp.socket.once('close', () => (closed = true));
    try {
      // 6 s in all, more than twice the idle deadline; each frame is sent in pieces, slowly.
      for (let i = 0; i < 15; i++) {
        await new Promise((r) => setTimeout(r, 400));
        expect((await bindingRoundTrip(tcp)).length).toBeGreaterThan(20);
        const req = binding();
        tlsEp.send(req.subarray(0, 8));
        await new Promise((r) => setTimeout(r, 50));
        tlsEp.send(req.subarray(8));
        expect((await tlsEp.next(5_000)).length).toBeGreaterThan(20);
      }
      expect(closed).toBe(false);
    } finally {
      tcp.destroy();
      tlsEp.close();
    }
  });
});

describe('per-source connection cap', () => {
  it('refuses the 5th connection from one address (TCP and TLS together) while another address gets in', async () => {
    const from = '127.0.0.14';
    const held: Array<net.Socket> = [];
    try {
      for (let i = 0; i < 2; i++) held.push(await rawConnect(capped.tcp.port, from));
      for (let i = 0; i < 2; i++) {
        const t = tls.connect({ socket: await rawConnect(capped.tls!.port, from), host: '127.0.0.1', ca: cert.ca });
        await new Promise<void>((resolve, reject) => {
          t.once('secureConnect', () => resolve());
          t.once('error', reject);
        });
        held.push(t);
      }
      // All four are served.
      for (const s of held) expect((await bindingRoundTrip(s)).length).toBeGreaterThan(20);
      const before = await counter(capped, 'homelink_relay_stream_refusals_total{reason="per_ip"}');
      const fifth = await rawConnect(capped.tcp.port, from);
      fifth.write(binding());
      let answered = false;
      fifth.on('data', () => (answered = true));
      await closedByPeer(fifth);
      expect(answered).toBe(false);
      expect(await counter(capped, 'homelink_relay_stream_refusals_total{reason="per_ip"}')).toBe(before + 1);
      // Another source is not affected.
      const other = await rawConnect(capped.tcp.port, '127.0.0.15');
      try {
        expect((await bindingRoundTrip(other)).length).toBeGreaterThan(20);
      } finally {
        other.destroy();
      }
      // Closing one of the four frees its slot.
      held.pop()!.destroy();
      let served = false;
      // The relay sees the close a moment later: retry, bounded.
      for (let i = 0; i < 40 && !served; i++) {
        const again = await rawConnect(capped.tcp.port, from);
        held.push(again);
        served = await bindingRoundTrip(again, 1_000).then(
          () => true,
          () => false,
        );
      }
      expect(served).toBe(true);
    } finally {
      for (const s of held) s.destroy();
    }
  });
});
