/**
 * The `homelink` command against the real local stack (`npm start`: workerd, our relay, the dev
 * issuer): two CLI processes exchange messages both ways and files (direct and through the relay),
 * a transfer resumes from a partial file, netcheck reports what the stack offers, tokens verify,
 * and every error is one line with a non-zero exit code.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalJWKSet, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyAccessToken, verifyIdentityCertificate } from '../../protocol/tokens.js';
import { runCli, spawnCli, startStack, type RunningStack } from './support.js';

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

describe('homelink CLI on the local stack', () => {
  let st: RunningStack;
  let work: string;
  beforeAll(async () => {
    st = await startStack();
    work = await mkdtemp(join(tmpdir(), 'homelink-cli-'));
  });
  afterAll(async () => {
    await st?.dispose();
    if (work) await rm(work, { recursive: true, force: true });
  });
  const dir = (): string[] => ['--dir', st.dir];

  it('has --help for every command, and one clear line for usage errors', async () => {
    const main = await runCli(['--help']);
    expect(main.code).toBe(0);
    for (const c of ['token', 'listen', 'dial', 'send', 'receive', 'netcheck']) {
      expect(main.stdout).toContain(`  ${c} `);
      const r = await runCli([c, '--help']);
      expect(r.code, c).toBe(0);
      expect(r.stdout, c).toMatch(/usage: homelink /);
    }
    const unknown = await runCli(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr.trim().split('\n')).toHaveLength(1);
    expect(unknown.stderr).toContain('homelink --help');
    const badFlag = await runCli(['dial', 'hub-1', '--bogus']);
    expect(badFlag.code).toBe(2);
    expect(badFlag.stderr.trim().split('\n')).toHaveLength(1);
    const noPeer = await runCli(['dial', ...dir()]);
    expect(noPeer.code).toBe(2);
    expect(noPeer.stderr).toContain('give exactly one peer id');
  });

  it('says to run npm start when no stack runs there', async () => {
    const r = await runCli(['dial', 'hub-1', '--dir', join(work, 'nothing-here')]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('run `npm start` in a homelink checkout first');
    // The advice names the flags that exist for a deployment (there is no --relay address flag).
    expect(r.stderr).toContain('--profile');
    expect(r.stderr).toContain('--token with --signaling, --identity-cert, --identity-key, --trust-jwks and --trust-issuer');
    expect(r.stderr).not.toContain('--relay');
  });

  it('issues dev tokens and identity certificates that verify against the issuer keys', async () => {
    const r = await runCli(['token', '--sub', 'app-9', '--home', 'home-7', '--json', ...dir()]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { token: string; certificate: string; trust: { issuer: string; audience: string; jwks: { keys: [] } } };
    const keys = createLocalJWKSet(out.trust.jwks);
    const access = await verifyAccessToken(out.token, keys, { issuer: out.trust.issuer, audience: 'homelink-signaling' });
    expect(access).toMatchObject({ sub: 'app-9', homes: ['home-7'] });
    const id = await verifyIdentityCertificate(out.certificate, keys, { issuer: out.trust.issuer, audience: out.trust.audience });
    expect(id.sub).toBe('app-9');
    expect(decodeProtectedHeader(out.certificate).typ).toBe('homelink-identity+jwt');
    const plain = await runCli(['token', '--sub', 'app-9', ...dir()]);
    expect(plain.stdout.trim().split('\n')).toHaveLength(2);
    const bad = await runCli(['token', '--sub', 'no spaces', ...dir()]);
    expect(bad.code).toBe(2);
  });

  it('netcheck: UDP, TCP and TLS to the relay, NAT behaviour, TURN allocation, signaling accepts the token', async () => {
    const r = await runCli(['netcheck', '--json', ...dir()]);
    expect(r.code, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout) as {
      udp: boolean;
      mapped: string;
      mapping: string;
      filtering: string;
      turnAllocate: string;
      relays: { udp: { ok: boolean }; tcp: { ok: boolean }; tls: { ok: boolean } }[];
      signaling: { reachable: boolean; token: string };
    };
    expect(rep.udp).toBe(true);
    expect(rep.mapped).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(rep.mapping).toBe('no-nat');
    expect(rep.filtering).toBe('endpoint-independent');
    expect(rep.turnAllocate).toBe('ok');
    expect(rep.relays[0]).toMatchObject({ udp: { ok: true }, tcp: { ok: true }, tls: { ok: true } });
    expect(rep.signaling).toMatchObject({ reachable: true, token: 'accepted' });
    const text = await runCli(['netcheck', ...dir()]);
    expect(text.stdout).toMatch(/Signaling: answers .* token accepted/);
  });

  it('netcheck reports a rejected token and a relay that does not answer, with advice and exit 1', async () => {
    const r = await runCli([
      'netcheck', '--relay-host', '127.0.0.1', '--relay-port', '9', '--relay-tls-port', '9',
      '--signaling', st.stack.signalingUrl, '--token', 'not-a-token',
    ]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('token rejected');
    // The service's 401 says nothing; the report says this token is not even a JWT.
    expect(r.stdout).toContain('the access token is not a JWT');
    expect(r.stdout).toContain('No relay answers');
    expect(r.stdout).not.toContain('certificate check');
    expect(r.stdout).not.toContain('not-a-token');
  });

  it('listen and dial exchange stdin/stdout both ways and print the path', async () => {
    const listener = spawnCli(['listen', '--as', 'hub-1', ...dir()], { stdin: 'hello from the hub\n' });
    await listener.waitForStderr('waiting for a peer');
    const dialer = await runCli(['dial', 'hub-1', '--as', 'app-1', ...dir()], { stdin: 'hello from the app\n' });
    const l = await listener.done();
    expect(dialer.code, dialer.stderr).toBe(0);
    expect(l.code, l.stderr).toBe(0);
    expect(dialer.stdout).toBe('hello from the hub\n');
    expect(l.stdout).toBe('hello from the app\n');
    expect(dialer.stderr).toMatch(/link to hub-1 open: direct 127\.0\.0\.1:\d+ <-> 127\.0\.0\.1:\d+ over udp/);
    expect(l.stderr).toMatch(/link to app-1 open: direct/);
  });

  it('dial --relay goes through our relay', async () => {
    const listener = spawnCli(['listen', '--as', 'hub-3', ...dir()], { stdin: 'relayed\n' });
    await listener.waitForStderr('waiting for a peer');
    const dialer = await runCli(['dial', 'hub-3', '--as', 'app-3', '--relay', ...dir()], { stdin: 'over the relay\n' });
    const l = await listener.done();
    expect(dialer.code, dialer.stderr).toBe(0);
    expect(dialer.stdout).toBe('relayed\n');
    expect(l.stdout).toBe('over the relay\n');
    expect(dialer.stderr).toMatch(/link to hub-3 open: via relay \(udp to the relay\)/);
  });

  it('send and receive a file with progress and a verified SHA-256', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 123);
    const src = join(work, 'photo.bin');
    await writeFile(src, data);
    const out = join(work, 'inbox');
    const receiver = spawnCli(['receive', '--as', 'hub-2', '--out', out, ...dir()]);
    await receiver.waitForStderr('waiting for a sender');
    const sender = await runCli(['send', 'hub-2', src, '--as', 'app-2', ...dir()]);
    const r = await receiver.done();
    expect(sender.code, sender.stderr).toBe(0);
    expect(r.code, r.stderr).toBe(0);
    expect(sha256(await readFile(join(out, 'photo.bin')))).toBe(sha256(data));
    expect(sender.stderr).toContain(`SHA-256 ${sha256(data)} verified by hub-2`);
    expect(sender.stderr).toMatch(/send photo\.bin \[#+\] 100%  3\.0 MiB \/ 3\.0 MiB .*\/s/);
    expect(r.stderr).toContain('verified');

    // The same name again: refused with what to do, and the sender says why.
    const again = spawnCli(['receive', '--as', 'hub-2', '--out', out, ...dir()]);
    await again.waitForStderr('waiting for a sender');
    const refused = await runCli(['send', 'hub-2', src, '--as', 'app-2', ...dir()]);
    const a = await again.done();
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('hub-2 refused the file: photo.bin already exists there');
    expect(a.code).toBe(1);
    expect(a.stderr).toContain('already exists: move it away or pass --force');
  });

  it('resumes from a partial file and still verifies the whole file', async () => {
    const data = randomBytes(1024 * 1024);
    const src = join(work, 'resume.bin');
    await writeFile(src, data);
    const out = join(work, 'inbox-resume');
    await mkdir(out, { recursive: true });
    await writeFile(join(out, 'resume.bin.part'), data.subarray(0, 400_000));
    const receiver = spawnCli(['receive', '--as', 'hub-4', '--out', out, ...dir()]);
    await receiver.waitForStderr('waiting for a sender');
    const sender = await runCli(['send', 'hub-4', src, '--as', 'app-4', ...dir()]);
    const r = await receiver.done();
    expect(sender.code, sender.stderr).toBe(0);
    expect(r.stderr).toContain('resuming resume.bin at 390.6 KiB');
    expect(sender.stderr).toContain('resuming at 390.6 KiB');
    expect(sha256(await readFile(join(out, 'resume.bin')))).toBe(sha256(data));
  });

  it('an interrupted transfer keeps what arrived, says so, and the same send resumes it', async () => {
    const data = randomBytes(24 * 1024 * 1024);
    const src = join(work, 'big.bin');
    await writeFile(src, data);
    const out = join(work, 'inbox-interrupted');
    const receiver = spawnCli(['receive', '--as', 'hub-10', '--out', out, ...dir()]);
    await receiver.waitForStderr('waiting for a sender');
    const sender = spawnCli(['send', 'hub-10', src, '--as', 'app-10', '--relay', ...dir()]);
    // Kill the sender once some of the file crossed (the progress line shows a non-zero percentage).
    await receiver.waitForStderr(/receive big\.bin \[[#.]+\]\s+([1-9]\d?)%/);
    sender.proc.kill('SIGKILL');
    const r = await receiver.done(90_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/kept .* of 24\.0 MiB in .*big\.bin\.part: run receive again and the same send resumes/);

    const again = spawnCli(['receive', '--as', 'hub-10', '--out', out, ...dir()]);
    await again.waitForStderr('waiting for a sender');
    const resumed = await runCli(['send', 'hub-10', src, '--as', 'app-10', ...dir()], { timeoutMs: 120_000 });
    const a = await again.done();
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toMatch(/resuming at \d/);
    expect(a.code, a.stderr).toBe(0);
    expect(sha256(await readFile(join(out, 'big.bin')))).toBe(sha256(data));
  });

  it('a corrupted partial file fails the SHA-256 check, is removed, and says to send again', async () => {
    const data = randomBytes(200_000);
    const src = join(work, 'bad.bin');
    await writeFile(src, data);
    const out = join(work, 'inbox-bad');
    await mkdir(out, { recursive: true });
    await writeFile(join(out, 'bad.bin.part'), randomBytes(50_000)); // not a prefix of the file
    const receiver = spawnCli(['receive', '--as', 'hub-5', '--out', out, ...dir()]);
    await receiver.waitForStderr('waiting for a sender');
    const sender = await runCli(['send', 'hub-5', src, '--as', 'app-5', ...dir()]);
    const r = await receiver.done();
    expect(sender.code).toBe(1);
    expect(sender.stderr).toContain('computed a different SHA-256');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('SHA-256 mismatch');
    await expect(readFile(join(out, 'bad.bin.part'))).rejects.toThrow();
  });

  it('dialing a peer that is not online fails with one line and exit 1', async () => {
    const r = await runCli(['dial', 'nobody-here', '--as', 'app-6', '--timeout', '15', ...dir()], { stdin: 'x' });
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines.at(-1)).toMatch(/^homelink dial: the peer is offline, unknown, or not in one of your homes.*\[PeerOffline\]$/);
  });

  it('a peer in another home is refused exactly like an offline one', async () => {
    const listener = spawnCli(['listen', '--as', 'hub-8', '--home', 'home-other', ...dir()], { stdin: 'keep-open' });
    await listener.waitForStderr('waiting for a peer');
    const r = await runCli(['dial', 'hub-8', '--as', 'app-8', '--timeout', '15', ...dir()], { stdin: 'x' });
    listener.kill();
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('[PeerOffline]');
  });

  it('pings a listener over the link without using it up; the listener then takes a dial', async () => {
    const listener = spawnCli(['listen', '--as', 'hub-11', ...dir()], { stdin: 'after the ping\n' });
    await listener.waitForStderr('waiting for a peer');
    const ping = await runCli(['ping', 'hub-11', '--as', 'app-11', '--count', '3', '--interval', '0.2', ...dir()]);
    expect(ping.code, ping.stderr).toBe(0);
    expect(ping.stdout).toMatch(/^pong from hub-11 \(direct 127\.0\.0\.1:\d+ over udp\) probe 1 in \d+\.\d ms$/m);
    expect(ping.stdout).toContain('3 sent, 3 answered, 0% lost, rtt min/avg/max');
    await listener.waitForStderr('app-11 finished pinging; still waiting');
    const dialer = await runCli(['dial', 'hub-11', '--as', 'app-12', ...dir()], { stdin: 'hello\n' });
    const l = await listener.done();
    expect(dialer.code, dialer.stderr).toBe(0);
    expect(dialer.stdout).toBe('after the ping\n');
    expect(l.stdout).toBe('hello\n');
    expect(l.code).toBe(0);
  });

  it('ping to nobody fails with one line and exit 1', async () => {
    const r = await runCli(['ping', 'nobody-here', '--count', '1', '--timeout', '15', ...dir()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('[PeerOffline]');
  });

  it('listen and receive have distinct default ids; a second endpoint with the same id replaces the first, which says so', async () => {
    const listener = spawnCli(['listen', ...dir()], { stdin: 'keep-open' });
    await listener.waitForStderr('listening as hub-1;');
    const receiver = spawnCli(['receive', '--out', join(work, 'defaults'), ...dir()]);
    await receiver.waitForStderr('receiving as hub-2 ');
    const second = spawnCli(['listen', ...dir()], { stdin: 'keep-open' });
    await second.waitForStderr('listening as hub-1;');
    const first = await listener.done();
    second.kill();
    receiver.kill();
    expect(first.code).toBe(1);
    expect(first.stderr).toContain('another endpoint connected as hub-1 and replaced this one');
    // The receiver (hub-2) was not touched by either listener.
    expect(receiver.stderr()).not.toContain('replaced');
  });

  it('prints its version and suggests the nearest command or flag', async () => {
    const v = await runCli(['--version']);
    expect(v.code).toBe(0);
    // The Node it runs on, whichever that is (the suites pass on Node 22, 24 and 26).
    expect(v.stdout).toMatch(new RegExp(`^homelink \\d+\\.\\d+\\.\\d+ \\(node ${process.versions.node.replaceAll('.', '\\.')}\\)\n$`));
    const cmd = await runCli(['recieve']);
    expect(cmd.code).toBe(2);
    expect(cmd.stderr.trim()).toBe("homelink: unknown command 'recieve': did you mean 'homelink receive'?");
    const flag = await runCli(['dial', 'hub-1', '--singaling', 'ws://x']);
    expect(flag.code).toBe(2);
    expect(flag.stderr.trim().split('\n')).toHaveLength(1);
    expect(flag.stderr).toContain('unknown option --singaling: did you mean --signaling?');
  });

  it('reads the deployment settings from a profile file, and tells an expired token from a garbled one', async () => {
    // A profile with all six deployment settings, pointing at the local stack like a deployment.
    const cfg = join(work, 'profile');
    await mkdir(cfg, { recursive: true });
    const t = await runCli(['token', '--sub', 'app-13', '--json', ...dir()]);
    const tok = JSON.parse(t.stdout) as { token: string; certificate: string; deviceKeyFile: string; trust: { issuer: string; jwks: unknown } };
    await writeFile(join(cfg, 'token.jwt'), tok.token);
    await writeFile(join(cfg, 'cert.jwt'), tok.certificate);
    await writeFile(join(cfg, 'jwks.json'), JSON.stringify(tok.trust.jwks));
    const config = join(cfg, 'config.json');
    await writeFile(
      config,
      JSON.stringify({
        profiles: {
          lab: { signaling: st.stack.signalingUrl, token: '@token.jwt', 'identity-cert': 'cert.jwt', 'identity-key': tok.deviceKeyFile, 'trust-jwks': 'jwks.json', 'trust-issuer': tok.trust.issuer, as: 'app-13' },
        },
      }),
    );
    const listener = spawnCli(['listen', '--as', 'hub-13', ...dir()], { stdin: 'to the profile\n' });
    await listener.waitForStderr('waiting for a peer');
    const ok = await runCli(['dial', 'hub-13', '--config', config], { stdin: 'from the profile\n' });
    const l = await listener.done();
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toBe('to the profile\n');
    expect(l.stderr).toContain('app-13 asks to connect');

    // The service answers a garbled and an expired token with the same 401; the CLI looks first.
    const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
    await writeFile(join(cfg, 'expired.jwt'), `${b64({ alg: 'ES256', typ: 'homelink-access+jwt' })}.${b64({ sub: 'app-13', exp: Math.floor(Date.now() / 1000) - 3600 })}.c2ln`);
    const expired = await runCli(['dial', 'hub-13', '--config', config, '--token', `@${join(cfg, 'expired.jwt')}`, '--timeout', '5']);
    expect(expired.code).toBe(1);
    expect(expired.stderr.trim().split('\n')).toHaveLength(1);
    expect(expired.stderr).toMatch(/the access token expired at .* \(60 min ago\): get a fresh one/);
    const garbled = await runCli(['dial', 'hub-13', '--config', config, '--token', 'garbage', '--timeout', '5']);
    expect(garbled.code).toBe(2);
    expect(garbled.stderr).toContain('the access token is not a JWT');
  });
});
