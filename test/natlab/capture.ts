/**
 * A packet capture of everything to and from the relay's two addresses on pub's bridge,
 * used to show that relayed cells carry only ciphertext. A control datagram with a known
 * marker in clear, sent from an open host, proves the capture would have seen a plaintext
 * marker had one been sent.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
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
  // tcpdump drops privileges to its own user before writing, so the file lives directly in the
  // sticky, world-writable tmpdir (a private 0700 directory would leave it with only a header).
  const file = join(tmpdir(), `natlab-${lab.runId}-relay.pcap`);
  const control = `HLCONTROL-${randomBytes(6).toString('hex')}`;
  const proc: LabProcess = lab.spawn(lab.pub, 'tcpdump', [
    // --immediate-mode: libpcap otherwise holds packets in a ring block for up to a second,
    // and SIGTERM loses whatever was still there.
    '-i', 'br0', '-p', '--immediate-mode', '-U', '-n', '-s', '0', '-w', file,
    `host ${PUB.relay} or host ${PUB.relayAlt}`,
  ]);
  await waitForLine(proc, /listening on/, 10_000, 'tcpdump', 'stderr');
  return {
    async sendControl() {
      const host = await lab.addOpenHost();
      try {
        await lab.exec(host.ns, process.execPath, [
          '-e',
          // A few copies over 300 ms: the first one may wait on ARP for the fresh interface.
          `const s=require('node:dgram').createSocket('udp4');let n=0;const t=setInterval(()=>{s.send(${JSON.stringify(control)},${CONTROL_PORT},'${PUB.relay}');if(++n===3){clearInterval(t);setTimeout(()=>s.close(),100)}},100)`,
        ]);
      } finally {
        await lab.removeOpenHost(host);
      }
    },
    async stop() {
      // tcpdump writes packet-buffered (-U); give the last packets a moment before SIGTERM.
      await new Promise((r) => setTimeout(r, 200));
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
      rmSync(file, { force: true });
    },
  };
}
