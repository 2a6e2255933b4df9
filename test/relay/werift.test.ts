/**
 * Referee: werift (a TURN client we did not write) forced to relay
 * (`iceTransportPolicy: 'relay'`) opens a DTLS data channel through our relay,
 * over TURN/UDP and over TURN/TCP. The relay's onRelayed hook shows that a
 * plaintext marker sent through the channel never crosses the relay in clear.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RTCPeerConnection, type RTCDataChannel } from 'werift';
import type { StartedRelay } from '../../relay/index.js';
import { startLoopbackRelay } from './helpers/relay.js';
import { restCredential } from './helpers/turn-client.js';

const SECRET = 'werift-test-secret';
const MARKER = 'PLAINTEXT-MARKER-7f3a9c';

let relay: StartedRelay;
const relayed: Buffer[] = [];

beforeAll(async () => {
  relay = await startLoopbackRelay({
    secret: SECRET,
    relayPorts: [41000, 41999],
    hooks: { onRelayed: (_dir, payload) => relayed.push(Buffer.from(payload)) },
  });
});

afterAll(async () => {
  await relay?.close();
});

function peer(url: string, id: string): RTCPeerConnection {
  const c = restCredential(SECRET, id, Math.floor(Date.now() / 1000) + 600);
  return new RTCPeerConnection({
    iceServers: [{ urls: url, username: c.username, credential: c.password }],
    iceTransportPolicy: 'relay',
    iceAdditionalHostAddresses: ['127.0.0.1'],
  });
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`timed out: ${what}`)), ms)))]).finally(() =>
    clearTimeout(t),
  );
}

async function connectThroughRelay(url: string): Promise<void> {
  const a = peer(url, 'werift-a');
  const b = peer(url, 'werift-b');
  try {
    a.onicecandidate = ({ candidate }) => {
      if (candidate) void b.addIceCandidate(candidate);
    };
    b.onicecandidate = ({ candidate }) => {
      if (candidate) void a.addIceCandidate(candidate);
    };
    const dcA = a.createDataChannel('test');
    const gotB = new Promise<RTCDataChannel>((resolve) => {
      b.ondatachannel = ({ channel }) => resolve(channel);
    });
    await a.setLocalDescription(await a.createOffer());
    await b.setRemoteDescription(a.localDescription!);
    await b.setLocalDescription(await b.createAnswer());
    await a.setRemoteDescription(b.localDescription!);

    const opened = new Promise<void>((resolve) => {
      if (dcA.readyState === 'open') resolve();
      else dcA.onopen = () => resolve();
    });
    await withTimeout(opened, 30_000, 'data channel open');
    const dcB = await withTimeout(gotB, 10_000, 'remote data channel');
    const received = new Promise<string>((resolve) => {
      dcB.onmessage = (e) => resolve(typeof e.data === 'string' ? e.data : Buffer.from(e.data as Buffer).toString());
    });
    const before = relayed.length;
    dcA.send(MARKER);
    expect(await withTimeout(received, 10_000, 'message')).toBe(MARKER);

    // The path is relayed: the local candidate of the selected pair is ours.
    const pair = a.iceTransports[0]?.connection.nominated;
    expect(pair?.localCandidate.type).toBe('relay');
    // Traffic crossed the relay, but never the marker in clear.
    expect(relayed.length).toBeGreaterThan(before);
    expect(relayed.some((p) => p.includes(MARKER))).toBe(false);
  } finally {
    await a.close();
    await b.close();
  }
}

describe('werift through our relay', () => {
  it('opens a DTLS data channel over TURN/UDP', async () => {
    await connectThroughRelay(`turn:127.0.0.1:${relay.udp.port}`);
  });

  it('opens a DTLS data channel over TURN/TCP', async () => {
    await connectThroughRelay(`turn:127.0.0.1:${relay.tcp.port}?transport=tcp`);
  });
});
