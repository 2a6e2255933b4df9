/** Configuration from flags, env and file; validation names the field; the CLI shuts down on SIGTERM. */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, relayBindAddresses, relayConfig, relayConfigFromArgs } from '../../relay/config.js';
import { A, StunClass, StunMethod, TestTurnClient, restCredential } from './helpers/turn-client.js';
import { UdpEndpoint } from './helpers/sockets.js';

function configError(f: () => unknown): ConfigError {
  try {
    f();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('expected a ConfigError');
}

describe('relay configuration', () => {
  it('has named defaults and needs a secret', () => {
    const e = configError(() => relayConfigFromArgs(['--advertise', '203.0.113.10'], {}));
    expect(e.field).toBe('secrets');
    const c = relayConfigFromArgs(['--secret', 'a-long-secret', '--advertise', '203.0.113.10'], {});
    expect(c).toMatchObject({ realm: 'homelink', udpPort: 3478, tcpPort: 3478, tlsPort: 5349, relayPortMin: 49152, relayPortMax: 65535, metricsHost: '127.0.0.1', workers: 1, allowLoopback: false });
  });

  it('flags beat env, env beats the file; lists repeat and split on commas', () => {
    const dir = mkdtempSync(join(tmpdir(), 'relay-config-'));
    try {
      const file = join(dir, 'relay.json');
      writeFileSync(file, JSON.stringify({ realm: 'from-file', udpPort: 1111, tcpPort: 2222, secrets: ['file-secret-1'], allow: ['198.18.0.0/15'] }));
      const c = relayConfigFromArgs(
        ['--config', file, '--udp-port=3333', '--allow', '203.0.113.0/24', '--allow', '198.51.100.0/24', '--allow-loopback', '--relay-host', '127.0.0.1'],
        { RELAY_REALM: 'from-env', RELAY_UDP_PORT: '4444', RELAY_SECRETS: 'env-secret-1,env-secret-2' },
      );
      expect(c.realm).toBe('from-env');
      expect(c.udpPort).toBe(3333);
      expect(c.tcpPort).toBe(2222);
      expect(c.secrets).toEqual(['env-secret-1', 'env-secret-2']);
      expect(c.allow).toEqual(['203.0.113.0/24', '198.51.100.0/24']);
      expect(c.allowLoopback).toBe(true);
      expect(c.advertisedAddresses).toEqual(['127.0.0.1']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('has named stream limits, settable by flag and env', () => {
    const c = relayConfigFromArgs(['--secret', 'a-long-secret', '--relay-host', '127.0.0.1', '--stream-idle-timeout-ms', '5000'], { RELAY_MAX_STREAMS_PER_IP: '8' });
    expect(c).toMatchObject({ streamHandshakeTimeoutMs: 10_000, streamIdleTimeoutMs: 5000, maxStreamsPerIp: 8 });
  });

  it('picks the data path: auto by default, native or node by flag and env, nothing else', () => {
    const base = ['--secret', 's3cret-value', '--relay-host', '127.0.0.1'];
    expect(relayConfigFromArgs(base, {}).dataPath).toBe('auto');
    expect(relayConfigFromArgs([...base, '--data-path', 'node'], {}).dataPath).toBe('node');
    expect(relayConfigFromArgs(base, { RELAY_DATA_PATH: 'native' }).dataPath).toBe('native');
    const e = configError(() => relayConfigFromArgs([...base, '--data-path', 'fast'], {}));
    expect(e.field).toBe('dataPath');
    expect(e.message).toContain('expected auto, native or node');
  });

  it('binds relay sockets of a family only where told: a specific IPv4 relayHost gets IPv6 only with relayHost6', () => {
    const base = { secrets: ['a-long-secret'] };
    expect(relayBindAddresses(relayConfig({ ...base, relayHost: '0.0.0.0', advertisedAddresses: ['203.0.113.10', '2001:db8::10'] }))).toEqual({ 4: '0.0.0.0', 6: '::' });
    expect(relayBindAddresses(relayConfig({ ...base, relayHost: '203.0.113.10' }))).toEqual({ 4: '203.0.113.10', 6: null });
    const dual = relayConfig({ ...base, relayHost: '203.0.113.10', relayHost6: '2001:db8::10' });
    expect(relayBindAddresses(dual)).toEqual({ 4: '203.0.113.10', 6: '2001:db8::10' });
    expect(dual.advertisedAddresses).toEqual(['203.0.113.10', '2001:db8::10']);
    expect(relayBindAddresses(relayConfig({ ...base, relayHost: '2001:db8::10' }))).toEqual({ 4: null, 6: '2001:db8::10' });
    // Advertising IPv6 with nothing to bind it to used to bind [::]: now a start-up error naming the field.
    expect(configError(() => relayConfig({ ...base, relayHost: '203.0.113.10', advertisedAddresses: ['203.0.113.10', '2001:db8::10'] })).field).toBe('advertisedAddresses');
    expect(configError(() => relayConfig({ ...base, relayHost: '203.0.113.10', relayHost6: '203.0.113.11' })).field).toBe('relayHost6');
    expect(configError(() => relayConfig({ ...base, relayHost: '0.0.0.0', relayHost6: '2001:db8::10', advertisedAddresses: ['203.0.113.10'] })).field).toBe('relayHost6');
  });

  it('rejects bad values with the field named and no secret in the text', () => {
    const base = { secrets: ['a-long-secret'], relayHost: '127.0.0.1' };
    expect(configError(() => relayConfig({ ...base, udpPort: 70000 })).field).toBe('udpPort');
    expect(configError(() => relayConfig({ ...base, relayPortMin: 5000, relayPortMax: 4000 })).field).toBe('relayPortMin');
    expect(configError(() => relayConfig({ ...base, listenHost: 'example.com' })).field).toBe('listenHost');
    expect(configError(() => relayConfig({ ...base, tlsCert: '/x.pem' })).field).toBe('tlsKey');
    expect(configError(() => relayConfig({ ...base, maxLifetimeS: 100, defaultLifetimeS: 600 })).field).toBe('maxLifetimeS');
    expect(configError(() => relayConfig({ secrets: ['a-long-secret'] })).field).toBe('advertisedAddresses');
    expect(configError(() => relayConfigFromArgs(['--nope', '1'], {})).field).toBe('nope');
    expect(configError(() => relayConfigFromArgs(['--workers', 'many'], {})).field).toBe('workers');
    expect(configError(() => relayConfig({ ...base, streamHandshakeTimeoutMs: 0 })).field).toBe('streamHandshakeTimeoutMs');
    expect(configError(() => relayConfig({ ...base, streamIdleTimeoutMs: 'soon' })).field).toBe('streamIdleTimeoutMs');
    expect(configError(() => relayConfig({ ...base, maxStreamsPerIp: 0 })).field).toBe('maxStreamsPerIp');
    expect(configError(() => relayConfigFromArgs(['--secret', 'a-long-secret', '--relay-host', '127.0.0.1', '--max-streams-per-ip', '-3'], {})).field).toBe('maxStreamsPerIp');
    const short = configError(() => relayConfig({ secrets: ['ok-secret-1', 'tiny'], relayHost: '127.0.0.1' }));
    expect(short.field).toBe('secrets');
    expect(short.message).toContain('secrets[1]');
    expect(short.message).not.toContain('tiny');
  });
});

describe('relay CLI', () => {
  it('serves, then drains and exits 0 on SIGTERM, logging JSON lines without secrets', async () => {
    const secret = 'cli-test-secret-xyz';
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'relay/main.ts', '--listen-host', '127.0.0.1', '--relay-host', '127.0.0.1', '--udp-port', '0', '--tcp-port', '0',
        '--metrics-port', 'off', '--relay-port-min', '44000', '--relay-port-max', '44099', '--drain-ms', '2000', '--allow-loopback'],
      { env: { ...process.env, RELAY_SECRETS: secret }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const cred = restCredential(secret, 'cli-endpoint', Math.floor(Date.now() / 1000) + 600);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      let port = 0;
      for (let i = 0; i < 100 && !port; i++) {
        const m = /"udp":"127\.0\.0\.1:(\d+)"/.exec(out);
        if (m) port = Number(m[1]);
        else await new Promise((r) => setTimeout(r, 100));
      }
      expect(port, out).toBeGreaterThan(0);
      const ep = await UdpEndpoint.open();
      try {
        const c = new TestTurnClient(cred.username, cred.password);
        ep.send(c.request(StunMethod.Allocate, [A.transportUdp()], false).bytes, port);
        c.read(await ep.next());
        ep.send(c.request(StunMethod.Allocate, [A.transportUdp()]).bytes, port);
        expect(c.read(await ep.next()).cls).toBe(StunClass.SuccessResponse);
        child.kill('SIGTERM');
        // While draining, new allocations are refused with 508 and the existing one still refreshes.
        await new Promise((r) => setTimeout(r, 300));
        const other = new TestTurnClient(cred.username, cred.password);
        const ep2 = await UdpEndpoint.open();
        try {
          ep2.send(other.request(StunMethod.Allocate, [A.transportUdp()], false).bytes, port);
          other.read(await ep2.next());
          ep2.send(other.request(StunMethod.Allocate, [A.transportUdp()]).bytes, port);
          expect(other.read(await ep2.next()).code).toBe(508);
        } finally {
          await ep2.close();
        }
        ep.send(c.request(StunMethod.Refresh, []).bytes, port);
        expect(c.read(await ep.next()).cls).toBe(StunClass.SuccessResponse);
      } finally {
        await ep.close();
      }
      expect(await exited).toBe(0);
      const lines = out.trim().split('\n');
      for (const l of lines) expect(() => JSON.parse(l), l).not.toThrow();
      expect(out).toContain('"event":"relay_draining"');
      expect(out).toContain('"event":"relay_closed"');
      expect(out).not.toContain(secret);
      expect(out).not.toContain(cred.password);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
