/**
 * `homelink ping <peer>`: round-trip time and path over a real link, probe by probe, like
 * `tailscale ping`. It dials the peer (which must run `homelink listen` or `receive`: they
 * answer pings without using up their one link), opens the `ping` channel
 * (protocol/channels.ts: unordered, no retransmissions, so a lost probe shows as lost) and
 * sends one probe per interval. Each line names the path the probe took, so a switch from the
 * relay to a direct path (or back) shows as it happens. Node only.
 */
import { PING_LABEL, PING_PREFIX, isPingProbe } from '../protocol/channels.js';
import { resolveCredentials, UsageError, type CredentialFlags } from './credentials.js';
import { DEFAULT_IDS } from './defaults.js';
import { connectEndpoint, describePath, type Link } from './endpoint.js';
import { reportPath, timeoutMs } from './link-commands.js';
import { ENDPOINT_HELP, ENDPOINT_OPTIONS, type Command } from './main.js';
import { devDir } from './stack.js';

/** Probes sent unless --count says otherwise: as many as `ping -c 4` / `tailscale ping` shows. */
export const DEFAULT_PING_COUNT = 4;
/** Most probes one run sends: a bound on a forgotten `--count`. */
export const MAX_PING_COUNT = 10_000;
/** Time between probes (s): once a second, like ping(8). */
export const DEFAULT_PING_INTERVAL_S = 1;
/** A probe unanswered after this long is counted lost (a relayed path across continents is < 1 s). */
export const PING_PROBE_TIMEOUT_MS = 5_000;

const log = (line: string): void => {
  process.stderr.write(`homelink: ${line}\n`);
};

/** Parses a bounded number flag. */
function numberFlag(v: unknown, name: string, def: number, min: number, max: number, integer: boolean): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    throw new UsageError(`--${name} must be ${integer ? 'a whole number' : 'a number'} from ${min} to ${max}`);
  }
  return n;
}

/** min/avg/max of the answered probes, ping(8)'s summary. */
export function summarize(sent: number, rtts: readonly number[]): string {
  const lost = sent - rtts.length;
  const head = `${sent} sent, ${rtts.length} answered, ${sent === 0 ? 0 : Math.round((100 * lost) / sent)}% lost`;
  if (rtts.length === 0) return head;
  const min = Math.min(...rtts);
  const max = Math.max(...rtts);
  const avg = rtts.reduce((a, b) => a + b, 0) / rtts.length;
  return `${head}, rtt min/avg/max ${min.toFixed(1)}/${avg.toFixed(1)}/${max.toFixed(1)} ms`;
}

/** `direct udp ...` or `relay (udp)`: the short path label per probe line. */
function pathLabel(link: Link): string {
  const p = link.path;
  if (!p) return 'path unknown';
  return p.kind === 'direct' ? `direct ${p.remote} over ${p.protocol}` : `via relay (${p.protocol}) ${p.remote}`;
}

export const pingCommand: Command = {
  summary: 'Measure round-trip time and path to a peer over a link (the peer runs homelink listen or receive).',
  usage: `homelink ping <peer> [--count N] [--interval SECONDS] [--as ID] [options]

  Prints one line per probe: the round-trip time over the data channel and the path it took.
  Exits 0 when at least one probe was answered, 1 otherwise.
  --count N            probes to send (default ${DEFAULT_PING_COUNT}, at most ${MAX_PING_COUNT})
  --interval SECONDS   time between probes (default ${DEFAULT_PING_INTERVAL_S}; at least 0.01)
  --as ID              this endpoint's id (default ${DEFAULT_IDS.ping})
${ENDPOINT_HELP}`,
  options: { ...ENDPOINT_OPTIONS, count: { type: 'string', short: 'c' }, interval: { type: 'string', short: 'i' } },
  async run(v, positionals) {
    const peer = positionals[0];
    if (!peer || positionals.length > 1) throw new UsageError('give exactly one peer id: homelink ping <peer>');
    const count = numberFlag(v['count'], 'count', DEFAULT_PING_COUNT, 1, MAX_PING_COUNT, true);
    const intervalMs = numberFlag(v['interval'], 'interval', DEFAULT_PING_INTERVAL_S, 0.01, 60, false) * 1000;
    const ms = timeoutMs(v['timeout']);
    const creds = await resolveCredentials(v as CredentialFlags, devDir(v['dir'] as string | undefined), DEFAULT_IDS.ping);
    const ep = await connectEndpoint(creds, { relay: v['relay'] === true });
    try {
      log(`dialing ${peer} ...`);
      const t0 = performance.now();
      const link = await ep.dial(peer, { timeoutMs: ms });
      log(`link up in ${(performance.now() - t0).toFixed(0)} ms`);
      reportPath(link, peer);
      const ch = await link.channel(PING_LABEL, { ordered: false, maxRetransmits: 0 });
      // Answers by sequence number: a late answer to a probe already counted lost is ignored.
      const waiting = new Map<number, (rttMs: number) => void>();
      const sentAt = new Map<number, number>();
      ch.on('message', (m) => {
        if (!isPingProbe(m)) return;
        const seq = Number(m.slice(PING_PREFIX.length));
        const start = sentAt.get(seq);
        const done = waiting.get(seq);
        if (start === undefined || !done) return;
        waiting.delete(seq);
        done(performance.now() - start);
      });
      const closed = new Promise<'closed'>((r) => link.once('close', () => r('closed')));
      const rtts: number[] = [];
      let sent = 0;
      for (let seq = 1; seq <= count; seq++) {
        const next = performance.now() + intervalMs;
        const answer = new Promise<number>((r) => waiting.set(seq, r));
        let timer: ReturnType<typeof setTimeout> | undefined;
        const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), PING_PROBE_TIMEOUT_MS)));
        sentAt.set(seq, performance.now());
        await ch.send(`${PING_PREFIX}${seq}`);
        sent++;
        const r = await Promise.race([answer, timeout, closed]);
        clearTimeout(timer);
        waiting.delete(seq);
        if (r === 'closed') {
          log(`the link to ${peer} closed`);
          break;
        }
        if (r === 'timeout') process.stdout.write(`no answer from ${peer} to probe ${seq} within ${PING_PROBE_TIMEOUT_MS / 1000} s\n`);
        else {
          rtts.push(r);
          process.stdout.write(`pong from ${peer} (${pathLabel(link)}) probe ${seq} in ${r.toFixed(1)} ms\n`);
        }
        if (seq < count) await new Promise((res) => setTimeout(res, Math.max(0, next - performance.now())));
      }
      process.stdout.write(`${summarize(sent, rtts)}; path now ${describePath(link.path)}\n`);
      link.close();
      return rtts.length > 0 ? 0 : 1;
    } finally {
      ep.close();
    }
  },
};
