/**
 * NAT behaviours of the lab's home routers, in RFC 4787 terms, each one small
 * nftables rule set loaded atomically into a router namespace.
 *
 * Every router shares the same skeleton:
 *  - `wan0` faces the lab's public bridge, `lan0` is a bridge holding the home's hosts;
 *  - INPUT from `wan0` accepts only conntrack ESTABLISHED/RELATED. A punch packet that
 *    reached the router itself would leave a conntrack entry that later collides with the
 *    host's own outbound flow, and masquerade would then silently pick another port
 *    (NATLAB.md, "pitfalls"), so unsolicited WAN packets are dropped before they can;
 *  - FORWARD from `wan0` accepts replies (ESTABLISHED/RELATED) and packets our own DNAT
 *    rules created (`ct status dnat`), nothing else; LAN-to-LAN frames (bridged, but seen
 *    here because br_netfilter is loaded) always pass.
 *
 * Mapping (RFC 4787 section 4.1):
 *  - endpoint-independent: `masquerade` keeps the source port when it is free, and one
 *    internal address:port always maps to the same external port (one WAN address, a
 *    handful of hosts, no collisions in the lab);
 *  - address-and-port-dependent: `masquerade fully-random` draws a fresh port for every
 *    new conntrack entry, i.e. every new destination address:port.
 *
 * Filtering (RFC 4787 section 5):
 *  - endpoint-independent and address-dependent filtering need inbound packets from
 *    endpoints the host never sent to; conntrack alone (keyed on the 5-tuple) drops them.
 *    A dynamic map `eif` records, after source NAT, external port -> internal address:port
 *    for every outbound UDP packet, and PREROUTING DNATs a new inbound packet on a recorded
 *    port back to its owner. Address-dependent filtering additionally requires the remote
 *    address (any port) to be in the set `seen` of (remote address, external port) pairs the
 *    mapping has sent to;
 *  - address-and-port-dependent filtering is plain conntrack: only exact replies pass.
 */

/** The behaviours the lab can give a home router. */
export type NatBehaviour = 'full-cone' | 'address-restricted' | 'port-restricted' | 'symmetric' | 'udp-blocked';

/** Every behaviour, in the order the matrix lists them. */
export const NAT_BEHAVIOURS: readonly NatBehaviour[] = [
  'full-cone',
  'address-restricted',
  'port-restricted',
  'symmetric',
  'udp-blocked',
];

/** RFC 4787 mapping behaviour: EIM, or address-and-port-dependent (APDM). */
export type Mapping = 'endpoint-independent' | 'address-and-port-dependent';
/** RFC 4787 filtering behaviour. */
export type Filtering = 'endpoint-independent' | 'address-dependent' | 'address-and-port-dependent';

/** What a behaviour is, in RFC 4787 terms, and what a UDP probe must observe. */
export interface NatProfile {
  readonly name: NatBehaviour;
  /** `null` when outbound UDP is blocked altogether. */
  readonly mapping: Mapping | null;
  readonly filtering: Filtering | null;
  readonly udp: boolean;
  /** TCP destination ports allowed out; `null` means all. */
  readonly tcpPorts: readonly number[] | null;
  readonly summary: string;
}

/** Only TCP to this port leaves a `udp-blocked` home: the relay's TURN/TLS (and TURN/TCP) port. */
export const FIREWALL_TCP_PORT = 443;

/** Dynamic map/set entries expire like a UDP NAT binding would (RFC 4787 REQ-5: at least 2 min). */
const BINDING_TIMEOUT = '5m';

export const NAT_PROFILES: Readonly<Record<NatBehaviour, NatProfile>> = {
  'full-cone': {
    name: 'full-cone',
    mapping: 'endpoint-independent',
    filtering: 'endpoint-independent',
    udp: true,
    tcpPorts: null,
    summary: 'EIM + EIF: any remote may send to a mapped port once the host has used it',
  },
  'address-restricted': {
    name: 'address-restricted',
    mapping: 'endpoint-independent',
    filtering: 'address-dependent',
    udp: true,
    tcpPorts: null,
    summary: 'EIM + ADF: a remote address the mapping has sent to may send from any port',
  },
  'port-restricted': {
    name: 'port-restricted',
    mapping: 'endpoint-independent',
    filtering: 'address-and-port-dependent',
    udp: true,
    tcpPorts: null,
    summary: "EIM + APDF: Linux's default masquerade; only the exact remote address:port may answer",
  },
  symmetric: {
    name: 'symmetric',
    mapping: 'address-and-port-dependent',
    filtering: 'address-and-port-dependent',
    udp: true,
    tcpPorts: null,
    summary: 'APDM + APDF: masquerade fully-random, a new external port for every destination',
  },
  'udp-blocked': {
    name: 'udp-blocked',
    mapping: null,
    filtering: null,
    udp: false,
    tcpPorts: [FIREWALL_TCP_PORT],
    summary: `firewall: all outbound UDP dropped, only TCP to port ${FIREWALL_TCP_PORT} allowed`,
  },
};

/** The nftables table name used on routers (one table, replaced atomically). */
export const NFT_TABLE = 'homelab';

/**
 * The complete nftables script for a router with the given behaviour. Loaded with
 * `nft -f -` inside the router's namespace; deleting the namespace removes it.
 */
export function routerRuleset(behaviour: NatBehaviour): string {
  const dnatFiltering = behaviour === 'full-cone' || behaviour === 'address-restricted';
  const masquerade = behaviour === 'symmetric' ? 'masquerade fully-random' : 'masquerade';
  const lines: string[] = [];
  lines.push(`table ip ${NFT_TABLE} {`);
  if (dnatFiltering) {
    lines.push(
      `  map eif { type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout ${BINDING_TIMEOUT}; }`,
      `  set seen { type ipv4_addr . inet_service; flags dynamic,timeout; timeout ${BINDING_TIMEOUT}; }`,
      // After source NAT (priority srcnat + 10) `udp sport` is the external port and the
      // conntrack original tuple still names the internal address:port.
      '  chain record {',
      '    type filter hook postrouting priority srcnat + 10; policy accept;',
      '    oifname "wan0" meta l4proto udp update @eif { udp sport : ct original ip saddr . ct original proto-src }',
      '    oifname "wan0" meta l4proto udp update @seen { ip daddr . udp sport }',
      '  }',
      '  chain prerouting {',
      '    type nat hook prerouting priority dstnat; policy accept;',
      behaviour === 'full-cone'
        ? '    iifname "wan0" meta l4proto udp ct state new dnat ip to udp dport map @eif'
        : '    iifname "wan0" meta l4proto udp ct state new ip saddr . udp dport @seen dnat ip to udp dport map @eif',
      '  }',
    );
  }
  lines.push(
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    oifname "wan0" ${masquerade}`,
    '  }',
    '  chain input {',
    '    type filter hook input priority filter; policy accept;',
    '    iifname "wan0" ct state established,related accept',
    '    iifname "wan0" drop',
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy drop;',
    '    iifname "wan0" ct state established,related accept',
    // br_netfilter is loaded on this kernel, so frames between two hosts on lan0 pass
    // through this chain too: a home switch forwards them, whatever the router's policy.
    '    iifname "lan0" oifname "lan0" accept',
    ...(dnatFiltering ? ['    iifname "wan0" ct status dnat accept'] : []),
  );
  if (behaviour === 'udp-blocked') {
    lines.push(
      `    iifname "lan0" oifname "wan0" tcp dport ${FIREWALL_TCP_PORT} accept`,
      '    iifname "lan0" oifname "wan0" drop',
    );
  } else {
    lines.push('    iifname "lan0" oifname "wan0" accept');
  }
  lines.push('  }', '}');
  return lines.join('\n') + '\n';
}

/**
 * Theory (RFC 4787 + ICE, RFC 8445): can two endpoints behind `a` and `b` (null = no NAT)
 * reach each other on a direct UDP path? Both sides send connectivity checks to each
 * other's server-reflexive address at the same time; the path opens when at least one side
 * keeps its mapping for a new destination (EIM) and the other side's filter lets in the
 * packets of a peer it has sent to. With address-and-port-dependent mapping on one side,
 * the other side must accept packets from a port it never sent to: fine for EIF and ADF,
 * impossible for APDF (port-restricted or symmetric).
 */
export function directPossible(a: NatBehaviour | null, b: NatBehaviour | null): boolean {
  const pa = a === null ? null : NAT_PROFILES[a];
  const pb = b === null ? null : NAT_PROFILES[b];
  if ((pa && !pa.udp) || (pb && !pb.udp)) return false;
  if (!pa || !pb) return true; // one side has a public address: the other's packets open their own filter
  const apdm = (p: NatProfile): boolean => p.mapping === 'address-and-port-dependent';
  if (apdm(pa) && apdm(pb)) return false;
  if (apdm(pa)) return pb.filtering !== 'address-and-port-dependent';
  if (apdm(pb)) return pa.filtering !== 'address-and-port-dependent';
  return true;
}
