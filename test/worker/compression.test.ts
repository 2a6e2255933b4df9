/**
 * The service declines permessage-deflate (wrangler.toml `compatibility_flags`): signaling frames
 * are a few hundred bytes of JSON, and compression costs the objects a zlib pass per frame and a
 * context per socket (`bench/signaling/run.ts --deflate`). Browsers always offer it; the Node
 * library no longer does.
 *
 * Miniflare cannot show the setting: its entry worker, with compatibility settings of its own,
 * terminates the client's WebSocket and negotiates compression itself. So this suite runs workerd
 * directly, without Miniflare, with wrangler.toml's compatibility date and flags, and a Worker
 * that answers an upgrade the way ours does (a `WebSocketPair`, status 101), as the edge runs
 * ours. A control run without the flag shows the probe sees compression when it is on.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { freePort } from '../support/ports.js';
import { COMPATIBILITY_DATE, COMPATIBILITY_FLAGS } from '../support/signaling.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** The workerd binary Miniflare and wrangler run (the `workerd` package exports its path). */
const workerdBin = (createRequire(import.meta.url)('workerd') as { default: string }).default;

/** wrangler.toml's top-level compatibility date and flags (its environments inherit both). */
async function wranglerCompat(): Promise<{ date: string; flags: string[] }> {
  const toml = await readFile(join(ROOT, 'wrangler.toml'), 'utf8');
  const top = toml.split(/^\[/m)[0]!;
  const date = /^compatibility_date\s*=\s*"([^"]+)"/m.exec(top)?.[1] ?? '';
  const flags = JSON.parse(/^compatibility_flags\s*=\s*(\[[^\]]*\])/m.exec(top)?.[1] ?? '[]') as string[];
  return { date, flags };
}

const ECHO = `export default {
  fetch() {
    const [client, server] = Object.values(new WebSocketPair());
    server.accept();
    server.addEventListener('message', (e) => server.send(e.data));
    return new Response(null, { status: 101, webSocket: client });
  },
};
`;

/**
 * Runs workerd with `flags`, offers permessage-deflate in an upgrade, sends one masked text frame
 * and returns the 101's headers and the echoed frame's first byte (FIN, RSV1 = compressed, opcode).
 */
async function upgradeOffering(date: string, flags: string[]): Promise<{ head: string; firstByte: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'homelink-compression-'));
  const port = await freePort();
  await writeFile(join(dir, 'w.mjs'), ECHO);
  await writeFile(
    join(dir, 'c.capnp'),
    `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [(name = "main", worker = .w)],
  sockets = [(name = "http", address = "127.0.0.1:${port}", http = (), service = "main")],
);
const w :Workerd.Worker = (
  modules = [(name = "w.mjs", esModule = embed "w.mjs")],
  compatibilityDate = "${date}",
  compatibilityFlags = [${flags.map((f) => JSON.stringify(f)).join(', ')}],
);
`,
  );
  const child = spawn(workerdBin, ['serve', join(dir, 'c.capnp')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
  try {
    const deadline = Date.now() + 20_000;
    let sock: net.Socket | null = null;
    while (!sock) {
      if (child.exitCode !== null) throw new Error(`workerd exited: ${err}`);
      sock = await new Promise<net.Socket | null>((r) => {
        const s = net.connect(port, '127.0.0.1');
        s.once('connect', () => r(s));
        s.once('error', () => r(null));
      });
      if (!sock) {
        if (Date.now() > deadline) throw new Error(`workerd did not listen: ${err}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const s = sock;
    let buf = Buffer.alloc(0);
    const more = (): Promise<void> => new Promise((r) => s.once('data', (d: Buffer) => ((buf = Buffer.concat([buf, d])), r())));
    s.write(
      'GET / HTTP/1.1\r\nHost: signal.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n',
    );
    while (!buf.includes('\r\n\r\n')) await more();
    const end = buf.indexOf('\r\n\r\n');
    const head = buf.subarray(0, end).toString('latin1');
    buf = buf.subarray(end + 4);
    // One masked, uncompressed text frame: {"type":"ping"} repeated, so compression would pay.
    const payload = Buffer.from('{"type":"ping"}'.repeat(8));
    const mask = Buffer.from([1, 2, 3, 4]);
    s.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, payload.map((b, i) => b ^ mask[i % 4]!)]));
    while (buf.length < 2) await more();
    s.destroy();
    return { head, firstByte: buf[0]! };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
    await rm(dir, { recursive: true, force: true });
  }
}

describe('the service and permessage-deflate', () => {
  it('the suites run workerd with wrangler.toml\'s compatibility date and flags', async () => {
    const { date, flags } = await wranglerCompat();
    expect(date).toBe(COMPATIBILITY_DATE);
    expect(flags).toEqual(COMPATIBILITY_FLAGS);
    expect(flags).toContain('no_web_socket_compression');
  });

  it('declines permessage-deflate offered in an upgrade, and frames come back uncompressed', async () => {
    const { date, flags } = await wranglerCompat();
    const { head, firstByte } = await upgradeOffering(date, flags);
    expect(head).toMatch(/^HTTP\/1\.1 101 /);
    expect(head.toLowerCase()).not.toContain('sec-websocket-extensions');
    expect(firstByte).toBe(0x81); // FIN, RSV1 clear (not compressed), text
  });

  it('control: without the flag the same workerd accepts it and compresses', async () => {
    const { date, flags } = await wranglerCompat();
    const { head, firstByte } = await upgradeOffering(date, flags.filter((f) => f !== 'no_web_socket_compression'));
    expect(head.toLowerCase()).toContain('sec-websocket-extensions: permessage-deflate');
    expect(firstByte).toBe(0xc1); // FIN, RSV1 set (compressed), text
  });
});
