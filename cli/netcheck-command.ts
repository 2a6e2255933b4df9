/**
 * `homelink netcheck`: runs cli/netcheck.ts against the local stack (default) or the relay and
 * signaling service given by flags, and prints the report (or JSON).
 * Node only.
 */
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createDevIssuer } from '../dev/issuer.js';
import { mintTurnCredential } from '../protocol/turn-credentials.js';
import { UsageError } from './credentials.js';
import { formatReport, netcheck, type NetcheckOptions, type RelayTarget } from './netcheck.js';
import { devDir, readStack } from './stack.js';
import type { Command } from './main.js';

/** Lifetime of the TURN credential netcheck mints for itself: the test takes seconds. */
const NETCHECK_TURN_TTL_SECONDS = 120;

const port = (v: unknown, name: string, def: number): number => {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new UsageError(`--${name} must be a port number`);
  return n;
};

export const netcheckCommand: Command = {
  summary: 'Check what works from this network: NAT mapping and filtering, the server-reflexive address, each relay over UDP/TCP/TLS with its round-trip time, and whether signaling answers and accepts the token.',
  usage: `homelink netcheck [--json] [--dir PATH]
       homelink netcheck --relay-host HOST [--relay-port 3478] [--relay-tls-port 5349] [--relay-alt HOST]
                         [--ca FILE] [--turn-user U --turn-pass P] [--signaling URL] [--token T|@FILE] [--json]

  --json             machine-readable report
  --dir PATH         the local stack's folder (default .dev): relay, signaling, TURN secret and a dev token come from it
  --relay-host HOST  test this relay instead (UDP and TCP on --relay-port, TLS on --relay-tls-port)
  --relay-alt HOST   the relay's second address (for the NAT mapping/filtering tests)
  --ca FILE          PEM certificate to trust for the relay's TLS
  --turn-user/--turn-pass  TURN credentials for the filtering test
  --signaling URL    ws(s):// URL of the signaling service
  --token T|@FILE    access token to check against it (this briefly opens the endpoint's presence:
                     use a token for a test id, not one of a device that is online)`,
  options: {
    json: { type: 'boolean' },
    dir: { type: 'string' },
    'relay-host': { type: 'string' },
    'relay-port': { type: 'string' },
    'relay-tls-port': { type: 'string' },
    'relay-alt': { type: 'string' },
    ca: { type: 'string' },
    'turn-user': { type: 'string' },
    'turn-pass': { type: 'string' },
    signaling: { type: 'string' },
    token: { type: 'string' },
  },
  async run(v) {
    let opts: NetcheckOptions;
    const tokenFlag = v['token'] as string | undefined;
    const token = tokenFlag?.startsWith('@') ? (await readFile(tokenFlag.slice(1), 'utf8')).trim() : tokenFlag;
    const sigFlag = v['signaling'] as string | undefined;
    const signaling = (url: string, tok?: string): NetcheckOptions['signaling'] => ({
      wsUrl: url,
      httpUrl: url.replace(/^ws/, 'http'),
      ...(tok ? { token: tok } : {}),
    });
    if (v['relay-host']) {
      const udpPort = port(v['relay-port'], 'relay-port', 3478);
      const user = v['turn-user'] as string | undefined;
      const pass = v['turn-pass'] as string | undefined;
      if ((user === undefined) !== (pass === undefined)) throw new UsageError('pass both --turn-user and --turn-pass, or neither');
      const relay: RelayTarget = {
        name: v['relay-host'] as string,
        host: v['relay-host'] as string,
        udpPort,
        tcpPort: udpPort,
        tlsPort: port(v['relay-tls-port'], 'relay-tls-port', 5349),
        ...(v['relay-alt'] ? { altHost: v['relay-alt'] as string } : {}),
        ...(v['ca'] ? { caFile: v['ca'] as string } : {}),
        ...(user && pass ? { turn: { username: user, password: pass } } : {}),
      };
      opts = { relays: [relay], ...(sigFlag ? { signaling: signaling(sigFlag, token) } : {}) };
    } else {
      const dir = devDir(v['dir'] as string | undefined);
      const stack = await readStack(dir);
      // Development: the stack's TURN secret and issuer give netcheck its own short-lived credentials.
      let turn: RelayTarget['turn'];
      try {
        const secret = (await readFile(join(dirname(stack.issuerDir), 'turn-secret'), 'utf8')).trim();
        const c = await mintTurnCredential(secret, `netcheck-${process.pid}`, NETCHECK_TURN_TTL_SECONDS, Date.now() / 1000);
        turn = { username: c.username, password: c.credential };
      } catch {
        turn = undefined;
      }
      const devToken = token ?? (await (await createDevIssuer({ dir: stack.issuerDir })).accessToken({ sub: `netcheck-${process.pid}`, homes: ['netcheck'] }));
      opts = {
        relays: [
          {
            name: 'local',
            host: stack.relay.host,
            udpPort: stack.relay.udpPort,
            tcpPort: stack.relay.tcpPort,
            tlsPort: stack.relay.tlsPort,
            ...(stack.relay.altHost ? { altHost: stack.relay.altHost } : {}),
            ...(stack.relay.caFile ? { caFile: stack.relay.caFile, servername: 'localhost' } : {}),
            ...(turn ? { turn } : {}),
          },
        ],
        signaling: signaling(sigFlag ?? stack.signalingUrl, devToken),
      };
    }
    const report = await netcheck(opts);
    process.stdout.write(v['json'] ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
    const working = report.relays.some((r) => r.udp.ok || r.tcp.ok || r.tls.ok) && report.signaling.reachable !== false && report.signaling.token !== 'rejected';
    return working ? 0 : 1;
  },
};
