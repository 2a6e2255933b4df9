/**
 * Notices local address changes (Node backends only): a host renumbered by DHCP, a phone moving
 * from one Wi-Fi to another, a cable pulled. Node has no interface-change event, so the
 * interfaces are polled; each poll is one getifaddrs(3) call.
 *
 * Without this, a link learns of a network change only from silence (the liveness timeout plus a
 * grace, about 5.5 s), and its sockets, its signaling connection and its relay allocation still
 * belong to an address that is gone. With it, the link restarts ICE from the new address at once
 * (RFC 8445 §9: an ICE restart is how an agent changes the addresses it uses).
 */
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';

/** Poll period: a change costs at most this much before the restart begins, well inside the 5 s stall aim; getifaddrs is cheap. */
export const NETWORK_POLL_MS = 1_000;

/** Reads the interfaces (`os.networkInterfaces`); injectable for tests. */
export type InterfaceReader = () => NodeJS.Dict<NetworkInterfaceInfo[]>;

/** What changed between two polls. */
export interface AddressChange {
  readonly added: readonly string[];
  readonly removed: readonly string[];
  /** The addresses now. */
  readonly current: readonly string[];
}

/**
 * The addresses ICE may gather on: not loopback (`internal`), not link-local (werift skips
 * those too), IPv6 only when asked. Sorted, so two polls compare as sets.
 */
export function usableAddresses(ifaces: NodeJS.Dict<NetworkInterfaceInfo[]>, ipv6: boolean): string[] {
  const out = new Set<string>();
  for (const list of Object.values(ifaces)) {
    for (const i of list ?? []) {
      if (i.internal) continue;
      if (i.family === 'IPv4' ? i.address.startsWith('169.254.') : !ipv6 || i.address.toLowerCase().startsWith('fe80:')) continue;
      out.add(i.address);
    }
  }
  return [...out].sort();
}

/** The difference between two address lists, or null when they hold the same addresses. */
export function diffAddresses(before: readonly string[], after: readonly string[]): AddressChange | null {
  const b = new Set(before);
  const a = new Set(after);
  const added = after.filter((x) => !b.has(x));
  const removed = before.filter((x) => !a.has(x));
  return added.length === 0 && removed.length === 0 ? null : { added, removed, current: [...after] };
}

/**
 * `change` restricted to the `pinned` addresses: what a host that gathers only on those addresses
 * must react to. A pinned address that leaves the interfaces (DHCP handed out another one, the
 * cable was pulled) takes its sockets' path with it; one that comes back can carry a path again.
 * Changes to other addresses do not concern it. Null when no pinned address changed.
 */
export function pinnedChange(change: AddressChange | null, pinned: readonly string[]): AddressChange | null {
  if (!change) return null;
  const mine = new Set(pinned);
  const added = change.added.filter((a) => mine.has(a));
  const removed = change.removed.filter((a) => mine.has(a));
  return added.length === 0 && removed.length === 0 ? null : { added, removed, current: change.current };
}

export interface NetworkWatchOptions {
  readonly read?: InterfaceReader;
  readonly pollMs?: number;
  readonly ipv6?: boolean;
  /**
   * Report only changes to these addresses (hosts that pin their host candidates with
   * `hostAddresses`). A pinned address the interfaces never held (loopback, which is never
   * usable) never changes, so it never reports.
   */
  readonly pinned?: readonly string[];
}

/**
 * Polls the interfaces and calls `onChange` when the usable addresses differ from the last poll
 * (with `pinned`, when a pinned address left or came back).
 * The timer is unref'd: a watch never keeps a process alive.
 *
 * @example
 * ```ts
 * const w = new NetworkWatch((c) => console.log('gone', c.removed, 'new', c.added));
 * // ...
 * w.stop();
 * ```
 */
export class NetworkWatch {
  private last: string[];
  private readonly timer: ReturnType<typeof setInterval>;
  private readonly read: InterfaceReader;
  private readonly ipv6: boolean;
  private readonly pinned: readonly string[] | null;
  private readonly seen = new Set<string>();

  constructor(
    private readonly onChange: (c: AddressChange) => void,
    opts: NetworkWatchOptions = {},
  ) {
    this.read = opts.read ?? networkInterfaces;
    this.ipv6 = opts.ipv6 ?? false;
    this.pinned = opts.pinned ?? null;
    this.last = this.poll() ?? [];
    this.timer = setInterval(() => this.check(), opts.pollMs ?? NETWORK_POLL_MS);
    this.timer.unref?.();
  }

  /** The usable addresses as of the last poll. */
  get addresses(): readonly string[] {
    return this.last;
  }

  /**
   * True when `address` was usable at some poll and is not now. An address the interfaces never
   * listed as usable (a pinned loopback address) has not vanished: it cannot go away.
   */
  vanished(address: string): boolean {
    return this.seen.has(address) && !this.last.includes(address);
  }

  /** Polls now (the timer calls this); returns the change it reported, if any. */
  check(): AddressChange | null {
    const now = this.poll();
    if (now === null) return null;
    const all = diffAddresses(this.last, now);
    const change = this.pinned ? pinnedChange(all, this.pinned) : all;
    this.last = now;
    if (change) this.onChange(change);
    return change;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private poll(): string[] | null {
    try {
      const now = usableAddresses(this.read(), this.ipv6);
      for (const a of now) this.seen.add(a);
      return now;
    } catch {
      // A failing read (a sandbox without getifaddrs) reports nothing rather than a change.
      return null;
    }
  }
}
