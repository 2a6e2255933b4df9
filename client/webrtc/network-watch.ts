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

export interface NetworkWatchOptions {
  readonly read?: InterfaceReader;
  readonly pollMs?: number;
  readonly ipv6?: boolean;
}

/**
 * Polls the interfaces and calls `onChange` when the usable addresses differ from the last poll.
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

  constructor(
    private readonly onChange: (c: AddressChange) => void,
    opts: NetworkWatchOptions = {},
  ) {
    this.read = opts.read ?? networkInterfaces;
    this.ipv6 = opts.ipv6 ?? false;
    this.last = this.poll() ?? [];
    this.timer = setInterval(() => this.check(), opts.pollMs ?? NETWORK_POLL_MS);
    this.timer.unref?.();
  }

  /** The usable addresses as of the last poll. */
  get addresses(): readonly string[] {
    return this.last;
  }

  /** Polls now (the timer calls this); returns the change it reported, if any. */
  check(): AddressChange | null {
    const now = this.poll();
    if (now === null) return null;
    const change = diffAddresses(this.last, now);
    this.last = now;
    if (change) this.onChange(change);
    return change;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private poll(): string[] | null {
    try {
      return usableAddresses(this.read(), this.ipv6);
    } catch {
      // A failing read (a sandbox without getifaddrs) reports nothing rather than a change.
      return null;
    }
  }
}
