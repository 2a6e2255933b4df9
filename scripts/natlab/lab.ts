/**
 * Brings the NAT lab up by hand, for debugging, and keeps it until Ctrl-C (or a bounded time).
 *
 *   sudo npx tsx scripts/natlab/lab.ts [--home BEHAVIOUR]... [--open] [--minutes N]
 *   sudo npx tsx scripts/natlab/lab.ts --cleanup
 *
 * Prints the namespaces it made, so `ip netns exec <ns> ...` reaches any of them (for example
 * `ip netns exec <router> nft list ruleset`, or a shell in a host). `--cleanup` removes what
 * interrupted lab runs left behind (namespaces whose run is gone, their processes and files).
 * Behaviours: full-cone, address-restricted, port-restricted, symmetric, udp-blocked.
 */
import { Lab, PUB, removeStaleNamespaces } from '../../test/natlab/lab.js';
import { NAT_BEHAVIOURS, NAT_PROFILES, type NatBehaviour } from '../../test/natlab/nat.js';

/** Default lifetime of a hand-made lab: long enough to poke at, bounded so none is forgotten. */
const DEFAULT_MINUTES = 30;

function usage(msg: string): never {
  process.stderr.write(`natlab: ${msg}\nusage: lab.ts [--home ${NAT_BEHAVIOURS.join('|')}]... [--open] [--minutes N] | --cleanup\n`);
  process.exit(2);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (process.getuid?.() !== 0) usage('needs root (network namespaces and nftables)');
  if (args.includes('--cleanup')) {
    const removed = removeStaleNamespaces();
    process.stdout.write(removed.length ? `removed ${removed.join(' ')}\n` : 'nothing to remove\n');
    return;
  }
  const homes: NatBehaviour[] = [];
  let open = 0;
  let minutes = DEFAULT_MINUTES;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--home') {
      const b = args[++i] as NatBehaviour | undefined;
      if (!b || !NAT_BEHAVIOURS.includes(b)) usage(`unknown behaviour ${String(b)}`);
      homes.push(b);
    } else if (a === '--open') open++;
    else if (a === '--minutes') {
      minutes = Number(args[++i]);
      if (!Number.isFinite(minutes) || minutes <= 0 || minutes > 24 * 60) usage('--minutes must be 1..1440');
    } else usage(`unknown argument ${String(a)}`);
  }
  if (homes.length === 0 && open === 0) homes.push('port-restricted', 'symmetric');

  const lab = await Lab.create();
  process.stdout.write(`pub: ${lab.pub} (signaling ${PUB.signaling}, relay ${PUB.relay} and ${PUB.relayAlt})\n`);
  for (const b of homes) {
    const h = await lab.addHome(b);
    process.stdout.write(`${b}: router ${h.router} (wan ${h.wanAddress}), host ${h.hosts[0]!.ns} (${h.hosts[0]!.address}); ${NAT_PROFILES[b].summary}\n`);
  }
  for (let i = 0; i < open; i++) {
    const o = await lab.addOpenHost();
    process.stdout.write(`open: host ${o.ns} (${o.address})\n`);
  }
  process.stdout.write(`up for ${minutes} min; Ctrl-C tears it down\n`);
  // Lab installs SIGINT/SIGTERM/exit hooks that tear everything down.
  await new Promise((r) => setTimeout(r, minutes * 60_000));
  await lab.destroy();
}

void main();
