/**
 * A fast UDP echo peer for the relay benchmark: every datagram goes back to
 * its sender unchanged (the relayed address, so the relay carries it back).
 * Run as its own process; prints `port=<n>` once bound.
 *
 *   node --import tsx bench/relay/echo.ts [port] [host, default 127.0.0.1]
 */
import { createSocket } from 'node:dgram';

const sock = createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
sock.on('message', (msg, rinfo) => sock.send(msg, rinfo.port, rinfo.address));
sock.on('error', () => {}); // an ICMP error for one sender must not stop the echo for the others
sock.bind(Number(process.argv[2] ?? 0), process.argv[3] ?? '127.0.0.1', () => {
  process.stdout.write(`port=${sock.address().port}\n`);
});
process.on('SIGTERM', () => sock.close(() => process.exit(0)));
