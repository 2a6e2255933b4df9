/**
 * `npm start`, as a user runs it: the real worker in workerd, the real relay, the demo server.
 * Ready on free ports; signaling answers; the relay answers a STUN Binding over UDP and TLS with
 * the generated development certificate; a second start says it is already running; Ctrl-C
 * (SIGINT to the process group) stops everything and leaves no process, lock or stack file.
 */
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { streamBinding } from '../../cli/stun-client.js';
import { encodeBindingRequest, readBindingResponse } from '../../protocol/stun/binding.js';
import { gone, ROOT, startArgs, startStack, type RunningStack } from './support.js';

function stunBinding(port: number): Promise<{ ip: string; port: number } | null> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    const tid = new Uint8Array(randomBytes(12));
    const t = setTimeout(() => {
      s.close();
      resolve(null);
    }, 2000);
    s.on('message', (m) => {
      const r = readBindingResponse(new Uint8Array(m), tid);
      if (!r?.ok || !r.mapped) return;
      clearTimeout(t);
      s.close();
      resolve({ ip: r.mapped.ip, port: r.mapped.port });
    });
    s.bind(0, '127.0.0.1', () => s.send(encodeBindingRequest(tid), port, '127.0.0.1'));
  });
}

describe('npm start', () => {
  let st: RunningStack;
  beforeAll(async () => {
    st = await startStack();
  });
  afterAll(async () => {
    await st?.dispose();
  });

  it('prints the URLs and how to try it', () => {
    const out = st.output();
    expect(out).toContain(`ws://127.0.0.1:${st.ports.signaling}/v1/presence`);
    expect(out).toContain(`stun:127.0.0.1:${st.ports.relay}`);
    expect(out).toContain(`http://127.0.0.1:${st.ports.web}/`);
    expect(out).toMatch(/homelink listen --as hub-1/);
    expect(out).toMatch(/homelink dial hub-1 --as app-1/);
    expect(out).toMatch(/homelink token --sub/);
  });

  it('serves the signaling worker, the demo page and the relay metrics', async () => {
    const health = await fetch(`http://127.0.0.1:${st.ports.signaling}/healthz`);
    expect(health.status).toBe(200);
    const page = await fetch(`http://127.0.0.1:${st.ports.web}/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('homelink demo');
    const metrics = await fetch(`http://127.0.0.1:${st.ports.metrics}/metrics`);
    expect(await metrics.text()).toContain('homelink_relay_allocations');
  });

  it('runs a relay that answers STUN over UDP, and over TLS with the development certificate', async () => {
    const mapped = await stunBinding(st.ports.relay);
    expect(mapped?.ip).toBe('127.0.0.1');
    const ca = await readFile(join(st.dir, 'tls', 'cert.pem'));
    const tls = await streamBinding('tls', '127.0.0.1', st.ports.relayTls, { ca, servername: 'localhost' });
    expect(tls.mapped?.ip).toBe('127.0.0.1');
  });

  it('refuses a second start on the same folder with a clear message', async () => {
    const second = spawn('npm', startArgs(st.dir, st.ports), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    second.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => second.once('exit', r));
    expect(code).toBe(1);
    expect(err).toMatch(/homelink is already running from .* \(pid \d+;/);
  });

  it('refuses a start whose port is taken, naming the port and the flag', async () => {
    // Another folder, so the lock passes; the running stack holds every port.
    const second = spawn('npm', startArgs(`${st.dir}-other`, st.ports), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    second.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => second.once('exit', r));
    expect(code).toBe(1);
    expect(err).toContain(`port ${st.ports.signaling} on 127.0.0.1 (--signaling-port) is in use`);
    expect(existsSync(join(`${st.dir}-other`, 'start.lock'))).toBe(false);
    await rm(`${st.dir}-other`, { recursive: true, force: true });
  });

  it('stops everything on Ctrl-C: no process, no lock, no stack file left', async () => {
    const groups = [...st.stack.childGroups];
    const pid = st.stack.pid;
    expect(groups.length).toBeGreaterThanOrEqual(2);
    expect(await st.interrupt()).toBe(true);
    expect(gone(pid)).toBe(true);
    for (const g of groups) expect(gone(-g)).toBe(true);
    expect(gone(-st.proc.pid!)).toBe(true);
    expect(existsSync(join(st.dir, 'start.lock'))).toBe(false);
    expect(existsSync(join(st.dir, 'stack.json'))).toBe(false);
    expect(st.output()).toContain('stopping homelink');
  });
});

describe('npm start after a crash', () => {
  it('takes over a stale lock whose process is gone', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'homelink-stale-'));
    // A pid that is not running: a finished child's.
    const dead = spawn(process.execPath, ['-e', '0']);
    await new Promise((r) => dead.once('exit', r));
    await writeFile(join(dir, 'start.lock'), JSON.stringify({ pid: dead.pid, ports: {}, childGroups: [dead.pid] }));
    const st = await startStack({ dir });
    try {
      expect(st.output()).toContain('homelink is running');
      const lock = JSON.parse(await readFile(join(dir, 'start.lock'), 'utf8')) as { pid: number };
      expect(lock.pid).toBe(st.stack.pid);
    } finally {
      await st.dispose();
    }
  });
});
