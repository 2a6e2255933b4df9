/**
 * The CLI's settings (flags over HOMELINK_* variables over a profile file), its "did you mean"
 * suggestions, the access-token pre-check that tells a garbled token from an expired one, the
 * ping probe format, and the signaling URL forms the library accepts. No stack needed.
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { joinUrl } from '../../client/signaling.js';
import { isPingProbe } from '../../protocol/channels.js';
import { defaultConfigFile, envName, fromEnv, loadProfile, withSettings } from '../../cli/config.js';
import { checkAccessToken, explainRejectedToken, TokenProblem, UsageError } from '../../cli/credentials.js';
import { ENDPOINT_OPTIONS, explainParseError } from '../../cli/main.js';
import { summarize } from '../../cli/ping-command.js';
import { editDistance, suggest } from '../../cli/suggest.js';

const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
const jwt = (header: object, claims: object): string => `${b64(header)}.${b64(claims)}.c2ln`;
const NOW = Date.UTC(2026, 11, 5, 9, 0, 0);

describe('settings: flags, then HOMELINK_* variables, then the profile', () => {
  let dir: string;
  let file: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'homelink-config-'));
    file = join(dir, 'config.json');
    await writeFile(
      file,
      JSON.stringify({
        defaultProfile: 'home',
        profiles: {
          home: { signaling: 'wss://signal.example.com', token: '@token.jwt', 'identity-cert': 'dev.cert', 'trust-issuer': 'https://issuer.example', as: 'hub-7', home: 'home-9' },
          lab: { signaling: 'ws://127.0.0.1:8787' },
        },
      }),
      { mode: 0o600 },
    );
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('takes the default profile, resolving file paths against the config file', async () => {
    const v = await withSettings({ config: file }, ENDPOINT_OPTIONS, {});
    expect(v).toEqual({
      signaling: 'wss://signal.example.com',
      token: `@${join(dir, 'token.jwt')}`,
      'identity-cert': join(dir, 'dev.cert'),
      'trust-issuer': 'https://issuer.example',
      as: 'hub-7',
      home: ['home-9'],
    });
  });

  it('lets variables override the profile and flags override both', async () => {
    const env = { HOMELINK_CONFIG: file, HOMELINK_SIGNALING: 'wss://env.example', HOMELINK_AS: 'hub-env', HOMELINK_HOME: 'a, b' };
    const v = await withSettings({ as: 'hub-flag' }, ENDPOINT_OPTIONS, env);
    expect(v['signaling']).toBe('wss://env.example');
    expect(v['as']).toBe('hub-flag');
    expect(v['home']).toEqual(['a', 'b']);
    expect(v['trust-issuer']).toBe('https://issuer.example');
    expect(envName('identity-cert')).toBe('HOMELINK_IDENTITY_CERT');
  });

  it('selects a profile by flag or HOMELINK_PROFILE, and only settings the command has', async () => {
    expect(await withSettings({ config: file, profile: 'lab' }, ENDPOINT_OPTIONS, {})).toEqual({ signaling: 'ws://127.0.0.1:8787' });
    expect(await withSettings({}, ENDPOINT_OPTIONS, { HOMELINK_CONFIG: file, HOMELINK_PROFILE: 'lab' })).toEqual({ signaling: 'ws://127.0.0.1:8787' });
    expect(await withSettings({ config: file }, { json: {} }, {})).toEqual({});
    expect(fromEnv({ json: {} }, { HOMELINK_SIGNALING: 'x' })).toEqual({});
  });

  it('works without any config file at the default place', async () => {
    const env = { XDG_CONFIG_HOME: join(dir, 'nothing') };
    expect(defaultConfigFile(env)).toBe(join(dir, 'nothing', 'homelink', 'config.json'));
    expect(await loadProfile({ env })).toBeNull();
    expect(await withSettings({ as: 'x' }, ENDPOINT_OPTIONS, env)).toEqual({ as: 'x' });
  });

  it('refuses a missing file, a missing profile and unknown keys, naming them and suggesting', async () => {
    await expect(loadProfile({ file: join(dir, 'nope.json'), env: {} })).rejects.toThrow(/cannot read config file/);
    await expect(loadProfile({ file, profile: 'hom', env: {} })).rejects.toThrow(/no profile "hom": did you mean "home"\?/);
    const typo = join(dir, 'typo.json');
    await writeFile(typo, JSON.stringify({ profiles: { p: { singaling: 'x' } } }));
    await expect(loadProfile({ file: typo, env: {} })).rejects.toThrow(/unknown key "singaling": did you mean "signaling"\?/);
    const bad = join(dir, 'bad.json');
    await writeFile(bad, '{"profiles": [1]}');
    await expect(loadProfile({ file: bad, env: {} })).rejects.toBeInstanceOf(UsageError);
    await writeFile(bad, '{"profiles": {"p": {"as": {"x": 1}}}}');
    await expect(loadProfile({ file: bad, env: {} })).rejects.toThrow(/"as" in profile "p" must be a string/);
    await writeFile(bad, 'not json');
    await expect(loadProfile({ file: bad, env: {} })).rejects.toThrow(/is not JSON/);
  });

  it('refuses an inline token in a file others can read, without printing it', async () => {
    const open = join(dir, 'open.json');
    await writeFile(open, JSON.stringify({ profiles: { p: { token: 'eyJsecret.eyJsecret.sig' } } }));
    await chmod(open, 0o644);
    const e = await loadProfile({ file: open, env: {} }).catch((x: Error) => x);
    expect(e).toBeInstanceOf(UsageError);
    expect((e as Error).message).toContain('chmod 600');
    expect((e as Error).message).not.toContain('secret');
    await chmod(open, 0o600);
    expect((await loadProfile({ file: open, env: {} }))!.values['token']).toBe('eyJsecret.eyJsecret.sig');
  });
});

describe('did you mean', () => {
  it('finds typos and prefixes, and stays quiet for other words', () => {
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(suggest('singaling', ['signaling', 'token'])).toBe('signaling');
    expect(suggest('recieve', ['receive', 'listen'])).toBe('receive');
    expect(suggest('net', ['netcheck', 'dial'])).toBe('netcheck');
    expect(suggest('frobnicate', ['listen', 'dial', 'send', 'receive', 'netcheck', 'token', 'ping'])).toBeNull();
  });

  it('turns an unknown-option error into one line with the nearest flag', () => {
    const e = new Error("Unknown option '--singaling'. To specify a positional argument starting with a '-', place it at the end of the command after '--', as in '-- \"--singaling\"");
    expect(explainParseError(e, Object.keys(ENDPOINT_OPTIONS))).toBe('unknown option --singaling: did you mean --signaling?');
    expect(explainParseError(new Error("Unknown option '--zzzzzzzz'."), ['as'])).toBe('unknown option --zzzzzzzz');
  });
});

describe('the access token before it is sent', () => {
  it('tells garbage, an identity certificate, an expired and a not-yet-valid token apart', () => {
    const now = NOW / 1000;
    const call = (t: string): unknown => {
      try {
        checkAccessToken(t, NOW);
        return null;
      } catch (e) {
        return e;
      }
    };
    const garbage = call('not-a-token');
    expect(garbage).toBeInstanceOf(UsageError);
    expect((garbage as Error).message).toContain('not a JWT');
    expect(call('a.b.c')).toBeInstanceOf(UsageError);
    expect(call(`${b64({ alg: 'ES256' })}.!!!.sig`)).toBeInstanceOf(UsageError);
    const cert = call(jwt({ alg: 'ES256', typ: 'homelink-identity+jwt' }, { exp: now + 60 }));
    expect((cert as Error).message).toContain('identity certificate');
    const expiredToken = jwt({ alg: 'ES256', typ: 'homelink-access+jwt' }, { exp: now - 600 });
    const expired = call(expiredToken);
    expect(expired).toBeInstanceOf(TokenProblem);
    expect((expired as Error).message).toMatch(/expired at 2026-12-05T08:50:00\.000Z \(10 min ago\)/);
    expect((expired as Error).message).not.toContain(expiredToken.split('.')[1]!);
    expect(call(jwt({ alg: 'ES256' }, { nbf: now + 3600, exp: now + 7200 }))).toBeInstanceOf(TokenProblem);
    // Within the service's 30 s clock tolerance: still sent.
    expect(call(jwt({ alg: 'ES256' }, { exp: now - 10 }))).toBeNull();
    expect(call(jwt({ alg: 'ES256' }, { exp: now + 600 }))).toBeNull();
  });

  it('explains a refusal by the service differently for garbage, expiry and distrust', () => {
    const now = NOW / 1000;
    expect(explainRejectedToken('garbage', NOW)).toContain('not a JWT');
    expect(explainRejectedToken(jwt({ alg: 'ES256' }, { exp: now - 7200 }), NOW)).toContain('expired at');
    expect(explainRejectedToken(jwt({ alg: 'ES256' }, { exp: now + 600 }), NOW)).toContain('does not trust its issuer, audience or signature');
  });
});

describe('ping probes', () => {
  it('echoes only short numbered probes', () => {
    expect(isPingProbe('ping 1')).toBe(true);
    expect(isPingProbe('ping 123456789012345')).toBe(true);
    for (const m of ['ping ', 'ping x', 'pong 1', `ping ${'1'.repeat(40)}`, 'ping 1\n', new Uint8Array([1])]) expect(isPingProbe(m), String(m)).toBe(false);
  });

  it('summarizes like ping(8)', () => {
    expect(summarize(4, [1, 2, 3])).toBe('4 sent, 3 answered, 25% lost, rtt min/avg/max 1.0/2.0/3.0 ms');
    expect(summarize(2, [])).toBe('2 sent, 0 answered, 100% lost');
  });
});

describe('signaling URL forms', () => {
  it('takes the base URL or the presence URL npm start prints, with or without a path prefix', () => {
    for (const base of ['ws://127.0.0.1:8787', 'ws://127.0.0.1:8787/', 'ws://127.0.0.1:8787/v1/presence', 'ws://127.0.0.1:8787/v1/presence/', 'http://127.0.0.1:8787/v1/presence']) {
      expect(joinUrl(base, '/v1/presence'), base).toBe('ws://127.0.0.1:8787/v1/presence');
      expect(joinUrl(base, '/v1/rooms/s1'), base).toBe('ws://127.0.0.1:8787/v1/rooms/s1');
    }
    expect(joinUrl('wss://x.example/prefix/v1/presence', '/v1/rooms/s1')).toBe('wss://x.example/prefix/v1/rooms/s1');
    expect(joinUrl('https://x.example/prefix', '/v1/presence')).toBe('wss://x.example/prefix/v1/presence');
  });
});
