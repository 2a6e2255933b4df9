/**
 * The reference stack for the matrix: two bare werift peers (peer-werift.ts) whose offer,
 * answer and candidates the test process carries between them, with coturn as STUN/TURN.
 * It validates the lab and the harness without any of our own networking code.
 */
import type { Host, Lab } from './lab.js';
import { CELL_DEADLINE_MS, peerResult, TRANSFER_BYTES, type CellSpec, type Stack } from './cells.js';
import type { CoturnHandle } from './coturn.js';
import type { WeriftPeerConfig } from './peer-werift.js';
import { dumpOnFailure, onLines, tsxArgs } from './support.js';
import type { PeerResult } from './transfer.js';

const PEER = 'test/natlab/peer-werift.ts';

export function weriftStack(coturn: CoturnHandle, caFile: string): Stack {
  return {
    name: 'bare werift 0.24.4 peers, SDP carried by the test process, coturn (Debian) as STUN/TURN',
    async runPair(lab: Lab, dialer: Host, answerer: Host, cell: CellSpec, marker: string): Promise<[PeerResult, PeerResult]> {
      const config = async (host: Host, role: WeriftPeerConfig['role']): Promise<WeriftPeerConfig> => ({
        role,
        iceServers: await coturn.iceServers(`${role}-${cell.id}`.slice(0, 100), host.behaviour === 'udp-blocked'),
        caFile,
        bytes: TRANSFER_BYTES,
        marker,
        deadlineMs: CELL_DEADLINE_MS,
      });
      const d = lab.spawn(dialer.ns, process.execPath, tsxArgs(PEER, JSON.stringify(await config(dialer, 'offerer'))));
      const a = lab.spawn(answerer.ns, process.execPath, tsxArgs(PEER, JSON.stringify(await config(answerer, 'answerer'))));
      try {
        const forward = (to: typeof d) => (line: string) => {
          if (line.startsWith('S ') && to.child.stdin?.writable) to.child.stdin.write(line.slice(2) + '\n');
        };
        onLines(d, forward(a));
        onLines(a, forward(d));
        const results = await Promise.all([peerResult(d, CELL_DEADLINE_MS + 5_000), peerResult(a, CELL_DEADLINE_MS + 5_000)]);
        dumpOnFailure(cell.id, { dialer: d, answerer: a }, results.some((r) => !r.ok));
        return results;
      } finally {
        await Promise.all([d.stop(), a.stop()]);
      }
    },
  };
}
