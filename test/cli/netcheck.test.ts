/**
 * netcheck's RFC 5780-style tests against a relay with two addresses: two instances of our relay
 * on 127.0.0.1 and 127.0.0.2 (same port, same secret) stand for one relay's primary and
 * alternate address. On loopback there is no NAT: both addresses see the same mapping, and a
 * packet from an address never contacted (the second relay's allocation) arrives.
 * Also: coturn's turnserver, a relay we did not write, gives the same report (the referee).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relayConfig, startRelay, type StartedRelay } from '../../relay/index.js';
import { mintTurnCredential } from '../../protocol/turn-credentials.js';
import { netcheck } from '../../cli/netcheck.js';
import { freePort } from './support.js';
import { UdpStun } from '../../cli/stun-client.js';

const SECRET = 'netcheck-test-secret-0123456789';

describe('netcheck against a relay with two addresses', () => {
  const relays: StartedRelay[] = [];
  let port: number;
  beforeAll(async () => {
    // Both addresses need the same free port; another process can take it between the check and
    // the bind, so try a few ports (bounded).
    for (let attempt = 0; attempt < 5 && relays.length < 2; attempt++) {
      port = await freePort();
      try {
        for (const host of ['127.0.0.1', '127.0.0.2']) {
          relays.push(
            await startRelay(
              relayConfig({
                secrets: [SECRET],
                listenHost: host,
                relayHost: host,
                udpPort: port,
                tcpPort: port,
                metricsPort: null,
                allowLoopback: true,
                shutdownDrainMs: 0,
                logLevel: 'silent',
              }),
            ),
          );
        }
      } catch {
        await Promise.all(relays.splice(0).map((r) => r.close()));
      }
    }
    expect(relays).toHaveLength(2);
  });
  afterAll(async () => {
    await Promise.all(relays.map((r) => r.close()));
  });

  it('measures endpoint-independent mapping and filtering, and relay RTTs', async () => {
    const c = await mintTurnCredential(SECRET, 'netcheck-test', 300, Date.now() / 1000);
    const report = await netcheck({
      relays: [{ name: 'pair', host: '127.0.0.1', altHost: '127.0.0.2', udpPort: port, tcpPort: port, tlsPort: 9, turn: { username: c.username, password: c.credential } }],
    });
    expect(report.udp).toBe(true);
    expect(report.mapping).toBe('no-nat');
    expect(report.mappingDetail).toMatch(/own address and port/);
    expect(report.filtering).toBe('endpoint-independent');
    expect(report.turnAllocate).toBe('ok');
    expect(report.relays[0]!.udp.ok).toBe(true);
    expect(report.relays[0]!.tcp.ok).toBe(true);
    expect(report.relays[0]!.tls.ok).toBe(false);
    // Nothing listens on port 9: a closed TLS port, not a certificate problem.
    expect(report.relays[0]!.tls.failure).toBe('refused');
    expect(report.advice.join(' ')).toContain('answers over TCP but not on its TLS port');
    expect(report.advice.join(' ')).not.toContain('certificate');
  });

  it('says the relay is down, and does not blame TLS, when nothing answers', async () => {
    const down = await freePort();
    const report = await netcheck({ relays: [{ name: 'down', host: '127.0.0.1', udpPort: down, tcpPort: down, tlsPort: down }] });
    const r = report.relays[0]!;
    expect([r.udp.ok, r.tcp.ok, r.tls.ok]).toEqual([false, false, false]);
    expect(r.tls.failure).toBe('refused');
    const advice = report.advice.join(' ');
    expect(advice).toContain('No relay answers on any transport');
    expect(advice).not.toContain('certificate');
    expect(advice).not.toContain('TLS port');
  });

  it('reports refused TURN credentials without failing the rest', async () => {
    const report = await netcheck({
      relays: [{ name: 'pair', host: '127.0.0.1', udpPort: port, tcpPort: port, tlsPort: 9, turn: { username: `${Math.floor(Date.now() / 1000) + 300}:x`, password: 'wrong' } }],
    });
    expect(report.udp).toBe(true);
    expect(report.turnAllocate).toBe('refused');
    expect(report.filtering).toBe('unknown');
    expect(report.advice.join(' ')).toContain('refused the TURN credentials');
  });

  it('closing the socket rejects a request in flight and stops its retransmissions', async () => {
    const s = await UdpStun.open('127.0.0.1');
    const pending = s.binding('127.0.0.1', 9);
    s.close();
    await expect(pending).rejects.toThrow('socket closed');
    await expect(s.binding('127.0.0.1', port)).rejects.toThrow('socket closed');
  });

  it('ignores datagrams that are not answers to its own requests', async () => {
    const probe = await UdpStun.open('127.0.0.1');
    const noise = await UdpStun.open('127.0.0.1');
    try {
      const [h, p] = probe.local.split(':') as [string, string];
      // Garbage and a STUN response with a foreign transaction id, before and during a request.
      noise.send(new Uint8Array([1, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, ...new Array(12).fill(7)]), h, Number(p));
      noise.send(new Uint8Array(5000).fill(0xff), h, Number(p));
      const r = await probe.binding('127.0.0.1', port);
      expect(r.mapped.port).toBe(Number(p));
    } finally {
      probe.close();
      noise.close();
    }
  });
});

describe.skipIf(!existsSync('/usr/bin/turnserver'))('netcheck against coturn (a TURN server we did not write)', () => {
  let proc: ChildProcess;
  let port: number;
  beforeAll(async () => {
    port = await freePort();
    const minPort = 40_000 + (port % 20_000);
    proc = spawn(
      'turnserver',
      [
        '-n', '--listening-ip=127.0.0.1', `--listening-port=${port}`, '--use-auth-secret', `--static-auth-secret=${SECRET}`,
        '--realm=netcheck', '--allow-loopback-peers', '--no-tls', '--no-dtls', '--no-cli',
        `--min-port=${minPort}`, `--max-port=${minPort + 50}`, '--log-file=stdout', '--simple-log',
      ],
      { stdio: ['ignore', 'ignore', 'ignore'] },
    );
    // Bounded wait until coturn answers a Binding request.
    const s = await UdpStun.open('127.0.0.1');
    try {
      for (let i = 0; i < 40; i++) {
        if (await s.binding('127.0.0.1', port).then(() => true, () => false)) break;
      }
    } finally {
      s.close();
    }
  });
  afterAll(() => {
    proc?.kill('SIGKILL');
  });

  it('gives the same NAT report through coturn', async () => {
    const c = await mintTurnCredential(SECRET, 'netcheck-coturn', 300, Date.now() / 1000);
    const report = await netcheck({
      relays: [{ name: 'coturn', host: '127.0.0.1', udpPort: port, tcpPort: port, tlsPort: 9, turn: { username: c.username, password: c.credential } }],
    });
    expect(report.udp).toBe(true);
    expect(report.mapping).toBe('no-nat');
    expect(report.filtering).toBe('endpoint-independent');
    expect(report.turnAllocate).toBe('ok');
    expect(report.relays[0]!.tcp.ok).toBe(true);
  });
});
