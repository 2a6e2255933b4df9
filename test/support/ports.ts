/**
 * Ports for processes a test starts and tells which port to use (`npm start`, `wrangler dev`).
 *
 * A port from `listen(0)` comes from the kernel's ephemeral range, and it is free only until the
 * kernel hands it out again: between the probe and the child's bind (a second or two of npm and
 * tsx start-up), the suites running beside it bind hundreds of ephemeral UDP sockets (every ICE
 * agent does). A clean-clone CI run lost a whole file to that: `npm start` found its relay port
 * taken. So these ports come from below the ephemeral range (Linux 32768-60999, macOS and
 * Windows 49152-65535), where the kernel never assigns one by itself; a random start keeps
 * concurrent test processes apart, and each candidate is checked free for TCP and UDP.
 */
import dgram from 'node:dgram';
import net from 'node:net';

/** Below every common ephemeral range, above the well-known and most registered service ports. */
const LOW = 20_000;
const HIGH = 32_700;
const TRIES = 200;

const tcpFree = (port: number, host: string): Promise<boolean> =>
  new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen({ port, host, exclusive: true }, () => s.close(() => resolve(true)));
  });

const udpFree = (port: number, host: string): Promise<boolean> =>
  new Promise((resolve) => {
    const u = dgram.createSocket('udp4');
    u.once('error', () => {
      u.close();
      resolve(false);
    });
    u.bind({ port, address: host, exclusive: true }, () => u.close(() => resolve(true)));
  });

const handedOut = new Set<number>();

/**
 * A port on `host` (default 127.0.0.1) free for both TCP and UDP, outside the ephemeral range,
 * and not handed out before by this process.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  let port = LOW + Math.floor(Math.random() * (HIGH - LOW));
  for (let i = 0; i < TRIES; i++, port = port + 1 >= HIGH ? LOW : port + 1) {
    if (handedOut.has(port)) continue;
    if ((await tcpFree(port, host)) && (await udpFree(port, host))) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no port free for TCP and UDP on ${host} in ${TRIES} tries from ${LOW}-${HIGH}`);
}
