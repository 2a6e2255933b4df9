/**
 * A packet capture of everything to and from the relay's two addresses on pub's bridge,
 * used to show that relayed cells carry only ciphertext. A control datagram with a known
 * marker in clear, sent from an open host, proves the capture would have seen a plaintext
 * marker had one been sent.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PUB, type Lab, type LabProcess } from './lab.js';
import { waitForLine } from './support.js';

/** UDP discard port (RFC 863): nothing listens there in the lab, the datagram only needs to be seen. */
const CONTROL_PORT = 9;

export interface RelayCapture {
  /** Sends the control datagram (marker in clear) to the relay from a temporary open host. */
  sendControl(): Promise<void>;
  /** Stops tcpdump and flushes the file. */
  stop(): Promise<void>;
  /** Which of `markers` occur in the capture, whether the control marker does, and the file size. */
  scan(markers: readonly string[]): { found: string[]; controlFound: boolean; bytes: number };
  dispose(): void;
}

export async function startRelayCapture(lab: Lab): Promise<RelayCapture> {
  const dir = mkdtempSync(join(tmpdir(), 'natlab-pcap-'));
  const file = join(dir, 'relay.pcap');
  const control = `HLCONTROL-${randomBytes(6).toString('hex')}`;
  const proc: LabProcess = lab.spawn(lab.pub, 'tcpdump', [
    '-i', 'br0', '-p', '-U', '-n', '-s', '0', '-w', file,
    `host ${PUB.relay} or host ${PUB.relayAlt}`,
  ]);
  await waitForLine(proc, /listening on/, 10_000, 'tcpdump', 'stderr');
  return {
    async sendControl() {
      const host = await lab.addOpenHost();
      try {
        await lab.exec(host.ns, process.execPath, [
          '-e',
          `const s=require('node:dgram').createSocket('udp4');s.send(${JSON.stringify(control)},${CONTROL_PORT},'${PUB.relay}',()=>s.close())`,
        ]);
      } finally {
        await lab.removeOpenHost(host);
      }
    },
    async stop() {
      await proc.stop();
    },
    scan(markers) {
      const data = readFileSync(file);
      return {
        found: markers.filter((m) => data.includes(m)),
        controlFound: data.includes(control),
        bytes: data.length,
      };
    },
    dispose() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
