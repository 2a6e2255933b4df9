/**
 * Each NAT rule set of the lab, measured by our own RFC 5780-style probe (probe.ts) from a
 * host behind it against probe servers on the relay's two addresses in `pub`. This proves
 * the lab independently of the product's stack; the matrix builds on it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, PUB, type Host } from './lab.js';
import { FIREWALL_TCP_PORT, NAT_BEHAVIOURS, NAT_PROFILES } from './nat.js';
import type { ProbeClientConfig, ProbeResult } from './probe.js';
import { labAvailable, tsxArgs, waitForLine } from './support.js';

const PROBE = 'test/natlab/probe.ts';
/** A TCP port the firewall must refuse (anything but 443). */
const OTHER_TCP_PORT = 8443;

const cfg: ProbeClientConfig = {
  udp: [
    { host: PUB.relay, port: 3479 },
    { host: PUB.relay, port: 3480 },
    { host: PUB.relayAlt, port: 3479 },
  ],
  tcp: [
    { host: PUB.relay, port: FIREWALL_TCP_PORT },
    { host: PUB.relay, port: OTHER_TCP_PORT },
  ],
};

describe.skipIf(!labAvailable())('NAT lab rule sets, measured by an RFC 5780-style probe', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create();
    const server = lab.spawn(lab.pub, process.execPath, tsxArgs(PROBE, 'server', JSON.stringify(cfg)));
    await waitForLine(server, /^ready$/, 20_000, 'probe server');
  });

  afterAll(async () => {
    const runId = lab?.runId;
    await lab?.destroy();
    if (runId) expect(Lab.existingNamespaces(runId)).toEqual([]);
  });

  async function probe(host: Host): Promise<ProbeResult> {
    const r = await lab.exec(host.ns, process.execPath, tsxArgs(PROBE, 'client', JSON.stringify(cfg)), undefined, 30_000);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as ProbeResult;
  }

  it.each(NAT_BEHAVIOURS.filter((b) => NAT_PROFILES[b].udp))('%s: mapping and filtering as named', async (behaviour) => {
    const home = await lab.addHome(behaviour);
    try {
      const r = await probe(home.hosts[0]!);
      const profile = NAT_PROFILES[behaviour];
      expect(r.mapping).toBe(profile.mapping);
      expect(r.filtering).toBe(profile.filtering);
      // Every mapping is on the router's WAN address, never the private one.
      for (const m of r.mapped) expect(m?.split(':')[0]).toBe(home.wanAddress);
      if (profile.mapping === 'endpoint-independent') {
        // Port-preserving masquerade: the external port is the host's own.
        expect(r.mapped[0]!.split(':')[1]).toBe(r.local.split(':')[1]);
      }
      expect(r.tcp).toEqual([true, true]);
    } finally {
      await lab.removeHome(home);
    }
  });

  it('udp-blocked: no UDP leaves, TCP only to port 443', async () => {
    const home = await lab.addHome('udp-blocked');
    try {
      const r = await probe(home.hosts[0]!);
      expect(r.mapped).toEqual([null, null, null]);
      expect(r.mapping).toBe('no-udp');
      expect(r.filtering).toBe('no-udp');
      expect(r.tcp).toEqual([true, false]);
    } finally {
      await lab.removeHome(home);
    }
  });

  it('open host: no translation, nothing filtered', async () => {
    const host = await lab.addOpenHost();
    try {
      const r = await probe(host);
      expect(r.mapped.every((m) => m === `${host.address}:${r.local.split(':')[1]}`)).toBe(true);
      expect(r.filtering).toBe('endpoint-independent');
    } finally {
      await lab.removeOpenHost(host);
    }
  });

  it('two hosts in one home each get their own mapping', async () => {
    const home = await lab.addHome('full-cone', 2);
    try {
      const [a, b] = await Promise.all(home.hosts.map((h) => probe(h)));
      expect(a!.mapping).toBe('endpoint-independent');
      expect(b!.mapping).toBe('endpoint-independent');
      expect(a!.filtering).toBe('endpoint-independent');
      expect(b!.filtering).toBe('endpoint-independent');
      expect(a!.mapped[0]).not.toBe(b!.mapped[0]);
    } finally {
      await lab.removeHome(home);
    }
  });

  it('unsolicited packets to a router WAN address get nothing back and reach no host', async () => {
    const home = await lab.addHome('full-cone');
    try {
      // A probe server answer sent to the WAN address on a port never mapped: the router
      // neither answers (INPUT drop) nor forwards (no DNAT entry). The probe's control
      // socket in pub sees no ICMP error either way; what we assert is the router's
      // counters: nothing accepted on wan0 in INPUT.
      await lab.exec(lab.pub, process.execPath, [
        '-e',
        `const s=require('node:dgram').createSocket('udp4');s.send('x',40000,'${home.wanAddress}',()=>s.close())`,
      ]);
      const rules = await lab.exec(home.router, 'nft', ['list', 'chain', 'ip', 'homelab', 'input']);
      expect(rules.stdout).toMatch(/iifname "wan0" drop/);
      const conntrack = await lab.exec(home.router, 'conntrack', ['-L', '-p', 'udp']).catch(() => ({ stdout: '' }));
      // Dropped in INPUT before confirmation: conntrack keeps no entry for it.
      expect(conntrack.stdout).not.toMatch(/dport=40000/);
    } finally {
      await lab.removeHome(home);
    }
  });
});
