/**
 * What kind of path a selected candidate pair is: `relay` when either side's candidate of the pair
 * is a TURN relayed candidate, `direct` otherwise.
 *
 * The local candidate's type is known for sure. The remote one is not always: when the peer's
 * connectivity check arrives before its trickled candidate, ICE learns the source address as a
 * peer-reflexive (`prflx`) candidate (RFC 8445 §7.3.1.3), and an agent may keep that pair even
 * after the signaled candidate arrives (werift 0.24.4 does: the pair stays on the prflx
 * candidate). A peer forced through a relay then looks direct from our side. A remote `prflx`
 * candidate is therefore resolved here, in this order:
 *  1. a candidate the peer signaled with the same `address:port` gives its type (exact);
 *  2. otherwise its address being one of our relay servers' addresses (from the ICE servers; the
 *     peer uses relays of the same service) makes it `relay`, unless that address is shared with
 *     a non-relayed candidate: the peer signaled one there, or our own local candidate is on it
 *     (endpoints on the relay's host, such as the loopback-only local stack). There the address
 *     alone decides nothing and only rule 1 can.
 * A later candidate can change the answer; the link re-reads its path when one arrives.
 * Portable: no Node-only import.
 */
import { parseIceUrl } from '../protocol/ice-url.js';
import { parseCandidate, type CandidateInfo, type CandidateType, type SelectedPair } from './webrtc/backend.js';

/** Where a link's packets go. */
export interface LinkPath {
  /** `relay` when either candidate of the selected pair is a TURN relay (see client/path.ts). */
  readonly kind: 'direct' | 'relay';
  /** Local candidate `address:port`. */
  readonly local: string;
  /** Remote candidate `address:port`. */
  readonly remote: string;
  /** `udp`, `tcp`, or for relayed paths the transport to the relay (`udp`/`tcp`/`tls`). */
  readonly protocol: 'udp' | 'tcp' | 'tls';
  readonly rttMs?: number;
}

/**
 * Remote candidates remembered per link, oldest forgotten first. The session already bounds
 * candidates per negotiation (`maxBufferedCandidates`, 256); this keeps a hostile room from
 * growing the book across many restarts.
 */
export const MAX_REMOTE_CANDIDATES = 256;
/** Relay server addresses remembered (a service hands out a handful of URLs per relay). */
const MAX_RELAY_HOSTS = 32;


/** Lower-cased, brackets removed: the form candidates carry (RFC 8839 §5.1). */
const normHost = (h: string): string => h.replace(/^\[|\]$/g, '').toLowerCase();

/** Classifies selected pairs with what the peer signaled and which relays the service runs. */
export class PathClassifier {
  /** `address:port` -> type of each candidate the peer signaled. */
  private readonly remote = new Map<string, CandidateType>();
  /** address -> how many non-relayed candidates the peer signaled on it. */
  private readonly nonRelayHosts = new Map<string, number>();
  private relayHosts = new Set<string>();

  /** Remembers the relay servers' hosts from the ICE server URLs (replacing earlier ones: a renewal lists them all). */
  setIceServers(servers: readonly { readonly urls: readonly string[] }[]): void {
    const hosts = new Set<string>();
    for (const s of servers) {
      for (const u of s.urls) {
        const url = parseIceUrl(u);
        if (url?.kind === 'turn' && hosts.size < MAX_RELAY_HOSTS) hosts.add(normHost(url.host));
      }
    }
    this.relayHosts = hosts;
  }

  /** Notes a candidate line the peer signaled; malformed lines are ignored. */
  noteRemote(line: string): void {
    const c = parseCandidate(line);
    if (!c) return;
    const address = normHost(c.address);
    const key = `${address}:${c.port}`;
    if (this.remote.has(key)) this.forget(key);
    else if (this.remote.size >= MAX_REMOTE_CANDIDATES) this.forget(this.remote.keys().next().value!);
    this.remote.set(key, c.type);
    if (c.type !== 'relay') this.nonRelayHosts.set(address, (this.nonRelayHosts.get(address) ?? 0) + 1);
  }

  private forget(key: string): void {
    const type = this.remote.get(key);
    this.remote.delete(key);
    if (type === undefined || type === 'relay') return;
    const address = key.slice(0, key.lastIndexOf(':'));
    const n = (this.nonRelayHosts.get(address) ?? 1) - 1;
    if (n > 0) this.nonRelayHosts.set(address, n);
    else this.nonRelayHosts.delete(address);
  }

  /** The type the remote candidate really has, as far as we know (see the module header). */
  remoteType(c: CandidateInfo, localAddress: string): CandidateType {
    if (c.type !== 'prflx') return c.type;
    const address = normHost(c.address);
    const signaled = this.remote.get(`${address}:${c.port}`);
    if (signaled !== undefined && signaled !== 'prflx') return signaled;
    if (this.relayHosts.has(address) && !this.nonRelayHosts.has(address) && normHost(localAddress) !== address) return 'relay';
    return 'prflx';
  }

  /** The public path of a selected pair. */
  classify(p: SelectedPair): LinkPath {
    const kind = p.local.type === 'relay' || this.remoteType(p.remote, p.local.address) === 'relay' ? 'relay' : 'direct';
    return {
      kind,
      local: `${p.local.address}:${p.local.port}`,
      remote: `${p.remote.address}:${p.remote.port}`,
      protocol: p.relayProtocol ?? p.local.protocol,
      ...(p.rttMs !== undefined ? { rttMs: p.rttMs } : {}),
    };
  }
}
