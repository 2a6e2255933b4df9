/**
 * The NAT lab: network namespaces wired into a small internet, with no link to the
 * machine's own namespace so nothing can leave it.
 *
 *   pub namespace                       home i (one router namespace + host namespaces)
 *   br0 203.0.113.5   signaling          rtr: wan0 203.0.113.(30+k) on pub's br0
 *       203.0.113.10  relay, probe A          lan0 (bridge) 198.18.i.1/24, NAT rules (nat.ts)
 *       203.0.113.20  relay alt, probe B hosts: eth0 198.18.i.2, .3 ... default via 198.18.i.1
 *   bh0 (veth to bh1) default route: a black hole, so sends to private addresses vanish
 *                     silently as on the real internet instead of failing with ENETUNREACH
 *   open host: eth0 203.0.113.(30+k) directly on br0, no NAT
 *
 * Interfaces are named eth0/lan0/wan0/br0/bh0 and p<k>/r<k> on bridges, never veth*: werift
 * ignores interfaces whose name starts with veth. IPv6 is disabled in every namespace so
 * hosts gather exactly one host candidate.
 *
 * Names are unique to the run (`hl<pid>x<random>-...`). `destroy()` is idempotent; a
 * process-wide exit/SIGINT/SIGTERM hook tears down every live lab synchronously, and
 * `create()` first removes namespaces left by lab runs whose process is gone. Every
 * command and every wait has a bound.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NAT_PROFILES, routerRuleset, type NatBehaviour } from './nat.js';

/** Bound on any single `ip`/`nft`/`sysctl` invocation; they take milliseconds. */
const COMMAND_TIMEOUT_MS = 10_000;
/** Grace a lab process gets after SIGTERM before SIGKILL. */
const KILL_GRACE_MS = 2_000;
/** Prefix shared by every lab namespace, used to find stale ones. */
const NS_PREFIX = 'hl';
const NS_NAME_RE = /^hl(\d+)x[0-9a-f]+-/;

/** Public addresses inside the lab (RFC 5737 TEST-NET-3). */
export const PUB = {
  subnet: '203.0.113.0/24',
  prefix: 24,
  signaling: '203.0.113.5',
  relay: '203.0.113.10',
  relayAlt: '203.0.113.20',
  /** First address handed to router WANs and open hosts. */
  firstDynamic: 30,
  lastDynamic: 250,
} as const;

/** pub's bridge MAC: fixed and locally administered, so it never follows the ports that come and go. */
const BRIDGE_MAC = '02:68:6c:00:00:01';
/** Next hop of pub's default route (RFC 5737 TEST-NET-2) and its fictitious, locally administered MAC. */
const BLACK_HOLE_GATEWAY = '198.51.100.254';
const BLACK_HOLE_MAC = '02:00:5e:00:53:fe';

/** Home LANs are 198.18.<i>.0/24 (RFC 2544 benchmarking range 198.18.0.0/15). */
const HOME_OCTET_MAX = 250;
/** nftables table of `blockUdp` on a router, apart from the NAT table so lifting it touches nothing else. */
const BLOCK_TABLE = 'homelink_block';

export class LabError extends Error {
  override readonly name = 'LabError';
}

export interface CommandResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command with a time bound; rejects with a LabError naming the command. */
export function run(cmd: string, args: readonly string[], input?: string, timeoutMs = COMMAND_TIMEOUT_MS): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        reject(new LabError(`${cmd} ${args.join(' ')} failed: ${String(stderr).trim() || err.message}`, { cause: err }));
      } else resolve({ stdout: String(stdout), stderr: String(stderr) });
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

function runSyncQuiet(cmd: string, args: readonly string[]): string {
  try {
    return execFileSync(cmd, args, { timeout: COMMAND_TIMEOUT_MS, stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  } catch {
    return '';
  }
}

function listNamespaces(): string[] {
  return runSyncQuiet('ip', ['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(NS_PREFIX));
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Kills whatever still runs inside one of our lab namespaces (a relay, workerd, an endpoint
 * whose parent died), then deletes the namespace. Only namespaces of our own naming scheme
 * are ever passed here, so only processes a lab run started are touched.
 */
function killAndDelete(ns: string): void {
  for (const pid of runSyncQuiet('ip', ['netns', 'pids', ns]).split('\n').map(Number).filter((n) => n > 1)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  runSyncQuiet('ip', ['netns', 'del', ns]);
}

/**
 * Deletes namespaces (and their processes) left behind by lab runs whose process no longer
 * exists, and their temporary files (`<tmpdir>/natlab-<runId>-*`).
 */
export function removeStaleNamespaces(): string[] {
  const removed: string[] = [];
  for (const ns of listNamespaces()) {
    const m = NS_NAME_RE.exec(ns);
    if (!m || pidAlive(Number(m[1]))) continue;
    killAndDelete(ns);
    removed.push(ns);
  }
  for (const name of readdirSync(tmpdir())) {
    const m = /^natlab-hl(\d+)x[0-9a-f]+-/.exec(name);
    if (m && !pidAlive(Number(m[1]))) rmSync(join(tmpdir(), name), { recursive: true, force: true });
  }
  return removed;
}

/** A process started inside a lab namespace. */
export interface LabProcess {
  readonly ns: string;
  readonly child: ChildProcess;
  /** Everything written to stdout so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (null if killed by a signal). */
  readonly exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after a bounded grace; resolves when the process is gone. */
  stop(): Promise<void>;
}

/** An endpoint machine: a namespace with one `eth0`. */
export interface Host {
  readonly ns: string;
  readonly address: string;
  /** The NAT in front of it; null for a host on the public side. */
  readonly behaviour: NatBehaviour | null;
}

export interface Home {
  readonly router: string;
  readonly wanAddress: string;
  readonly lanSubnet: string;
  readonly behaviour: NatBehaviour;
  readonly hosts: readonly Host[];
}

const liveLabs = new Set<Lab>();
let hooksInstalled = false;

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const lab of liveLabs) lab.destroySync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const lab of liveLabs) lab.destroySync();
      process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
    });
  }
}

/**
 * One lab run: the public namespace plus the homes and open hosts added to it.
 *
 * @example
 * const lab = await Lab.create();
 * try {
 *   const home = await lab.addHome('symmetric');
 *   const p = lab.spawn(home.hosts[0]!.ns, 'node', ['-e', 'console.log(1)']);
 *   await p.exited;
 * } finally {
 *   await lab.destroy();
 * }
 */
export class Lab {
  readonly runId: string;
  readonly pub: string;
  private readonly namespaces = new Set<string>();
  private readonly processes = new Set<LabProcess>();
  private readonly usedPub = new Set<number>();
  private readonly usedHome = new Set<number>();
  private nextPort = 0;
  /** Names of the router-side ports of moved hosts (`m<n>`), unique per run. */
  private movedPorts = 0;
  /** Next host octet per home LAN (`renumberHost`, `moveHost`), after the hosts it was built with. */
  private readonly hostOctets = new Map<string, number>();
  private readonly cursor = new Map<Set<number>, number>();
  private destroyed = false;

  private constructor() {
    this.runId = `${NS_PREFIX}${process.pid}x${randomBytes(3).toString('hex')}`;
    this.pub = `${this.runId}-pub`;
  }

  /** Builds the public namespace. Removes stale namespaces of dead runs first. */
  static async create(): Promise<Lab> {
    removeStaleNamespaces();
    installExitHooks();
    const lab = new Lab();
    liveLabs.add(lab);
    try {
      await lab.addNamespace(lab.pub);
      await lab.ipBatch(lab.pub, [
        // A fixed MAC: a bridge with none takes its lowest port MAC and changes it as cells add
        // and remove homes, which silences the relay and signaling for every neighbour that
        // cached the old one until its entry is probed again (tens of seconds; lab.test.ts).
        `link add br0 address ${BRIDGE_MAC} type bridge`,
        'link set br0 up',
        `addr add ${PUB.signaling}/${PUB.prefix} dev br0`,
        `addr add ${PUB.relay}/${PUB.prefix} dev br0`,
        `addr add ${PUB.relayAlt}/${PUB.prefix} dev br0`,
        // The black hole: a veth pair whose far end (bh1) has no address; the default route
        // points at a gateway with a permanent, unused MAC, so frames reach bh1 and are
        // dropped as addressed to another host. (No dummy module on this kernel.)
        'link add bh0 type veth peer name bh1',
        'link set bh1 up',
        'link set bh0 up',
        `neigh add ${BLACK_HOLE_GATEWAY} lladdr ${BLACK_HOLE_MAC} dev bh0 nud permanent`,
        `route add default via ${BLACK_HOLE_GATEWAY} dev bh0 onlink`,
      ]);
    } catch (e) {
      await lab.destroy();
      throw e;
    }
    return lab;
  }

  /** Adds a home with `hostCount` hosts behind a router of the given behaviour. */
  async addHome(behaviour: NatBehaviour, hostCount = 1): Promise<Home> {
    const i = this.allocate(this.usedHome, 1, HOME_OCTET_MAX);
    const k = this.allocate(this.usedPub, PUB.firstDynamic, PUB.lastDynamic);
    const router = `${this.runId}-r${i}`;
    const wanAddress = `203.0.113.${k}`;
    const lan = `198.18.${i}`;
    const hosts: Host[] = [];
    const home: Home = { router, wanAddress, lanSubnet: `${lan}.0/24`, behaviour, hosts };
    try {
      await this.addNamespace(router);
      await run('ip', ['-n', router, 'link', 'add', 'wan0', 'type', 'veth', 'peer', 'name', `r${k}`, 'netns', this.pub]);
      await this.ipBatch(this.pub, [`link set r${k} master br0`, `link set r${k} up`]);
      await this.ipBatch(router, [
        'link set wan0 up',
        `addr add ${wanAddress}/${PUB.prefix} dev wan0`,
        `route add default via ${PUB.relay} dev wan0`,
        'link add lan0 type bridge',
        'link set lan0 up',
        `addr add ${lan}.1/24 dev lan0`,
      ]);
      await this.sysctl(router, ['net.ipv4.ip_forward=1']);
      await run('ip', ['netns', 'exec', router, 'nft', '-f', '-'], routerRuleset(behaviour));
      for (let h = 0; h < hostCount; h++) {
        const ns = `${this.runId}-h${i}${String.fromCharCode(97 + h)}`;
        const address = `${lan}.${2 + h}`;
        await this.addNamespace(ns);
        hosts.push({ ns, address, behaviour });
        await run('ip', ['-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `p${h}`, 'netns', router]);
        await this.ipBatch(router, [`link set p${h} master lan0`, `link set p${h} up`]);
        await this.ipBatch(ns, ['link set eth0 up', `addr add ${address}/24 dev eth0`, `route add default via ${lan}.1 dev eth0`]);
      }
    } catch (e) {
      await this.removeHome(home);
      throw e;
    }
    return home;
  }

  /** Adds a host with a public address directly on the bridge (no NAT). */
  async addOpenHost(): Promise<Host> {
    const k = this.allocate(this.usedPub, PUB.firstDynamic, PUB.lastDynamic);
    const ns = `${this.runId}-o${k}`;
    const address = `203.0.113.${k}`;
    const host: Host = { ns, address, behaviour: null };
    try {
      await this.addNamespace(ns);
      await run('ip', ['-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `o${k}`, 'netns', this.pub]);
      await this.ipBatch(this.pub, [`link set o${k} master br0`, `link set o${k} up`]);
      await this.ipBatch(ns, ['link set eth0 up', `addr add ${address}/${PUB.prefix} dev eth0`, `route add default via ${PUB.relay} dev eth0`]);
    } catch (e) {
      await this.removeOpenHost(host);
      throw e;
    }
    return host;
  }

  private nextHostOctet(home: Home): number {
    const n = this.hostOctets.get(home.router) ?? 2 + home.hosts.length;
    if (n > 254) throw new LabError(`no free host address left on ${home.lanSubnet}`);
    this.hostOctets.set(home.router, n + 1);
    return n;
  }

  /** Removes a home (its router and hosts) and frees its addresses for later cases. */
  async removeHome(home: Home): Promise<void> {
    await this.stopProcessesIn([home.router, ...home.hosts.map((h) => h.ns)]);
    const k = Number(home.wanAddress.split('.')[3]);
    await this.detachFromPub(`r${k}`, home.wanAddress);
    for (const h of home.hosts) await this.deleteNamespace(h.ns);
    await this.deleteNamespace(home.router);
    this.usedHome.delete(Number(/-r(\d+)$/.exec(home.router)?.[1]));
    this.usedPub.delete(k);
  }

  /** Removes an open host and frees its address. */
  async removeOpenHost(host: Host): Promise<void> {
    await this.stopProcessesIn([host.ns]);
    const k = Number(host.address.split('.')[3]);
    await this.detachFromPub(`o${k}`, host.address);
    await this.deleteNamespace(host.ns);
    this.usedPub.delete(k);
  }

  /**
   * Gives a host of `home` a new address on the same LAN, as a DHCP lease change would: the
   * old address goes (and with it every socket bound to it and the default route), the next
   * free address of the LAN comes up, the default route is put back. Returns the host as it
   * is now; the namespace and its processes stay.
   */
  async renumberHost(home: Home, host: Host): Promise<Host> {
    const lan = home.lanSubnet.replace(/\.0\/24$/, '');
    const address = `${lan}.${this.nextHostOctet(home)}`;
    await this.ipBatch(host.ns, [`addr del ${host.address}/24 dev eth0`, `addr add ${address}/24 dev eth0`, `route replace default via ${lan}.1 dev eth0`]);
    return { ...host, address };
  }

  /**
   * Moves a host to another home, as a phone leaving one Wi-Fi for another: its `eth0` (and the
   * LAN port behind it on the old router) is deleted, a new `eth0` is cabled to `to`'s LAN and
   * takes the next free address there. The namespace and its processes stay; sockets bound to
   * the old address are left with nothing under them.
   */
  async moveHost(host: Host, to: Home): Promise<Host> {
    const lan = to.lanSubnet.replace(/\.0\/24$/, '');
    const address = `${lan}.${this.nextHostOctet(to)}`;
    const port = `m${this.movedPorts++}`;
    await this.ipBatch(host.ns, ['link del eth0']);
    await run('ip', ['-n', host.ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', port, 'netns', to.router]);
    await this.ipBatch(to.router, [`link set ${port} master lan0`, `link set ${port} up`]);
    await this.ipBatch(host.ns, ['link set eth0 up', `addr add ${address}/24 dev eth0`, `route add default via ${lan}.1 dev eth0`]);
    return { ...host, address, behaviour: to.behaviour };
  }

  /**
   * A firewall rule on `home`'s router dropping UDP between its LAN and `remote` (a public
   * address: another home's WAN), in both directions; TCP and every other destination (the
   * relay, signaling) are untouched. Its own nftables table, so `unblockUdp` lifts it whole.
   */
  async blockUdp(home: Home, remote: string): Promise<void> {
    const rules = [
      `table ip ${BLOCK_TABLE} {`,
      '  chain forward {',
      // Before the NAT table's forward chain (priority filter), so established flows are cut too.
      '    type filter hook forward priority filter - 10; policy accept;',
      `    ip daddr ${remote} meta l4proto udp drop`,
      `    ip saddr ${remote} meta l4proto udp drop`,
      '  }',
      '}',
    ];
    await run('ip', ['netns', 'exec', home.router, 'nft', '-f', '-'], rules.join('\n') + '\n');
  }

  /** Lifts `blockUdp`. */
  async unblockUdp(home: Home): Promise<void> {
    await run('ip', ['netns', 'exec', home.router, 'nft', 'delete', 'table', 'ip', BLOCK_TABLE]);
  }

  /** The NAT summary of a host, for reports. */
  static describe(host: Host): string {
    return host.behaviour === null ? 'no NAT (public address)' : NAT_PROFILES[host.behaviour].summary;
  }

  /** A port number unique within this lab run, for servers started in `pub`. */
  port(base: number): number {
    return base + this.nextPort++;
  }

  /** Runs a command inside a namespace and waits for it (bounded). */
  exec(ns: string, cmd: string, args: readonly string[], input?: string, timeoutMs = COMMAND_TIMEOUT_MS): Promise<CommandResult> {
    return run('ip', ['netns', 'exec', ns, cmd, ...args], input, timeoutMs);
  }

  /**
   * Starts a long-running process inside a namespace. It is stopped by `destroy()` (or by
   * `removeHome`) if the caller has not stopped it; `ip netns exec` execs the command, so
   * the pid is the process itself and its process group holds its children.
   */
  spawn(ns: string, cmd: string, args: readonly string[], env: Record<string, string> = {}): LabProcess {
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], {
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    // Writes to a peer that already exited must not crash the test process (EPIPE).
    child.stdin!.on('error', () => undefined);
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d.length + err.length > 20_000_000 ? '' : d));
    const exited = new Promise<number | null>((resolve) => {
      child.once('exit', (code) => resolve(code));
      child.once('error', () => resolve(-1));
    });
    const proc: LabProcess = {
      ns,
      child,
      stdout: () => out,
      stderr: () => err,
      exited,
      stop: async () => {
        signalGroup(child, 'SIGTERM');
        const t = setTimeout(() => signalGroup(child, 'SIGKILL'), KILL_GRACE_MS);
        await exited;
        clearTimeout(t);
        signalGroup(child, 'SIGKILL');
      },
    };
    this.processes.add(proc);
    void exited.then(() => this.processes.delete(proc));
    return proc;
  }

  /** Stops every process, deletes every namespace. Safe to call more than once. */
  async destroy(): Promise<void> {
    await Promise.all([...this.processes].map((p) => p.stop()));
    // Anything a lab process left behind (e.g. a grandchild in its own process group).
    for (const ns of [...this.namespaces].reverse()) killAndDelete(ns);
    this.namespaces.clear();
    this.destroyed = true;
    liveLabs.delete(this);
  }

  /** Synchronous teardown for exit and signal hooks. */
  destroySync(): void {
    for (const p of this.processes) signalGroup(p.child, 'SIGKILL');
    for (const ns of [...this.namespaces].reverse()) killAndDelete(ns);
    this.namespaces.clear();
    this.destroyed = true;
    liveLabs.delete(this);
  }

  /** Namespaces that currently exist for this run (for leak checks). */
  static existingNamespaces(runId: string): string[] {
    return listNamespaces().filter((n) => n.startsWith(`${runId}-`));
  }

  get isDestroyed(): boolean {
    return this.destroyed;
  }

  /**
   * Hands out the next number of a pool round-robin, so a freed address is reused as late
   * as possible (no stale ARP entry or conntrack state can point at a new owner).
   */
  private allocate(used: Set<number>, lo: number, hi: number): number {
    const span = hi - lo + 1;
    const start = this.cursor.get(used) ?? 0;
    for (let step = 0; step < span; step++) {
      const n = lo + ((start + step) % span);
      if (!used.has(n)) {
        used.add(n);
        this.cursor.set(used, start + step + 1);
        return n;
      }
    }
    throw new LabError(`lab address pool ${lo}-${hi} exhausted`);
  }

  /**
   * Deletes the pub side of a veth pair (which removes both ends at once; namespace deletion
   * alone is asynchronous in the kernel and leaves the pair behind for a while) and forgets
   * the address's neighbour entry in pub.
   */
  private async detachFromPub(port: string, address: string): Promise<void> {
    await run('ip', ['-n', this.pub, 'link', 'del', port]).catch(() => undefined);
    await run('ip', ['-n', this.pub, 'neigh', 'flush', 'to', address]).catch(() => undefined);
  }

  private async addNamespace(ns: string): Promise<void> {
    if (this.destroyed) throw new LabError('lab already destroyed');
    // Idempotent: a namespace of the same name (impossible unless a previous attempt of this
    // run failed half-way) is replaced.
    if (listNamespaces().includes(ns)) await run('ip', ['netns', 'del', ns]);
    this.namespaces.add(ns);
    await run('ip', ['netns', 'add', ns]);
    await this.sysctl(ns, ['net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }

  private async deleteNamespace(ns: string): Promise<void> {
    if (!this.namespaces.has(ns)) return;
    await run('ip', ['netns', 'del', ns]).catch(() => undefined);
    this.namespaces.delete(ns);
  }

  private async stopProcessesIn(namespaces: readonly string[]): Promise<void> {
    const set = new Set(namespaces);
    await Promise.all([...this.processes].filter((p) => set.has(p.ns)).map((p) => p.stop()));
  }

  private async ipBatch(ns: string, commands: readonly string[]): Promise<void> {
    await run('ip', ['-n', ns, '-batch', '-'], commands.join('\n') + '\n');
  }

  private async sysctl(ns: string, settings: readonly string[]): Promise<void> {
    await run('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', ...settings]);
  }
}

function signalGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    try {
      child.kill(sig);
    } catch {
      // already gone
    }
  }
}
